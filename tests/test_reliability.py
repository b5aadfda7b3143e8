"""The reliability campaign's fast versions: two real kills, a full disk, and NaNs in every kind of backbone
and in stage 2. The 20-kill campaign is benchmarks/reliability.py."""

import errno
import json
from pathlib import Path

import pytest

from ctde.errors import CheckpointError, TrainingDivergedError
from ctde.testing.faults import (Trigger, cli_environment, complete_checkpoints, kill_during, one_checkpoint_disk,
                                     poisoned_distillation, poisoned_loss, resume_and_compare, small_disk)

COMPILE_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"  # conftest's, shared with the CLI
QUIET = ("log.progress=false", "log.tensorboard=false")
TOY = ("env=toy:hallway", "algo=vdn", "eval.interval=500", "eval.episodes=8", "log.chunk_evals=1",
       "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200", *QUIET)


@pytest.mark.slow  # 65 s in make test on 2026-12-07 (cold, two workers)
def test_two_kills_resume_to_exactly_the_uninterrupted_run(run_training, tmp_path):
    """SIGKILL a real `ctde train` a moment after its first checkpoint, and another in the middle of a checkpoint
    write; each resumes, loses at most the chunk in flight, and ends with every metric row of an uninterrupted run."""
    reference = run_training(*TOY, "steps=5000", name="reference").run_dir
    env = cli_environment(COMPILE_CACHE)
    for name, trigger in (("after_checkpoint", Trigger("after_first_checkpoint", delay=0.3)),
                          ("during_write", Trigger("checkpoint_write", from_checkpoint=3))):
        run_dir = tmp_path / name
        outcome = kill_during([*TOY, "steps=5000", f"out={run_dir}"], run_dir, trigger, env)
        assert outcome.killed, f"{name}: the run finished before the kill ({outcome.stdout_tail})"
        assert outcome.checkpoint_at_kill is not None
        chunk = 500
        lost = outcome.logged_env_steps - outcome.checkpoint_env_steps + (0 if outcome.writing_checkpoint else chunk)
        assert lost <= chunk + 16, f"{name}: lost {lost} env steps, more than the chunk in flight"
        if trigger.kind == "checkpoint_write":
            assert outcome.writing_checkpoint, "the kill did not land during a checkpoint write"
        resumed = resume_and_compare(run_dir, reference, env)
        assert resumed["resumed"], resumed
        assert resumed["metrics_equal"], resumed


def _fail_writes_after(monkeypatch, successful_saves: int):
    """Checkpoint writes after the first `successful_saves` fail as a full disk does (for machines that cannot
    mount a small tmpfs)."""
    import orbax.checkpoint as ocp

    original = ocp.CheckpointManager.save
    calls = {"n": 0}

    def save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > successful_saves:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(run_training, tmp_path, monkeypatch):
    """A checkpoint that does not fit: a clear error naming the intact checkpoint, no partial directory left, and
    the run, moved to a disk with room, resumes to the uninterrupted run's metrics. On a real tmpfs of 1.5
    checkpoints where one can be mounted (root with the mount capability), else with the write error injected at
    orbax's save."""
    import shutil

    reference = run_training(*TOY, "steps=3000", name="reference").run_dir
    disk = "tmpfs"
    try:
        mount = small_disk(one_checkpoint_disk(reference / "checkpoints"))  # one checkpoint fits, two do not
        root = mount.__enter__()
    except PermissionError:
        disk = "injected"
        _fail_writes_after(monkeypatch, successful_saves=2)
        root = tmp_path / "disk"
    try:
        run_dir = root / "run"
        with pytest.raises(CheckpointError, match=r"disk is full.*previous checkpoint \(\d+\) is intact"):
            run_training(*TOY, "steps=3000", name=str(run_dir))
        kept = complete_checkpoints(run_dir / "checkpoints")
        assert kept, "the checkpoints written before the full disk must remain"
        assert [p.name for p in (run_dir / "checkpoints").iterdir() if not p.name.isdigit()] == []
        moved = tmp_path / "moved"
        shutil.copytree(run_dir, moved)
    finally:
        if disk == "tmpfs":
            mount.__exit__(None, None, None)
    monkeypatch.undo()
    from ctde.testing.faults import comparable_rows
    from ctde.training.runner import train

    train(resume=moved, quiet=True)
    assert comparable_rows(moved / "metrics.jsonl") == comparable_rows(reference / "metrics.jsonl")


# Value decomposition's td_loss is tested in test_cli.py; every backbone (MAPPO too) in benchmarks/reliability.py.
NAN_RUNS = {
    "maddpg": ("env=toy:hallway", "algo.buffer_size=200"),
}


@pytest.mark.parametrize("algo", sorted(NAN_RUNS))
def test_a_nan_loss_stops_every_kind_of_backbone_and_resume_works(run_training, tmp_path, algo):
    from ctde.training.runner import train

    args = (f"algo={algo}", *NAN_RUNS[algo], "steps=3000", "eval.interval=500", "eval.episodes=4",
            "log.chunk_evals=2", *QUIET)
    with poisoned_loss(algo, after_step=1200):
        with pytest.raises(TrainingDivergedError, match=r"NaN or infinite at env step 1,\d{3}.*last good checkpoint "
                                                        r"\(chunk 1\)"):
            run_training(*args, name="nan")
    run_dir = tmp_path / "nan"
    assert complete_checkpoints(run_dir / "checkpoints") == [1]
    result = train(resume=run_dir, quiet=True)
    assert result.summary["decentralization audit"].startswith("PASS")
    assert max(row["env_steps"] for row in result.rows) >= 3000


@pytest.mark.slow  # 49 s in make test on 2026-12-07 (cold, two workers)
def test_a_nan_in_stage_two_stops_the_distillation_and_resume_finishes_it(run_training, tmp_path):
    from ctde.training.runner import train

    args = (*TOY, "paradigm=ptde", "steps=1000", "ptde.distill_steps=3000", "ptde.distill_log_every=100",
            "ptde.distill_episodes=16")
    with poisoned_distillation(after_step=2000):
        with pytest.raises(TrainingDivergedError, match=r"distillation loss became NaN.*distillation step 2,100.*"
                                                        r"last good stage-2 checkpoint \(distillation step 2,000\)"):
            run_training(*args, name="nan")
    run_dir = tmp_path / "nan"
    assert complete_checkpoints(run_dir / "checkpoints_distill") == [10, 20]
    train(resume=run_dir, quiet=True)
    rows = [json.loads(line) for line in (run_dir / "distill_metrics.jsonl").read_text().splitlines()]
    assert max(row["step"] for row in rows) == 3000
    assert all(row["train_loss"] == row["train_loss"] for row in rows), "the NaN rows must not survive the resume"
