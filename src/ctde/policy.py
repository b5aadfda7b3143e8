"""The decentralized policy artifact: export, load and run; the network registry behind it.

An exported policy is a directory with `policy.json` (what network, which own inputs, sizes) and
`params.msgpack` (parameters, stacked over the run's seeds). Loading it needs this module, `ctde.nets` and the
builder of its network, not the training code. The plain recurrent agents (`rnn_agent`, `rnn_agent_per_agent`)
are registered here; a paradigm that exports a network of its own registers its builder in its own file
(`register_network`: CADP's `cadp_decentralized`, PTDE's `ptde_student`, CTEDD's `ctedd_local`), and
`import ctde` registers the built-in paradigms.

Every registered network is one `PolicyNetwork`, and every step of every policy runs the same two phases:

1. *Send*: each agent j's sender, vmapped over agents, maps j's own inputs (observation, previous action,
   index, own available-action mask) to a k-bit message m_j [k], each entry exactly 0 or 1.
2. *Receive*: each agent i's receiver, vmapped over agents, maps i's own inputs, i's hidden state and the
   broadcast messages of all agents [m_1, ..., m_n] ([n, k], its own included) to i's action scores.

Nothing else crosses from one agent to another, so the structure itself routes all information between agents
through the messages. A *plain* network (RNN agent, CADP's D model, PTDE's student) has no sender: its
messages have 0 bits and its receiver is one agent's step on its own inputs alone. A *communicating* network
(CTEDD's local policy, `ctedd_local`) sends k > 0 bits.

Whether a policy really is decentralized is checked by `ctde.audit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import flax.serialization
import jax
import jax.numpy as jnp

from ctde.errors import CheckpointError
from ctde.nets.actions import masked_argmax
from ctde.nets.rnn import RNNAgent, action_features, value_outputs, value_scores

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

    quantiles = spec.get("quantiles", 0)

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, scores = forward(params, hidden[None], x[None, None], reset[None, None])
        return hidden[0], value_scores(scores[0, 0], spec["n_actions"], quantiles)[0]  # DMIX: the quantiles' mean

    return step


def _outputs(spec: dict) -> int:
    return value_outputs(spec["n_actions"], spec.get("quantiles", 0))


@register_network("rnn_agent")
def _rnn_agent(spec: dict) -> AgentStep:
    return recurrent_agent_step(spec, RNNAgent(spec["hidden_dim"], _outputs(spec)).apply)


@register_network("rnn_agent_per_agent")
def _rnn_agent_per_agent(spec: dict) -> AgentStep:
    """One recurrent network per agent, parameters stacked on a leading agent axis: agent i runs slice i."""
    network = RNNAgent(spec["hidden_dim"], _outputs(spec))
    step = recurrent_agent_step(spec, network.apply)

    def own_network_step(params, hidden, obs, last_action, avail, agent_index, reset):
        own_params = jax.tree.map(lambda p: jnp.asarray(p)[agent_index], params)
        return step(own_params, hidden, obs, last_action, avail, agent_index, reset)

    return own_network_step


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
        return hidden, masked_argmax(scores, avail)

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

