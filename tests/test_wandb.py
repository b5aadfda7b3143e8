"""Weights & Biases logging (log.wandb=true): one W&B run per seed with the same rows as metrics.jsonl.

Most tests stand a fake `wandb` module in sys.modules (no network, no wandb needed); one runs the real wandb,
when installed, in offline mode.
"""

from __future__ import annotations

import json
import sys
import types

import pytest

from ctde.config import build_config
from ctde.errors import ConfigError
from ctde.training.logger import WANDB_IDS_FILE, MetricsLogger, WandbSettings, read_metrics, wandb_settings
from ctde.training.resolve import resolve

ROWS = [{"seed": 0, "block": 0, "env_steps": 500, "test/agent/win_rate": 0.25, "train/loss": 1.5},
        {"seed": 1, "block": 0, "env_steps": 512, "test/agent/win_rate": 0.5, "train/loss": float("nan")}]


class FakeRun:
    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.id = kwargs.get("id") or f"id{len(FakeWandb.runs)}"
        self.logged, self.metrics, self.finished = [], [], False

    def define_metric(self, name, step_metric=None):
        self.metrics.append((name, step_metric))

    def log(self, row):
        self.logged.append(row)

    def finish(self):
        self.finished = True


class FakeWandb(types.ModuleType):
    runs: list[FakeRun] = []

    def __init__(self, fail: Exception | None = None):
        super().__init__("wandb")
        FakeWandb.runs = []
        self.fail = fail

    def init(self, **kwargs):
        if self.fail is not None:
            raise self.fail
        FakeWandb.runs.append(FakeRun(**kwargs))
        return FakeWandb.runs[-1]


@pytest.fixture
def fake_wandb(monkeypatch):
    module = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_one_wandb_run_per_seed_logs_the_metric_rows(tmp_path, fake_wandb):
    run_dir = tmp_path / "my_run"
    run_dir.mkdir()
    settings = WandbSettings(project="proj", entity="team", seeds=[0, 1], config={"algo": {"name": "vdn"}})
    logger = MetricsLogger(run_dir, tensorboard=False, wandb=settings)
    assert len(fake_wandb.runs) == 2  # started with the logger, before anything compiles
    logger.write(ROWS)
    logger.close()

    for seed, (run, row) in enumerate(zip(fake_wandb.runs, read_metrics(run_dir))):
        kwargs = run.kwargs
        assert (kwargs["project"], kwargs["entity"], kwargs["group"]) == ("proj", "team", "my_run")
        assert kwargs["name"] == f"my_run/seed_{seed}" and kwargs["dir"] == str(run_dir)
        assert kwargs["config"] == {"algo": {"name": "vdn"}, "seed": seed}
        assert ("*", "env_steps") in run.metrics and run.finished
        # The row of metrics.jsonl, less its seed (the run's) and non-finite values (null there).
        assert run.logged == [{k: v for k, v in row.items() if k != "seed" and v is not None}]
    assert "train/loss" not in fake_wandb.runs[1].logged[0]
    assert json.loads((run_dir / WANDB_IDS_FILE).read_text()) == {"0": "id0", "1": "id1"}

    # A resumed run continues the same W&B runs.
    MetricsLogger(run_dir, tensorboard=False, wandb=settings).close()
    resumed = fake_wandb.runs[2:]
    assert [(r.kwargs["id"], r.kwargs["resume"]) for r in resumed] == [("id0", "allow"), ("id1", "allow")]


def test_wandb_that_cannot_start_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", FakeWandb(fail=RuntimeError("api_key not configured (no-tty)")))
    with pytest.raises(ConfigError, match="api_key not configured.*WANDB_MODE=offline"):
        MetricsLogger(tmp_path, tensorboard=False, wandb=WandbSettings(project="p", seeds=[0]))


def test_log_wandb_is_checked_when_the_config_resolves(monkeypatch, fake_wandb):
    overrides = ["env=toy:hallway", "algo=vdn", "seed=3", "seeds=2", "log.wandb=true", "log.wandb_group=g"]
    config = resolve(build_config(overrides))
    settings = wandb_settings(config)
    assert settings.seeds == [3, 4] and settings.group == "g" and settings.project == "ctde"
    assert settings.config["log"]["wandb"] is True and settings.config["env"]["id"] == "toy:hallway"
    assert wandb_settings(resolve(build_config(["env=toy:hallway", "algo=vdn"]))) is None

    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'ctde\[wandb\]'"):
        resolve(build_config(overrides))
    resolve(build_config(["env=toy:hallway", "algo=vdn"]))  # off by default: no wandb needed


def test_real_wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, tensorboard=False, wandb=WandbSettings(project="ctde", seeds=[0, 1]))
    logger.write(ROWS)
    logger.close()
    ids = json.loads((tmp_path / WANDB_IDS_FILE).read_text())
    assert sorted(ids) == ["0", "1"]
    for run_id in ids.values():  # offline runs, ready for `wandb sync`
        assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
