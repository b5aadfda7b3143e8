"""Up-front validation of a whole configuration and resolution of its data-dependent defaults.

Runs before anything compiles: every impossible value or combination fails here with the fix.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
from pathlib import Path

from ctde.algos import BACKBONES, BackboneEntry
from ctde.config import AlgoConfig, LTRConfig, TrainConfig, to_dict
from ctde import envs
from ctde.envs import check_env, split_id
from ctde.envs.base import EnvSpec
from ctde.envs.host import FULL_SIGHT_REFUSALS, is_host_family, refuse_views
from ctde.envs.smax import HARD_MAPS
from ctde.errors import ConfigError, IncompatibleError, require
from ctde.paradigms import PARADIGMS, Paradigm


def resolve(config: TrainConfig) -> TrainConfig:
    """Validate `config` and return a copy with defaults that depend on the map filled in."""
    config = copy.deepcopy(config)
    check_env(config.env, config.ltr)
    algo, rollout, ev, log = config.algo, config.rollout, config.eval, config.log
    if config.algo.name not in BACKBONES:
        raise ConfigError(f"algo={config.algo.name!r} is not available; valid: {', '.join(BACKBONES)}.")

    paradigm = PARADIGMS[config.paradigm.name]
    _check_host_side(config, paradigm)
    spec = envs.make_env(config.env, ltr_options=config.ltr).spec  # cheap: builds no JAX program (LTR data: read once)
    missing = [view for view in paradigm.required_views if view not in spec.available_views]
    if missing:
        offered = ", ".join(spec.available_views) or "none"
        raise IncompatibleError(
            f"paradigm={paradigm.name} needs the privileged view(s) {missing}, which {spec.id} does not offer "
            f"(it offers: {offered}). Choose an environment that provides {missing[0]} (e.g. a smax map).")

    checks = [
        (config.steps > 0, "steps must be positive"),
        (config.seeds >= 1, "seeds must be at least 1"),
        (rollout.num_envs >= 1, "rollout.num_envs must be at least 1"),
        (ev.interval >= 1, "eval.interval must be at least 1 env step"),
        (ev.episodes >= 1, "eval.episodes must be at least 1"),
        (log.chunk_evals >= 1, "log.chunk_evals must be at least 1"),
        (log.checkpoint_every >= 0, "log.checkpoint_every must be 0 (only at the end) or positive"),
        (algo.lr > 0, "algo.lr must be positive"),
        (0 < algo.gamma <= 1, "algo.gamma must be in (0, 1]"),
        (0 <= algo.td_lambda <= 1, "algo.td_lambda must be in [0, 1]"),
        (algo.batch_size >= 1, "algo.batch_size must be at least 1"),
        (algo.batch_size <= algo.buffer_size, "algo.batch_size cannot exceed algo.buffer_size"),
        (algo.updates_per_rollout >= 1, "algo.updates_per_rollout must be at least 1"),
        (algo.target_update_interval >= 1, "algo.target_update_interval must be at least 1"),
        (algo.hypernet_layers in (1, 2), "algo.hypernet_layers must be 1 or 2"),
        (algo.qplex_kernels >= 1, "algo.qplex_kernels must be at least 1"),
        (algo.qtran_embed >= 1 and algo.central_embed >= 1 and algo.central_hidden >= 1,
         "algo.qtran_embed, algo.central_embed and algo.central_hidden must be positive"),
        (algo.qtran_opt_weight >= 0 and algo.qtran_nopt_weight >= 0 and algo.central_loss_weight >= 0,
         "algo.qtran_opt_weight, algo.qtran_nopt_weight and algo.central_loss_weight must be non-negative"),
        (0 <= algo.wqmix_alpha <= 1, "algo.wqmix_alpha must be in [0, 1]"),
        (algo.quantiles >= 2, "algo.quantiles must be at least 2"),
        (algo.quantile_kappa > 0, "algo.quantile_kappa must be positive"),
        (0 <= algo.epsilon_finish <= 1 and 0 <= algo.epsilon_start <= 1, "epsilon values must be in [0, 1]"),
        (algo.hidden_dim >= 1, "algo.hidden_dim must be positive"),
        (algo.grad_clip > 0, "algo.grad_clip must be positive"),
        (algo.slice_rows is None or algo.slice_rows >= 0,
         "algo.slice_rows must be 0 (the whole batch in one pass) or positive"),
        (algo.slice_devices >= 0, "algo.slice_devices must be 0 (automatic) or positive"),
    ]
    require(checks)
    _check_step_counts(config)
    _check_out(config.out)
    _check_wandb(config)
    kind = BACKBONES[algo.name].capabilities.family
    on_policy = kind == "policy_gradient"
    _refuse_unused_options(config)
    _refuse_other_paradigm_options(config)
    _refuse_ltr_options_elsewhere(config)
    check_pairing(config, paradigm, spec)
    if on_policy:
        ppo = config.ppo
        if rollout.auto_reset is False:
            raise ConfigError(f"algo={algo.name} keeps its environments running across rollouts; "
                              f"rollout.auto_reset=false (padded whole episodes) is for value decomposition.")
        rollout.auto_reset = True
        rollout.length = rollout.length or 400
        require([
            (ppo.epochs >= 1 and ppo.minibatches >= 1, "ppo.epochs and ppo.minibatches must be at least 1"),
            (ppo.segment_length >= 1, "ppo.segment_length must be at least 1"),
            (0 < ppo.clip < 1, "ppo.clip must be in (0, 1)"),
            (0 <= ppo.gae_lambda <= 1, "ppo.gae_lambda must be in [0, 1]"),
        ])
        if rollout.length % ppo.segment_length:
            raise ConfigError(f"rollout.length={rollout.length} must be a multiple of ppo.segment_length="
                              f"{ppo.segment_length}: training segments tile each rollout.")
        segments = rollout.num_envs * rollout.length // ppo.segment_length
        if segments % ppo.minibatches:
            raise ConfigError(f"The rollout holds {segments} segments (rollout.num_envs x rollout.length / "
                              f"ppo.segment_length), which ppo.minibatches={ppo.minibatches} does not divide.")
    else:
        rollout.auto_reset = bool(rollout.auto_reset)
    if rollout.length is not None:
        if rollout.length < 1:
            raise ConfigError("rollout.length must be positive (or None for one episode per environment).")
        if not rollout.auto_reset and rollout.length < spec.episode_limit:
            raise ConfigError(
                f"rollout.length={rollout.length} is shorter than the episode limit ({spec.episode_limit}) and "
                f"rollout.auto_reset is false, so episodes would be cut without a reset. Set rollout.auto_reset=true "
                f"(JaxMARL style) or leave rollout.length unset (one whole episode per environment).")

    family, name = split_id(config.env.id)
    if algo.epsilon_anneal_steps is None and kind == "value_decomposition":
        algo.epsilon_anneal_steps = 500_000 if family in ("smax", "smac", "smaclite") and name in HARD_MAPS else 50_000
    if config.env.episode_limit is None and family in ("smax", "mpe"):
        config.env.episode_limit = spec.episode_limit
    paradigm.resolve_options(config)
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        config.out = f"runs/{family}_{name}_{algo.name}_{config.paradigm.name}_{stamp}"
    return config


# The device counts env steps in int32 (2,147,483,647 at most). The last evaluation mark (steps rounded up to a
# multiple of eval.interval) must fit, with room left for the rollout a seed may run past it.
MAX_ENV_STEPS = 2_000_000_000


def _check_step_counts(config: TrainConfig) -> None:
    last_mark = -(-config.steps // config.eval.interval) * config.eval.interval
    if last_mark > MAX_ENV_STEPS:
        raise ConfigError(
            f"steps={config.steps:,} (last evaluation at {last_mark:,} env steps with eval.interval="
            f"{config.eval.interval:,}) is more than a run can count: at most {MAX_ENV_STEPS:,} env steps per seed "
            f"(the device counts them in 32 bits). Lower steps (or eval.interval).")


def _check_wandb(config: TrainConfig) -> None:
    """log.wandb=true needs the optional wandb package; say so before anything compiles (the logger imports it
    only when enabled)."""
    if not config.log.wandb:
        return
    # Already imported (or a stand-in put there by a test) counts; find_spec would refuse a module without a spec.
    if sys.modules.get("wandb") is None and importlib.util.find_spec("wandb") is None:
        raise ConfigError("log.wandb=true needs the wandb package, which is not installed: pip install "
                          "'ctde[wandb]' (or pip install wandb), or set log.wandb=false. TensorBoard and CSV "
                          "logging need nothing extra.")
    if not config.log.wandb_project:
        raise ConfigError("log.wandb_project must name a W&B project (default: ctde).")


def _check_out(out: str | None) -> None:
    """out= must be (or become) a folder: refuse it when it, or a folder it would be created in, is a file,
    before anything is written (the runner would otherwise stop with an OS error's traceback)."""
    if out is None:
        return
    path = Path(out).expanduser()
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return
        if candidate.exists():
            if candidate == path:
                raise ConfigError(f"out={out} is a file, not a run directory. Choose another out=<folder>.")
            raise ConfigError(f"out={out} cannot be created: {candidate} is a file, not a folder. Choose another "
                              f"out=<folder>.")


# Options that only some kinds of backbone read. Setting one for another kind is a mistake worth reporting.
_REPLAY_BACKBONES = ("value_decomposition", "actor_critic")
_VALUE_DECOMPOSITION = ("value_decomposition",)
ALGO_OPTIONS_READ_BY = {
    **{k: _REPLAY_BACKBONES for k in ("batch_size", "buffer_size", "updates_per_rollout", "learning_starts")},
    **{k: _VALUE_DECOMPOSITION for k in ("optimizer", "target_update_interval", "double_q", "td_lambda",
                                         "epsilon_start", "epsilon_finish", "epsilon_anneal_steps", "mixer_embed_dim",
                                         "hypernet_layers", "hypernet_embed", "qplex_kernels")},
    **{k: ("value_decomposition", "policy_gradient") for k in ("slice_rows", "slice_devices")},
}
# Options of one value-decomposition algorithm (or two): set with another algo, they are refused like the above.
ALGO_OPTIONS_READ_BY_NAME = {
    **{k: ("qtran",) for k in ("qtran_embed", "qtran_opt_weight", "qtran_nopt_weight")},
    **{k: ("cw_qmix", "ow_qmix") for k in ("wqmix_alpha", "central_embed", "central_hidden", "central_loss_weight")},
    **{k: ("dmix",) for k in ("quantiles", "quantile_kappa")},
}


def _algos(names, notes: dict[str, str] | None = None) -> str:
    """'algo=a', 'algo=a or algo=b', 'algo=a, algo=b or algo=c'; `notes` adds ' (note)' after a name."""
    notes = notes or {}
    names = [f"algo={name}" + (f" ({notes[name]})" if name in notes else "") for name in names]
    return " or ".join(names) if len(names) < 3 else f"{', '.join(names[:-1])} or {names[-1]}"


def _refuse_unused_options(config: TrainConfig) -> None:
    family = BACKBONES[config.algo.name].capabilities.family
    defaults = AlgoConfig()
    changed = [f"algo.{k}" for k, families in ALGO_OPTIONS_READ_BY.items()
               if family not in families and getattr(config.algo, k) != getattr(defaults, k)]
    if changed:
        raise ConfigError(f"{', '.join(changed)} {'is' if len(changed) == 1 else 'are'} not read by algo="
                          f"{config.algo.name} (a {family.replace('_', '-')} backbone); remove "
                          f"{'it' if len(changed) == 1 else 'them'}. Run `ctde train --help` for what each option "
                          f"applies to.")
    for key, readers in ALGO_OPTIONS_READ_BY_NAME.items():
        if config.algo.name not in readers and getattr(config.algo, key) != getattr(defaults, key):
            raise ConfigError(f"algo.{key} is read only by {' and '.join(f'algo={r}' for r in readers)}; algo="
                              f"{config.algo.name} would ignore it. Remove it or choose "
                              f"{' or '.join(f'algo={r}' for r in readers)}.")
    # The sections of backbones' own options (ppo, maddpg): set for another backbone, they are refused too.
    for name in dict.fromkeys(entry.section for entry in BACKBONES.values() if entry.section):
        readers = [algo for algo, entry in BACKBONES.items() if entry.section == name]
        if config.algo.name in readers:
            continue
        who = _algos(readers)
        section = getattr(config, name)
        section_defaults = to_dict(type(section)())
        changed = [f"{name}.{k}" for k, v in to_dict(section).items() if v != section_defaults[k]]
        if changed:
            raise ConfigError(f"{', '.join(changed)} only affect {who}; algo={config.algo.name} would ignore "
                              f"them. Remove them or choose {who}.")


FAMILY_WORDS = {"value_decomposition": "value-decomposition", "policy_gradient": "policy-gradient (MAPPO, IPPO)",
                "actor_critic": "actor-critic (MADDPG)"}


def _meets(paradigm: type[Paradigm], entry: BackboneEntry) -> bool:
    """Whether backbone `entry` has what `paradigm` declares it needs."""
    caps = entry.capabilities
    return (caps.family in paradigm.backbone_families and (entry.mixer or not paradigm.needs_mixer)
            and (caps.igm or not paradigm.needs_igm))


def check_pairing(config: TrainConfig, paradigm: type[Paradigm], spec: EnvSpec) -> None:
    """The one check of a paradigm against the backbone and the environment: what the paradigm declares it needs
    (`ctde.paradigms.base.Paradigm`: backbone families, mixer, IGM, global state, per-agent networks) against
    what the backbone declares it is (`ctde.algos.BACKBONES`: capabilities) and what the environment offers.
    Each refusal says why (the paradigm's `reasons`) and which choices would work."""
    name, algo = paradigm.name, config.algo.name
    entry = BACKBONES[algo]
    caps = entry.capabilities
    fits = _algos([a for a, e in BACKBONES.items() if _meets(paradigm, e)], paradigm.backbone_notes)
    if not config.algo.share_parameters and not paradigm.per_agent_networks:
        hosts = " or ".join(f"paradigm={p}" for p, cls in PARADIGMS.items() if cls.per_agent_networks)
        raise ConfigError(f"algo.share_parameters=false is available with {hosts}; paradigm={name} shares its agent "
                          f"networks. Remove algo.share_parameters or use {hosts}.")
    if spec.continuous_actions and not caps.continuous_actions:
        able = [a for a, e in BACKBONES.items() if e.capabilities.continuous_actions]
        raise IncompatibleError(f"{spec.id} has continuous actions (env.continuous_actions=true) and algo={algo} "
                                f"chooses among discrete ones. Use {_algos(able)}, or drop env.continuous_actions.")
    if caps.family not in paradigm.backbone_families:
        if "backbone" in paradigm.reasons:
            raise IncompatibleError(f"paradigm={name} {paradigm.reasons['backbone']}, which algo={algo} does not "
                                    f"have. Use {fits}.")
        hosted = [p for p, cls in PARADIGMS.items() if caps.family in cls.backbone_families]
        families = " or ".join(FAMILY_WORDS[f] for f in paradigm.backbone_families)
        raise IncompatibleError(f"paradigm={name} is not available on algo={algo}; it hosts {' and '.join(hosted)}. "
                                f"Choose one of those, or a {families} backbone for {name}.")
    if paradigm.needs_mixer and not entry.mixer:
        raise IncompatibleError(f"paradigm={name} {paradigm.reasons.get('mixer', 'needs a mixer')}; algo={algo} has "
                                f"no mixer. Use {fits}.")
    if paradigm.needs_igm and not caps.igm:
        raise IncompatibleError(f"paradigm={name} {paradigm.reasons.get('igm', 'needs an IGM joint value')}; "
                                f"algo={algo}'s joint value is not IGM by construction (its maximum need not be at "
                                f"the agents' greedy actions). Use an IGM backbone: {fits}.")
    if paradigm.needs_state and spec.state_dim < 1:
        why = paradigm.reasons.get("state", "")
        raise IncompatibleError(f"paradigm={name} needs a global state{' ' + why if why else ''}, and {spec.id} "
                                f"provides none. Choose an environment with a global state (e.g. mpe:simple_tag).")


def _refuse_ltr_options_elsewhere(config: TrainConfig) -> None:
    if config.env.id.startswith("ltr:"):
        return
    defaults = to_dict(LTRConfig())
    changed = [f"ltr.{k}" for k, v in to_dict(config.ltr).items() if v != defaults[k]]
    if changed:
        raise ConfigError(f"{', '.join(changed)} configure{'s' if len(changed) == 1 else ''} Learning-to-Rank "
                          f"environments, but env={config.env.id}. Use env=ltr:<file or folder> or remove them.")


def _refuse_other_paradigm_options(config: TrainConfig) -> None:
    """A paradigm's own section (`cadp.*`, `ptde.*`, ...) set while another paradigm is chosen is a mistake."""
    for name, paradigm in PARADIGMS.items():
        if name == config.paradigm.name or paradigm.options is None:
            continue
        section = getattr(config, name)
        defaults = to_dict(paradigm.options())
        changed = [f"{name}.{k}" for k, v in to_dict(section).items() if v != defaults[k]]
        if changed:
            verb, them = ("configures", "it") if len(changed) == 1 else ("configure", "them")
            raise ConfigError(f"{', '.join(changed)} {verb} paradigm={name}, but paradigm={config.paradigm.name}. "
                              f"Add paradigm={name} or remove {them}.")


def _check_host_side(config: TrainConfig, paradigm) -> None:
    """What the host loop (`ctde.training.host`: SMAC, SMAClite, GRF, hostenv) can run, refused with the reason."""
    family, name = split_id(config.env.id)
    if not is_host_family(family):
        if config.rollout.host_processes is not None:
            raise ConfigError(f"rollout.host_processes places host-side environments (smac, smaclite, grf, hostenv) "
                              f"in processes; {config.env.id} runs inside JAX. Remove rollout.host_processes.")
        return
    kind = BACKBONES[config.algo.name].capabilities.family
    episode_replay = kind in ("value_decomposition", "actor_critic")  # MAPPO's rollouts do have a length
    if episode_replay and (config.rollout.auto_reset or config.rollout.length is not None):
        raise ConfigError("rollout.auto_reset and rollout.length do not apply to host-side environments: the host "
                          "loop collects one whole episode per environment. Remove them.")
    if paradigm.required_views and family in FULL_SIGHT_REFUSALS:
        refuse_views(config.env.id, paradigm.required_views, FULL_SIGHT_REFUSALS[family])
