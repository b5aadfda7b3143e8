"""Time to win: QMIX on SMAX 3m, several seeds in one compiled program, until the median test win rate
reaches a threshold (default 0.9) or the step budget (default 500k) runs out. The run stops at the first
compiled chunk (two evaluations) after the threshold is reached; `--full` runs out the budget instead.

Reports the env steps and wall time (compile excluded, then included) at which the median over seeds of the
greedy test win rate first reaches the threshold, and plots every seed's curve with the median.

    python benchmarks/learning.py                    # defaults: 3 seeds, 500k steps, threshold 0.9
    python benchmarks/learning.py algo.lr=1e-3       # extra key=value overrides go to the run
    python benchmarks/learning.py --from-run DIR     # the same record from a run already made (e.g. one
                                                     # stopped at the threshold, then `ctde train --resume`d)
    python benchmarks/learning.py --name learning_qmix_3m_bfloat16 algo.matmul_precision=bfloat16
                                                     # a variant, recorded beside the main record
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ctde.config import to_dict
from ctde.training.report import curves, label_env_steps, steps_to_reach
from ctde.training.logger import read_metrics
from ctde.training.runner import load_run_config, train

RESULTS = Path(__file__).parent / "results"
MODEL = "agent"


def median_win_rate(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(env steps [evals], win rates [seeds, evals], median over seeds [evals])."""
    steps, win = curves(rows, f"test/{MODEL}/win_rate")
    return steps, win, np.median(win, axis=0) if win.size else np.zeros(0)


def build_record(run_dir: Path, threshold: float) -> dict:
    """The benchmark's record from a run directory's metrics, summary and resolved config."""
    rows = read_metrics(run_dir)
    config = to_dict(load_run_config(run_dir))
    summary = json.loads((run_dir / "summary.json").read_text())
    steps, win, median = median_win_rate(rows)
    _, wall = curves(rows, "wall_seconds")
    hit = np.nonzero(median >= threshold)[0]
    compile_seconds = float(summary["compile time (s)"])
    after = median[hit[0]:] if hit.size else median[:0]
    return {
        "env": config["env"]["id"], "algo": config["algo"]["name"], "seeds": config["seeds"],
        "step_budget": int(config["steps"]), "threshold": threshold,
        "ran_full_budget": bool(steps.size and steps[-1] >= config["steps"]),
        "reached": bool(hit.size),
        "env_steps_to_threshold": float(steps[hit[0]]) if hit.size else None,
        "wall_seconds_to_threshold_excluding_compile": float(wall[0, hit[0]]) if hit.size else None,
        "wall_seconds_to_threshold_including_compile": float(wall[0, hit[0]] + compile_seconds) if hit.size else None,
        "compile_seconds": compile_seconds,
        "wall_seconds_excluding_compile": float(wall[0, -1]),
        "median_win_rate_from_threshold_on": (
            {"min": float(after.min()), "mean": float(after.mean()), "max": float(after.max()),
             "evaluations": int(after.size)} if after.size else None),
        "final_median_win_rate": float(median[-1]),
        "final_win_rates": [float(v) for v in win[:, -1]],
        "curve": {"env_steps": [float(s) for s in steps], "median_win_rate": [float(m) for m in median],
                  "win_rates": [[float(v) for v in seed] for seed in win]},
        "algo_config": config["algo"], "rollout_config": config["rollout"], "eval_config": config["eval"],
        "run_dir": str(run_dir),
    }


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = record["curve"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for seed, rates in enumerate(curve["win_rates"]):
        ax.plot(curve["env_steps"], rates, linewidth=0.8, alpha=0.5, label=f"seed {seed}")
    ax.plot(curve["env_steps"], curve["median_win_rate"], color="black", linewidth=2, label="median over seeds")
    ax.axhline(record["threshold"], color="grey", linestyle="--", linewidth=1)
    if record["reached"]:
        ax.axvline(record["env_steps_to_threshold"], color="grey", linestyle=":", linewidth=1)
        ax.text(record["env_steps_to_threshold"], 0.5, f" median {record['threshold']} at "
                f"{record['env_steps_to_threshold'] / 1e3:,.0f}k", fontsize=8, color="grey")
    label_env_steps(ax)
    ax.set_ylabel("test win rate (greedy)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"{record['algo']} on {record['env']}, {record['seeds']} seeds", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="3m")
    parser.add_argument("--algo", default="qmix")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=float, default=5e5)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--out", default=str(RESULTS / "learning_run"))
    parser.add_argument("--name", help="stem of the record's files under benchmarks/results/ (default "
                        "learning_<algo>_<map>; name a variant's run so it does not replace the main record)")
    parser.add_argument("--full", action="store_true", help="run the whole budget, not only until the threshold")
    parser.add_argument("--from-run", help="write the record of this existing run directory instead of training")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    if args.from_run:
        out = Path(args.from_run)
    else:
        out = Path(args.out)
        if out.exists():
            shutil.rmtree(out)

        def median_reached(rows: list[dict]) -> bool:
            return steps_to_reach(rows, MODEL, args.threshold) is not None

        tic = time.perf_counter()
        train([f"env=smax:{args.map}", f"algo={args.algo}", f"seeds={args.seeds}", f"steps={int(args.steps)}",
               f"out={out}", "log.progress=false", *args.overrides], quiet=True,
              stop_when=None if args.full else median_reached)
        print(f"trained in {time.perf_counter() - tic:,.0f} s")
    record = build_record(out, args.threshold)
    record["overrides"] = None if args.from_run else args.overrides
    RESULTS.mkdir(exist_ok=True)
    name = args.name or f"learning_{record['algo']}_{record['env'].split(':')[-1]}"
    (RESULTS / f"{name}.json").write_text(json.dumps(record, indent=2))
    plot(record, RESULTS / f"{name}.png")
    if record["reached"]:
        print(f"{record['algo']} on {record['env']}: median test win rate {args.threshold} at "
              f"{record['env_steps_to_threshold']:,.0f} env steps, "
              f"{record['wall_seconds_to_threshold_excluding_compile']:.0f} s "
              f"(+{record['compile_seconds']:.0f} s compile)")
    else:
        print(f"{record['algo']} on {record['env']}: median test win rate stayed below {args.threshold} "
              f"(final {record['final_median_win_rate']:.2f})")
    print(f"wrote {RESULTS / name}.json and .png")


if __name__ == "__main__":
    main()
