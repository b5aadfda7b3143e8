"""Environments: the SMAX adapter's views against SMAX itself and on constructed states; the toy tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import EnvConfig
from ctde.envs import list_environments, make_env
from ctde.envs.smax import SMAXEnv


def _random_rollout(env, steps=25, seed=0):
    key = jax.random.PRNGKey(seed)
    state, ts = jax.jit(env.reset)(key)
    step = jax.jit(env.step)
    states, timesteps = [state], [ts]
    for _ in range(steps):
        key, action_key, step_key = jax.random.split(key, 3)
        action = jax.random.categorical(action_key, jnp.where(ts.avail, 0.0, -jnp.inf)).astype(jnp.int32)
        state, ts = step(step_key, state, action)
        states.append(state)
        timesteps.append(ts)
        if ts.done:
            break
    return states, timesteps, step


def test_default_sight_matches_smax_observation():
    env = SMAXEnv("5m_vs_6m")
    states, timesteps, step = _random_rollout(env)
    for state, ts in zip(states, timesteps):
        reference = env._smax.get_obs(state.state)
        reference = np.stack([reference[f"ally_{i}"] for i in range(env.n_allies)])
        np.testing.assert_allclose(np.asarray(ts.obs), reference, atol=1e-6)
    assert step._cache_size() == 1, "the step recompiled after its first call"


def _constructed_state(env):
    """3m with one enemy far away (beyond every sight range) and one close."""
    state, _ = env.reset(jax.random.PRNGKey(1))
    inner = state.state
    positions = jnp.array([[10.0, 16.0], [11.0, 16.0], [10.0, 17.0],   # allies
                           [14.0, 16.0], [28.0, 16.0], [12.0, 18.0]])  # enemies: 4 away, 18 away, ~2.8 away
    return state.replace(state=inner.replace(unit_positions=positions))


def test_sight_zero_hides_every_other_unit_but_keeps_own_features_and_moves():
    normal = SMAXEnv("3m")
    blind = SMAXEnv("3m", sight_range=0)
    state = _constructed_state(normal)
    obs_normal, obs_blind = normal.observe(state.state), blind.observe(state.state)
    own = normal.spec.obs_dim - 10  # own features come last (10 of them)
    assert np.all(np.asarray(obs_blind[:, :own]) == 0.0)
    np.testing.assert_array_equal(np.asarray(obs_blind[:, own:]), np.asarray(obs_normal[:, own:]))
    assert np.any(np.asarray(obs_normal[:, :own]) != 0.0)
    ts_normal, ts_blind = normal._timestep(state, 0.0, jnp.bool_(False)), blind._timestep(state, 0.0, jnp.bool_(False))
    np.testing.assert_array_equal(np.asarray(ts_blind.avail), np.asarray(ts_normal.avail))  # moves and attacks kept


def test_unlimited_sight_view_shows_units_beyond_sight_range():
    env = SMAXEnv("3m", views=("full_obs",))
    state = _constructed_state(env)
    ts = env._timestep(state, 0.0, jnp.bool_(False))
    features = 13
    # Ally 0's other units: allies 1, 2, then enemies 0, 1, 2. Enemy 1 is 18 units away: beyond sight 9.
    far = 2 + 1
    obs_far = np.asarray(ts.obs[0, far * features:(far + 1) * features])
    full_far = np.asarray(ts.views["full_obs"][0, far * features:(far + 1) * features])
    assert np.all(obs_far == 0.0)
    assert full_far[0] == pytest.approx(1.0)  # full health
    np.testing.assert_allclose(full_far[1:3], [18.0 / 9.0, 0.0], atol=1e-5)  # delta / own sight range
    # Everything the ordinary observation shows, the unlimited view shows identically.
    visible = np.asarray(ts.obs) != 0
    np.testing.assert_allclose(np.asarray(ts.views["full_obs"])[visible], np.asarray(ts.obs)[visible])


def test_sight_override_scales_relative_positions():
    env = SMAXEnv("3m", sight_range=5.0)
    state = _constructed_state(env)
    obs = np.asarray(env.observe(state.state))
    features = 13
    enemy0 = obs[0, 2 * features:3 * features]  # 4 units away: visible within 5
    np.testing.assert_allclose(enemy0[1:3], [4.0 / 5.0, 0.0], atol=1e-6)
    enemy1 = obs[0, 3 * features:4 * features]  # 18 away: hidden
    assert np.all(enemy1 == 0.0)


def test_smac_parity_limits_and_reward_scale():
    env = make_env(EnvConfig(id="smax:5m_vs_6m"))
    assert env.spec.episode_limit == 70
    raw = make_env(EnvConfig(id="smax:5m_vs_6m", smac_parity=False))
    assert raw.spec.episode_limit == 100
    assert env.reward_scale == pytest.approx(10.0) and raw.reward_scale == 1.0
    _, parity_steps, _ = _random_rollout(env, seed=3)
    _, raw_steps, _ = _random_rollout(raw, seed=3)
    for a, b in zip(parity_steps, raw_steps):
        assert float(a.reward) == pytest.approx(10.0 * float(b.reward), rel=1e-5)


@pytest.mark.parametrize("name, allies, enemies, actions", [("8m_vs_9m", 8, 9, 14), ("3s_vs_8z", 3, 8, 13),
                                                            ("3s5z_vs_3s7z", 8, 10, 15)])
def test_registered_scenarios(name, allies, enemies, actions):
    env = make_env(EnvConfig(id=f"smax:{name}"))
    assert (env.spec.n_agents, env.spec.n_enemies, env.spec.n_actions) == (allies, enemies, actions)
    _, timesteps, _ = _random_rollout(env, steps=3)
    assert timesteps[-1].obs.shape == (allies, env.spec.obs_dim)


def test_win_and_terminal_flags():
    env = SMAXEnv("3m")
    state, _ = env.reset(jax.random.PRNGKey(0))
    dead_enemies = state.state.replace(unit_health=state.state.unit_health.at[3:].set(0.0),
                                       unit_alive=state.state.unit_alive.at[3:].set(False))
    ts = env._timestep(state.replace(state=dead_enemies), 0.0, jnp.bool_(True))
    assert bool(ts.won) and bool(ts.terminal) and bool(ts.done)
    ts = env._timestep(state, 0.0, jnp.bool_(True))  # time limit with everyone alive
    assert not bool(ts.won) and not bool(ts.terminal) and bool(ts.done)


def test_smax_episode_ends_at_its_limit_not_a_step_later():
    # JaxMARL's own done fires one step after max_steps; rollouts of `episode_limit` steps would then never see a
    # timed-out episode end, and evaluation would leave timeouts out of the win rate.
    env = SMAXEnv("3m", episode_limit=3)
    state, _ = env.reset(jax.random.PRNGKey(0))
    stop = jnp.zeros(env.spec.n_agents, jnp.int32) + 4  # every ally stays put: nobody dies in three steps
    done = []
    for _ in range(3):
        state, ts = env.step(jax.random.PRNGKey(1), state, stop)
        done.append(bool(ts.done))
    assert done == [False, False, True]
    assert not bool(ts.terminal) and not bool(ts.won)


def test_environment_listing_covers_maps_and_refusals():
    rows = {row["id"]: row for row in list_environments()}
    assert rows["smax:3m"]["episode_limit"] == 60 and rows["smax:3m"]["agents"] == 3
    assert rows["smax:8m_vs_9m"]["enemies"] == 9
    assert "refused" in rows["smax:MMM2"]["description"]
    assert "toy:hallway" in rows


def test_two_step_game_payoffs():
    env = make_env(EnvConfig(id="toy:two_step"))
    for first, second, expected in [(0, (0, 1), 7.0), (1, (0, 0), 0.0), (1, (1, 0), 1.0), (1, (1, 1), 8.0)]:
        state, ts = env.reset(jax.random.PRNGKey(0))
        state, ts = env.step(None, state, jnp.array([first, 0]))
        assert float(ts.reward) == 0.0 and not bool(ts.done)
        state, ts = env.step(None, state, jnp.array(second))
        assert float(ts.reward) == expected and bool(ts.done)


def test_hallway_rewards_only_simultaneous_entry():
    env = make_env(EnvConfig(id="toy:hallway", toy_size=3))
    state, ts = env.reset(jax.random.PRNGKey(0))
    state = state.replace(position=jnp.array([1, 2]))
    ts = env._timestep(state, 0.0, False, False, False)
    np.testing.assert_array_equal(np.asarray(ts.avail), [[1, 0, 1, 1], [1, 1, 1, 0]])
    alone, ts_alone = env.step(None, state, jnp.array([3, 1]))  # agent 0 enters, agent 1 still one step away
    assert bool(ts_alone.terminal) and float(ts_alone.reward) == 0.0 and not bool(ts_alone.won)
    together, _ = env.step(None, state, jnp.array([0, 1]))  # both next to the goal now
    _, ts_win = env.step(None, together, jnp.array([3, 3]))
    assert bool(ts_win.won) and float(ts_win.reward) == 1.0


def test_retreat_guard_is_hidden_at_sight_zero_but_its_attack_availability_is_not():
    """toy:retreat: the guard (left gate here) is beyond the default sight, visible in full_obs and at a longer
    sight, and its attack action is available from the first step; the team wins by leaving through the other
    gate in exactly D steps; one agent there is half the reward; attacking only spends the step."""
    blind = make_env(EnvConfig(id="toy:retreat", sight_range=0), views=("full_obs",))
    default = make_env(EnvConfig(id="toy:retreat"))
    far_sighted = make_env(EnvConfig(id="toy:retreat", sight_range=3))
    state, ts = blind.reset(jax.random.PRNGKey(0))
    state = state.replace(position=jnp.array([0, 0, 0]))  # both agents in the middle; slot 0 = left gate guarded
    ts, ts_default, ts_far = (env._timestep(state, 0.0, False, False) for env in (blind, default, far_sighted))
    others = 2 * (1 + 2)  # [visible, relative position] for the other agent and both enemy slots
    assert np.all(np.asarray(ts.obs[:, :others]) == 0.0)  # sight 0: nothing but own features
    np.testing.assert_array_equal(np.asarray(ts.obs[:, others:]), np.asarray(ts_far.obs[:, others:]))
    assert np.all(np.asarray(ts_default.obs[:, 2:6]) == 0.0)  # sight 1.5: the guard 2 cells away is hidden
    np.testing.assert_allclose(np.asarray(ts_far.obs[0, 2:4]), [1.0, -1.0])  # visible, at -D / D
    np.testing.assert_allclose(np.asarray(ts.views["full_obs"]), np.asarray(ts_far.obs))
    np.testing.assert_array_equal(np.asarray(ts.avail), [[1, 1, 1, 1, 0]] * 2)  # stop, left, right, attack guard
    np.testing.assert_array_equal(np.asarray(ts_default.avail), np.asarray(ts.avail))  # sight never changes avail
    assert blind.spec.episode_limit == 2

    def play(*joint_actions):
        s = state
        for actions in joint_actions:
            s, out = blind.step(None, s, jnp.array(actions))
        return out

    win = play([2, 2], [2, 2])
    assert bool(win.done) and bool(win.terminal) and bool(win.won) and float(win.reward) == 1.0
    half = play([2, 1], [2, 1])  # agent 1 walks into the guarded gate
    assert bool(half.done) and not bool(half.won) and float(half.reward) == 0.5
    late = play([3, 3], [2, 2])  # attacking first leaves no time to reach the gate
    assert bool(late.done) and float(late.reward) == 0.0
    mid = play([2, 2])
    assert not bool(mid.done) and float(mid.reward) == 0.0
    assert np.all(np.asarray(mid.avail[:, 3:]) == 0)  # the guard is now 3 cells away: out of attack range
    guards = {int(blind.reset(jax.random.PRNGKey(k))[0].position[-1]) for k in range(16)}
    assert guards == {0, 1}


@pytest.mark.parametrize("env_id,views", [("smax:3m", ("full_obs",)), ("toy:two_step", ()),
                                          ("toy:hallway", ("full_obs",)), ("toy:retreat", ("full_obs",))])
def test_timestep_of_a_state_is_what_reset_and_step_observe(env_id, views):
    """Auto-reset rollouts observe the picked state with `timestep_of` instead of keeping the step's or the
    reset's timestep: it must show the same observations, state, available actions, views and living agents
    (with reward 0 and nothing ended, as after a reset)."""
    env = make_env(EnvConfig(id=env_id), views)
    states, timesteps, _ = _random_rollout(env, steps=6)
    observe = jax.jit(env.timestep_of)
    def same(a, b, fields):
        for name in fields:
            x, y = jax.tree.leaves(getattr(a, name)), jax.tree.leaves(getattr(b, name))
            assert len(x) == len(y), name
            for u, v in zip(x, y):
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=name)

    inputs = ("obs", "state", "avail", "views", "alive")
    same(observe(states[0]), timesteps[0], inputs + ("reward", "terminal", "done", "won"))  # reset's own
    for state, ts in zip(states[1:], timesteps[1:]):
        seen = observe(state)
        same(seen, ts, inputs)
        assert float(seen.reward) == 0.0 and not bool(seen.done) and not bool(seen.terminal)
    assert len(states) >= 2  # at least one stepped state compared
