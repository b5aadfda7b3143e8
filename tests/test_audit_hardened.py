"""Issue 36, the audit hardened: the structural proof (`ctde.audit.structural_check`) and comparisons that no
non-finite score or signed zero can blind.

The leaks here are written for this issue, not taken from `ctde.testing.planted_leaks`. They are registered
networks (`register_network`), so that `ctde audit DIR` loads them as it would any exported policy. A registered
network's functions see one agent's inputs; to read a teammate's observation, the leaky ones use
`jax.custom_batching.custom_vmap`: on one agent the function is honest, but under `DecentralizedPolicy`'s vmap over
agents its batching rule reads agent i+1's row. That is a leak of the per-agent structure itself: the structural
check flags the custom batching rule (it is not traced on one agent), and the behavioural audit must see the leak
through the -inf or NaN masks as well.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde import cli
from ctde.audit import (CLASS_CHANGE, _exactly_binary, _finite_scale, _relative_change, audit_policy,
                        require_audit, structural_check)
from ctde.errors import AuditFailedError
from ctde.policy import (POLICY_NETWORKS, DecentralizedPolicy, PolicyNetwork, make_policy, own_input,
                         register_network)

N_AGENTS, OBS_DIM, N_ACTIONS, STATE_DIM, BITS = 3, 4, 5, 6, 2
TRIALS = 4
IN = OBS_DIM + N_AGENTS  # own_input of ["obs", "agent_id"]


def _teammate_obs(obs: jax.Array) -> jax.Array:
    """obs [o] -> [o]: on one agent, its own observation (nothing else is there to read); under a vmap over agents,
    agent i+1's observation (the batching rule rolls the agent axis)."""

    @jax.custom_batching.custom_vmap
    def teammate(x):
        return x

    @teammate.def_vmap
    def rule(axis_size, in_batched, x):
        (batched,) = in_batched
        return (jnp.roll(x, -1, axis=0) if batched else x), batched

    return teammate(obs)


def _masked(scores: jax.Array, avail: jax.Array, fill: str) -> jax.Array:
    """Unavailable actions' scores replaced by -inf or NaN (the common idioms), or kept."""
    values = {"-inf": -jnp.inf, "nan": jnp.nan}
    return scores if fill == "none" else jnp.where(avail, scores, values[fill])


@register_network("issue36_plain")
def _issue36_plain(spec: dict) -> PolicyNetwork:
    """A linear plain network, x W + b, unavailable actions masked with spec["mask"]; spec["leak"]:
    "none" (honest), "scores" (agent i+1's first observation feature added to every score), "where_inf" (an
    unavailable action's score is -inf or -1e9 as agent i+1's first feature is positive or not), "nan" (NaN or
    -inf the same way), "inf_available" (agent 1's first action scores +inf: no leak, a broken network)."""
    leak, fill = spec["leak"], spec["mask"]

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        scores = x @ params["w"] + params["b"]
        if leak == "scores":
            scores = scores + 0.5 * _teammate_obs(obs)[0]
        masked = _masked(scores, avail, fill)
        if leak == "where_inf":
            masked = jnp.where(avail, scores, jnp.where(_teammate_obs(obs)[0] > 0, -jnp.inf, -1e9))
        if leak == "nan":
            masked = jnp.where(avail, scores, jnp.where(_teammate_obs(obs)[0] > 0, jnp.nan, -jnp.inf))
        if leak == "inf_available":
            masked = masked.at[0].set(jnp.where(agent_index == 1, jnp.inf, masked[0]))
        return hidden, masked

    return PolicyNetwork.plain(step)


@register_network("issue36_comm")
def _issue36_comm(spec: dict) -> PolicyNetwork:
    """A linear communicating network: agent j sends bits [x_j G > 0] (k of them), agent i scores
    [x_i, all messages] W, unavailable actions masked with -inf. spec["leak"]: "none"; "receiver" (agent i's
    scores also read agent i+1's observation, outside the messages); "signed_zero" (a 0 bit is sent as -0.0
    when the sender's own last observation feature is negative: a covert extra bit per message)."""
    leak, bits = spec["leak"], int(spec["message_bits"])

    def sender(params, obs, last_action, avail, agent_index):
        x = own_input(spec, obs, last_action, avail, agent_index)
        message = (x @ params["g"] > 0).astype(jnp.float32)
        if leak == "signed_zero":
            message = jnp.where(message == 0, jnp.copysign(0.0, obs[-1]), message)
        return message

    def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
        x = own_input(spec, obs, last_action, avail, agent_index)
        scores = jnp.concatenate([x, messages.reshape(-1)]) @ params["w"]
        if leak == "receiver":
            scores = scores + 0.5 * _teammate_obs(obs)[0]
        return hidden, _masked(scores, avail, "-inf")

    return PolicyNetwork(receiver=receiver, sender=sender, bits=bits)


_GLOBAL_OBS = np.zeros((N_AGENTS, OBS_DIM), np.float32)  # a buffer of every agent's observation, filled elsewhere


@register_network("issue36_closes_over_global")
def _issue36_closes_over_global(spec: dict) -> PolicyNetwork:
    """A plain network whose builder captures a module-level buffer of all agents' observations [n, o]; agent i
    adds agent i+1's row. The audit's inputs never reach the buffer, so no perturbation moves it: only the
    structural check can see it."""
    buffer = _GLOBAL_OBS

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        teammate = jnp.asarray(buffer)[(agent_index + 1) % spec["n_agents"]]
        return hidden, x @ params["w"] + params["b"] + 0.5 * teammate[0]

    return PolicyNetwork.plain(step)


@register_network("issue36_callback")
def _issue36_callback(spec: dict) -> PolicyNetwork:
    """A plain network whose step calls back into Python (`jax.pure_callback`), where any array can be read."""

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        extra = jax.pure_callback(lambda v: np.zeros_like(v), jax.ShapeDtypeStruct(obs.shape, obs.dtype), obs,
                                  vmap_method="sequential")
        return hidden, x @ params["w"] + params["b"] + extra[0]

    return PolicyNetwork.plain(step)


def _spec(network: str, leak: str = "none", mask: str = "-inf", **extra) -> dict:
    return {"network": network, "inputs": ["obs", "agent_id"], "n_agents": N_AGENTS, "obs_dim": OBS_DIM,
            "n_actions": N_ACTIONS, "state_dim": STATE_DIM, "hidden_dim": 0, "seeds": 1, "leak": leak,
            "mask": mask, **extra}


def _params(communicating: bool = False) -> dict:
    rng = np.random.default_rng(0)
    if communicating:
        return {"g": jnp.asarray(rng.normal(size=(1, IN, BITS)), jnp.float32),
                "w": jnp.asarray(rng.normal(size=(1, IN + N_AGENTS * BITS, N_ACTIONS)), jnp.float32)}
    return {"w": jnp.asarray(rng.normal(size=(1, IN, N_ACTIONS)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(1, N_ACTIONS)), jnp.float32)}


def _plain(leak: str = "none", mask: str = "-inf") -> DecentralizedPolicy:
    return make_policy(_spec("issue36_plain", leak, mask), _params())


def _comm(leak: str = "none") -> DecentralizedPolicy:
    return make_policy(_spec("issue36_comm", leak, message_bits=BITS), _params(communicating=True))


def _cli_audit(policy: DecentralizedPolicy, directory, capsys) -> tuple[int, str]:
    policy.save(directory)
    status = cli.main(["audit", str(directory), "--trials", str(TRIALS)])
    out = capsys.readouterr()
    return status, out.out + out.err


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


def test_the_command_line_fails_every_planted_leak_and_passes_the_honest(tmp_path, capsys):
    cases = {"honest_inf": _plain(), "honest_nan": _plain(mask="nan"), "honest_comm": _comm(),
             "scores": _plain("scores"), "where_inf": _plain("where_inf"), "nan": _plain("nan"),
             "receiver": _comm("receiver"), "signed_zero": _comm("signed_zero"),
             "global": make_policy(_spec("issue36_closes_over_global"), _params())}
    for name, policy in cases.items():
        status, out = _cli_audit(policy, tmp_path / name, capsys)
        if name.startswith("honest"):
            assert status == 0 and "PASS" in out, (name, out)
        else:
            assert status == 2 and "FAIL" in out and "Traceback" not in out, (name, out)


def test_audit_json_carries_the_structural_verdict_and_non_finite():
    report = audit_policy(_plain(), trials=2)
    out = json.loads(json.dumps(report.to_dict()))
    assert out["structural"]["passed"] and out["non_finite"] == {}
    assert set(out["structural"]["functions"]) == {"receiver"}


# ---------------------------------------------------------------------------------------------------------
# The structural proof


def test_a_network_closing_over_a_global_array_fails_structurally():
    policy = make_policy(_spec("issue36_closes_over_global"), _params())
    verdict = structural_check(policy)
    assert not verdict.passed
    assert any(f"[{N_AGENTS}, {OBS_DIM}]" in problem and "agent axis" in problem for problem in verdict.problems)
    report = audit_policy(policy, trials=2)
    assert report.max_deviation == 0.0, "no perturbation of the audit's inputs reaches the buffer"
    assert not report.passed and report.message.startswith("FAIL (structural)")
    assert "not decentralized" in report.message


def test_a_host_callback_fails_structurally():
    verdict = structural_check(make_policy(_spec("issue36_callback"), _params()))
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
