"""Fault injection for the reliability campaign (`benchmarks/reliability.py`) and its tests.

Three kinds of fault, each applied from outside the code it tests:

- `poisoned_loss(algo, after_step)`: the backbone's loss turns NaN once the learner has taken more than
  `after_step` env steps; `poisoned_distillation(after_step)` does the same to a stage-2 student. Both patch the
  method for the duration of a `with` block, in this process only.
- `kill_during(...)`: a real `ctde train` process, killed with SIGKILL when a trigger fires (a delay after its
  first checkpoint, the moment a checkpoint write is under way, or a delay into stage 2); `resume_and_compare`
  resumes it with `ctde train --resume` and compares every metric row with an uninterrupted run.
- `small_disk(size)`: a size-limited tmpfs (root only) to run a job on until its disk is full.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp

from ctde.algos import BACKBONES
from ctde.training import distill
from ctde.training.logger import read_metrics

CTDE = [sys.executable, "-m", "ctde.cli"]
CHECKPOINT_WRITE = re.compile(r"(\d+)\.orbax-checkpoint-tmp")


# ---------------------------------------------------------------------------------------------------------
# NaN injection


def _loss_method(algo: str) -> tuple[type, str]:
    """The class and name of the loss that `algo`'s updates differentiate."""
    entry = BACKBONES[algo]
    return entry.learner, {"value_decomposition": "td_loss", "policy_gradient": "loss",
                           "actor_critic": "loss"}[entry.capabilities.family]


@contextlib.contextmanager
def poisoned_loss(algo: str, after_step: int) -> Iterator[None]:
    """Inside the block, `algo`'s loss is NaN whenever the learner's env steps exceed `after_step` (the
    gradients, and so the parameters, become NaN as a real divergence makes them)."""
    owner, name = _loss_method(algo)
    original = getattr(owner, name)
    signature = inspect.signature(original)

    def poisoned(self, *args, **kwargs):
        env_steps = signature.bind(self, *args, **kwargs).arguments["env_steps"]
        loss, metrics = original(self, *args, **kwargs)
        return jnp.where(env_steps > after_step, jnp.nan, loss), metrics

    setattr(owner, name, poisoned)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def poisoned_distillation(after_step: int) -> Iterator[None]:
    """Inside the block, stage 2's student parameters (and so its loss) become NaN after distillation step
    `after_step`."""
    original = distill._make_chunk

    def make_chunk(*args, **kwargs):
        chunk = original(*args, **kwargs)

        def poisoned_chunk(state, data):
            state, metrics = chunk(state, data)
            bad = state.step > after_step
            student = jax.tree.map(lambda p: jnp.where(bad, jnp.nan, p), state.student)
            metrics = {k: jnp.where(bad, jnp.nan, v) for k, v in metrics.items()}
            return state.replace(student=student), metrics

        return poisoned_chunk

    distill._make_chunk = make_chunk
    try:
        yield
    finally:
        distill._make_chunk = original


# ---------------------------------------------------------------------------------------------------------
# Kills


@dataclass(frozen=True)
class Trigger:
    """When to kill. kind: "after_first_checkpoint" (sleep `delay` s once checkpoint 1 exists),
    "checkpoint_write" (the first moment a checkpoint numbered >= `from_checkpoint` is being written),
    "stage_two" (sleep `delay` s once stage 2's first logged loss exists), "before_first_checkpoint"
    (sleep `delay` s after the process starts)."""

    kind: str
    delay: float = 0.0
    from_checkpoint: int = 2


@dataclass
class KillOutcome:
    killed: bool  # False: the run finished before the trigger fired
    seconds_to_kill: float
    checkpoint_at_kill: int | None  # newest complete checkpoint when killed
    checkpoint_env_steps: int | None
    logged_env_steps: int  # the largest env step in metrics.jsonl when killed
    writing_checkpoint: bool  # a checkpoint write was in progress
    stage_two_steps_logged: int | None = None
    stdout_tail: str = ""
    extra: dict = field(default_factory=dict)


def cli_environment(compile_cache: str | Path | None = None) -> dict:
    """The environment for `ctde` subprocesses: JAX on the CPU, one shared persistent compile cache."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if compile_cache is not None:
        env["CTDE_COMPILE_CACHE"] = str(compile_cache)
    return env


def run_cli(args: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CTDE, *args], capture_output=True, text=True, env=env, timeout=timeout)


def complete_checkpoints(directory: Path) -> list[int]:
    """Numbered checkpoint directories that orbax finished (a partial write has a temporary name)."""
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def one_checkpoint_disk(checkpoints: Path) -> str:
    """A `small_disk` size on which one of these checkpoints fits and a second does not: 1.5 times the largest
    complete one in whole 4 KiB tmpfs pages, plus 128 KiB for the run's other files. Checkpoint sizes move with
    library versions, so a fixed size stops fitting exactly one (docs/tests.md tells how one did)."""
    largest = max(sum(-(-path.stat().st_size // 4096) * 4096 for path in (checkpoints / str(step)).rglob("*")
                      if path.is_file()) for step in complete_checkpoints(checkpoints))
    return f"{int(1.5 * largest) // 1024 + 128}k"


def _writing(directory: Path) -> list[int]:
    """The checkpoint numbers whose writes are under way (or were cut short), from one listing."""
    try:
        names = [entry.name for entry in os.scandir(directory)]
    except FileNotFoundError:
        return []
    return sorted(int(match.group(1)) for name in names if (match := CHECKPOINT_WRITE.match(name)))


def _logged_env_steps(run_dir: Path) -> int:
    return max((int(row["env_steps"]) for row in read_metrics(run_dir)), default=0)


def _checkpoint_env_steps(directory: Path, step: int) -> int | None:
    meta = directory / str(step) / "meta" / "metadata"
    try:
        return min(json.loads(meta.read_text())["env_steps"])
    except (OSError, ValueError, KeyError):
        return None


def kill_during(args: list[str], run_dir: Path, trigger: Trigger, env: dict, timeout: float = 900,
                poll: float = 0.0005) -> KillOutcome:
    """Start `ctde train *args` (which writes `run_dir`), kill its process group with SIGKILL when `trigger`
    fires, and describe the run directory at that moment."""
    checkpoints = run_dir / "checkpoints"
    start = time.perf_counter()
    process = subprocess.Popen([*CTDE, "train", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=env, start_new_session=True)
    fire_at = None
    try:
        while process.poll() is None:
            now = time.perf_counter()
            if now - start > timeout:
                raise TimeoutError(f"`ctde train {' '.join(args)}` ran past {timeout} s without the trigger firing")
            if trigger.kind == "checkpoint_write":
                if any(step >= trigger.from_checkpoint for step in _writing(checkpoints)):
                    break
                time.sleep(poll)
                continue
            if fire_at is None:
                if trigger.kind == "before_first_checkpoint":
                    fire_at = start + trigger.delay
                elif trigger.kind == "after_first_checkpoint" and complete_checkpoints(checkpoints):
                    fire_at = now + trigger.delay
                elif trigger.kind == "stage_two" and _distill_rows(run_dir) > 0:
                    fire_at = now + trigger.delay
            if fire_at is not None and now >= fire_at:
                break
            time.sleep(0.005)
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate()[0]
        # A write the kill interrupted leaves its temporary directory behind: proof it was under way.
        writing = bool(_writing(checkpoints))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    done = complete_checkpoints(checkpoints)
    latest = done[-1] if done else None
    return KillOutcome(killed=killed, seconds_to_kill=time.perf_counter() - start, checkpoint_at_kill=latest,
                       checkpoint_env_steps=_checkpoint_env_steps(checkpoints, latest) if latest else None,
                       logged_env_steps=_logged_env_steps(run_dir), writing_checkpoint=killed and writing,
                       stage_two_steps_logged=_distill_rows(run_dir) or None,
                       stdout_tail="\n".join(output.splitlines()[-5:]))


def _distill_rows(run_dir: Path) -> int:
    path = run_dir / "distill_metrics.jsonl"
    try:
        return max(0, len(path.read_text().splitlines()) - 1)  # the step-0 row comes before any training
    except OSError:
        return 0


def comparable_rows(path: Path) -> list[dict]:
    """Metric rows of a jsonl file without wall-clock fields, which legitimately differ between runs."""
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rows.append({k: v for k, v in json.loads(line).items() if k != "wall_seconds"})
    return rows


def first_difference(a: list[dict], b: list[dict]) -> str | None:
    """None when the rows are equal, else where they first differ."""
    if len(a) != len(b):
        return f"{len(a)} rows vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            keys = [k for k in set(x) | set(y) if x.get(k) != y.get(k)]
            return f"row {i} (seed {x.get('seed')}, block {x.get('block')}): {keys[:4]}"
    return None


def resume_and_compare(run_dir: Path, reference: Path, env: dict, timeout: float = 900) -> dict:
    """`ctde train --resume run_dir`, then compare its metrics (and stage 2's, if any) with `reference`'s."""
    tic = time.perf_counter()
    result = run_cli(["train", "--resume", str(run_dir)], env, timeout)
    outcome = {"resumed": result.returncode == 0, "resume_exit_status": result.returncode,
               "resume_seconds": round(time.perf_counter() - tic, 1),
               "resume_message": _last_error(result.stderr) if result.returncode else None}
    if result.returncode != 0:
        return outcome
    for name in ("metrics.jsonl", "distill_metrics.jsonl"):
        if (reference / name).exists():
            difference = first_difference(comparable_rows(run_dir / name), comparable_rows(reference / name))
            outcome[f"{name} equal"] = difference is None
            if difference:
                outcome[f"{name} first difference"] = difference
    outcome["metrics_equal"] = all(v for k, v in outcome.items() if k.endswith(" equal"))
    return outcome


def _last_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    return (lines[-1] if lines else "\n".join(stderr.splitlines()[-3:]))[:500]


def random_delays(n: int, low: float, high: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(low, high), 2) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------
# A small disk


@contextlib.contextmanager
def small_disk(size: str = "4m") -> Iterator[Path]:
    """A tmpfs of `size` mounted on a fresh directory (needs root and the mount capability); unmounted after."""
    mount_point = Path(tempfile.mkdtemp(prefix="ctde_small_disk_"))
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        mount_point.rmdir()
        raise PermissionError(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)
        with contextlib.suppress(OSError):
            mount_point.rmdir()
