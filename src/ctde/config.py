"""Typed run configuration, `key=value` overrides, and up-front validation.

A run is described by one `TrainConfig`: nested dataclasses whose fields carry their type, default and a
one-line meaning. The command line sets any field with a dotted `key=value` override (`algo.lr=1e-3`,
`env.sight_range=0`). A section named on its own sets its main field: `env=smax:3m` is `env.id=smax:3m`,
`algo=qmix` is `algo.name=qmix`, `paradigm=cadp` is `paradigm.name=cadp`.

Everything is checked before JAX compiles anything: unknown keys and values fail with the valid choices
and a "did you mean" suggestion.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from ctde.errors import ConfigError


def option(default: Any, help: str | Callable[[], str], choices: Callable[[], tuple[str, ...]] | None = None) -> Any:
    """A dataclass field with a one-line meaning shown by `ctde train --help`. `choices` (a function, read when
    the option is set or listed) makes a string option take one of the names it returns (paradigm.name: the
    registered paradigms); `help` may be a function too."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    return field(default=default, metadata=metadata)


def _help(f: dataclasses.Field) -> str:
    meaning = f.metadata.get("help", "")
    return meaning() if callable(meaning) else meaning


def section(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class EnvConfig:
    id: str = option("smax:3m", "environment as family:map; `ctde envs` lists them all")
    sight_range: float | None = option(
        None, "override every unit's sight range; 0 = see no other unit (own features and moves kept); "
        "None keeps each unit type's own range")
    episode_limit: int | None = option(
        None, "override the episode limit; None = the environment's own (SMAC's value for a SMAX map, 25 for MPE)")
    smac_parity: bool = option(
        True, "SMAC parity: SMAC's episode limits and team reward scaled to SMAC's per-episode maximum of 20")
    adversary_policy: Literal["heuristic", "random"] = option(
        "heuristic", "the fixed policy of MPE's non-learning side: simple_tag's prey, simple_push's adversary; "
        "heuristic = documented rule (ctde.envs.mpe: the prey flees the nearest predator, the adversary chases the "
        "good agent), random = uniform random action drawn from the step's key")
    continuous_actions: bool = option(
        False, "MPE: continuous actions, a 2-D force in [-1, 1]^2 per agent (MADDPG's tanh actors), instead of the "
        "5 discrete moves")
    # Tiny test environments (family `toy`) read these; SMAX ignores them.
    toy_size: int | None = option(None, "size parameter of a toy environment (None = its default)")
    _primary = "id"


@dataclass
class LTRConfig:
    """Options of env=ltr:<path>"""

    docs_per_query: int = option(
        10, "documents (agents) per query: a query's first docs_per_query documents in file order are kept, shorter "
        "queries are padded with masked documents")
    k: int = option(10, "NDCG cutoff: the team reward is NDCG@k of the ranking the agents' scores induce")
    split: Literal["seeded", "files"] = option(
        "seeded", "seeded: queries of all files pooled and split by query with ltr.split_seed into "
        "ltr.train_fraction (train) / the rest (test); files: the files' own train/vali/test names")
    train_fraction: float = option(0.7, "split=seeded: fraction of the queries used for training (the rest: test)")
    split_seed: int = option(0, "split=seeded: seed of the query permutation that makes the split")
    normalize: Literal["log", "standard", "none"] = option(
        "log", "feature scaling, from the training queries' real documents: log = signed log(1 + |x|), then each "
        "feature standardized (MSLR's raw counts reach 7.7e7); standard = standardized only; none = as in the files")


# The algorithm names `algo.name` accepts; `ctde.algos.BACKBONES` registers one learner for each (a test checks the
# two agree: config sits below algos and cannot read the registry).
ALGORITHMS = ("iql", "vdn", "qmix", "qplex", "qtran", "cw_qmix", "ow_qmix", "dmix", "mappo", "ippo", "maddpg")


@dataclass
class AlgoConfig:
    name: Literal[ALGORITHMS] = option(
        "qmix", "backbone: value decomposition iql (no mixer), vdn (sum), qmix (monotonic hypernet mixer), qplex "
        "(duplex dueling), qtran (QTRAN-base: joint Q and V with the two constraint losses), cw_qmix / ow_qmix "
        "(centrally / optimistically weighted QMIX with an unrestricted central Q*), dmix (distributional QMIX: "
        "per-agent quantiles, mean-shape mixture); on-policy mappo (centralized value) or ippo (per-agent value on "
        "local observations); off-policy actor-critic maddpg (deterministic actors, centralized critic "
        "Q(s, a_1..a_n))")
    optimizer: Literal["adam", "rmsprop"] = option("adam", "optimizer (rmsprop uses alpha 0.99, eps 1e-5 as pymarl)")
    lr: float = option(5e-4, "learning rate")
    grad_clip: float = option(10.0, "global gradient-norm clip")
    gamma: float = option(0.99, "discount")
    hidden_dim: int = option(64, "agent (and MAPPO value) network width (Linear -> GRU -> Linear)")
    share_parameters: bool = option(
        True, "paradigm=ctde: one agent network shared by all agents (the agent id is in its input); false = a "
        "network of each agent's own (MADDPG's original setting)")
    matmul_precision: Literal["float32", "bfloat16"] = option(
        "float32", "matmuls of every network in the gradient step: float32, or bfloat16 inputs with float32 "
        "accumulation (faster where the hardware has bfloat16 units: AVX512-BF16 CPUs, GPUs); parameters, "
        "rollouts, evaluation and the exported policy stay float32")
    cpu_kernels: Literal["auto", "ynnpack", "ynnpack_dots", "native"] = option(
        "auto", "XLA:CPU kernels of the compiled programs: ynnpack (XLA's default: dots and reductions in the "
        "YNNPACK library), ynnpack_dots (dots only), native (XLA's own kernels), or auto (per program: "
        "native for MAPPO/IPPO float32 and evaluation, ynnpack_dots for MAPPO/IPPO bfloat16, and for value "
        "decomposition ynnpack_dots from 512 env steps per update, ynnpack below; see docs/performance.md); "
        "ignored off the CPU")
    slice_rows: int | None = option(
        None, "agent-steps per gradient pass: a larger batch (replay sample, MAPPO minibatch) is processed in "
        "slices of whole sequences or segments whose loss is weighted by their share of the counted steps: the same "
        "update, in pieces that stay in the CPU cache and can run side by side (algo.slice_devices); 0 = the whole "
        "batch in one pass; None = the backbone's default: 4096 for value decomposition, 8192 for MAPPO/IPPO")
    slice_devices: int = option(
        0, "CPU devices (cores) the slices of a batch run on side by side, each summing its share: 0 = auto (value "
        "decomposition: as many as there are cores, up to the slice count; MAPPO/IPPO: 1), "
        "1 = one device; ignored off the CPU (see ctde.algos.slicing)")
    # Value decomposition and MADDPG (replay of whole episodes):
    batch_size: int = option(32, "sequences (episodes) per gradient update")
    buffer_size: int = option(5000, "replay capacity in sequences (episodes)")
    updates_per_rollout: int = option(
        4, "gradient updates after each rollout of rollout.num_envs sequences (pymarl: 1 per episode)")
    learning_starts: int = option(0, "env steps collected before the first update (besides a full batch)")
    # Value decomposition only:
    target_update_interval: int = option(200, "gradient updates between hard target-network copies")
    double_q: bool = option(True, "double Q-learning: argmax from the online network, value from the target")
    td_lambda: float = option(0.0, "TD(lambda) return; 0 = one-step TD")
    epsilon_start: float = option(1.0, "initial exploration rate")
    epsilon_finish: float = option(0.05, "final exploration rate")
    epsilon_anneal_steps: int | None = option(
        None, "env steps of linear epsilon decay; None = 50k, or 500k on the hard maps (ALGORITHMS.md)")
    mixer_embed_dim: int = option(32, "QMIX mixing embedding width")
    hypernet_layers: int = option(2, "QMIX hypernetwork depth (1 or 2)")
    hypernet_embed: int = option(64, "hidden width of QMIX and QPLEX hypernetworks")
    qplex_kernels: int = option(4, "QPLEX attention kernels for the advantage weights")
    # The seed papers' baselines (docs/backbones.md says where each default comes from):
    qtran_embed: int = option(64, "algo=qtran: width of the joint Q(s, u) and V(s) networks (pymarl qtran.yaml)")
    qtran_opt_weight: float = option(1.0, "algo=qtran: weight of L_opt, the constraint at the greedy joint action")
    qtran_nopt_weight: float = option(
        0.1, "algo=qtran: weight of L_nopt, the constraint min(sum_i Q_i - Q_jt + V, 0)^2 at the taken action")
    wqmix_alpha: float = option(
        0.1, "algo=cw_qmix/ow_qmix: the weight alpha of the joint actions the weighting does not favour (wqmix "
        "configs' w)")
    central_embed: int = option(256, "algo=cw_qmix/ow_qmix: width of the unrestricted central mixer of Q*")
    central_hidden: int = option(64, "algo=cw_qmix/ow_qmix: width of the central agent network (RNN) of Q*")
    central_loss_weight: float = option(1.0, "algo=cw_qmix/ow_qmix: weight of Q*'s own TD loss")
    quantiles: int = option(8, "algo=dmix: quantiles of each agent's return distribution (fixed fractions)")
    quantile_kappa: float = option(1.0, "algo=dmix: kappa of the quantile Huber loss")
    _primary = "name"

    @property
    def value_quantiles(self) -> int:
        """Quantiles per action that the learned model's (`learned_model`) network outputs: `quantiles` for DMIX,
        0 (one expected value per action) for every other backbone. Paradigms size their networks' heads with it."""
        return self.quantiles if self.name == "dmix" else 0


@dataclass
class PPOConfig:
    """MAPPO / IPPO options (defaults: CADP's MAPPO experiments, after Yu et al. 2022)."""

    epochs: int = option(5, "passes over each rollout")
    minibatches: int = option(1, "minibatches per pass (each a set of whole-environment segments)")
    clip: float = option(0.2, "PPO ratio clip, also the value-clip range")
    entropy_coef: float = option(0.01, "entropy bonus weight")
    value_coef: float = option(1.0, "value loss weight")
    gae_lambda: float = option(0.95, "GAE lambda")
    huber_delta: float = option(10.0, "Huber loss delta for the value loss")
    value_clip: bool = option(True, "clip value updates around the rollout's values")
    value_norm: bool = option(True, "normalize value targets with running statistics (MAPPO's ValueNorm)")
    segment_length: int = option(10, "steps per recurrent training segment (MAPPO's data chunk length; formerly "
                                 "ppo.chunk_length, still accepted)")
    critic_input: Literal["state", "agent_specific"] = option(
        "state", "MAPPO value input: the global state (one value per environment, MAPPO's EP), or agent-specific "
        "(state + own observation + agent id, one value per agent); IPPO always uses the agent's own observation + id")


@dataclass
class MADDPGConfig:
    """MADDPG options (algo=maddpg; defaults after EPyMARL's maddpg and the MADDPG paper, see the README)."""

    tau: float = option(0.01, "Polyak rate of the soft target updates after every gradient step (actor and critic)")
    critic_hidden: int = option(128, "width of the centralized critic MLP (state + joint action -> 2 layers -> Q)")
    actor_reg: float = option(1e-3, "weight of the mean squared actor logits in the actor loss (keeps logits bounded)")
    gumbel_temperature: float = option(
        1.0, "temperature of the Gumbel-softmax relaxation of discrete actions (acting samples, the actor loss's "
        "straight-through gradient)")
    critic_lr: float | None = option(None, "critic learning rate; None = algo.lr")
    noise_std: float = option(
        0.1, "continuous actions: standard deviation of the Gaussian exploration noise added to the tanh actions "
        "in rollouts (then clipped to [-1, 1])")


# ---------------------------------------------------------------------------------------------------------
# Paradigms and their option sections: registered by `ctde.paradigms.base.register_paradigm` (config sits below
# the paradigms and never imports them). A paradigm's section is named after it (`cadp.alpha=...`), comes right
# after `paradigm` in the configuration, and is refused while another paradigm is chosen.

# name -> (one-line summary for paradigm.name's help, its options section class or None), in registration order.
PARADIGM_REGISTRY: dict[str, tuple[str, type | None]] = {}


def register_paradigm(name: str, summary: str, options: type | None = None) -> None:
    """Make `paradigm=<name>` a valid choice and, with `options` (a dataclass of `option` fields), `<name>.*` a
    section of every `TrainConfig` made from now on. Registering a name again replaces it."""
    static = {f.name for f in dataclasses.fields(TrainConfig)}
    if name in static or not name.isidentifier():
        raise ValueError(f"paradigm name {name!r} is not an identifier or clashes with a configuration section")
    if options is not None and not dataclasses.is_dataclass(options):
        raise TypeError(f"paradigm={name}: its options must be a dataclass, got {options!r}")
    PARADIGM_REGISTRY[name] = (summary, options)


def unregister_paradigm(name: str) -> None:
    PARADIGM_REGISTRY.pop(name, None)


def paradigm_names() -> tuple[str, ...]:
    return tuple(PARADIGM_REGISTRY)


def _paradigm_help() -> str:
    return "how centralized information shapes training: " + "; ".join(
        f"{name} = {summary}" for name, (summary, _) in PARADIGM_REGISTRY.items())


@dataclass
class ParadigmConfig:
    name: str = option("ctde", _paradigm_help, choices=paradigm_names)
    _primary = "name"


def paradigm_sections() -> dict[str, type]:
    """Registered paradigms' option sections: name -> section class."""
    return {name: options for name, (_, options) in PARADIGM_REGISTRY.items() if options is not None}


@dataclass
class DistillationOptions:
    """Stage 2 (distillation, `ctde.training.distill`): the options every distilling paradigm's section shares.
    Its defaults are PTDE's; a section gives its own with `DistillationOptions.default` (same help)."""

    distill_episodes: int = option(
        100, "stage 2: episodes per seed of the stage-1 teacher (greedy, or sampling as it collected where the "
        "paradigm distils from its sampled actions: CTEDD) whose steps make the distillation data set")
    holdout: float = option(0.2, "stage 2: fraction of those episodes held out to measure generalization")
    distill_steps: int = option(500_000, "stage 2: student regression steps in all (passes over the data repeat)")
    distill_batch: int = option(
        2048, "stage 2: rows per regression step (drawn at random, or consecutive in collection order where the "
        "paradigm consumes them so: CTEDD)")
    distill_lr: float = option(1e-4, "stage 2: Adam learning rate")
    distill_log_every: int = option(1000, "stage 2: steps between logged train / held-out losses")

    @classmethod
    def default(cls, name: str, value: Any) -> Any:
        """The shared option `name` with another default (same help): for a section's own defaults."""
        shared = next(f for f in dataclasses.fields(DistillationOptions) if f.name == name)
        return option(value, shared.metadata["help"])

    def checks(self, section: str) -> list[tuple[bool, str]]:
        """The shared options' conditions, for `ctde.errors.require`, named within `section`."""
        return [
            (0 < self.holdout < 1, f"{section}.holdout must be in (0, 1)"),
            (self.distill_episodes >= 2, f"{section}.distill_episodes must be at least 2 (training and held-out)"),
            (self.distill_steps >= 1 and self.distill_batch >= 1,
             f"{section}.distill_steps and {section}.distill_batch must be positive"),
            (self.distill_lr > 0, f"{section}.distill_lr must be positive"),
        ]


@dataclass
class RolloutConfig:
    num_envs: int = option(8, "parallel environments per rollout")
    length: int | None = option(
        None, "steps per rollout; None = the episode limit, one whole episode per environment (value "
        "decomposition), or 400 (MAPPO)")
    auto_reset: bool | None = option(
        None, "reset finished environments inside a rollout (JaxMARL style); false pads after the episode ends; "
        "None = false for value decomposition, true for MAPPO (whose environments also continue across rollouts)")
    host_processes: bool | None = option(
        None, "host-side environments (smac, smaclite, grf, hostenv): each in its own process (true) or all in the "
        "trainer's (false); None = own processes when there are several (seeds x num_envs > 1)")


@dataclass
class EvalConfig:
    interval: int = option(10_000, "env steps between greedy evaluations")
    episodes: int = option(32, "greedy episodes per evaluation (run in parallel)")


@dataclass
class LogConfig:
    chunk_evals: int = option(
        2, "evaluations per compiled chunk; the host logs, draws progress and checkpoints once per chunk")
    checkpoint_every: int = option(1, "write a checkpoint every this many chunks (0 = only at the end)")
    checkpoints_kept: int = option(2, "how many recent checkpoints to keep")
    tensorboard: bool = option(True, "write TensorBoard event files")
    progress: bool = option(True, "draw a progress bar")
    wandb: bool = option(
        False, "also log the metric rows to Weights & Biases, one W&B run per seed (pip install 'ctde[wandb]'); "
        "WANDB_MODE=offline writes them under <run>/wandb/ for a later `wandb sync`")
    wandb_project: str = option("ctde", "W&B project (log.wandb=true)")
    wandb_entity: str | None = option(None, "W&B entity, a user or team (None = your default entity)")
    wandb_group: str | None = option(None, "W&B group of the run's seeds (None = the run directory's name)")


@dataclass(eq=False)
class TrainConfig:
    env: EnvConfig = section(EnvConfig, "environment")
    ltr: LTRConfig = section(LTRConfig, "Learning-to-Rank options (env=ltr:<path>)")
    algo: AlgoConfig = section(AlgoConfig, "backbone and its learner")
    ppo: PPOConfig = section(PPOConfig, "MAPPO / IPPO options")
    maddpg: MADDPGConfig = section(MADDPGConfig, "MADDPG options")
    paradigm: ParadigmConfig = section(ParadigmConfig, "training paradigm")
    # ... then each registered paradigm's own section (`paradigm_sections`), e.g. cadp: CADP options
    rollout: RolloutConfig = section(RolloutConfig, "data collection")
    eval: EvalConfig = section(EvalConfig, "greedy evaluation during training")
    log: LogConfig = section(LogConfig, "logging, progress and checkpoints")
    steps: int = option(2_000_000, "env steps per seed")
    seeds: int = option(1, "independent seeds, vmapped in one compiled program")
    seed: int = option(0, "base random seed; seed k of a run uses seed + k")
    out: str | None = option(None, "run directory; None = runs/<env>_<algo>_<paradigm>_<time>")

    def __post_init__(self):
        for name, options in paradigm_sections().items():
            if not hasattr(self, name):
                setattr(self, name, options())

    def __getattr__(self, name):  # only for attributes not set: a section registered after this config was made
        options = paradigm_sections().get(name)
        if options is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        setattr(self, name, options())
        return getattr(self, name)

    def __eq__(self, other):
        return type(other) is TrainConfig and to_dict(self) == to_dict(other)


# ---------------------------------------------------------------------------------------------------------
# Reflection helpers


def _field_types(cls: type) -> dict[str, Any]:
    """Each field's type; an option with `choices` is a Literal of the current ones, a paradigm's section its class."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "choices" in f.metadata:
            hints[f.name] = Literal[tuple(f.metadata["choices"]())]
    if cls is TrainConfig:
        hints.update(paradigm_sections())
    return hints


def _public_fields(cls: type) -> list[dataclasses.Field]:
    """The options and sections of `cls` in order; for TrainConfig the registered paradigms' sections follow
    `paradigm`."""
    fields = [f for f in dataclasses.fields(cls) if not f.name.startswith("_")]
    if cls is not TrainConfig:
        return fields
    at = next(i for i, f in enumerate(fields) if f.name == "paradigm") + 1
    return fields[:at] + [_section_field(name, options) for name, options in paradigm_sections().items()] + fields[at:]


def _section_field(name: str, options: type) -> dataclasses.Field:
    f = section(options, (options.__doc__ or f"options of paradigm={name}").strip().splitlines()[0])
    f.name, f.type = name, options
    return f


def iter_options(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, Any, Any, str]]:
    """Every leaf option as (dotted key, type, default, help), in declaration order."""
    rows = []
    hints = _field_types(cls)
    for f in _public_fields(cls):
        key = prefix + f.name
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            rows.extend(iter_options(kind, key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((key, kind, default, _help(f)))
    return rows


def type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "{" + ",".join(str(c) for c in typing.get_args(kind)) + "}"
    if origin in (typing.Union, types.UnionType):
        return "|".join(type_name(a) for a in typing.get_args(kind))
    if kind is type(None):
        return "None"
    return getattr(kind, "__name__", str(kind))


def _suggest(word: str, candidates: list[str], near_best: bool = False) -> str:
    """The "Did you mean ...?" hint: up to 3 close candidates; `near_best`: only those about as close as the
    closest (a typo of a dotted key, 'algo.lrr', also resembles its section and that section's longer keys)."""
    close = difflib.get_close_matches(word, candidates, n=3, cutoff=0.5)
    if near_best and close:
        ratio = {c: difflib.SequenceMatcher(None, word, c).ratio() for c in close}
        close = [c for c in close if ratio[c] >= ratio[close[0]] - 0.1]
    return f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def coerce(key: str, raw: Any, kind: Any) -> Any:
    """Convert `raw` (a string from the command line, or a YAML value) to `kind`, or raise ConfigError."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(kind)
        if type(None) in args and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(key, raw, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}={raw!r}: expected {type_name(kind)}.")
    if origin is Literal:
        choices = [str(c) for c in typing.get_args(kind)]
        if str(raw) not in choices:
            raise ConfigError(
                f"{key}={raw!r} is not a valid choice; valid: {', '.join(choices)}.{_suggest(str(raw), choices)}")
        return str(raw)
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}={raw!r}: expected true or false.")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{key}={raw!r}: expected an integer.")
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r}: expected an integer (2e6 style is fine).") from None
        if not math.isfinite(value):  # float() reads inf and nan; neither is a count ("got a fraction" would mislead)
            raise ConfigError(f"{key}={raw!r}: expected an integer, got a value that is not finite.")
        if not value.is_integer():
            raise ConfigError(f"{key}={raw!r}: expected an integer, got a fraction.")
        return int(value)
    if kind is float:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}={raw!r}: expected a number.") from None
    if kind is str:
        return str(raw)
    raise ConfigError(f"{key}: unsupported option type {kind!r}")  # pragma: no cover - programming error


# Options renamed since a release: the old key still sets the new one (saved run configurations keep loading).
RENAMED_OPTIONS = {"ppo.chunk_length": "ppo.segment_length"}


def set_option(config: TrainConfig, key: str, raw: Any) -> None:
    """Set a dotted option on `config` in place, resolving section shorthands and validating the value."""
    key = RENAMED_OPTIONS.get(key, key)
    parts = key.split(".")
    target: Any = config
    for depth, part in enumerate(parts):
        cls = type(target)
        names = [f.name for f in _public_fields(cls)]
        if part not in names:
            scope = ".".join(parts[:depth])
            # Every option and section name, once (top-level options such as `steps` are both).
            every = [k for k, *_ in iter_options()] + [f.name for f in _public_fields(TrainConfig)]
            all_keys = list(dict.fromkeys(every))
            where = f" in section '{scope}'" if scope else ""
            raise ConfigError(
                f"Unknown option '{key}'{where}.{_suggest(key, all_keys, near_best=True)} Run `ctde train --help` for "
                f"every option.")
        kind = _field_types(cls)[part]
        if dataclasses.is_dataclass(kind):
            target = getattr(target, part)
            if depth == len(parts) - 1:
                # `env=smax:3m`: the section's main field.
                primary = getattr(kind, "_primary", None)
                if primary is None:
                    raise ConfigError(f"'{key}' is a section; set one of its options, e.g. {key}.<option>=...")
                setattr(target, primary, coerce(f"{key}.{primary}", raw, _field_types(kind)[primary]))
            continue
        if depth != len(parts) - 1:
            raise ConfigError(f"'{'.'.join(parts[:depth + 1])}' is an option, not a section (in '{key}').")
        setattr(target, part, coerce(key, raw, kind))


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for arg in args:
        if "=" not in arg or arg.startswith("="):
            raise ConfigError(f"Expected key=value, got {arg!r}. Example: ctde train env=smax:3m algo=qmix")
        key, value = arg.split("=", 1)
        pairs.append((key.strip(), value.strip()))
    return pairs


def _flatten(data: dict, prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in data.items():
        if isinstance(value, dict):
            items.extend(_flatten(value, f"{prefix}{key}."))
        else:
            items.append((f"{prefix}{key}", value))
    return items


def from_dict(data: dict, base: TrainConfig | None = None) -> TrainConfig:
    config = base if base is not None else TrainConfig()
    for key, value in _flatten(data):
        set_option(config, key, value)
    return config


def to_dict(config: Any) -> dict:
    return {f.name: (to_dict(getattr(config, f.name)) if dataclasses.is_dataclass(getattr(config, f.name))
                     else getattr(config, f.name)) for f in _public_fields(type(config))}


def load_yaml(path: str | Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist.") from None
    except IsADirectoryError:
        raise ConfigError(f"Config file {path} is a folder, not a YAML file. Give the path of a .yaml file.") from None
    except UnicodeDecodeError:
        raise ConfigError(f"Config file {path} is not a text file (not UTF-8); give a YAML file of options.") from None
    except OSError as e:  # permissions, a broken link, ...: say which file and why, not a traceback
        raise ConfigError(f"Config file {path} cannot be read: {e.strerror or e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"Config file {path} must hold a mapping of options, got {type(data).__name__}.")
    return data


def build_config(overrides: list[str] | None = None, config_file: str | Path | None = None,
                 base: TrainConfig | None = None) -> TrainConfig:
    """Defaults, then a YAML file, then `key=value` overrides, each checked as it is applied."""
    config = base if base is not None else TrainConfig()
    if config_file is not None:
        data = load_yaml(config_file)  # its own errors name the file
        try:
            config = from_dict(data, config)
        except ConfigError as e:
            # A bad option in the file: say which file, or the user looks for it on the command line.
            raise ConfigError(f"Config file {config_file}: {e}") from None
    for key, value in parse_overrides(overrides or []):
        set_option(config, key, value)
    return config


def save_config(config: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def help_text() -> str:
    lines = ["Options (key=value; a section name alone sets its main field, e.g. env=smax:3m algo=qmix):", ""]
    current = None
    for key, kind, default, meaning in iter_options():
        head = key.split(".")[0] if "." in key else ""
        if head != current:
            current = head
            if head:
                lines.append(f"[{head}]")
        lines.append(f"  {key:<30} {type_name(kind):<28} default: {default!r}")
        lines.append(f"      {meaning}")
    return "\n".join(lines)
