"""Every side-by-side round with JaxMARL recorded in benchmarks/results/, pooled per CPU model.

`throughput.py` times ours and JaxMARL's `qmix_rnn` at setting (b) in alternating rounds and reports the median
of one run's per-round ratios. On these shared machines one run's median still moves by a tenth or more with the
host (per-round ratios of one run have spanned 1.12-1.93x), so the figure to cite is the median over every
round measured on the same program and the same kind of CPU: hosts of one size differ in their matrix
instructions (an AMD EPYC with AVX512-BF16, an Intel Xeon with AMX too), and our bfloat16 lead with them, so
rounds are pooled per CPU model (files written before throughput.py recorded it are pooled as "not recorded").
This script reads the result files, prints each round (the host's 2048^3 bfloat16 rate at its start, both
throughputs, the ratio), the whole runs from the same learning start, and the pooled medians per CPU, and writes
them to benchmarks/results/throughput_rounds.json.

    python benchmarks/throughput_rounds.py                      # every file holding rounds of the setting
    python benchmarks/throughput_rounds.py --files a.json,b.json  # only these (names under benchmarks/results/)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
UNRECORDED = "not recorded"  # the CPU of files written before throughput.py recorded it


def rounds_of(result: dict, setting: str) -> list[dict]:
    """The side-by-side rounds of one throughput.py result for `setting`: [{"bfloat16_gflops", "ours",
    "jaxmarl", "ratio"}], in the order they ran; [] where the file has none."""
    rows = []
    for measured in result.get("side_by_side_b", {}).get("rounds", []):
        if setting not in measured.get("ratios", {}):
            continue
        rows.append({"bfloat16_gflops": measured.get("peak_gflops", {}).get("bfloat16"),
                     "ours": measured["ours"][setting],
                     "jaxmarl": measured["jaxmarl"]["steady_state_steps_per_second"],
                     "ratio": measured["ratios"][setting]})
    return rows


def whole_runs_of(result: dict, setting: str) -> dict[str, float]:
    """Whole-run ratios (ours / JaxMARL, same learning start) by run length, e.g. {"102400_steps": 1.48}."""
    suffix = setting.removeprefix("b_jaxmarl_matched")
    runs = result.get(f"whole_run_matched_learning_start{suffix}", {})
    return {length: run["ratio"] for length, run in runs.items() if "ratio" in run}


def _medians(ratios: list[float], whole: dict[str, list[float]]) -> dict:
    return {"rounds": len(ratios), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
            "max_ratio": max(ratios),
            "whole_run_median_ratio": {length: statistics.median(values) for length, values in whole.items()},
            "whole_run_count": {length: len(values) for length, values in whole.items()}}


def pool(files: list[Path], setting: str) -> dict:
    """Every round of `setting` in `files`, and per CPU model the medians over all of its rounds:
    {"setting", "files": [...], "by_cpu": {model: {"rounds", "median_ratio", "min_ratio", "max_ratio",
    "whole_run_median_ratio", "whole_run_count"}}}."""
    per_file = []
    ratios: dict[str, list[float]] = {}
    whole: dict[str, dict[str, list[float]]] = {}
    for path in files:
        result = json.loads(path.read_text())
        rows = rounds_of(result, setting)
        if not rows:
            continue
        cpu = result.get("cpu", {}).get("model", UNRECORDED)
        runs = whole_runs_of(result, setting)
        per_file.append({"file": path.name, "date": result.get("date"), "cpu": cpu, "rounds": rows,
                         "whole_runs": runs})
        ratios.setdefault(cpu, []).extend(row["ratio"] for row in rows)
        for length, ratio in runs.items():
            whole.setdefault(cpu, {}).setdefault(length, []).append(ratio)
    if not ratios:
        raise SystemExit(f"no side-by-side rounds of {setting!r} in {', '.join(p.name for p in files) or 'no files'}:"
                         " run benchmarks/throughput.py with --jaxmarl-qmix first")
    return {"setting": setting, "files": per_file,
            "by_cpu": {cpu: _medians(values, whole.get(cpu, {})) for cpu, values in ratios.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", default="b_jaxmarl_matched_bfloat16")
    parser.add_argument("--files", default="", help="comma-separated names under benchmarks/results/ (default: all "
                        "throughput*.json holding rounds of the setting)")
    parser.add_argument("--out", default="throughput_rounds.json")
    args = parser.parse_args()
    files = ([RESULTS / name for name in args.files.split(",") if name] if args.files
             else sorted(RESULTS.glob("throughput*.json")))
    files = [path for path in files if path.name != args.out]
    summary = pool(files, args.setting)
    for entry in summary["files"]:
        print(f"{entry['file']} ({entry['cpu']})")
        for number, row in enumerate(entry["rounds"], 1):
            rate = "    ?" if row["bfloat16_gflops"] is None else f"{row['bfloat16_gflops']:5.0f}"
            print(f"  round {number}: bfloat16 {rate} GFLOP/s  ours {row['ours']:6,.0f}  JaxMARL "
                  f"{row['jaxmarl']:6,.0f}  {row['ratio']:.2f}x")
        for length, ratio in entry["whole_runs"].items():
            print(f"  whole run {length}: {ratio:.2f}x")
    for cpu, pooled in summary["by_cpu"].items():
        print(f"{cpu}: {pooled['rounds']} rounds of {args.setting}, median ratio {pooled['median_ratio']:.2f}x "
              f"(range {pooled['min_ratio']:.2f}-{pooled['max_ratio']:.2f}x)")
        for length, ratio in pooled["whole_run_median_ratio"].items():
            print(f"  whole runs of {length}: median {ratio:.2f}x over {pooled['whole_run_count'][length]}")
    (RESULTS / args.out).write_text(json.dumps(summary, indent=1))
    print(f"wrote {RESULTS / args.out}")


if __name__ == "__main__":
    main()
