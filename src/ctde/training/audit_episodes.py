"""Realistic inputs for the decentralization audit: whole episodes of the environment an exported policy was
trained in, played by the policy itself and by random available actions.

The audit (`ctde.audit.audit_policy`) replaces every other agent's inputs and asks whether agent i's action moves.
A leak gated on what real inputs look like (features in their normalized range, a dead teammate's all-zero row,
a teammate's availability mask, the number of living agents) or on how long real episodes run stays shut on
random N(0, 1) inputs of a few steps. So `ctde audit` and the end of training audit on real episodes:

- the environment is built from `policy.json` (`env`, `sight_range`, `env_options`, `episode_limit`;
  `environment_of`), or, where it cannot be (a host environment, stepped outside JAX; a package or data file
  missing here; a spec without an environment), the audit says why and falls back to the recorded episodes it
  was given and to random ones;
- half the episodes act greedily with the policy's first seed, half with uniformly random available actions
  (random play on SMAX loses units, so agents die: their observation rows become exactly 0 and their masks allow
  one action), whole episodes up to the horizon (default: the episode limit, at least 25), each cut at its end;
- if no episode reaches the horizon, the longest one is also kept uncut: the rollout steps the environment on
  past the episode's end up to the horizon (the end suppressed), so a leak that starts late meets real inputs;
- the random episodes the audit adds run `horizon` steps too, and draw their values from the range the
  recorded observations have (`ctde.audit._random_episode`).

Layering: the audit itself (rank 0) reads no environment; this training-layer module rolls the environment out
(`ctde.algos.rollout`) and hands the episodes to it. `ctde audit` and `ctde.training.runner` call
`audit_exported`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from ctde.algos.rollout import Actor, policy_actor, run_rollout, start_rollouts
from ctde.audit import DEFAULT_HORIZON, AuditReport, audit_policy
from ctde.config import EnvConfig, LTRConfig
from ctde.envs import make_env, split_id
from ctde.envs.base import Environment, evaluation_env
from ctde.envs.host import check_host_env, is_host_family
from ctde.errors import CtdeError
from ctde.nets.actions import random_available
from ctde.policy import DecentralizedPolicy

# Episodes rolled out for `ctde audit` when --episodes is not given: half greedy, half random; with the random
# episodes the audit adds, the default 8 trials each start from a different real episode.
DEFAULT_EPISODES = 8
# Random-action episodes added at the end of training to the run's recorded greedy ones.
TRAINING_RANDOM_EPISODES = 4
RECORDED_KEYS = ("obs", "last_action", "avail", "state", "alive")


@dataclass
class AuditInputs:
    """What the audit runs on: recorded `episodes` (dicts of obs [T, n, o], last_action, avail, state, alive),
    the `horizon` of the random episodes it adds, and a sentence saying where the episodes came from."""

    episodes: list[dict]
    horizon: int
    note: str


def environment_of(spec: dict) -> tuple[Environment | None, str]:
    """The environment `spec` (an exported policy's) was trained in, built as the run built it, or None and why
    not. Policies exported before `env_options` get the options' defaults (SMAC parity, its episode limit)."""
    env_id = spec.get("env")
    if not env_id:
        return None, "policy.json names no environment"
    try:
        family, name = split_id(env_id)
        if is_host_family(family):
            check_host_env(family, name, None)  # names a missing package
            return None, (f"{env_id} is a host environment, stepped outside JAX, which the audit does not roll out "
                          f"on its own")
        known = {f.name for f in dataclasses.fields(EnvConfig)}
        options = {k: v for k, v in (spec.get("env_options") or {}).items() if k in known}
        if "continuous_actions" not in options and family == "mpe":
            options["continuous_actions"] = bool(spec.get("continuous_actions", False))
        config = EnvConfig(**{**options, "id": env_id, "sight_range": spec.get("sight_range")})
        ltr = (spec.get("env_options") or {}).get("ltr")
        env = make_env(config, ltr_options=LTRConfig(**ltr) if isinstance(ltr, dict) else None)
    except (CtdeError, ImportError, OSError, TypeError, ValueError) as e:
        return None, f"{env_id} could not be built here ({e})"
    es = env.spec
    built = (es.n_agents, es.obs_dim, es.n_actions, es.state_dim, bool(es.continuous_actions))
    expected = (spec.get("n_agents"), spec.get("obs_dim"), spec.get("n_actions"), spec.get("state_dim"),
                bool(spec.get("continuous_actions", False)))
    if built != expected:
        return None, (f"{env_id} as built here has (agents, obs_dim, actions, state_dim, continuous) {built}, the "
                      f"policy {expected}")
    return evaluation_env(env), ""


def _mixed_actor(policy: DecentralizedPolicy, random_envs: jax.Array) -> Actor:
    """The policy's greedy actor (`policy_actor`) in the environments where `random_envs` [E] is False, uniformly
    random available actions (continuous: uniform in [-1, 1]^A) where it is True."""
    greedy = policy_actor(policy, policy.seed_params(0))
    continuous = bool(policy.spec.get("continuous_actions", False))

    def step(params, carry, inputs, key):
        carry, actions, extras = greedy.step(params, carry, inputs, key)
        if continuous:
            chosen = jax.random.uniform(key, actions.shape, actions.dtype, -1.0, 1.0)
        else:
            chosen = random_available(key, inputs.avail[0]).astype(actions.dtype)
        mask = random_envs.reshape(random_envs.shape + (1,) * (actions.ndim - 1))
        return carry, jnp.where(mask, chosen, actions), extras

    return Actor(initial_carry=greedy.initial_carry, step=step)


def rollout_episodes(policy: DecentralizedPolicy, env: Environment, key: jax.Array, greedy: int, random: int,
                     horizon: int) -> tuple[list[dict], bool]:
    """`greedy` episodes of the policy's first seed and `random` of random available actions in `env`, in
    parallel, `horizon` steps at most, each cut at its end; interleaved, random first (they run longest and lose
    units). Returns the episodes and whether one had to be kept past its end: when none reaches `horizon`, the
    longest is put first uncut, its environment stepped on past the end."""
    count = greedy + random
    random_envs = jnp.arange(count) >= greedy
    actor = _mixed_actor(policy, random_envs)
    params = policy.seed_params(0)

    @jax.jit
    def run(key):
        start_key, key = jax.random.split(key)
        state = start_rollouts(env, actor, start_key, count)
        return run_rollout(env, actor, params, key, state, length=horizon, auto_reset=False)[0]

    trajectory = jax.device_get(run(key))
    lengths = [max(int(trajectory.valid[e].sum()), 1) for e in range(count)]

    def cut(e: int, length: int) -> dict:
        return {k: np.asarray(getattr(trajectory, k)[e, :length]) for k in RECORDED_KEYS}

    order = [e for pair in zip(range(greedy, count), range(greedy)) for e in pair]
    order += [e for e in range(count) if e not in order]
    episodes = [cut(e, lengths[e]) for e in order]
    if max(lengths) >= horizon:
        return episodes, False
    longest = int(np.argmax(lengths))
    return [cut(longest, horizon)] + episodes, True


def audit_inputs(policy: DecentralizedPolicy, *, episodes: int | None = None, horizon: int | None = None,
                 seed: int = 0, env: Environment | None = None, recorded: list[dict] | None = None) -> AuditInputs:
    """Episodes for the audit of `policy`: rolled out in `env` (default: the one `policy.json` names,
    `environment_of`) when there is one, after `recorded` (the run's greedy episodes, if any).

    `episodes`: how many to roll out (default `DEFAULT_EPISODES`, half greedy and half random; with `recorded`,
    `TRAINING_RANDOM_EPISODES`, all random: the greedy ones are recorded already). `horizon`: the longest episode
    and the random episodes' length (default: the episode limit, at least `ctde.audit.DEFAULT_HORIZON`)."""
    recorded = [dict(e) for e in recorded or []]
    spec = policy.spec
    why_not = ""
    if env is None:
        env, why_not = environment_of(spec)
    else:
        env = evaluation_env(env)
    limit = env.spec.episode_limit if env is not None else spec.get("episode_limit")
    horizon = int(horizon or max(limit or 0, DEFAULT_HORIZON))
    if env is None:
        sources = f"{len(recorded)} recorded episodes and random ones" if recorded else "random episodes"
        return AuditInputs(recorded, horizon, f"{why_not}: the audit ran on {sources} of {horizon} steps")
    if recorded:
        greedy, random = 0, episodes or TRAINING_RANDOM_EPISODES
    else:
        count = episodes or DEFAULT_EPISODES
        greedy, random = count // 2, count - count // 2
    rolled, extended = rollout_episodes(policy, env, jax.random.PRNGKey(seed), greedy, random, horizon)
    lengths = [e["obs"].shape[0] for e in rolled[int(extended):]]
    deaths = sum(not np.asarray(e["alive"]).all() for e in rolled[int(extended):])
    which = f"{len(recorded)} recorded greedy episodes, " if recorded else ""
    parts = [f"{greedy} greedy with the policy"] if greedy else []
    parts.append(f"{random} with random available actions")
    note = (f"the audit ran on {which}{greedy + random} episodes of {env.spec.id} ({', '.join(parts)}; "
            f"{min(lengths)}-{max(lengths)} steps, agents died in {deaths}), then random episodes of {horizon} "
            f"steps (limit {limit})")
    if extended:
        note += (f"; no episode reached {horizon} steps, so the longest also ran on past its end up to "
                 f"{horizon}")
    return AuditInputs(recorded + rolled, horizon, note)


def audit_exported(policy: DecentralizedPolicy, *, episodes: int | None = None, horizon: int | None = None,
                   trials: int = 8, seed: int = 0, env: Environment | None = None,
                   recorded: list[dict] | None = None, note: str = "") -> AuditReport:
    """`audit_policy` on realistic inputs (`audit_inputs`); the report's `inputs` says what they were. `note`
    (e.g. why `env` is None) goes before it."""
    inputs = audit_inputs(policy, episodes=episodes, horizon=horizon, seed=seed, env=env, recorded=recorded)
    report = audit_policy(policy, episodes=inputs.episodes, trials=trials, seed=seed, horizon=inputs.horizon)
    return dataclasses.replace(report, inputs="; ".join(filter(None, (note, inputs.note))))
