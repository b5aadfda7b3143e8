"""Value decomposition with hand-computed expectations: mixers, TD targets, masking."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.base import collect_and_learn
from ctde.algos.value_decomposition import lambda_returns
from ctde.nets.mixers import NoMixer, QMIXMixer, QPLEXMixer, VDNMixer
from ctde.nets.actions import epsilon_greedy, masked_argmax


def _mixer_inputs(n=3, actions=4, batch=5, state_dim=6, seed=0):
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    chosen = jax.random.normal(k1, (batch, n))
    best = chosen + jnp.abs(jax.random.normal(k2, (batch, n)))
    state = jax.random.normal(k3, (batch, state_dim))
    onehot = jax.nn.one_hot(jnp.zeros((batch, n), int), actions)
    return chosen, best, state, onehot


def test_vdn_is_the_sum_and_iql_keeps_each_agent():
    chosen = jnp.array([[1.0, -2.0, 0.5]])
    args = (chosen, chosen, jnp.zeros((1, 2)), jnp.zeros((1, 3, 2)))
    assert float(VDNMixer().apply({}, *args)[0, 0]) == pytest.approx(-0.5)
    np.testing.assert_array_equal(np.asarray(NoMixer().apply({}, *args)), np.asarray(chosen))


@pytest.mark.parametrize("layers", [1, 2])
def test_qmix_is_monotonic_in_every_agent_utility(layers):
    mixer = QMIXMixer(n_agents=3, embed_dim=8, hypernet_layers=layers, hypernet_embed=16)
    chosen, best, state, onehot = _mixer_inputs()
    params = mixer.init(jax.random.PRNGKey(1), chosen, best, state, onehot)
    for seed in range(5):
        chosen, best, state, onehot = _mixer_inputs(seed=seed + 10)
        grads = jax.vmap(jax.grad(lambda c, s: mixer.apply(params, c[None], c[None], s[None], onehot[:1])[0, 0]))(
            chosen, state)
        assert np.all(np.asarray(grads) >= 0.0)


def test_qplex_argmax_of_q_tot_is_the_agents_own_argmax():
    """IGM: over every joint action, Q_tot is maximal at the joint action of per-agent greedy choices."""
    n, actions = 3, 3
    mixer = QPLEXMixer(n_agents=n, kernels=2, hypernet_embed=16)
    chosen, best, state, onehot = _mixer_inputs(n=n, actions=actions)
    params = mixer.init(jax.random.PRNGKey(2), chosen, best, state, onehot)
    joint = np.array(list(itertools.product(range(actions), repeat=n)))  # [27, n]
    for seed in range(6):
        utilities = jax.random.normal(jax.random.PRNGKey(seed), (n, actions)) * 3.0
        s = jax.random.normal(jax.random.PRNGKey(100 + seed), (1, state.shape[-1]))
        chosen_q = utilities[jnp.arange(n), joint]  # [27, n]
        best_q = jnp.broadcast_to(utilities.max(axis=1), chosen_q.shape)
        q_tot = mixer.apply(params, chosen_q, best_q, jnp.repeat(s, len(joint), 0), jax.nn.one_hot(joint, actions))
        greedy = tuple(np.asarray(utilities.argmax(axis=1)))
        assert tuple(joint[int(jnp.argmax(q_tot[:, 0]))]) == greedy


def test_one_step_targets_respect_terminal_flags():
    rewards = jnp.array([[1.0], [2.0], [3.0]])
    terminal = jnp.array([[False], [False], [True]])
    done = terminal
    next_values = jnp.array([[[10.0]], [[20.0]], [[30.0]]])
    targets = lambda_returns(rewards, terminal, done, next_values, gamma=0.5, lam=0.0)
    np.testing.assert_allclose(np.asarray(targets[:, 0, 0]), [1 + 0.5 * 10, 2 + 0.5 * 20, 3.0])


def test_lambda_returns_by_hand():
    gamma, lam = 0.9, 0.5
    rewards = jnp.array([[1.0], [0.0], [2.0]])
    terminal = jnp.array([[False], [False], [True]])
    next_values = jnp.array([[[4.0]], [[5.0]], [[6.0]]])
    targets = np.asarray(lambda_returns(rewards, terminal, terminal, next_values, gamma, lam))[:, 0, 0]
    # next_values[t] is V_{t+1}; the episode ends at t = 2.
    g2 = 2.0
    g1 = 0.0 + gamma * ((1 - lam) * 5.0 + lam * g2)
    g0 = 1.0 + gamma * ((1 - lam) * 4.0 + lam * g1)
    np.testing.assert_allclose(targets, [g0, g1, g2], rtol=1e-6)


def test_lambda_returns_stop_at_episode_boundaries_and_bootstrap_time_limits():
    """An episode cut by the time limit (done, not terminal) bootstraps from V_{t+1}; nothing after a
    boundary (padding, or the next episode after an auto-reset) leaks back."""
    gamma, lam = 0.9, 0.8
    rewards = jnp.array([[1.0], [1.0], [100.0], [100.0]])
    terminal = jnp.array([[False], [False], [False], [False]])
    done = jnp.array([[False], [True], [False], [False]])  # time limit after step 1
    next_values = jnp.array([[[2.0]], [[3.0]], [[50.0]], [[50.0]]])
    targets = np.asarray(lambda_returns(rewards, terminal, done, next_values, gamma, lam))[:, 0, 0]
    g1 = 1.0 + gamma * 3.0
    g0 = 1.0 + gamma * ((1 - lam) * 2.0 + lam * g1)
    np.testing.assert_allclose(targets[:2], [g0, g1], rtol=1e-6)


def test_argmax_and_exploration_never_pick_unavailable_actions():
    scores = jnp.array([[5.0, 1.0, 9.0], [0.0, -1.0, -2.0]])
    avail = jnp.array([[True, True, False], [False, True, True]])
    np.testing.assert_array_equal(np.asarray(masked_argmax(scores, avail)), [0, 1])
    keys = jax.random.split(jax.random.PRNGKey(0), 200)
    actions = jax.vmap(lambda k: epsilon_greedy(jnp.float32(1.0))(k, scores, avail))(keys)
    assert np.all(np.asarray(avail)[np.arange(2)[None, :], np.asarray(actions)])


def test_td_loss_ignores_padding(tmp_path):
    """Changing rewards, states and actions in padded steps leaves the loss unchanged."""
    from ctde.algos.value_decomposition import ValueDecomposition
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import make_paradigm
    from ctde.algos.rollout import collect

    config = build_config(["env=toy:hallway", "algo=qmix"])
    config.algo.epsilon_anneal_steps = 1000
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    learner = ValueDecomposition(config, env, paradigm)
    state = learner.init(jax.random.PRNGKey(0))
    trajectory, _ = collect(env, paradigm, state.params.agents, jax.random.PRNGKey(3), num_envs=6,
                            length=env.spec.episode_limit, auto_reset=False, model="agent",
                            select_actions=epsilon_greedy(jnp.float32(1.0)))
    batch = trajectory.transpose()
    padded = ~batch.valid
    assert padded[:-1].any(), "expected some padding in the sampled episodes"
    loss, _ = learner.td_loss(state.params, state.target_params, batch, jnp.int32(0))
    # Corrupt everything that lies strictly after each episode's bootstrap entry.
    after_bootstrap = padded & jnp.concatenate([jnp.zeros_like(padded[:1]), padded[:-1]], axis=0)
    corrupted = batch.replace(reward=jnp.where(padded, 1e3, batch.reward),
                              obs=jnp.where(after_bootstrap[..., None, None], 7.0, batch.obs),
                              state=jnp.where(after_bootstrap[..., None], -7.0, batch.state))
    loss_corrupted, _ = learner.td_loss(state.params, state.target_params, corrupted, jnp.int32(0))
    assert float(loss_corrupted) == pytest.approx(float(loss), rel=1e-6)


def test_initialization_uses_no_lapack_calls():
    """Orthogonal initializers run a QR decomposition; batched over vmapped seeds, XLA:CPU's LAPACK kernels
    deadlocked the two-thread pool of a 2-core machine. Initialization must stay free of them."""
    from ctde.config import build_config
    from ctde.training.runner import build_program
    from ctde.training.resolve import resolve
    from ctde.training.runner import seed_keys

    config = resolve(build_config(["env=smax:3m", "algo=qplex", "seeds=3"]))
    program = build_program(config)
    hlo = jax.jit(jax.vmap(program._init_one)).lower(seed_keys(config)).as_text()
    assert "lapack" not in hlo and "geqrf" not in hlo and "householder" not in hlo.lower()


@pytest.mark.slow  # 44 s in make test on 2026-12-07 (cold, two workers)
def test_trimming_padding_does_not_change_the_update():
    """An update on the shortest prefix holding every sampled episode equals the update on full sequences."""
    from ctde.algos.value_decomposition import ValueDecomposition
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import make_paradigm

    config = build_config(["env=smax:3m", "algo=qmix", "algo.batch_size=8", "rollout.num_envs=8"])
    config.algo.epsilon_anneal_steps = 1000
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    trimmed = ValueDecomposition(config, env, paradigm)
    untrimmed = ValueDecomposition(config, env, paradigm)
    untrimmed.trim_lengths = (env.spec.episode_limit + 1,)
    assert len(trimmed.trim_lengths) == 3
    state = trimmed.init(jax.random.PRNGKey(0))
    state, *_ = jax.jit(functools.partial(collect_and_learn, trimmed, env))(state)  # one rollout of 8 random episodes (~20 steps of 61)
    learner = (state.params, state.target_params, state.opt_state, state.updates)
    outputs = [jax.jit(l.update)(learner, state.replay, state.env_steps, jax.random.PRNGKey(5))
               for l in (trimmed, untrimmed)]
    (params_a, *_), metrics_a = outputs[0]
    (params_b, *_), metrics_b = outputs[1]
    assert float(metrics_a["loss"]) == pytest.approx(float(metrics_b["loss"]), rel=1e-5)
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# CADP's (about 90 s of CPU cold: its two models' updates, sliced and whole) runs with the slow tests.
@pytest.mark.parametrize("paradigm", ["ctde", pytest.param("cadp", marks=pytest.mark.slow)])
def test_an_update_computed_in_slices_of_sequences_is_the_same_update(paradigm):
    """`algo.slice_rows` splits the sampled batch into slices of whole sequences weighted by their valid steps:
    loss, gradient norm, metrics and parameters match the single-pass update (episodes of different lengths, so
    the weights are uneven; CADP's pruning term is on from step 0), whether the slices run on one CPU device or
    side by side on two (the default where JAX has two: conftest.py asks for them)."""
    from ctde.algos.value_decomposition import ValueDecomposition
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import make_paradigm

    from ctde.algos.rollout import collect
    from ctde.nets.actions import epsilon_greedy

    backbones = []
    # 60 agent-steps: a few 3-agent sequences per slice, whatever the trimmed length
    for slice_rows, devices in ((0, 1), (60, 1), (60, 0)):
        config = build_config(["env=smax:3m", "algo=qmix", f"paradigm={paradigm}", "algo.batch_size=8",
                               "rollout.num_envs=8", f"algo.slice_rows={slice_rows}", f"algo.slice_devices={devices}"]
                              + (["cadp.prune_start=0"] if paradigm == "cadp" else []))
        config.algo.epsilon_anneal_steps = 1000
        env = make_env(config.env)
        backbones.append(ValueDecomposition(config, env, make_paradigm(config, env.spec)))
    whole = backbones[0]
    state = whole.init(jax.random.PRNGKey(0))
    episodes, _ = collect(env, whole.paradigm, state.params.agents, jax.random.PRNGKey(1), num_envs=8,
                          length=whole.rollout.length, auto_reset=False, model=whole.paradigm.collect_model,
                          select_actions=epsilon_greedy(jnp.float32(1.0)))  # 8 random episodes
    replay = whole.replay.add(state.replay, episodes)
    learner = (state.params, state.target_params, state.opt_state, state.updates)
    programs = [jax.jit(backbone.update).lower(learner, replay, state.env_steps, jax.random.PRNGKey(5)).compile()
                for backbone in backbones]
    assert ["all-reduce" in program.as_text() for program in programs] == [False, False, True]
    results = [program(learner, replay, state.env_steps, jax.random.PRNGKey(5)) for program in programs]
    lengths = np.asarray(replay.experience.valid[0, :8].sum(axis=1))
    assert len(set(lengths.tolist())) > 1  # uneven slices: a plain average would differ
    (params_whole, *_), metrics_whole = results[0]
    for (params_sliced, *_), metrics_sliced in results[1:]:
        for key in metrics_whole:
            np.testing.assert_allclose(float(metrics_sliced[key]), float(metrics_whole[key]), rtol=2e-4,
                                       atol=1e-6, err_msg=key)
        for a, b in zip(jax.tree.leaves(params_whole), jax.tree.leaves(params_sliced)):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)
    if paradigm == "cadp":
        assert float(metrics_whole["pruning_loss"]) > 0
