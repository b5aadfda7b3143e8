"""`ctde sweep`: a grid of ordinary runs, validated up front, resumable, run here or on a Ray cluster.

    ctde sweep env=smax:3m,smax:2s3z algo=qmix,vdn paradigm=ctde,cadp seeds=5 steps=5e5 out=sweeps/s1
    ctde sweep --resume sweeps/s1                 # continue it (the same command line does the same)
    ctde sweep ... --ray-address auto             # the same grid as Ray tasks on an existing cluster

**Grid.** An option whose value holds commas, `key=v1,v2,...`, is an axis of the grid; the trials are the
Cartesian product of the axes, in command-line order (the first axis varies slowest). Every `key=value` without
a comma is shared by all trials. A value that itself contains a comma escapes it as `\\,` (and a backslash
that ends a value before a separating comma as `\\\\`): `key=a\\,b,c` is the two values `a,b` and `c` (quote it
in the shell).
`seeds=N` is an ordinary option: each trial vmaps its N seeds in one compiled program.

**Trials** are ordinary run directories under `out=`, named from the trial's grid values in command-line order,
`key=value` joined by commas: `env=smax-3m,algo=qmix,paradigm=cadp`. Characters other than letters, digits and
`. _ + = -` become `-` in a name (so `smax:3m` becomes `smax-3m`): a ':' would be read as a host by scp and rsync
and as a `name:path` pair by TensorBoard's --logdir_spec, and cannot be in a file name on Windows or macOS.
Names that would collide after that, or be longer than 120 characters, get a short hash of their exact values.
Every `ctde` command (eval, report, export, train --resume) works on a trial directory.

**Validation.** Every trial's configuration is built and resolved (`ctde.training.resolve.resolve`) before any
trial runs; the invalid ones are reported together with their reasons. `skip_invalid` runs the valid ones and
records the others as skipped (a paradigm x backbone grid naturally holds impossible pairs).

**State.** `out/sweep.json` holds the grid, the shared options, and each trial's status (pending, running,
finished, failed with its error, interrupted, or skipped as invalid), run directory, wall time and final test
results; it is rewritten (atomically) at every change. The run directories, not sweep.json, decide what a
re-run does: a trial whose run is complete (summary.json written for the requested `steps`, and metric rows of
the last evaluation for every seed) is skipped, one with a checkpoint is resumed (`train(resume=...)`), one
without is started again. Re-running with a larger `steps` extends every trial. A different grid or different
options on the same `out=` are refused unless `overwrite`.

**Failures.** A trial that fails (a diverged loss, a full disk, a bug) is recorded as failed with its message,
and the sweep goes on with the next; `run_sweep` reports them and the CLI exits with status 1. Re-running
retries failed trials from their last checkpoint (a diverged loss recurs: the runs are deterministic).

**Ray.** With `executor="ray"` every trial is a Ray task calling the same `run_trial` into the same run
directory, so `out=` must be on a file system that the cluster's nodes and this machine share, and ctde
must be installed on every node. Ray is imported only then (`pip install 'ctde[ray]'`). A task asks Ray for
`ray_cpus_per_trial` CPUs and `ray_gpus_per_trial` GPUs (Ray hides the GPUs from a task that asks for none).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ctde.config import TrainConfig, build_config, parse_overrides, to_dict
from ctde.errors import ConfigError, CtdeError
from ctde.training import runner
from ctde.training.compile_cache import enable_compile_cache
from ctde.training.logger import read_metrics
from ctde.training.resolve import resolve

SWEEP_FILE = "sweep.json"
SWEEP_FORMAT = 1
MAX_NAME_LENGTH = 120


def _resumable_changes() -> tuple[str, ...]:
    """The options a resumed run may change (the runner's list): they may differ between a sweep and its re-run."""
    return runner.RESUMABLE_CHANGES


TrialState = Literal["new", "restart", "resume", "finished"]


# ---------------------------------------------------------------------------------------------------------
# The grid


@dataclass(frozen=True)
class Axis:
    """One option that varies across the grid, with its values in command-line order."""

    key: str
    values: tuple[str, ...]


@dataclass
class Trial:
    """One point of the grid: its name, run directory, the options it is built from, and whether it is valid."""

    index: int
    name: str
    grid_values: tuple[tuple[str, str], ...]  # (key, value) of each axis, in command-line order
    run_dir: Path
    overrides: list[str]  # every key=value, shared ones first, then this trial's values, then out=
    config: TrainConfig | None = None  # built, not resolved (train resolves it again); None if it does not build
    error: str | None = None  # why the trial is invalid; None if valid

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass
class Sweep:
    """A planned sweep: where it lives, how it was asked for, and its trials (valid and invalid)."""

    out: Path
    arguments: list[str]  # the key=value items as given (escapes included): `--resume OUT` plans them again
    axes: list[Axis]
    shared: list[str]
    config_file: str | None
    skip_invalid: bool
    trials: list[Trial] = field(default_factory=list)

    @property
    def valid_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.valid]


def split_values(text: str) -> list[str]:
    """Split a value at its unescaped commas: `a\\,b,c` -> ['a,b', 'c']. `\\\\` is one backslash (needed only
    before a comma that separates values); any other backslash is kept as it is."""
    values, current, i = [], [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in ",\\":
            current.append(text[i + 1])
            i += 2
            continue
        if char == ",":
            values.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    values.append("".join(current))
    return values


def parse_grid(arguments: list[str]) -> tuple[list[Axis], list[str]]:
    """Separate `key=v1,v2,...` axes from shared `key=value` options (escapes resolved in both)."""
    axes: list[Axis] = []
    shared: list[str] = []
    seen_axes: set[str] = set()
    for key, raw in parse_overrides(arguments):
        values = [v.strip() for v in split_values(raw)]
        if len(values) == 1:
            shared.append(f"{key}={values[0]}")
            continue
        if any(v == "" for v in values):
            raise ConfigError(f"{key}={raw}: an empty value in a comma list (a stray comma?). Give each value, "
                              f"e.g. {key}=a,b; escape a comma that belongs to a value as \\,.")
        duplicates = sorted({v for v in values if values.count(v) > 1})
        if duplicates:
            raise ConfigError(f"{key}={raw} lists {', '.join(duplicates)} more than once: that trial would run twice.")
        if key in seen_axes:
            raise ConfigError(f"{key} is given as a comma list twice; give all its values in one {key}=v1,v2,...")
        seen_axes.add(key)
        axes.append(Axis(key, tuple(values)))
    for key in {item.split("=", 1)[0] for item in shared} & seen_axes:
        raise ConfigError(f"{key} is both a grid axis ({key}=v1,v2,...) and a shared option ({key}=value). Keep one.")
    return axes, shared


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def trial_names(points: list[tuple[tuple[str, str], ...]]) -> list[str]:
    """Readable, deterministic directory names for grid points, unique among them (see the module docstring)."""
    exact = [",".join(f"{k}={v}" for k, v in point) or "run" for point in points]
    names = [",".join(f"{k}={_UNSAFE.sub('-', v)}" for k, v in point) or "run" for point in points]
    clashes = {n for n in names if names.count(n) > 1}
    named = []
    for name, original in zip(names, exact):
        if name in clashes or len(name) > MAX_NAME_LENGTH:
            name = f"{name[:MAX_NAME_LENGTH - 9]}-{_short_hash(original)}"
        named.append(name)
    return named


def _fingerprint(config: TrainConfig) -> dict[str, Any]:
    """The options that define a trial's results: those set away from their defaults, except out= and the
    options a resumed run may change (`steps` is compared on its own: it may grow, not shrink)."""
    defaults = _flat(to_dict(TrainConfig()))
    resumable = _resumable_changes()
    return {k: v for k, v in _flat(to_dict(config)).items()
            if k != "out" and k not in resumable and v != defaults[k]}


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def plan_sweep(arguments: list[str], *, config_file: str | Path | None = None,
               skip_invalid: bool = False) -> Sweep:
    """Expand `arguments` (key=value items, comma lists as axes, out= required) into trials and validate every
    one; raise ConfigError listing every invalid trial and why, unless `skip_invalid` (then they are kept,
    marked invalid, and not run). Writes nothing."""
    axes, shared = parse_grid(arguments)
    outs = [item.split("=", 1)[1] for item in shared if item.split("=", 1)[0] == "out"]
    if any(axis.key == "out" for axis in axes):
        raise ConfigError("out= names the sweep's folder and takes one value; trials are named from their options.")
    if not outs or not outs[-1]:
        raise ConfigError("A sweep needs out=<folder>: its trials' run directories and sweep.json go there, and "
                          "re-running the same command continues it. Example: ctde sweep algo=qmix,vdn out=sweeps/s1")
    out = Path(outs[-1])
    shared = [item for item in shared if item.split("=", 1)[0] != "out"]
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out={out} is a file, not a folder. Choose another out=<folder>.")

    points = list(itertools.product(*[[(axis.key, v) for v in axis.values] for axis in axes]))
    sweep = Sweep(out=out, arguments=list(arguments), axes=axes, shared=shared,
                  config_file=str(config_file) if config_file is not None else None, skip_invalid=skip_invalid)
    for index, (point, name) in enumerate(zip(points, trial_names(points))):
        run_dir = out / name
        overrides = [*shared, *(f"{k}={v}" for k, v in point), f"out={run_dir}"]
        trial = Trial(index=index, name=name, grid_values=point, run_dir=run_dir, overrides=overrides)
        try:
            trial.config = build_config(overrides, config_file=config_file)
            resolve(trial.config)
        except ConfigError as e:  # IncompatibleError included: an impossible combination is a reason, not a crash
            trial.error = str(e)
        sweep.trials.append(trial)

    invalid = [t for t in sweep.trials if not t.valid]
    if invalid and (not skip_invalid or len(invalid) == len(sweep.trials)):
        reasons = {t.error for t in invalid}
        if len(invalid) == len(sweep.trials) and len(reasons) == 1:
            # One mistake every trial shares (a misspelt shared option): say it once.
            raise ConfigError(f"every trial of the sweep is invalid: {invalid[0].error}")
        lines = [f"  {t.name}: {t.error}" for t in invalid]
        hint = ("Remove those values, or pass --skip-invalid to run the valid ones." if len(invalid) < len(sweep.trials)
                else "No trial is valid.")
        raise ConfigError(f"{len(invalid)} of {len(sweep.trials)} trials are invalid:\n" + "\n".join(lines)
                          + "\n" + hint)
    return sweep


# ---------------------------------------------------------------------------------------------------------
# A trial's run directory


def _has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def _read_rows(run_dir: Path) -> list[dict]:
    return read_metrics(run_dir)


def run_is_complete(run_dir: Path, config: TrainConfig) -> bool:
    """True when `run_dir` holds a run that reached `config.steps`: the runner writes summary.json last, after
    the export and audit, saying the steps it ran ("..., stopped early" when a stopping condition ended it),
    and the metrics hold the last evaluation of every seed."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(summary, dict) or summary.get("env steps per seed") != f"{config.steps:,}":
        return False  # another run length: stopped early, or a sweep extended with a larger steps=
    last_block = -(-config.steps // config.eval.interval) - 1
    seeds_done = {row.get("seed") for row in _read_rows(run_dir) if row.get("block") == last_block}
    return len(seeds_done) >= config.seeds


def trial_state(run_dir: Path, config: TrainConfig) -> TrialState:
    """What running this trial means now: finished (skip), resume (from its checkpoint), restart (it has files
    but no checkpoint: it stopped before its first), or new."""
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "new"
    if run_is_complete(run_dir, config):
        return "finished"
    return "resume" if _has_checkpoint(run_dir / "checkpoints") else "restart"


def trial_result(run_dir: Path) -> dict[str, Any]:
    """Final test results of a run: the last evaluation's greedy win rate and return, mean and std over seeds
    (summary.json has only seed 0 of the exported policy), of the exported model (CADP's decentralized one, ...)
    or, if the run has not exported it, of the first evaluated model."""
    import numpy as np

    rows = _read_rows(run_dir)
    if not rows:
        return {}
    last = max(row["block"] for row in rows)
    final = [row for row in rows if row["block"] == last]
    models = [k.split("/")[1] for k in final[0] if k.startswith("test/") and k.endswith("/return")]
    if not models:
        return {}
    try:
        exported = json.loads((run_dir / "policy" / "policy.json").read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        exported = None
    model = exported if exported in models else models[0]
    result: dict[str, Any] = {"model": model, "seeds": len(final),
                              "env_steps": float(np.mean([row["env_steps"] for row in final]))}
    for metric in ("win_rate", "return"):
        values = [row.get(f"test/{model}/{metric}") for row in final]
        values = [v for v in values if v is not None]
        if values:
            result[metric] = float(np.mean(values))
            result[f"{metric}_std"] = float(np.std(values))
    return result


def run_trial(task: dict, train_fn: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run one trial to completion from whatever its run directory holds; the unit of work of both executors.

    `task` is plain data (a Ray task ships it): overrides, config_file, quiet. The state is read here, where
    the trial runs, so a retried task continues what the first try left. Returns status ("finished" or
    "failed"), action, error, wall_seconds and result. KeyboardInterrupt propagates: the run keeps its last
    checkpoint and a re-run resumes it.
    """
    if train_fn is None:
        train_fn = runner.train  # looked up now, so a test may replace it
    config = build_config(task["overrides"], config_file=task.get("config_file"))
    run_dir = Path(config.out)
    action = trial_state(run_dir, config)
    tic = time.perf_counter()
    outcome: dict[str, Any] = {"action": action, "error": None}
    try:
        if action == "resume":
            # Only the options a resumed run may change are passed on: the rest is the saved configuration.
            flat = _flat(to_dict(config))
            train_fn(resume=run_dir, resume_overrides=[f"{k}={flat[k]}" for k in _resumable_changes()],
                     quiet=task.get("quiet", False))
        elif action in ("new", "restart"):
            train_fn(config, overwrite=action == "restart", quiet=task.get("quiet", False))
        outcome["status"] = "finished"
        outcome["result"] = trial_result(run_dir)
    except CtdeError as e:  # a diverged loss, an unreadable checkpoint: the message says what happened
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}")
    except OSError as e:  # a full disk, permissions: this trial fails, the next may not
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}")
    except Exception as e:  # a bug: record it with its traceback rather than abandon the other trials
        outcome.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    outcome["wall_seconds"] = time.perf_counter() - tic
    return outcome


def _run_trial_on_ray_worker(task: dict) -> dict[str, Any]:
    """A Ray worker's entry point: JAX's compile cache as the CLI sets it, then the trial, quietly."""
    enable_compile_cache()
    return run_trial({**task, "quiet": True})


# ---------------------------------------------------------------------------------------------------------
# sweep.json


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _record(sweep: Sweep) -> dict[str, Any]:
    """The initial sweep.json of a planned sweep: every trial pending, or skipped with its reason."""
    trials = []
    for t in sweep.trials:
        trials.append({
            "name": t.name, "run_dir": str(t.run_dir), "options": dict(t.grid_values),
            "status": "pending" if t.valid else "skipped", "error": t.error, "action": None,
            "wall_seconds": None, "result": None, "started": None, "ended": None,
            "steps": t.config.steps if t.config is not None else None,
            "fingerprint": _fingerprint(t.config) if t.config is not None else None,
        })
    return {"format": SWEEP_FORMAT, "out": str(sweep.out), "arguments": sweep.arguments,
            "grid": [{"key": a.key, "values": list(a.values)} for a in sweep.axes], "shared": sweep.shared,
            "config_file": sweep.config_file, "skip_invalid": sweep.skip_invalid, "created": _now(),
            "updated": _now(), "trials": trials}


def _write_record(out: Path, record: dict) -> None:
    record["updated"] = _now()
    tmp = out / f".{SWEEP_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / SWEEP_FILE)  # atomic: a kill leaves the previous sweep.json, never half of one


def read_record(out: str | Path) -> dict[str, Any]:
    """The sweep.json of sweep folder `out`."""
    path = Path(out) / SWEEP_FILE
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{out} is not a sweep folder (no {SWEEP_FILE}).") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); start the sweep again with --overwrite.") from None
    if not isinstance(record, dict) or record.get("format") != SWEEP_FORMAT:
        raise ConfigError(f"{path} is not a sweep.json of this ctde (format {SWEEP_FORMAT}).")
    return record


def resume_arguments(out: str | Path, overrides: list[str] | None = None) -> tuple[list[str], str | None, bool]:
    """The arguments, config file and skip_invalid of the sweep in `out`, for `ctde sweep --resume OUT`.
    `overrides` may change only what a resumed run may change (steps, log.progress, ...)."""
    record = read_record(out)
    arguments = list(record["arguments"])
    changes = parse_overrides(overrides or [])
    resumable = _resumable_changes()
    refused = [k for k, _ in changes if k not in resumable]
    if refused:
        raise ConfigError(f"Cannot change {', '.join(refused)} when resuming the sweep in {out}: its trials were "
                          f"computed with the saved options. Only {', '.join(resumable)} may change; start "
                          f"another sweep (another out=) for other options.")
    changed = {k for k, _ in changes}
    arguments = [a for a in arguments if a.split("=", 1)[0].strip() not in changed] + [f"{k}={v}" for k, v in changes]
    return arguments, record.get("config_file"), bool(record.get("skip_invalid"))


def _check_same_sweep(sweep: Sweep, old: dict) -> None:
    """Refuse to run a different grid (other trials, or other options) into an existing sweep folder."""
    new = _record(sweep)["trials"]
    old_by_name = {t["name"]: t for t in old.get("trials", [])}
    new_by_name = {t["name"]: t for t in new}
    problems = []
    only_old = [n for n in old_by_name if n not in new_by_name]
    only_new = [n for n in new_by_name if n not in old_by_name]
    if only_old:
        problems.append(f"trials only in the existing sweep: {', '.join(only_old)}")
    if only_new:
        problems.append(f"trials only in this one: {', '.join(only_new)}")
    for name in (n for n in new_by_name if n in old_by_name):
        before, now = old_by_name[name].get("fingerprint"), new_by_name[name]["fingerprint"]
        if before is not None and now is not None and before != now:
            keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            problems.append(f"{name}: " + ", ".join(f"{k} {before.get(k, 'default')!r} -> {now.get(k, 'default')!r}"
                                                   for k in keys))
        if (old_by_name[name].get("steps") or 0) > (new_by_name[name]["steps"] or 0):
            problems.append(f"{name}: steps {old_by_name[name]['steps']:,} -> {new_by_name[name]['steps']:,} (a sweep "
                            f"may be extended, not shortened: its finished runs went further)")
    if problems:
        raise ConfigError(f"{sweep.out} holds a different sweep: " + "; ".join(problems[:8])
                          + ("; ..." if len(problems) > 8 else "") + f". Continue it with `ctde sweep --resume "
                          f"{sweep.out}`, choose another out=..., or pass --overwrite to delete it and start this one.")


def prepare_out(sweep: Sweep, *, overwrite: bool = False) -> dict[str, Any]:
    """Check `sweep.out` against what it holds and return the sweep.json record to run with (not yet written):
    a new folder, the same sweep again (its previous record), or, with `overwrite`, an old sweep to delete."""
    out = sweep.out
    record = _record(sweep)
    if not out.is_dir() or not any(out.iterdir()):
        return record
    if not (out / SWEEP_FILE).exists():
        # --overwrite deletes only a sweep folder: out=. or out=$HOME with --overwrite must not empty it.
        raise ConfigError(f"out={out} exists and is not a sweep folder (no {SWEEP_FILE}); a sweep writes its trials "
                          f"into a folder of its own. Choose another out=... (or remove {out} yourself).")
    if overwrite:
        return record
    old = read_record(out)
    _check_same_sweep(sweep, old)
    # The same sweep: keep what is known of earlier trials (wall time, results), refreshed as they run.
    old_by_name = {t["name"]: t for t in old["trials"]}
    for trial in record["trials"]:
        before = old_by_name.get(trial["name"], {})
        for key in ("status", "error", "action", "wall_seconds", "result", "started", "ended", "traceback"):
            if key in before and trial["status"] != "skipped":
                trial[key] = before[key]
    record["created"] = old.get("created", record["created"])
    return record


# ---------------------------------------------------------------------------------------------------------
# Running


def _format_result(result: dict | None) -> str:
    if not result:
        return "-"
    parts = [f"{label} {result[metric]:.3f} ± {result[f'{metric}_std']:.3f}"
             for metric, label in (("win_rate", "test win rate"), ("return", "return")) if metric in result]
    seeds = f"{result['seeds']} seed{'s' if result['seeds'] != 1 else ''}"
    return f"{', '.join(parts)} ({result['model']}, {seeds})" if parts else "-"


def run_sweep(sweep: Sweep, *, overwrite: bool = False, executor: Literal["local", "ray"] = "local",
              ray_address: str | None = None, ray_cpus_per_trial: float = 1.0, ray_gpus_per_trial: float = 0.0,
              train_fn: Callable[..., Any] | None = None, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the valid trials of a planned sweep that are not finished; return the final sweep.json record.

    Local executor: one trial after another in this process (`train_fn` replaces `runner.train`, for tests).
    Ray executor: every trial a Ray task on the cluster at `ray_address` (None: a local Ray instance, unless
    this process is connected to one already). A failed trial is recorded and the others go on;
    KeyboardInterrupt marks the running trial(s) interrupted, writes sweep.json, and propagates.
    """
    say = say or (lambda message: print(message, flush=True))
    # Everything that can refuse the sweep comes before its first write: a missing Ray, another grid in out=,
    # an unreachable cluster must not leave a half-made (or, with overwrite, a deleted) sweep behind.
    ray = _import_ray() if executor == "ray" else None
    record = prepare_out(sweep, overwrite=overwrite)
    wipe = overwrite and sweep.out.is_dir() and any(sweep.out.iterdir())
    finished = set() if wipe else {t.name for t in sweep.valid_trials if trial_state(t.run_dir, t.config) == "finished"}
    to_run = [t for t in sweep.valid_trials if t.name not in finished]
    ray_started_here = _connect_ray(ray, ray_address) if ray is not None and to_run else False
    try:
        if wipe:
            shutil.rmtree(sweep.out)
        sweep.out.mkdir(parents=True, exist_ok=True)
        _run_trials(sweep, record, finished, to_run, ray=ray, cpus=ray_cpus_per_trial, gpus=ray_gpus_per_trial,
                    train_fn=train_fn, say=say)
    finally:
        if ray_started_here:
            ray.shutdown()
    say(summary_table(record))
    return record


def _run_trials(sweep: Sweep, record: dict, finished: set[str], to_run: list[Trial], *, ray, cpus: float,
                gpus: float, train_fn: Callable[..., Any] | None, say: Callable[[str], None]) -> None:
    """Record the finished and skipped trials, then run the others (here, or as Ray tasks when `ray`)."""
    entries = {t["name"]: t for t in record["trials"]}
    total = len(sweep.trials)
    skipped = [t for t in sweep.trials if not t.valid]
    if skipped:
        say(f"Skipping {len(skipped)} invalid trial(s): " + "; ".join(f"{t.name} ({t.error})" for t in skipped))
    for trial in sweep.valid_trials:
        entry = entries[trial.name]
        if trial.name in finished:
            entry.update(status="finished", error=None, result=entry.get("result") or trial_result(trial.run_dir))
            result = _format_result(entry["result"])
            say(f"[{trial.index + 1}/{total}] {trial.name}: finished earlier, skipped: {result}")
        else:
            entry.update(status="pending", error=None, result=None)
            entry.pop("traceback", None)
    _write_record(sweep.out, record)

    def start(trial: Trial, verb: str) -> None:
        entries[trial.name].update(status="running", started=_now(), ended=None)
        _write_record(sweep.out, record)
        state = trial_state(trial.run_dir, trial.config)
        how = {"new": "new", "restart": "restarted: no checkpoint", "resume": "resumed from its last checkpoint"}[state]
        say(f"[{trial.index + 1}/{total}] {trial.name}: {verb} ({how})")

    def finish(trial: Trial, outcome: dict) -> None:
        entry = entries[trial.name]
        entry.update(status=outcome["status"], error=outcome.get("error"), action=outcome.get("action"),
                     wall_seconds=round(outcome["wall_seconds"], 3), result=outcome.get("result"), ended=_now())
        entry.pop("traceback", None)
        if outcome.get("traceback"):
            entry["traceback"] = outcome["traceback"]
        _write_record(sweep.out, record)
        detail = _format_result(entry["result"]) if entry["status"] == "finished" else entry["error"]
        say(f"[{trial.index + 1}/{total}] {trial.name}: {entry['status']} in {outcome['wall_seconds']:.1f} s: {detail}")

    def interrupted(trials: list[Trial]) -> None:
        for trial in trials:
            entries[trial.name].update(status="interrupted", ended=_now())
        _write_record(sweep.out, record)

    if ray is not None:
        # A worker's working directory is not this one (nor, on a cluster, this machine's): absolute paths.
        config_file = str(Path(sweep.config_file).resolve()) if sweep.config_file else None
        tasks = {t.name: {"overrides": [*t.overrides[:-1], f"out={t.run_dir.resolve()}"], "config_file": config_file}
                 for t in to_run}
        _run_on_ray(ray, to_run, tasks, start, finish, interrupted, cpus=cpus, gpus=gpus)
        return
    for trial in to_run:
        start(trial, "started")
        try:
            outcome = run_trial({"overrides": trial.overrides, "config_file": sweep.config_file}, train_fn=train_fn)
        except KeyboardInterrupt:
            interrupted([trial])
            raise
        finish(trial, outcome)
        # Compiled programs of finished trials are not reused (each trial builds its own); dropping them
        # keeps a long sweep's memory flat. JAX's persistent cache on disk still serves a repeat.
        import jax

        jax.clear_caches()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError("The Ray executor (--executor ray, --ray-address) needs Ray, which is not installed: "
                          "pip install 'ctde[ray]'. Without it, trials run one after another here.") from None
    return ray


def _connect_ray(ray, address: str | None) -> bool:
    """Connect to the Ray cluster at `address` (None: start a local one) unless connected already; True if this
    call connected (the sweep then disconnects at its end)."""
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address)
    except Exception as e:  # no cluster there (ConnectionError), a version mismatch, ...: say which and how
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise ConfigError(f"Cannot connect to {where}: {type(e).__name__}: {e}. Start one (`ray start --head`), "
                          f"or drop --ray-address / --executor ray to run the trials one after another here.") from None
    return True


def _run_on_ray(ray, trials: list[Trial], tasks: dict[str, dict], start, finish, interrupted, *,
                cpus: float, gpus: float) -> None:
    """Every trial as a Ray task (`run_trial` on a worker); results recorded as they arrive."""
    # max_retries=0: a crashed worker's trial is recorded as failed; a re-run of the sweep resumes it.
    remote = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(_run_trial_on_ray_worker)
    pending = {}
    for trial in trials:
        # Ray says nothing when a queued task starts: "running" means handed to Ray (queued or running).
        pending[remote.remote(tasks[trial.name])] = trial
        start(trial, "submitted to Ray")
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                trial = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except Exception as e:  # the worker died (killed, out of memory): no outcome came back
                    outcome = {"status": "failed", "error": f"{type(e).__name__}: {e}", "wall_seconds": 0.0}
                finish(trial, outcome)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        interrupted(list(pending.values()))
        raise


def summary_table(record: dict) -> str:
    """A plain-text table of a sweep's trials: status, wall time, final test results, errors."""
    trials = record["trials"]
    counts = {s: sum(t["status"] == s for t in trials) for s in ("finished", "failed", "interrupted", "skipped",
                                                                 "pending", "running")}
    head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    width = max([len(t["name"]) for t in trials] + [5])
    lines = [f"Sweep {record['out']}: {head} (of {len(trials)} trials)",
             f"  {'#':>3}  {'trial':<{width}}  {'status':<11}  {'wall (s)':>9}  final test"]
    for i, t in enumerate(trials, 1):
        wall = f"{t['wall_seconds']:.1f}" if t.get("wall_seconds") is not None else "-"
        detail = _format_result(t.get("result")) if t["status"] == "finished" else (t.get("error") or "-")
        lines.append(f"  {i:>3}  {t['name']:<{width}}  {t['status']:<11}  {wall:>9}  {detail}")
    return "\n".join(lines)


def failed_trials(record: dict) -> list[str]:
    """Names of the trials that failed or were interrupted (what makes `ctde sweep` exit with status 1)."""
    return [t["name"] for t in record["trials"] if t["status"] in ("failed", "interrupted")]


def describe_plan(sweep: Sweep) -> str:
    """What a run of the sweep would do, trial by trial (`ctde sweep --dry-run`); reads, writes nothing."""
    lines = [f"Sweep {sweep.out}: {len(sweep.trials)} trials"
             + (f" over {' x '.join(f'{a.key} ({len(a.values)})' for a in sweep.axes)}" if sweep.axes else "")
             + (f"; shared: {' '.join(sweep.shared)}" if sweep.shared else "")]
    for t in sweep.trials:
        what = trial_state(t.run_dir, t.config) if t.valid else f"skipped: {t.error}"
        lines.append(f"  [{t.index + 1}/{len(sweep.trials)}] {t.name}: {what}")
    return "\n".join(lines)
