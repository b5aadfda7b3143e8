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

from ctde.config import EnvConfig
from ctde.envs import make_env
from ctde.envs.host import HOST_FAMILIES
from ctde.envs.toy import TOY_ENVS
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
# One seed's parameters of a network from a PRNG key (the tree `params.msgpack` holds per seed).
ParamInit = Callable[[jax.Array], Any]


@dataclass(frozen=True)
class PolicyNetwork:
    """One agent's half-steps of a registered network, each vmapped over agents by `DecentralizedPolicy`.

    `sender` is None for a plain network, whose messages then have `bits` = 0 entries. The sender is
    stateless: a message is a function of its sender's current own inputs (a recurrent sender would need its
    own hidden state, which no registered network has yet)."""

    receiver: ReceiverStep
    sender: SenderStep | None = None
    bits: int = 0
    # One seed's parameters from a PRNG key, for the spec the network was built from: `load_policy` evaluates it
    # abstractly (`jax.eval_shape`, nothing runs) for the parameter tree the spec expects. None: not checked.
    init: ParamInit | None = None

    @property
    def communicating(self) -> bool:
        return self.sender is not None

    @classmethod
    def plain(cls, step: AgentStep, init: ParamInit | None = None) -> "PolicyNetwork":
        """A plain network's agent step as a receiver of (0-bit) messages it ignores."""

        def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
            return step(params, hidden, obs, last_action, avail, agent_index, reset)

        return cls(receiver=receiver, init=init)


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


def own_input_zeros(spec: dict) -> jax.Array:
    """A zero input vector of one agent, as wide as `own_input` makes it from the spec's inputs."""
    n_actions = spec["n_actions"]
    last_action = (jnp.zeros((n_actions,)) if spec.get("continuous_actions", False) else jnp.int32(-1))
    return own_input(spec, jnp.zeros((spec["obs_dim"],)), last_action, jnp.zeros((n_actions,), bool), jnp.int32(0))


def recurrent_init(spec: dict, module, method: Callable | None = None) -> ParamInit:
    """The `PolicyNetwork.init` of a recurrent flax `module` that `recurrent_agent_step` runs with
    `module.apply(params, h0 [1, H], xs [1, 1, in], resets [1, 1], method=method)`."""

    def init(key):
        x = own_input_zeros(spec)[None, None]
        return module.init(key, jnp.zeros((1, spec["hidden_dim"])), x, jnp.zeros((1, 1), bool), method=method)

    return init


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
def _rnn_agent(spec: dict) -> PolicyNetwork:
    network = RNNAgent(spec["hidden_dim"], _outputs(spec))
    return PolicyNetwork.plain(recurrent_agent_step(spec, network.apply), init=recurrent_init(spec, network))


@register_network("rnn_agent_per_agent")
def _rnn_agent_per_agent(spec: dict) -> PolicyNetwork:
    """One recurrent network per agent, parameters stacked on a leading agent axis: agent i runs slice i."""
    network = RNNAgent(spec["hidden_dim"], _outputs(spec))
    step = recurrent_agent_step(spec, network.apply)
    init_one = recurrent_init(spec, network)

    def own_network_step(params, hidden, obs, last_action, avail, agent_index, reset):
        own_params = jax.tree.map(lambda p: jnp.asarray(p)[agent_index], params)
        return step(own_params, hidden, obs, last_action, avail, agent_index, reset)

    def init(key):  # [n_agents, ...]: one network per agent
        return jax.vmap(init_one)(jax.random.split(key, spec["n_agents"]))

    return PolicyNetwork.plain(own_network_step, init=init)


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


# -- checking a policy directory against its policy.json ---------------------------------------------------

REEXPORT = "Re-export the policy from its run: `ctde export RUN`."
# Integer sizes every policy.json has (the environment's), with the smallest value each may take.
ENV_SIZES = {"n_agents": 1, "n_actions": 1, "obs_dim": 0}
# Spec fields that may size a network's parameters: probed (`_explain`) to say which one a tree disagrees with.
SHAPE_FIELDS = ("obs_dim", "n_agents", "n_actions", "hidden_dim", "quantiles", "residual", "heads", "head_dim",
                "z_dim", "student_hidden", "message_bits", "local_hidden")
# Action types known without building the environment: MPE acts with 2-D forces (continuous) or 5 moves; of the
# toy environments only target_sum is continuous; SMAX, LTR and the host families are discrete.
_MPE_ACTIONS = {2: True, 5: False}
_CONTINUOUS_TOYS = ("toy:target_sum",)


def _refuse(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"The policy at {path} does not match its policy.json: {problem}. {REEXPORT}")


def _leaf_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """'params/fc1/kernel' -> shape, for every leaf of a parameter tree."""
    def name(key) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(name(k) for k in keys): tuple(getattr(leaf, "shape", ())) for keys, leaf in leaves}


def expected_shapes(spec: dict) -> dict[str, tuple[int, ...]] | None:
    """One seed's parameter shapes that `spec` calls for (its network's `init`, evaluated abstractly: nothing is
    computed), or None when the network does not declare its parameters."""
    network = build_network(spec)
    if network.init is None:
        return None
    return _leaf_shapes(jax.eval_shape(network.init, jax.random.key(0)))


def _shapes_or_none(spec: dict) -> dict[str, tuple[int, ...]] | None:
    try:
        return expected_shapes(spec)
    except Exception:  # noqa: BLE001 - a probe the builder refuses explains nothing
        return None


def _env_sizes(spec: dict) -> dict[str, int] | None:
    """obs_dim, n_agents and n_actions of the environment policy.json names, where one builds in-process (SMAX,
    toy, MPE); None otherwise or if it cannot be built. Used only to choose between explanations of a mismatch."""
    env = str(spec.get("env", ""))
    if env.split(":", 1)[0] not in ("smax", "toy", "mpe"):
        return None
    try:
        built = make_env(EnvConfig(id=env, sight_range=spec.get("sight_range"),
                                   continuous_actions=bool(spec.get("continuous_actions", False)))).spec
    except Exception:  # noqa: BLE001 - no environment, no tie-break
        return None
    return {"obs_dim": built.obs_dim, "n_agents": built.n_agents, "n_actions": built.n_actions}


def _explain(spec: dict, expected: dict, actual: dict) -> str:
    """Which spec field the parameters disagree with: a field whose other value makes the whole tree fit, else the
    field(s) that alone size a parameter axis that differs, else the first differing parameter."""
    probes: dict[str, tuple[Any, Any, dict, dict]] = {}
    whole: list[tuple[str, Any, str]] = []  # (field, the value that fits, what to say)
    for name in SHAPE_FIELDS:
        value = spec.get(name, 0 if name == "quantiles" else None)
        if isinstance(value, bool):
            other = _shapes_or_none({**spec, name: not value})
            if other == actual:
                whole.append((name, not value, f"{name}: policy.json says {json.dumps(value)}, the parameters were "
                                               f"made for {json.dumps(not value)}"))
            continue
        if not isinstance(value, int):
            continue
        a, b = max(value, 1) + 1, max(value, 1) + 2  # probes at two values (quantiles 0 and 1 size alike)
        low, high = _shapes_or_none({**spec, name: a}), _shapes_or_none({**spec, name: b})
        if low is None or high is None or low.keys() != actual.keys() or high.keys() != actual.keys():
            continue
        probes[name] = (value, a, low, high)
        candidates = set()
        for leaf, shape in actual.items():
            for axis, (n_low, n_high, n) in enumerate(zip(low[leaf], high[leaf], shape)):
                slope = n_high - n_low
                if slope and (n - n_low) % slope == 0:
                    candidates.add(a + (n - n_low) // slope)
        for candidate in sorted(c for c in candidates if c >= 0 and c != value):
            if _shapes_or_none({**spec, name: candidate}) == actual:
                made_for = 0 if name == "quantiles" and candidate == 1 else candidate
                whole.append((name, candidate, f"{name}: policy.json says {value}, the parameters were made for "
                                               f"{made_for}"))
    if len(whole) > 1:  # the tree cannot tell them apart (obs_dim and n_agents widen a shared input alike)
        sizes = _env_sizes(spec)
        if sizes is not None:  # keep those the environment agrees with, if any
            agreed = [w for w in whole if w[0] not in sizes or sizes[w[0]] == w[1]]
            whole = agreed or whole
    if whole:
        return "; or ".join(text for _, _, text in whole)
    # No single field explains every parameter: name the differing axes that depend on one field alone.
    alone = []
    for leaf, shape in actual.items():
        if len(shape) != len(expected[leaf]):
            continue
        for axis, n in enumerate(shape):
            if expected[leaf][axis] == n:
                continue
            sizing = [(name, value, a, low[leaf][axis], high[leaf][axis]) for name, (value, a, low, high)
                      in probes.items() if len(low[leaf]) == len(shape) and low[leaf][axis] != high[leaf][axis]]
            if len(sizing) == 1:
                name, value, a, n_low, n_high = sizing[0]
                slope = n_high - n_low
                made_for = a + (n - n_low) // slope if (n - n_low) % slope == 0 else None
                if made_for is not None and made_for >= 0:
                    what = f"the parameters were made for {made_for}"
                else:
                    what = f"the parameters have {n} where {expected[leaf][axis]} is expected"
                alone.append(f"{name}: policy.json says {value}, {what} (parameter {leaf}: shape {shape} per "
                             f"seed, expected {expected[leaf]})")
    if alone:
        return alone[0]
    leaf = next(leaf for leaf in actual if actual[leaf] != expected[leaf])
    return (f"parameter {leaf} has shape {actual[leaf]} per seed where policy.json ({spec['network']}, obs_dim "
            f"{spec['obs_dim']}, n_agents {spec['n_agents']}, n_actions {spec['n_actions']}) expects "
            f"{expected[leaf]}: these look like parameters of another environment or network")


def _action_type_problem(spec: dict) -> str | None:
    """What contradicts the spec's `continuous_actions`, from what else the spec says (environment,
    quantiles); None if nothing does."""
    continuous = spec.get("continuous_actions", False)
    if not isinstance(continuous, bool):
        return f"continuous_actions is {continuous!r}, expected true or false"
    env = str(spec.get("env", ""))
    family, name = env.split(":", 1) if ":" in env else ("", "")
    says = f"continuous_actions: policy.json says {str(continuous).lower()}"
    if family == "mpe" and spec["n_actions"] in _MPE_ACTIONS:
        if _MPE_ACTIONS[spec["n_actions"]] != continuous:
            kind = "2-D forces (continuous)" if continuous is False else "5 discrete moves"
            return f"{says}, but {env} with n_actions {spec['n_actions']} acts with {kind}"
    elif family in ("smax", "ltr", *HOST_FAMILIES) or (family == "toy" and name in TOY_ENVS):
        actual = env in _CONTINUOUS_TOYS
        if actual != continuous:
            return f"{says}, but {env}'s actions are {'continuous' if actual else 'discrete'}"
    if continuous and spec.get("quantiles"):
        return f"{says}, but a policy with quantiles ({spec['quantiles']}) chooses among discrete actions"
    return None


def check_policy(spec: dict, params: Any, path: str | Path = "this directory") -> None:
    """Refuse (`CheckpointError`: the field, the expected and the actual value, the fix) a policy whose parameters
    do not fit its policy.json: the spec's own fields, the seed axis, the action type, and every parameter's
    shape against the tree its network's `init` makes from the spec (abstractly: no parameter is computed)."""
    path = Path(path)
    missing = [name for name in ("network", "inputs", *ENV_SIZES) if name not in spec]
    if missing:
        raise _refuse(path, f"policy.json lacks {', '.join(missing)}")
    for name, least in {**ENV_SIZES, "seeds": 1}.items():
        value = spec.get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise _refuse(path, f"{name} is {value!r} in policy.json, expected an integer of at least {least}")
    unknown = [name for name in spec["inputs"] if name not in OWN_INPUTS] if isinstance(spec["inputs"], list) else None
    if unknown is None or unknown:
        raise _refuse(path, f"inputs: policy.json says {spec['inputs']!r}; a decentralized policy reads a list of its "
                            f"own {', '.join(OWN_INPUTS)}")
    problem = _action_type_problem(spec)
    if problem:
        raise _refuse(path, problem)
    actual = _leaf_shapes(params)
    if not actual:
        raise _refuse(path, "params.msgpack holds no parameters")
    seeds = int(spec.get("seeds", 1))
    held = {shape[0] if shape else None for shape in actual.values()}
    if held != {seeds}:
        found = next(iter(held)) if len(held) == 1 else " / ".join(str(h) for h in sorted(held, key=str))
        raise _refuse(path, f"seeds: policy.json says {seeds}, the parameters hold {found} seed(s) (the leading axis "
                            f"of every parameter)")
    try:
        expected = expected_shapes(spec)
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - the builder cannot make a network of these sizes at all
        raise _refuse(path, f"its network {spec['network']} cannot be built from it ({type(e).__name__}: {e})") from None
    if expected is None:
        return  # a network that does not declare its parameters (no `init`): the seed axis is all we can check
    actual = {leaf: shape[1:] for leaf, shape in actual.items()}
    if actual == expected:
        return
    if actual.keys() != expected.keys():
        lacking = sorted(expected.keys() - actual.keys())
        extra = sorted(actual.keys() - expected.keys())
        parts = ([f"lacking {', '.join(lacking[:4])}{' ...' if len(lacking) > 4 else ''}"] if lacking else []) + \
                ([f"with unexpected {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''}"] if extra else [])
        raise _refuse(path, f"network: policy.json says {spec['network']}, whose parameters these are not "
                            f"({'; '.join(parts)}): parameters of another network")
    raise _refuse(path, _explain(spec, expected, actual))


def load_policy(path: str | Path) -> DecentralizedPolicy:
    """Load an exported policy directory (or a run directory, whose `policy/` is used), refusing one whose
    parameters do not fit its policy.json (`check_policy`)."""
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
    if not isinstance(spec, dict):
        raise CheckpointError(f"The policy at {path} is unreadable: policy.json holds no object. {REEXPORT}")
    if spec.get("format") != POLICY_FORMAT_VERSION:
        raise CheckpointError(f"The policy at {path} has format {spec.get('format')}, this ctde reads "
                              f"{POLICY_FORMAT_VERSION}. Re-export it with this version.")
    check_policy(spec, raw, path)
    params = jax.tree.map(jnp.asarray, raw)
    return make_policy(spec, params)

