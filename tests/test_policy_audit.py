"""The decentralized-policy artifact and its audit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import build_config
from ctde.envs import make_env
from ctde.errors import AuditFailedError, CheckpointError
from ctde.paradigms import make_paradigm
from ctde.audit import audit_policy, audit_scores_fn, require_audit
from ctde.policy import load_policy, make_policy
from ctde.algos.rollout import run_policy


def _ctde_policy(seeds=2, env_id="smax:3m"):
    config = build_config([f"env={env_id}"])
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    params = jax.vmap(paradigm.init)(jax.random.split(jax.random.PRNGKey(0), seeds))
    spec, exported = paradigm.export(params)
    spec.update(n_agents=env.spec.n_agents, n_actions=env.spec.n_actions, obs_dim=env.spec.obs_dim,
                state_dim=env.spec.state_dim, seeds=seeds)
    return env, paradigm, params, make_policy(spec, exported)


def test_exported_policy_matches_the_training_network_and_passes_the_audit():
    env, paradigm, params, policy = _ctde_policy()
    stats, episodes = run_policy(policy, env, policy.seed_params(0), jax.random.PRNGKey(1), episodes=4)
    episode = episodes[0]
    from ctde.paradigms.base import AgentInputs

    inputs = AgentInputs(obs=episode["obs"], last_action=episode["last_action"], avail=episode["avail"],
                         state=episode["state"], reset=jnp.arange(len(episode["obs"])) == 0)
    _, out = paradigm.apply(jax.tree.map(lambda x: x[0], params), paradigm.initial_carry(()), inputs)
    scores = policy.unroll(policy.seed_params(0), episode["obs"], episode["last_action"], episode["avail"])
    np.testing.assert_allclose(np.asarray(scores), np.asarray(out.scores["agent"]), rtol=1e-5, atol=1e-5)
    report = audit_policy(policy, episodes=episodes)
    assert report.passed, report.message
    assert report.own_sensitivity > 1e-4, "a policy that ignores its own inputs would pass vacuously"


def test_audit_fails_on_a_leaky_policy():
    """A policy whose agents read a teammate's observation (or the state) is caught."""
    _, _, _, policy = _ctde_policy(seeds=1)
    params = policy.seed_params(0)

    def leaky_others(obs, last_action, avail, state):
        scores = policy.unroll(params, obs, last_action, avail)
        return scores + 0.1 * jnp.roll(obs, 1, axis=1)[..., :1]  # agent i reads agent i-1's first feature

    def leaky_state(obs, last_action, avail, state):
        return policy.unroll(params, obs, last_action, avail) + 0.1 * state[:, None, :1]

    spec = policy.spec
    for leaky in (leaky_others, leaky_state):
        report = audit_scores_fn(leaky, spec["n_agents"], spec["obs_dim"], spec["n_actions"], spec["state_dim"])
        assert not report.passed
        with pytest.raises(AuditFailedError, match="not decentralized"):
            require_audit(report)


def test_policy_round_trips_through_files(tmp_path):
    env, _, _, policy = _ctde_policy()
    policy.save(tmp_path / "policy")
    loaded = load_policy(tmp_path / "policy")
    assert loaded.spec["network"] == "rnn_agent" and loaded.n_seeds == 2
    key = jax.random.PRNGKey(4)
    a, _ = run_policy(policy, env, policy.seed_params(1), key, episodes=4)
    b, _ = run_policy(loaded, env, loaded.seed_params(1), key, episodes=4)
    assert a == b


def test_unreadable_policy_is_a_clear_error(tmp_path):
    _, _, _, policy = _ctde_policy(seeds=1)
    policy.save(tmp_path / "policy")
    (tmp_path / "policy" / "params.msgpack").write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_policy(tmp_path / "policy")
    with pytest.raises(CheckpointError, match="No exported policy"):
        load_policy(tmp_path / "nowhere")
