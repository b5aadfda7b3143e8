"""The head-to-head table: CTDE, CADP(D), PTDE(KD), IGM-DA and CTDS, all on QMIX, and the baselines QTRAN,
CW-QMIX, OW-QMIX and DMIX under plain CTDE, on the same SMAX maps, seeds and env-step budget, with the direction
of each paper's claim (the paradigm's decentralized policy, or the baseline, beats plain CTDE QMIX) found or not.

    python benchmarks/head_to_head.py --budget smoke       # pipeline check: smax:3m, 3 seeds, 50k steps, every row
    python benchmarks/head_to_head.py --budget table       # 3m: 3 seeds, 200k steps, paradigm rows; 2s3z, 8m screened
    python benchmarks/head_to_head.py --budget full        # GPU: the papers' hard maps, 5 seeds, 2M steps

Which maps: plain CTDE QMIX runs first on every candidate map of the budget; a map stays in the table only if
QMIX's median final test win rate there reaches `--learns` (0.5): a paradigm cannot show it improves on QMIX where
QMIX learns nothing at that budget. The dropped maps and QMIX's score on them are recorded. A budget's `screen`
maps get the QMIX run only (whether QMIX learns there is recorded; the rows would exceed the budget's time).

Every method's score is its *exported decentralized policy*'s final greedy test win rate (CADP: the pruned D
model; PTDE: the distilled student, `distill.json`; IGM-DA and CTDS: the student). Runs are ordinary run
directories under --out (`<map>/<method>`); finished ones are reused, unfinished ones resumed. The table and the
statistics come from `ctde compare` (IQM and mean with stratified bootstrap CIs, probability of improvement over
CTDE). Results: benchmarks/results/head_to_head_<budget>.{json,md} and the compare folder's files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
QUIET = ["log.progress=false", "log.tensorboard=false"]

BUDGETS = {
    # The smoke budget checks the pipeline end to end, so it keeps its map whatever QMIX scores (learns 0).
    "smoke": {"maps": ["smax:3m"], "seeds": 3, "steps": 50_000, "eval_interval": 10_000, "eval_episodes": 16,
              "distill_steps": 20_000, "buffer_size": 1000, "learns": 0.0},
    # 3m only for the rows: measured 2026-12-07, QMIX's median final win rate at 200k steps is 0.0 on 2s3z and
    # about 0.6 on 8m, but a QMIX run on 8m takes about 23 minutes here, so 8m's four paradigm rows alone (1.5-2x
    # QMIX each) would take the table past its 2 hours. Both stay as screened maps: QMIX runs there and its score
    # is recorded. `--maps smax:3m,smax:8m` gives 8m its rows (and, as any `--maps`, screens nothing else).
    "table": {"maps": ["smax:3m"], "screen": ["smax:2s3z", "smax:8m"], "seeds": 3, "steps": 200_000,
              "eval_interval": 20_000, "eval_episodes": 32, "distill_steps": 50_000, "buffer_size": 2000},
    "full": {"maps": ["smax:5m_vs_6m", "smax:3s5z_vs_3s6z", "smax:3s_vs_5z", "smax:8m_vs_9m"], "seeds": 5,
             "steps": 2_000_000, "eval_interval": 20_000, "eval_episodes": 32, "distill_steps": 500_000,
             "buffer_size": 5000},
}
# (method, overrides, the paper's claim about it). Steps-dependent options are filled in by `method_overrides`.
METHODS = {
    "CTDE": (["paradigm=ctde"], None),
    "CADP(D)": (["paradigm=cadp"], "CADP (Zhou et al.): the pruned decentralized model beats CTDE QMIX"),
    "PTDE(KD)": (["paradigm=ptde"], "PTDE (Chen et al.): the distilled student beats plain QMIX, near its GIP teacher"),
    "IGM-DA": (["paradigm=igm_da"], "IGM-DA (Hong et al.): the student imitating an unlimited-sight expert beats QMIX"),
    "CTDS": (["paradigm=ctds"], "CTDS (Zhao et al.): the student distilled from a full-sight teacher beats QMIX"),
    # The papers' value-decomposition baselines, each under plain CTDE in place of QMIX (docs/backbones.md).
    "QTRAN": (["paradigm=ctde", "algo=qtran"], "QTRAN (Son et al.): its unrestricted joint Q beats QMIX"),
    "CW-QMIX": (["paradigm=ctde", "algo=cw_qmix"], "Weighted QMIX (Rashid et al.): CW-QMIX beats QMIX"),
    "OW-QMIX": (["paradigm=ctde", "algo=ow_qmix"], "Weighted QMIX (Rashid et al.): OW-QMIX beats QMIX"),
    "DMIX": (["paradigm=ctde", "algo=dmix"], "DFAC (Sun et al.): distributional DMIX beats QMIX"),
}

PARADIGM_ROWS = ("CTDE", "CADP(D)", "PTDE(KD)", "IGM-DA", "CTDS")


def method_overrides(method: str, budget: dict) -> list[str]:
    extra = list(METHODS[method][0])
    if method == "CADP(D)":
        extra.append(f"cadp.prune_start={budget['steps'] // 2}")  # prune over the second half, as the paper's schedule
    if method == "PTDE(KD)":
        extra.append(f"ptde.distill_steps={budget['distill_steps']}")
    return extra


def run_method(map_id: str, method: str, budget: dict, out: Path, say) -> dict:
    from ctde.training.runner import train

    run_dir = out / map_id.replace(":", "_") / method.replace("(", "_").replace(")", "")
    tic = time.perf_counter()
    if (run_dir / "summary.json").exists():
        status = "reused"
    elif (run_dir / "checkpoints").is_dir():
        train(resume=run_dir, quiet=True)
        status = "resumed"
    else:
        extra = method_overrides(method, budget)
        algo = next((o for o in extra if o.startswith("algo=")), "algo=qmix")  # QMIX unless the method names one
        args = [f"env={map_id}", algo, f"seeds={budget['seeds']}", f"steps={budget['steps']}",
                f"eval.interval={budget['eval_interval']}", f"eval.episodes={budget['eval_episodes']}",
                f"algo.buffer_size={budget['buffer_size']}", f"out={run_dir}", *QUIET,
                *[o for o in extra if o != algo]]
        train(args, overwrite=True, quiet=True)
        status = "trained"
    seconds = time.perf_counter() - tic
    say(f"{map_id:<16} {method:<9} {status} in {seconds:,.0f} s")
    # What the run took over every invocation that trained or resumed it (both stages, export, audit), kept
    # beside it so that a reused run still reports it. A run from before this file existed falls back to its
    # summary's last stage-1 session (training plus compiling): a lower bound.
    timing = run_dir / "head_to_head_seconds.json"
    if timing.exists():
        run_seconds = json.loads(timing.read_text())["seconds"] + (seconds if status != "reused" else 0.0)
    else:
        summary = json.loads((run_dir / "summary.json").read_text())
        run_seconds = seconds if status == "trained" else sum(
            float(summary.get(k, 0)) for k in ("wall time (s, excluding compile)", "compile time (s)"))
    timing.write_text(json.dumps({"seconds": round(run_seconds, 1)}))
    return {"map": map_id, "method": method, "run_dir": str(run_dir), "status": status, "seconds": round(seconds, 1),
            "run_seconds": round(run_seconds, 1)}


def final_win_rates(run_dir: Path) -> list[float]:
    """The exported model's final greedy test win rate per seed."""
    from ctde.experiments.compare import final_scores, load_run

    run = load_run(run_dir)
    scores = final_scores(run, run.export_model, "win_rate")
    return [float(x) for x in scores.values] if scores is not None else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--maps", help="comma-separated map ids (default: the budget's candidates and screened maps)")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--steps", type=float)
    parser.add_argument("--methods", help="comma-separated rows (default: every row for smoke; the paradigm rows, "
                        f"{','.join(PARADIGM_ROWS)}, for table and full, which the baselines would double)")
    parser.add_argument("--learns", type=float,
                        help="QMIX's median final win rate for a map to stay (default 0.5; smoke: 0, keeps every map)")
    parser.add_argument("--out", default="/tmp/ctde_head_to_head")
    args = parser.parse_args()
    budget = dict(BUDGETS[args.budget])
    if args.maps:
        budget["maps"] = [m for m in args.maps.split(",") if m]
        budget["screen"] = []  # the maps named are the whole run
    if args.seeds:
        budget["seeds"] = args.seeds
    if args.steps:
        budget["steps"] = int(args.steps)
    if args.learns is None:
        args.learns = budget.get("learns", 0.5)
    default_rows = METHODS if args.budget == "smoke" else PARADIGM_ROWS
    methods = [m for m in (args.methods or ",".join(default_rows)).split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "CTDE" not in methods:
        parser.error(f"methods must include CTDE and come from {', '.join(METHODS)}; got {unknown or methods}")
    out = Path(args.out) / args.budget

    def say(message: str) -> None:
        print(message, flush=True)

    tic = time.perf_counter()
    runs, kept, dropped, screened = [], [], {}, {}
    for map_id in budget["maps"] + budget.get("screen", []):  # QMIX first: it decides which maps the table keeps
        runs.append(run_method(map_id, "CTDE", budget, out, say))
        wins = final_win_rates(Path(runs[-1]["run_dir"]))
        qmix_scores = {"qmix_final_win_rates": wins, "median": float(np.median(wins)) if wins else None}
        if map_id not in budget["maps"]:
            screened[map_id] = {**qmix_scores, "run_seconds": runs[-1]["run_seconds"]}
            say(f"{map_id}: screened, QMIX's median final win rate {screened[map_id]['median']}")
        elif wins and qmix_scores["median"] >= args.learns:
            kept.append(map_id)
        else:
            dropped[map_id] = qmix_scores
            say(f"{map_id}: QMIX's median final win rate {dropped[map_id]['median']} < {args.learns}: dropped")
    for map_id in kept:
        for method in methods:
            if method != "CTDE":
                runs.append(run_method(map_id, method, budget, out, say))

    from ctde.experiments.compare import compare

    table_dirs = [Path(r["run_dir"]) for r in runs if r["map"] in kept]
    scores = {f"{r['map']} {r['method']}": final_win_rates(Path(r["run_dir"])) for r in runs}
    claims = []
    compared = None
    if table_dirs:
        compared = compare(table_dirs, out=out / "compare", metric="win_rate", models=["export"])
        for map_id in kept:
            base = scores[f"{map_id} CTDE"]
            for method in methods:
                if method == "CTDE":
                    continue
                ours = scores[f"{map_id} {method}"]
                claims.append({"map": map_id, "method": method, "claim": METHODS[method][1],
                               "mean": float(np.mean(ours)), "ctde_mean": float(np.mean(base)),
                               "found": bool(np.mean(ours) > np.mean(base))})
    result = {"date": time.strftime("%Y-%m-%d"), "budget": args.budget, "settings": budget, "methods": methods,
              "learns_threshold": args.learns, "maps_kept": kept, "maps_dropped": dropped, "maps_screened": screened,
              "runs": runs,
              "final_win_rates": scores, "claims": claims, "total_seconds": round(time.perf_counter() - tic, 1),
              "runs_seconds": round(sum(r["run_seconds"] for r in runs), 1),
              "compare_dir": str(out / "compare") if compared else None, "command": "python " + " ".join(sys.argv)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"head_to_head_{args.budget}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Head-to-head on QMIX, budget `{args.budget}` ({result['date']})", "",
             f"`{result['command']}`: {budget['seeds']} seeds, {budget['steps']:,} env steps per seed, "
             f"{result['total_seconds'] / 60:.0f} min for this invocation; its runs' own recorded times sum to "
             f"{result['runs_seconds'] / 60:.0f} min (per run in the json: `run_seconds`, as measured, beside whatever "
             f"else the machine ran). Score: the exported decentralized policy's final greedy test win rate, mean ± "
             f"std over seeds.", ""]
    if dropped:
        lines += ["Maps dropped because QMIX's median final win rate stayed below "
                  f"{args.learns}: " + ", ".join(f"{m} ({d['median']})" for m, d in dropped.items()), ""]
    if screened:
        lines += ["Maps screened (QMIX only; their paradigm rows would exceed the budget's time): " + ", ".join(
            f"{m} (QMIX median {d['median']}, {d['run_seconds'] / 60:.0f} min)" for m, d in screened.items()), ""]
    if compared is not None:
        lines += [compared.table_markdown, ""]
        lines += ["| map | method | paper's claim | ours vs CTDE (mean win rate) | direction found |",
                  "|---|---|---|---|---|"]
        for c in claims:
            lines.append(f"| {c['map']} | {c['method']} | {c['claim']} | {c['mean']:.2f} vs {c['ctde_mean']:.2f} | "
                         f"{'yes' if c['found'] else 'no'} |")
        aggregate_file = out / "compare" / "aggregate.md"
        if aggregate_file.exists():
            profile = f"head_to_head_{args.budget}_performance_profile.png"
            (RESULTS / f"head_to_head_{args.budget}_aggregate.md").write_text(
                aggregate_file.read_text().replace("(performance_profile.png)", f"({profile})"))
            if (out / "compare" / "performance_profile.png").exists():
                shutil.copy(out / "compare" / "performance_profile.png", RESULTS / profile)
    if args.budget == "smoke":
        lines += ["", "A smoke budget checks the pipeline; its numbers say nothing about the papers' claims."]
    (RESULTS / f"head_to_head_{args.budget}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
