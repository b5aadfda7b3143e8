"""Metrics files of a run: `metrics.jsonl` (one row per seed and evaluation), `metrics.csv` (the same rows),
and TensorBoard events under `tb/seed_<k>/`.

Rows carry the evaluation block index. On resume, rows from blocks after the restored checkpoint are
dropped before new ones are appended; the resumed run regenerates them identically, so nothing is lost.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np


def _clean(value):
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


class MetricsLogger:
    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.jsonl = self.run_dir / "metrics.jsonl"
        self.csv = self.run_dir / "metrics.csv"
        self.tensorboard = tensorboard
        self._writers: dict[int, object] = {}

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
