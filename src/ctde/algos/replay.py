"""Replay of whole episodes for the off-policy backbones (value decomposition, MADDPG): a flashbax item buffer
whose items are `Trajectory` sequences [T + 1, ...], and the store-then-learn step both backbones' `learn` is."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ctde.algos.seeds import learn_when_ready, where_active
from ctde.algos.rollout import EpisodeStats, Trajectory


def store_episodes(buffer: Any, replay: Any, trajectory: Trajectory, active: jax.Array | None = None) -> Any:
    """Adds a rollout's sequences (trajectory [E, T + 1, ...]) to the flashbax item buffer state `replay`.

    Where `active` (bool [], a vmapped seed that sits an iteration out; ctde.algos.seeds) is false the buffer
    comes back unchanged: the slots the rollout would fill get their own contents written back, in place, since
    choosing between whole old and new buffers would copy them."""
    if active is None:
        return buffer.add(replay, trajectory)
    num_envs = trajectory.reward.shape[0]
    capacity = jax.tree.leaves(replay.experience)[0].shape[1]  # flashbax item buffers store [1, capacity, ...]
    slots = (replay.current_index + jnp.arange(num_envs)) % capacity
    kept = jax.tree.map(lambda stored: stored[0, slots], replay.experience)
    added = buffer.add(replay, where_active(active, trajectory, kept))
    return added.replace(current_index=jnp.where(active, added.current_index, replay.current_index),
                         is_full=jnp.where(active, added.is_full, replay.is_full))


def store_and_learn(backbone: Any, state: Any, trajectory: Trajectory, stats: EpisodeStats, active: jax.Array | None,
                    rng: jax.Array, update_key: jax.Array) -> tuple[Any, EpisodeStats, dict[str, jax.Array], jax.Array]:
    """Store the collected episodes (trajectory [E, T + 1, ...], their sums `stats`), then `algo.updates_per_rollout`
    calls of `backbone.update` once the replay holds a batch and `algo.learning_starts` env steps. `rng` becomes the
    state's next key.

    `state` has the fields params, target_params, opt_state, replay, env_steps, episodes, updates, rng. Returns
    the new state, episode sums, summed update metrics and the number of updates made. Where `active` (bool [],
    None for true) is false, a vmapped seed that has reached its evaluation mark while others go on
    (ctde.algos.seeds), the state comes back unchanged and the sums are zero."""
    algo = backbone.algo
    stats = where_active(active, stats, EpisodeStats.zero())
    state = state.replace(replay=store_episodes(backbone.replay, state.replay, trajectory, active),
                          rng=where_active(active, rng, state.rng), env_steps=state.env_steps + stats.env_steps,
                          episodes=state.episodes + stats.episodes.astype(jnp.int32))

    def learn(learner):
        learner, metrics = jax.lax.scan(lambda l, k: backbone.update(l, state.replay, state.env_steps, k), learner,
                                        jax.random.split(update_key, algo.updates_per_rollout))
        return learner, jax.tree.map(jnp.sum, metrics), jnp.int32(algo.updates_per_rollout)

    ready = backbone.replay.can_sample(state.replay) & (state.env_steps >= algo.learning_starts)
    if active is not None:
        ready = ready & active
    learner = (state.params, state.target_params, state.opt_state, state.updates)
    (params, target_params, opt_state, n_total), metrics, n_updates = learn_when_ready(
        ready, backbone.seed_axis, learn, learner)
    state = state.replace(params=params, target_params=target_params, opt_state=opt_state, updates=n_total)
    return state, stats, metrics, n_updates
