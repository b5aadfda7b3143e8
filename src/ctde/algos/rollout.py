"""Rollouts in a batch of environments, entirely inside `jit`.

A rollout runs `length` steps of an `Actor` (how actions are chosen; built from a paradigm's model) in
`num_envs` environments under `lax.scan`. Two styles share this one mechanism:
- pymarl (default for value decomposition): fresh episodes, `length` = episode limit and no reset inside the
  rollout, so each environment yields exactly one episode, padded (valid = False) after it ends;
- JaxMARL / MAPPO: any `length` with finished environments reset at once (`auto_reset`), optionally continuing
  from where the previous rollout stopped (`RolloutState`).

A rollout returns a `Trajectory` with T + 1 entries per environment: entry t holds the inputs seen at step t,
the action taken and what the transition returned; the extra entry T holds the inputs after the last step,
needed to bootstrap. Actors may record extras per step (MAPPO: log-probabilities, values, recurrent states).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from ctde.envs.base import Environment, TimeStep
from ctde.nets.actions import ActionSelector
from ctde.paradigms.base import AgentInputs, Paradigm


@struct.dataclass
class Trajectory:
    """Batch-major rollout data, [E, T + 1, ...] (or [B, T + 1, ...] once sampled from replay).

    obs [.., n, obs_dim], state [.., state_dim], avail bool [.., n, |A|], views {name: [.., n, d]},
    last_action int [.., n] (-1 at an episode start), reset bool [..] (episode starts here),
    action int [.., n], reward [..] (continuous actions: action and last_action float [.., n, |A|], zeros at an
    episode start), terminal bool [..], done bool [..] (the transition from t ended the
    episode), valid bool [..] (t is a real decision of an unfinished episode), alive bool [.., n] (the agent is
    alive at t), extras {name: [..., ...]} (whatever the actor recorded at t; zeros at entry T),
    segment_carry (the actor's recurrent state before the first step of every `carry_every` steps, [.., S, ...];
    None unless the rollout was asked for it).
    With `auto_reset`, `terminal` also marks time-limit ends: the entry after one is the next episode's
    first input, so there is nothing to bootstrap from.
    """

    obs: jax.Array
    state: jax.Array
    avail: jax.Array
    views: dict[str, jax.Array]
    last_action: jax.Array
    reset: jax.Array
    action: jax.Array
    reward: jax.Array
    terminal: jax.Array
    done: jax.Array
    valid: jax.Array
    alive: jax.Array
    extras: dict[str, Any] = struct.field(default_factory=dict)
    segment_carry: Any = None

    def transpose(self) -> "Trajectory":
        """Swap the first two axes: batch-major [B, T, ...] <-> time-major [T, B, ...]."""
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), self)

    def agent_inputs(self) -> AgentInputs:
        """The networks' view of time-major data."""
        return AgentInputs(obs=self.obs, last_action=self.last_action, avail=self.avail, state=self.state,
                           reset=self.reset, views=self.views)


@struct.dataclass
class EpisodeStats:
    """Sums over the episodes that finished in a rollout (divide by `episodes`)."""

    episodes: jax.Array
    returns: jax.Array
    wins: jax.Array
    lengths: jax.Array
    env_steps: jax.Array

    @staticmethod
    def zero() -> "EpisodeStats":
        return EpisodeStats(jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.float32(0), jnp.int32(0))

    def __add__(self, other: "EpisodeStats") -> "EpisodeStats":
        return jax.tree.map(jnp.add, self, other)

    def means(self, xp: Any = jnp) -> dict[str, Any]:
        """Win rate, mean return and mean episode length over the finished episodes (0 when none finished).
        `xp`: jax.numpy inside `jit`, NumPy on the host."""
        count = xp.maximum(self.episodes, 1.0)
        return {"win_rate": self.wins / count, "return": self.returns / count, "episode_length": self.lengths / count}


def no_action(spec: Any, batch_shape: tuple[int, ...]) -> jax.Array:
    """The previous action before an episode's first step: int -1 [*B, n], or float zeros [*B, n, |A|]."""
    if spec.continuous_actions:
        return jnp.zeros((*batch_shape, spec.n_agents, spec.n_actions), jnp.float32)
    return jnp.full((*batch_shape, spec.n_agents), -1, jnp.int32)


def _as_actions(actions: jax.Array) -> jax.Array:
    """Discrete actions as int32, continuous ones as float32."""
    return actions.astype(jnp.float32 if jnp.issubdtype(actions.dtype, jnp.floating) else jnp.int32)


def _select(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per-environment choice between two pytrees with leading env axis. mask bool [E]."""
    return jax.tree.map(lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y), a, b)


@dataclass(frozen=True)
class Actor:
    """How a rollout acts. `initial_carry(num_envs)` gives the recurrent state of fresh episodes;
    `step(params, carry, inputs, key) -> (carry, actions int [E, n], extras)` acts on one step of inputs
    (an `AgentInputs` with a leading time axis of 1)."""

    initial_carry: Callable[[int], Any]
    step: Callable[[Any, Any, AgentInputs, jax.Array], tuple[Any, jax.Array, dict]]


def paradigm_actor(paradigm: Paradigm, model: str, select_actions: ActionSelector, deterministic: bool = False
                   ) -> Actor:
    """Act with one of a paradigm's models, choosing from its scores with `select_actions`. `deterministic`
    networks (evaluation) get no random key, e.g. PTDE then uses its mean z instead of sampling."""

    def step(params, carry, inputs, key):
        network_key, action_key = jax.random.split(key)
        carry, output = paradigm.apply(params, carry, inputs, rng=None if deterministic else network_key)
        return carry, _as_actions(select_actions(action_key, output.scores[model][0], inputs.avail[0])), {}

    return Actor(initial_carry=lambda num_envs: paradigm.initial_carry((num_envs,)), step=step)


@struct.dataclass
class RolloutState:
    """Where a rollout stopped, so the next one can continue the same episodes (leading axis: envs)."""

    env_state: Any
    timestep: TimeStep
    carry: Any
    last_action: jax.Array  # int [E, n]
    reset: jax.Array  # bool [E]
    episode_return: jax.Array  # [E]
    episode_length: jax.Array  # int [E]


def start_rollouts(env: Environment, actor: Actor, key: jax.Array, num_envs: int) -> RolloutState:
    """Fresh episodes in `num_envs` environments."""
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(key, num_envs))
    return RolloutState(env_state=env_state, timestep=timestep, carry=actor.initial_carry(num_envs),
                        last_action=no_action(env.spec, (num_envs,)),
                        reset=jnp.ones((num_envs,), bool), episode_return=jnp.zeros((num_envs,)),
                        episode_length=jnp.zeros((num_envs,), jnp.int32))


def _inputs(ts: TimeStep, last_action: jax.Array, reset: jax.Array) -> AgentInputs:
    return AgentInputs(obs=ts.obs[None], last_action=last_action[None], avail=ts.avail[None], state=ts.state[None],
                       reset=reset[None], views=jax.tree.map(lambda v: v[None], ts.views))


def _alive(ts: TimeStep) -> jax.Array:
    return ts.alive if ts.alive is not None else jnp.ones(ts.obs.shape[:-1], bool)


def run_rollout(env: Environment, actor: Actor, params: Any, key: jax.Array, state: RolloutState, *, length: int,
                auto_reset: bool, carry_every: int = 0) -> tuple[Trajectory, EpisodeStats, RolloutState]:
    """`length` steps of `actor` from `state`. Returns the batch-major trajectory [E, length + 1, ...], sums over
    the episodes that finished, and the state to continue from (meaningful with `auto_reset`).

    `carry_every` > 0 (a divisor of `length`) also records the actor's recurrent state before steps 0, k, 2k, ...
    in `trajectory.segment_carry` [E, length / k, ...]: what recurrent training on segments of k steps starts
    from. Recording it there instead of as a per-step extra keeps a k-times smaller copy: copying every step's
    carry out of the loop is a sizeable part of a MAPPO rollout on the CPU (docs/backbones.md, MAPPO)."""
    num_envs = state.reset.shape[0]

    def step(loop, step_key):
        rollout, active, stats = loop
        ts = rollout.timestep
        act_key, env_key, reset_key = jax.random.split(step_key, 3)
        carry, action, extras = actor.step(params, rollout.carry, _inputs(ts, rollout.last_action, rollout.reset),
                                           act_key)
        next_state, next_ts = jax.vmap(env.step)(jax.random.split(env_key, num_envs), rollout.env_state, action)
        ended = next_ts.done
        record = Trajectory(obs=ts.obs, state=ts.state, avail=ts.avail, views=ts.views,
                            last_action=rollout.last_action, reset=rollout.reset, action=action,
                            reward=next_ts.reward, terminal=(ended if auto_reset else next_ts.terminal), done=ended,
                            valid=active, alive=_alive(ts), extras=extras)

        ep_return = rollout.episode_return + jnp.where(active, next_ts.reward, 0.0)
        ep_length = rollout.episode_length + active.astype(jnp.int32)
        finished = active & ended
        stats = stats + EpisodeStats(
            episodes=jnp.sum(finished, dtype=jnp.float32), returns=jnp.sum(jnp.where(finished, ep_return, 0.0)),
            wins=jnp.sum(finished & next_ts.won, dtype=jnp.float32),
            lengths=jnp.sum(jnp.where(finished, ep_length, 0), dtype=jnp.float32),
            env_steps=jnp.sum(active, dtype=jnp.int32))
        ep_return = jnp.where(finished, 0.0, ep_return)
        ep_length = jnp.where(finished, 0, ep_length)

        if auto_reset:
            fresh_state, _ = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
            next_state = _select(ended, fresh_state, next_state)
            # Observed once, from the picked state; only the inputs of the next step are read from it.
            next_ts = jax.vmap(env.timestep_of)(next_state)
            first = -1 if action.dtype == jnp.int32 else 0.0  # what `no_action` starts an episode with
            last_action = jnp.where(ended.reshape(ended.shape + (1,) * (action.ndim - 1)), first, action)
            reset = ended
        else:
            active = active & ~ended
            last_action = action
            reset = jnp.zeros_like(ended)
        rollout = RolloutState(env_state=next_state, timestep=next_ts, carry=carry, last_action=last_action,
                               reset=reset, episode_return=ep_return, episode_length=ep_length)
        return (rollout, active, stats), record

    loop = (state, jnp.ones((num_envs,), bool), EpisodeStats.zero())
    keys = jax.random.split(key, length)
    if carry_every:
        if length % carry_every:
            raise ValueError(f"carry_every={carry_every} must divide the rollout length {length}")

        def segment(loop, segment_keys):
            carry = loop[0].carry
            loop, records = jax.lax.scan(step, loop, segment_keys)
            return loop, (records, carry)

        segments = length // carry_every
        (state, _, stats), (records, segment_carry) = jax.lax.scan(
            segment, loop, keys.reshape(segments, carry_every, *keys.shape[1:]))
        records = jax.tree.map(lambda x: x.reshape(length, *x.shape[2:]), records)
    else:
        (state, _, stats), records = jax.lax.scan(step, loop, keys)
        segment_carry = None
    ts = state.timestep
    # Entry T: the inputs after the last step, for bootstrapping. It is never a decision (valid = False).
    final = Trajectory(obs=ts.obs, state=ts.state, avail=ts.avail, views=ts.views, last_action=state.last_action,
                       reset=state.reset, action=jnp.zeros_like(state.last_action), reward=jnp.zeros((num_envs,)),
                       terminal=jnp.zeros((num_envs,), bool), done=jnp.zeros((num_envs,), bool),
                       valid=jnp.zeros((num_envs,), bool), alive=_alive(ts),
                       extras=jax.tree.map(lambda x: jnp.zeros_like(x[0]), records.extras))
    trajectory = jax.tree.map(lambda steps, last: jnp.concatenate([steps, last[None]], axis=0), records, final)
    return trajectory.replace(segment_carry=segment_carry).transpose(), stats, state


def collect(env: Environment, paradigm: Paradigm, params: Any, key: jax.Array, *, num_envs: int, length: int,
            auto_reset: bool, model: str, select_actions: ActionSelector, deterministic: bool = False
            ) -> tuple[Trajectory, EpisodeStats]:
    """`length` steps of `model` of `paradigm` in `num_envs` fresh environments: the trajectory
    [num_envs, length + 1, ...] and sums over finished episodes."""
    actor = paradigm_actor(paradigm, model, select_actions, deterministic)
    start_key, key = jax.random.split(key)
    trajectory, stats, _ = run_rollout(env, actor, params, key, start_rollouts(env, actor, start_key, num_envs),
                                       length=length, auto_reset=auto_reset)
    return trajectory, stats


def policy_actor(policy: Any, params: Any) -> Actor:
    """Act greedily with an exported `DecentralizedPolicy` (one seed's `params`), through its own forward."""
    n, hidden = policy.spec["n_agents"], policy.spec["hidden_dim"]

    def step(params, carry, inputs, key):
        act = jax.vmap(policy.act, in_axes=(None, 0, 0, 0, 0, 0))
        carry, actions = act(params, carry, inputs.obs[0], inputs.last_action[0], inputs.avail[0], inputs.reset[0])
        return carry, _as_actions(actions), {}

    return Actor(initial_carry=lambda num_envs: jnp.zeros((num_envs, n, hidden)), step=step)


def run_policy(policy: Any, env: Environment, params: Any, key: jax.Array, episodes: int = 8
               ) -> tuple[dict[str, float], list[dict]]:
    """Greedy episodes of an exported policy artifact in `env`, in parallel.

    Returns the mean win rate, return and episode length, and each episode's inputs (obs, last_action, avail,
    state; [T, ...], cut at the episode's end), which the audit replays.
    """
    actor = policy_actor(policy, params)

    @jax.jit
    def run(key):
        start_key, key = jax.random.split(key)
        state = start_rollouts(env, actor, start_key, episodes)
        return run_rollout(env, actor, params, key, state, length=env.spec.episode_limit, auto_reset=False)[:2]

    trajectory, stats = jax.device_get(run(key))
    count = max(float(stats.episodes), 1.0)
    summary = {"win_rate": float(stats.wins) / count, "return": float(stats.returns) / count,
               "episode_length": float(stats.lengths) / count}
    recorded = []
    for e in range(episodes):
        length = max(int(trajectory.valid[e].sum()), 1)
        recorded.append({k: getattr(trajectory, k)[e, :length] for k in ("obs", "last_action", "avail", "state")})
    return summary, recorded
