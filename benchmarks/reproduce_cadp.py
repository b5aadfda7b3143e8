"""CADP's Table 2 on SMAX: backbone × map, plain CTDE against CADP's decentralized model CADP(D), mean ± std of
the final greedy test win rate over seeds, beside the paper's SMAC (SC2 4.10) numbers; and a Figure 3 style plot
(CTDE, CADP(C) and CADP(D) test curves per map and backbone, the pruning start marked).

Maps: the SMAX versions of 5m_vs_6m and 3s5z_vs_3s6z (the paper's), plus 3s_vs_5z. The paper's corridor needs
terrain, which SMAX cannot express. SMAX is not SC2: unit stats, the heuristic enemy AI, the observation and
action spaces (no no-op; SMAX's own feature layout) and the simulator differ, so win rates are not comparable
number for number; only the comparison within a row (CTDE vs CADP at equal budget) is.

Budgets (`--budget`):
  smoke  a pipeline check that fits in under 20 minutes on 2 CPU cores: 2 seeds, 4,000 env steps per run,
         pruning from half-way; QMIX and MAPPO on every map, VDN and QPLEX on 5m_vs_6m. Its numbers say nothing
         about the paper's claims.
  full   the paper's horizons, meant for a GPU: 5 seeds; 2M env steps (5m_vs_6m, 3s_vs_5z) and 4M
         (3s5z_vs_3s6z, the horizon of the paper's Figures 5-6); pruning from 700k (the released code's T);
         32 greedy test episodes every 10k steps. The final win rate is the mean over the tests in the last
         100k steps (the paper's ablations average the last 0.1M steps).

    python benchmarks/reproduce_cadp.py --budget smoke
    python benchmarks/reproduce_cadp.py --budget full --maps 5m_vs_6m --backbones qmix

Runs go to runs/reproduce_cadp_<budget>/ (each a normal ctde run directory); the table, raw numbers and plot
to benchmarks/results/reproduce_cadp_<budget>.{md,json,png}.

MAPPO (the paper's fourth row) runs with the paradigm's MAPPO defaults (α 0.5, pruning from 3M env steps in the
full budget, the released code's T); in the smoke budget its rollouts are shortened to 100 steps so that a
few iterations fit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctde.training.report import curves, label_env_steps
from ctde.training.runner import load_run_config, train

RESULTS = Path(__file__).parent / "results"
MAPS = ("5m_vs_6m", "3s5z_vs_3s6z", "3s_vs_5z")
ROWS = ("vdn", "qmix", "qplex", "mappo")  # the paper's Table 2 rows, in its order

# The paper's Table 2 (SMAC, SC2 4.10; CADP = its decentralized model): (mean, std) of the test win rate.
# 3s_vs_5z is not in the paper's table.
PAPER = {
    ("vdn", "5m_vs_6m"): ((0.54, 0.09), (0.66, 0.07)), ("vdn", "3s5z_vs_3s6z"): ((0.25, 0.18), (0.85, 0.20)),
    ("qmix", "5m_vs_6m"): ((0.43, 0.13), (0.68, 0.08)), ("qmix", "3s5z_vs_3s6z"): ((0.24, 0.36), (0.93, 0.03)),
    ("qplex", "5m_vs_6m"): ((0.57, 0.13), (0.73, 0.04)), ("qplex", "3s5z_vs_3s6z"): ((0.08, 0.11), (0.96, 0.02)),
    ("mappo", "5m_vs_6m"): ((0.85, 0.07), (0.97, 0.03)), ("mappo", "3s5z_vs_3s6z"): ((0.35, 0.39), (0.90, 0.16)),
}


@dataclass
class Budget:
    steps: dict[str, int]
    seeds: int
    eval_interval: int
    eval_episodes: int
    final_window: int  # env steps at the end over which test win rates are averaged
    prune_start: dict[str, int] = field(default_factory=dict)  # per map; absent = the paradigm's default
    options: tuple[str, ...] = ()
    mappo_options: tuple[str, ...] = ()
    replay_options: tuple[str, ...] = ()  # value-decomposition backbones only
    only: dict[str, tuple[str, ...]] | None = None  # backbone -> the maps it runs on (None: every map)


BUDGETS = {
    "smoke": Budget(steps={m: 4_000 for m in MAPS}, seeds=2, eval_interval=2_000, eval_episodes=8, final_window=1,
                    prune_start={m: 2_000 for m in MAPS}, options=("log.chunk_evals=2",),
                    mappo_options=("rollout.length=100",),
                    # 4,000 steps never fill more than a few hundred episodes; the default 5000 padded episodes
                    # of 3s5z_vs_3s6z (limit 170) for 2 seeds exhausted this machine's 24 GB.
                    replay_options=("algo.buffer_size=500",),
                    # Compilation dominates a smoke cell (~75 s per run on 2 cores): QMIX and MAPPO on every map,
                    # VDN and QPLEX on 5m_vs_6m, keeps it under 20 minutes.
                    only={"vdn": ("5m_vs_6m",), "qplex": ("5m_vs_6m",)}),
    "full": Budget(steps={"5m_vs_6m": 2_000_000, "3s5z_vs_3s6z": 4_000_000, "3s_vs_5z": 2_000_000}, seeds=5,
                   eval_interval=10_000, eval_episodes=32, final_window=100_000),
}


def run(map_name: str, backbone: str, paradigm: str, budget: Budget, runs_dir: Path, reuse: bool) -> list[dict]:
    out = runs_dir / f"{map_name}_{backbone}_{paradigm}"
    if reuse and (out / "summary.json").exists():  # a finished run of an earlier invocation
        return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if out.exists():
        shutil.rmtree(out)
    options = [f"env=smax:{map_name}", f"algo={backbone}", f"paradigm={paradigm}", f"seeds={budget.seeds}",
               f"steps={budget.steps[map_name]}", f"eval.interval={budget.eval_interval}",
               f"eval.episodes={budget.eval_episodes}", f"out={out}", "log.progress=false", "log.tensorboard=false",
               *budget.options, *(budget.mappo_options if backbone == "mappo" else budget.replay_options)]
    prune_start = budget.prune_start.get(map_name)
    if paradigm == "cadp" and prune_start is not None:
        options.append(f"cadp.prune_start={prune_start}")
    return train(options, quiet=True).rows


def final(rows: list[dict], model: str, window: int) -> list[float]:
    """Per seed: the mean test win rate over the evaluations in the last `window` env steps (at least one)."""
    steps, values = curves(rows, f"test/{model}/win_rate")
    keep = steps >= steps[-1] - window + 1
    keep[-1] = True
    return [float(v) for v in values[:, keep].mean(axis=1)]


def fmt(values) -> str:
    return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if values else "—"


def paper(backbone: str, map_name: str, which: int) -> str:
    entry = PAPER.get((backbone, map_name))
    return f"{entry[which][0]:.2f} ± {entry[which][1]:.2f}" if entry else "—"


def table(results: dict, budget_name: str, budget: Budget, rows: list[str], maps: list[str]) -> str:
    lines = [f"# CADP Table 2 on SMAX — budget `{budget_name}`", ""]
    if budget_name == "smoke":
        lines += ["**Smoke budget: a pipeline check, not a result.** A few thousand env steps per run; these numbers "
                  "are not comparable to the paper's and say nothing about its claims.", ""]
    lines += [f"Final greedy test win rate, mean ± std over {budget.seeds} seeds (last "
              f"{'evaluation' if budget.final_window <= budget.eval_interval else f'{budget.final_window:,} env steps'}"
              f"; {budget.eval_episodes} episodes per test). Ours: SMAX. Paper: SMAC on SC2 4.10 (Table 2), where "
              f"CADP is its decentralized model. SMAX differs from SC2 (units, enemy AI, observations, actions), so "
              f"compare within a row, not across the two sources.", "",
              "| backbone | map | env steps | CTDE (ours) | CADP(D) (ours) | CADP(C) (ours) | CTDE (paper) | "
              "CADP (paper) |", "|---|---|---|---|---|---|---|---|"]
    for backbone in rows:
        for map_name in maps:
            cell = results.get(f"{backbone}/{map_name}")
            if cell is None:
                ours = ["not run"] * 3
                steps = "—"
            else:
                ours = [fmt(cell["ctde"]), fmt(cell["cadp_decentralized"]), fmt(cell["cadp_centralized"])]
                steps = f"{cell['steps']:,}"
            lines.append(f"| {backbone.upper()} | {map_name} | {steps} | {' | '.join(ours)} | "
                         f"{paper(backbone, map_name, 0)} | {paper(backbone, map_name, 1)} |")
    lines += ["", "corridor (in the paper's table) is not expressible in SMAX (terrain); 3s_vs_5z is not in the "
              "paper's table.", ""]
    return "\n".join(lines)


def figure(curve_data: dict, rows: list[str], maps: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if any(f"{r}/{m}" in curve_data for m in maps)]
    fig, axes = plt.subplots(len(rows), len(maps), figsize=(4.5 * len(maps), 3.2 * len(rows)), squeeze=False)
    for ax_row, backbone in zip(axes, rows):
        for ax, map_name in zip(ax_row, maps):
            cell = curve_data.get(f"{backbone}/{map_name}")
            ax.set_title(f"{backbone.upper()} · {map_name}", fontsize=9)
            if cell is None:
                ax.axis("off")
                continue
            for label, (steps, values) in cell["curves"].items():
                values = np.asarray(values)
                line, = ax.plot(steps, values.mean(axis=0), label=label)
                ax.fill_between(steps, values.min(axis=0), values.max(axis=0), alpha=0.15, color=line.get_color(),
                                linewidth=0)
            ax.axvline(cell["prune_start"], color="grey", linestyle="--", linewidth=1)
            ax.text(cell["prune_start"], 1.0, " pruning starts", va="top", fontsize=7, color="grey")
            ax.set_ylim(-0.02, 1.02)
            label_env_steps(ax)
            ax.set_ylabel("test win rate")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title + " (mean over seeds, shaded min-max)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    from ctde.algos import BACKBONES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--maps", default=",".join(MAPS))
    parser.add_argument("--backbones", default=",".join(ROWS))
    parser.add_argument("--runs-dir", default=None, help="default: runs/reproduce_cadp_<budget>")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs already in the runs directory")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    maps = args.maps.split(",")
    rows = args.backbones.split(",")
    runs_dir = Path(args.runs_dir or f"runs/reproduce_cadp_{args.budget}")
    available = [r for r in rows if r in BACKBONES]
    for missing in (r for r in rows if r not in BACKBONES):
        print(f"{missing}: backbone not available in this version of ctde; its row is listed, not run.")

    results, curve_data, timings = {}, {}, {}
    start = time.perf_counter()
    for backbone in available:
        for map_name in maps:
            if budget.only and backbone in budget.only and map_name not in budget.only[backbone]:
                continue
            tic = time.perf_counter()
            ctde_rows = run(map_name, backbone, "ctde", budget, runs_dir, args.reuse)
            cadp_rows = run(map_name, backbone, "cadp", budget, runs_dir, args.reuse)
            key = f"{backbone}/{map_name}"
            timings[key] = time.perf_counter() - tic
            prune_start = load_run_config(runs_dir / f"{map_name}_{backbone}_cadp").cadp.prune_start
            results[key] = {
                "steps": budget.steps[map_name],
                "ctde": final(ctde_rows, "agent", budget.final_window),
                "cadp_decentralized": final(cadp_rows, "decentralized", budget.final_window),
                "cadp_centralized": final(cadp_rows, "centralized", budget.final_window),
                "prune_start": prune_start,
            }
            curve_data[key] = {"prune_start": prune_start, "curves": {}}
            for label, source, model in (("CTDE", ctde_rows, "agent"), ("CADP(C)", cadp_rows, "centralized"),
                                         ("CADP(D)", cadp_rows, "decentralized")):
                steps, values = curves(source, f"test/{model}/win_rate")
                curve_data[key]["curves"][label] = (steps.tolist(), values.tolist())
            r = results[key]
            print(f"{key}: CTDE {fmt(r['ctde'])}, CADP(D) {fmt(r['cadp_decentralized'])}, "
                  f"CADP(C) {fmt(r['cadp_centralized'])} ({timings[key]:.0f} s)", flush=True)
    total = time.perf_counter() - start

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"reproduce_cadp_{args.budget}"
    text = table(results, args.budget, budget, rows, maps)
    text += f"\nWall time of the whole benchmark: {total / 60:.1f} min ({time.strftime('%Y-%m-%d')}).\n"
    text += f"\n![Figure 3 style curves]({stem.name}.png)\n"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(
        {"budget": args.budget, "settings": budget.__dict__, "results": results, "curves": curve_data,
         "seconds_per_cell": timings, "total_seconds": total, "paper": {f"{b}/{m}": v for (b, m), v in PAPER.items()}},
        indent=2))
    figure(curve_data, rows, maps, stem.with_suffix(".png"), f"CADP on SMAX, budget {args.budget}")
    print(text)
    print(f"wrote {stem}.md, .json, .png")


if __name__ == "__main__":
    main()
