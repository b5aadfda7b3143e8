"""Stage 2 of two-stage paradigms (PTDE, CTEDD): distil what the trained teacher draws from the global state into
a student that reads local inputs only.

1. Roll out the frozen stage-1 teacher (greedily, or sampling its policy: `paradigm.distill_actions`) for
   `distill_episodes` episodes per seed and keep every valid (student input, teacher target) row: one row per
   agent-step (PTDE: x_i -> mu_i) or per step (CTEDD: every agent's observation -> every agent's global policy,
   since its students exchange messages); episodes are split `1 - holdout : holdout` into training and held-out
   sets (by episode, so correlated steps of one episode never straddle the split).
2. Regress the student on the training rows with Adam (squared error summed over a row's target entries,
   averaged over rows), in random batches or in collection order (`paradigm.distill_order`: consecutive batches,
   `iterations_per_batch` steps each, as CTEDD consumes its samples); log training and held-out losses against
   step (`distill_metrics.jsonl`, `distillation_loss.png`).
3. Evaluate teacher and student greedily; report the Performance Retention Ratio PRR = student / teacher score.

Compiled and vmapped over seeds like stage 1; checkpointed in `checkpoints_distill/`, so `--resume` continues
stage 2 where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from ctde.errors import TrainingDivergedError
from ctde.training.checkpoint import Checkpoints
from ctde.algos.rollout import collect
from ctde.nets.actions import greedy_for


# Continuous actions agree where they differ by at most this much in every dimension (actions lie in [-1, 1]).
CONTINUOUS_AGREEMENT = 0.1


@struct.dataclass
class DistillState:
    student: Any
    opt_state: Any
    step: jax.Array
    rng: jax.Array


@struct.dataclass
class Dataset:
    """Per seed: rows [N, *x_row], targets [N, *target_row], train/held-out masks [N] (rows in collection order:
    step by step, all environments of a step together), and the episodes' inputs (time-major, to compare the
    teacher's and the student's greedy actions after training)."""

    x: jax.Array
    target: jax.Array
    train: jax.Array
    heldout: jax.Array
    inputs: Any


def distill_selector(program):
    """How the teacher chooses actions while the data set is collected (`paradigm.distill_actions`)."""
    paradigm, spec = program.paradigm, program.env.spec
    return greedy_for(spec) if paradigm.distill_actions == "greedy" else paradigm.distill_sampler(spec)


def _collect_dataset(program, agent_params, key, episodes: int, holdout: float) -> Dataset:
    paradigm, env = program.paradigm, program.env
    trajectory, _ = collect(env, paradigm, agent_params, key, num_envs=episodes, length=env.spec.episode_limit,
                            auto_reset=False, model=paradigm.distill_teacher, select_actions=distill_selector(program),
                            deterministic=True)
    return dataset_of(program, agent_params, trajectory, holdout)


def collect_datasets(program, agent_params, keys, episodes: int, holdout: float) -> Dataset:
    """Every seed's data set (params and keys with a leading seed axis), collected in the environment."""
    return jax.jit(jax.vmap(lambda p, k: _collect_dataset(program, p, k, episodes, holdout)),
                   compiler_options=program.compiler_options(learning=False))(agent_params, keys)


def dataset_of(program, agent_params, trajectory, holdout: float) -> Dataset:
    """The regression rows of the teacher's episodes (trajectory [E, T + 1, ...], one seed), split by episode."""
    paradigm = program.paradigm
    episodes = trajectory.reward.shape[0]
    tm = trajectory.transpose()  # [T + 1, E, ...]
    x, target = paradigm.distillation_rows(agent_params, tm.agent_inputs())  # [T + 1, E, (n,) ...]
    row_dims = paradigm.distill_row_dims
    row_shape = x.shape[:row_dims]
    valid = jnp.broadcast_to(tm.valid.reshape(tm.valid.shape + (1,) * (row_dims - 2)), row_shape)
    n_heldout = max(1, int(round(episodes * holdout)))
    last_episodes = (jnp.arange(episodes) >= episodes - n_heldout).reshape((1, episodes) + (1,) * (row_dims - 2))
    is_heldout = jnp.broadcast_to(last_episodes, row_shape)
    flat = lambda a: a.reshape(-1, *a.shape[row_dims:])  # noqa: E731
    return Dataset(x=flat(x), target=flat(target), train=(valid & ~is_heldout).reshape(-1),
                   heldout=(valid & is_heldout).reshape(-1), inputs=tm.agent_inputs())


def heldout_action_agreement(program, agent_params, data: Dataset) -> jax.Array:
    """Fraction of held-out (step, agent) rows where the student's greedy action is the teacher's (continuous
    actions: within `CONTINUOUS_AGREEMENT` of it in every dimension)."""
    paradigm = program.paradigm
    batch = data.inputs.reset.shape[1:]
    _, output = paradigm.apply(agent_params, paradigm.initial_carry(batch), data.inputs)
    choose = greedy_for(program.env.spec)
    teacher = choose(None, output.scores[paradigm.distill_teacher], data.inputs.avail)
    student = choose(None, output.scores[paradigm.distill_student], data.inputs.avail)
    if program.env.spec.continuous_actions:
        same = jnp.all(jnp.abs(teacher - student) <= CONTINUOUS_AGREEMENT, axis=-1)
    else:
        same = teacher == student
    mask = jnp.broadcast_to(data.heldout.reshape(same.shape[:paradigm.distill_row_dims]
                                                 + (1,) * (same.ndim - paradigm.distill_row_dims)), same.shape)
    return jnp.sum(same & mask) / jnp.maximum(mask.sum(), 1)


def _loss(paradigm, student, x, target, weight, key=None):
    """Squared error summed over each row's target entries, averaged over rows weighted by `weight` [N]."""
    error = (paradigm.student_prediction(student, x, key) - target) ** 2
    error = jnp.sum(error, axis=tuple(range(1, error.ndim)))
    return jnp.sum(error * weight) / jnp.maximum(weight.sum(), 1.0)


def _make_chunk(paradigm, optimizer, batch_size: int, steps: int, iterations_per_batch: int = 1) -> Callable:
    def chunk(state: DistillState, data: Dataset) -> tuple[DistillState, dict]:
        probabilities = data.train / jnp.maximum(data.train.sum(), 1)
        # Training rows first, each group in collection order (argsort is stable).
        in_order = jnp.argsort(~data.train, stable=True)
        n_train = jnp.maximum(data.train.sum(), 1)

        def one(state, _):
            rng, key, noise_key = jax.random.split(state.rng, 3)
            if paradigm.distill_order == "collection":
                start = (state.step // iterations_per_batch) * batch_size
                rows = in_order[(start + jnp.arange(batch_size)) % n_train]
            else:
                rows = jax.random.choice(key, data.x.shape[0], (batch_size,), p=probabilities)
            loss, grads = jax.value_and_grad(lambda s: _loss(paradigm, s, data.x[rows], data.target[rows],
                                                             jnp.ones((batch_size,)), noise_key))(state.student)
            updates, opt_state = optimizer.update(grads, state.opt_state, state.student)
            student = optax.apply_updates(state.student, updates)
            return DistillState(student=student, opt_state=opt_state, step=state.step + 1, rng=rng), loss

        state, losses = jax.lax.scan(one, state, None, length=steps)
        heldout = _loss(paradigm, state.student, data.x, data.target, data.heldout.astype(jnp.float32))
        return state, {"train_loss": losses.mean(), "heldout_loss": heldout}

    return chunk


def run_distillation(run_dir: Path, program, agent_params: Any, *, resume: bool, say: Callable[[str], None],
                     show_progress: bool) -> tuple[Any, dict]:
    """Stage 2 for all seeds. Returns agent parameters with the trained student, and summary rows."""
    config = program.config
    paradigm = program.paradigm
    options = getattr(config, paradigm.name)  # the paradigm's own section: distill_episodes, distill_steps, ...
    teacher, student = paradigm.distill_teacher, paradigm.distill_student
    seeds = config.seeds
    optimizer = optax.adam(options.distill_lr)
    log_every = max(1, min(options.distill_log_every, options.distill_steps))
    n_chunks = -(-options.distill_steps // log_every)
    chunk = jax.jit(jax.vmap(_make_chunk(paradigm, optimizer, options.distill_batch, log_every,
                                         getattr(options, "iterations_per_batch", 1))))
    directory = run_dir / "checkpoints_distill"
    if not resume and directory.exists():
        # Left by a stage 2 of an earlier stage-1 state (this one was resumed and trained further): its student
        # learned from another teacher, so it is discarded rather than continued.
        say(f"Stage 1 changed since {directory} was written: stage 2 starts again.")
        shutil.rmtree(directory)
    checkpoints = Checkpoints(directory, keep=config.log.checkpoints_kept)
    metrics_path = run_dir / "distill_metrics.jsonl"

    keys = jax.random.split(jax.random.PRNGKey(config.seed + 7919), seeds)
    dataset_keys, train_keys = jax.vmap(jax.random.split, out_axes=1)(keys)
    dataset = program.collect_datasets(agent_params, dataset_keys, options.distill_episodes, options.holdout)
    students = agent_params[student]
    state = DistillState(student=students, opt_state=jax.vmap(optimizer.init)(students),
                         step=jnp.zeros((seeds,), jnp.int32), rng=train_keys)
    start = 0
    if resume and checkpoints.latest() is not None:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
        state, meta, _ = checkpoints.restore(abstract)
        start = meta["next_chunk"]
        say(f"Resumed distillation at step {start * log_every:,} of {options.distill_steps:,}.")
        rows = [json.loads(line) for line in metrics_path.read_text().splitlines()] if metrics_path.exists() else []
        metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= start * log_every))
    else:
        # Step 0: the untrained student, so the curves show where the regression started.
        initial = jax.device_get(jax.jit(jax.vmap(lambda st, d: {
            "train_loss": _loss(paradigm, st, d.x, d.target, d.train.astype(jnp.float32)),
            "heldout_loss": _loss(paradigm, st, d.x, d.target, d.heldout.astype(jnp.float32))}))(students, dataset))
        metrics_path.write_text("".join(json.dumps({"seed": config.seed + s, "step": 0, **{
            k: float(v[s]) for k, v in initial.items()}}) + "\n" for s in range(seeds)))

    tic = time.perf_counter()
    for index in range(start, n_chunks):
        state, metrics = chunk(state, dataset)
        metrics = jax.device_get(metrics)
        step = (index + 1) * log_every
        with metrics_path.open("a") as f:
            for s in range(seeds):
                f.write(json.dumps({"seed": config.seed + s, "step": step,
                                    **{k: float(v[s]) for k, v in metrics.items()}}) + "\n")
        diverged = ~np.isfinite(metrics["train_loss"])
        if diverged.any():
            last = checkpoints.latest()
            checkpoints.close()
            kept = (f"The last good stage-2 checkpoint (distillation step {last * log_every:,}) is kept in "
                    f"{directory}." if last is not None else "No stage-2 checkpoint had been written yet; stage 1's "
                    "are kept.")
            raise TrainingDivergedError(
                f"The distillation loss became NaN or infinite in the {log_every:,} steps up to distillation step "
                f"{step:,} (seed {config.seed + int(np.argmax(diverged))}). {kept} Continue from it with `ctde train --resume "
                f"{run_dir}`; if it diverges again, use a lower {paradigm.name}.distill_lr in a new run.")
        if show_progress and (index == n_chunks - 1 or (index + 1) % max(1, n_chunks // 10) == 0):
            say(f"distillation step {step:,}/{options.distill_steps:,}: train loss "
                f"{np.mean(metrics['train_loss']):.4f}, held-out {np.mean(metrics['heldout_loss']):.4f}")
        every = config.log.checkpoint_every
        if index == n_chunks - 1 or (every and (index + 1) % (10 * every) == 0):
            trained = {**agent_params, student: state.student}
            checkpoints.save(index + 1, state, trained, {"next_chunk": index + 1})
    checkpoints.close()
    seconds = time.perf_counter() - tic

    trained = {**agent_params, student: state.student}
    eval_keys = jax.random.split(jax.random.PRNGKey(config.seed + 104729), seeds)
    episodes = max(config.eval.episodes, 32)
    results = {}
    # Recorded under the roles "teacher" and "student" whatever the paradigm calls its models.
    for role, model in (("teacher", teacher), ("student", student)):
        results[role] = program.evaluate_seeds(trained, eval_keys, model, episodes)
    agreement = jax.device_get(jax.jit(jax.vmap(lambda p, d: heldout_action_agreement(program, p, d)))(
        trained, dataset))
    teacher_win, student_win = results["teacher"]["win_rate"], results["student"]["win_rate"]
    teacher_return, student_return = results["teacher"]["return"], results["student"]["return"]
    has_win = program.env.spec.has_win
    # PRR is undefined (None in distill.json, NaN in the summary) where the teacher scores 0: a student that
    # also scores 0 has retained nothing measurable, and 0 / 0 must not read as "retained none".
    teacher_score, student_score = (teacher_win, student_win) if has_win else (teacher_return, student_return)
    defined = np.abs(teacher_score) > 1e-9
    retained = np.where(defined, student_score / np.where(defined, teacher_score, 1.0), np.nan)
    heldout = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    record = {
        "seeds": [config.seed + s for s in range(seeds)],
        "models": {"teacher": teacher, "student": student},
        "teacher": {k: [float(x) for x in v] for k, v in results["teacher"].items()},
        "student": {k: [float(x) for x in v] for k, v in results["student"].items()},
        "prr": [float(x) if np.isfinite(x) else None for x in retained],
        "prr_metric": "win rate" if has_win else "return",
        "heldout_action_agreement": [float(x) for x in agreement],
        "episodes_per_seed": episodes,
        "distill_steps": options.distill_steps,
        "dataset_rows": {"train": [int(x) for x in np.asarray(dataset.train.sum(-1))],
                         "heldout": [int(x) for x in np.asarray(dataset.heldout.sum(-1))]},
        "final_heldout_loss": [r["heldout_loss"] for r in heldout if r["step"] == heldout[-1]["step"]],
        "seconds": seconds,
    }
    (run_dir / "distill.json").write_text(json.dumps(record, indent=2))
    _plot_losses(heldout, run_dir / "distillation_loss.png")
    fmt = lambda v: f"{np.mean(v):.3f} ± {np.std(v):.3f}"  # noqa: E731
    metric = "win_rate" if has_win else "return"
    summary = {f"{teacher} (stage 1) greedy {metric}": fmt(results["teacher"][metric]),
               f"{student} (stage 2) greedy {metric}": fmt(results["student"][metric]),
               f"PRR = student / teacher {metric}": (fmt(retained[np.isfinite(retained)]) if np.isfinite(retained).any()
                                                      else f"undefined (the teacher's {metric} is 0)"),
               f"{student}'s greedy action = {teacher}'s (held-out rows)": fmt(agreement),
               "distillation (s)": f"{seconds:.1f}"}
    return trained, summary


def _plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for seed in sorted({r["seed"] for r in rows}):
        mine = [r for r in rows if r["seed"] == seed]
        steps = [r["step"] for r in mine]
        line, = ax.plot(steps, [r["train_loss"] for r in mine], label=f"seed {seed} train")
        ax.plot(steps, [r["heldout_loss"] for r in mine], "--", color=line.get_color(), label=f"seed {seed} held-out")
    ax.set_xlabel("distillation step")
    ax.set_ylabel("squared error to the teacher")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
