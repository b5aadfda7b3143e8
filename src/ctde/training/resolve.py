"""Up-front validation of a whole configuration and resolution of its data-dependent defaults.

Runs before anything compiles: every impossible value or combination fails here with the fix.
"""

from __future__ import annotations

import copy
import time

from ctde.config import TrainConfig, to_dict
from ctde.errors import ConfigError, IncompatibleError, require


def resolve(config: TrainConfig) -> TrainConfig:
    """Validate `config` and return a copy with defaults that depend on the map filled in."""
    from ctde.algos import BACKBONES
    from ctde.envs import check_env, make_env, split_id
    from ctde.paradigms import PARADIGMS

    config = copy.deepcopy(config)
    check_env(config.env, config.ltr)
    algo, rollout, ev, log = config.algo, config.rollout, config.eval, config.log
    if config.algo.name not in BACKBONES:
        raise ConfigError(f"algo={config.algo.name!r} is not available; valid: {', '.join(BACKBONES)}.")

    paradigm = PARADIGMS[config.paradigm.name]
    _check_host_side(config, paradigm)
    spec = make_env(config.env, ltr_options=config.ltr).spec  # cheap: builds no JAX program (LTR data: read once)
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
    kind = backbone_family(algo.name)
    on_policy = kind == "policy_gradient"
    _refuse_unused_options(config)
    _refuse_other_paradigm_options(config)
    _refuse_ltr_options_elsewhere(config)
    _check_backbone_hosts_paradigm(config, kind, spec)
    if on_policy:
        ppo = config.ppo
        if rollout.auto_reset is False:
            raise ConfigError(f"algo={algo.name} keeps its environments running across rollouts; "
                              f"rollout.auto_reset=false (padded whole episodes) is for value decomposition.")
        rollout.auto_reset = True
        rollout.length = rollout.length or 400
        require([
            (ppo.epochs >= 1 and ppo.minibatches >= 1, "ppo.epochs and ppo.minibatches must be at least 1"),
            (ppo.chunk_length >= 1, "ppo.chunk_length must be at least 1"),
            (0 < ppo.clip < 1, "ppo.clip must be in (0, 1)"),
            (0 <= ppo.gae_lambda <= 1, "ppo.gae_lambda must be in [0, 1]"),
        ])
        if rollout.length % ppo.chunk_length:
            raise ConfigError(f"rollout.length={rollout.length} must be a multiple of ppo.chunk_length="
                              f"{ppo.chunk_length}: training chunks tile each rollout.")
        chunks = rollout.num_envs * rollout.length // ppo.chunk_length
        if chunks % ppo.minibatches:
            raise ConfigError(f"The rollout holds {chunks} chunks (rollout.num_envs x rollout.length / "
                              f"ppo.chunk_length), which ppo.minibatches={ppo.minibatches} does not divide.")
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
        from ctde.envs.smax import HARD_MAPS

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
    import importlib.util
    import sys

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
    from pathlib import Path

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
SECTIONS_READ_BY = {"ppo": ("policy_gradient", "algo=mappo or algo=ippo"), "maddpg": ("actor_critic", "algo=maddpg")}


def backbone_family(algo_name: str) -> str:
    from ctde.algos import ACTOR_CRITIC, POLICY_GRADIENT

    if algo_name in POLICY_GRADIENT:
        return "policy_gradient"
    return "actor_critic" if algo_name in ACTOR_CRITIC else "value_decomposition"


def _refuse_unused_options(config: TrainConfig) -> None:
    from ctde.config import AlgoConfig

    family = backbone_family(config.algo.name)
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
    for name, (reader, who) in SECTIONS_READ_BY.items():
        if family == reader:
            continue
        section = getattr(config, name)
        section_defaults = to_dict(type(section)())
        changed = [f"{name}.{k}" for k, v in to_dict(section).items() if v != section_defaults[k]]
        if changed:
            raise ConfigError(f"{', '.join(changed)} only affect {who}; algo={config.algo.name} would ignore "
                              f"them. Remove them or choose {who}.")


def _check_backbone_hosts_paradigm(config: TrainConfig, family: str, spec) -> None:
    """MADDPG hosts the paradigms whose networks are policies over a centralized critic (plain CTDE and CTEDD);
    CTEDD's global policies are trained by DDPG-style updates, so it needs MADDPG and a global state."""
    paradigm = config.paradigm.name
    if not config.algo.share_parameters and paradigm != "ctde":
        raise ConfigError(f"algo.share_parameters=false is available with paradigm=ctde; paradigm={paradigm} "
                          f"shares its agent networks. Remove algo.share_parameters or use paradigm=ctde.")
    if spec.continuous_actions and family != "actor_critic":
        raise IncompatibleError(f"{spec.id} has continuous actions (env.continuous_actions=true) and algo="
                                f"{config.algo.name} chooses among discrete ones. Use algo=maddpg, or drop "
                                f"env.continuous_actions.")
    if family == "actor_critic" and paradigm not in ACTOR_CRITIC_PARADIGMS:
        raise IncompatibleError(f"paradigm={paradigm} is not available on algo={config.algo.name}; it hosts "
                                f"{' and '.join(ACTOR_CRITIC_PARADIGMS)}. Choose one of those, or a "
                                f"value-decomposition or MAPPO backbone for {paradigm}.")
    if paradigm == "ctedd" and family != "actor_critic":
        raise IncompatibleError(f"paradigm=ctedd trains its global policies with DDPG-style updates through a "
                                f"centralized critic; algo={config.algo.name} has none. Use algo=maddpg.")
    if paradigm == "ctedd" and spec.state_dim < 1:
        raise IncompatibleError(f"paradigm=ctedd needs a global state for its global policies, and {spec.id} "
                                f"provides none. Choose an environment with a global state (e.g. mpe:simple_tag).")


def _refuse_ltr_options_elsewhere(config: TrainConfig) -> None:
    from ctde.config import LTRConfig

    if config.env.id.startswith("ltr:"):
        return
    defaults = to_dict(LTRConfig())
    changed = [f"ltr.{k}" for k, v in to_dict(config.ltr).items() if v != defaults[k]]
    if changed:
        raise ConfigError(f"{', '.join(changed)} configure{'s' if len(changed) == 1 else ''} Learning-to-Rank "
                          f"environments, but env={config.env.id}. Use env=ltr:<file or folder> or remove them.")


# Paradigms the actor-critic backbone hosts.
ACTOR_CRITIC_PARADIGMS = ("ctde", "ctedd")


def _refuse_other_paradigm_options(config: TrainConfig) -> None:
    """A paradigm's own section (`cadp.*`, `ptde.*`, ...) set while another paradigm is chosen is a mistake."""
    from ctde.paradigms import PARADIGMS

    for name in PARADIGMS:
        if name == config.paradigm.name or not hasattr(config, name):
            continue
        section = getattr(config, name)
        defaults = to_dict(type(section)())
        changed = [f"{name}.{k}" for k, v in to_dict(section).items() if v != defaults[k]]
        if changed:
            verb, them = ("configures", "it") if len(changed) == 1 else ("configure", "them")
            raise ConfigError(f"{', '.join(changed)} {verb} paradigm={name}, but paradigm={config.paradigm.name}. "
                              f"Add paradigm={name} or remove {them}.")


def _check_host_side(config: TrainConfig, paradigm) -> None:
    """What the host loop (`ctde.training.host`: SMAC, SMAClite, GRF, hostenv) can run, refused with the reason."""
    from ctde.envs import split_id
    from ctde.envs.host import FULL_SIGHT_REFUSALS, is_host_family, refuse_views

    family, name = split_id(config.env.id)
    if not is_host_family(family):
        if config.rollout.host_processes is not None:
            raise ConfigError(f"rollout.host_processes places host-side environments (smac, smaclite, grf, hostenv) "
                              f"in processes; {config.env.id} runs inside JAX. Remove rollout.host_processes.")
        return
    kind = backbone_family(config.algo.name)
    episode_replay = kind in ("value_decomposition", "actor_critic")  # MAPPO's rollouts do have a length
    if episode_replay and (config.rollout.auto_reset or config.rollout.length is not None):
        raise ConfigError(f"rollout.auto_reset and rollout.length do not apply to host-side environments: the host "
                          f"loop collects one whole episode per environment. Remove them.")
    if paradigm.required_views and family in FULL_SIGHT_REFUSALS:
        refuse_views(config.env.id, paradigm.required_views, FULL_SIGHT_REFUSALS[family])
