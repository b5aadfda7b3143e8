"""The decentralized policy artifact: export, load, run, and audit.

An exported policy is a directory with `policy.json` (what network, which own inputs, sizes) and
`params.msgpack` (parameters, stacked over the run's seeds). Loading it needs only this module and
`ctde.nets`, not the training code.

Every registered network is one `PolicyNetwork`, and every step of every policy runs the same two phases:

1. *Send*: each agent j's sender, vmapped over agents, maps j's own inputs (observation, previous action,
   index, own available-action mask) to a k-bit message m_j [k], each entry exactly 0 or 1.
2. *Receive*: each agent i's receiver, vmapped over agents, maps i's own inputs, i's hidden state and the
   broadcast messages of all agents [m_1, ..., m_n] ([n, k], its own included) to i's action scores.

Nothing else crosses from one agent to another, so the structure itself routes all information between agents
through the messages. A *plain* network (RNN agent, CADP's D model, PTDE's student) has no sender: its
messages have 0 bits and its receiver is one agent's step on its own inputs alone. A *communicating* network
(CTEDD's local policy, `ctedd_local`) sends k > 0 bits.

The audit checks the claim behaviourally, by replacing every other agent's inputs and the global state:

- plain: agent i's action scores, and so its actions, must not change;
- communicating, three checks: (i) no sender j's message may change; (ii) with the messages held fixed (fed
  as an input), agent i's scores must not change; (iii) every message is exactly k entries of 0 or 1.
  Together: agent i's action reads only its own inputs and k-bit messages, each a function of its sender's
  own inputs only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from ctde.errors import AuditFailedError, CheckpointError
from ctde.nets.cadp import CADPAgent
from ctde.nets.rnn import RNNAgent, action_features

POLICY_FORMAT_VERSION = 1
OWN_INPUTS = ("obs", "last_action", "agent_id", "avail")

# One agent's step of a plain network: (params, hidden [H], obs [o], last_action [], avail [A],
# agent_index [], reset []) -> (hidden [H], scores [A]).
AgentStep = Callable[..., tuple[jax.Array, jax.Array]]
# One agent's sender: (params, obs [o], last_action [], avail [A], agent_index []) -> message [k] of 0. / 1.
SenderStep = Callable[..., jax.Array]
# One agent's receiver: (params, hidden [H], obs [o], last_action [], avail [A], agent_index [], reset [],
# messages [n, k]) -> (hidden [H], scores [A]).
ReceiverStep = Callable[..., tuple[jax.Array, jax.Array]]


@dataclass(frozen=True)
class PolicyNetwork:
    """One agent's half-steps of a registered network, each vmapped over agents by `DecentralizedPolicy`.

    `sender` is None for a plain network, whose messages then have `bits` = 0 entries. The sender is
    stateless: a message is a function of its sender's current own inputs (a recurrent sender would need its
    own hidden state, which no registered network has yet)."""

    receiver: ReceiverStep
    sender: SenderStep | None = None
    bits: int = 0

    @property
    def communicating(self) -> bool:
        return self.sender is not None

    @classmethod
    def plain(cls, step: AgentStep) -> "PolicyNetwork":
        """A plain network's agent step as a receiver of (0-bit) messages it ignores."""

        def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
            return step(params, hidden, obs, last_action, avail, agent_index, reset)

        return cls(receiver=receiver)


# A builder takes the policy spec and returns a plain `AgentStep` or a communicating `PolicyNetwork`.
POLICY_NETWORKS: dict[str, Callable[[dict], AgentStep | PolicyNetwork]] = {}


def register_network(name: str):
    """Register a builder `spec -> AgentStep | PolicyNetwork` under `name` (the spec's "network")."""

    def wrap(builder):
        POLICY_NETWORKS[name] = builder
        return builder

    return wrap


def build_network(spec: dict) -> PolicyNetwork:
    """The registered network of `spec["network"]`, plain steps wrapped as `PolicyNetwork.plain`."""
    if spec["network"] not in POLICY_NETWORKS:
        raise CheckpointError(f"Policy network '{spec['network']}' is unknown to this version of ctde "
                              f"(known: {', '.join(POLICY_NETWORKS)}).")
    built = POLICY_NETWORKS[spec["network"]](spec)
    return built if isinstance(built, PolicyNetwork) else PolicyNetwork.plain(built)


def own_input(spec: dict, obs, last_action, avail, agent_index) -> jax.Array:
    """One agent's input vector from its own data only, in the order the spec's `inputs` lists."""
    parts = {"obs": obs, "last_action": action_features(last_action, spec["n_actions"]),
             "avail": avail.astype(obs.dtype), "agent_id": jax.nn.one_hot(agent_index, spec["n_agents"])}
    return jnp.concatenate([parts[name].astype(obs.dtype) for name in spec["inputs"]], axis=-1)


def recurrent_agent_step(spec: dict, forward: Callable) -> AgentStep:
    """One agent's step of a recurrent network `forward(params, h0 [1, H], xs [1, 1, in], resets [1, 1])
    -> (h [1, H], scores [1, 1, |A|])` fed with the agent's own input vector."""

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, scores = forward(params, hidden[None], x[None, None], reset[None, None])
        return hidden[0], scores[0, 0]

    return step


@register_network("rnn_agent")
def _rnn_agent(spec: dict) -> AgentStep:
    return recurrent_agent_step(spec, RNNAgent(spec["hidden_dim"], spec["n_actions"]).apply)


@register_network("rnn_agent_per_agent")
def _rnn_agent_per_agent(spec: dict) -> AgentStep:
    """One recurrent network per agent, parameters stacked on a leading agent axis: agent i runs slice i."""
    network = RNNAgent(spec["hidden_dim"], spec["n_actions"])
    step = recurrent_agent_step(spec, network.apply)

    def own_network_step(params, hidden, obs, last_action, avail, agent_index, reset):
        own_params = jax.tree.map(lambda p: jnp.asarray(p)[agent_index], params)
        return step(own_params, hidden, obs, last_action, avail, agent_index, reset)

    return own_network_step


@register_network("cadp_decentralized")
def _cadp_decentralized(spec: dict) -> AgentStep:
    """CADP's D model: the advice network with each agent's own value vector in place of the attention mix.
    Its parameters hold no query or key weights; `CADPAgent.decentralized` reads none."""
    network = CADPAgent(spec["hidden_dim"], spec["n_actions"], spec["heads"], spec["head_dim"], spec["residual"])
    return recurrent_agent_step(spec, lambda params, *args: network.apply(params, *args,
                                                                          method=CADPAgent.decentralized))


@register_network("ptde_student")
def _ptde_student(spec: dict) -> AgentStep:
    from ctde.nets.ptde import QHead, Student, Trunk

    trunk = Trunk(spec["hidden_dim"])
    head = QHead(spec["hidden_dim"], spec["n_actions"])
    student = Student(spec["z_dim"], spec["student_hidden"])

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, h = trunk.apply(params["trunk"], hidden[None], x[None, None], reset[None, None])
        z = student.apply(params["student"], x)
        return hidden[0], head.apply(params["head"], h[0, 0], z)

    return step


@register_network("ctedd_local")
def _ctedd_local(spec: dict) -> PolicyNetwork:
    """CTEDD's local policy: agent j sends k bits `binary_message(MessageGenerator(x_j))`, agent i's actor
    chooses from x_i and all n * k bits (agent-major, own included), x = the agent's own input vector
    (obs ⊕ onehot(i) for inputs ["obs", "agent_id"]). Feed-forward: the hidden state passes through unchanged.
    Parameters: {"messages": MessageGenerator params, "actor": MessageActor params}."""
    from ctde.nets.ctedd import MessageActor, MessageGenerator, binary_message

    missing = [key for key in ("message_bits", "local_hidden", "hidden_dim") if key not in spec]
    if missing:
        raise ValueError(f"A ctedd_local policy spec needs {missing} (message_bits = k, local_hidden = the "
                         f"generator's and actor's width, hidden_dim = 0 for this feed-forward policy).")
    bits = int(spec["message_bits"])
    generator = MessageGenerator(bits=bits, hidden_dim=spec["local_hidden"])
    actor = MessageActor(spec["n_actions"], hidden_dim=spec["local_hidden"])

    def sender(params, obs, last_action, avail, agent_index):
        x = own_input(spec, obs, last_action, avail, agent_index)
        # No key: at execution a bit is deterministically 1 exactly when its logit is positive.
        return binary_message(generator.apply(params["messages"], x))

    def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
        x = own_input(spec, obs, last_action, avail, agent_index)
        # [n, k] -> [n * k] agent-major, the layout `local_policy_logits` trains with.
        return hidden, actor.apply(params["actor"], x, messages.reshape(-1))

    return PolicyNetwork(receiver=receiver, sender=sender, bits=bits)


@dataclass
class DecentralizedPolicy:
    """A policy whose agent i acts on agent i's own inputs and, for a communicating network, the k-bit messages
    of all agents, each computed from its sender's own inputs. `params` carry a leading seed axis."""

    spec: dict
    params: Any
    _network: PolicyNetwork | None = field(default=None, repr=False)

    def __post_init__(self):
        self._network = build_network(self.spec)

    @property
    def n_seeds(self) -> int:
        return int(self.spec.get("seeds", 1))

    @property
    def communicating(self) -> bool:
        """True when the agents exchange messages (the audit then checks messages and receivers apart)."""
        return self._network.communicating

    @property
    def message_bits(self) -> int:
        """k, the entries of each agent's message (0 for a plain policy)."""
        return self._network.bits

    def seed_params(self, seed: int = 0) -> Any:
        if not 0 <= seed < self.n_seeds:
            raise ValueError(f"seed {seed} out of range: this policy holds {self.n_seeds} seed(s).")
        return jax.tree.map(lambda x: x[seed], self.params)

    def initial_hidden(self) -> jax.Array:
        """float32 [n_agents, hidden_dim]."""
        return jnp.zeros((self.spec["n_agents"], self.spec["hidden_dim"]))

    def messages(self, params: Any, obs: jax.Array, last_action: jax.Array, avail: jax.Array) -> jax.Array:
        """Every agent's message, each from its own inputs only. obs [n, o], last_action int [n],
        avail bool [n, A] -> messages [n, k] (k = 0 for a plain policy)."""
        agents = jnp.arange(self.spec["n_agents"])
        if self._network.sender is None:
            return jnp.zeros((self.spec["n_agents"], 0), obs.dtype)
        return jax.vmap(self._network.sender, in_axes=(None, 0, 0, 0, 0))(params, obs, last_action, avail, agents)

    def receive(self, params: Any, hidden: jax.Array, obs: jax.Array, last_action: jax.Array, avail: jax.Array,
                reset: jax.Array, messages: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Every agent on its own inputs and all agents' messages. hidden [n, H], obs [n, o], last_action [n],
        avail [n, A], reset bool [], messages [n, k] (broadcast to every agent) -> (hidden [n, H], scores [n, A])."""
        agents = jnp.arange(self.spec["n_agents"])
        return jax.vmap(self._network.receiver, in_axes=(None, 0, 0, 0, 0, 0, None, None))(
            params, hidden, obs, last_action, avail, agents, reset, messages)

    def step(self, params: Any, hidden: jax.Array, obs: jax.Array, last_action: jax.Array, avail: jax.Array,
             reset: jax.Array) -> tuple[jax.Array, jax.Array]:
        """All agents: send, then receive. hidden [n, H], obs [n, o], last_action int [n] (-1 = none),
        avail bool [n, A], reset bool [] -> (hidden [n, H], scores [n, A])."""
        messages = self.messages(params, obs, last_action, avail)
        return self.receive(params, hidden, obs, last_action, avail, reset, messages)

    def act(self, params, hidden, obs, last_action, avail, reset) -> tuple[jax.Array, jax.Array]:
        """Greedy actions: (hidden [n, H], actions int [n]: the best available one), or with continuous actions
        (`spec["continuous_actions"]`) float [n, A]: tanh of the scores, as the deterministic actors act."""
        hidden, scores = self.step(params, hidden, obs, last_action, avail, reset)
        if self.spec.get("continuous_actions", False):
            return hidden, jnp.tanh(scores)
        return hidden, jnp.argmax(jnp.where(avail, scores, -1e7), axis=-1)

    def unroll(self, params, obs, last_action, avail, state=None, messages=None) -> jax.Array:
        """Scores over one episode. obs [T, n, o], last_action [T, n], avail [T, n, A] -> [T, n, A].

        `state` is accepted so the audit can offer it; a decentralized policy has no way to read it. With
        `messages` [T, n, k] the receivers get those instead of the senders' (the audit holds them fixed)."""
        def body(hidden, inputs):
            t, o, la, av, m = inputs
            if m is None:
                return self.step(params, hidden, o, la, av, t == 0)
            return self.receive(params, hidden, o, la, av, t == 0, m)

        steps = jnp.arange(obs.shape[0])
        return jax.lax.scan(body, self.initial_hidden(), (steps, obs, last_action, avail, messages))[1]

    def episode_messages(self, params, obs, last_action, avail, state=None) -> jax.Array:
        """Every step's messages. obs [T, n, o], last_action [T, n], avail [T, n, A] -> [T, n, k].
        `state` is accepted so the audit can offer it; no sender can read it."""
        return jax.vmap(self.messages, in_axes=(None, 0, 0, 0))(params, obs, last_action, avail)

    # -- files -------------------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "params.msgpack.tmp"
        tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(self.params)))
        tmp.replace(directory / "params.msgpack")
        (directory / "policy.json").write_text(json.dumps({**self.spec, "format": POLICY_FORMAT_VERSION}, indent=2))
        return directory


def make_policy(spec: dict, params: Any) -> DecentralizedPolicy:
    unknown = [name for name in spec["inputs"] if name not in OWN_INPUTS]
    if unknown:
        raise ValueError(f"A decentralized policy may read only its own {OWN_INPUTS}; got {unknown}.")
    return DecentralizedPolicy(spec=spec, params=params)


def load_policy(path: str | Path) -> DecentralizedPolicy:
    """Load an exported policy directory (or a run directory, whose `policy/` is used)."""
    path = Path(path)
    if (path / "policy").is_dir() and not (path / "policy.json").exists():
        path = path / "policy"
    spec_file, params_file = path / "policy.json", path / "params.msgpack"
    if not spec_file.exists() or not params_file.exists():
        raise CheckpointError(f"No exported policy at {path}: expected policy.json and params.msgpack. "
                              f"Export one with `ctde export <run>`.")
    try:
        spec = json.loads(spec_file.read_text())
        raw = flax.serialization.msgpack_restore(params_file.read_bytes())
    except Exception as e:  # noqa: BLE001 - any decoding failure means the same thing to the user
        raise CheckpointError(f"The policy at {path} is unreadable ({type(e).__name__}: {e}). "
                              f"Re-export it with `ctde export <run>`.") from None
    if spec.get("format") != POLICY_FORMAT_VERSION:
        raise CheckpointError(f"The policy at {path} has format {spec.get('format')}, this ctde reads "
                              f"{POLICY_FORMAT_VERSION}. Re-export it with this version.")
    params = jax.tree.map(jnp.asarray, raw)
    return make_policy(spec, params)


# ---------------------------------------------------------------------------------------------------------
# Audit


@dataclass
class MessageAudit:
    """Checks (i) and (iii) of a communicating policy's audit (check (ii) fills the `AuditReport` itself)."""

    bits: int  # k, the message size the spec declares
    passed: bool  # (i) and (iii) both hold
    max_deviation: float  # (i): largest relative change of any message caused by others' inputs or the state
    own_sensitivity: float  # smallest over senders of the largest change caused by the sender's own inputs
    per_sender: list[float]  # (i)'s largest change per sender j
    binary: bool  # (iii): every message is exactly `bits` entries, each exactly 0 or 1
    shape: list[int]  # the per-agent message shape the senders produced
    non_binary_senders: list[int]  # senders that sent an entry other than 0 or 1


@dataclass
class AuditReport:
    """The audit's verdict. For a communicating policy `max_deviation`, `own_sensitivity` and `per_agent` are
    those of the receivers with the messages held fixed (check ii), and `messages` holds checks (i) and (iii);
    `passed` requires all three. For a plain policy `messages` is None."""

    passed: bool
    max_deviation: float  # largest change of any agent's scores caused by others' inputs or the state
    own_sensitivity: float  # smallest over agents of the largest change caused by the agent's own inputs
    trials: int
    per_agent: list[float]
    message: str
    messages: MessageAudit | None = None

    def to_dict(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k != "messages"}
        if self.messages is not None:  # plain policies' reports keep their previous keys exactly
            out["messages"] = asdict(self.messages)
        return out


ScoresFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
# (obs [T, n, o], last_action [T, n], avail [T, n, A], state [T, s]) -> messages [T, n, k]
MessagesFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
# (obs [T, n, o], last_action [T, n], avail [T, n, A], state [T, s], messages [T, n, k]) -> scores [T, n, A]
ReceiverFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


def _random_episode(rng: np.random.Generator, horizon: int, n_agents: int, obs_dim: int, n_actions: int,
                    state_dim: int, continuous: bool = False) -> dict:
    """Random inputs of one episode; with `continuous` actions, previous actions are vectors in [-1, 1]^A and
    every action dimension is available."""
    if continuous:
        avail = np.ones((horizon, n_agents, n_actions), bool)
        last_action = rng.uniform(-1, 1, size=(horizon, n_agents, n_actions)).astype(np.float32)
    else:
        avail = rng.random((horizon, n_agents, n_actions)) < 0.7
        avail[..., 0] = True
        last_action = rng.integers(-1, n_actions, size=(horizon, n_agents)).astype(np.int32)
    return {"obs": rng.normal(size=(horizon, n_agents, obs_dim)).astype(np.float32), "last_action": last_action,
            "avail": avail, "state": rng.normal(size=(horizon, state_dim)).astype(np.float32)}


def _perturbation_audit(fn: Callable, n_agents: int, obs_dim: int, n_actions: int, state_dim: int,
                        episodes: list[dict] | None, trials: int, horizon: int, seed: int,
                        held: Callable[[dict, int], tuple] | None = None, continuous: bool = False
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Per agent i: (largest relative change of output [:, i] when every other agent's inputs and the state are
    replaced, largest relative change when agent i's own inputs are). `fn(obs, last_action, avail, state,
    *held(base, trial))` -> [T, n, ...]; what `held` returns for a trial's base episode is passed unchanged to
    every call of that trial (the receiver audit holds the messages fixed this way)."""
    rng = np.random.default_rng(seed)
    fn = jax.jit(fn)
    sources = list(episodes or [])
    deviation = np.zeros(n_agents)
    sensitivity = np.zeros(n_agents)
    for trial in range(trials):
        base = sources[trial % len(sources)] if sources else _random_episode(
            rng, horizon, n_agents, obs_dim, n_actions, state_dim, continuous)
        other = (_random_episode(rng, horizon, n_agents, obs_dim, n_actions, state_dim, continuous)
                 if not sources or trial % 2 else sources[(trial + 1) % len(sources)])
        length = min(base["obs"].shape[0], other["obs"].shape[0])
        base = {k: np.asarray(v)[:length] for k, v in base.items()}
        other = {k: np.asarray(v)[:length] for k, v in other.items()}
        fixed = held(base, trial) if held is not None else ()
        reference = np.asarray(fn(base["obs"], base["last_action"], base["avail"], base["state"], *fixed))
        scale = np.abs(reference).max() + 1e-6
        for i in range(n_agents):
            keep = np.zeros(n_agents, bool)
            keep[i] = True
            mixed = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), base[k], other[k])
                     for k in ("obs", "last_action", "avail")}
            perturbed = np.asarray(fn(mixed["obs"], mixed["last_action"], mixed["avail"], other["state"], *fixed))
            deviation[i] = max(deviation[i], np.abs(perturbed[:, i] - reference[:, i]).max() / scale)
            own = {k: np.where(keep.reshape((1, n_agents) + (1,) * (base[k].ndim - 2)), other[k], base[k])
                   for k in ("obs", "last_action", "avail")}
            changed = np.asarray(fn(own["obs"], own["last_action"], own["avail"], base["state"], *fixed))
            sensitivity[i] = max(sensitivity[i], np.abs(changed[:, i] - reference[:, i]).max() / scale)
    return deviation, sensitivity


def audit_scores_fn(scores_fn: ScoresFn, n_agents: int, obs_dim: int, n_actions: int, state_dim: int,
                    episodes: list[dict] | None = None, trials: int = 8, horizon: int = 12, seed: int = 0,
                    tolerance: float = 1e-5, continuous: bool = False) -> AuditReport:
    """Audit any scores function `(obs [T,n,o], last_action [T,n], avail [T,n,A], state [T,s]) -> [T,n,A]`.

    Inputs come from recorded `episodes` (dicts of obs, last_action, avail, state arrays) when given, and
    are random otherwise. For each trial and agent i, the inputs of every agent j != i and the state are
    replaced by other values; agent i's scores must not move by more than `tolerance` (relative).
    """
    deviation, sensitivity = _perturbation_audit(scores_fn, n_agents, obs_dim, n_actions, state_dim, episodes,
                                                 trials, horizon, seed, continuous=continuous)
    worst = float(deviation.max())
    passed = worst <= tolerance
    if passed:
        message = (f"PASS: over {trials} trials, no agent's scores moved (max relative change {worst:.2e}) when "
                   f"every other agent's inputs and the global state were replaced.")
    else:
        leaking = [i for i in range(n_agents) if deviation[i] > tolerance]
        message = (f"FAIL: agents {leaking} change their scores (max relative change {worst:.3g}) when other "
                   f"agents' inputs or the global state change: the policy is not decentralized.")
    return AuditReport(passed=passed, max_deviation=worst, own_sensitivity=float(sensitivity.min()), trials=trials,
                       per_agent=[float(d) for d in deviation], message=message)


def audit_communication(messages_fn: MessagesFn, receiver_fn: ReceiverFn, n_agents: int, obs_dim: int,
                        n_actions: int, state_dim: int, message_bits: int, episodes: list[dict] | None = None,
                        trials: int = 8, horizon: int = 12, seed: int = 0, tolerance: float = 1e-5,
                        continuous: bool = False) -> AuditReport:
    """Audit a communicating policy given as its two halves over whole episodes:

    `messages_fn(obs [T,n,o], last_action [T,n], avail [T,n,A], state [T,s]) -> messages [T,n,k]` and
    `receiver_fn(obs, last_action, avail, state, messages [T,n,k]) -> scores [T,n,A]`.

    (i) each sender j's message must not move (relative `tolerance`) when every other agent's inputs and the
    state are replaced; (ii) with the messages held fixed, each agent i's scores must not move under the same
    replacement (the messages held are the senders' own on even trials and random bits on odd ones, so the
    receivers are probed beyond the messages the senders happen to send); (iii) on every base episode, every
    message is exactly `message_bits` entries, each exactly 0 or 1. Inputs as in `audit_scores_fn`.
    """
    check_rng = np.random.default_rng(seed + 7919)  # apart from the perturbation's draws, which stay as plain's
    sources = list(episodes or []) or [_random_episode(check_rng, horizon, n_agents, obs_dim, n_actions, state_dim,
                                                       continuous) for _ in range(trials)]
    messages_of = jax.jit(messages_fn)

    # (iii) on every base episode: binary entries, k of them per agent.
    shape: tuple[int, ...] = ()
    non_binary: set[int] = set()
    for episode in sources:
        obs = np.asarray(episode["obs"])
        sent = np.asarray(messages_of(obs, np.asarray(episode["last_action"]), np.asarray(episode["avail"]),
                                      np.asarray(episode["state"])))
        if sent.shape[:2] != obs.shape[:2]:
            raise ValueError(f"messages_fn must return [T, n, k] = [{obs.shape[0]}, {n_agents}, k], got {sent.shape}.")
        shape = sent.shape[2:]
        exact = ((sent == 0) | (sent == 1)).reshape(*sent.shape[:2], -1)  # NaN is neither
        non_binary |= {int(j) for j in np.nonzero(~exact.all(axis=(0, 2)))[0]}
    binary = shape == (message_bits,) and not non_binary

    # (i) messages: a sender's message from its own inputs only.
    def flat_messages(o, la, av, s):
        m = messages_fn(o, la, av, s)
        return m.reshape(*m.shape[:2], -1)

    message_dev, message_own = _perturbation_audit(flat_messages, n_agents, obs_dim, n_actions, state_dim,
                                                   episodes, trials, horizon, seed, continuous=continuous)

    # (ii) receivers, with the messages held fixed: agent i reads only its own inputs besides them.
    bits_rng = np.random.default_rng(seed + 104729)

    def held(base: dict, trial: int) -> tuple[np.ndarray]:
        sent = np.asarray(messages_of(base["obs"], base["last_action"], base["avail"], base["state"]))
        if trial % 2:
            sent = bits_rng.integers(0, 2, size=sent.shape).astype(sent.dtype)
        return (sent,)

    deviation, sensitivity = _perturbation_audit(receiver_fn, n_agents, obs_dim, n_actions, state_dim, episodes,
                                                 trials, horizon, seed, held=held, continuous=continuous)

    worst, worst_message = float(deviation.max()), float(message_dev.max())
    receivers_ok, senders_ok = worst <= tolerance, worst_message <= tolerance
    messages = MessageAudit(bits=message_bits, passed=senders_ok and binary, max_deviation=worst_message,
                            own_sensitivity=float(message_own.min()), per_sender=[float(d) for d in message_dev],
                            binary=binary, shape=list(shape), non_binary_senders=sorted(non_binary))
    passed = receivers_ok and messages.passed
    if passed:
        message = (f"PASS: agent i's action reads only its own inputs and {message_bits}-bit messages, each a "
                   f"function of its sender's own inputs only. Over {trials} trials, replacing every other agent's "
                   f"inputs and the global state changed no message (max relative change {worst_message:.2e}) "
                   f"and, with the messages held fixed, no agent's scores (max relative change {worst:.2e}); "
                   f"every message had exactly {message_bits} bit{'s' if message_bits > 1 else ''}, each 0 or 1.")
    else:
        reasons = []
        if not receivers_ok:
            leaking = [i for i in range(n_agents) if deviation[i] > tolerance]
            reasons.append(f"with every message held fixed, agents {leaking} change their scores (max relative "
                           f"change {worst:.3g}) when other agents' inputs or the global state change: they read "
                           f"other agents' information other than through messages")
        if not senders_ok:
            leaking = [j for j in range(n_agents) if message_dev[j] > tolerance]
            reasons.append(f"the messages of agents {leaking} change (max relative change {worst_message:.3g}) "
                           f"when other agents' inputs or the global state change: a message must be a function "
                           f"of its sender's own inputs only")
        if shape != (message_bits,):
            reasons.append(f"each message has shape {tuple(shape)}, not the declared {message_bits} bits")
        if non_binary:
            reasons.append(f"agents {sorted(non_binary)} send message entries other than exactly 0 or 1: "
                           f"messages must be binary")
        message = "FAIL: " + "; ".join(reasons) + ". The policy is not decentralized."
    return AuditReport(passed=passed, max_deviation=worst, own_sensitivity=float(sensitivity.min()), trials=trials,
                       per_agent=[float(d) for d in deviation], message=message, messages=messages)


def audit_policy(policy: DecentralizedPolicy, episodes: list[dict] | None = None, trials: int = 8,
                 seed: int = 0) -> AuditReport:
    """Audit every seed of an exported policy; the report is the worst over seeds (a failing one first).

    A plain policy is audited as one scores function (`audit_scores_fn`); a communicating one as its
    senders and receivers apart (`audit_communication`)."""
    spec = policy.spec
    sizes = (spec["n_agents"], spec["obs_dim"], spec["n_actions"], spec["state_dim"])
    continuous = bool(spec.get("continuous_actions", False))
    reports = []
    for k in range(policy.n_seeds):
        params = policy.seed_params(k)
        if policy.communicating:
            reports.append(audit_communication(
                lambda o, la, av, s, params=params: policy.episode_messages(params, o, la, av, s),
                lambda o, la, av, s, m, params=params: policy.unroll(params, o, la, av, s, messages=m),
                *sizes, message_bits=int(spec["message_bits"]), episodes=episodes, trials=trials, seed=seed + k,
                continuous=continuous))
        else:
            reports.append(audit_scores_fn(
                lambda o, la, av, s, params=params: policy.unroll(params, o, la, av, s), *sizes,
                episodes=episodes, trials=trials, seed=seed + k, continuous=continuous))
    return max(reports, key=lambda r: (not r.passed, r.max_deviation,
                                       r.messages.max_deviation if r.messages is not None else 0.0))


def require_audit(report: AuditReport) -> None:
    if not report.passed:
        raise AuditFailedError(report.message)
