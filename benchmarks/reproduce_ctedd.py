"""CTEDD's Figure 3 on MPE: test return against env steps on Push Forward and Predator-Prey for CTEDD-G (the
global policies of stage 1), CTEDD-1 and CTEDD-3 (local policies distilled from them with 1- and 3-bit messages)
and MADDPG (local policies trained directly), and the paper's claim checked from the means: G >= CTEDD-k (the
distilled policies retain, at most, what their teacher had) and CTEDD-k > MADDPG.

    python benchmarks/reproduce_ctedd.py --budget smoke                 # 250k env steps per seed, 3 seeds
    python benchmarks/reproduce_ctedd.py --budget medium                # 1M env steps per seed, 3 seeds (~1 h, CPU)
    python benchmarks/reproduce_ctedd.py --budget full                  # 2M env steps per seed, 3 seeds (GPU)
    python benchmarks/reproduce_ctedd.py --budget smoke --envs mpe:simple_tag

Per env, three runs of 3 seeds each (vmapped in one program): `algo=maddpg paradigm=ctde` (MADDPG, its curve
from `test/agent/return`), and `algo=maddpg paradigm=ctedd` with `ctedd.message_bits=1` and `=3`. Each CTEDD run
trains its own global policies in stage 1 (curve `test/global/return`; the figure draws the k=1 and k=3 runs'
CTEDD-G curves separately, not averaged) and distils them in stage 2. CTEDD-1 / CTEDD-3 exist only after stage 2,
so the figure draws them as points with error bars at the final env step (stage 2 rolls out
`ctedd.distill_episodes` teacher episodes for its data set, env steps that are not on the x axis). All other
options are the library's defaults.

Final returns (table, direction line): CTEDD-G and CTEDD-k from the run's `distill.json`, one greedy evaluation of
teacher and student with the same keys and episode count (max(eval.episodes, 32) per seed); MADDPG from its last
in-training greedy evaluation (eval.episodes per seed, the same count). Mean ± std over seeds. Held-out action
agreement and PRR (= local / global greedy return, per seed) come from `distill.json` too.

Caveats: smoke budgets are short (250k env steps per seed, about an eighth of the full budget) and their numbers
are NOT comparable with the paper's, which trains far longer and reports its own environment versions. The MPE
here is JaxMARL's pure-JAX MPE (`mpe:simple_tag`: 3 learning predators against a heuristic prey that flees the
nearest predator, not a learning prey) and ctde's own `mpe:push_forward` (no public scenario of that name exists;
defined in `ctde.envs.push_forward` with MPE physics). Episodes are 25 steps with no wins: the metric is return.

Runs go to `--out` (default /tmp/ctde_reproduce_ctedd), one ordinary ctde run directory per (env, method); the
table, raw numbers (per-seed curves too) and the figure to benchmarks/results/reproduce_ctedd_<budget>.{md,json,png}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ctde.training.report import curves, label_env_steps
from ctde.training.runner import load_run_config, train

RESULTS = Path(__file__).parent / "results"
ENVS = ("mpe:push_forward", "mpe:simple_tag")
TITLES = {"mpe:push_forward": "Push Forward (mpe:push_forward)",
          "mpe:simple_tag": "Predator-Prey (mpe:simple_tag, heuristic prey)"}
SEEDS = 3
BUDGETS = {
    "smoke": {"steps": 250_000, "eval_interval": 25_000, "eval_episodes": 32},
    "medium": {"steps": 1_000_000, "eval_interval": 50_000, "eval_episodes": 64},
    "full": {"steps": 2_000_000, "eval_interval": 50_000, "eval_episodes": 64},
}
# (run label, overrides); each CTEDD run yields two models: G (stage 1) and its local students (stage 2).
RUNS = (("maddpg", ["paradigm=ctde"]),
        ("ctedd_k1", ["paradigm=ctedd", "ctedd.message_bits=1"]),
        ("ctedd_k3", ["paradigm=ctedd", "ctedd.message_bits=3"]))
BITS = {"ctedd_k1": 1, "ctedd_k3": 3}
TIE = 1e-6  # means closer than this count as equal (float noise of identical evaluations)


def short(env_id: str) -> str:
    return env_id.split(":", 1)[-1]


def run_one(env_id: str, label: str, extra: list[str], budget: dict, out: Path, reuse: bool) -> dict:
    """Train one run (or reuse a finished one of the same budget); its rows, distill record and timings."""
    run_dir = out / f"{short(env_id)}_{label}"
    options = [f"env={env_id}", "algo=maddpg", *extra, f"seeds={SEEDS}", f"steps={budget['steps']}",
               f"eval.interval={budget['eval_interval']}", f"eval.episodes={budget['eval_episodes']}",
               "log.progress=false", "log.tensorboard=false", f"out={run_dir}"]
    finished = (run_dir / "summary.json").exists() and (run_dir / "run_seconds.json").exists()
    if reuse and finished and load_run_config(run_dir).steps == budget["steps"]:
        seconds = json.loads((run_dir / "run_seconds.json").read_text())["seconds"]
        print(f"{env_id} {label}: reusing the finished run in {run_dir}", flush=True)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)
        started = time.perf_counter()
        train(options, quiet=True)
        seconds = time.perf_counter() - started
        (run_dir / "run_seconds.json").write_text(json.dumps({"seconds": seconds}))
        print(f"{env_id} {label}: done in {seconds:.0f} s", flush=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    distill = json.loads((run_dir / "distill.json").read_text()) if (run_dir / "distill.json").exists() else None
    config = load_run_config(run_dir)
    stage_2_steps = config.ctedd.distill_episodes * (config.env.episode_limit or 25) if distill is not None else 0
    return {"run_dir": str(run_dir), "overrides": options, "seconds": seconds, "rows": rows, "summary": summary,
            "distill": distill, "distill_env_steps_per_seed": stage_2_steps}


def curve(rows: list[dict], key: str) -> dict:
    steps, values = curves(rows, key)
    seeds = sorted({r["seed"] for r in rows})
    return {"metric": key, "seeds": seeds, "env_steps": steps.tolist(), "per_seed": values.tolist()}


def mean_std(values) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def fmt(stats: dict, digits: int = 2) -> str:
    if stats is None or stats["mean"] is None:
        return "—"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def summarize_env(env_id: str, runs: dict) -> dict:
    """Curves, final returns, distillation figures and the direction versus the paper, for one env."""
    maddpg_rows = runs["maddpg"]["rows"]
    last = max(r["block"] for r in maddpg_rows)
    maddpg_final = [r["test/agent/return"] for r in sorted(maddpg_rows, key=lambda r: r["seed"]) if r["block"] == last]
    entry: dict = {"curves": {"MADDPG": curve(maddpg_rows, "test/agent/return")},
                   "final_return": {"MADDPG": {"per_seed": maddpg_final, **mean_std(maddpg_final),
                                               "source": "last in-training greedy evaluation"}},
                   "distillation": {}, "seconds": {label: run["seconds"] for label, run in runs.items()},
                   "run_dirs": {label: run["run_dir"] for label, run in runs.items()},
                   "summaries": {label: run["summary"] for label, run in runs.items()}}
    for label, bits in BITS.items():
        run, record = runs[label], runs[label]["distill"]
        g_name, k_name = f"CTEDD-G (k={bits} run)", f"CTEDD-{bits}"
        entry["curves"][g_name] = curve(run["rows"], "test/global/return")
        g_curve_final = [r["test/global/return"] for r in sorted(run["rows"], key=lambda r: r["seed"])
                         if r["block"] == max(x["block"] for x in run["rows"])]
        entry["final_return"][g_name] = {"per_seed": record["teacher"]["return"],
                                         **mean_std(record["teacher"]["return"]),
                                         "source": "distill.json teacher (greedy, after stage 2)",
                                         "last_in_training_eval": mean_std(g_curve_final)}
        entry["final_return"][k_name] = {"per_seed": record["student"]["return"],
                                         **mean_std(record["student"]["return"]),
                                         "source": "distill.json student (greedy, after stage 2)"}
        entry["distillation"][k_name] = {
            "heldout_action_agreement": {"per_seed": record["heldout_action_agreement"],
                                         **mean_std(record["heldout_action_agreement"])},
            "prr": {"per_seed": record["prr"], **mean_std(record["prr"])},
            "final_heldout_loss": record.get("final_heldout_loss"), "distill_seconds": record.get("seconds"),
            "eval_episodes_per_seed": record.get("episodes_per_seed"),
            "stage_2_env_steps_per_seed": run["distill_env_steps_per_seed"]}
    # Do the two CTEDD runs' stage-1 curves coincide? (Stage 1 does not read message_bits; only compilation differs.)
    a = np.asarray(entry["curves"]["CTEDD-G (k=1 run)"]["per_seed"])
    b = np.asarray(entry["curves"]["CTEDD-G (k=3 run)"]["per_seed"])
    entry["g_curves_max_abs_difference"] = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else None

    final = entry["final_return"]
    maddpg_mean = final["MADDPG"]["mean"]
    checks = {}
    for bits in BITS.values():
        g, k = final[f"CTEDD-G (k={bits} run)"]["mean"], final[f"CTEDD-{bits}"]["mean"]
        checks[f"G >= CTEDD-{bits}"] = {"holds": bool(g >= k - TIE), "G": g, f"CTEDD-{bits}": k}
        checks[f"CTEDD-{bits} > MADDPG"] = {"holds": bool(k > maddpg_mean + TIE), f"CTEDD-{bits}": k,
                                            "MADDPG": maddpg_mean}
    entry["direction"] = {"checks": checks, "paper_order_holds": all(c["holds"] for c in checks.values())}
    # Sample efficiency, roughly: the mean over evaluations of each curve's median over seeds (a normalized area
    # under the curve; same evaluation points for every run of one budget).
    entry["mean_of_median_curve"] = {name: float(np.nanmean(np.nanmedian(np.asarray(c["per_seed"]), axis=0)))
                                     for name, c in entry["curves"].items()}
    return entry


def direction_line(env_id: str, entry: dict) -> str:
    checks = entry["direction"]["checks"]
    parts = []
    for name, check in checks.items():
        values = ", ".join(f"{k} {v:.2f}" for k, v in check.items() if k != "holds")
        parts.append(f"{name}: {'yes' if check['holds'] else 'NO'} ({values})")
    auc = entry["mean_of_median_curve"]
    g_auc = np.mean([auc["CTEDD-G (k=1 run)"], auc["CTEDD-G (k=3 run)"]])
    verdict = "matches" if entry["direction"]["paper_order_holds"] else "does not match"
    return (f"{env_id}: {'; '.join(parts)} → {verdict} the paper's G >= local-k > MADDPG. Mean of the median test "
            f"curve (a sample-efficiency proxy): CTEDD-G {g_auc:.2f} (mean of the two runs) vs MADDPG "
            f"{auc['MADDPG']:.2f} ({'CTEDD-G higher' if g_auc > auc['MADDPG'] else 'MADDPG higher or equal'}).")


def table(results: dict, budget_name: str, budget: dict) -> str:
    lines = [f"# CTEDD Figure 3 on MPE — budget `{budget_name}`", ""]
    if budget_name == "smoke":
        lines += [f"**Smoke budget: {budget['steps']:,} env steps per seed. Short; not comparable with the paper's "
                  f"numbers.**", ""]
    lines += [f"Final greedy return, mean ± std over {SEEDS} seeds ({budget['eval_episodes']} episodes per seed). "
              "CTEDD-G and CTEDD-k: one greedy evaluation after stage 2 (`distill.json`, same keys for teacher and "
              "student); MADDPG: its last in-training greedy evaluation. PRR = local / global return per seed. "
              "Wall-clock: the whole run (compilation, stage 1, stage 2, evaluation, export), all seeds together. "
              "MPE is JaxMARL's (simple_tag with a heuristic prey) and ctde's own push_forward.", ""]
    for env_id, entry in results["envs"].items():
        final, dist, secs = entry["final_return"], entry["distillation"], entry["seconds"]
        lines += [f"## {TITLES.get(env_id, env_id)}", "",
                  "| method | run | final greedy return | held-out action agreement | PRR | run wall-clock (s) |",
                  "|---|---|---|---|---|---|",
                  f"| MADDPG | maddpg | {fmt(final['MADDPG'])} | — | — | {secs['maddpg']:.0f} |"]
        for label, bits in BITS.items():
            k_name = f"CTEDD-{bits}"
            lines.append(f"| CTEDD-G | ctedd k={bits} | {fmt(final[f'CTEDD-G (k={bits} run)'])} | — | — | "
                         f"{secs[label]:.0f} |")
            lines.append(f"| {k_name} | ctedd k={bits} | {fmt(final[k_name])} | "
                         f"{fmt(dist[k_name]['heldout_action_agreement'], 3)} | {fmt(dist[k_name]['prr'], 3)} | "
                         f"(same run) |")
        lines += ["", "Direction vs the paper (computed from the means): " + direction_line(env_id, entry), ""]
        if entry["g_curves_max_abs_difference"] is not None:
            lines += [f"The k=1 and k=3 runs' CTEDD-G test curves differ by at most "
                      f"{entry['g_curves_max_abs_difference']:.3g} in return (stage 1 does not read message_bits).", ""]
    lines += [f"Total time: {results['total_seconds'] / 60:.1f} min ({results['date']})."]
    return "\n".join(lines)


def figure(results: dict, path: Path, budget_name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(results["envs"])
    fig, axes = plt.subplots(1, len(envs), figsize=(6.0 * len(envs), 4.4), squeeze=False)
    colours = {"MADDPG": "tab:grey", "CTEDD-G (k=1 run)": "tab:blue", "CTEDD-G (k=3 run)": "tab:purple",
               "CTEDD-1": "tab:orange", "CTEDD-3": "tab:red"}
    for ax, env_id in zip(axes[0], envs):
        entry = results["envs"][env_id]
        for name, c in entry["curves"].items():
            steps, values = np.asarray(c["env_steps"]), np.asarray(c["per_seed"])
            style = "--" if name == "CTEDD-G (k=3 run)" else "-"
            ax.plot(steps, np.median(values, axis=0), style, color=colours[name], label=f"{name} (curve)")
            ax.fill_between(steps, values.min(axis=0), values.max(axis=0), color=colours[name], alpha=0.15,
                            linewidth=0)
        final_step = max(entry["curves"]["MADDPG"]["env_steps"])
        for offset, bits in ((-0.015, 1), (0.015, 3)):
            values = np.asarray(entry["final_return"][f"CTEDD-{bits}"]["per_seed"])
            median = np.median(values)
            x = final_step * (1 + offset)
            ax.errorbar([x], [median], yerr=[[median - values.min()], [values.max() - median]], fmt="o",
                        color=colours[f"CTEDD-{bits}"], capsize=4, markersize=6,
                        label=f"CTEDD-{bits} (after stage 2; point)")
        ax.set_title(TITLES.get(env_id, env_id), fontsize=10)
        label_env_steps(ax)
        ax.set_ylabel("test return (greedy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"CTEDD Figure 3 layout on MPE, budget {budget_name}: median over {SEEDS} seeds, shaded min-max. "
                 f"CTEDD-G curves of the k=1 and k=3 runs drawn separately (not averaged).\nCTEDD-1 / CTEDD-3 are "
                 f"evaluated only after stage 2: points (median, bars min-max) at the final env step, drawn "
                 f"slightly apart; stage 2's data-set rollouts are not on the x axis.", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="smoke")
    parser.add_argument("--envs", default=",".join(ENVS), help="comma-separated subset of " + ", ".join(ENVS))
    parser.add_argument("--out", default="/tmp/ctde_reproduce_ctedd", help="root of the run directories")
    parser.add_argument("--reuse", action="store_true", help="keep finished runs of this budget found under --out")
    args = parser.parse_args()
    budget = BUDGETS[args.budget]
    envs = [e if ":" in e else f"mpe:{e}" for e in args.envs.split(",") if e]
    unknown = [e for e in envs if e not in ENVS]
    if unknown:
        parser.error(f"unknown env(s) {unknown}; choose from {', '.join(ENVS)}")
    out = Path(args.out) / args.budget
    tic = time.perf_counter()
    results: dict = {"budget": args.budget, "settings": {**budget, "seeds": SEEDS, "algo": "maddpg"},
                     "date": time.strftime("%Y-%m-%d"), "envs": {}}
    for env_id in envs:
        runs = {label: run_one(env_id, label, extra, budget, out, args.reuse) for label, extra in RUNS}
        results["envs"][env_id] = summarize_env(env_id, runs)
        print(direction_line(env_id, results["envs"][env_id]), flush=True)
    results["total_seconds"] = time.perf_counter() - tic

    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"reproduce_ctedd_{args.budget}"
    text = table(results, args.budget, budget)
    text += f"\n\n![Figure 3 layout]({stem.name}.png)\n"
    figure(results, stem.with_suffix(".png"), args.budget)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2))
    print(text)
    print(f"wrote {stem}.md, .json, .png")


if __name__ == "__main__":
    main()
