"""Rollouts: padding after the episode end (pymarl style) and resets inside a rollout (JaxMARL style)."""

import jax
import jax.numpy as jnp
import numpy as np

from ctde.config import build_config
from ctde.envs import make_env
from ctde.paradigms import make_paradigm
from ctde.algos.rollout import collect
from ctde.nets.actions import epsilon_greedy


def _collect(auto_reset, length=None, env_id="toy:hallway", num_envs=8, seed=0):
    config = build_config([f"env={env_id}"])
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    params = paradigm.init(jax.random.PRNGKey(0))
    trajectory, stats = collect(env, paradigm, params, jax.random.PRNGKey(seed), num_envs=num_envs,
                                length=length or env.spec.episode_limit, auto_reset=auto_reset, model="agent",
                                select_actions=epsilon_greedy(jnp.float32(1.0)))
    return env, jax.device_get(trajectory), jax.device_get(stats)


def test_episode_rollout_pads_after_the_end():
    env, traj, stats = _collect(auto_reset=False)
    limit = env.spec.episode_limit
    assert traj.obs.shape[:2] == (8, limit + 1)
    for e in range(8):
        valid = traj.valid[e]
        length = int(valid.sum())
        assert valid[:length].all() and not valid[length:].any(), "valid steps must be a prefix"
        assert traj.done[e, length - 1], "the last valid step ends the episode"
        assert traj.reset[e, 0] and not traj.reset[e, 1:].any()
        assert traj.last_action[e, 0].tolist() == [-1, -1]
        np.testing.assert_array_equal(traj.last_action[e, 1:length], traj.action[e, :length - 1])
    assert stats.episodes == 8
    assert stats.env_steps == traj.valid.sum()
    assert stats.returns == traj.reward[traj.valid].sum()


def test_auto_reset_rollout_marks_episode_starts():
    env, traj, stats = _collect(auto_reset=True, length=40)
    assert traj.valid[:, :40].all() and not traj.valid[:, 40].any()
    assert stats.env_steps == 8 * 40
    for e in range(8):
        ends = np.nonzero(traj.done[e, :40])[0]
        for t in ends:
            assert traj.reset[e, t + 1], "the step after an episode end starts a new episode"
            assert traj.last_action[e, t + 1].tolist() == [-1, -1]
        assert traj.reset[e, 1:].sum() == len(ends)
    assert stats.episodes == traj.done[:, :40].sum()


def test_segment_carries_are_the_recurrent_states_before_each_segment():
    """`carry_every=k` records the actor's recurrent state before steps 0, k, 2k, ... (what MAPPO's chunks start
    from) and leaves every per-step record as it was: same keys, same steps. Episodes reset inside the rollout,
    so some recorded states are mid-episode and some are fresh."""
    from ctde.algos.rollout import Actor, paradigm_actor, run_rollout, start_rollouts

    config = build_config(["env=toy:hallway"])
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    params = paradigm.init(jax.random.PRNGKey(0))
    acting = paradigm_actor(paradigm, "agent", epsilon_greedy(jnp.float32(0.5)))

    def recording_step(params, carry, inputs, key):  # also keeps each step's incoming carry, for reference
        new_carry, action, extras = acting.step(params, carry, inputs, key)
        return new_carry, action, {**extras, "carry": carry}

    actor = Actor(initial_carry=acting.initial_carry, step=recording_step)
    start = start_rollouts(env, actor, jax.random.PRNGKey(1), 4)
    plain, _, _ = run_rollout(env, actor, params, jax.random.PRNGKey(2), start, length=12, auto_reset=True)
    segmented, _, _ = run_rollout(env, actor, params, jax.random.PRNGKey(2), start, length=12, auto_reset=True,
                                  carry_every=3)
    assert plain.segment_carry is None
    assert bool(plain.reset[:, 1:12].any())  # an episode restarted inside the rollout
    for name in ("obs", "action", "reward", "reset", "done"):
        np.testing.assert_array_equal(np.asarray(getattr(segmented, name)), np.asarray(getattr(plain, name)))
    per_step = np.asarray(plain.extras["carry"])  # [E, T + 1, n, H]
    assert segmented.segment_carry.shape == (4, 4, *per_step.shape[2:])
    np.testing.assert_array_equal(np.asarray(segmented.segment_carry), per_step[:, 0:12:3])
    assert np.abs(per_step[:, 3:12:3]).max() > 0  # mid-rollout states are not all fresh zeros
