"""The paradigm interface: which agent-side networks exist, what they see, which extra losses apply, which
network collects data and which one is exported for decentralized execution.

A backbone (value decomposition, MAPPO, ...) never looks inside a paradigm: it calls `apply` over time-major
sequences and reads the per-agent action scores of the model it needs by role:

    collect_model  acts in training rollouts
    td_model       its scores are what the backbone learns (Q-values into the mixer, or policy logits)
    select_model   picks the bootstrap action for double-Q targets (IGM-DA: the student)
    eval_models    greedily evaluated at every test interval
    export_model   becomes the decentralized policy artifact

A paradigm may also name models trained by their own optimizer (`own_optimizer`; same settings as the shared
one, which covers every other network and the mixer), carry its own config section (`config_section`), and
refuse configurations it cannot run (`check_config`).

Adding a paradigm touches no backbone code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from ctde.config import TrainConfig
from ctde.envs.base import EnvSpec


@struct.dataclass
class AgentInputs:
    """What a paradigm's networks may read, time-major; batch dims `*B` are environments or samples.

    obs          float [T, *B, n, obs_dim]  each agent's own (restricted) observation
    last_action  int   [T, *B, n]           previous action, -1 at an episode's first step
    avail        bool  [T, *B, n, |A|]      available actions
    state        float [T, *B, state_dim]   global state (training only)
    reset        bool  [T, *B]              True where an episode starts: recurrent state is zeroed
    views        dict  name -> [T, *B, n, d] privileged per-agent views (e.g. full_obs)
    """

    obs: jax.Array
    last_action: jax.Array
    avail: jax.Array
    state: jax.Array
    reset: jax.Array
    views: dict[str, jax.Array] = struct.field(default_factory=dict)


@struct.dataclass
class ParadigmOutput:
    """scores: model name -> [T, *B, n, |A|]; extras: diagnostics a paradigm's loss needs (e.g. attention)."""

    scores: dict[str, jax.Array]
    extras: dict[str, jax.Array] = struct.field(default_factory=dict)


class Paradigm:
    """Base class; subclasses set the class attributes and implement `init`, `initial_carry`, `apply`, `export`."""

    name: ClassVar[str]
    required_views: ClassVar[tuple[str, ...]] = ()
    collect_model: str
    td_model: str
    select_model: str
    eval_models: tuple[str, ...]
    export_model: str
    own_optimizer: ClassVar[tuple[str, ...]] = ()
    config_section: ClassVar[str | None] = None  # the TrainConfig section holding this paradigm's options

    @classmethod
    def check_config(cls, config: TrainConfig) -> None:
        """Raise ConfigError / IncompatibleError for configurations this paradigm cannot run."""

    def __init__(self, config: TrainConfig, spec: EnvSpec):
        self.config = config
        self.spec = spec

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def apply(self, params: Any, carry: Any, inputs: AgentInputs) -> tuple[Any, ParadigmOutput]:
        raise NotImplementedError

    def auxiliary_loss(self, params: Any, output: ParadigmOutput, inputs: AgentInputs, mask: jax.Array,
                       env_steps: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Extra loss added to the backbone's, e.g. CADP's pruning term. mask: [T, *B] valid steps."""
        return jnp.float32(0.0), {}

    def export(self, params: Any) -> tuple[dict, Any]:
        """(policy spec, policy parameters) of `export_model`; see `ctde.policy`."""
        raise NotImplementedError
