"""Metrics files of a run: `metrics.jsonl` (one row per seed and evaluation), `metrics.csv` (the same rows),
and TensorBoard events under `tb/seed_<k>/`; optionally (log.wandb=true) Weights & Biases runs.

Rows carry the evaluation block index. On resume, rows from blocks after the restored checkpoint are
dropped before new ones are appended; the resumed run regenerates them identically, so nothing is lost.

W&B, like TensorBoard, gets one run per seed: named `<run directory>/seed_<k>`, grouped by `log.wandb_group`
(default: the run directory's name) so that W&B's grouping draws the mean and spread over seeds, with the
whole resolved configuration (plus the seed) as its config. Every row is logged with its numeric fields as they
are in metrics.jsonl, against `env_steps` as the x axis (`define_metric`). The W&B run ids are kept in
`<run>/wandb_runs.json`, so `ctde train --resume` continues the same W&B runs (rows of the chunk that was
redone are logged again). wandb is imported only when enabled; its standard environment variables apply, e.g.
WANDB_MODE=offline (files under `<run>/wandb/`, upload later with `wandb sync`) or WANDB_MODE=disabled.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ctde.config import to_dict
from ctde.errors import ConfigError


def _clean(value):
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass
class WandbSettings:
    """Where the W&B runs of one ctde run go. `seeds`: the seed numbers (config.seed + k), one W&B run each."""

    project: str
    seeds: list[int]
    config: dict = field(default_factory=dict)  # the resolved configuration, logged as each run's config
    entity: str | None = None
    group: str | None = None  # None: the run directory's name


def wandb_settings(config: Any) -> WandbSettings | None:
    """The W&B settings of a `TrainConfig`, or None when log.wandb is false."""
    if not config.log.wandb:
        return None
    return WandbSettings(project=config.log.wandb_project, entity=config.log.wandb_entity,
                         group=config.log.wandb_group, seeds=[config.seed + k for k in range(config.seeds)],
                         config=to_dict(config))


WANDB_IDS_FILE = "wandb_runs.json"


class MetricsLogger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True, wandb: WandbSettings | None = None):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.tensorboard = tensorboard
        self._writers: dict[int, object] = {}
        self._wandb_runs: dict[int, Any] = {}
        if wandb is not None:
            # Started here, before the run compiles: a W&B that cannot start (not logged in, no network in online
            # mode) fails in seconds rather than after the compilation.
            self._start_wandb(wandb)

    def truncate_after(self, blocks_done: int) -> None:
        """Keep only rows of blocks < `blocks_done` (used when resuming from a checkpoint)."""
        rows = [row for row in read_metrics(self.run_dir) if row["block"] < blocks_done]
        tmp = self.jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
        tmp.replace(self.jsonl)
        self._write_csv(rows)

    def write(self, rows: Iterable[dict]) -> None:
        rows = [{k: _clean(v) for k, v in row.items()} for row in rows]
        with self.jsonl.open("a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
        self._write_csv(read_metrics(self.run_dir))
        if self.tensorboard:
            for row in rows:
                writer = self._writer(row["seed"])
                for key, value in row.items():
                    if key in ("seed", "block", "env_steps") or not isinstance(value, (int, float)) or value is None:
                        continue
                    writer.add_scalar(key, value, row["env_steps"])
                writer.flush()
        for row in rows:
            run = self._wandb_runs.get(row["seed"])
            if run is not None:
                # Booleans are numbers too in W&B; None (a non-finite value, see _clean) is left out.
                run.log({k: v for k, v in row.items()
                         if k != "seed" and isinstance(v, (int, float)) and v is not None})

    def _start_wandb(self, settings: WandbSettings) -> None:
        """One W&B run per seed, resumed when `<run>/wandb_runs.json` has its id (a resumed ctde run)."""
        import wandb

        ids_file = self.run_dir / WANDB_IDS_FILE
        ids = {int(k): v for k, v in json.loads(ids_file.read_text()).items()} if ids_file.exists() else {}
        group = settings.group or self.run_dir.name
        try:
            for seed in settings.seeds:
                run = wandb.init(project=settings.project, entity=settings.entity, group=group,
                                 name=f"{self.run_dir.name}/seed_{seed}", job_type="train",
                                 config={**settings.config, "seed": seed}, allow_val_change=True,  # resume: steps
                                 dir=str(self.run_dir),
                                 id=ids.get(seed), resume="allow" if seed in ids else None, reinit="create_new")
                run.define_metric("env_steps")
                run.define_metric("*", step_metric="env_steps")
                self._wandb_runs[seed] = run
                ids[seed] = run.id
        except Exception as e:  # noqa: BLE001 - wandb's errors (login, network, settings) all mean the same here
            self.close()
            raise ConfigError(f"W&B could not start a run ({type(e).__name__}: {e}). Log in with `wandb login`, "
                              f"or set WANDB_MODE=offline to write the runs under {self.run_dir / 'wandb'} and "
                              f"upload them later with `wandb sync`, or set log.wandb=false. Nothing was trained: "
                              f"run the command again (a new run with --overwrite, as {self.run_dir} now "
                              f"exists).") from None
        tmp = ids_file.with_suffix(".json.tmp")
        tmp.write_text(json.dumps({str(k): v for k, v in ids.items()}, indent=2))
        tmp.replace(ids_file)

    def _write_csv(self, rows: list[dict]) -> None:
        if not rows:
            self.csv.write_text("")
            return
        keys = list(dict.fromkeys(k for row in rows for k in row))
        tmp = self.csv.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.csv)

    def _writer(self, seed: int):
        if seed not in self._writers:
            from tensorboardX import SummaryWriter

            self._writers[seed] = SummaryWriter(str(self.run_dir / "tb" / f"seed_{seed}"))
        return self._writers[seed]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        for run in self._wandb_runs.values():
            run.finish()
        self._wandb_runs.clear()


def read_metrics(run_dir: str | Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill; the resumed run rewrites it
    return rows
