"""The decentralization audit of an exported policy (`ctde.policy`): does agent i's action read only its own
inputs and, for a communicating network, the k-bit messages of all agents?

The audit checks the claim behaviourally, by replacing every other agent's inputs and the global state:

- plain: agent i's action scores, and so its actions, must not change;
- communicating, four checks: (i) no sender j's message may change; (ii) with the messages held fixed (fed
  as an input), agent i's scores must not change; (iii) every message is exactly k entries of 0 or 1; (iv) how
  the executed `step` and `act` depart from sending then receiving (nothing, unless a subclass overrides them)
  must not change either. Together: agent i's action reads only its own inputs and k-bit messages, each a
  function of its sender's own inputs only.

Each check probes every path that computes what it checks, not one that is trusted to speak for the others:
`unroll` (the one offered the state) and, run step by step as the rollout runs them, `step` and `act` (the
actions execution takes); the messages of `messages` (what execution sends) and of `episode_messages`; the
receivers through `receive` and through `unroll`. With recorded episodes, as many random ones follow, so that a
leak on steps beyond the recordings (toy:hallway's last at most 5) is probed too.

What runs at execution is `act`, one step at a time (`ctde.algos.rollout.policy_actor`); `unroll` and
`episode_messages` are conveniences over whole episodes that take the state so the audit can offer it. The
audit probes every one of these paths rather than trusting that they agree: a method overridden in a subclass
(or a network exported by mistake) can leak through `act` or `step` while `unroll` stays honest, or the other
way round. Each path is one output of the probed function, with its own scale.

Comparisons cannot be blinded: NaN, +inf, -inf and -0.0 are classes compared exactly (a non-finite value that
appears, disappears or moves is a change), scales come from finite scores of available actions only, a
non-finite score for an available action fails the audit by itself, and every message entry must be exactly 0.0
or 1.0 by bit pattern (-0.0 would carry a covert extra bit).

Beside the behavioural verdict, `structural_check` proves the structure: the network's per-agent functions,
traced on one agent's inputs, take nothing but those inputs (and the [n, k] messages), close over no array shaped
like a multi-agent input, call no host code, and are vmapped over agents by `DecentralizedPolicy`'s own methods.
`audit_policy` requires both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ctde.errors import AuditFailedError
from ctde.policy import DecentralizedPolicy, PolicyNetwork, own_input

# Paths whose outputs are not scores but actions or agreement residuals, compared on a fixed scale of 1 (an action
# that flips, or a residual that moves by one score scale, counts as a relative change of 1).
ACTION_PATHS = ("act", "step vs send-receive", "act vs greedy step")


@dataclass
class MessageAudit:
    """Checks (i) and (iii) of a communicating policy's audit (checks (ii) and (iv) fill the `AuditReport`)."""

    bits: int  # k, the message size the spec declares
    passed: bool  # (i) and (iii) both hold
    max_deviation: float  # (i): largest relative change of any message caused by others' inputs or the state
    own_sensitivity: float  # smallest over senders of the largest change caused by the sender's own inputs
    per_sender: list[float]  # (i)'s largest change per sender j
    binary: bool  # (iii): every message is exactly `bits` entries, each exactly 0 or 1
    shape: list[int]  # the per-agent message shape the senders produced
    non_binary_senders: list[int]  # senders that sent an entry other than 0 or 1
    paths: dict[str, float] = field(default_factory=dict)  # (i)'s largest change per probed message path


@dataclass
class AuditReport:
    """The audit's verdict. For a communicating policy `max_deviation`, `own_sensitivity` and `per_agent` are
    those of the receivers with the messages held fixed (check ii) and of the executed step against its send and
    receive halves (check iv), and `messages` holds checks (i) and (iii); `passed` requires all four. For a plain
    policy `messages` is None. `paths` gives the largest change per probed path (see `audit_policy`)."""

    passed: bool
    max_deviation: float  # largest change of any agent's scores caused by others' inputs or the state
    own_sensitivity: float  # smallest over agents of the largest change caused by the agent's own inputs
    trials: int
    per_agent: list[float]
    message: str
    messages: MessageAudit | None = None
    paths: dict[str, float] = field(default_factory=dict)
    # per score path, the agents that gave a non-finite score (NaN or ±inf) to an available action: a failure
    non_finite: dict[str, list[int]] = field(default_factory=dict)
    # `structural_check`'s verdict (`StructuralVerdict` as a dict), filled by `audit_policy`; None where the audit
    # was of bare functions (`audit_scores_fn`, `audit_communication`), which have no structure to trace
    structural: dict | None = None
    # what the behavioural checks were run on (`ctde.training.audit_episodes`: the environment's episodes, or why
    # there were none); empty where the caller passed its own episodes or none
    inputs: str = ""

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "messages"}
        if self.messages is not None:  # plain policies' reports have no "messages" key at all
            out["messages"] = asdict(self.messages)
        return out


# (obs [T, n, o], last_action [T, n], avail [T, n, A], state [T, s]) -> scores [T, n, A], or a dict of such
# outputs, one per probed path (each [T, n, ...])
ScoresFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array | dict[str, jax.Array]]
# (obs [T, n, o], last_action [T, n], avail [T, n, A], state [T, s]) -> messages [T, n, k] (or a dict of them)
MessagesFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array | dict[str, jax.Array]]
# (obs [T, n, o], last_action [T, n], avail [T, n, A], state [T, s], messages [T, n, k]) -> scores [T, n, A]
# (or a dict of them)
ReceiverFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array | dict[str, jax.Array]]


# What a probed function reads of an episode; recorded episodes may hold more (`alive`), which the audit leaves.
EPISODE_INPUTS = ("obs", "last_action", "avail", "state")
# How a random episode's observations and state are drawn (`_random_episode`).
RANDOM_STYLES = ("normal", "signed", "unit", "recorded")
# Random episodes' shortest default length: the episode limit (the spec's `episode_limit`, exported since the audit
# covers whole episodes) where it is longer. MPE's limit, longer than every toy task; a short task's policy may also
# be run with a longer env.episode_limit than it was trained with.
DEFAULT_HORIZON = 25


def _random_episode(rng: np.random.Generator, horizon: int, n_agents: int, obs_dim: int, n_actions: int,
                    state_dim: int, continuous: bool = False, style: str | None = None,
                    bounds: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    dead_avail: np.ndarray | None = None) -> dict:
    """Random inputs of one episode, drawn both like real ones and unlike them, so that a leak gated on what real
    inputs look like is opened as well as one gated on what they do not:

    - observations and state in `style` (drawn when None): "normal", N(0, 1) (no exact zeros, outside every
      normalized range); "signed", U[-1, 1], and "unit", U[0, 1] (the ranges of normalized features, SMAX's and
      MPE's); "recorded", uniform per feature between the smallest and largest values `bounds` gives
      ({"obs": (low [o], high [o]), "state": (low [s], high [s])}: what real episodes of the environment held).
      Outside "normal", about a third of the features are exactly 0, as a unit out of sight is;
    - dead agents: each agent dies with probability 0.3 at a random step, from which on its observation row is
      exactly 0 and its mask allows one action only (`dead_avail` [A], a real dead agent's mask; else action 0 in
      half the episodes, SMAC's no-op, and another in the rest), which is then its last action;
    - availability: each action with probability 0.7, action 0 too in half the episodes (so that avail[..., 0] is
      sometimes False), at least one action per row.

    With `continuous` actions, previous actions are vectors in [-1, 1]^A (0 once dead) and every action dimension
    is available."""
    if style is None:
        style = RANDOM_STYLES[int(rng.integers(len(RANDOM_STYLES) - (bounds is None)))]
    if style == "recorded" and bounds is None:
        style = "signed"

    def draw(size: tuple[int, ...], key: str) -> np.ndarray:
        if style == "normal":
            return rng.normal(size=size).astype(np.float32)
        if style == "recorded":
            low, high = bounds[key]
            x = rng.uniform(0.0, 1.0, size=size) * (high - low) + low
        else:
            x = rng.uniform(-1.0 if style == "signed" else 0.0, 1.0, size=size)
        return np.where(rng.random(size) < 0.3, 0.0, x).astype(np.float32)

    obs = draw((horizon, n_agents, obs_dim), "obs")
    state = draw((horizon, state_dim), "state")
    death = np.where(rng.random(n_agents) < 0.3, rng.integers(1, max(horizon, 2), size=n_agents), horizon)
    dead = np.arange(horizon)[:, None] >= death[None, :]  # [T, n]
    obs[dead] = 0.0
    if continuous:
        avail = np.ones((horizon, n_agents, n_actions), bool)
        last_action = rng.uniform(-1, 1, size=(horizon, n_agents, n_actions)).astype(np.float32)
        last_action[dead] = 0.0
    else:
        avail = rng.random((horizon, n_agents, n_actions)) < 0.7
        if rng.random() < 0.5:
            avail[..., 0] = True
        if dead_avail is None:
            dead_avail = np.zeros(n_actions, bool)
            dead_avail[0 if rng.random() < 0.5 else int(rng.integers(n_actions))] = True
        avail[dead] = dead_avail
        empty = np.nonzero(~avail.any(axis=-1))
        avail[empty + (rng.integers(n_actions, size=len(empty[0])),)] = True
        last_action = rng.integers(-1, n_actions, size=(horizon, n_agents)).astype(np.int32)
        last_action[dead] = int(np.argmax(dead_avail))
    return {"obs": obs, "last_action": last_action, "avail": avail, "state": state}


def _killed(rng: np.random.Generator, episode: dict, continuous: bool, dead_avail: np.ndarray | None) -> dict:
    """`episode` with every agent dead from a random step on (its own; in a third of the agents from the first
    step): its observation row exactly 0, its mask `dead_avail` (action 0 only when None), that action its last.
    What replaces the others' inputs when a leak reads whether, or how many, teammates live."""
    obs = np.array(episode["obs"], copy=True)
    horizon, n_agents = obs.shape[:2]
    death = np.where(rng.random(n_agents) < 1 / 3, 0, rng.integers(0, max(horizon, 1), size=n_agents))
    dead = np.arange(horizon)[:, None] >= death[None, :]
    obs[dead] = 0.0
    last_action = np.array(episode["last_action"], copy=True)
    avail = np.array(episode["avail"], copy=True)
    if continuous:
        last_action[dead] = 0.0
    else:
        if dead_avail is None:
            dead_avail = np.zeros(avail.shape[-1], bool)
            dead_avail[0] = True
        avail[dead] = dead_avail
        last_action[dead] = int(np.argmax(dead_avail))
    return {"obs": obs, "last_action": last_action, "avail": avail, "state": np.asarray(episode["state"])}


def _lengthened(recorded: list[dict], first: int, length: int) -> dict:
    """Real inputs of `length` steps: recorded episode `first`, then the next ones in turn while it is shorter (so
    that a replacement covers every step of the base episode it replaces inputs of, late steps included)."""
    parts, total, k = [], 0, first
    while total < length:
        part = recorded[k % len(recorded)]
        parts.append(part)
        total += part["obs"].shape[0]
        k += 1
    return {key: np.concatenate([part[key] for part in parts])[:length] for key in EPISODE_INPUTS}


@dataclass
class _Replacements:
    """Where a perturbation trial's inputs come from: the base episode, and the episode whose inputs replace the
    other agents' (or agent i's own). Real ones from `recorded`, random ones (`_random_episode`) shaped by them:
    in the range real observations have (`bounds`) and with a real dead agent's mask (`dead_avail`)."""

    rng: np.random.Generator
    recorded: list[dict]
    sizes: tuple[int, int, int, int]  # n_agents, obs_dim, n_actions, state_dim
    continuous: bool
    bounds: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
    dead_avail: np.ndarray | None = None

    @classmethod
    def of(cls, rng: np.random.Generator, episodes: list[dict] | None, sizes: tuple[int, int, int, int],
           continuous: bool) -> "_Replacements":
        recorded = [{k: np.asarray(e[k]) for k in EPISODE_INPUTS} for e in episodes or []]
        bounds, dead_avail = None, None
        if recorded:
            bounds = {k: (np.min([e[k].min(axis=tuple(range(e[k].ndim - 1))) for e in recorded], axis=0),
                          np.max([e[k].max(axis=tuple(range(e[k].ndim - 1))) for e in recorded], axis=0))
                      for k in ("obs", "state")}
            for episode, source in zip(recorded, episodes):
                dead = ~episode["obs"].any(axis=-1)  # [T, n]: a dead agent's row is exactly 0
                if "alive" in source:
                    dead &= ~np.asarray(source["alive"], bool)
                if dead.any() and not continuous:
                    dead_avail = episode["avail"][dead][0]
                    break
        return cls(rng, recorded, sizes, continuous, bounds, dead_avail)

    def random(self, horizon: int) -> dict:
        return _random_episode(self.rng, horizon, *self.sizes, self.continuous, bounds=self.bounds,
                               dead_avail=self.dead_avail)

    def trial(self, trial: int, trials: int, horizon: int) -> tuple[dict, dict]:
        """(base, replacement) of trial `trial`: the first `trials` start from the recordings in turn (when there
        are any), the rest from random episodes of `horizon` steps. The replacement cycles through three kinds:
        another real episode (real observations and masks, the zero rows of agents that died; a random one where
        there is no other), a random episode, and the base with agents killed (`_killed`)."""
        from_recording = trial < trials and bool(self.recorded)
        base = self.recorded[trial % len(self.recorded)] if from_recording else self.random(horizon)
        length = base["obs"].shape[0]
        kind = trial % 3
        if kind == 0 and self.recorded and (len(self.recorded) > 1 or not from_recording):
            other = _lengthened(self.recorded, trial % len(self.recorded) + int(from_recording), length)
        elif kind == 2:
            other = _killed(self.rng, base, self.continuous, self.dead_avail)
        else:
            other = self.random(length)
        return base, other


def _paths(out: Any, default: str) -> dict[str, np.ndarray]:
    """A probed function's output as {path: array [T, n, ...]}; a bare array is the one path `default`."""
    if isinstance(out, dict):
        return {name: np.asarray(value) for name, value in out.items()}
    return {default: np.asarray(out)}


def _padded(x: np.ndarray, length: int) -> np.ndarray:
    """`x` [T, ...] extended to [length, ...] by repeating its last step."""
    if x.shape[0] >= length:
        return x
    return np.concatenate([x, np.repeat(x[-1:], length - x.shape[0], axis=0)], axis=0)


# A non-finite entry (or a zero's sign) that appears, disappears or moves between two outputs counts as a relative
# change of this much: one full scale, far above any tolerance. NaN, +inf, -inf, -0.0 and every finite value are
# five classes compared exactly (the sentinels of `_entry_class`); finite values are compared by size.
CLASS_CHANGE = 1.0


def _entry_class(x: np.ndarray) -> np.ndarray:
    """0 for a finite entry other than -0.0, 1 for +inf, 2 for -inf, 3 for NaN, 4 for -0.0: the fixed sentinels that
    a comparison of outputs maps non-finite values (and the sign of a zero) to, so that none of them blinds it."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return np.zeros(x.shape, np.int8)
    classes = np.zeros(x.shape, np.int8)
    classes[np.isposinf(x)] = 1
    classes[np.isneginf(x)] = 2
    classes[np.isnan(x)] = 3
    classes[(x == 0) & np.signbit(x)] = 4
    return classes


def _finite_scale(reference: np.ndarray, available: np.ndarray | None = None) -> float:
    """The scale a path's changes are relative to: the largest |entry| of `reference` among its finite entries (and,
    with an `available` mask of its shape, among those of available actions only, so that a finite mask value such
    as -1e9 for unavailable actions does not dwarf every change), plus 1e-6. A non-finite entry never makes the
    scale infinite, which would hide every change."""
    reference = np.asarray(reference, np.float64)
    keep = np.isfinite(reference)
    if available is not None and np.shape(available) == reference.shape:
        keep &= np.asarray(available, bool)
    return float(np.abs(reference[keep]).max()) + 1e-6 if keep.any() else 1e-6


def _relative_change(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """The largest change between `a` and `b` relative to `scale`: |a - b| / scale over entries finite in both, and
    `CLASS_CHANGE` where an entry's class (`_entry_class`: finite, +inf, -inf, NaN, -0.0) differs. Never NaN: a NaN
    that Python's `max` would drop, or an inf - inf, is a class compared exactly instead."""
    a, b = np.asarray(a), np.asarray(b)
    if a.size == 0:
        return 0.0
    classes_differ = bool((_entry_class(a) != _entry_class(b)).any())
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    both = np.isfinite(a64) & np.isfinite(b64)
    finite = float(np.abs(a64[both] - b64[both]).max()) / scale if both.any() else 0.0
    return max(finite, CLASS_CHANGE if classes_differ else 0.0)


def _nonfinite_available(out: np.ndarray, avail: np.ndarray) -> list[int]:
    """The agents whose scores `out` [T, n, A] hold a non-finite value for an action `avail` [T, n, A] marks
    available (every action, when the shapes differ: continuous actions, or outputs that are not per action)."""
    out = np.asarray(out)
    if not np.issubdtype(out.dtype, np.floating) or out.ndim < 2:
        return []
    bad = ~np.isfinite(out)
    if np.shape(avail) == out.shape:
        bad &= np.asarray(avail, bool)
    return [int(j) for j in np.nonzero(bad.reshape(out.shape[0], out.shape[1], -1).any(axis=(0, 2)))[0]]


def _exactly_binary(sent: np.ndarray) -> np.ndarray:
    """[T, n, ...] -> bool [T, n, ...]: the entry is exactly 0.0 or 1.0 by bit pattern. -0.0 equals 0 yet carries a
    bit (its sign) and NaN equals nothing: both fail, so no message carries more than its k bits."""
    sent = np.asarray(sent)
    exact = (sent == 0) | (sent == 1)
    if np.issubdtype(sent.dtype, np.floating):
        exact &= ~np.signbit(sent)
    return exact


def _perturbation_audit(fn: Callable, n_agents: int, obs_dim: int, n_actions: int, state_dim: int,
                        episodes: list[dict] | None, trials: int, horizon: int, seed: int,
                        held: Callable[[dict, int], tuple] | None = None, continuous: bool = False,
                        fixed_scales: dict[str, float] | None = None, default: str = "scores",
                        non_finite: dict[str, set[int]] | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per output path and agent i: (largest relative change of output [:, i] when every other agent's inputs and
    the state are replaced, largest relative change when agent i's own inputs are), each [n].

    `fn(obs, last_action, avail, state, *held(base, trial))` -> [T, n, ...] or {path: [T, n, ...]}; what `held`
    returns for a trial's base episode is passed unchanged to every call of that trial (the receiver audit holds
    the messages fixed this way). A change is relative to the largest finite entry of the path's reference output
    (of an available action, for scores [T, n, A]), or to `fixed_scales[path]` (paths whose outputs are actions or
    residuals, for which 0 is the honest value); NaN, +inf, -inf and -0.0 are compared exactly
    (`_relative_change`), so a non-finite entry that appears, disappears or moves counts as a change.

    With a `non_finite` dict, every path not in `fixed_scales` is scores [T, n, A]: the agents that give a
    non-finite score to an available action, in the reference or in any probed output, are added to
    `non_finite[path]`.

    With recorded `episodes`, `trials` trials start from them and `trials` more from random episodes of `horizon`
    steps, or as long as the longest recording where that is longer: recordings of a short task (toy:hallway's are
    at most 5 steps) or of a good policy (SMAX 3m's end after 13 steps; the limit is 60) would otherwise never
    reach a step that only a late leak uses. What replaces the other agents' inputs cycles through other real
    episodes, random ones (like and unlike real inputs) and the base episode with agents killed (`_Replacements`)."""
    rng = np.random.default_rng(seed)
    fn = jax.jit(fn)
    draws = _Replacements.of(rng, episodes, (n_agents, obs_dim, n_actions, state_dim), continuous)
    recorded = draws.recorded
    random_horizon = max([horizon] + [e["obs"].shape[0] for e in recorded])
    padded_length = random_horizon
    fixed_scales = fixed_scales or {}
    results: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for trial in range(trials * (2 if recorded else 1)):
        base, other = draws.trial(trial, trials, random_horizon)
        length = min(np.asarray(base["obs"]).shape[0], np.asarray(other["obs"]).shape[0])
        # Every call gets the same episode length (the last step repeated), so `fn` compiles once per audit and
        # not once per recorded length; only the first `length` steps are compared. A causal policy's outputs
        # there do not depend on the padding; a policy that reads ahead reads padding built from other agents'
        # inputs too, which is a leak all the same.
        base = {k: _padded(np.asarray(v)[:length], padded_length) for k, v in base.items()}
        other = {k: _padded(np.asarray(v)[:length], padded_length) for k, v in other.items()}

        def outputs(*args, length=length):
            return {name: value[:length] for name, value in _paths(fn(*args), default).items()}

        fixed = held(base, trial) if held is not None else ()
        reference = outputs(base["obs"], base["last_action"], base["avail"], base["state"], *fixed)
        available = base["avail"][:length] if non_finite is not None else None  # score paths: their actions'
        scales = {name: fixed_scales.get(name, _finite_scale(ref, available)) for name, ref in reference.items()}
        for name in reference:
            results.setdefault(name, (np.zeros(n_agents), np.zeros(n_agents)))
        for i in range(n_agents):
            keep = np.zeros(n_agents, bool)
            keep[i] = True
            mixed = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), base[k], other[k])
                     for k in ("obs", "last_action", "avail")}
            perturbed = outputs(mixed["obs"], mixed["last_action"], mixed["avail"], other["state"], *fixed)
            own = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), other[k], base[k])
                   for k in ("obs", "last_action", "avail")}
            changed = outputs(own["obs"], own["last_action"], own["avail"], base["state"], *fixed)
            for name, ref in reference.items():
                deviation, sensitivity = results[name]
                deviation[i] = max(deviation[i], _relative_change(perturbed[name][:, i], ref[:, i], scales[name]))
                sensitivity[i] = max(sensitivity[i], _relative_change(changed[name][:, i], ref[:, i], scales[name]))
            if non_finite is not None:
                for out, avail in ((reference, base["avail"]), (perturbed, mixed["avail"]), (changed, own["avail"])):
                    for name in out:
                        if name not in fixed_scales:
                            agents = _nonfinite_available(out[name], avail[:length])
                            if agents:
                                non_finite.setdefault(name, set()).update(agents)
    return results


def _combine(results: dict[str, tuple[np.ndarray, np.ndarray]], sensitivity_paths: tuple[str, ...] | None = None
             ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(deviation [n]: the worst over paths, sensitivity [n]: the largest over `sensitivity_paths` (default: every
    path), worst deviation per path)."""
    deviation = np.max([d for d, _ in results.values()], axis=0)
    names = [name for name in results if sensitivity_paths is None or name in sensitivity_paths] or list(results)
    sensitivity = np.max([results[name][1] for name in names], axis=0)
    return deviation, sensitivity, {name: float(d.max()) for name, (d, _) in results.items()}


def _through(paths: dict[str, float], tolerance: float) -> str:
    """'; through unroll, act' naming the leaking paths, when more than one path was probed."""
    if len(paths) < 2:
        return ""
    return "; through " + ", ".join(name for name, d in paths.items() if d > tolerance)


def _non_finite_reason(non_finite: dict[str, set[int]]) -> str:
    """'agents [1, 2] give a non-finite score (NaN or ±inf) to an available action (agent 1: unroll, step; ...)'."""
    agents = sorted(set().union(*non_finite.values()))
    where = "; ".join(f"agent {i}: {', '.join(name for name, found in sorted(non_finite.items()) if i in found)}"
                      for i in agents)
    return (f"agents {agents} give a non-finite score (NaN or ±inf) to an available action ({where}), which no "
            f"comparison of scores can measure")


def _failure(reasons: list[str], leaked: bool) -> str:
    """The FAIL message of `reasons`: not decentralized when a change was seen, not shown to be otherwise."""
    end = ("The policy is not decentralized." if leaked
           else "The audit cannot show that the policy is decentralized.")
    return "FAIL: " + "; ".join(reasons) + ". " + end


def audit_scores_fn(scores_fn: ScoresFn, n_agents: int, obs_dim: int, n_actions: int, state_dim: int,
                    episodes: list[dict] | None = None, trials: int = 8, horizon: int = 12, seed: int = 0,
                    tolerance: float = 1e-5, continuous: bool = False,
                    fixed_scales: dict[str, float] | None = None) -> AuditReport:
    """Audit any scores function `(obs [T,n,o], last_action [T,n], avail [T,n,A], state [T,s]) -> [T,n,A]`, or one
    returning several paths `{name: [T, n, ...]}` (e.g. the scores of `unroll` and of `step`, and the actions of
    `act`), each audited on its own scale (or on `fixed_scales[name]`).

    Inputs come from recorded `episodes` (dicts of obs, last_action, avail, state arrays) when given, followed by
    as many random ones, and are random otherwise. For each trial and agent i, the inputs of every agent j != i
    and the state are replaced by other values; agent i's outputs must not move by more than `tolerance`
    (relative) on any path. `own_sensitivity` is measured on the paths without a fixed scale. Those paths are
    scores: a non-finite score for an available action fails the audit (`AuditReport.non_finite`).
    """
    fixed_scales = fixed_scales or {}
    non_finite: dict[str, set[int]] = {}
    results = _perturbation_audit(scores_fn, n_agents, obs_dim, n_actions, state_dim, episodes, trials, horizon,
                                  seed, continuous=continuous, fixed_scales=fixed_scales, non_finite=non_finite)
    deviation, sensitivity, paths = _combine(results, tuple(name for name in results if name not in fixed_scales))
    worst = float(deviation.max())
    passed = worst <= tolerance and not non_finite
    probed = f" ({', '.join(paths)})" if len(paths) > 1 else ""
    if passed:
        message = (f"PASS: over {trials} trials, no agent's scores{' or actions' if fixed_scales else ''}{probed} "
                   f"moved (max relative change {worst:.2e}) when every other agent's inputs and the global state "
                   f"were replaced.")
    elif not non_finite:
        leaking = [i for i in range(n_agents) if deviation[i] > tolerance]
        message = (f"FAIL: agents {leaking} change their scores{' or actions' if fixed_scales else ''} (max relative "
                   f"change {worst:.3g}{_through(paths, tolerance)}) when other agents' inputs or the global state "
                   f"change: the policy is not decentralized.")
    else:
        reasons = [_non_finite_reason(non_finite)]
        if worst > tolerance:
            leaking = [i for i in range(n_agents) if deviation[i] > tolerance]
            reasons.insert(0, f"agents {leaking} change their scores{' or actions' if fixed_scales else ''} (max "
                              f"relative change {worst:.3g}{_through(paths, tolerance)}) when other agents' inputs "
                              f"or the global state change")
        message = _failure(reasons, worst > tolerance)
    return AuditReport(passed=passed, max_deviation=worst, own_sensitivity=float(sensitivity.min()), trials=trials,
                       per_agent=[float(d) for d in deviation], message=message, paths=paths,
                       non_finite={name: sorted(found) for name, found in sorted(non_finite.items())})


def audit_communication(messages_fn: MessagesFn, receiver_fn: ReceiverFn, n_agents: int, obs_dim: int,
                        n_actions: int, state_dim: int, message_bits: int, episodes: list[dict] | None = None,
                        trials: int = 8, horizon: int = 12, seed: int = 0, tolerance: float = 1e-5,
                        continuous: bool = False,
                        execution_fn: Callable[..., dict[str, jax.Array]] | None = None) -> AuditReport:
    """Audit a communicating policy given as its two halves over whole episodes:

    `messages_fn(obs [T,n,o], last_action [T,n], avail [T,n,A], state [T,s]) -> messages [T,n,k]` and
    `receiver_fn(obs, last_action, avail, state, messages [T,n,k]) -> scores [T,n,A]`; either may return a dict
    of such outputs, one per probed path (the receivers are then held to the "messages" path's messages).

    (i) each sender j's message must not move (relative `tolerance`) when every other agent's inputs and the
    state are replaced; (ii) with the messages held fixed, each agent i's scores must not move under the same
    replacement (the messages held are the senders' own on even trials and random bits on odd ones, so the
    receivers are probed beyond the messages the senders happen to send); (iii) on every base episode, every
    message is exactly `message_bits` entries, each exactly 0 or 1; (iv) with `execution_fn(obs, last_action,
    avail, state) -> {path: residual [T, n, ...]}`, how the executed step departs from sending then receiving
    (0 for an honest policy; on a fixed scale of 1) must not move either. Inputs as in `audit_scores_fn`.
    """
    check_rng = np.random.default_rng(seed + 7919)  # apart from the perturbation's draws, which stay as plain's
    sources = list(episodes or []) or [_random_episode(check_rng, horizon, n_agents, obs_dim, n_actions, state_dim,
                                                       continuous) for _ in range(trials)]
    messages_of = jax.jit(messages_fn)

    def sent_messages(o, la, av, s) -> np.ndarray:
        """The messages the receivers get at execution: the "messages" path, or the only one."""
        sent = _paths(messages_of(o, la, av, s), "messages")
        return sent["messages"] if "messages" in sent else next(iter(sent.values()))

    # (iii) on every base episode and every message path: binary entries, k of them per agent.
    shapes: set[tuple[int, ...]] = set()
    non_binary: set[int] = set()
    for episode in sources:
        obs = np.asarray(episode["obs"])
        for sent in _paths(messages_of(obs, np.asarray(episode["last_action"]), np.asarray(episode["avail"]),
                                       np.asarray(episode["state"])), "messages").values():
            if sent.shape[:2] != obs.shape[:2]:
                raise ValueError(f"messages_fn must return [T, n, k] = [{obs.shape[0]}, {n_agents}, k], got "
                                 f"{sent.shape}.")
            shapes.add(sent.shape[2:])
            exact = _exactly_binary(sent).reshape(*sent.shape[:2], -1)  # -0.0 and NaN are neither
            non_binary |= {int(j) for j in np.nonzero(~exact.all(axis=(0, 2)))[0]}
    shape = sorted(shapes, key=lambda s: s != (message_bits,))[-1]  # a wrong shape, if any path has one
    binary = shapes == {(message_bits,)} and not non_binary

    # (i) messages: a sender's message from its own inputs only.
    def flat_messages(o, la, av, s):
        sent = messages_fn(o, la, av, s)
        flat = lambda m: m.reshape(*m.shape[:2], -1)  # noqa: E731
        return {k: flat(m) for k, m in sent.items()} if isinstance(sent, dict) else flat(sent)

    message_results = _perturbation_audit(flat_messages, n_agents, obs_dim, n_actions, state_dim, episodes, trials,
                                          horizon, seed, continuous=continuous, default="messages")
    message_dev, message_own, message_paths = _combine(message_results)

    # (ii) receivers, with the messages held fixed: agent i reads only its own inputs besides them; and (iv) the
    # executed step against its halves, probed on the same inputs.
    bits_rng = np.random.default_rng(seed + 104729)

    def held(base: dict, trial: int) -> tuple[np.ndarray]:
        sent = sent_messages(base["obs"], base["last_action"], base["avail"], base["state"])
        if trial % 2:
            sent = bits_rng.integers(0, 2, size=sent.shape).astype(sent.dtype)
        return (sent,)

    def receivers(o, la, av, s, m):
        out = receiver_fn(o, la, av, s, m)
        out = dict(out) if isinstance(out, dict) else {"receive": out}
        return {**out, **(execution_fn(o, la, av, s) if execution_fn is not None else {})}

    non_finite: dict[str, set[int]] = {}
    results = _perturbation_audit(receivers, n_agents, obs_dim, n_actions, state_dim, episodes, trials, horizon,
                                  seed, held=held, continuous=continuous,
                                  fixed_scales={name: 1.0 for name in ACTION_PATHS}, non_finite=non_finite)
    receiver_paths = tuple(name for name in results if name not in ACTION_PATHS)
    execution_paths = tuple(name for name in results if name in ACTION_PATHS)
    deviation, sensitivity, paths = _combine(results, receiver_paths)
    received = np.max([results[name][0] for name in receiver_paths], axis=0)
    executed = (np.max([results[name][0] for name in execution_paths], axis=0) if execution_paths
                else np.zeros(n_agents))

    worst, worst_message = float(deviation.max()), float(message_dev.max())
    receivers_ok, senders_ok = float(received.max()) <= tolerance, worst_message <= tolerance
    execution_ok = float(executed.max()) <= tolerance
    messages = MessageAudit(bits=message_bits, passed=senders_ok and binary, max_deviation=worst_message,
                            own_sensitivity=float(message_own.min()), per_sender=[float(d) for d in message_dev],
                            binary=binary, shape=list(shape), non_binary_senders=sorted(non_binary),
                            paths=message_paths)
    passed = receivers_ok and execution_ok and messages.passed and not non_finite
    if passed:
        message = (f"PASS: agent i's action reads only its own inputs and {message_bits}-bit messages, each a "
                   f"function of its sender's own inputs only. Over {trials} trials, replacing every other agent's "
                   f"inputs and the global state changed no message (max relative change {worst_message:.2e}) "
                   f"and, with the messages held fixed, no agent's scores (max relative change {worst:.2e}); "
                   f"every message had exactly {message_bits} bit{'s' if message_bits > 1 else ''}, each 0 or 1.")
    else:
        reasons = []
        if not receivers_ok:
            leaking = [i for i in range(n_agents) if received[i] > tolerance]
            through = _through({name: paths[name] for name in receiver_paths}, tolerance)
            reasons.append(f"with every message held fixed, agents {leaking} change their scores (max relative "
                           f"change {float(received.max()):.3g}{through}) when other agents' inputs or the global "
                           f"state change: they read other agents' information other than through messages")
        if not execution_ok:
            leaking = [i for i in range(n_agents) if executed[i] > tolerance]
            through = ", ".join(name for name in execution_paths if paths[name] > tolerance)
            reasons.append(f"the executed step of agents {leaking} departs from sending then receiving by an amount "
                           f"that changes with other agents' inputs (max change {float(executed.max()):.3g}; "
                           f"{through}): it reads other agents' information outside the audited messages")
        if not senders_ok:
            leaking = [j for j in range(n_agents) if message_dev[j] > tolerance]
            reasons.append(f"the messages of agents {leaking} change (max relative change {worst_message:.3g}"
                           f"{_through(message_paths, tolerance)}) when other agents' inputs or the global state "
                           f"change: a message must be a function of its sender's own inputs only")
        if shapes != {(message_bits,)}:
            reasons.append(f"each message has shape {tuple(shape)}, not the declared {message_bits} bits")
        if non_binary:
            reasons.append(f"agents {sorted(non_binary)} send message entries other than exactly 0 or 1 (by bit "
                           f"pattern: -0.0 and NaN are neither): messages must be binary")
        if non_finite:
            reasons.append(_non_finite_reason(non_finite))
        message = _failure(reasons, len(reasons) > 1 or not non_finite)
    return AuditReport(passed=passed, max_deviation=worst, own_sensitivity=float(sensitivity.min()), trials=trials,
                       per_agent=[float(d) for d in deviation], message=message, messages=messages, paths=paths,
                       non_finite={name: sorted(found) for name, found in sorted(non_finite.items())})


def _scan_episode(policy: DecentralizedPolicy, step: Callable, obs: jax.Array, last_action: jax.Array,
                  avail: jax.Array, messages: jax.Array | None = None) -> jax.Array:
    """`step(hidden [n, H], obs [n, o], last_action [n], avail [n, A], reset [](, messages [n, k])) -> (hidden,
    out [n, ...])` over one episode as the rollout's actor drives it (`ctde.algos.rollout.policy_actor`): from
    a zero hidden state [n, spec hidden_dim], `reset` True at the first step only. -> out [T, n, ...]."""
    start = jnp.zeros((policy.spec["n_agents"], policy.spec["hidden_dim"]))

    def body(hidden, inputs):
        t, o, la, av, *extra = inputs
        return step(hidden, o, la, av, t == 0, *extra)

    xs = (jnp.arange(obs.shape[0]), obs, last_action, avail) + ((messages,) if messages is not None else ())
    return jax.lax.scan(body, start, xs)[1]


def _as_action_path(policy: DecentralizedPolicy, actions: jax.Array) -> jax.Array:
    """Actions [T, n] (discrete: one-hot [T, n, A], so that any flip is a change of 1) or [T, n, A] as they are."""
    if policy.spec.get("continuous_actions", False):
        return actions
    return jax.nn.one_hot(actions, policy.spec["n_actions"])


def _plain_paths(policy: DecentralizedPolicy, params: Any) -> ScoresFn:
    """Every path a plain policy's agent acts through: `unroll`'s scores (offered the state), and, as execution
    runs them step by step, `step`'s scores and `act`'s actions."""

    def paths(o, la, av, s):
        bound = lambda method: (lambda *a: method(params, *a))  # noqa: E731
        return {"unroll": policy.unroll(params, o, la, av, s),
                "step": _scan_episode(policy, bound(policy.step), o, la, av),
                "act": _as_action_path(policy, _scan_episode(policy, bound(policy.act), o, la, av))}

    return paths


def _communicating_paths(policy: DecentralizedPolicy, params: Any) -> tuple[MessagesFn, ReceiverFn, Callable]:
    """A communicating policy's three probed halves: its messages (`messages` as execution sends them, and
    `episode_messages`, offered the state), its receivers with the messages given (`receive` step by step, and
    `unroll`), and the executed step's departure from them: `step` against `DecentralizedPolicy.step` (send with
    `messages`, then `receive`) relative to the scores' scale, and `act` against `DecentralizedPolicy.act` (the
    greedy action, or tanh, of `step`). The last two are exactly 0 unless `step` or `act` is overridden."""
    bound = lambda method: (lambda *a: method(params, *a))  # noqa: E731

    def messages_fn(o, la, av, s):
        return {"messages": jax.vmap(policy.messages, in_axes=(None, 0, 0, 0))(params, o, la, av),
                "episode_messages": policy.episode_messages(params, o, la, av, s)}

    def receiver_fn(o, la, av, s, m):
        return {"receive": _scan_episode(policy, bound(policy.receive), o, la, av, m),
                "unroll": policy.unroll(params, o, la, av, s, messages=m)}

    def execution_fn(o, la, av, s):
        scores = _scan_episode(policy, bound(policy.step), o, la, av)
        reference = _scan_episode(policy, lambda *a: DecentralizedPolicy.step(policy, params, *a), o, la, av)
        actions = _scan_episode(policy, bound(policy.act), o, la, av)
        greedy = _scan_episode(policy, lambda *a: DecentralizedPolicy.act(policy, params, *a), o, la, av)
        # Relative to the reference's largest finite score, so that a -inf mask does not make the scale inf; an
        # entry equal in both (a mask included) departs by exactly 0, others by their difference (inf or NaN where
        # one is non-finite: the audit compares those classes exactly).
        scale = jnp.max(jnp.where(jnp.isfinite(reference), jnp.abs(reference), 0.0)) + 1e-6
        return {"step vs send-receive": jnp.where(scores == reference, 0.0, scores - reference) / scale,
                "act vs greedy step": _as_action_path(policy, actions) - _as_action_path(policy, greedy)}

    return messages_fn, receiver_fn, execution_fn


# -- the structural proof -------------------------------------------------------------------------------------

# What `DecentralizedPolicy` itself defines to send, receive, step, act and unroll: a subclass that overrides any
# of them runs code the structural check has not traced (audited behaviourally only).
POLICY_METHODS = ("messages", "receive", "step", "act", "unroll", "episode_messages", "initial_hidden",
                  "seed_params", "__post_init__", "communicating", "message_bits", "n_seeds")
# Primitives through which a traced function calls back into Python, where any array (another agent's) can be read.
HOST_CALLBACKS = ("pure_callback", "io_callback", "callback", "host_callback", "outside_call", "ffi_call",
                  "custom_call")
# Primitives whose behaviour under vmap is a Python rule that the trace on one agent does not cover: under
# `DecentralizedPolicy`'s vmap over agents such a rule sees every agent's inputs at once.
UNTRACED_BATCHING = ("custom_vmap_call",)


@dataclass
class StructuralVerdict:
    """`structural_check`'s verdict on an exported policy.

    `passed`: every per-agent function of the network traces on one agent's inputs plus the parameters (and, for
    the receiver, the [n, k] messages), returns one agent's outputs, closes over no array shaped like a
    multi-agent input and calls back into no host code. `covered`: the policy runs those functions through
    `DecentralizedPolicy`'s own methods (vmap over agents); False when a subclass overrides one (`overridden`),
    whose code is then audited behaviourally only. `functions` gives, per traced function, its inputs and
    outputs (name -> shape) and the shapes of the arrays it closes over."""

    passed: bool
    covered: bool
    network: str
    message: str
    problems: list[str] = field(default_factory=list)
    overridden: list[str] = field(default_factory=list)
    functions: dict[str, dict] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _sub_jaxprs(value: Any):
    """The jaxprs (closed or open) inside one equation parameter: a scan's body, a cond's branches, a pjit's."""
    if isinstance(value, (list, tuple)):
        for item in value:
            yield from _sub_jaxprs(item)
    elif hasattr(value, "eqns") or (hasattr(value, "jaxpr") and hasattr(value, "consts")):
        yield value


def _walk_jaxpr(closed: Any) -> tuple[list[np.ndarray], list[str]]:
    """(every array a jaxpr closes over, its own consts and its literals, in it and its sub-jaxprs; the names of
    every primitive it applies)."""
    arrays: list[np.ndarray] = []
    primitives: list[str] = []
    stack = [closed]
    while stack:
        item = stack.pop()
        if hasattr(item, "consts"):  # a ClosedJaxpr
            arrays += [np.asarray(c) for c in item.consts if np.ndim(c) > 0]
            item = item.jaxpr
        for eqn in item.eqns:
            primitives.append(eqn.primitive.name)
            arrays += [np.asarray(v.val) for v in eqn.invars if hasattr(v, "val") and np.ndim(v.val) > 0]
            for value in eqn.params.values():
                stack.extend(_sub_jaxprs(value))
    return arrays, primitives


def _global_shape(shape: tuple[int, ...], spec: dict, width: int) -> str | None:
    """Why an array of `shape` a per-agent function closes over looks like a multi-agent input (every agent's
    observation, avail mask, hidden state or input vector, stacked [..., n, d] or flattened [..., n * d]; the
    global state [..., s]), or None."""
    n = int(spec["n_agents"])
    features = {"observation": int(spec["obs_dim"]), "action scores or avail mask": int(spec["n_actions"]),
                "hidden state": int(spec.get("hidden_dim", 0)), "input vector": width}
    features = {name: d for name, d in features.items() if d > 0}
    if n < 2 or not shape:
        return None
    for name, d in features.items():
        if len(shape) >= 2 and tuple(shape[-2:]) == (n, d):
            return f"an agent axis: [..., n={n}, {d}] like every agent's {name}"
        if shape[-1] == n * d:
            return f"[..., {n * d}] = n x {d}, the size of every agent's {name}"
    state_dim = int(spec.get("state_dim", 0))
    if state_dim > 0 and shape[-1] == state_dim and state_dim not in features.values():
        return f"[..., {state_dim}], the size of the global state"
    return None


def structural_check(policy: DecentralizedPolicy) -> StructuralVerdict:
    """Prove structurally that the policy's network is decentralized: trace each per-agent function of the network
    the policy runs (`PolicyNetwork.sender` and `.receiver`; `build_network(policy.spec)` unless replaced) with
    `jax.make_jaxpr` on abstract inputs of ONE agent, the parameters an explicit argument, and check

    - its inputs are exactly the parameters and the agent's own inputs: obs [o], last_action [] (continuous:
      [A]), avail [A], agent_index [] (and, for the receiver, its hidden state [H], reset [] and the messages
      [n, k], its only cross-agent input; k = 0 for a plain network, so then it has none), and it returns one
      agent's outputs (sender: message [k]; receiver: hidden [H], scores [A]);
    - no array it closes over (consts, literals, in it and in every sub-jaxpr) is shaped like a multi-agent
      input (`_global_shape`): a builder that captures a buffer of all agents' observations is caught here, where
      no perturbation of the audit's inputs would move it;
    - it calls back into no host code (`HOST_CALLBACKS`), where any array could be read;
    - the policy's methods are `DecentralizedPolicy`'s (`POLICY_METHODS`), which vmap those functions over
      agents with the parameters, reset and messages broadcast and nothing else shared. A subclass overriding one
      is reported as not covered structurally (audited behaviourally only); that alone does not fail the check.
    """
    spec = policy.spec
    n, obs_dim, n_actions = int(spec["n_agents"]), int(spec["obs_dim"]), int(spec["n_actions"])
    hidden_dim = int(spec.get("hidden_dim", 0))
    continuous = bool(spec.get("continuous_actions", False))
    network = policy._network
    name = str(spec.get("network"))
    problems: list[str] = []
    overridden = [m for m in POLICY_METHODS
                  if getattr(type(policy), m, None) is not DecentralizedPolicy.__dict__[m] or m in vars(policy)]
    if type(network) is not PolicyNetwork:
        overridden.append(f"_network (a {type(network).__name__})")
    if not isinstance(network, PolicyNetwork):
        return StructuralVerdict(False, False, name, f"FAIL (structural): the policy's network is a "
                                 f"{type(network).__name__}, not a PolicyNetwork; nothing to trace.",
                                 ["no PolicyNetwork"], overridden)

    bits = int(network.bits)
    if network.sender is None and bits != 0:
        problems.append(f"a plain network (no sender) declares {bits} message bits")
    if network.sender is not None and int(spec.get("message_bits", bits)) != bits:
        problems.append(f"the network sends {bits} bits but the spec declares message_bits = "
                        f"{spec.get('message_bits')}")

    sds = jax.ShapeDtypeStruct
    params = jax.tree.map(lambda x: sds(np.shape(x)[1:], x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype),
                          policy.params)  # one seed's, abstract
    own = {"obs": sds((obs_dim,), jnp.float32),
           "last_action": sds((n_actions,), jnp.float32) if continuous else sds((), jnp.int32),
           "avail": sds((n_actions,), jnp.bool_), "agent_index": sds((), jnp.int32)}
    try:
        width = int(jax.eval_shape(lambda o, la, av, i: own_input(spec, o, la, av, i), *own.values()).shape[-1])
    except Exception:  # noqa: BLE001 - a spec whose inputs do not build only loses this one size
        width = 0
    receiver_inputs = {"hidden": sds((hidden_dim,), jnp.float32), **own, "reset": sds((), jnp.bool_),
                       "messages": sds((n, bits), jnp.float32)}
    traced = {"receiver": (network.receiver, receiver_inputs, [(hidden_dim,), (n_actions,)])}
    if network.sender is not None:
        traced["sender"] = (network.sender, own, [(bits,)])
    n_params = len(jax.tree.leaves(params))
    functions: dict[str, dict] = {}
    for part, (fn, inputs, expected) in sorted(traced.items(), reverse=True):  # sender first
        try:
            closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(params, *inputs.values())
        except Exception as e:  # noqa: BLE001 - a function that does not trace on one agent is the finding
            problems.append(f"the {part} does not trace on one agent's inputs ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})")
            continue
        outputs = [tuple(o.shape) for o in jax.tree.leaves(out_shape)]
        arrays, primitives = _walk_jaxpr(closed)
        functions[part] = {"inputs": {"params": f"{n_params} arrays",
                                      **{k: list(v.shape) for k, v in inputs.items()}},
                           "outputs": [list(o) for o in outputs],
                           "closed_over": [list(a.shape) for a in arrays]}
        if len(closed.jaxpr.invars) != n_params + len(inputs):
            problems.append(f"the {part} takes {len(closed.jaxpr.invars)} inputs, not the parameters' {n_params} "
                            f"and {len(inputs)} own inputs ({', '.join(inputs)})")
        if outputs != expected:
            problems.append(f"the {part} returns {[list(o) for o in outputs]}, not one agent's "
                            f"{[list(o) for o in expected]}")
        for array in arrays:
            why = _global_shape(tuple(array.shape), spec, width)
            if why is not None:
                problems.append(f"the {part} closes over an array of shape {list(array.shape)}: {why}")
        callbacks = sorted({p for p in primitives
                            if p in HOST_CALLBACKS or ("callback" in p and p != "debug_callback")})
        if callbacks:
            problems.append(f"the {part} calls back into host code ({', '.join(callbacks)}), where any agent's data "
                            f"can be read")
        batching = sorted({p for p in primitives if p in UNTRACED_BATCHING})
        if batching:
            problems.append(f"the {part} defines its own batching rule ({', '.join(batching)}: "
                            f"jax.custom_batching.custom_vmap), which the vmap over agents runs on every agent's "
                            f"inputs at once and no trace on one agent covers")
    covered = not overridden
    passed = not problems
    if passed:
        parts = " and ".join(f"{part} ({', '.join(f'{k} {list(v.shape)}' for k, v in traced[part][1].items())})"
                             for part in sorted(traced, reverse=True))
        message = (f"PASS (structural): network {name}'s {parts} trace on one agent's inputs plus the parameters, "
                   f"{'the messages being the only cross-agent input' if bits else 'with no cross-agent input'}, "
                   f"close over no array shaped like a multi-agent input and call no host code")
        message += (", and DecentralizedPolicy's own methods vmap them over agents." if covered else
                    f"; but {type(policy).__name__} overrides {', '.join(overridden)}: not covered structurally; "
                    f"audited behaviourally only.")
    else:
        message = (f"FAIL (structural): network {name}: " + "; ".join(problems)
                   + ". The policy is not decentralized by construction.")
        if not covered:
            message += f" ({type(policy).__name__} also overrides {', '.join(overridden)}.)"
    return StructuralVerdict(passed=passed, covered=covered, network=name, message=message, problems=problems,
                             overridden=overridden, functions=functions)


def audit_policy(policy: DecentralizedPolicy, episodes: list[dict] | None = None, trials: int = 8,
                 seed: int = 0, horizon: int | None = None) -> AuditReport:
    """Audit every seed of an exported policy; the report is the worst over seeds (a failing one first).

    `episodes`: recorded inputs (`ctde.training.audit_episodes` rolls them out in the policy's environment); random
    episodes follow them, `horizon` steps long (default: the spec's `episode_limit`, at least `DEFAULT_HORIZON`).

    A plain policy is audited as one scores function with three paths (`audit_scores_fn`): `unroll`, and `step`
    and `act` run step by step as execution runs them; agent i's scores and actions on every path must not move
    when the others' inputs and the state do. A communicating one is audited as its senders and receivers apart
    (`audit_communication`), each on every path that computes it, plus the executed `step` and `act` against
    sending then receiving (check iv). The structural verdict (`structural_check`) stands beside the behavioural
    one in `AuditReport.structural` and its message; the audit passes only if both do."""
    spec = policy.spec
    sizes = (spec["n_agents"], spec["obs_dim"], spec["n_actions"], spec["state_dim"])
    continuous = bool(spec.get("continuous_actions", False))
    horizon = int(horizon or max(spec.get("episode_limit") or 0, DEFAULT_HORIZON))
    structural = structural_check(policy)
    reports = []
    for k in range(policy.n_seeds):
        params = policy.seed_params(k)
        if policy.communicating:
            messages_fn, receiver_fn, execution_fn = _communicating_paths(policy, params)
            reports.append(audit_communication(
                messages_fn, receiver_fn, *sizes, message_bits=int(spec["message_bits"]), episodes=episodes,
                trials=trials, horizon=horizon, seed=seed + k, continuous=continuous, execution_fn=execution_fn))
        else:
            reports.append(audit_scores_fn(_plain_paths(policy, params), *sizes, episodes=episodes, trials=trials,
                                           horizon=horizon, seed=seed + k, continuous=continuous,
                                           fixed_scales={"act": 1.0}))
    report = max(reports, key=lambda r: (not r.passed, r.max_deviation,
                                         r.messages.max_deviation if r.messages is not None else 0.0))
    return _with_structural(report, structural)


def _with_structural(report: AuditReport, structural: StructuralVerdict) -> AuditReport:
    """The behavioural `report` with the structural verdict beside it: in `structural`, in the message, and in
    `passed` (a network that fails the structural check fails the audit, whatever the behaviour showed)."""
    report.structural = structural.to_dict()
    if structural.passed:
        report.message = f"{report.message} {structural.message}"
    else:
        report.passed = False
        report.message = f"{structural.message} Behavioural: {report.message}"
    return report


def require_audit(report: AuditReport) -> None:
    if not report.passed:
        raise AuditFailedError(report.message)
