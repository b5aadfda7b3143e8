"""Attacker leaks (issue 36): policies written as an attacker would, to pass the decentralization audit, and the
audit of each through the command line (`audit_attacker_leaks`).

Unlike `ctde.testing.planted_leaks` (the project's own leaks, each through one code path of an honest export),
these target the audit's former blind spots:

    non-finite        a teammate's observation read behind -inf or NaN masks (plain), or by a communicating
                      receiver whose scores are masked with -inf
    signed zero       a covert bit per message: a 0 sent as -0.0
    structural        a network closing over a global buffer of every agent's observation; a host callback
    realistic-gated   a teammate read only on realistic SMAX 3m inputs: features in [-1, 1], a dead teammate,
                      one bit of a teammate's avail mask, the number of living agents
    late              a teammate read from step `LATE_STEP` on

They are registered networks (`ctde.policy.register_network`, names prefixed `attacker_`, which no network of
the library uses), so `ctde audit DIR` loads them as it would any exported policy once this module is imported.
A registered network's functions see one agent's inputs; to read a teammate, the leaky ones use
`jax.custom_batching.custom_vmap`: on one agent the function is honest, but under `DecentralizedPolicy`'s vmap
over agents its batching rule reads agent i+1's row (`teammate`, `others`).

Each leak has an honest twin (the same network without the leak, or the honest recurrent agent on the same SMAX
spec), which must pass.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from ctde.cli import main as cli_main
from ctde.envs.smax import SMAXEnv
from ctde.nets.rnn import RNNAgent
from ctde.policy import (POLICY_NETWORKS, DecentralizedPolicy, PolicyNetwork, make_policy, own_input,
                         recurrent_agent_step, register_network)

PREFIX = "attacker_"


def _register(name: str):
    """`register_network` under PREFIX + name, refusing a name some other module registered already."""
    full = PREFIX + name

    def wrap(builder):
        existing = POLICY_NETWORKS.get(full)
        if existing is not None and existing.__module__ != __name__:
            raise RuntimeError(f"network name '{full}' is registered already by {existing.__module__}")
        return register_network(full)(builder)

    return wrap


# ---------------------------------------------------------------------------------------------------------
# Non-finite masks, signed zeros and structural leaks: small linear networks on a 3-agent toy spec

N_AGENTS, OBS_DIM, N_ACTIONS, STATE_DIM, BITS = 3, 4, 5, 6, 2
TRIALS = 4  # the hardened leaks' audits: `ctde audit DIR --trials 4`
IN = OBS_DIM + N_AGENTS  # own_input of ["obs", "agent_id"]


def _teammate_obs(obs: jax.Array) -> jax.Array:
    """obs [o] -> [o]: on one agent, its own observation (nothing else is there to read); under a vmap over agents,
    agent i+1's observation (the batching rule rolls the agent axis)."""

    @custom_vmap
    def teammate_row(x):
        return x

    @teammate_row.def_vmap
    def rule(axis_size, in_batched, x):
        (batched,) = in_batched
        return (jnp.roll(x, -1, axis=0) if batched else x), batched

    return teammate_row(obs)


def _masked(scores: jax.Array, avail: jax.Array, fill: str) -> jax.Array:
    """Unavailable actions' scores replaced by -inf or NaN (the common idioms), or kept."""
    values = {"-inf": -jnp.inf, "nan": jnp.nan}
    return scores if fill == "none" else jnp.where(avail, scores, values[fill])


@_register("plain")
def _attacker_plain(spec: dict) -> PolicyNetwork:
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


@_register("comm")
def _attacker_comm(spec: dict) -> PolicyNetwork:
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


GLOBAL_OBS = np.zeros((N_AGENTS, OBS_DIM), np.float32)  # a buffer of every agent's observation, filled elsewhere


@_register("closes_over_global")
def _attacker_closes_over_global(spec: dict) -> PolicyNetwork:
    """A plain network whose builder captures a module-level buffer of all agents' observations [n, o]; agent i
    adds agent i+1's row. The audit's inputs never reach the buffer, so no perturbation moves it: only the
    structural check can see it."""
    buffer = GLOBAL_OBS

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        teammate_row = jnp.asarray(buffer)[(agent_index + 1) % spec["n_agents"]]
        return hidden, x @ params["w"] + params["b"] + 0.5 * teammate_row[0]

    return PolicyNetwork.plain(step)


@_register("callback")
def _attacker_callback(spec: dict) -> PolicyNetwork:
    """A plain network whose step calls back into Python (`jax.pure_callback`), where any array can be read."""

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        extra = jax.pure_callback(lambda v: np.zeros_like(v), jax.ShapeDtypeStruct(obs.shape, obs.dtype), obs,
                                  vmap_method="sequential")
        return hidden, x @ params["w"] + params["b"] + extra[0]

    return PolicyNetwork.plain(step)


PLAIN, COMM, CLOSES_OVER_GLOBAL, CALLBACK = (PREFIX + n for n in ("plain", "comm", "closes_over_global", "callback"))


def toy_spec(network: str, leak: str = "none", mask: str = "-inf", **extra) -> dict:
    """The spec of a 3-agent toy policy of `network` (one of PLAIN, COMM, CLOSES_OVER_GLOBAL, CALLBACK)."""
    return {"network": network, "inputs": ["obs", "agent_id"], "n_agents": N_AGENTS, "obs_dim": OBS_DIM,
            "n_actions": N_ACTIONS, "state_dim": STATE_DIM, "hidden_dim": 0, "seeds": 1, "leak": leak,
            "mask": mask, **extra}


def toy_params(communicating: bool = False) -> dict:
    rng = np.random.default_rng(0)
    if communicating:
        return {"g": jnp.asarray(rng.normal(size=(1, IN, BITS)), jnp.float32),
                "w": jnp.asarray(rng.normal(size=(1, IN + N_AGENTS * BITS, N_ACTIONS)), jnp.float32)}
    return {"w": jnp.asarray(rng.normal(size=(1, IN, N_ACTIONS)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(1, N_ACTIONS)), jnp.float32)}


def plain_policy(leak: str = "none", mask: str = "-inf") -> DecentralizedPolicy:
    return make_policy(toy_spec(PLAIN, leak, mask), toy_params())


def comm_policy(leak: str = "none") -> DecentralizedPolicy:
    return make_policy(toy_spec(COMM, leak, message_bits=BITS), toy_params(communicating=True))


def closes_over_global_policy() -> DecentralizedPolicy:
    return make_policy(toy_spec(CLOSES_OVER_GLOBAL), toy_params())


def callback_policy() -> DecentralizedPolicy:
    return make_policy(toy_spec(CALLBACK), toy_params())


# ---------------------------------------------------------------------------------------------------------
# Realistic-gated and late leaks: the honest recurrent agent on SMAX 3m, plus a leak

ENV = "smax:3m"
HIDDEN = 16
LATE_STEP = 20  # the late leak's first step: after the recorded episodes of a trained 3m policy (13-14 steps)


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
    """A network builder: the honest recurrent agent's step, plus `leak(spec, obs, avail, scores)` -> scores."""

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
    _register(_name)(_leaky(_leak))


@_register("late")
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


REALISTIC_LEAKS = ("in_range", "dead_teammate", "avail_bit", "living", "late")


def realistic_network(leak: str) -> str:
    """The registered network name of a realistic-gated or late leak ("in_range", ..., "late")."""
    return PREFIX + leak


def smax_env_spec():
    return SMAXEnv("3m").spec


def smax_spec(env_spec, network: str, **changes) -> dict:
    """A spec as a real export of QMIX on SMAX 3m writes it, with `network` (the late leak's hidden state has one
    more entry: its step counter)."""
    late = network == realistic_network("late")
    return {"network": network, "inputs": ["obs", "last_action", "agent_id"], "hidden_dim": HIDDEN + late,
            "n_agents": env_spec.n_agents, "n_actions": env_spec.n_actions, "obs_dim": env_spec.obs_dim,
            "state_dim": env_spec.state_dim, "continuous_actions": False, "env": ENV, "sight_range": None,
            "episode_limit": env_spec.episode_limit,
            "env_options": {"episode_limit": None, "smac_parity": True, "adversary_policy": "heuristic",
                            "continuous_actions": False, "toy_size": None},
            "paradigm": "ctde", "algo": "qmix", "model": "agent", "seeds": 1, "first_seed": 0, **changes}


def smax_policy_dir(root: Path, env_spec, network: str, **changes) -> Path:
    """Save a SMAX 3m policy of `network` ("rnn_agent" for the honest twin) with the recurrent agent's parameters
    under root/network/policy; returns that folder."""
    spec = smax_spec(env_spec, network, **changes)
    width = spec["obs_dim"] + spec["n_actions"] + spec["n_agents"]
    params = RNNAgent(HIDDEN, spec["n_actions"]).init(jax.random.PRNGKey(0), jnp.zeros((1, HIDDEN)),
                                                      jnp.zeros((1, 1, width)), jnp.zeros((1, 1), bool))
    directory = Path(root) / network / "policy"
    make_policy(spec, jax.tree.map(lambda p: p[None], params)).save(directory)
    return directory


# ---------------------------------------------------------------------------------------------------------
# The catalogue and its audit through the command line


@dataclass(frozen=True)
class AttackerLeak:
    name: str
    leak_class: str  # non-finite, signed zero, structural, realistic-gated, late
    description: str
    build: Callable[[Path, object], Path]  # (folder, SMAX env spec or None) -> the saved policy's folder
    twin: str  # the honest twin's name in TWINS
    expect: tuple[str, ...]  # text the failed audit's output must hold, besides "FAIL"
    flags: tuple[str, ...] = ()  # extra `ctde audit` options


def _saved(make: Callable[[], DecentralizedPolicy]) -> Callable[[Path, object], Path]:
    def build(root: Path, env_spec) -> Path:
        make().save(root)
        return root

    return build


def _smax(network: str) -> Callable[[Path, object], Path]:
    return lambda root, env_spec: smax_policy_dir(root, env_spec, network)


_TOY = ("--trials", str(TRIALS))
_MOVES = ("change their scores", "not decentralized")

ATTACKER_LEAKS = {leak.name: leak for leak in [
    AttackerLeak("scores_behind_inf_mask", "non-finite", "a teammate's first feature added to every score, "
                 "unavailable actions masked with -inf", _saved(lambda: plain_policy("scores")), "plain_inf_mask",
                 _MOVES, _TOY),
    AttackerLeak("where_inf", "non-finite", "an unavailable action scores -inf or -1e9 as a teammate's first "
                 "feature is positive or not", _saved(lambda: plain_policy("where_inf")), "plain_inf_mask",
                 _MOVES, _TOY),
    AttackerLeak("where_nan", "non-finite", "an unavailable action scores NaN or -inf as a teammate's first "
                 "feature is positive or not", _saved(lambda: plain_policy("nan")), "plain_nan_mask", _MOVES, _TOY),
    AttackerLeak("receiver_behind_inf_mask", "non-finite", "a communicating receiver reads a teammate's "
                 "observation outside the messages, scores masked with -inf", _saved(lambda: comm_policy("receiver")),
                 "comm", ("with every message held fixed", "change their scores"), _TOY),
    AttackerLeak("signed_zero_message", "signed zero", "a 0 bit sent as -0.0 by the sign of the sender's own last "
                 "feature: a covert bit per message entry", _saved(lambda: comm_policy("signed_zero")), "comm",
                 ("other than exactly 0 or 1 (by bit pattern",), _TOY),
    AttackerLeak("closes_over_global", "structural", "the network closes over a buffer of every agent's "
                 "observation [n, o]", _saved(closes_over_global_policy), "plain_inf_mask",
                 ("FAIL (structural)", "agent axis"), _TOY),
    AttackerLeak("host_callback", "structural", "the step calls back into Python (jax.pure_callback)",
                 _saved(callback_policy), "plain_inf_mask", ("FAIL (structural)", "pure_callback"), _TOY),
    AttackerLeak("in_range", "realistic-gated", "a teammate's observation read only when every feature lies in "
                 "[-1, 1]", _smax(realistic_network("in_range")), "smax_rnn_agent", _MOVES),
    AttackerLeak("dead_teammate", "realistic-gated", "reads whether a teammate is dead (its observation all 0)",
                 _smax(realistic_network("dead_teammate")), "smax_rnn_agent", _MOVES),
    AttackerLeak("avail_bit", "realistic-gated", "reads a teammate's avail[0] (always true in the former random "
                 "masks)", _smax(realistic_network("avail_bit")), "smax_rnn_agent", _MOVES),
    AttackerLeak("living", "realistic-gated", "scales its scores by the number of living agents",
                 _smax(realistic_network("living")), "smax_rnn_agent", _MOVES),
    AttackerLeak("late", "late", f"a teammate's observation read from step {LATE_STEP} on",
                 _smax(realistic_network("late")), "smax_rnn_agent", _MOVES),
]}

# The honest twins: (build, flags).
TWINS = {
    "plain_inf_mask": (_saved(lambda: plain_policy()), _TOY),
    "plain_nan_mask": (_saved(lambda: plain_policy(mask="nan")), _TOY),
    "comm": (_saved(lambda: comm_policy()), _TOY),
    "smax_rnn_agent": (_smax("rnn_agent"), ()),
}


@contextlib.contextmanager
def _callers_compile_cache():
    """`ctde audit` points JAX's persistent cache at CTDE_COMPILE_CACHE (default ~/.cache/ctde/jax): where the
    caller has a cache folder already (a test session's), keep it."""
    previous = os.environ.get("CTDE_COMPILE_CACHE")
    current = jax.config.jax_compilation_cache_dir
    if current:
        os.environ["CTDE_COMPILE_CACHE"] = str(current)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("CTDE_COMPILE_CACHE", None)
        else:
            os.environ["CTDE_COMPILE_CACHE"] = previous


def cli_audit(directory: Path, *flags: str) -> tuple[int, str]:
    """`ctde audit DIRECTORY FLAGS...` in this process (so that this module's networks are registered): (exit
    status, stdout and stderr). An exception escaping `main` is formatted as the traceback a process prints."""
    out = io.StringIO()
    with _callers_compile_cache(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            status = cli_main(["audit", str(directory), *flags])
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except Exception:  # noqa: BLE001 - reported as a process would, the campaign goes on
            traceback.print_exc(file=out)
            status = 1
    return (0 if status is None else int(status)), out.getvalue()


def _verdict(output: str) -> str:
    """The audit's verdict line (the one starting PASS or FAIL), on one line, at most 600 characters."""
    line = next((line.strip() for line in output.splitlines() if line.strip().startswith(("PASS", "FAIL"))),
                output.strip().splitlines()[-1] if output.strip() else "")
    return line if len(line) <= 600 else line[:597] + "..."


def audit_attacker_leaks(leaks: list[str] | None = None, root: Path | None = None) -> list[dict]:
    """Save every attacker leak (or those named in `leaks`) as a policy folder and run `ctde audit DIR` on it, and
    on each one's honest twin (once per twin).

    Returns one row per leak: {"leak", "class", "description", "exit_status", "expected" (the text the output
    must hold), "caught" (exit status 2, "FAIL" and every expected text in the output, no traceback), "traceback",
    "behavioural_fail" and "structural_fail" (which of the audit's verdicts failed), "verdict" (the audit's verdict
    line), "output", "seconds" (save and audit), "twin", "twin_exit_status",
    "twin_passed" (exit 0 and "PASS"), "twin_seconds"}."""
    names = list(leaks or ATTACKER_LEAKS)
    env_spec = smax_env_spec() if any(ATTACKER_LEAKS[n].twin == "smax_rnn_agent" for n in names) else None
    with contextlib.ExitStack() as stack:
        base = Path(root) if root is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        twins: dict[str, dict] = {}
        rows = []
        for name in names:
            leak = ATTACKER_LEAKS[name]
            if leak.twin not in twins:
                build, flags = TWINS[leak.twin]
                tic = time.perf_counter()
                status, output = cli_audit(build(base / "twins" / leak.twin, env_spec), *flags)
                twins[leak.twin] = {"twin": leak.twin, "twin_exit_status": status,
                                    "twin_passed": status == 0 and "PASS" in output,
                                    "twin_verdict": _verdict(output), "twin_seconds": time.perf_counter() - tic}
            tic = time.perf_counter()
            status, output = cli_audit(leak.build(base / "leaks" / name, env_spec), *leak.flags)
            seconds = time.perf_counter() - tic
            has_traceback = "Traceback" in output
            rows.append({"leak": name, "class": leak.leak_class, "description": leak.description,
                         "exit_status": status, "expected": list(leak.expect),
                         "caught": status == 2 and "FAIL" in output and not has_traceback
                         and all(text in output for text in leak.expect),
                         "traceback": has_traceback,
                         "behavioural_fail": "Behavioural: FAIL" in output or _verdict(output).startswith("FAIL:"),
                         "structural_fail": "FAIL (structural)" in output,
                         "verdict": _verdict(output), "output": output,
                         "seconds": seconds, **twins[leak.twin]})
    return rows
