"""Issue 36, the audit hardened: the structural proof (`ctde.audit.structural_check`) and comparisons that no
non-finite score or signed zero can blind.

The leaks here are written for this issue, not taken from `ctde.testing.planted_leaks`: they live in
`ctde.testing.attacker_leaks` (registered networks `attacker_plain`, `attacker_comm`,
`attacker_closes_over_global`, `attacker_callback`, so that `ctde audit DIR` loads them as it would any exported
policy), which the reliability campaign audits too. A registered network's functions see one agent's inputs; to
read a teammate's observation, the leaky ones use `jax.custom_batching.custom_vmap`: on one agent the function is
honest, but under `DecentralizedPolicy`'s vmap over agents its batching rule reads agent i+1's row. That is a leak
of the per-agent structure itself: the structural check flags the custom batching rule (it is not traced on one
agent), and the behavioural audit must see the leak through the -inf or NaN masks as well.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.audit import (CLASS_CHANGE, _exactly_binary, _finite_scale, _relative_change, audit_policy,
                        require_audit, structural_check)
from ctde.errors import AuditFailedError
from ctde.policy import POLICY_NETWORKS, DecentralizedPolicy
from ctde.testing.attacker_leaks import (BITS, N_ACTIONS, N_AGENTS, OBS_DIM, TRIALS, audit_attacker_leaks,
                                         callback_policy, closes_over_global_policy)
from ctde.testing.attacker_leaks import comm_policy as _comm
from ctde.testing.attacker_leaks import plain_policy as _plain

# ---------------------------------------------------------------------------------------------------------
# Comparisons


def test_comparisons_see_every_non_finite_change_and_signed_zero():
    a = np.array([1.0, -np.inf, 2.0], np.float32)
    assert _relative_change(a, a.copy(), 1.0) == 0.0
    assert _relative_change(a, np.array([1.0, -np.inf, 2.5], np.float32), 1.0) == pytest.approx(0.5)
    assert _relative_change(a, np.array([1.0, -1e9, 2.0], np.float32), 1.0) == CLASS_CHANGE  # -inf disappears
    assert _relative_change(a, np.array([1.0, np.nan, 2.0], np.float32), 1.0) == CLASS_CHANGE  # -inf -> NaN
    assert _relative_change(a, np.array([-np.inf, 0.0, 2.0], np.float32), 1.0) == CLASS_CHANGE  # -inf moves
    nan = np.array([np.nan, 1.0], np.float32)
    assert _relative_change(nan, nan.copy(), 1.0) == 0.0  # the same NaN is no change
    assert _relative_change(np.array([0.0]), np.array([-0.0]), 1.0) == CLASS_CHANGE
    # The scale of a change: finite entries only, of available actions where given.
    assert _finite_scale(np.array([1.0, -np.inf, 3.0])) == pytest.approx(3.0, abs=1e-5)
    assert _finite_scale(np.array([2.0, -1e9]), np.array([True, False])) == pytest.approx(2.0, abs=1e-5)
    assert _finite_scale(np.array([np.nan, np.inf])) == pytest.approx(1e-6)
    # Messages: exactly 0.0 or 1.0 by bit pattern.
    assert _exactly_binary(np.array([0.0, 1.0, -0.0, np.nan, 0.5], np.float32)).tolist() == [
        True, True, False, False, False]


# ---------------------------------------------------------------------------------------------------------
# Planted leaks through -inf and NaN masks, and signed zeros


@pytest.mark.parametrize("mask", ["-inf", "nan", "none"])
def test_honest_masked_networks_pass(mask):
    report = audit_policy(_plain(mask=mask), trials=TRIALS)
    assert report.passed, report.message
    assert report.structural["passed"] and report.structural["covered"]
    assert report.non_finite == {} and report.own_sensitivity > 1e-4


def test_honest_communicating_network_with_inf_masks_passes():
    report = audit_policy(_comm(), trials=TRIALS)
    assert report.passed, report.message
    assert report.messages.binary and report.structural["passed"]


@pytest.mark.parametrize("leak", ["scores", "where_inf", "nan"])
def test_plain_leaks_through_masks_fail(leak):
    policy = _plain(leak)
    report = audit_policy(policy, trials=TRIALS)
    assert not report.passed
    # Behaviourally: the leak moves agent i's scores (through the finite scores, or where -inf or NaN appears).
    assert report.max_deviation > 1e-3, report.message
    assert report.max_deviation >= (CLASS_CHANGE if leak != "scores" else 1e-3)
    assert "change their scores" in report.message and "not decentralized" in report.message
    # Structurally: the custom batching rule is code that no trace on one agent's inputs covers.
    assert not report.structural["passed"] and "custom_vmap" in report.structural["message"]
    with pytest.raises(AuditFailedError, match="not decentralized"):
        require_audit(report)


def test_communicating_receiver_reading_a_teammate_behind_inf_masks_fails():
    report = audit_policy(_comm("receiver"), trials=TRIALS)
    assert not report.passed
    assert report.messages.passed, "the messages are honest"
    assert "with every message held fixed, agents [0, 1, 2] change their scores" in report.message
    assert report.max_deviation > 1e-3


def test_signed_zero_messages_fail_as_non_binary():
    policy = _comm("signed_zero")
    params = policy.seed_params(0)
    obs = jax.random.normal(jax.random.PRNGKey(0), (N_AGENTS, OBS_DIM))
    sent = np.asarray(policy.messages(params, obs, -jnp.ones(N_AGENTS, jnp.int32),
                                      jnp.ones((N_AGENTS, N_ACTIONS), bool)))
    assert ((sent == 0) | (sent == 1)).all(), "equal to 0 or 1 as numbers"
    report = audit_policy(policy, trials=TRIALS)
    assert not report.passed and not report.messages.binary
    assert report.structural["passed"], "one agent's inputs only: the covert bit is its own"
    assert "other than exactly 0 or 1 (by bit pattern" in report.message


def test_a_non_finite_score_for_an_available_action_fails_naming_agent_and_path():
    report = audit_policy(_plain("inf_available"), trials=TRIALS)
    assert not report.passed
    assert report.non_finite == {"step": [1], "unroll": [1]}
    assert "agents [1] give a non-finite score (NaN or ±inf) to an available action (agent 1: step, unroll)" in (
        report.message)
    assert report.max_deviation == 0.0, "no leak: the failure is the non-finite score alone"
    assert "cannot show that the policy is decentralized" in report.message


def test_the_command_line_fails_every_planted_leak_and_passes_the_honest(tmp_path):
    """`ctde audit DIR --trials 4` on each non-finite, signed-zero and structural attacker leak and on each one's
    honest twin (`audit_attacker_leaks`, the reliability campaign's audit)."""
    names = ["scores_behind_inf_mask", "where_inf", "where_nan", "receiver_behind_inf_mask", "signed_zero_message",
             "closes_over_global", "host_callback"]
    rows = audit_attacker_leaks(names, root=tmp_path)
    assert [r["leak"] for r in rows] == names
    for row in rows:
        assert row["twin_exit_status"] == 0 and row["twin_passed"], (row["twin"], row["twin_verdict"])
        out = row["output"]
        assert row["exit_status"] == 2 and "FAIL" in out and "Traceback" not in out, (row["leak"], out)
        assert row["caught"], (row["leak"], row["expected"], out)
    assert {r["twin"] for r in rows} == {"plain_inf_mask", "plain_nan_mask", "comm"}


def test_audit_json_carries_the_structural_verdict_and_non_finite():
    report = audit_policy(_plain(), trials=2)
    out = json.loads(json.dumps(report.to_dict()))
    assert out["structural"]["passed"] and out["non_finite"] == {}
    assert set(out["structural"]["functions"]) == {"receiver"}


# ---------------------------------------------------------------------------------------------------------
# The structural proof


def test_a_network_closing_over_a_global_array_fails_structurally():
    policy = closes_over_global_policy()
    verdict = structural_check(policy)
    assert not verdict.passed
    assert any(f"[{N_AGENTS}, {OBS_DIM}]" in problem and "agent axis" in problem for problem in verdict.problems)
    report = audit_policy(policy, trials=2)
    assert report.max_deviation == 0.0, "no perturbation of the audit's inputs reaches the buffer"
    assert not report.passed and report.message.startswith("FAIL (structural)")
    assert "not decentralized" in report.message


def test_a_host_callback_fails_structurally():
    verdict = structural_check(callback_policy())
    assert not verdict.passed and "pure_callback" in verdict.message


def test_structural_inputs_are_one_agents_own_and_the_messages():
    verdict = structural_check(_comm())
    assert verdict.passed and verdict.covered, verdict.message
    sender, receiver = verdict.functions["sender"], verdict.functions["receiver"]
    assert set(sender["inputs"]) == {"params", "obs", "last_action", "avail", "agent_index"}
    assert sender["inputs"]["obs"] == [OBS_DIM] and sender["outputs"] == [[BITS]]
    assert receiver["inputs"]["messages"] == [N_AGENTS, BITS]
    assert set(receiver["inputs"]) - set(sender["inputs"]) == {"hidden", "reset", "messages"}
    assert receiver["outputs"] == [[0], [N_ACTIONS]]
    plain = structural_check(_plain())
    assert plain.passed and plain.functions["receiver"]["inputs"]["messages"] == [N_AGENTS, 0]
    assert "no cross-agent input" in plain.message


class _OverridesStep(DecentralizedPolicy):
    def step(self, params, hidden, obs, last_action, avail, reset):
        return super().step(params, hidden, obs, last_action, avail, reset)


def test_an_overriding_subclass_is_reported_as_not_covered():
    honest = _plain()
    verdict = structural_check(_OverridesStep(spec=dict(honest.spec), params=honest.params))
    assert verdict.passed and not verdict.covered and verdict.overridden == ["step"]
    assert "not covered structurally; audited behaviourally only" in verdict.message
    report = audit_policy(_OverridesStep(spec=dict(honest.spec), params=honest.params), trials=2)
    assert report.passed and "audited behaviourally only" in report.message


# About 50 s: exports and traces every built-in network (make test-slow; CI runs it).
@pytest.mark.slow
def test_every_built_in_network_passes_the_structural_check():
    """One real export per distinct exported network (the list `tests/test_planted_leaks.py` covers the matrix
    with): each of policy.py's and the paradigms' registered networks, with quantile heads, per-agent parameters,
    an avail input and continuous actions."""
    from test_planted_leaks import ONE_PER_NETWORK

    from ctde.testing.planted_leaks import real_policy

    built_in = {name for name, builder in POLICY_NETWORKS.items()
                if builder.__module__ == "ctde.policy" or builder.__module__.startswith("ctde.paradigms")}
    seen = set()
    for combination in ONE_PER_NETWORK:
        policy = real_policy(combination, seeds=1)
        verdict = structural_check(policy)
        assert verdict.passed and verdict.covered, (combination, verdict.message)
        seen.add(policy.spec["network"])
    assert built_in <= seen, built_in - seen


def test_the_attacker_networks_are_apart_from_the_librarys():
    """`ctde.testing.attacker_leaks` registers its networks at import, under `attacker_` names that no network of
    the library uses, and leaves every other registration as it was."""
    from ctde.testing import attacker_leaks

    ours = {name for name, builder in POLICY_NETWORKS.items() if builder.__module__ == attacker_leaks.__name__}
    assert ours and all(name.startswith(attacker_leaks.PREFIX) for name in ours)
    assert {name for name in POLICY_NETWORKS if name.startswith(attacker_leaks.PREFIX)} == ours
    assert {leak.twin for leak in attacker_leaks.ATTACKER_LEAKS.values()} == set(attacker_leaks.TWINS)
