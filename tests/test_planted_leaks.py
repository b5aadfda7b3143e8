"""Planted leaks (`ctde.testing.planted_leaks`): the decentralization audit catches every one, each planted in
its own code path, and passes the real exported policy of every distinct exported network.

The full paradigm x backbone matrix (60 combinations) is `audit_real_policies()`, run by the benchmark; here one
combination per distinct exported network stands for it (the backbone does not change the exported network, except
that DMIX's carries a quantile head whose mean it acts on), and a test checks that these cover every network of the
full matrix.
"""

import jax
import pytest

from ctde.config import EnvConfig
from ctde.envs import make_env
from ctde.errors import AuditFailedError
from ctde.testing.planted_leaks import (OWN_SENSITIVITY_FLOOR, PLANTED_LEAKS, LateLeakAgentZero, audit_planted_leaks,
                                            audit_real_policies, backbone_names, caught_by, exported_network,
                                            honest_base, paradigm_names, real_policy, real_policy_combinations)
from ctde.audit import audit_policy, require_audit
from ctde.algos.rollout import run_policy

TRIALS = 4

# Which checks must catch each leak (`caught_by`), where it says something about the audit: the leaks that only one
# check can see are caught by that check alone.
CAUGHT_BY_EXACTLY = {
    "messages_carry_teammate_action": ["senders (episode_messages, messages)"],
    "act_pools_scores_over_agents": ["scores: act"],
    "network_mean_pools_messages": ["binary"],
    "unroll_reads_global_state": ["scores: unroll"],
    "ptde_teacher_exported": ["scores: unroll"],
    "late_leak_agent_zero": ["scores: unroll"],
    "communicating_step_reads_teammate_obs": ["execution (step vs send-receive)"],
    "messages_leak_behind_honest_episode_messages": ["senders (messages)"],
}


@pytest.mark.parametrize("name", list(PLANTED_LEAKS))
def test_planted_leak_is_caught(name):
    leak = PLANTED_LEAKS[name]
    honest = honest_base(leak.base)
    report = audit_policy(leak(honest), trials=TRIALS)
    assert not report.passed, f"{name} ({leak.code_path}) was not caught: {report.message}"
    assert "not decentralized" in report.message
    with pytest.raises(AuditFailedError, match="not decentralized"):
        require_audit(report)
    checks = caught_by(report)
    assert checks, report.message
    if name in CAUGHT_BY_EXACTLY:
        assert checks == CAUGHT_BY_EXACTLY[name], report.message

    if name == "messages_carry_teammate_action":  # exact bits of the declared shape; honest receivers
        assert report.messages.binary and report.messages.shape == [honest.message_bits]
        assert report.max_deviation == 0.0
    if name == "network_mean_pools_messages":  # senders and receivers read only their own inputs
        assert report.messages.max_deviation == 0.0 and report.max_deviation == 0.0
    if name == "late_leak_agent_zero":  # one agent only
        assert report.per_agent[0] > 1e-3 and max(report.per_agent[1:]) == 0.0
    if name == "tiny_teammate_action":  # about 1e-3 relative, caught above the 1e-5 tolerance (the scores; an
        # action it flips counts 1 on the act path, as it may on the random episodes' near ties)
        assert 1e-4 < report.paths["step"] < 1e-2
    if name == "step_leaks_behind_honest_unroll":
        assert report.paths["unroll"] == 0.0 and report.paths["step"] > 1e-3


def test_the_honest_bases_pass():
    for network in ("rnn_agent", "ctedd_local", "cadp_decentralized", "ptde_student"):
        report = audit_policy(honest_base(network), trials=TRIALS)
        assert report.passed, report.message
        assert report.own_sensitivity > OWN_SENSITIVITY_FLOOR


def test_a_late_leak_is_caught_beyond_the_recorded_episodes():
    """toy:hallway's episodes last at most 5 steps; a leak from step 7 on never shows in them, so the audit of
    recorded episodes also probes random ones as long as its horizon (12)."""
    honest = real_policy(("ctde", "qmix", "toy:hallway"), seeds=1)
    env = make_env(EnvConfig(id="toy:hallway"))
    _, episodes = run_policy(honest, env, honest.seed_params(0), jax.random.PRNGKey(0), episodes=4)
    assert max(len(e["obs"]) for e in episodes) <= 5
    assert audit_policy(honest, episodes=episodes, trials=TRIALS).passed
    leaky = LateLeakAgentZero(spec=dict(honest.spec), params=honest.params, after=6)
    report = audit_policy(leaky, episodes=episodes, trials=TRIALS)
    assert not report.passed and "agents [0]" in report.message


def test_audit_planted_leaks_rows():
    rows = audit_planted_leaks(trials=2, leaks=["tiny_teammate_action", "network_mean_pools_messages"])
    assert [row["leak"] for row in rows] == ["tiny_teammate_action", "network_mean_pools_messages"]
    for row in rows:
        assert {"leak", "reads", "code_path", "caught", "max_deviation", "message"} <= set(row)
        assert row["caught"] and "not decentralized" in row["message"]


# One combination per distinct exported network of the full matrix (see the module docstring).
ONE_PER_NETWORK = [
    ("ctde", "qmix", "toy:hallway"),  # rnn_agent on obs, last action, id (also CTDS's student)
    ("ctde", "mappo algo.share_parameters=false", "toy:hallway"),  # rnn_agent_per_agent
    ("cadp", "vdn", "toy:hallway"),  # cadp_decentralized
    ("ctde", "dmix", "toy:hallway"),  # rnn_agent with DMIX's quantile head (acts on the mean)
    ("ctde", "dmix algo.share_parameters=false", "toy:hallway"),  # rnn_agent_per_agent, quantile head
    ("cadp", "dmix", "toy:hallway"),  # cadp_decentralized, quantile head
    ("ptde", "mappo", "toy:hallway"),  # ptde_student
    ("igm_da", "qmix", "toy:hallway"),  # rnn_agent that also reads its avail mask
    ("ctedd", "maddpg", "mpe:simple_tag"),  # ctedd_local
    ("ctde", "maddpg", "toy:target_sum"),  # rnn_agent, continuous actions
    ("ctedd", "maddpg", "mpe:simple_tag env.continuous_actions=true"),  # ctedd_local, continuous actions
]


def test_the_tested_combinations_cover_every_exported_network_of_the_matrix():
    combinations = real_policy_combinations()
    pairs = {(p.split()[0], b.split()[0]) for p, b, _ in combinations}
    for paradigm in paradigm_names():  # every paradigm and backbone is in the matrix somewhere
        assert any(p == paradigm for p, _ in pairs), paradigm
    for backbone in backbone_names():
        assert any(b == backbone for _, b in pairs), backbone
    assert ("ctde", "mappo algo.share_parameters=false", "toy:hallway") in combinations
    assert any("continuous_actions=true" in env for _, _, env in combinations)
    assert all(c in combinations for c in ONE_PER_NETWORK)
    assert {exported_network(c) for c in combinations} == {exported_network(c) for c in ONE_PER_NETWORK}


@pytest.mark.parametrize("combination", ONE_PER_NETWORK, ids=lambda c: "-".join(c).replace(" ", "+"))
def test_real_exported_policy_passes(combination):
    (row,) = audit_real_policies([combination], trials=TRIALS)
    assert row["passed"], row["message"]
    assert row["max_deviation"] == 0.0
    assert row["sensitive"] and row["own_sensitivity"] > OWN_SENSITIVITY_FLOOR, "a vacuous pass"
