"""The host side of a run: set up the run directory, drive the compiled chunks, log, checkpoint, resume,
export and audit the decentralized policy, evaluate, and write the report.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ctde.config import TrainConfig, build_config, load_yaml, from_dict, save_config, to_dict
from ctde.envs import split_id
from ctde.envs.host import is_host_family
from ctde.errors import CheckpointError, ConfigError, TrainingDivergedError
from ctde.training.report import plot_learning_curves, steps_to_reach, write_report
from ctde.policy import DecentralizedPolicy, make_policy
from ctde.training.audit_episodes import audit_exported
from ctde.training.checkpoint import Checkpoints, abstract_of
from ctde.training.distill import run_distillation
from ctde.training.logger import MetricsLogger, read_metrics, wandb_settings
from ctde.training.host import HostProgram
from ctde.training.program import Program, assemble_program
from ctde.training.resolve import resolve

# Options that may change when resuming: they do not alter what has been computed so far.
RESUMABLE_CHANGES = ("steps", "rollout.host_processes", "log.progress", "log.tensorboard", "log.checkpoint_every",
                     "log.checkpoints_kept", "log.wandb", "log.wandb_project", "log.wandb_entity", "log.wandb_group")


def build_program(config: TrainConfig) -> Program:
    """The run's program: collecting inside `jit` on JAX environments, on the host (`HostProgram`) for
    environments stepped outside JAX (SMAC, GRF, any SMAC-interface class). `config` must be resolved."""
    return assemble_program(config, HostProgram if is_host_family(split_id(config.env.id)[0]) else Program)


@dataclass
class RunResult:
    run_dir: Path
    rows: list[dict]
    summary: dict


def seed_keys(config: TrainConfig) -> jax.Array:
    return jnp.stack([jax.random.PRNGKey(config.seed + k) for k in range(config.seeds)])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def load_run_config(run_dir: str | Path) -> TrainConfig:
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a ctde run directory (no config.yaml).")
    try:
        return from_dict(load_yaml(path))
    except ConfigError as e:
        raise ConfigError(f"The run's saved configuration {path} does not load in this ctde: {e} Was it written by "
                          f"another ctde version? Use that version, or start a new run.") from None


class _Progress:
    """A rich progress bar: env steps, steps/s, latest test win rate, ETA."""

    def __init__(self, enabled: bool, total: int, description: str):
        self.enabled = enabled
        if not enabled:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.fields[steps]}"), TextColumn("{task.fields[rate]} steps/s"),
            TextColumn("win {task.fields[win]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
        self.task = self.progress.add_task(description, total=total, steps="compiling", rate="-", win="-")
        self.progress.start()

    def update(self, done: int, total: int, rate: float, win: str) -> None:
        if self.enabled:
            self.progress.update(self.task, completed=done, steps=f"{done:,}/{total:,}", rate=f"{rate:,.0f}", win=win)

    def log(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message)
        else:
            print(message, flush=True)

    def stop(self) -> None:
        if self.enabled:
            self.progress.stop()


def _rows(metrics: dict, first_block: int, n_blocks: int, seeds: int, config: TrainConfig) -> list[dict]:
    rows = []
    chunk = next(iter(metrics.values())).shape[1]
    for b in range(chunk):
        block = first_block + b
        if block >= n_blocks:
            break
        for s in range(seeds):
            row = {"seed": config.seed + s, "block": block}
            row.update({k: v[s, b].item() for k, v in metrics.items()})
            rows.append(row)
    return rows


def train(config: TrainConfig | list[str] | dict | None = None, *, resume: str | Path | None = None,
          resume_overrides: list[str] | None = None, overwrite: bool = False, quiet: bool = False,
          stop_when: Callable[[list[dict]], bool] | None = None) -> RunResult:
    """Train (or resume) a run; returns its directory, metric rows and summary.

    `config` may be a TrainConfig, a list of `key=value` overrides, or a nested dict of options.
    `stop_when(rows)`, if given, is asked after every chunk with all metric rows so far (one per seed and
    evaluation); when it returns True the run checkpoints and ends there, as if `steps` had been reached
    (a time-to-threshold benchmark need not run out its whole budget).
    """
    if resume is not None:
        run_dir = Path(resume)
        saved = load_run_config(run_dir)
        if not (run_dir / "checkpoints").is_dir():
            raise CheckpointError(f"{run_dir} has no checkpoints/ to resume from: it stopped before its first "
                                  f"checkpoint. Start it again without --resume (with --overwrite to replace it).")
        config = build_config(resume_overrides or [], base=copy.deepcopy(saved))
        changed = [k for k, v in _flat(to_dict(config)).items() if _flat(to_dict(saved))[k] != v]
        bad = [k for k in changed if k not in RESUMABLE_CHANGES]
        if bad:
            raise ConfigError(f"Cannot change {bad} when resuming: the checkpoint was computed with the saved values. "
                              f"Only {', '.join(RESUMABLE_CHANGES)} may change on --resume.")
        config = resolve(config)
    else:
        if isinstance(config, list):
            config = build_config(config)
        elif isinstance(config, dict):
            config = from_dict(config)
        config = resolve(config or TrainConfig())
        run_dir = Path(config.out)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise ConfigError(f"Run directory {run_dir} already exists. Continue it with `ctde train --resume "
                                  f"{run_dir}`, choose another out=..., or pass --overwrite to delete it.")
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")

    program = build_program(config)
    keys = seed_keys(config)
    checkpoints = Checkpoints(run_dir / "checkpoints", keep=config.log.checkpoints_kept)
    logger = MetricsLogger(run_dir, tensorboard=config.log.tensorboard, wandb=wandb_settings(config))
    show = config.log.progress and not quiet
    progress = _Progress(show, config.steps, f"{config.env.id} {config.algo.name} {config.paradigm.name}")
    say = progress.log if not quiet else (lambda message: None)

    start_chunk, wall_before, compile_seconds = 0, 0.0, None
    try:
        abstract = jax.eval_shape(program.init, keys)
        state = None
        if resume is not None:
            state, meta, step = checkpoints.restore(abstract)
            start_chunk, wall_before = meta["next_chunk"], meta.get("wall_seconds", 0.0)
            compile_seconds = meta.get("compile_seconds")
            logger.truncate_after(min(start_chunk * config.log.chunk_evals, program.n_blocks))
            say(f"Resumed {run_dir} from checkpoint {step} (chunk {start_chunk} of {program.n_chunks}).")

        total_steps = jnp.int32(config.steps)
        if start_chunk < program.n_chunks:  # a finished stage 1 (resuming a later stage) needs no compilation
            tic = time.perf_counter()
            compiled, placement = program.compile_chunk(abstract, total_steps)
            this_compile = time.perf_counter() - tic
            compile_seconds = compile_seconds if compile_seconds is not None else this_compile
            state = program.init(keys, placement) if state is None else jax.device_put(state, placement)

        wall = wall_before
        done_steps = int(np.min(jax.device_get(program.backbone_steps(state))))
        latest_win = "-"
        history = read_metrics(run_dir) if stop_when is not None else []
        stopped_early = None
        for chunk in range(start_chunk, program.n_chunks):
            first_block = chunk * config.log.chunk_evals
            tic = time.perf_counter()
            before = jax.device_get(program.backbone_steps(state))
            state, metrics = compiled(state, jnp.int32(first_block), total_steps)
            metrics = jax.device_get(metrics)
            elapsed = time.perf_counter() - tic
            wall += elapsed
            rows = _rows(metrics, first_block, program.n_blocks, config.seeds, config)
            for row in rows:
                row["wall_seconds"] = wall
            logger.write(rows)
            nonfinite = metrics["nonfinite_step"][:, -1]
            if np.any(nonfinite >= 0):
                seed = int(np.argmax(nonfinite >= 0))
                last = checkpoints.latest()
                kept = (f"The last good checkpoint (chunk {last}) is kept in {checkpoints.directory}."
                        if last is not None else "No checkpoint had been written yet.")
                raise TrainingDivergedError(
                    f"The loss became NaN or infinite at env step {int(nonfinite[seed]):,} (seed {config.seed + seed}). "
                    f"{kept} Lower algo.lr or algo.grad_clip, or check the environment's rewards; metrics up to the "
                    f"failure are in {run_dir / 'metrics.jsonl'}.")
            after = jax.device_get(program.backbone_steps(state))
            done_steps = int(np.min(after))
            rate = float(np.sum(after - before)) / max(elapsed, 1e-9)
            win_key = f"test/{program.paradigm.eval_models[0]}/win_rate"
            if rows and win_key in rows[-1]:
                latest_win = f"{np.mean([r[win_key] for r in rows if r['block'] == rows[-1]['block']]):.2f}"
            progress.update(min(done_steps, config.steps), config.steps, rate, latest_win)
            if stop_when is not None:
                history.extend(rows)
                if chunk < program.n_chunks - 1 and stop_when(history):
                    stopped_early = done_steps
            last_chunk = chunk == program.n_chunks - 1 or stopped_early is not None
            every = config.log.checkpoint_every
            if last_chunk or (every and (chunk + 1) % every == 0):
                meta = {"next_chunk": chunk + 1, "wall_seconds": wall, "compile_seconds": compile_seconds,
                        "env_steps": [int(x) for x in after], "config": to_dict(config)}
                checkpoints.save(chunk + 1, state, program.backbone.agent_params(state.learner), meta)
            if stopped_early is not None:
                say(f"Stopped early at {stopped_early:,} env steps: the stopping condition was met.")
                break
    except BaseException:
        program.close()
        raise
    finally:
        progress.stop()
        logger.close()

    try:
        return _finish(run_dir, config, program, state, checkpoints, start_chunk, resume, say, show, wall,
                       compile_seconds, stopped_early, quiet)
    finally:
        program.close()


def _finish(run_dir: Path, config: TrainConfig, program: Program, state: Any, checkpoints: Checkpoints,
            start_chunk: int, resume: Any, say: Callable[[str], None], show: bool, wall: float,
            compile_seconds: float, stopped_early: int | None, quiet: bool) -> RunResult:
    """After reinforcement learning: later stages, export, the exported policy's evaluation and audit, report."""
    rows = read_metrics(run_dir)
    agent_params = program.backbone.agent_params(state.learner)
    stage_summary: dict = {}
    for stage in program.paradigm.post_training:
        if stage == "distill":
            # Stage 2 continues from its checkpoints only if stage 1 ended where it had: a stage 2 distilled from
            # an earlier stage-1 state (a run stopped early, or extended with steps=...) starts again.
            stage_one_moved = start_chunk < program.n_chunks
            agent_params, stage_summary = run_distillation(run_dir, program, agent_params,
                                                           resume=resume is not None and not stage_one_moved,
                                                           say=say, show_progress=show)
    policy = export(run_dir, program=program, agent_params=agent_params)
    policy_stats, episodes = program.run_policy(policy, jax.random.PRNGKey(config.seed),
                                                max(config.eval.episodes, 8))
    # The audit's inputs: four of these greedy episodes, and (JAX environments) as many whole episodes of random
    # available actions, in which agents die; a host environment's run audits on its recorded episodes and random
    # ones (`ctde.training.audit_episodes`).
    host = is_host_family(split_id(config.env.id)[0])
    audit = audit_exported(policy, env=None if host else program.env, recorded=episodes[:4])
    (run_dir / "policy" / "audit.json").write_text(json.dumps(audit.to_dict(), indent=2))
    checkpoints.close()
    all_seed_steps = int(np.sum(jax.device_get(program.backbone_steps(state))))
    summary = {
        "env steps per seed": f"{config.steps:,}" if stopped_early is None else
                              f"{stopped_early:,} (stopped early; budget {config.steps:,})",
        "wall time (s, excluding compile)": f"{wall:.1f}",
        "compile time (s)": f"{compile_seconds:.1f}",
        "throughput (env steps/s, all seeds)": f"{all_seed_steps / max(wall, 1e-9):,.0f}",
        "exported policy, greedy (seed 0)": ", ".join(f"{k} {v:.3f}" for k, v in policy_stats.items()),
        "decentralization audit": audit.message,
        "audit inputs": audit.inputs,
        "exported policy": str(run_dir / "policy"),
        **stage_summary,
    }
    models = program.paradigm.train_eval_models  # the models that learning curves exist for
    for model in models if program.env.spec.has_win else ():
        for threshold in (0.5, 0.9):
            reached = steps_to_reach(rows, model, threshold)
            which = f" ({model})" if len(models) > 1 else ""
            summary[f"env steps to median test win rate {threshold}{which}"] = (
                f"{reached:,.0f}" if reached else "not reached")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    make_report(run_dir, config, program, rows, summary)
    if not quiet:
        print(f"Run finished: {run_dir}\n  report: {run_dir / 'report.md'}\n  policy: {run_dir / 'policy'}\n"
              f"  {audit.message}", flush=True)
    return RunResult(run_dir=run_dir, rows=rows, summary=summary)


def make_report(run_dir: Path, config: TrainConfig, program: Program, rows: list[dict], summary: dict) -> None:
    title = f"{config.env.id} · {config.algo.name} · {config.paradigm.name}"
    has_win = program.env.spec.has_win
    paradigm = program.paradigm
    plot_learning_curves(rows, run_dir / "learning_curve.png", title, show_win_rate=has_win,
                         marks=paradigm.plot_marks(), diagnostics=paradigm.diagnostics)
    config_summary = {"env": config.env.id, "algo": config.algo.name, "paradigm": config.paradigm.name,
                      "seeds": config.seeds, "env steps per seed": f"{config.steps:,}",
                      "eval episodes": config.eval.episodes, "parallel envs": config.rollout.num_envs,
                      "episode limit": program.env.spec.episode_limit}
    if hasattr(config, paradigm.name):  # the paradigm's own options section (cadp.*, ptde.*, ...)
        config_summary.update({f"{paradigm.name}.{k}": v for k, v in to_dict(getattr(config, paradigm.name)).items()})
    images = [name for name in ("distillation_loss.png",) if (run_dir / name).exists()]
    write_report(run_dir, config_summary, rows, summary, show_win_rate=has_win, extra_images=images)


# ---------------------------------------------------------------------------------------------------------
# Export, evaluation


def export(run_dir: str | Path, *, program: Program | None = None, agent_params: Any = None) -> DecentralizedPolicy:
    """Write `run_dir/policy/` from the given parameters, or from the run's latest checkpoint."""
    run_dir = Path(run_dir)
    if program is None:
        config = resolve(load_run_config(run_dir))
        program = build_program(config)
    config = program.config
    if agent_params is None:
        agent_params = restore_agent_params(run_dir, program)[0]
    spec, params = program.paradigm.export(agent_params)
    env_spec = program.env.spec
    spec = {**spec, "n_agents": env_spec.n_agents, "n_actions": env_spec.n_actions, "obs_dim": env_spec.obs_dim,
            "continuous_actions": env_spec.continuous_actions,
            "state_dim": env_spec.state_dim, "env": config.env.id, "sight_range": config.env.sight_range,
            # what rebuilds the environment for the audit (`ctde.training.audit_episodes.environment_of`)
            "episode_limit": env_spec.episode_limit, "env_options": env_options(config),
            "paradigm": config.paradigm.name, "algo": config.algo.name, "model": program.paradigm.export_model,
            "seeds": config.seeds, "first_seed": config.seed}
    policy = make_policy(spec, jax.device_get(params))
    policy.save(run_dir / "policy")
    return policy


def env_options(config: TrainConfig) -> dict:
    """The run's environment options besides its id and sight range (which the spec holds apart), and for env=ltr
    the ltr section: enough for `ctde audit` to build the environment again."""
    options = {k: v for k, v in to_dict(config.env).items() if k not in ("id", "sight_range")}
    if split_id(config.env.id)[0] == "ltr":
        options["ltr"] = to_dict(config.ltr)
    return options


def restore_agent_params(run_dir: Path, program: Program) -> tuple[Any, dict]:
    """The newest agent parameters: from the last post-training stage that has a checkpoint (PTDE's trained
    student lives there), else from reinforcement learning."""
    keys = seed_keys(program.config)
    abstract_state = jax.eval_shape(program.init, keys)
    abstract = abstract_of(program.backbone.agent_params(abstract_state.learner))
    directory = run_dir / "checkpoints"
    for stage in reversed(program.paradigm.post_training):
        candidate = run_dir / f"checkpoints_{stage}"
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            directory = candidate
            break
    checkpoints = Checkpoints(directory, read_only=True)
    try:
        params, meta, _ = checkpoints.restore(abstract, item="agent_params")
    finally:
        checkpoints.close()
    return params, meta


def evaluate(run_dir: str | Path, *, model: str | None = None, episodes: int | None = None,
             seed: int = 12345, quiet: bool = False) -> dict:
    """Greedy evaluation of a saved run: win rate, return and episode length per seed, and mean ± std."""
    run_dir = Path(run_dir)
    config = resolve(load_run_config(run_dir))
    program = build_program(config)
    model = model or program.paradigm.export_model
    if model not in program.paradigm.eval_models:
        raise ConfigError(f"--model {model!r} is not a model of paradigm {config.paradigm.name}; "
                          f"choose from {', '.join(program.paradigm.eval_models)}.")
    episodes = episodes or max(config.eval.episodes, 32)
    params, meta = restore_agent_params(run_dir, program)
    keys = jax.random.split(jax.random.PRNGKey(seed), config.seeds)
    try:
        results = program.evaluate_seeds(params, keys, model, episodes)
    finally:
        program.close()
    per_seed = [{"seed": config.seed + s, **{k: float(v[s]) for k, v in results.items()}} for s in range(config.seeds)]
    summary = {k: {"mean": float(np.mean(v)), "std": float(np.std(v))} for k, v in results.items()}
    report = {"run": str(run_dir), "model": model, "episodes_per_seed": episodes,
              "env_steps": meta.get("env_steps"), "per_seed": per_seed, "mean_std": summary}
    (run_dir / f"eval_{model}.json").write_text(json.dumps(report, indent=2))
    if not quiet:
        print(f"Greedy evaluation of {run_dir} ({model}, {episodes} episodes per seed, {config.seeds} seed(s)):")
        for name, stats in summary.items():
            print(f"  {name:<15} {stats['mean']:.3f} ± {stats['std']:.3f}")
    return report
