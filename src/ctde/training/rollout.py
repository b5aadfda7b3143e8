"""Rollouts of a paradigm's model in a batch of environments, entirely inside `jit`.

Every rollout starts fresh episodes in `num_envs` environments and runs `length` steps under `lax.scan`.
Two styles share this one mechanism:
- pymarl (default): `length` = episode limit and no reset inside the rollout, so each environment yields
  exactly one episode, padded (valid = False) after it ends;
- JaxMARL: any `length` with finished environments reset at once (`auto_reset`).

A rollout returns a `Trajectory` with T + 1 entries per environment: entry t holds the inputs seen at step t,
the action taken and what the transition returned; the extra entry T holds the inputs after the last step,
needed to bootstrap. Since every rollout starts at an episode start, learners can unroll recurrent networks
from a zero state with no stored hidden states.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import struct

from ctde.envs.base import Environment, TimeStep
from ctde.paradigms.base import AgentInputs, Paradigm


@struct.dataclass
class Trajectory:
    """Batch-major rollout data, [E, T + 1, ...] (or [B, T + 1, ...] once sampled from replay).

    obs [.., n, obs_dim], state [.., state_dim], avail bool [.., n, |A|], views {name: [.., n, d]},
    last_action int [.., n] (-1 at an episode start), reset bool [..] (episode starts here),
    action int [.., n], reward [..], terminal bool [..], done bool [..] (the transition from t ended the
    episode), valid bool [..] (t is a real decision of an unfinished episode).
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


ActionSelector = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (key, scores, avail) -> actions


def masked_argmax(scores: jax.Array, avail: jax.Array) -> jax.Array:
    """Greedy action among available ones. scores [..., |A|], avail bool [..., |A|] -> int [...]."""
    return jnp.argmax(jnp.where(avail, scores, -1e7), axis=-1)


def random_available(key: jax.Array, avail: jax.Array) -> jax.Array:
    """Uniformly random available action. avail bool [..., |A|] -> int [...]."""
    return jax.random.categorical(key, jnp.where(avail, 0.0, -jnp.inf), axis=-1)


def epsilon_greedy(epsilon: jax.Array) -> ActionSelector:
    def select(key, scores, avail):
        explore_key, action_key = jax.random.split(key)
        explore = jax.random.uniform(explore_key, scores.shape[:-1]) < epsilon
        return jnp.where(explore, random_available(action_key, avail), masked_argmax(scores, avail))

    return select


def greedy(key, scores, avail):
    return masked_argmax(scores, avail)


def _select(mask: jax.Array, a: Any, b: Any) -> Any:
    """Per-environment choice between two pytrees with leading env axis. mask bool [E]."""
    return jax.tree.map(lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - 1)), x, y), a, b)


def collect(env: Environment, paradigm: Paradigm, params: Any, key: jax.Array, *, num_envs: int, length: int,
            auto_reset: bool, model: str, select_actions: ActionSelector) -> tuple[Trajectory, EpisodeStats]:
    """Run `model` of `paradigm` for `length` steps in `num_envs` fresh environments.

    Returns the batch-major trajectory [num_envs, length + 1, ...] and sums over finished episodes.
    """
    n = env.spec.n_agents
    reset_key, key = jax.random.split(key)
    env_state, timestep = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
    carry = paradigm.initial_carry((num_envs,))
    last_action = jnp.full((num_envs, n), -1, jnp.int32)
    reset = jnp.ones((num_envs,), bool)
    active = jnp.ones((num_envs,), bool)
    running = jnp.zeros((num_envs,), jnp.float32), jnp.zeros((num_envs,), jnp.int32)

    def inputs_of(ts: TimeStep, last_action, reset) -> AgentInputs:
        return AgentInputs(obs=ts.obs[None], last_action=last_action[None], avail=ts.avail[None],
                           state=ts.state[None], reset=reset[None], views=jax.tree.map(lambda v: v[None], ts.views))

    def step(loop, step_key):
        env_state, ts, carry, last_action, reset, active, (ep_return, ep_length), stats = loop
        act_key, env_key, reset_key = jax.random.split(step_key, 3)
        carry, output = paradigm.apply(params, carry, inputs_of(ts, last_action, reset))
        action = select_actions(act_key, output.scores[model][0], ts.avail).astype(jnp.int32)
        next_state, next_ts = jax.vmap(env.step)(jax.random.split(env_key, num_envs), env_state, action)
        record = Trajectory(obs=ts.obs, state=ts.state, avail=ts.avail, views=ts.views, last_action=last_action,
                            reset=reset, action=action, reward=next_ts.reward, terminal=next_ts.terminal,
                            done=next_ts.done, valid=active)

        ep_return = ep_return + jnp.where(active, next_ts.reward, 0.0)
        ep_length = ep_length + active.astype(jnp.int32)
        finished = active & next_ts.done
        stats = stats + EpisodeStats(
            episodes=jnp.sum(finished, dtype=jnp.float32), returns=jnp.sum(jnp.where(finished, ep_return, 0.0)),
            wins=jnp.sum(finished & next_ts.won, dtype=jnp.float32),
            lengths=jnp.sum(jnp.where(finished, ep_length, 0), dtype=jnp.float32),
            env_steps=jnp.sum(active, dtype=jnp.int32))
        ep_return = jnp.where(finished, 0.0, ep_return)
        ep_length = jnp.where(finished, 0, ep_length)

        if auto_reset:
            ended = next_ts.done
            fresh_state, fresh_ts = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
            next_state = _select(ended, fresh_state, next_state)
            next_ts = _select(ended, fresh_ts, next_ts)
            last_action = jnp.where(ended[:, None], -1, action)
            reset = ended
        else:
            active = active & ~next_ts.done
            last_action = action
            reset = jnp.zeros_like(reset)
        loop = (next_state, next_ts, carry, last_action, reset, active, (ep_return, ep_length), stats)
        return loop, record

    loop = (env_state, timestep, carry, last_action, reset, active, running, EpisodeStats.zero())
    loop, records = jax.lax.scan(step, loop, jax.random.split(key, length))
    _, final_ts, _, final_last_action, final_reset, _, _, stats = loop
    # Entry T: the inputs after the last step, for bootstrapping. It is never a decision (valid = False).
    final = Trajectory(obs=final_ts.obs, state=final_ts.state, avail=final_ts.avail, views=final_ts.views,
                       last_action=final_last_action, reset=final_reset, action=jnp.zeros_like(final_last_action),
                       reward=jnp.zeros((num_envs,)), terminal=jnp.zeros((num_envs,), bool),
                       done=jnp.zeros((num_envs,), bool), valid=jnp.zeros((num_envs,), bool))
    trajectory = jax.tree.map(lambda steps, last: jnp.concatenate([steps, last[None]], axis=0), records, final)
    return trajectory.transpose(), stats
