"""PTDE's Table 2 on SMAX: QMIX, QMIX_GIU, QMIX_GIP (stage 1, centralized execution), QMIX_KD (stage 2, the
distilled decentralized student) and PRR = win(KD) / win(GIP), per map, mean ± std over seeds.

    python benchmarks/reproduce_ptde.py --budget smoke     # 2 maps, 1 seed, short runs: checks the pipeline
    python benchmarks/reproduce_ptde.py --budget full      # the paper's 6 maps, 3 seeds, 5.05M steps (GPU)

Stage-1 settings follow the authors' code (pymarl2's QMIX: 8 parallel episodes, batch 128, Adam 1e-3, TD(lambda)
0.6, epsilon over 100k steps); stage 2 distils 100 teacher episodes per seed for 500k steps of batch 2048.
Smoke numbers come from a few thousand steps and are NOT comparable with the paper's; SMAX also differs from
SC2 (a heuristic enemy, different unit statistics and observation sizes). Results: benchmarks/results/ptde_<budget>.*
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ctde.training.runner import train

RESULTS = Path(__file__).parent / "results"
MAPS = ["3s_vs_5z", "5m_vs_6m", "3s5z_vs_3s6z", "6h_vs_8z", "3s_vs_8z", "3s5z_vs_3s7z"]
# The paper's SMAC win rates (ALGORITHMS.md): GIP / KD / QMIX.
PAPER = {"3s_vs_5z": (0.992, 0.887, 0.128), "5m_vs_6m": (0.806, 0.690, 0.586),
         "3s5z_vs_3s6z": (0.776, 0.674, 0.140), "6h_vs_8z": (0.712, 0.524, 0.012),
         "3s_vs_8z": (0.990, 0.576, 0.355), "3s5z_vs_3s7z": (0.710, 0.631, 0.000)}
STAGE_1 = ["rollout.num_envs=8", "algo.batch_size=128", "algo.lr=1e-3", "algo.td_lambda=0.6",
           "algo.epsilon_anneal_steps=100000", "algo.target_update_interval=25"]
BUDGETS = {
    "smoke": {"maps": ["3s_vs_5z", "5m_vs_6m"], "seeds": 1, "steps": 20_000, "eval": 5_000,
              "extra": ["algo.epsilon_anneal_steps=10000", "algo.batch_size=32", "ptde.distill_episodes=20",
                        "ptde.distill_steps=2000", "ptde.distill_batch=512", "ptde.distill_log_every=200"]},
    "full": {"maps": MAPS, "seeds": 3, "steps": 5_050_000, "eval": 10_000, "extra": []},
}


def final_win_rates(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["block"] for r in rows)
    return [r["test/agent/win_rate"] for r in rows if r["block"] == last]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=BUDGETS, default="smoke")
    parser.add_argument("--maps", help="comma-separated subset of the budget's maps")
    parser.add_argument("--out", default="/tmp/ctde_reproduce_ptde")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    maps = args.maps.split(",") if args.maps else budget["maps"]
    out = Path(args.out)
    tic = time.perf_counter()
    results: dict = {"budget": args.budget, "seeds": budget["seeds"], "steps": budget["steps"], "maps": {}}
    for map_name in maps:
        common = [f"env=smax:{map_name}", "algo=qmix", f"seeds={budget['seeds']}", f"steps={budget['steps']}",
                  f"eval.interval={budget['eval']}", "log.progress=false", "log.tensorboard=false", *STAGE_1]
        entry = {}
        for label, extra in [("QMIX", ["paradigm=ctde"]),
                             ("GIU", ["paradigm=ptde", "ptde.global_info=unified"]),
                             ("GIP", ["paradigm=ptde", "ptde.global_info=personalized"])]:
            run_dir = out / f"{map_name}_{label}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            options = budget["extra"] if label != "QMIX" else [o for o in budget["extra"] if not o.startswith("ptde")]
            started = time.perf_counter()
            train([*common, *extra, *options, f"out={run_dir}"], quiet=True)
            seconds = time.perf_counter() - started
            if label == "QMIX":
                entry["QMIX"] = {"win_rate": final_win_rates(run_dir), "seconds": seconds}
            else:
                record = json.loads((run_dir / "distill.json").read_text())
                entry[f"QMIX_{label}"] = {"win_rate": record["teacher"]["win_rate"], "seconds": seconds}
                if label == "GIP":
                    entry["QMIX_KD"] = {"win_rate": record["student"]["win_rate"]}
                    entry["PRR"] = record["prr"]
                    entry["heldout_action_agreement"] = record["heldout_action_agreement"]
            print(f"{map_name} {label}: done in {seconds:.0f} s", flush=True)
        results["maps"][map_name] = entry
    results["total_seconds"] = time.perf_counter() - tic

    def cell(values):
        values = [v for v in values if v is not None]  # PRR is undefined for a seed whose teacher never won
        return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "undefined (GIP won 0)"

    header = "| method | " + " | ".join(maps) + " |"
    lines = [f"PTDE Table 2 layout on SMAX, budget `{args.budget}` ({budget['seeds']} seed(s), {budget['steps']:,} "
             f"env steps; win rate, mean ± std over seeds). Paper (SMAC) values in parentheses.", "", header,
             "|---" * (len(maps) + 1) + "|"]
    paper_index = {"QMIX_GIP": 0, "QMIX_KD": 1, "QMIX": 2}
    for method in ("QMIX", "QMIX_GIU", "QMIX_GIP", "QMIX_KD", "PRR"):
        cells = []
        for map_name in maps:
            entry = results["maps"][map_name]
            values = entry["PRR"] if method == "PRR" else entry[method]["win_rate"]
            paper = PAPER.get(map_name)
            note = ""
            if paper and method in paper_index:
                note = f" ({paper[paper_index[method]]:.3f})"
            elif paper and method == "PRR":
                note = f" ({paper[1] / paper[0]:.3f})"
            cells.append(cell(values) + note)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += ["", f"Total time: {results['total_seconds'] / 60:.1f} min. Smoke budgets check the pipeline; their numbers "
              f"are not comparable with the paper's."]
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ptde_{args.budget}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"ptde_{args.budget}.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
