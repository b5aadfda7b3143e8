"""The paradigm interface: which agent-side networks exist, what they see, which extra losses apply, which
network collects data and which one is exported for decentralized execution.

A backbone (value decomposition, MAPPO, ...) never looks inside a paradigm: it calls `apply` over time-major
sequences and reads the per-agent action scores of the model it needs by role:

    collect_model  acts in training rollouts
    learned_model  its scores are what the backbone learns: Q-values into the mixer, policy logits for MAPPO,
                   actor outputs for MADDPG; under DMIX its network has a quantile head
                   (`ctde.nets.rnn.value_scores`)
    select_model   picks the bootstrap action for double-Q targets (IGM-DA: the student)
    eval_models    greedily evaluated at every test interval
    export_model   becomes the decentralized policy artifact

A paradigm is one file: a subclass decorated with `@register_paradigm`, which makes `paradigm=<name>` a choice.
Options of its own are a dataclass of `ctde.config.option` fields named in `options`: they become the config
section named after it (`cadp.alpha=...`, in `ctde train --help` and saved configurations); setting them while
another paradigm is chosen is refused at start-up, and `resolve_options` checks them and fills their
data-dependent defaults into the saved configuration. What it needs of the backbone and the environment it
declares (`backbone_families`, `needs_mixer`, `needs_igm`, `needs_state`, `per_agent_networks`,
`required_views`, with `reasons`); `ctde.training.resolve` checks them against the backbone's capabilities
(`ctde.algos.BACKBONES`) in one place. A network it exports is registered beside it
(`ctde.policy.register_network`). `diagnostics` names `train/*` metrics of its auxiliary
loss that the run report plots; `plot_marks` gives env steps to mark on the report's curves.
A paradigm may also name models trained by their own optimizer (`own_optimizer`; same settings as the shared
one, which covers every other network and the mixer).

Adding a paradigm touches no backbone code.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from ctde import config as _config
from ctde.config import TrainConfig
from ctde.envs.base import EnvSpec

ALL_FAMILIES = ("value_decomposition", "policy_gradient", "actor_critic")


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
    summary: ClassVar[str] = ""  # one line in paradigm.name's help: "<name> = <summary>"
    options: ClassVar[type | None] = None  # its config section (a dataclass), named after it; None: no options
    required_views: ClassVar[tuple[str, ...]] = ()
    # What it needs, checked by ctde.training.resolve against the backbone's capabilities and the environment:
    backbone_families: ClassVar[tuple[str, ...]] = ALL_FAMILIES  # backbone families that can train it
    needs_mixer: ClassVar[bool] = False  # value decomposition through a mixer (not IQL)
    needs_igm: ClassVar[bool] = False  # a joint value whose maximum is at the agents' greedy actions
    needs_state: ClassVar[bool] = False  # a global state (state_dim >= 1)
    per_agent_networks: ClassVar[bool] = False  # honours algo.share_parameters=false (a network per agent)
    # Why, completing "paradigm=<name> ...", shown when a need is not met: keys "backbone" (its families),
    # "mixer", "igm" and "state" ("for ..." after "needs a global state").
    reasons: ClassVar[dict[str, str]] = {}
    # A note on an algorithm name where the refusal suggests it, e.g. {"dmix": "the paper's DMIX-DA"}.
    backbone_notes: ClassVar[dict[str, str]] = {}
    diagnostics: ClassVar[tuple[str, ...]] = ()
    collect_model: str
    learned_model: str
    select_model: str
    eval_models: tuple[str, ...]
    export_model: str
    # Stages after reinforcement learning, run by the host in order: "distill" (ctde.training.distill) trains
    # params[distill_student] through `distillation_rows` and `student_prediction`, with the options of the
    # paradigm's own config section (distill_episodes, holdout, distill_steps, ...).
    post_training: ClassVar[tuple[str, ...]] = ()
    # Distillation: teacher and student models (the student's name is also its key in the parameters); how many
    # leading axes of `distillation_rows` index one regression row ([T, E, n] per agent-step for PTDE, [T, E]
    # per step when a student reads all agents at once); the teacher's action choice while the data set is
    # collected ("greedy" or "sample" from its softmax); and the order rows are consumed in ("random" batches,
    # or "collection": consecutive batches in the order collected, `iterations_per_batch` steps on each).
    distill_teacher: ClassVar[str] = "teacher"
    distill_student: ClassVar[str] = "student"
    distill_row_dims: ClassVar[int] = 3
    distill_actions: ClassVar[str] = "greedy"
    distill_order: ClassVar[str] = "random"
    # Models trained by their own optimizer (e.g. a distilled student), separate from the shared one.
    own_optimizer: ClassVar[tuple[str, ...]] = ()
    # Evaluate with sampled (not mean) stochastic network parts, e.g. PTDE's z.
    stochastic_evaluation: bool = False

    @property
    def train_eval_models(self) -> tuple[str, ...]:
        """Models evaluated during reinforcement learning (by default all `eval_models`)."""
        return self.eval_models

    def __init__(self, config: TrainConfig, spec: EnvSpec):
        self.config = config
        self.spec = spec

    @classmethod
    def resolve_options(cls, config: TrainConfig) -> None:
        """Check this paradigm's options against `config` (raise ConfigError or IncompatibleError with the fix) and
        fill the defaults that depend on the rest of it, in place, so the saved configuration records them."""

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def initial_carry(self, batch_shape: tuple[int, ...]) -> Any:
        raise NotImplementedError

    def apply(self, params: Any, carry: Any, inputs: AgentInputs, rng: jax.Array | None = None
              ) -> tuple[Any, ParadigmOutput]:
        """Scores of every model over time-major `inputs`, from recurrent state `carry`.

        `rng` is given while training (acting in rollouts and in losses) for paradigms with stochastic
        networks (PTDE's sampled z); evaluation passes None, meaning deterministic.
        """
        raise NotImplementedError

    def auxiliary_loss(self, params: Any, output: ParadigmOutput, inputs: AgentInputs, mask: jax.Array,
                       env_steps: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Extra loss added to the backbone's, e.g. CADP's pruning term.

        mask: bool [T, *B, n], aligned with `output`'s time axis: the (step, agent) pairs that count. Value
        decomposition passes the valid steps for every agent (as pymarl); MAPPO also masks out dead agents.
        """
        return jnp.float32(0.0), {}

    def export(self, params: Any) -> tuple[dict, Any]:
        """(policy spec, policy parameters) of `export_model`; see `ctde.policy`."""
        raise NotImplementedError

    def distill_sampler(self, spec: EnvSpec):
        """The ActionSelector with which the teacher collects the distillation data when `distill_actions` is
        "sample" (see `ctde.algos.rollout`)."""
        raise NotImplementedError

    def plot_marks(self) -> dict[str, float]:
        """Labelled env steps to mark on learning curves (e.g. where a loss term switches on)."""
        return {}


# Registered paradigms, name -> class, in registration order (`paradigm=<name>`).
PARADIGMS: dict[str, type[Paradigm]] = {}


def register_paradigm(cls: type[Paradigm]) -> type[Paradigm]:
    """Class decorator: make `cls` the paradigm `paradigm=<cls.name>`, with its options section `cls.options`
    (`ctde.config.register_paradigm`). Registering a name again replaces it."""
    unknown = set(cls.backbone_families) - set(ALL_FAMILIES)
    if unknown:
        raise ValueError(f"paradigm {cls.name}: unknown backbone families {sorted(unknown)}; known: {ALL_FAMILIES}")
    _config.register_paradigm(cls.name, cls.summary, cls.options)
    PARADIGMS[cls.name] = cls
    return cls


def unregister_paradigm(name: str) -> None:
    """Forget paradigm `name` (tests that register one of their own)."""
    PARADIGMS.pop(name, None)
    _config.unregister_paradigm(name)
