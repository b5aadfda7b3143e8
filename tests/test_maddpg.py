"""MADDPG: the critic target by hand, the straight-through Gumbel-softmax, and learning a coordination game."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.maddpg import MADDPG, gumbel_softmax, with_own_action
from ctde.config import build_config
from ctde.envs import make_env
from ctde.errors import ConfigError, IncompatibleError
from ctde.paradigms import make_paradigm
from ctde.training.resolve import resolve
from ctde.algos.rollout import Trajectory


def _backbone(*overrides: str) -> MADDPG:
    config = resolve(build_config(["env=toy:two_step", "algo=maddpg", *overrides]))  # a later env= wins
    env = make_env(config.env)
    return MADDPG(config, env, make_paradigm(config, env.spec))


def _critic_by_hand(params: dict, state: np.ndarray, joint: np.ndarray) -> np.ndarray:
    """The critic MLP in numpy: relu(relu([s, a] W1 + b1) W2 + b2) W3 + b3."""
    p = jax.tree.map(np.asarray, params["params"])
    x = np.concatenate([state, joint.reshape(*joint.shape[:-2], -1)], axis=-1)
    for name in ("fc1", "fc2"):
        x = np.maximum(x @ p[name]["kernel"] + p[name]["bias"], 0.0)
    return (x @ p["q"]["kernel"] + p["q"]["bias"])[..., 0]


def test_critic_target_matches_a_hand_computation():
    backbone = _backbone("algo.gamma=0.9")
    state = backbone.init(jax.random.PRNGKey(0))
    spec = backbone.env.spec
    n, a, s_dim = spec.n_agents, spec.n_actions, spec.state_dim
    T, B = 3, 2
    rng = np.random.default_rng(0)
    states = rng.normal(size=(T + 1, B, s_dim)).astype(np.float32)
    rewards = rng.normal(size=(T + 1, B)).astype(np.float32)
    terminal = np.zeros((T + 1, B), bool)
    terminal[1, 0] = True  # no bootstrap past this step
    avail = np.ones((T + 1, B, n, a), bool)
    avail[2, 1, 0, 1] = False  # the target actor's favourite is unavailable here: the argmax must skip it
    target_logits = np.zeros((T + 1, B, n, a), np.float32)
    target_logits[..., 1] = 1.0  # every target actor prefers action 1 ...
    target_logits[2, 1, 0] = [0.5, 1.0]  # ... including where it is unavailable
    batch = Trajectory(obs=jnp.zeros((T + 1, B, n, spec.obs_dim)), state=jnp.asarray(states),
                       avail=jnp.asarray(avail), views={}, last_action=jnp.zeros((T + 1, B, n), jnp.int32),
                       reset=jnp.zeros((T + 1, B), bool), action=jnp.zeros((T + 1, B, n), jnp.int32),
                       reward=jnp.asarray(rewards), terminal=jnp.asarray(terminal), done=jnp.asarray(terminal),
                       valid=jnp.ones((T + 1, B), bool), alive=jnp.ones((T + 1, B, n), bool))
    target_params = state.target_params
    got = np.asarray(backbone.critic_target(target_params, batch, jnp.asarray(target_logits)))

    next_actions = np.ones((T, B, n), int)
    next_actions[1, 1, 0] = 0  # entry t + 1 = 2 of env 1: action 1 unavailable for agent 0
    next_joint = np.eye(a, dtype=np.float32)[next_actions]
    next_q = _critic_by_hand(target_params.critic, states[1:], next_joint)
    expected = rewards[:-1] + 0.9 * (1.0 - terminal[:-1]) * next_q
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert got[1, 0] == pytest.approx(rewards[1, 0])  # terminal: the reward alone


def test_gumbel_softmax_is_one_hot_forward_and_the_relaxed_gradient_backward():
    logits = jnp.array([[0.3, -1.0, 2.0, 0.1]] * 4)
    key = jax.random.PRNGKey(3)
    hard = gumbel_softmax(key, logits, 0.7)
    assert np.all(np.isin(np.asarray(hard), [0.0, 1.0])) and np.allclose(hard.sum(-1), 1.0)
    weights = jnp.array([1.0, -2.0, 0.5, 3.0])

    def relaxed(l):
        g = jax.random.gumbel(key, l.shape, l.dtype)
        return jnp.sum(weights * jax.nn.softmax((l + g) / 0.7, axis=-1))

    straight_through = jax.grad(lambda l: jnp.sum(weights * gumbel_softmax(key, l, 0.7)))(logits)
    np.testing.assert_allclose(straight_through, jax.grad(relaxed)(logits), rtol=1e-5, atol=1e-6)
    assert np.abs(straight_through).max() > 1e-3
    # Its forward samples follow softmax(logits).
    samples = jax.vmap(lambda k: gumbel_softmax(k, logits[0], 1.0))(jax.random.split(key, 20_000))
    np.testing.assert_allclose(samples.mean(0), jax.nn.softmax(logits[0]), atol=0.015)


def test_each_agent_alone_takes_its_own_action_in_the_joint_one():
    replayed = jnp.asarray(np.eye(3)[[0, 1, 2]])  # agent j took action j
    own = jnp.asarray(np.eye(3)[[2, 2, 2]])  # every agent's own choice: action 2
    joint = np.asarray(with_own_action(replayed, own))  # [i, j, A]
    for i in range(3):
        for j in range(3):
            np.testing.assert_array_equal(joint[i, j], own[j] if i == j else replayed[j])


@pytest.mark.slow
def test_maddpg_learns_the_two_step_coordination_game(run_training):
    """The safe choice pays 7; only coordinating on state 2B and action (1, 1) pays 8. A centralized critic
    finds it: every seed's greedy decentralized policy scores 8."""
    result = run_training("env=toy:two_step", "algo=maddpg", "steps=10000", "seeds=3", "eval.interval=5000")
    finals = [r["test/agent/return"] for r in result.rows if r["env_steps"] >= 10000]
    assert len(finals) == 3 and min(finals) == pytest.approx(8.0), finals
    assert result.summary["decentralization audit"].startswith("PASS")


@pytest.mark.parametrize("overrides, error, words", [
    (["algo=maddpg", "algo.td_lambda=0.5"], ConfigError, "algo.td_lambda"),
    (["algo=qmix", "maddpg.tau=0.1"], ConfigError, "maddpg.tau"),
    (["algo=maddpg", "paradigm=cadp"], IncompatibleError, "algo=maddpg"),
    (["algo=qmix", "paradigm=ctedd"], IncompatibleError, "algo=maddpg"),
    (["algo=maddpg", "ctedd.message_bits=3"], ConfigError, "paradigm=ctedd"),
    (["algo=maddpg", "paradigm=ctedd", "ctedd.message_bits=0"], ConfigError, "message_bits"),
])
def test_impossible_combinations_are_refused_with_the_fix(overrides, error, words):
    with pytest.raises(error, match=words):
        resolve(build_config(["env=toy:two_step", *overrides]))


def test_agents_may_each_have_a_network_of_their_own():
    """algo.share_parameters=false: per-agent parameters, and the exported policy runs agent i's own network."""
    from ctde.paradigms.base import AgentInputs
    from ctde.audit import audit_policy
    from ctde.policy import make_policy

    config = resolve(build_config(["env=toy:hallway", "algo=maddpg", "algo.share_parameters=false"]))
    spec = make_env(config.env).spec
    paradigm = make_paradigm(config, spec)
    params = paradigm.init(jax.random.PRNGKey(0))
    kernel = params["agent"]["params"]["fc1"]["kernel"]
    assert kernel.shape[0] == spec.n_agents and not np.allclose(kernel[0], kernel[1])
    T, n = 5, spec.n_agents
    rng = np.random.default_rng(1)
    obs = jnp.asarray(rng.normal(size=(T, 1, n, spec.obs_dim)), jnp.float32)
    last_action = jnp.asarray(rng.integers(-1, spec.n_actions, size=(T, 1, n)), jnp.int32)
    avail = jnp.ones((T, 1, n, spec.n_actions), bool)
    inputs = AgentInputs(obs=obs, last_action=last_action, avail=avail, state=jnp.zeros((T, 1, spec.state_dim)),
                         reset=jnp.arange(T)[:, None] == 0)
    _, output = paradigm.apply(params, paradigm.initial_carry((1,)), inputs)
    policy_spec, policy_params = paradigm.export(params)
    policy = make_policy({**policy_spec, "n_agents": n, "n_actions": spec.n_actions, "obs_dim": spec.obs_dim,
                          "state_dim": spec.state_dim, "seeds": 1}, jax.tree.map(lambda x: x[None], policy_params))
    unrolled = policy.unroll(policy.seed_params(0), obs[:, 0], last_action[:, 0], avail[:, 0])
    np.testing.assert_allclose(unrolled, output.scores["agent"][:, 0], rtol=1e-5, atol=1e-5)
    assert audit_policy(policy).passed
    with pytest.raises(ConfigError, match="share_parameters"):
        resolve(build_config(["env=toy:hallway", "algo=maddpg", "paradigm=ctedd", "algo.share_parameters=false"]))


def test_maddpg_learns_a_continuous_coordination_task(run_training):
    """toy:target_sum: two tanh actors must play actions summing to a target they see (|target| up to 1.5, beyond
    one agent's reach). Uniformly random actions score about 0.08; every seed's greedy policy scores >= 0.98."""
    result = run_training("env=toy:target_sum", "algo=maddpg", "steps=5000", "seeds=3", "eval.interval=2500")
    finals = [r["test/agent/return"] for r in result.rows if r["env_steps"] >= 5000]
    assert len(finals) == 3 and min(finals) >= 0.98, finals
    assert result.summary["decentralization audit"].startswith("PASS")
    from ctde.policy import load_policy

    policy = load_policy(result.run_dir / "policy")
    assert policy.spec["continuous_actions"]
    _, actions = policy.act(policy.seed_params(0), policy.initial_hidden(), jnp.full((2, 1), 1.2),
                            jnp.zeros((2, 1)), jnp.ones((2, 1), bool), jnp.asarray(True))
    assert actions.shape == (2, 1) and abs(float(actions.sum()) - 1.2) < 0.1


def test_continuous_critic_target_and_actor_actions_use_the_action_vectors():
    backbone = _backbone("env=toy:target_sum")
    scores = jnp.array([[[0.3], [-2.0]]])  # [1, n, 1]
    np.testing.assert_allclose(backbone.deterministic_actions(scores, jnp.ones((1, 2, 1), bool)), jnp.tanh(scores))
    np.testing.assert_allclose(backbone.action_vectors(jnp.tanh(scores)), jnp.tanh(scores))
    grad = jax.grad(lambda s: backbone.differentiable_actions(jax.random.PRNGKey(0), s, None).sum())(scores)
    np.testing.assert_allclose(grad, 1 - jnp.tanh(scores) ** 2, rtol=1e-6)
    explored = jax.vmap(lambda k: backbone.explore(k, scores, None))(jax.random.split(jax.random.PRNGKey(1), 4000))
    assert float(explored.min()) >= -1.0 and float(explored.max()) <= 1.0
    assert abs(float(explored[:, 0, 0, 0].std()) - 0.1) < 0.01  # maddpg.noise_std around tanh(0.3)


def test_value_decomposition_refuses_continuous_actions():
    with pytest.raises(IncompatibleError, match="continuous actions"):
        resolve(build_config(["env=toy:target_sum", "algo=qmix"]))
    with pytest.raises(IncompatibleError, match="entropy"):
        resolve(build_config(["env=toy:target_sum", "algo=maddpg", "paradigm=ctedd", "ctedd.entropy_coef=0.1"]))
