"""The command line and the run lifecycle: help, bad input, resume, evaluation, corrupt checkpoints, NaNs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import pytest

from ctde.errors import CheckpointError, ConfigError, TrainingDivergedError

CTDE = [sys.executable, "-m", "ctde.cli"]
FAST = ("env=toy:hallway", "algo=vdn", "eval.interval=500", "eval.episodes=8", "log.chunk_evals=2",
        "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200")


def _cli(*args, check=False):
    return subprocess.run([*CTDE, *args], capture_output=True, text=True, check=check)


def test_train_help_lists_every_option():
    result = _cli("train", "--help", check=True)
    assert "env.sight_range" in result.stdout and "algo.td_lambda" in result.stdout
    assert "default: 2000000" in result.stdout  # steps


def test_bad_input_is_one_clear_message_not_a_traceback(tmp_path):
    result = _cli("train", "algo.lrr=3", f"out={tmp_path / 'x'}")
    assert result.returncode == 2
    assert "Unknown option 'algo.lrr'" in result.stderr and "Did you mean 'algo.lr'" in result.stderr
    assert "Traceback" not in result.stderr
    result = _cli("train", "env=smax:MMM2", f"out={tmp_path / 'x'}")
    assert result.returncode == 2 and "medivacs" in result.stderr
    result = _cli("eval", str(tmp_path / "missing"))
    assert result.returncode == 2 and "not a ctde run directory" in result.stderr
    assert not (tmp_path / "x").exists(), "a refused run must not create its directory"


def test_existing_run_directory_is_not_overwritten_by_accident(run_training):
    result = run_training(*FAST, "steps=1000")
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        run_training(*FAST, "steps=1000")
    assert (result.run_dir / "metrics.jsonl").exists()


def _rows(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def _comparable(rows):
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


# About 55-75 s: two runs compared row by row (make test-slow; CI runs it).
@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(run_training):
    from ctde.training.runner import train

    # Batches in 4 slices (32 sequences of 6 steps x 2 agents, 100 agent-steps per slice), run side by side
    # on two CPU devices: the replicated run state is checkpointed and restored like a one-device one.
    sliced = ("algo.slice_rows=100",)
    full = run_training(*FAST, *sliced, "steps=4000", "seeds=2", name="full")
    # A run stopped early by its stopping condition (after the chunk that passes 1,500 steps: two chunks of
    # two 500-step evaluations) is checkpointed there and continues like a killed one.
    half = run_training(*FAST, *sliced, "steps=4000", "seeds=2", name="half",
                        stop_when=lambda rows: max(row["env_steps"] for row in rows) >= 1500)
    assert {row["block"] for row in _rows(half.run_dir)} == {0, 1, 2, 3}
    assert "stopped early" in half.summary["env steps per seed"]
    # Continuing it to the full length must give exactly the uninterrupted metrics.
    resumed = train(resume=half.run_dir, quiet=True)
    assert _comparable(_rows(resumed.run_dir)) == _comparable(_rows(full.run_dir))
    with pytest.raises(ConfigError, match="Cannot change.*algo.lr"):
        train(resume=half.run_dir, resume_overrides=["algo.lr=0.1"], quiet=True)


def test_resume_after_a_kill_loses_at_most_one_chunk(run_training, tmp_path):
    """A run killed mid-way (simulated: metrics rows written after the last checkpoint, and a half-written
    checkpoint directory) resumes from its last complete checkpoint."""
    from ctde.training.runner import train

    full = run_training(*FAST, "steps=4000", name="full")
    killed = run_training(*FAST, "steps=2000", name="killed")
    with (killed.run_dir / "metrics.jsonl").open("a") as f:  # a row from a chunk that never checkpointed
        f.write(json.dumps({**_rows(killed.run_dir)[-1], "block": 4, "env_steps": 2500}) + "\n")
        f.write('{"seed": 0, "blo')  # cut mid-line by the kill
    partial = killed.run_dir / "checkpoints" / "3.orbax-checkpoint-tmp-123"
    partial.mkdir()
    resumed = train(resume=killed.run_dir, resume_overrides=["steps=4000"], quiet=True)
    assert _comparable(_rows(resumed.run_dir)) == _comparable(_rows(full.run_dir))


@pytest.mark.slow  # 43 s in make test on 2026-12-07 (cold, two workers)
def test_eval_of_a_saved_run(run_training):
    result = run_training(*FAST, "steps=1000", "seeds=2")
    out = _cli("eval", str(result.run_dir), "--episodes", "16", check=True).stdout
    assert "win_rate" in out and "return" in out and "episode_length" in out
    report = json.loads((result.run_dir / "eval_agent.json").read_text())
    assert len(report["per_seed"]) == 2 and report["episodes_per_seed"] == 16
    bad = _cli("eval", str(result.run_dir), "--model", "teacher")
    assert bad.returncode == 2 and "choose from agent" in bad.stderr
    for name in ("report.md", "learning_curve.png", "metrics.csv", "config.yaml", "policy/policy.json",
                 "policy/params.msgpack", "policy/audit.json"):
        assert (result.run_dir / name).exists(), name
    audit = _cli("audit", str(result.run_dir / "policy"), check=True).stdout
    assert "PASS" in audit


def test_corrupt_checkpoints(run_training):
    from ctde.training.runner import evaluate

    result = run_training(*FAST, "steps=2000", "log.checkpoints_kept=2")
    checkpoints = sorted((result.run_dir / "checkpoints").iterdir(), key=lambda p: int(p.name))
    assert len(checkpoints) == 2
    # Damage the newest: evaluation falls back to the previous one.
    for f in (checkpoints[-1] / "agent_params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    evaluate(result.run_dir, episodes=4, quiet=True)
    # Damage every checkpoint: a clear error.
    for f in (checkpoints[0] / "agent_params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"corrupt")
    with pytest.raises(CheckpointError, match="could be restored"):
        evaluate(result.run_dir, episodes=4, quiet=True)


def test_nan_loss_stops_the_run_and_keeps_the_last_checkpoint(run_training, monkeypatch, tmp_path):
    from ctde.algos.value_decomposition import ValueDecomposition

    original = ValueDecomposition.td_loss

    def poisoned(self, params, target_params, batch, env_steps, key=None):
        loss, metrics = original(self, params, target_params, batch, env_steps, key)
        return jnp.where(env_steps > 1200, jnp.nan, loss), metrics

    monkeypatch.setattr(ValueDecomposition, "td_loss", poisoned)
    with pytest.raises(TrainingDivergedError, match=r"NaN or infinite at env step 1,\d{3}.*last good checkpoint \(chunk 1\)"):
        run_training(*FAST, "steps=4000", name="nan")
    run_dir = tmp_path / "nan"
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()] == ["1"]
    rows = _rows(run_dir)
    assert rows and rows[0]["nonfinite_step"] == -1  # metrics written before the failure are kept
    monkeypatch.setattr(ValueDecomposition, "td_loss", original)
    from ctde.training.runner import evaluate

    evaluate(run_dir, episodes=4, quiet=True)  # the kept checkpoint is usable


def test_steps_to_reach_uses_the_median_over_seeds_and_skips_unevaluated_points():
    """Report figure 'env steps to median test win rate': the first test point whose median over seeds reaches
    the threshold; points where no seed evaluated the model (a PTDE student before stage 2) never count."""
    import warnings

    from ctde.training.report import steps_to_reach

    win = {0: [None, None, 0.5, 0.9], 1: [None, None, 0.7, 0.95], 2: [None, None, 0.9, 0.2]}
    rows = [{"seed": seed, "block": block, "env_steps": 1000 * (block + 1),
             "test/student/win_rate": float("nan") if rate is None else rate}
            for seed, rates in win.items() for block, rate in enumerate(rates)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an all-NaN median used to warn
        assert steps_to_reach(rows, "student", 0.7) == 3000.0  # medians: -, -, 0.7, 0.9
        assert steps_to_reach(rows, "student", 0.8) == 4000.0
        assert steps_to_reach(rows, "student", 0.95) is None
