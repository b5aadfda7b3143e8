"""Issue 36, realistic inputs: leaks that stay shut on random N(0, 1) inputs of a few steps, each caught by
`ctde audit DIR` now that it rolls out the policy's environment (SMAX 3m) over whole episodes.

The planted leaks are registered networks written for this issue. A registered network is one agent's step,
`vmap`-ped over agents by `DecentralizedPolicy`; these reach a teammate's inputs as an attacker would, through
`jax.custom_batching.custom_vmap`, whose batching rule sees the whole agent axis (`teammate`, `others`). Each one
is silent on the audit's former inputs (checked below), and must fail the audit run from the command line
(`ctde.cli.main`, in this process, so that the test's networks are registered): exit status 2, the status of a
failed audit. The honest network (`rnn_agent`) on the same spec passes.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.custom_batching import custom_vmap

from ctde.cli import main
from ctde.nets.rnn import RNNAgent
from ctde.policy import load_policy, make_policy, recurrent_agent_step, register_network

ENV = "smax:3m"
HIDDEN = 16
LATE_STEP = 20  # the late leak's first step: after the recorded episodes of a trained 3m policy (13-14 steps)


# ---------------------------------------------------------------------------------------------------------
# How a per-agent network reaches its teammates: a custom batching rule over the agent axis


@custom_vmap
def teammate(x: jax.Array) -> jax.Array:
    """Under the policy's vmap over agents: agent (i + 1) mod n's `x` in place of agent i's own."""
    return x


@teammate.def_vmap
def _teammate_rule(axis_size, in_batched, x):
    (batched,) = in_batched
    return (jnp.roll(x, -1, axis=0), True) if batched else (x, False)


def others(n_agents: int):
    """x [...] -> [n - 1, ...]: under the vmap over agents, every other agent's x, (i + 1) mod n first."""

    @custom_vmap
    def gather(x):
        return jnp.stack([x] * (n_agents - 1))

    @gather.def_vmap
    def rule(axis_size, in_batched, x):
        if not in_batched[0]:
            return jnp.stack([x] * (n_agents - 1)), False
        return jnp.stack([jnp.roll(x, -k, axis=0) for k in range(1, n_agents)], axis=1), True

    return gather


def _projection(seed: int, rows: int, cols: int) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=(rows, cols)) / np.sqrt(rows), jnp.float32)


def _honest(spec: dict, hidden_dim: int):
    return recurrent_agent_step(spec, RNNAgent(hidden_dim, spec["n_actions"]).apply)


def _leaky(leak):
    """A registered network: the honest recurrent agent's step, plus `leak(spec, obs, avail, scores)` -> scores."""

    def build(spec: dict):
        honest = _honest(spec, spec["hidden_dim"])

        def step(params, hidden, obs, last_action, avail, agent_index, reset):
            hidden, scores = honest(params, hidden, obs, last_action, avail, agent_index, reset)
            return hidden, leak(spec, obs, avail, scores)

        return step

    return build


def _in_range(spec, obs, avail, scores):
    """Reads a teammate's observation only when every feature lies in [-1, 1], as SMAX's normalized ones do."""
    x = teammate(obs)
    return scores + jnp.all(jnp.abs(x) <= 1.0) * (x @ _projection(1, spec["obs_dim"], spec["n_actions"]))


def _dead_teammate(spec, obs, avail, scores):
    """Reads whether a teammate is dead: its observation row is exactly 0."""
    return scores + jnp.all(teammate(obs) == 0) * jnp.linspace(0.5, 1.0, spec["n_actions"])


def _avail_bit(spec, obs, avail, scores):
    """Reads one bit of a teammate's availability mask: action 0, which random masks always allowed."""
    return scores + teammate(avail)[0].astype(scores.dtype) * jnp.linspace(0.5, 1.0, spec["n_actions"])


def _living(spec, obs, avail, scores):
    """Scales its scores by the number of living agents (its own row and the teammates' nonzero rows)."""
    living = 1 + jnp.sum(jnp.any(others(spec["n_agents"])(obs) != 0, axis=-1))
    return scores * living / spec["n_agents"]


for _name, _leak in {"in_range": _in_range, "dead_teammate": _dead_teammate, "avail_bit": _avail_bit,
                     "living": _living}.items():
    register_network(f"test_leak_{_name}")(_leaky(_leak))


@register_network("test_leak_late")
def _late(spec: dict):
    """Reads a teammate's observation from step `LATE_STEP` on; it counts the steps in the last entry of its hidden
    state (hidden_dim = the recurrent width + 1)."""
    honest = _honest(spec, spec["hidden_dim"] - 1)
    projection = _projection(2, spec["obs_dim"], spec["n_actions"])

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        t = jnp.where(reset, 0.0, hidden[-1] + 1.0)
        inner, scores = honest(params, hidden[:-1], obs, last_action, avail, agent_index, reset)
        scores = scores + (t >= LATE_STEP) * (teammate(obs) @ projection)
        return jnp.concatenate([inner, t[None]]), scores

    return step


LEAKS = ("in_range", "dead_teammate", "avail_bit", "living", "late")


# ---------------------------------------------------------------------------------------------------------
# Policies as a real export writes them


@pytest.fixture(scope="module")
def env_spec():
    from ctde.envs.smax import SMAXEnv

    return SMAXEnv("3m").spec


def _spec(env_spec, network: str, **changes) -> dict:
    late = network == "test_leak_late"
    return {"network": network, "inputs": ["obs", "last_action", "agent_id"], "hidden_dim": HIDDEN + late,
            "n_agents": env_spec.n_agents, "n_actions": env_spec.n_actions, "obs_dim": env_spec.obs_dim,
            "state_dim": env_spec.state_dim, "continuous_actions": False, "env": ENV, "sight_range": None,
            "episode_limit": env_spec.episode_limit,
            "env_options": {"episode_limit": None, "smac_parity": True, "adversary_policy": "heuristic",
                            "continuous_actions": False, "toy_size": None},
            "paradigm": "ctde", "algo": "qmix", "model": "agent", "seeds": 1, "first_seed": 0, **changes}


def _policy_dir(root: Path, env_spec, network: str, **changes) -> Path:
    spec = _spec(env_spec, network, **changes)
    width = spec["obs_dim"] + spec["n_actions"] + spec["n_agents"]
    params = RNNAgent(HIDDEN, spec["n_actions"]).init(jax.random.PRNGKey(0), jnp.zeros((1, HIDDEN)),
                                                      jnp.zeros((1, 1, width)), jnp.zeros((1, 1), bool))
    directory = root / network / "policy"
    make_policy(spec, jax.tree.map(lambda p: p[None], params)).save(directory)
    return directory


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
    policy = load_policy(_policy_dir(tmp_path, env_spec, f"test_leak_{leak}"))
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
    status, out = _audit(_policy_dir(tmp_path, env_spec, f"test_leak_{leak}"), capsys)
    assert status == 2, out
    assert "FAIL" in out and "change their scores" in out, out
    assert f"episodes of {ENV}" in out


@pytest.mark.parametrize("leak", ("late", "dead_teammate"))
def test_without_the_environment_the_audit_says_so_and_still_catches_leaks(leak, env_spec, tmp_path, capsys):
    """smac:3m is a host environment (SMAC itself), which the audit does not roll out: the verdict says so, and
    random episodes as long as the spec's episode limit, with dead agents, still catch the leaks."""
    directory = _policy_dir(tmp_path, env_spec, f"test_leak_{leak}", env="smac:3m", env_options={})
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
