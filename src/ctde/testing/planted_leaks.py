"""Planted leaks: policies that are not decentralized, each leaking through its own code path, to measure the
decentralization audit (`ctde.audit.audit_policy`) against; and the audit of every real exported policy.

A planted leak takes an honest exported policy (a `DecentralizedPolicy` from a paradigm's `export`) and returns
a policy that still runs through `audit_policy` (a subclass overriding one method, or a registered network) but
lets agent i read something it must not: another agent's observation, last action or hidden state, or the global
state. The audit must catch every one (`audit_planted_leaks`) and pass every real exported policy of every
paradigm x backbone combination that `ctde.training.resolve.resolve` accepts (`audit_real_policies`).

Where each leak is planted (the paths through which a policy's agents act):

    receive           the receivers of every agent (plain policy: its whole step after the 0-bit messages)
    unroll            the whole-episode scores, the one path that is offered the global state
    step              one step of all agents: send, then receive (what `act` calls)
    act               execution's greedy choice from the step's scores (what the rollout calls)
    messages          every agent's k-bit message (communicating policies)
    network           a registered `PolicyNetwork`, or a paradigm's centralized network wrapped as the policy

Combinations are triples of strings (paradigm, backbone, env). Each string is the option's value, optionally
followed by more `key=value` overrides of that variant, space-separated: ("ctde", "qmix
algo.share_parameters=false", "toy:hallway") is CTDE with one network per agent, and ("ctedd", "maddpg",
"mpe:simple_tag env.continuous_actions=true") CTEDD with continuous actions (`combination_overrides`).
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from ctde.algos import BACKBONES
from ctde.config import build_config
from ctde.errors import ConfigError, IncompatibleError
from ctde.nets.actions import masked_argmax
from ctde.nets.cadp import CADPAgent
from ctde.nets.ptde import PersonalizedGlobalInfo, QHead, Trunk
from ctde.paradigms import PARADIGMS
from ctde.audit import ACTION_PATHS, AuditReport, audit_policy
from ctde.policy import DecentralizedPolicy, PolicyNetwork, build_network, own_input, register_network
from ctde.training.resolve import resolve
from ctde.training.runner import build_program, export, seed_keys

Combination = tuple[str, str, str]  # (paradigm, backbone, env), each optionally followed by overrides

OWN_SENSITIVITY_FLOOR = 1e-4  # a policy whose scores move less than this with its own inputs passes vacuously
LEAK_TOLERANCE = 1e-5  # the audit's default relative tolerance (`audit_scores_fn`)


# ---------------------------------------------------------------------------------------------------------
# Helpers


def _projection(seed: int, rows: int, cols: int, scale: float = 1.0) -> jnp.ndarray:
    """A fixed random matrix [rows, cols] with unit-variance outputs for unit-variance inputs: how a leak reads a
    feature vector, as a network's layer would."""
    rng = np.random.default_rng(seed)
    return jnp.asarray(scale * rng.normal(size=(rows, cols)) / np.sqrt(rows), jnp.float32)


def _teammate(x: jax.Array) -> jax.Array:
    """Row i of x [n, ...] replaced by agent (i + 1) mod n's row: what agent i reads when it reads a teammate."""
    return jnp.roll(x, -1, axis=0)


def _own_inputs(spec: dict, obs: jax.Array, last_action: jax.Array, avail: jax.Array) -> jax.Array:
    """Every agent's own input vector (`ctde.policy.own_input`), obs [n, o] ... -> [n, in]."""
    agents = jnp.arange(spec["n_agents"])
    return jax.vmap(lambda o, la, av, i: own_input(spec, o, la, av, i))(obs, last_action, avail, agents)


def _like(policy: DecentralizedPolicy, cls: type, spec: dict | None = None, params: Any = None,
          **fields: Any) -> DecentralizedPolicy:
    """`policy` as an instance of the leaky subclass `cls` (same spec and parameters unless given)."""
    return cls(spec=dict(policy.spec if spec is None else spec), params=policy.params if params is None else params,
               **fields)


def _per_seed(policy: DecentralizedPolicy, init: Callable[[jax.Array], Any], seed: int = 1) -> Any:
    """`init(key)` for every seed of `policy`, stacked on a leading seed axis like its parameters."""
    keys = jax.random.split(jax.random.PRNGKey(seed), policy.n_seeds)
    return jax.vmap(init)(keys)


def _score_scale(policy: DecentralizedPolicy) -> float:
    """The largest |score| of seed 0's `unroll` on one random episode: what a relative leak is relative to."""
    spec = policy.spec
    rng = np.random.default_rng(0)
    steps, n = 12, spec["n_agents"]
    obs = rng.normal(size=(steps, n, spec["obs_dim"])).astype(np.float32)
    last_action = rng.integers(-1, spec["n_actions"], size=(steps, n)).astype(np.int32)
    avail = np.ones((steps, n, spec["n_actions"]), bool)
    return float(np.abs(np.asarray(policy.unroll(policy.seed_params(0), obs, last_action, avail))).max())


# ---------------------------------------------------------------------------------------------------------
# The leaky policies


class ReceiverReadsTeammateObs(DecentralizedPolicy):
    """(1) `receive`: agent i's scores add a projection of agent i+1's observation, obs[(i + 1) mod n] [o] ->
    [A], as a receiver that indexes the stacked observations [n, o] with the wrong agent would."""

    def receive(self, params, hidden, obs, last_action, avail, reset, messages):
        hidden, scores = super().receive(params, hidden, obs, last_action, avail, reset, messages)
        leak = _teammate(obs) @ _projection(1, obs.shape[-1], scores.shape[-1], 0.5)
        return hidden, scores + leak


class UnrollReadsState(DecentralizedPolicy):
    """(2) `unroll`: every agent's scores add a projection of the global state, state [T, s] -> [T, 1, A]. The
    whole-episode path is the only one offered the state; this override takes it."""

    def unroll(self, params, obs, last_action, avail, state=None, messages=None):
        scores = super().unroll(params, obs, last_action, avail, state, messages)
        if state is None:
            return scores
        return scores + (state @ _projection(2, state.shape[-1], scores.shape[-1], 0.5))[:, None, :]


class StepMixesTeammateHidden(DecentralizedPolicy):
    """(3) `step`: before acting, agent i's recurrent state becomes h_i + 0.5 h_{i+1}, hidden [n, H], so from the
    second step on agent i acts on agent i+1's history (at the first step every state is zero and reset)."""

    def step(self, params, hidden, obs, last_action, avail, reset):
        return super().step(params, hidden + 0.5 * _teammate(hidden), obs, last_action, avail, reset)


class MessagesCarryTeammateAction(DecentralizedPolicy):
    """(4) `messages`, of a communicating policy: agent j's k bits are the low bits of agent j+1's last action
    (last_action + 1, so that "none" is 0), messages [n, k] of exact 0/1 entries. The messages have the declared
    shape and are binary, and the receivers are the honest ones, so only the check that every message is a
    function of its sender's own inputs can catch it."""

    def messages(self, params, obs, last_action, avail):
        honest = DecentralizedPolicy.messages(self, params, obs, last_action, avail)  # (also called by (11))
        code = _teammate(last_action.astype(jnp.int32)) + 1  # [n]
        bits = (code[:, None] >> jnp.arange(honest.shape[-1])) & 1
        return bits.astype(honest.dtype)


class ActPoolsScoresOverAgents(DecentralizedPolicy):
    """(5a) `act`: the scores are standardized with the mean and standard deviation over axis 0, which is the
    agent axis ([n, A]; the per-agent normalization meant axis -1), before the greedy choice: a batch-norm across
    agents. `step` and `unroll` stay honest; only the actions that execution takes leak."""

    def act(self, params, hidden, obs, last_action, avail, reset):
        hidden, scores = self.step(params, hidden, obs, last_action, avail, reset)
        pooled = (scores - scores.mean(axis=0)) / (scores.std(axis=0) + 1e-6)
        if self.spec.get("continuous_actions", False):
            return hidden, jnp.tanh(pooled)
        return hidden, masked_argmax(pooled, avail)


@register_network("planted_mean_pool")
def _planted_mean_pool(spec: dict) -> PolicyNetwork:
    """(5b) a registered network: each agent sends a real-valued embedding tanh(x_j W) [pool_dim] of its own input
    and every receiver adds a projection of their mean over all agents, [n, pool_dim] -> [pool_dim] -> [A], to
    the honest `spec["pooled_network"]`'s scores: mean pooling over agents, as an attention or a set encoder would
    do. The senders read only their own inputs and, with the messages held fixed, so do the receivers; only the
    check that messages are `message_bits` binary entries can catch it."""
    honest = build_network({**spec, "network": spec["pooled_network"]})
    width = int(spec["pool_dim"])

    def sender(params, obs, last_action, avail, agent_index):
        x = own_input(spec, obs, last_action, avail, agent_index)
        return jnp.tanh(x @ _projection(5, x.shape[-1], width))

    def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
        hidden, scores = honest.receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages)
        return hidden, scores + messages.mean(axis=0) @ _projection(6, width, scores.shape[-1], 0.5)

    return PolicyNetwork(receiver=receiver, sender=sender, bits=int(spec["message_bits"]))


class CADPCentralizedExported(DecentralizedPolicy):
    """(6a) network: CADP's centralized model C exported in place of D. `receive` runs `CADPAgent.__call__` on all
    agents' input vectors at once, xs [1, n, in], in which agent i's advice z_i = sum_j c_ij v_j mixes every
    agent's value vector by attention, and returns C's scores. The parameters carry the query and key weights
    that D's export prunes (`with_centralized_cadp` puts them back)."""

    def _network_module(self) -> CADPAgent:
        s = self.spec
        return CADPAgent(s["hidden_dim"], s["n_actions"], s["heads"], s["head_dim"], s["residual"])

    def receive(self, params, hidden, obs, last_action, avail, reset, messages):
        xs = _own_inputs(self.spec, obs, last_action, avail)[None]  # [1, n, in]
        resets = jnp.broadcast_to(reset, (1, self.spec["n_agents"]))
        carry, scores, _ = self._network_module().apply(params, hidden, xs, resets)
        return carry, scores["centralized"][0]


def with_centralized_cadp(policy: DecentralizedPolicy) -> DecentralizedPolicy:
    """(6a) An exported CADP D policy (`cadp_decentralized`, non-residual) as the centralized model C: its
    parameters plus freshly initialized query and key weights, one set per seed."""
    spec = policy.spec
    if spec["network"] != "cadp_decentralized" or spec["residual"]:
        raise ValueError("with_centralized_cadp needs a non-residual cadp_decentralized policy.")
    n = spec["n_agents"]
    network = CADPAgent(spec["hidden_dim"], spec["n_actions"], spec["heads"], spec["head_dim"], False)
    x = jnp.zeros((1, n, spec["obs_dim"] + spec["n_actions"] + n))
    full = _per_seed(policy, lambda key: network.init(key, jnp.zeros((n, spec["hidden_dim"])), x,
                                                      jnp.zeros((1, n), bool)))
    params = {**policy.params, "params": {**policy.params["params"],
                                          "query": full["params"]["query"], "key": full["params"]["key"]}}
    return _like(policy, CADPCentralizedExported, params=params)


class PTDETeacherExported(DecentralizedPolicy):
    """(6b) network: PTDE's teacher exported in place of the student. `unroll` computes z_i from the global state
    through the GIP hyper-network (`PersonalizedGlobalInfo`: weights from x_i, applied to the state) and feeds
    its mean to the same trunk and head, scores [T, n, A]; the student is never called."""

    def unroll(self, params, obs, last_action, avail, state=None, messages=None):
        if state is None:
            return super().unroll(params, obs, last_action, avail, state, messages)
        s = self.spec
        xs = jax.vmap(functools.partial(_own_inputs, s))(obs, last_action, avail)  # [T, n, in]
        resets = jnp.broadcast_to((jnp.arange(obs.shape[0]) == 0)[:, None], xs.shape[:2])
        _, h = Trunk(s["hidden_dim"]).apply(params["trunk"], jnp.zeros((s["n_agents"], s["hidden_dim"])), xs,
                                            resets)
        gip = PersonalizedGlobalInfo(s["state_dim"], s["z_dim"], s["hypernet_hidden"])
        mu, _ = gip.apply(params["global_info"], xs, state)
        return QHead(s["hidden_dim"], s["n_actions"]).apply(params["head"], h, mu)


def with_ptde_teacher(policy: DecentralizedPolicy, hypernet_hidden: int = 64) -> DecentralizedPolicy:
    """(6b) An exported PTDE student policy (`ptde_student`) as the teacher: its trunk and head plus freshly
    initialized GIP parameters (`ptde.hypernet_hidden` = 64 by default), one set per seed."""
    spec = {**policy.spec, "hypernet_hidden": hypernet_hidden}
    if spec["network"] != "ptde_student":
        raise ValueError("with_ptde_teacher needs a ptde_student policy.")
    n = spec["n_agents"]
    gip = PersonalizedGlobalInfo(spec["state_dim"], spec["z_dim"], hypernet_hidden)
    x = jnp.zeros((1, n, spec["obs_dim"] + spec["n_actions"] + n))
    global_info = _per_seed(policy, lambda key: gip.init(key, x, jnp.zeros((1, spec["state_dim"]))))
    return _like(policy, PTDETeacherExported, spec=spec, params={**policy.params, "global_info": global_info})


@dataclass
class LateLeakAgentZero(DecentralizedPolicy):
    """(7) `unroll`, partial: only agent 0 and only at steps t > `after` (3) adds a projection of agent 1's
    observation, obs[t, 1] [o] -> [A]. Every other agent, and agent 0 up to step `after`, is honest."""

    after: int = 3

    def unroll(self, params, obs, last_action, avail, state=None, messages=None):
        scores = super().unroll(params, obs, last_action, avail, state, messages)
        late = (jnp.arange(obs.shape[0]) > self.after)[:, None]
        leak = obs[:, 1] @ _projection(7, obs.shape[-1], scores.shape[-1], 0.5)  # [T, A]
        return scores.at[:, 0].add(jnp.where(late, leak, 0.0))


@dataclass
class TinyTeammateActionStep(DecentralizedPolicy):
    """(8) `step`, tiny: agent i's scores add `strength` x tanh(a projection of onehot(agent i+1's last action))
    [A], with `strength` = 1e-3 x the honest policy's largest |score| (`tiny_leak`): a relative influence of
    about 1e-3, a hundred times the audit's tolerance."""

    strength: float = 0.0

    def step(self, params, hidden, obs, last_action, avail, reset):
        hidden, scores = super().step(params, hidden, obs, last_action, avail, reset)
        previous = jax.nn.one_hot(_teammate(last_action) + 1, self.spec["n_actions"] + 1)  # "none" is class 0
        leak = jnp.tanh(previous @ _projection(8, previous.shape[-1], scores.shape[-1], 3.0))
        return hidden, scores + self.strength * leak


def tiny_leak(policy: DecentralizedPolicy, relative: float = 1e-3) -> DecentralizedPolicy:
    """(8) `policy` with a teammate's last action leaking at `relative` x its largest |score|."""
    return _like(policy, TinyTeammateActionStep, strength=relative * _score_scale(policy))


class CommunicatingStepReadsTeammateObs(DecentralizedPolicy):
    """(9) `step`, of a communicating policy: after sending and receiving, agent i's scores add a projection of
    agent i+1's observation. `messages` and `receive`, the halves the message audit holds apart, are honest; the
    leak is in the step that composes them, which execution runs."""

    def step(self, params, hidden, obs, last_action, avail, reset):
        hidden, scores = super().step(params, hidden, obs, last_action, avail, reset)
        return hidden, scores + _teammate(obs) @ _projection(9, obs.shape[-1], scores.shape[-1], 0.5)


class StepLeaksBehindHonestUnroll(DecentralizedPolicy):
    """(10) `step` behind an honest `unroll`: a whole-episode `unroll` that runs the network's own receivers
    step by step (honest), and a per-step `step`, the one execution runs, that also reads agent i+1's
    observation. An audit that trusted `unroll` to speak for execution would pass it."""

    def unroll(self, params, obs, last_action, avail, state=None, messages=None):
        def body(hidden, inputs):
            t, o, la, av = inputs
            empty = jnp.zeros((self.spec["n_agents"], 0), o.dtype)
            return DecentralizedPolicy.receive(self, params, hidden, o, la, av, t == 0, empty)

        steps = jnp.arange(obs.shape[0])
        return jax.lax.scan(body, self.initial_hidden(), (steps, obs, last_action, avail))[1]

    def step(self, params, hidden, obs, last_action, avail, reset):
        hidden, scores = super().step(params, hidden, obs, last_action, avail, reset)
        return hidden, scores + _teammate(obs) @ _projection(10, obs.shape[-1], scores.shape[-1], 0.5)


class MessagesLeakBehindHonestEpisodeMessages(DecentralizedPolicy):
    """(11) `messages` behind an honest `episode_messages`: the whole-episode messages are the senders' honest
    bits, while the per-step `messages`, the ones execution sends, carry agent j+1's last action as in (4)."""

    def episode_messages(self, params, obs, last_action, avail, state=None):
        honest = lambda o, la, av: DecentralizedPolicy.messages(self, params, o, la, av)  # noqa: E731
        return jax.vmap(honest)(obs, last_action, avail)

    def messages(self, params, obs, last_action, avail):
        return MessagesCarryTeammateAction.messages(self, params, obs, last_action, avail)


@dataclass(frozen=True)
class PlantedLeak:
    """One planted leak: its name, what agent i reads that it must not, where the leak is planted, which honest
    exported network it starts from (`base`: a key of `LEAK_BASES`), and `build(honest) -> leaky policy`. A
    `PlantedLeak` is itself that builder: `PLANTED_LEAKS[name](honest)`."""

    name: str
    reads: str
    code_path: str
    base: str
    build: Callable[[DecentralizedPolicy], DecentralizedPolicy]

    def __call__(self, policy: DecentralizedPolicy) -> DecentralizedPolicy:
        return self.build(policy)


def _as(cls: type) -> Callable[[DecentralizedPolicy], DecentralizedPolicy]:
    return lambda policy: _like(policy, cls)


def _mean_pool_network(policy: DecentralizedPolicy) -> DecentralizedPolicy:
    spec = {**policy.spec, "network": "planted_mean_pool", "pooled_network": policy.spec["network"],
            "pool_dim": 8, "message_bits": 1}
    return DecentralizedPolicy(spec=spec, params=policy.params)


_LEAKS = [
    PlantedLeak("receiver_reads_teammate_obs", "agent i+1's observation", "receive", "rnn_agent",
                _as(ReceiverReadsTeammateObs)),
    PlantedLeak("unroll_reads_global_state", "the global state", "unroll", "rnn_agent", _as(UnrollReadsState)),
    PlantedLeak("step_mixes_teammate_hidden", "agent i+1's recurrent hidden state", "step", "rnn_agent",
                _as(StepMixesTeammateHidden)),
    PlantedLeak("messages_carry_teammate_action", "agent j+1's last action, as exact bits in agent j's message",
                "messages (communicating)", "ctedd_local", _as(MessagesCarryTeammateAction)),
    PlantedLeak("act_pools_scores_over_agents", "every agent's scores (mean and std over the agent axis)", "act",
                "rnn_agent", _as(ActPoolsScoresOverAgents)),
    PlantedLeak("network_mean_pools_messages", "the mean of every agent's real-valued embedding",
                "network (registered planted_mean_pool; real-valued messages)", "rnn_agent", _mean_pool_network),
    PlantedLeak("cadp_centralized_exported", "every agent's input, by attention (CADP's model C)",
                "network (CADPAgent.__call__ wrapped as receive)", "cadp_decentralized", with_centralized_cadp),
    PlantedLeak("ptde_teacher_exported", "the global state, through the GIP hyper-network (PTDE's teacher)",
                "network (PTDE teacher in unroll)", "ptde_student", with_ptde_teacher),
    PlantedLeak("late_leak_agent_zero", "agent 1's observation, by agent 0 only, at steps t > 3 only",
                "unroll (partial)", "rnn_agent", _as(LateLeakAgentZero)),
    PlantedLeak("tiny_teammate_action", "agent i+1's last action, at 1e-3 of the score scale", "step (tiny)",
                "rnn_agent", tiny_leak),
    PlantedLeak("communicating_step_reads_teammate_obs", "agent i+1's observation, outside the messages",
                "step (communicating)", "ctedd_local", _as(CommunicatingStepReadsTeammateObs)),
    PlantedLeak("step_leaks_behind_honest_unroll", "agent i+1's observation, in step only", "step (unroll honest)",
                "rnn_agent", _as(StepLeaksBehindHonestUnroll)),
    PlantedLeak("messages_leak_behind_honest_episode_messages", "agent j+1's last action, in messages only",
                "messages (episode_messages honest)", "ctedd_local", _as(MessagesLeakBehindHonestEpisodeMessages)),
]
PLANTED_LEAKS: dict[str, PlantedLeak] = {leak.name: leak for leak in _LEAKS}

# The honest exported networks the leaks start from: (paradigm, backbone, env) on SMAX 3m (3 agents, so that
# "agent i+1" differs from "every other agent").
LEAK_BASES: dict[str, Combination] = {
    "rnn_agent": ("ctde", "qmix", "smax:3m"),
    "ctedd_local": ("ctedd ctedd.message_bits=3", "maddpg", "smax:3m"),
    "cadp_decentralized": ("cadp", "qmix", "smax:3m"),
    "ptde_student": ("ptde", "qmix", "smax:3m"),
}


# ---------------------------------------------------------------------------------------------------------
# Building exported policies


def combination_overrides(combination: Combination) -> list[str]:
    """The `key=value` overrides of a combination: paradigm=..., algo=..., env=..., then any extras."""
    paradigm, backbone, env = (part.split() for part in combination)
    return [f"paradigm={paradigm[0]}", f"algo={backbone[0]}", f"env={env[0]}", *paradigm[1:], *backbone[1:],
            *env[1:]]


def _program(combination: Combination, seeds: int):
    return build_program(resolve(build_config([*combination_overrides(combination), f"seeds={seeds}"])))


def _export(program, agent_params: Any) -> DecentralizedPolicy:
    """The run's own export path (`ctde.training.runner.export`), into a directory that is thrown away."""
    with tempfile.TemporaryDirectory() as run_dir:
        return export(run_dir, program=program, agent_params=agent_params)


def real_policy(combination: Combination, seeds: int = 2) -> DecentralizedPolicy:
    """The exported policy of `combination` as a run would export it right after initialization: the program's
    `init` for `seeds` seeds (`ctde.training.runner.seed_keys`), the backbone's agent parameters, then
    `ctde.training.runner.export`. (PTDE's and CTEDD's students are the same networks after distillation.)"""
    program = _program(combination, seeds)
    state = program.init(seed_keys(program.config))
    return _export(program, program.backbone.agent_params(state.learner))


@functools.lru_cache(maxsize=None)
def honest_base(network: str, seeds: int = 2) -> DecentralizedPolicy:
    """The honest exported policy a leak starts from (`LEAK_BASES[network]`), from the paradigm's own `init` per
    seed (cheaper than the whole program's, and the same network) through the run's export path."""
    program = _program(LEAK_BASES[network], seeds)
    params = jax.vmap(program.paradigm.init)(seed_keys(program.config))
    policy = _export(program, params)
    assert policy.spec["network"] == network, (policy.spec["network"], network)
    return policy


# ---------------------------------------------------------------------------------------------------------
# Audits


def caught_by(report: AuditReport, tolerance: float = LEAK_TOLERANCE) -> list[str]:
    """Which checks of a report failed: plain policies name the probed paths that moved ("unroll", "step",
    "act"); communicating ones name the checks: "senders" (i, with the message paths), "receivers" (ii),
    "binary" (iii), "execution" (iv, with its paths)."""
    if report.messages is None:
        return [f"scores: {path}" for path, worst in report.paths.items() if worst > tolerance]
    checks = []
    if report.messages.max_deviation > tolerance:
        moved = [p for p, worst in report.messages.paths.items() if worst > tolerance]
        checks.append(f"senders ({', '.join(moved)})")
    receivers = [p for p, worst in report.paths.items() if p not in ACTION_PATHS and worst > tolerance]
    if receivers:
        checks.append(f"receivers ({', '.join(receivers)})")
    if not report.messages.binary:
        checks.append("binary")
    execution = [p for p, worst in report.paths.items() if p in ACTION_PATHS and worst > tolerance]
    if execution:
        checks.append(f"execution ({', '.join(execution)})")
    return checks


def _worst_deviation(report: AuditReport) -> float:
    """The largest change any check saw: the receivers' and, for a communicating policy, the messages'."""
    return max(report.max_deviation, report.messages.max_deviation if report.messages is not None else 0.0)


def audit_planted_leaks(trials: int = 8, leaks: list[str] | None = None) -> list[dict]:
    """Build every planted leak (or those named in `leaks`) from its honest base and audit it on random episodes.

    Returns one row per leak: {"leak", "reads", "code_path", "caught" (the audit failed), "max_deviation" (the
    largest relative change any check saw; 0 for a leak caught by the binary check alone), "caught_by" (see
    `caught_by`), "message" (the audit's), "seconds" (build and audit)}."""
    rows = []
    for name in leaks or list(PLANTED_LEAKS):
        leak = PLANTED_LEAKS[name]
        tic = time.perf_counter()
        report = audit_policy(leak(honest_base(leak.base)), trials=trials)
        rows.append({"leak": leak.name, "reads": leak.reads, "code_path": leak.code_path,
                     "caught": not report.passed, "max_deviation": _worst_deviation(report),
                     "caught_by": ", ".join(caught_by(report)), "message": report.message,
                     "seconds": time.perf_counter() - tic})
    return rows


# The registries' names (`ctde.paradigms.PARADIGMS`, `ctde.algos.BACKBONES`), read when called: a paradigm
# registered later (a test's own) is in the matrix too.
def paradigm_names() -> tuple[str, ...]:
    return tuple(PARADIGMS)


def backbone_names() -> tuple[str, ...]:
    return tuple(BACKBONES)


# Smallest first: toy:hallway (2 agents) has a state and the full_obs view IGM-DA and CTDS need.
ENV_CANDIDATES = ("toy:hallway", "mpe:simple_tag", "smax:3m")
# Where backbones that act in continuous spaces (MADDPG) also run: their home (MPE), and continuous actions (tanh
# actors) on toy:target_sum and on MPE.
CONTINUOUS_CAPABLE_ENVS = ("mpe:simple_tag", "toy:target_sum", "mpe:simple_tag env.continuous_actions=true")


def variants() -> list[Combination]:
    """Combinations beyond one environment per paradigm x backbone (`resolve` may refuse some): one network per
    agent for the paradigms that declare `per_agent_networks`, on every backbone; every paradigm on the backbones
    with continuous actions, on `CONTINUOUS_CAPABLE_ENVS`."""
    per_agent = [(paradigm, f"{backbone} algo.share_parameters=false", "toy:hallway")
                 for paradigm in paradigm_names() if PARADIGMS[paradigm].per_agent_networks
                 for backbone in backbone_names()]
    continuous = [backbone for backbone in backbone_names() if BACKBONES[backbone].capabilities.continuous_actions]
    return per_agent + [(paradigm, backbone, env) for env in CONTINUOUS_CAPABLE_ENVS for backbone in continuous
                        for paradigm in paradigm_names()]


def _accepted(combination: Combination) -> bool:
    try:
        resolve(build_config(combination_overrides(combination)))
    except (ConfigError, IncompatibleError):
        return False
    return True


def real_policy_combinations() -> list[Combination]:
    """Every paradigm x backbone that `resolve` accepts, each on the first of `ENV_CANDIDATES` it accepts, then the
    accepted `variants()` (one network per agent; MPE; continuous actions)."""
    combinations = []
    for paradigm in paradigm_names():
        for backbone in backbone_names():
            env = next((env for env in ENV_CANDIDATES if _accepted((paradigm, backbone, env))), None)
            if env is not None:
                combinations.append((paradigm, backbone, env))
    combinations += [c for c in variants() if c not in combinations and _accepted(c)]
    return combinations


def exported_network(combination: Combination) -> tuple:
    """What distinguishes one exported network from another, without initializing anything: (network, inputs,
    continuous actions, message bits, quantile head) of the paradigm's export spec. (The number of agents and of
    DMIX's quantiles only change sizes; a quantile head at all changes how the policy reads its outputs.)"""
    program = _program(combination, 1)
    params = jax.eval_shape(program.paradigm.init, jax.random.PRNGKey(0))
    spec, _ = program.paradigm.export(params)
    env = program.env.spec
    return (spec["network"], tuple(spec["inputs"]), bool(env.continuous_actions), spec.get("message_bits", 0),
            spec.get("quantiles", 0) > 0)


def audit_real_policies(combinations: list[Combination] | None = None, trials: int = 4, seeds: int = 2
                        ) -> list[dict]:
    """Audit the exported policy of every combination (default: `real_policy_combinations()`), `seeds` seeds
    from initialization (`real_policy`), on random episodes.

    Returns one row per combination: {"paradigm", "backbone", "env" (each with its extra overrides), "network",
    "passed" (the audit passed), "max_deviation", "own_sensitivity", "sensitive" (own_sensitivity >
    `OWN_SENSITIVITY_FLOOR`: a pass that is not vacuous), "message", "seconds"}."""
    rows = []
    for combination in combinations or real_policy_combinations():
        tic = time.perf_counter()
        policy = real_policy(combination, seeds)
        report = audit_policy(policy, trials=trials)
        paradigm, backbone, env = combination
        network = policy.spec["network"] + (" (continuous)" if policy.spec.get("continuous_actions") else "")
        rows.append({"paradigm": paradigm, "backbone": backbone, "env": env, "network": network,
                     "passed": report.passed, "max_deviation": _worst_deviation(report),
                     "own_sensitivity": report.own_sensitivity,
                     "sensitive": report.own_sensitivity > OWN_SENSITIVITY_FLOOR, "message": report.message,
                     "seconds": time.perf_counter() - tic})
    return rows
