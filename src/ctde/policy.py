"""The decentralized policy artifact: export, load, run, and audit.

An exported policy is a directory with `policy.json` (what network, which own inputs, sizes) and
`params.msgpack` (parameters, stacked over the run's seeds). Loading it needs only this module and
`ctde.nets`, not the training code. Its forward function is one agent's step, vmapped over agents, whose
only inputs are that agent's own observation, previous action, index and (where the paradigm allows) its
own available-action mask.

The audit checks the claim behaviourally: for every agent i, perturbing every other agent's inputs and the
global state must leave agent i's action scores, and so its actions, unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from ctde.errors import AuditFailedError, CheckpointError
from ctde.nets.cadp import CADPAgent
from ctde.nets.rnn import RNNAgent

POLICY_FORMAT_VERSION = 1
OWN_INPUTS = ("obs", "last_action", "agent_id", "avail")

# One agent's step: (params, hidden [H], obs [o], last_action [], avail [A], agent_index [], reset []) ->
# (hidden [H], scores [A]).
AgentStep = Callable[..., tuple[jax.Array, jax.Array]]
POLICY_NETWORKS: dict[str, Callable[[dict], AgentStep]] = {}


def register_network(name: str):
    def wrap(builder):
        POLICY_NETWORKS[name] = builder
        return builder

    return wrap


def own_input(spec: dict, obs, last_action, avail, agent_index) -> jax.Array:
    """One agent's input vector from its own data only, in the order the spec's `inputs` lists."""
    parts = {"obs": obs, "last_action": jax.nn.one_hot(last_action, spec["n_actions"]),
             "avail": avail.astype(obs.dtype), "agent_id": jax.nn.one_hot(agent_index, spec["n_agents"])}
    return jnp.concatenate([parts[name].astype(obs.dtype) for name in spec["inputs"]], axis=-1)


def recurrent_agent_step(spec: dict, forward: Callable) -> AgentStep:
    """One agent's step of a recurrent network `forward(params, h0 [1, H], xs [1, 1, in], resets [1, 1])
    -> (h [1, H], scores [1, 1, |A|])` fed with the agent's own input vector."""

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, scores = forward(params, hidden[None], x[None, None], reset[None, None])
        return hidden[0], scores[0, 0]

    return step


@register_network("rnn_agent")
def _rnn_agent(spec: dict) -> AgentStep:
    return recurrent_agent_step(spec, RNNAgent(spec["hidden_dim"], spec["n_actions"]).apply)


@register_network("cadp_decentralized")
def _cadp_decentralized(spec: dict) -> AgentStep:
    """CADP's D model: the advice network with each agent's own value vector in place of the attention mix.
    Its parameters hold no query or key weights; `CADPAgent.decentralized` reads none."""
    network = CADPAgent(spec["hidden_dim"], spec["n_actions"], spec["heads"], spec["head_dim"], spec["residual"])
    return recurrent_agent_step(spec, lambda params, *args: network.apply(params, *args,
                                                                          method=CADPAgent.decentralized))


@register_network("ptde_student")
def _ptde_student(spec: dict) -> AgentStep:
    from ctde.nets.ptde import QHead, Student, Trunk

    trunk = Trunk(spec["hidden_dim"])
    head = QHead(spec["hidden_dim"], spec["n_actions"])
    student = Student(spec["z_dim"], spec["student_hidden"])

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, h = trunk.apply(params["trunk"], hidden[None], x[None, None], reset[None, None])
        z = student.apply(params["student"], x)
        return hidden[0], head.apply(params["head"], h[0, 0], z)

    return step


@dataclass
class DecentralizedPolicy:
    """A policy whose agent i acts on agent i's own inputs alone. `params` carry a leading seed axis."""

    spec: dict
    params: Any
    _agent_step: AgentStep | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.spec["network"] not in POLICY_NETWORKS:
            raise CheckpointError(f"Policy network '{self.spec['network']}' is unknown to this version of ctde "
                                  f"(known: {', '.join(POLICY_NETWORKS)}).")
        self._agent_step = POLICY_NETWORKS[self.spec["network"]](self.spec)

    @property
    def n_seeds(self) -> int:
        return int(self.spec.get("seeds", 1))

    def seed_params(self, seed: int = 0) -> Any:
        if not 0 <= seed < self.n_seeds:
            raise ValueError(f"seed {seed} out of range: this policy holds {self.n_seeds} seed(s).")
        return jax.tree.map(lambda x: x[seed], self.params)

    def initial_hidden(self) -> jax.Array:
        """float32 [n_agents, hidden_dim]."""
        return jnp.zeros((self.spec["n_agents"], self.spec["hidden_dim"]))

    def step(self, params: Any, hidden: jax.Array, obs: jax.Array, last_action: jax.Array, avail: jax.Array,
             reset: jax.Array) -> tuple[jax.Array, jax.Array]:
        """All agents, each on its own inputs. hidden [n, H], obs [n, o], last_action int [n] (-1 = none),
        avail bool [n, A], reset bool [] -> (hidden [n, H], scores [n, A])."""
        agents = jnp.arange(self.spec["n_agents"])
        return jax.vmap(self._agent_step, in_axes=(None, 0, 0, 0, 0, 0, None))(
            params, hidden, obs, last_action, avail, agents, reset)

    def act(self, params, hidden, obs, last_action, avail, reset) -> tuple[jax.Array, jax.Array]:
        """Greedy available actions: (hidden [n, H], actions int [n])."""
        hidden, scores = self.step(params, hidden, obs, last_action, avail, reset)
        return hidden, jnp.argmax(jnp.where(avail, scores, -1e7), axis=-1)

    def unroll(self, params, obs, last_action, avail, state=None) -> jax.Array:
        """Scores over one episode. obs [T, n, o], last_action [T, n], avail [T, n, A] -> [T, n, A].
        `state` is accepted so the audit can offer it; a decentralized policy has no way to read it."""
        def body(hidden, inputs):
            t, o, la, av = inputs
            hidden, scores = self.step(params, hidden, o, la, av, t == 0)
            return hidden, scores

        steps = jnp.arange(obs.shape[0])
        return jax.lax.scan(body, self.initial_hidden(), (steps, obs, last_action, avail))[1]

    # -- files -------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "params.msgpack.tmp"
        tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(self.params)))
        tmp.replace(directory / "params.msgpack")
        (directory / "policy.json").write_text(json.dumps({**self.spec, "format": POLICY_FORMAT_VERSION}, indent=2))
        return directory


def make_policy(spec: dict, params: Any) -> DecentralizedPolicy:
    unknown = [name for name in spec["inputs"] if name not in OWN_INPUTS]
    if unknown:
        raise ValueError(f"A decentralized policy may read only its own {OWN_INPUTS}; got {unknown}.")
    return DecentralizedPolicy(spec=spec, params=params)


def load_policy(path: str | Path) -> DecentralizedPolicy:
    """Load an exported policy directory (or a run directory, whose `policy/` is used)."""
    path = Path(path)
    if (path / "policy").is_dir() and not (path / "policy.json").exists():
        path = path / "policy"
    spec_file, params_file = path / "policy.json", path / "params.msgpack"
    if not spec_file.exists() or not params_file.exists():
        raise CheckpointError(f"No exported policy at {path}: expected policy.json and params.msgpack. "
                              f"Export one with `ctde export <run>`.")
    try:
        spec = json.loads(spec_file.read_text())
        raw = flax.serialization.msgpack_restore(params_file.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure means the same thing to the user
        raise CheckpointError(f"The policy at {path} is unreadable ({type(e).__name__}: {e}). "
                              f"Re-export it with `ctde export <run>`.") from None
    if spec.get("format") != POLICY_FORMAT_VERSION:
        raise CheckpointError(f"The policy at {path} has format {spec.get('format')}, this ctde reads "
                              f"{POLICY_FORMAT_VERSION}. Re-export it with this version.")
    params = jax.tree.map(jnp.asarray, raw)
    return make_policy(spec, params)


# ---------------------------------------------------------------------------------------------------------
# Audit


@dataclass
class AuditReport:
    passed: bool
    max_deviation: float  # largest change of any agent's scores caused by others' inputs or the state
    own_sensitivity: float  # smallest over agents of the largest change caused by the agent's own inputs
    trials: int
    per_agent: list[float]
    message: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


ScoresFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def audit_scores_fn(scores_fn: ScoresFn, n_agents: int, obs_dim: int, n_actions: int, state_dim: int,
                    episodes: list[dict] | None = None, trials: int = 8, horizon: int = 12, seed: int = 0,
                    tolerance: float = 1e-5) -> AuditReport:
    """Audit any scores function `(obs [T,n,o], last_action [T,n], avail [T,n,A], state [T,s]) -> [T,n,A]`.

    Inputs come from recorded `episodes` (dicts of obs, last_action, avail, state arrays) when given, and
    are random otherwise. For each trial and agent i, the inputs of every agent j != i and the state are
    replaced by other values; agent i's scores must not move by more than `tolerance` (relative).
    """
    rng = np.random.default_rng(seed)
    fn = jax.jit(scores_fn)

    def random_episode() -> dict:
        avail = rng.random((horizon, n_agents, n_actions)) < 0.7
        avail[..., 0] = True
        return {"obs": rng.normal(size=(horizon, n_agents, obs_dim)).astype(np.float32),
                "last_action": rng.integers(-1, n_actions, size=(horizon, n_agents)).astype(np.int32),
                "avail": avail, "state": rng.normal(size=(horizon, state_dim)).astype(np.float32)}

    sources = list(episodes or [])
    deviation = np.zeros(n_agents)
    sensitivity = np.zeros(n_agents)
    for trial in range(trials):
        base = sources[trial % len(sources)] if sources else random_episode()
        other = random_episode() if not sources or trial % 2 else sources[(trial + 1) % len(sources)]
        length = min(base["obs"].shape[0], other["obs"].shape[0])
        base = {k: np.asarray(v)[:length] for k, v in base.items()}
        other = {k: np.asarray(v)[:length] for k, v in other.items()}
        reference = np.asarray(fn(base["obs"], base["last_action"], base["avail"], base["state"]))
        scale = np.abs(reference).max() + 1e-6
        for i in range(n_agents):
            keep = np.zeros(n_agents, bool)
            keep[i] = True
            mixed = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), base[k], other[k])
                     for k in ("obs", "last_action", "avail")}
            perturbed = np.asarray(fn(mixed["obs"], mixed["last_action"], mixed["avail"], other["state"]))
            deviation[i] = max(deviation[i], np.abs(perturbed[:, i] - reference[:, i]).max() / scale)
            own = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), other[k], base[k])
                   for k in ("obs", "last_action", "avail")}
            changed = np.asarray(fn(own["obs"], own["last_action"], own["avail"], base["state"]))
            sensitivity[i] = max(sensitivity[i], np.abs(changed[:, i] - reference[:, i]).max() / scale)
    worst = float(deviation.max())
    passed = worst <= tolerance
    if passed:
        message = (f"PASS: over {trials} trials, no agent's scores moved (max relative change {worst:.2e}) when "
                   f"every other agent's inputs and the global state were replaced.")
    else:
        leaking = [i for i in range(n_agents) if deviation[i] > tolerance]
        message = (f"FAIL: agents {leaking} change their scores (max relative change {worst:.3g}) when other "
                   f"agents' inputs or the global state change: the policy is not decentralized.")
    return AuditReport(passed=passed, max_deviation=worst, own_sensitivity=float(sensitivity.min()), trials=trials,
                       per_agent=[float(d) for d in deviation], message=message)


def audit_policy(policy: DecentralizedPolicy, episodes: list[dict] | None = None, trials: int = 8,
                 seed: int = 0) -> AuditReport:
    """Audit every seed of an exported policy; the report is the worst over seeds."""
    spec = policy.spec
    reports = []
    for k in range(policy.n_seeds):
        params = policy.seed_params(k)
        reports.append(audit_scores_fn(
            lambda o, la, av, s, params=params: policy.unroll(params, o, la, av, s), spec["n_agents"],
            spec["obs_dim"], spec["n_actions"], spec["state_dim"], episodes=episodes, trials=trials, seed=seed + k))
    return max(reports, key=lambda r: r.max_deviation)


def require_audit(report: AuditReport) -> None:
    if not report.passed:
        raise AuditFailedError(report.message)
