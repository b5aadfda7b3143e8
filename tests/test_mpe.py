"""MPE family: JaxMARL's simple_tag / simple_push / simple_spread behind the ctde interface, and push_forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import EnvConfig, build_config
from ctde.envs import check_env, list_environments, make_env
from ctde.envs.mpe import ACTION_DIRECTIONS, DOWN, LEFT, NOOP, RIGHT, UP, MPEEnv, flee_action, force_to_jaxmarl
from ctde.envs.push_forward import REWARD_SCALE, PushForward, PushForwardState
from ctde.errors import ConfigError

IDS = ["mpe:simple_tag", "mpe:simple_push", "mpe:simple_spread", "mpe:push_forward"]
DIMS = {"mpe:simple_tag": (3, 16, 20), "mpe:simple_push": (1, 19, 14), "mpe:simple_spread": (3, 18, 18),
        "mpe:push_forward": (2, 8, 12)}  # (learners, obs_dim, state_dim)


def _env(env_id, **options):
    return make_env(EnvConfig(id=env_id, **options))


def _t(state):
    return int(state.step) if hasattr(state, "step") else int(state.t)


def _same(a, b, fields=("obs", "state", "avail", "reward", "terminal", "done", "won")):
    for name in fields:
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)


@pytest.mark.parametrize("env_id", IDS)
def test_shapes_and_dtypes_under_jit_and_vmap(env_id):
    env = _env(env_id)
    n, obs_dim, state_dim = DIMS[env_id]
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions) == (n, obs_dim, state_dim, 5)
    assert spec.episode_limit == 25 and spec.available_views == {} and spec.n_enemies == 0 and not spec.has_win
    assert env.has_sight_range is False
    E = 3
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state, ts = reset(jax.random.split(jax.random.PRNGKey(0), E))
    for k in range(3):  # the second call gets the state the first produced: it must not recompile
        actions = jax.random.randint(jax.random.PRNGKey(k), (E, n), 0, 5, dtype=jnp.int32)
        state, ts = step(jax.random.split(jax.random.PRNGKey(10 + k), E), state, actions)
    assert step._cache_size() == 1, "the step recompiled (weakly typed state?)"
    assert ts.obs.shape == (E, n, obs_dim) and ts.obs.dtype == jnp.float32
    assert ts.state.shape == (E, state_dim) and ts.state.dtype == jnp.float32
    assert ts.avail.shape == (E, n, 5) and ts.avail.dtype == jnp.bool_ and bool(jnp.all(ts.avail))
    assert ts.reward.shape == (E,) and ts.reward.dtype == jnp.float32
    for flag in (ts.terminal, ts.done, ts.won):
        assert flag.shape == (E,) and flag.dtype == jnp.bool_ and not bool(jnp.any(flag))
    assert ts.views == {} and ts.alive is None
    assert np.all(np.isfinite(np.asarray(ts.obs))) and np.all(np.isfinite(np.asarray(ts.state)))


@pytest.mark.parametrize("env_id", IDS)
def test_time_limit_without_auto_reset_and_timestep_of(env_id):
    env = _env(env_id)
    n = env.spec.n_agents
    state, first = jax.jit(env.reset)(jax.random.PRNGKey(3))
    observe, step = jax.jit(env.timestep_of), jax.jit(env.step)
    _same(observe(state), first)  # exactly what reset showed
    assert float(first.reward) == 0.0
    key = jax.random.PRNGKey(4)
    for t in range(1, 28):
        key, action_key, step_key = jax.random.split(key, 3)
        previous = state
        state, ts = step(step_key, state, jax.random.randint(action_key, (n,), 0, 5, dtype=jnp.int32))
        assert _t(state) == t, "the environment reset itself"
        assert bool(ts.done) == (t >= 25) and not bool(ts.terminal) and not bool(ts.won)
        seen = observe(state)
        _same(seen, ts, ("obs", "state", "avail"))
        assert float(seen.reward) == 0.0 and not bool(seen.done)
    # Past the limit the episode simply continues from where it was (no jump back to a fresh start).
    assert not np.array_equal(np.asarray(ts.state), np.asarray(first.state))
    assert np.abs(np.asarray(ts.state) - np.asarray(observe(previous).state)).max() < 1.0


@pytest.mark.parametrize("env_id", ["mpe:simple_tag", "mpe:push_forward"])
def test_episode_limit_override(env_id):
    env = _env(env_id, episode_limit=5)
    assert env.spec.episode_limit == 5
    state, _ = env.reset(jax.random.PRNGKey(0))
    step = jax.jit(env.step)
    dones = []
    for _ in range(6):
        state, ts = step(jax.random.PRNGKey(1), state, jnp.zeros((env.spec.n_agents,), jnp.int32))
        dones.append(bool(ts.done))
    assert dones == [False] * 4 + [True, True]


def test_action_order_is_jaxmarl_discrete_decoding():
    env = _env("mpe:simple_tag")
    u, _ = env._env._decode_discrete_action(jnp.zeros(5, jnp.int32), jnp.arange(5).reshape(5, 1))
    np.testing.assert_array_equal(np.sign(np.asarray(u)), np.asarray(ACTION_DIRECTIONS))
    assert (NOOP, LEFT, RIGHT, DOWN, UP) == (0, 1, 2, 3, 4)


@pytest.mark.parametrize("env_id", ["mpe:simple_tag", "mpe:simple_push", "mpe:simple_spread"])
def test_team_reward_is_jaxmarl_reward_of_the_learners(env_id):
    env = _env(env_id)
    scenario = env.scenario
    state, _ = env.reset(jax.random.PRNGKey(5))
    if env_id == "mpe:simple_tag":  # predator 0 touching the prey: a contact the adversaries share
        state = state.replace(p_pos=state.p_pos.at[0].set(state.p_pos[3] + jnp.array([0.05, 0.0])))
    actions = jnp.array([RIGHT, UP, LEFT][: env.n], jnp.int32)
    key = jax.random.PRNGKey(6)
    _, ts = jax.jit(env.step)(key, state, actions)
    action_dict = {a: actions[i] for i, a in enumerate(scenario.learners)}
    if scenario.fixed is not None:
        action_dict[scenario.fixed] = env.fixed_action(key, state)
    _, _, rewards, _, _ = env._env.step_env(jax.random.split(key)[0], state, action_dict)
    learner_rewards = np.array([float(rewards[a]) for a in scenario.learners])
    if env_id == "mpe:simple_tag":
        assert np.all(learner_rewards == learner_rewards[0]), "adversaries' rewards differ"
        assert float(ts.reward) == 10.0
    np.testing.assert_allclose(float(ts.reward), learner_rewards.mean(), rtol=1e-6)


def _tag_state(env, prey, predators):
    state, _ = env.reset(jax.random.PRNGKey(0))
    pos = jnp.array([*predators, prey, [5.0, 5.0], [-5.0, 5.0]], jnp.float32)  # obstacles out of the way
    return state.replace(p_pos=pos, p_vel=jnp.zeros_like(state.p_vel))


def test_prey_policy_is_deterministic_given_the_key():
    random_env = _env("mpe:simple_tag", adversary_policy="random")
    heuristic_env = _env("mpe:simple_tag")
    state = _tag_state(random_env, [0.0, 0.0], [[0.4, 0.0], [-0.8, 0.8], [0.0, -0.9]])
    keys = jax.random.split(jax.random.PRNGKey(7), 32)
    random_actions = jax.vmap(random_env.fixed_action, (0, None))(keys, state)
    np.testing.assert_array_equal(np.asarray(random_actions),
                                  np.asarray(jax.vmap(random_env.fixed_action, (0, None))(keys, state)))
    assert len(set(np.asarray(random_actions).tolist())) > 1
    heuristic_actions = jax.vmap(heuristic_env.fixed_action, (0, None))(keys, state)
    assert set(np.asarray(heuristic_actions).tolist()) == {LEFT}
    # The whole step is a function of its key.
    actions = jnp.zeros((3,), jnp.int32)
    step = jax.jit(random_env.step)
    a, _ = step(keys[0], state, actions)
    b, _ = step(keys[0], state, actions)
    np.testing.assert_array_equal(np.asarray(a.p_vel), np.asarray(b.p_vel))


def test_heuristic_prey_flees_the_nearest_predator():
    assert int(flee_action(jnp.zeros(2), jnp.array([[0.4, 0.0], [-0.8, 0.8], [0.0, -0.9]]))) == LEFT
    assert int(flee_action(jnp.zeros(2), jnp.array([[0.1, -0.2], [0.9, 0.0], [-0.9, 0.0]]))) == UP
    # Beyond the edge in y it heads back in along y, though fleeing points outward there.
    assert int(flee_action(jnp.array([0.0, 0.95]), jnp.array([[0.5, 0.7], [3.0, 3.0], [3.0, -3.0]]))) == DOWN

    env = _env("mpe:simple_tag")
    predators = [[-0.3, 0.1], [0.9, 0.9], [0.8, -0.9]]
    state = _tag_state(env, [0.0, 0.0], predators)
    step = jax.jit(env.step)
    for _ in range(3):  # learners idle; JaxMARL moves positions with the previous step's velocity
        state, _ = step(jax.random.PRNGKey(0), state, jnp.zeros((3,), jnp.int32))
    prey = np.asarray(state.p_pos[3])
    assert prey[0] > 0.05 and abs(prey[1]) < 1e-6  # pushed along +x, away from predator 0 at (-0.3, 0.1)
    nearest = np.min(np.linalg.norm(np.asarray(state.p_pos[:3]) - prey, axis=-1))
    assert nearest > np.linalg.norm(np.array(predators[0]))


def test_heuristic_push_adversary_chases_the_good_agent():
    env = _env("mpe:simple_push")
    state, _ = env.reset(jax.random.PRNGKey(0))
    state = state.replace(p_pos=state.p_pos.at[0].set(jnp.array([0.0, 0.0])).at[1].set(jnp.array([0.5, 0.1])))
    assert int(env.fixed_action(jax.random.PRNGKey(0), state)) == RIGHT
    state = state.replace(p_pos=state.p_pos.at[1].set(jnp.array([0.1, -0.5])))
    assert int(env.fixed_action(jax.random.PRNGKey(1), state)) == DOWN


def _push(agents, actions, steps, box_vel=(0.0, 0.0)):
    env = PushForward()
    state = PushForwardState(pos=jnp.array([*agents, [0.0, 0.0]], jnp.float32),
                             vel=jnp.zeros((3, 2), jnp.float32).at[2].set(jnp.array(box_vel)), t=jnp.int32(0))
    step = jax.jit(env.step)
    total = 0.0
    for _ in range(steps):
        state, ts = step(jax.random.PRNGKey(0), state, jnp.array(actions, jnp.int32))
        total += float(ts.reward)
    return state, total


FAR = [[-1.0, 0.9], [-1.0, -0.9]]  # agents nowhere near the box


def test_push_forward_reward_is_scaled_box_progress():
    # A box sliding at 1 unit/s, untouched: damping first, then one dt of motion (MPE's integration).
    state, reward = _push(FAR, [NOOP, NOOP], 1, box_vel=(1.0, 0.0))
    dx = 1.0 * (1 - 0.25) * 0.1
    assert float(state.pos[2, 0]) == pytest.approx(dx, abs=1e-6)
    assert reward == pytest.approx(REWARD_SCALE * dx, abs=1e-5)
    _, reward = _push(FAR, [NOOP, NOOP], 1, box_vel=(-1.0, 0.0))
    assert reward == pytest.approx(-REWARD_SCALE * dx, abs=1e-5)


def test_push_forward_one_agent_pushes_and_two_push_further():
    one, one_return = _push([[-0.25, 0.0], FAR[0]], [RIGHT, NOOP], 10)
    assert float(one.pos[2, 0]) > 0.1 and abs(float(one.pos[2, 1])) < 1e-6
    assert one_return == pytest.approx(REWARD_SCALE * float(one.pos[2, 0]), rel=1e-4)  # the return telescopes
    two, two_return = _push([[-0.25, 0.0], [-0.35, 0.0]], [RIGHT, RIGHT], 10)
    assert float(two.pos[2, 0]) > 1.4 * float(one.pos[2, 0])
    assert two_return > 1.4 * one_return
    _, idle_return = _push([[-0.27, 0.0], [-0.38, 0.0]], [NOOP, NOOP], 10)
    assert abs(idle_return) < 1e-6  # no contact, no push


def test_push_forward_observation_is_local():
    env = PushForward()
    state = PushForwardState(pos=jnp.array([[-0.5, 0.2], [-0.7, -0.3], [0.1, 0.0]]),
                             vel=jnp.array([[0.1, 0.0], [0.0, -0.2], [0.3, 0.0]]), t=jnp.int32(0))
    obs = np.asarray(env.observe(state))
    np.testing.assert_allclose(obs[0], [-0.5, 0.2, 0.1, 0.0, 0.6, -0.2, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(obs[1], [-0.7, -0.3, 0.0, -0.2, 0.8, 0.3, 0.3, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.asarray(env.timestep_of(state).state),
                               np.concatenate([np.asarray(state.pos).ravel(), np.asarray(state.vel).ravel()]))
    starts = jax.vmap(env.reset)(jax.random.split(jax.random.PRNGKey(0), 64))[0].pos
    assert np.all(np.asarray(starts[:, :2, 0]) >= -1.0) and np.all(np.asarray(starts[:, :2, 0]) <= -0.4)
    assert np.all(np.abs(np.asarray(starts[:, :2, 1])) <= 0.5) and np.all(np.asarray(starts[:, 2]) == 0.0)


def test_clear_config_errors():
    with pytest.raises(ConfigError, match="Did you mean 'simple_tag'"):
        check_env(EnvConfig(id="mpe:simple_tg"))
    with pytest.raises(ConfigError, match="sight_range"):
        make_env(EnvConfig(id="mpe:simple_tag", sight_range=0.0))
    with pytest.raises(ConfigError, match="sight_range"):
        check_env(EnvConfig(id="mpe:push_forward", sight_range=1.0))
    with pytest.raises(ConfigError, match="adversary_policy"):
        check_env(EnvConfig(id="mpe:simple_spread", adversary_policy="random"))
    with pytest.raises(ConfigError, match="adversary_policy"):
        check_env(EnvConfig(id="toy:hallway", adversary_policy="random"))
    with pytest.raises(ConfigError, match="valid: heuristic, random"):
        build_config(["env=mpe:simple_tag", "env.adversary_policy=randm"])
    with pytest.raises(ConfigError, match="no privileged views"):
        make_env(EnvConfig(id="mpe:simple_tag"), ("full_obs",))
    assert build_config(["env=mpe:simple_push", "env.adversary_policy=random"]).env.adversary_policy == "random"
    assert isinstance(make_env(EnvConfig(id="mpe:simple_push", adversary_policy="random")), MPEEnv)


def test_listing_shows_every_mpe_scenario():
    rows = {r["id"]: r for r in list_environments() if r["id"].startswith("mpe:")}
    assert set(rows) == set(IDS)
    for env_id, row in rows.items():
        assert row["agents"] == DIMS[env_id][0] and row["episode_limit"] == 25 and row["description"]
    assert "heuristic" in rows["mpe:simple_tag"]["description"]


@pytest.mark.parametrize("env_id,auto_reset,length", [("mpe:simple_tag", False, None), ("mpe:push_forward", True, 30)])
def test_rollout_through_ctde_collect(env_id, auto_reset, length):
    from ctde.paradigms import make_paradigm
    from ctde.algos.rollout import collect
    from ctde.nets.actions import epsilon_greedy

    config = build_config([f"env={env_id}"])
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    params = paradigm.init(jax.random.PRNGKey(0))
    length = length or env.spec.episode_limit
    trajectory, stats = collect(env, paradigm, params, jax.random.PRNGKey(1), num_envs=2, length=length,
                                auto_reset=auto_reset, model="agent", select_actions=epsilon_greedy(jnp.float32(0.5)))
    trajectory, stats = jax.device_get((trajectory, stats))
    n, obs_dim, state_dim = DIMS[env_id]
    assert trajectory.obs.shape == (2, length + 1, n, obs_dim) and trajectory.state.shape == (2, length + 1, state_dim)
    assert int(stats.episodes) == 2 and float(stats.lengths) == 2 * 25 and float(stats.wins) == 0
    assert trajectory.done[:, 24].all() and not trajectory.done[:, :24].any()
    if auto_reset:
        assert trajectory.reset[:, 25].all()  # the rollout reset the environment itself after the limit
    assert np.isfinite(trajectory.reward).all()


# -- continuous actions (env.continuous_actions) -------------------------------------------------------------------


def _both(env_id, **options):
    return _env(env_id, **options), _env(env_id, continuous_actions=True, **options)


@pytest.mark.parametrize("env_id", IDS)
def test_continuous_spec_and_jit_vmap(env_id):
    env = _env(env_id, continuous_actions=True)
    n, obs_dim, state_dim = DIMS[env_id]
    spec = env.spec
    assert spec.continuous_actions and spec.n_actions == 2
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.episode_limit) == (n, obs_dim, state_dim, 25)
    assert not _env(env_id).spec.continuous_actions
    E = 3
    reset, step = jax.jit(jax.vmap(env.reset)), jax.jit(jax.vmap(env.step))
    state, ts = reset(jax.random.split(jax.random.PRNGKey(0), E))
    assert ts.avail.shape == (E, n, 2) and ts.avail.dtype == jnp.bool_ and bool(jnp.all(ts.avail))
    for k in range(3):
        actions = jax.random.uniform(jax.random.PRNGKey(k), (E, n, 2), jnp.float32, -1.5, 1.5)
        state, ts = step(jax.random.split(jax.random.PRNGKey(10 + k), E), state, actions)
    assert step._cache_size() == 1, "the step recompiled (weakly typed state?)"
    assert ts.obs.shape == (E, n, obs_dim) and ts.state.shape == (E, state_dim) and ts.reward.shape == (E,)
    assert ts.avail.shape == (E, n, 2) and bool(jnp.all(ts.avail))
    assert _t(jax.tree.map(lambda x: x[0], state)) == 3 and not bool(jnp.any(ts.done))
    assert np.all(np.isfinite(np.asarray(ts.obs))) and np.all(np.isfinite(np.asarray(ts.state)))
    with pytest.raises(ValueError, match="continuous actions must be float"):
        env.step(jax.random.PRNGKey(0), jax.tree.map(lambda x: x[0], state), jnp.zeros((n,), jnp.int32))


def test_force_to_jaxmarl_round_trips_through_jaxmarls_decoding():
    env = _env("mpe:simple_spread", continuous_actions=True)
    forces = jnp.array([[0.3, -0.7], [-1.0, 0.0], [0.0, 1.0]], jnp.float32)
    encoded = force_to_jaxmarl(forces)
    assert encoded.shape == (3, 5) and bool(jnp.all(encoded >= 0)) and bool(jnp.all(encoded[:, 0] == 0))
    u, _ = env._env._decode_continuous_action(jnp.arange(3), encoded)
    np.testing.assert_allclose(np.asarray(u), np.asarray(forces * env._env.accel[:3, None]), rtol=1e-6)
    # Each discrete move's direction, encoded, decodes to the discrete move's force.
    u_discrete, _ = env._env._decode_discrete_action(jnp.zeros(5, jnp.int32), jnp.arange(5).reshape(5, 1))
    u_continuous, _ = env._env._decode_continuous_action(jnp.zeros(5, jnp.int32), force_to_jaxmarl(ACTION_DIRECTIONS))
    np.testing.assert_array_equal(np.asarray(u_continuous), np.asarray(u_discrete))


def _equal_states(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


MOVES = {"mpe:simple_tag": [RIGHT, UP, LEFT], "mpe:simple_push": [RIGHT], "mpe:simple_spread": [RIGHT, DOWN, NOOP],
         "mpe:push_forward": [RIGHT, RIGHT]}


@pytest.mark.parametrize("env_id", IDS)
def test_unit_force_equals_the_discrete_move(env_id):
    """The same state and key: a force of the move's direction reaches exactly the discrete move's state (and so,
    with the fixed side's move converted alike, the same prey / adversary positions)."""
    discrete, continuous = _both(env_id)
    key = jax.random.PRNGKey(11)
    state, _ = discrete.reset(jax.random.PRNGKey(2))
    if env_id == "mpe:push_forward":  # the agents just behind the box, to push it
        state = state.replace(pos=state.pos.at[:2].set(jnp.array([[-0.25, 0.0], [-0.35, 0.0]])))
    moves = jnp.array(MOVES[env_id], jnp.int32)
    ds, dts = jax.jit(discrete.step)(key, state, moves)
    cs, cts = jax.jit(continuous.step)(key, state, ACTION_DIRECTIONS[moves])
    _equal_states(ds, cs)
    _same(dts, cts, ("obs", "state", "reward", "terminal", "done", "won"))
    first = 0 if env_id == "mpe:push_forward" else discrete.learner_index[0]
    moved = ds.vel if env_id == "mpe:push_forward" else ds.p_vel
    assert float(moved[first, 0]) > 0  # the first learner went right
    if env_id == "mpe:push_forward":
        assert float(ds.vel[2, 0]) > 0 and float(dts.reward) != 0.0  # and the box with it


@pytest.mark.parametrize("policy", ["heuristic", "random"])
def test_fixed_prey_behaves_identically_in_both_modes(policy):
    discrete, continuous = _both("mpe:simple_tag", adversary_policy=policy)
    state = _tag_state(discrete, [0.0, 0.0], [[0.4, 0.0], [-0.8, 0.8], [0.0, -0.9]])
    d_step, c_step = jax.jit(discrete.step), jax.jit(continuous.step)
    ds = cs = state
    moves = jnp.array([LEFT, UP, NOOP], jnp.int32)
    for k in range(4):
        key = jax.random.PRNGKey(20 + k)
        np.testing.assert_array_equal(int(discrete.fixed_action(key, ds)), int(continuous.fixed_action(key, cs)))
        ds, _ = d_step(key, ds, moves)
        cs, _ = c_step(key, cs, ACTION_DIRECTIONS[moves])
        np.testing.assert_array_equal(np.asarray(ds.p_pos[3]), np.asarray(cs.p_pos[3]))  # the prey
        np.testing.assert_array_equal(np.asarray(ds.p_vel[3]), np.asarray(cs.p_vel[3]))
    assert float(jnp.abs(ds.p_pos[3]).sum()) > 0  # it moved
    # simple_push's adversary too.
    discrete, continuous = _both("mpe:simple_push", adversary_policy=policy)
    state, _ = discrete.reset(jax.random.PRNGKey(3))
    key = jax.random.PRNGKey(4)
    ds, _ = jax.jit(discrete.step)(key, state, jnp.array([UP], jnp.int32))
    cs, _ = jax.jit(continuous.step)(key, state, jnp.array([[0.0, 1.0]], jnp.float32))
    _equal_states(ds, cs)


@pytest.mark.parametrize("env_id", ["mpe:simple_tag", "mpe:push_forward"])
def test_continuous_actions_are_clipped(env_id):
    env = _env(env_id, continuous_actions=True)
    n = env.spec.n_agents
    if env_id == "mpe:push_forward":
        state = PushForwardState(pos=jnp.array([FAR[0], FAR[1], [0.0, 0.0]], jnp.float32),
                                 vel=jnp.zeros((3, 2), jnp.float32), t=jnp.int32(0))
    else:  # everyone apart, at rest
        state = _tag_state(env, [0.0, 0.0], [[0.5, 0.5], [-0.5, 0.5], [0.5, -0.5]])
    step = jax.jit(env.step)
    big = jnp.tile(jnp.array([[7.0, -3.0]], jnp.float32), (n, 1))
    unit = jnp.tile(jnp.array([[1.0, -1.0]], jnp.float32), (n, 1))
    a, _ = step(jax.random.PRNGKey(1), state, big)
    b, _ = step(jax.random.PRNGKey(1), state, unit)
    _equal_states(a, b)
    # A fractional force is that fraction of the unit one (from rest, no contact: velocity = force / m x dt).
    half, _ = step(jax.random.PRNGKey(1), state, 0.5 * unit)
    vel = (lambda s: s.vel[:n]) if env_id == "mpe:push_forward" else (lambda s: s.p_vel[:n])
    np.testing.assert_allclose(np.asarray(vel(half)), 0.5 * np.asarray(vel(b)), rtol=1e-5, atol=1e-7)
    assert float(jnp.abs(vel(b)).min()) > 0


def test_push_forward_continuous_force_is_applied_directly():
    env = PushForward(continuous_actions=True)
    state = PushForwardState(pos=jnp.array([[-1.0, 0.9], [-1.0, -0.9], [0.0, 0.0]], jnp.float32),
                             vel=jnp.zeros((3, 2), jnp.float32), t=jnp.int32(0))
    s, _ = env.step(jax.random.PRNGKey(0), state, jnp.array([[0.3, -0.2], [0.0, 1.0]], jnp.float32))
    np.testing.assert_allclose(np.asarray(s.vel[:2]), np.array([[0.3, -0.2], [0.0, 1.0]]) * 5.0 * 0.1, atol=1e-6)


def test_continuous_actions_refused_outside_mpe():
    for env_id in ("toy:hallway", "toy:target_sum", "smax:3m"):
        with pytest.raises(ConfigError, match="continuous_actions"):
            check_env(EnvConfig(id=env_id, continuous_actions=True))
    with pytest.raises(ConfigError, match="mpe"):
        make_env(EnvConfig(id="toy:two_step", continuous_actions=True))
    config = build_config(["env=mpe:simple_spread", "env.continuous_actions=true"])
    assert config.env.continuous_actions and make_env(config.env).spec.continuous_actions
