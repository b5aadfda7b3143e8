"""Issue 36, realistic inputs: leaks that stay shut on random N(0, 1) inputs of a few steps, each caught by
`ctde audit DIR` now that it rolls out the policy's environment (SMAX 3m) over whole episodes.

The planted leaks are registered networks written for this issue, in `ctde.testing.attacker_leaks`
(`attacker_<leak>`; the reliability campaign audits them too). A registered network is one agent's step,
`vmap`-ped over agents by `DecentralizedPolicy`; these reach a teammate's inputs as an attacker would, through
`jax.custom_batching.custom_vmap`, whose batching rule sees the whole agent axis (`teammate`, `others`). Each one
is silent on the audit's former inputs (checked below), and must fail the audit run from the command line
(`ctde.cli.main`, in this process, so that those networks are registered): exit status 2, the status of a
failed audit. The honest network (`rnn_agent`) on the same spec passes.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import pytest

from ctde.cli import main
from ctde.policy import load_policy
from ctde.testing.attacker_leaks import ENV, REALISTIC_LEAKS, realistic_network, smax_env_spec, smax_policy_dir

LEAKS = REALISTIC_LEAKS


@pytest.fixture(scope="module")
def env_spec():
    return smax_env_spec()


_policy_dir = smax_policy_dir  # (root, env_spec, network, **spec changes) -> the saved policy folder


@pytest.fixture(autouse=True)
def _test_compile_cache(monkeypatch):
    """`ctde audit` turns JAX's persistent cache on at its own folder; keep the tests' (conftest.py)."""
    monkeypatch.setenv("CTDE_COMPILE_CACHE", str(jax.config.jax_compilation_cache_dir))


def _audit(directory: Path, capsys, *flags: str) -> tuple[int, str]:
    status = main(["audit", str(directory), *flags])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


# ---------------------------------------------------------------------------------------------------------


def _former_random_episode(rng, horizon, n, o, a, s) -> dict:
    """The audit's former random inputs: N(0, 1) observations and state, avail[..., 0] always true."""
    avail = rng.random((horizon, n, a)) < 0.7
    avail[..., 0] = True
    return {"obs": rng.normal(size=(horizon, n, o)).astype(np.float32), "avail": avail,
            "last_action": rng.integers(-1, a, size=(horizon, n)).astype(np.int32)}


@pytest.mark.parametrize("leak", LEAKS)
def test_each_leak_is_silent_on_the_former_random_inputs(leak, env_spec, tmp_path):
    """The leaks are of the class the issue names: 12 steps of N(0, 1) inputs with avail[..., 0] true do not
    open them, so agent 0's scores stay the same when every teammate's inputs are replaced."""
    policy = load_policy(_policy_dir(tmp_path, env_spec, realistic_network(leak)))
    params = policy.seed_params(0)
    unroll = jax.jit(lambda o, la, av: policy.unroll(params, o, la, av))
    rng = np.random.default_rng(0)
    sizes = (env_spec.n_agents, env_spec.obs_dim, env_spec.n_actions, env_spec.state_dim)
    for _ in range(4):
        base, other = (_former_random_episode(rng, 12, *sizes) for _ in range(2))
        mixed = {k: np.concatenate([base[k][:, :1], other[k][:, 1:]], axis=1) for k in base}
        reference = np.asarray(unroll(base["obs"], base["last_action"], base["avail"]))
        replaced = np.asarray(unroll(mixed["obs"], mixed["last_action"], mixed["avail"]))
        np.testing.assert_array_equal(replaced[:, 0], reference[:, 0])


def test_the_honest_network_passes_on_smax_episodes(env_spec, tmp_path, capsys):
    status, out = _audit(_policy_dir(tmp_path, env_spec, "rnn_agent"), capsys)
    assert status == 0, out
    assert "PASS" in out
    assert f"episodes of {ENV}" in out and "with random available actions" in out and "agents died in" in out


@pytest.mark.parametrize("leak", LEAKS)
def test_each_leak_fails_ctde_audit_from_the_command_line(leak, env_spec, tmp_path, capsys):
    status, out = _audit(_policy_dir(tmp_path, env_spec, realistic_network(leak)), capsys)
    assert status == 2, out
    assert "FAIL" in out and "change their scores" in out, out
    assert f"episodes of {ENV}" in out


# Long random episodes through the CLI for two leaks (make test-slow; CI runs it).
@pytest.mark.slow
@pytest.mark.parametrize("leak", ("late", "dead_teammate"))
def test_without_the_environment_the_audit_says_so_and_still_catches_leaks(leak, env_spec, tmp_path, capsys):
    """smac:3m is a host environment (SMAC itself), which the audit does not roll out: the verdict says so, and
    random episodes as long as the spec's episode limit, with dead agents, still catch the leaks."""
    directory = _policy_dir(tmp_path, env_spec, realistic_network(leak), env="smac:3m", env_options={})
    status, out = _audit(directory, capsys)
    assert status == 2, out
    assert "smac:3m" in out and f"random episodes of {env_spec.episode_limit} steps" in out, out


def test_the_options_set_the_episodes_and_the_horizon(env_spec, tmp_path, capsys):
    directory = _policy_dir(tmp_path, env_spec, "rnn_agent")
    status, out = _audit(directory, capsys, "--episodes", "2", "--horizon", "70")
    assert status == 0, out
    assert "2 episodes of smax:3m (1 greedy with the policy, 1 with random available actions" in out
    assert "random episodes of 70 steps" in out and "ran on past its end up to 70" in out
    status, out = _audit(directory, capsys, "--episodes", "0")
    assert status == 2 and "--episodes must be at least 1" in out
