"""Communicating policies (CTEDD's `ctedd_local`): the send/receive structure and the message audit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.envs.toy import make_toy
from ctde.errors import AuditFailedError
from ctde.nets.ctedd import MessageActor, MessageGenerator, local_input, local_policy_logits
from ctde.audit import audit_communication, audit_policy, audit_scores_fn, require_audit
from ctde.policy import (DecentralizedPolicy, PolicyNetwork, build_network, load_policy, make_policy, own_input,
                         register_network)
from ctde.algos.rollout import run_policy


def _ctedd_spec(n_agents: int, bits: int, obs_dim: int = 4, n_actions: int = 3, state_dim: int = 5, seeds: int = 2,
                hidden: int = 16, network: str = "ctedd_local") -> dict:
    return {"network": network, "inputs": ["obs", "agent_id"], "message_bits": bits, "local_hidden": hidden,
            "hidden_dim": 0, "n_agents": n_agents, "n_actions": n_actions, "obs_dim": obs_dim,
            "state_dim": state_dim, "seeds": seeds}


def _ctedd_params(spec: dict, key: int = 0) -> dict:
    """Random generator and actor parameters, stacked over the spec's seeds."""
    n, k, h = spec["n_agents"], spec["message_bits"], spec["local_hidden"]
    generator, actor = MessageGenerator(bits=k, hidden_dim=h), MessageActor(spec["n_actions"], hidden_dim=h)
    x = jnp.zeros(spec["obs_dim"] + n)

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"messages": generator.init(k1, x), "actor": actor.init(k2, x, jnp.zeros(n * k))}

    return jax.vmap(init)(jax.random.split(jax.random.PRNGKey(key), spec["seeds"]))


def _ctedd_policy(n_agents: int = 2, bits: int = 1, policy_class=DecentralizedPolicy, **kwargs):
    spec = _ctedd_spec(n_agents, bits, **kwargs)
    policy = make_policy(spec, _ctedd_params(spec))
    return policy if policy_class is DecentralizedPolicy else policy_class(spec=policy.spec, params=policy.params)


def _sizes(policy):
    s = policy.spec
    return s["n_agents"], s["obs_dim"], s["n_actions"], s["state_dim"]


def _halves(policy, seed: int = 0):
    """The honest messages_fn and receiver_fn of one seed, for leaky variants to wrap."""
    params = policy.seed_params(seed)
    return (lambda o, la, av, s: policy.episode_messages(params, o, la, av, s),
            lambda o, la, av, s, m: policy.unroll(params, o, la, av, s, messages=m))


@pytest.mark.parametrize("n_agents,bits", [(2, 1), (3, 1), (2, 3), (3, 3)])
def test_honest_ctedd_local_passes_and_communicates(n_agents, bits):
    policy = _ctedd_policy(n_agents, bits)
    assert policy.communicating and policy.message_bits == bits
    report = audit_policy(policy)
    assert report.passed, report.message
    assert "reads only its own inputs and" in report.message and f"{bits}-bit messages" in report.message
    assert report.messages.passed and report.messages.binary and report.messages.shape == [bits]
    assert report.own_sensitivity > 1e-4, "a receiver that ignores its own inputs would pass vacuously"
    assert report.messages.own_sensitivity > 0, "constant messages would pass check (i) vacuously"
    assert set(report.to_dict()["messages"]) >= {"passed", "max_deviation", "binary", "per_sender"}

    # The same step as the training side's `local_policy_logits` on x = obs ⊕ onehot(i).
    params = policy.seed_params(1)
    obs = jax.random.normal(jax.random.PRNGKey(3), (n_agents, policy.spec["obs_dim"]))
    last_action, avail = -jnp.ones(n_agents, jnp.int32), jnp.ones((n_agents, policy.spec["n_actions"]), bool)
    _, scores = policy.step(params, policy.initial_hidden(), obs, last_action, avail, jnp.asarray(True))
    h = policy.spec["local_hidden"]
    logits, bits_sent = local_policy_logits(MessageGenerator(bits, h), MessageActor(policy.spec["n_actions"], h),
                                            params, local_input(obs))
    np.testing.assert_allclose(np.asarray(scores), np.asarray(logits), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(policy.messages(params, obs, last_action, avail)), np.asarray(bits_sent))

    # Through the messages, agent i's scores do depend on the others' observations: the plain audit of the
    # composite scores function flags it, which is why a communicating policy is audited in two halves.
    composite = audit_scores_fn(lambda o, la, av, s: policy.unroll(params, o, la, av, s), *_sizes(policy))
    assert not composite.passed


class _LeakyReceiverPolicy(DecentralizedPolicy):
    """Agent 1's scores also read agent 0's observation directly, besides the messages."""

    def receive(self, params, hidden, obs, last_action, avail, reset, messages):
        hidden, scores = super().receive(params, hidden, obs, last_action, avail, reset, messages)
        return hidden, scores.at[1].add(0.5 * obs[0, :1])


class _LeakySenderPolicy(DecentralizedPolicy):
    """Agent 1's first bit is agent 0's first observation feature's sign: binary, but not agent 1's own."""

    def messages(self, params, obs, last_action, avail):
        honest = super().messages(params, obs, last_action, avail)
        return honest.at[1, 0].set((obs[0, 0] > 0).astype(honest.dtype))


@pytest.mark.parametrize("n_agents", [2, 3])
def test_a_receiver_reading_another_agents_obs_fails_naming_the_agent(n_agents):
    policy = _ctedd_policy(n_agents, 2, policy_class=_LeakyReceiverPolicy, seeds=1)
    report = audit_policy(policy)
    assert not report.passed
    assert report.messages.passed, "the messages themselves are honest"
    assert "agents [1] change their scores" in report.message
    assert report.per_agent[1] > 1e-3 and max(report.per_agent[:1] + report.per_agent[2:]) == 0.0
    with pytest.raises(AuditFailedError, match="not decentralized"):
        require_audit(report)

    # The same leak written as whole-episode functions, and one reading the global state.
    messages_fn, receiver_fn = _halves(_ctedd_policy(n_agents, 2, seeds=1))
    leaks = {"obs": lambda o, s: o[:, 0, :1], "state": lambda o, s: s[:, :1]}
    for name, leak in leaks.items():
        def leaky(o, la, av, s, m, leak=leak):
            return receiver_fn(o, la, av, s, m).at[:, 1].add(0.5 * leak(o, s))

        report = audit_communication(messages_fn, leaky, *_sizes(policy), message_bits=2)
        assert not report.passed and "agents [1] change their scores" in report.message, name


def test_a_message_reading_anything_but_its_senders_inputs_fails():
    policy = _ctedd_policy(3, 2, policy_class=_LeakySenderPolicy, seeds=1)
    report = audit_policy(policy)
    assert not report.passed and not report.messages.passed and report.messages.binary
    assert "the messages of agents [1] change" in report.message
    assert report.messages.per_sender[1] > 0 and report.messages.per_sender[0] == report.messages.per_sender[2] == 0
    assert report.max_deviation == 0.0, "with the messages held fixed the receivers are honest"

    messages_fn, receiver_fn = _halves(_ctedd_policy(3, 2, seeds=1))

    def reads_state(o, la, av, s):  # agent 2's bits flip with the sign of the state's first feature
        m = messages_fn(o, la, av, s)
        return m.at[:, 2].set(jnp.abs(m[:, 2] - (s[:, None, 0] > 0)))

    def reads_other(o, la, av, s):  # agent 0's bits flip with agent 2's first observation feature
        m = messages_fn(o, la, av, s)
        return m.at[:, 0].set(jnp.abs(m[:, 0] - (o[:, 2, None, 0] > 0)))

    for leaky, sender in ((reads_state, 2), (reads_other, 0)):
        report = audit_communication(leaky, receiver_fn, *_sizes(policy), message_bits=2)
        assert not report.passed and f"the messages of agents [{sender}] change" in report.message


@register_network("test_soft_messages")
def _soft_messages(spec: dict) -> PolicyNetwork:
    """ctedd_local with the message generator's sigmoid instead of its bits: messages carry real numbers."""
    generator = MessageGenerator(bits=spec["message_bits"], hidden_dim=spec["local_hidden"])
    honest = build_network({**spec, "network": "ctedd_local"})

    def sender(params, obs, last_action, avail, agent_index):
        x = own_input(spec, obs, last_action, avail, agent_index)
        return jax.nn.sigmoid(generator.apply(params["messages"], x))

    return PolicyNetwork(receiver=honest.receiver, sender=sender, bits=spec["message_bits"])


def test_messages_that_are_not_k_bits_fail():
    policy = _ctedd_policy(2, 3, network="test_soft_messages", seeds=1)
    report = audit_policy(policy)
    assert not report.passed and not report.messages.binary
    assert report.messages.non_binary_senders == [0, 1]
    assert "agents [0, 1] send message entries other than exactly 0 or 1" in report.message

    # Binary, but fewer bits than the spec declares.
    messages_fn, receiver_fn = _halves(_ctedd_policy(2, 3, seeds=1))
    report = audit_communication(lambda *a: messages_fn(*a)[..., :2], lambda o, la, av, s, m: receiver_fn(
        o, la, av, s, jnp.zeros((*m.shape[:2], 3))), *_sizes(policy), message_bits=3)
    assert not report.passed and report.messages.shape == [2] and "not the declared 3 bits" in report.message


def test_ctedd_local_round_trips_through_files(tmp_path):
    policy = _ctedd_policy(3, 3)
    policy.save(tmp_path / "policy")
    loaded = load_policy(tmp_path / "policy")
    assert loaded.spec["network"] == "ctedd_local" and loaded.communicating and loaded.n_seeds == 2
    obs = jax.random.normal(jax.random.PRNGKey(5), (6, 3, 4))
    last_action = jax.random.randint(jax.random.PRNGKey(6), (6, 3), -1, 3)
    avail = jnp.ones((6, 3, 3), bool)
    for seed in range(2):
        a, b = (np.asarray(p.unroll(p.seed_params(seed), obs, last_action, avail)) for p in (policy, loaded))
        np.testing.assert_array_equal(a.argmax(-1), b.argmax(-1))
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert audit_policy(loaded).passed


def test_run_policy_with_ctedd_local_on_hallway():
    env = make_toy("hallway", None, ())
    s = env.spec
    policy = _ctedd_policy(s.n_agents, 2, obs_dim=s.obs_dim, n_actions=s.n_actions, state_dim=s.state_dim)
    assert policy.initial_hidden().shape == (s.n_agents, 0)
    stats, episodes = run_policy(policy, env, policy.seed_params(0), jax.random.PRNGKey(2), episodes=4)
    assert set(stats) == {"win_rate", "return", "episode_length"} and 1 <= stats["episode_length"] <= s.episode_limit
    assert len(episodes) == 4
    for episode in episodes:
        t = episode["obs"].shape[0]
        assert episode["obs"].shape == (t, s.n_agents, s.obs_dim) and episode["avail"].shape == (t, s.n_agents, 4)
        assert episode["state"].shape == (t, s.state_dim) and episode["last_action"].shape == (t, s.n_agents)
    report = audit_policy(policy, episodes=episodes)
    assert report.passed, report.message
