"""IGM-DA's Table 1 (Hong, Jin & Tang, NeurIPS 2022) on SMAX at sight 0, with CTDS as an extra column.

Rows: the paper's maps that SMAX can express (3s5z, 5m_vs_6m, 8m, 3s_vs_5z, 8m_vs_9m; MMM2 needs medivacs).
Columns: QMIX, QMIX-DA, QPLEX, QPLEX-DA, DMIX, DMIX-DA (the paper's), CTDS (QMIX teacher; extra).
`--columns` runs some of them; the results file keeps the other columns' cells from an earlier run of the budget.
Every run uses env.sight_range=0 and the same settings, those of `configs/igm_da_smac.yaml` (RMSprop 5e-4, ε 1.0 → 0.1 over
50k steps, one update per episode, target copy every 200 episodes) with only the paradigm and algo changed, as
the paper keeps "the hyper-parameters of all algorithms under comparison as well as the optimizers" equal.
Cells: final greedy test win rate of the decentralized model (the student for -DA and CTDS; the agent for plain
QMIX/QPLEX/DMIX), in %, mean ± std over seeds; the paper's number beside it.

    python benchmarks/reproduce_igm_da.py --budget smoke   # 2 maps, 2 seeds, 10k steps: ~20-30 min, 2 CPU cores
    python benchmarks/reproduce_igm_da.py --budget full    # 5 maps, 5 seeds, 2M steps: the paper's budget (GPU)

Smoke numbers check that everything runs and show early learning; they are NOT comparable to the paper's,
which come from 2M steps on StarCraft II (SMAX differs: heuristic enemy, its own unit stats and rewards).
Writes benchmarks/results/igm_da_table1_<budget>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ctde.config import load_yaml
from ctde.training.runner import train

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PRESET = ROOT / "configs" / "igm_da_smac.yaml"

MAPS = ("3s5z", "5m_vs_6m", "8m", "3s_vs_5z", "8m_vs_9m")
NOT_EXPRESSIBLE = {"MMM2": "needs medivacs, which SMAX does not model"}
# column -> (algo, paradigm, the decentralized model that is scored)
COLUMNS = {
    "QMIX": ("qmix", "ctde", "agent"),
    "QMIX-DA": ("qmix", "igm_da", "student"),
    "QPLEX": ("qplex", "ctde", "agent"),
    "QPLEX-DA": ("qplex", "igm_da", "student"),
    "DMIX": ("dmix", "ctde", "agent"),
    "DMIX-DA": ("dmix", "igm_da", "student"),
    "CTDS": ("qmix", "ctds", "student"),
}
# The paper's Table 1 (SMAC, sight view 0, average win %). QMIX rows also in ALGORITHMS.md.
PAPER = {
    "QMIX": {"3s5z": 90.2, "5m_vs_6m": 36.4, "MMM2": 26.2, "8m": 98.3, "3s_vs_5z": 1.9, "8m_vs_9m": 33.9},
    "QMIX-DA": {"3s5z": 93.3, "5m_vs_6m": 50.6, "MMM2": 55.4, "8m": 99.2, "3s_vs_5z": 43.9, "8m_vs_9m": 70.8},
    "QPLEX": {"3s5z": 87.0, "5m_vs_6m": 5.0, "MMM2": 0.0, "8m": 98.7, "3s_vs_5z": 18.9, "8m_vs_9m": 36.2},
    "QPLEX-DA": {"3s5z": 88.3, "5m_vs_6m": 38.9, "MMM2": 55.4, "8m": 99.6, "3s_vs_5z": 31.6, "8m_vs_9m": 64.8},
    "DMIX": {"3s5z": 76.2, "5m_vs_6m": 58.7, "MMM2": 0.0, "8m": 99.4, "3s_vs_5z": 3.3, "8m_vs_9m": 64.7},
    "DMIX-DA": {"3s5z": 91.7, "5m_vs_6m": 59.0, "MMM2": 46.2, "8m": 99.8, "3s_vs_5z": 40.6, "8m_vs_9m": 64.4},
}
BUDGETS = {
    # Sized for a 2-core CPU (~20-30 min; compilation is most of it): two maps, 2 seeds, 10k steps, exploration
    # annealed over 5k steps and one update per rollout of 8 episodes (target copy every 200 episodes). 10k steps
    # are at most ~500 episodes, so a 500-episode replay holds them all; the default 5000 padded episodes would
    # take ~8.5 GB per seed on 8m with the full_obs view that IGM-DA and CTDS store.
    "smoke": {"maps": ("8m", "5m_vs_6m"), "seeds": 2, "steps": 10_000, "interval": 10_000,
              "overrides": ("algo.updates_per_rollout=1", "algo.target_update_interval=25",
                            "algo.epsilon_anneal_steps=5000", "algo.buffer_size=500", "eval.episodes=32")},
    "full": {"maps": MAPS, "seeds": 5, "steps": 2_000_000, "interval": 10_000, "overrides": ("eval.episodes=32",)},
}
NOT_COMPARABLE = ("Smoke budget: short runs that check the pipeline and show early learning. These numbers are NOT "
                  "comparable to the paper's (2M steps on StarCraft II; SMAX has a heuristic enemy and its own "
                  "unit statistics).")


def shared_settings() -> list[str]:
    """The preset's options as key=value, without its paradigm and algo (set per column)."""
    flat, stack = [], [("", load_yaml(PRESET))]
    while stack:
        prefix, node = stack.pop()
        for key, value in node.items():
            if isinstance(value, dict):
                stack.append((f"{prefix}{key}.", value))
            elif f"{prefix}{key}" not in ("paradigm", "algo.name"):
                flat.append(f"{prefix}{key}={value}")
    return flat


def run_cell(map_name: str, column: str, budget: dict, out: Path) -> dict:
    algo, paradigm, model = COLUMNS[column]
    if out.exists():
        shutil.rmtree(out)
    tic = time.perf_counter()
    result = train([*shared_settings(), f"env=smax:{map_name}", f"algo={algo}", f"paradigm={paradigm}",
                    f"seeds={budget['seeds']}", f"steps={budget['steps']}", f"eval.interval={budget['interval']}",
                    *budget["overrides"], f"out={out}", "log.progress=false", "log.tensorboard=false"], quiet=True)
    seconds = time.perf_counter() - tic
    last = max(r["block"] for r in result.rows)
    final = [r for r in result.rows if r["block"] == last]
    win = [100.0 * r[f"test/{model}/win_rate"] for r in final]
    cell = {"map": map_name, "column": column, "algo": algo, "paradigm": paradigm, "model": model,
            "win_percent": win, "mean": float(np.mean(win)), "std": float(np.std(win)),
            "env_steps": [int(r["env_steps"]) for r in final], "wall_seconds": seconds,
            "compile_seconds": float(result.summary["compile time (s)"]), "audit": result.summary["decentralization audit"]}
    privileged = {"igm_da": "expert", "ctds": "teacher"}.get(paradigm)
    if privileged:
        cell["privileged_win_percent"] = [100.0 * r[f"test/{privileged}/win_rate"] for r in final]
    print(f"{map_name:>9} {column:<8} {cell['mean']:5.1f} ± {cell['std']:4.1f}  ({seconds:.0f} s)", flush=True)
    return cell


def table(cells: list[dict], budget_name: str, budget: dict) -> str:
    by = {(c["map"], c["column"]): c for c in cells}
    lines = [f"# IGM-DA Table 1 on SMAX, sight 0 — budget `{budget_name}`", ""]
    if budget_name != "full":
        lines += [f"**{NOT_COMPARABLE}**", ""]
    lines += [f"{budget['seeds']} seeds × {budget['steps']:,} env steps per cell; final greedy win % of the "
              f"decentralized model, mean ± std over seeds; (paper) = the paper's SMAC number at sight 0.", "",
              "| map | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for map_name in [*budget["maps"], *NOT_EXPRESSIBLE]:
        row = []
        for column in COLUMNS:
            paper = PAPER.get(column, {}).get(map_name)
            paper_text = f" ({paper:.1f})" if paper is not None else ""
            cell = by.get((map_name, column))
            if map_name in NOT_EXPRESSIBLE:
                row.append(f"n/a{paper_text}")
            elif cell is None:
                row.append(f"—{paper_text}")
            else:
                row.append(f"{cell['mean']:.1f} ± {cell['std']:.1f}{paper_text}")
        lines.append(f"| {map_name} | " + " | ".join(row) + " |")
    lines += ["", f"MMM2: not run, SMAX {NOT_EXPRESSIBLE['MMM2']}. CTDS has no number in the IGM-DA paper.",
              "Privileged models (expert / teacher, full sight) at the end, win %: " + "; ".join(
                  f"{c['map']} {c['column']} {np.mean(c['privileged_win_percent']):.1f}"
                  for c in cells if "privileged_win_percent" in c), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=tuple(BUDGETS), default="smoke")
    parser.add_argument("--maps", nargs="*", help="override the budget's maps")
    parser.add_argument("--columns", nargs="*", choices=tuple(COLUMNS), default=list(COLUMNS))
    parser.add_argument("--out", default=str(ROOT / "runs" / "igm_da_table1"), help="where the runs go (replaced)")
    args = parser.parse_args()
    budget = dict(BUDGETS[args.budget])
    if args.maps:
        budget["maps"] = tuple(args.maps)
    if args.budget != "full":
        print(NOT_COMPARABLE, flush=True)
    tic = time.perf_counter()
    cells = [run_cell(m, c, budget, Path(args.out) / f"{m}_{c}") for m in budget["maps"] for c in args.columns]
    total = time.perf_counter() - tic
    RESULTS.mkdir(exist_ok=True)
    earlier = RESULTS / f"igm_da_table1_{args.budget}.json"
    if earlier.exists():  # keep the cells of an earlier run of this budget that were not rerun (e.g. --columns DMIX)
        rerun = {(c["map"], c["column"]) for c in cells}
        kept = [c for c in json.loads(earlier.read_text())["cells"] if (c["map"], c["column"]) not in rerun]
        cells = sorted(kept + cells, key=lambda c: list(COLUMNS).index(c["column"]))
    record = {"budget": args.budget, "settings": {**budget, "shared": shared_settings(), "sight_range": 0},
              "comparable_to_paper": args.budget == "full", "note": None if args.budget == "full" else NOT_COMPARABLE,
              "total_wall_seconds": total, "cells": cells, "paper": PAPER}
    (RESULTS / f"igm_da_table1_{args.budget}.json").write_text(json.dumps(record, indent=2))
    markdown = table(cells, args.budget, budget) + (f"\nWall time of this run ({', '.join(args.columns)}): "
                                                     f"{total / 60:.1f} min.\n")
    (RESULTS / f"igm_da_table1_{args.budget}.md").write_text(markdown)
    print(markdown)
    print(f"wrote {RESULTS / f'igm_da_table1_{args.budget}.md'} and .json")


if __name__ == "__main__":
    main()
