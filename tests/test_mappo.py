"""MAPPO / IPPO: GAE, the clipped objective, value normalization, minibatches that keep agents together."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.base import rollout_of
from ctde.algos.mappo import ValueNorm, segment_starts, clipped_surrogate, gae


def test_gae_by_hand_with_terminal_and_episode_end():
    gamma, lam = 0.9, 0.8
    rewards = jnp.array([[1.0], [2.0], [0.5], [1.0]])
    # step 1 ends an episode by termination (no bootstrap); step 3 is the rollout's last step (bootstraps V_4)
    terminal = jnp.array([[False], [True], [False], [False]])
    done = terminal
    values = jnp.array([[[0.5]], [[1.0]], [[2.0]], [[1.5]], [[3.0]]])  # V_0..V_4, one agent
    adv, ret = gae(rewards, values, terminal, done, gamma, lam)
    adv = np.asarray(adv)[:, 0, 0]
    d3 = 1.0 + gamma * 3.0 - 1.5
    d2 = 0.5 + gamma * 1.5 - 2.0
    d1 = 2.0 - 1.0  # terminal: no bootstrap
    d0 = 1.0 + gamma * 1.0 - 0.5
    a3 = d3
    a2 = d2 + gamma * lam * a3
    a1 = d1  # the next episode's advantage does not flow back
    a0 = d0 + gamma * lam * a1
    np.testing.assert_allclose(adv, [a0, a1, a2, a3], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[:, 0, 0], np.array([a0, a1, a2, a3]) + [0.5, 1.0, 2.0, 1.5], rtol=1e-6)


def test_gae_truncation_without_termination_bootstraps_but_stops_at_the_boundary():
    """A time-limit end inside a rollout (done, not terminal) bootstraps from the next value but does not let
    the following episode's advantage leak back."""
    gamma, lam = 0.9, 0.9
    rewards = jnp.array([[1.0], [1.0]])
    terminal = jnp.array([[False], [False]])
    done = jnp.array([[True], [False]])
    values = jnp.array([[[0.0]], [[10.0]], [[0.0]]])
    adv, _ = gae(rewards, values, terminal, done, gamma, lam)
    np.testing.assert_allclose(float(adv[0, 0, 0]), 1.0 + gamma * 10.0 - 0.0, rtol=1e-6)


@pytest.mark.parametrize("advantage, ratio, should_move", [
    (1.0, 1.5, False),   # positive advantage, ratio above 1 + eps: clipped, no gradient
    (1.0, 0.5, True),    # positive advantage, ratio below 1 - eps: gradient pushes the ratio up
    (-1.0, 0.5, False),  # negative advantage, ratio below 1 - eps: clipped, no gradient
    (-1.0, 1.5, True),   # negative advantage, ratio above 1 + eps: gradient pushes the ratio down
])
def test_clipped_objective_gradient(advantage, ratio, should_move):
    old = jnp.float32(-1.0)
    grad = jax.grad(lambda lp: clipped_surrogate(lp, old, jnp.float32(advantage), 0.2))(old + jnp.log(ratio))
    if should_move:
        assert np.sign(float(grad)) == np.sign(advantage) and abs(float(grad)) > 0
    else:
        assert float(grad) == 0.0


def test_value_norm_round_trip_and_statistics():
    norm = ValueNorm.create()
    data = jax.random.normal(jax.random.PRNGKey(0), (1000,)) * 5.0 + 3.0
    for _ in range(50):
        norm = norm.update(data, jnp.ones_like(data), beta=0.9)
    mean, var = norm.stats()
    assert float(mean) == pytest.approx(float(data.mean()), rel=1e-3)
    assert float(var) == pytest.approx(float(data.var()), rel=1e-3)
    x = jnp.array([-4.0, 0.0, 7.5])
    np.testing.assert_allclose(np.asarray(norm.denormalize(norm.normalize(x))), np.asarray(x), rtol=1e-5, atol=1e-5)


def test_minibatches_keep_all_agents_of_an_environment_step_together():
    """Segments are indexed by (environment, first step) and carry every agent: shuffling permutes segments, never
    agents. Checked on the prepared data of a real rollout."""
    from ctde.config import build_config
    from ctde.training.runner import build_program
    from ctde.training.resolve import resolve

    config = resolve(build_config(["env=smax:3m", "algo=mappo", "rollout.num_envs=4", "rollout.length=20",
                                   "ppo.segment_length=5", "ppo.minibatches=2", "out=/tmp/unused"]))
    program = build_program(config)
    backbone = program.backbone
    state = backbone.init(jax.random.PRNGKey(0))

    collected = rollout_of(backbone, program.env, state, jax.random.PRNGKey(1))
    trajectory = collected.trajectory
    segments, _ = backbone.prepare(state, trajectory, collected.final_carry[1])
    env_of, first = segment_starts(4, 20, 5)
    assert segments["inputs"].obs.shape == (16, 5, 3, program.env.spec.obs_dim)  # [segments, steps, agents, obs]
    for k in range(16):
        e, t0 = int(env_of[k]), int(first[k])
        np.testing.assert_array_equal(np.asarray(segments["inputs"].obs[k]), np.asarray(trajectory.obs[e, t0:t0 + 5]))
        np.testing.assert_array_equal(np.asarray(segments["action"][k]), np.asarray(trajectory.action[e, t0:t0 + 5]))
        # The recurrent states each segment starts from are the ones the actor held before step t0 in env e.
        for recorded, name in zip(trajectory.segment_carry, ("agent_carry", "critic_carry")):
            np.testing.assert_array_equal(np.asarray(segments[name][k]), np.asarray(recorded[e, t0 // 5]))
    order = jax.random.permutation(jax.random.PRNGKey(2), 16).reshape(2, 8)
    for minibatch in np.asarray(order):
        picked = np.asarray(segments["inputs"].obs[minibatch])  # [8, 5, 3, obs]: whole agent sets per segment
        assert picked.shape[2] == 3


@pytest.mark.parametrize("critic_input", ["state", "agent_specific"])
def test_state_value_is_one_per_environment_and_agent_specific_one_per_agent(critic_input):
    """MAPPO's EP value V(s) reads the global state alone, so it is run once per environment and shared by the
    agents; the agent-specific value reads each agent's own input and differs between agents."""
    from ctde.config import build_config
    from ctde.training.runner import build_program
    from ctde.training.resolve import resolve

    config = resolve(build_config(["env=toy:hallway", "algo=mappo", "rollout.num_envs=2", "rollout.length=8",
                                   "ppo.segment_length=4", f"ppo.critic_input={critic_input}", "out=/tmp/unused"]))
    program = build_program(config)
    backbone, spec = program.backbone, program.env.spec
    state = backbone.init(jax.random.PRNGKey(0))
    first_layer = state.params.critic["params"]["fc1"]["kernel"]
    expected_in = spec.state_dim if critic_input == "state" else spec.state_dim + spec.obs_dim + spec.n_agents
    assert first_layer.shape == (expected_in, config.algo.hidden_dim)
    heads = 1 if critic_input == "state" else spec.n_agents
    assert state.rollout.carry[1].shape == (2, heads, config.algo.hidden_dim)

    trajectory = rollout_of(backbone, program.env, state, jax.random.PRNGKey(1)).trajectory
    values = np.asarray(trajectory.extras["value"])  # [E, T + 1, n]
    assert values.shape[-1] == spec.n_agents == 2
    spread = np.abs(values - values[..., :1]).max()
    if critic_input == "state":
        assert spread == 0.0
    else:
        assert spread > 1e-4


@pytest.mark.parametrize("paradigm", ["ctde", "cadp"])
def test_a_minibatch_processed_in_slices_makes_the_same_update(paradigm):
    """`algo.slice_rows` only changes how a minibatch's gradient is computed (summed over weighted slices of
    segments), not what it is: parameters, losses and metrics after one update match the single-pass update.
    CADP's pruning term is switched on from step 0, so its auxiliary loss is part of the comparison. SMAX 3m
    after a rollout has dead agents and finished episodes, so slices count different numbers of steps."""
    from ctde.algos.slicing import slice_count
    from ctde.config import build_config
    from ctde.training.runner import build_program
    from ctde.training.resolve import resolve

    assert slice_count(16, 15, 0) == 1 and slice_count(16, 15, 240) == 1
    assert slice_count(16, 15, 60) == 4 and slice_count(2560, 50, 8192) == 16

    def one_update(slice_rows):
        config = resolve(build_config(["env=smax:3m", "algo=mappo", f"paradigm={paradigm}", "rollout.num_envs=4",
                                       "rollout.length=40", "ppo.segment_length=10", f"algo.slice_rows={slice_rows}",
                                       "out=/tmp/unused"] + (["cadp.prune_start=0"] if paradigm == "cadp" else [])))
        program = build_program(config)
        backbone = program.backbone
        state = backbone.init(jax.random.PRNGKey(0))
        collected = rollout_of(backbone, program.env, state, jax.random.PRNGKey(1))
        segments, _ = backbone.prepare(state, collected.trajectory, collected.final_carry[1])
        indices = jax.random.permutation(jax.random.PRNGKey(2), backbone.n_segments)
        new_state, metrics = jax.jit(backbone.update)(state, segments, indices, jax.random.PRNGKey(3))
        return backbone.slices, segments["mask"], new_state.params, metrics

    whole_slices, mask, whole_params, whole_metrics = one_update(0)
    sliced_slices, _, sliced_params, sliced_metrics = one_update(60)  # 60 agent-steps = 2 segments of 10 x 3
    assert (whole_slices, sliced_slices) == (1, 8)
    per_chunk = np.asarray(mask).sum(axis=(1, 2))
    assert len(set(per_chunk.tolist())) > 1  # uneven counts: a plain average of slices would be wrong
    for key in whole_metrics:
        np.testing.assert_allclose(np.asarray(sliced_metrics[key]), np.asarray(whole_metrics[key]), rtol=2e-4,
                                   atol=1e-6, err_msg=key)
    if paradigm == "cadp":
        assert float(whole_metrics["pruning_loss"]) > 0
    for whole, sliced in zip(jax.tree.leaves(whole_params), jax.tree.leaves(sliced_params)):
        np.testing.assert_allclose(np.asarray(sliced), np.asarray(whole), rtol=1e-4, atol=1e-6)
