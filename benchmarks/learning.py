"""Time to win: QMIX on SMAX 3m, several seeds in one compiled program, until the median test win rate
reaches a threshold (default 0.9) or the step budget (default 500k) runs out. The run stops at the first
compiled chunk (two evaluations) after the threshold is reached; `--full` runs out the budget instead.

Reports the env steps and wall time (compile excluded, then included) at which the median over seeds of the
greedy test win rate first reaches the threshold, and writes the run's learning curve.

    python benchmarks/learning.py                    # defaults: 3 seeds, 500k steps, threshold 0.9
    python benchmarks/learning.py algo.lr=1e-3       # extra key=value overrides go to the run
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ctde.experiments.report import curves
from ctde.training.runner import train

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="3m")
    parser.add_argument("--algo", default="qmix")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=float, default=5e5)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", default=str(RESULTS / "learning_run"))
    parser.add_argument("--full", action="store_true", help="run the whole budget, not only until the threshold")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    model = "agent"

    def median_reached(rows: list[dict]) -> bool:
        _, win = curves(rows, f"test/{model}/win_rate")
        return bool(win.size) and bool(np.any(np.median(win, axis=0) >= args.threshold))

    tic = time.perf_counter()
    result = train([f"env=smax:{args.map}", f"algo={args.algo}", f"seeds={args.seeds}", f"steps={int(args.steps)}",
                    f"out={out}", "log.progress=false", *args.overrides], quiet=True,
                   stop_when=None if args.full else median_reached)
    total_seconds = time.perf_counter() - tic
    rows = result.rows
    steps, win = curves(rows, f"test/{model}/win_rate")
    _, wall = curves(rows, "wall_seconds")
    median = np.median(win, axis=0)
    hit = np.nonzero(median >= args.threshold)[0]
    summary = json.loads((out / "summary.json").read_text())
    compile_seconds = float(summary["compile time (s)"])
    record = {
        "map": args.map, "algo": args.algo, "seeds": args.seeds, "step_budget": int(args.steps),
        "threshold": args.threshold, "overrides": args.overrides, "ran_full_budget": args.full,
        "reached": bool(hit.size),
        "env_steps_to_threshold": float(steps[hit[0]]) if hit.size else None,
        "wall_seconds_to_threshold_excluding_compile": float(wall[0, hit[0]]) if hit.size else None,
        "wall_seconds_to_threshold_including_compile": float(wall[0, hit[0]] + compile_seconds) if hit.size else None,
        "compile_seconds": compile_seconds,
        "final_median_win_rate": float(median[-1]),
        "final_win_rates": [float(v) for v in win[:, -1]],
        "curve": {"env_steps": [float(s) for s in steps], "median_win_rate": [float(m) for m in median]},
        "total_wall_seconds": total_seconds,
        "run_dir": str(out),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"learning_{args.algo}_{args.map}.json"
    path.write_text(json.dumps(record, indent=2))
    shutil.copy(out / "learning_curve.png", RESULTS / f"learning_{args.algo}_{args.map}.png")
    if hit.size:
        print(f"{args.algo} on {args.map}: median test win rate {args.threshold} at {steps[hit[0]]:,.0f} env steps, "
              f"{wall[0, hit[0]]:.0f} s (+{compile_seconds:.0f} s compile)")
    else:
        print(f"{args.algo} on {args.map}: median test win rate stayed below {args.threshold} within "
              f"{int(args.steps):,} steps (final {median[-1]:.2f})")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
