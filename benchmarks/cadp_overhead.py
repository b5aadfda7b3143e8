"""CADP's cost per env step: CADP-QMIX against plain QMIX at identical settings, in one run.

Both programs are compiled first; then timed calls (each a jitted scan of learning iterations: a rollout of
`rollout.num_envs` whole episodes and `algo.updates_per_rollout` updates on 32 sampled episodes each, as in
`throughput.py`) alternate
between the two, so both see the same machine load. The figure is the ratio of medians of time per env step,
CADP / QMIX (target: at most 1.3). Beside it, XLA's own count of floating-point operations per compiled call
(`cost_analysis`), whose ratio says how much of the time ratio is simply the larger network. Compile times are
reported separately. Results: benchmarks/results/cadp_overhead.json (or `--out NAME`).

    python benchmarks/cadp_overhead.py                    # SMAX 5m_vs_6m, pymarl settings
    python benchmarks/cadp_overhead.py --map 3m --repeats 7
    python benchmarks/cadp_overhead.py --out cadp_overhead_bfloat16.json algo.matmul_precision=bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax

from throughput import RESULTS, compiled_training

PROGRAMS = {"qmix": ["paradigm=ctde"], "cadp_qmix": ["paradigm=cadp"]}


def flop_count(compiled) -> float | None:
    """XLA's floating-point operation count of a compiled program (None where the backend gives none)."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 - an optional figure; some backends do not implement it
        return None
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else {}
    return float(analysis.get("flops", 0.0)) or None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--iterations", type=int, default=40, help="learning iterations per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per program (alternating)")
    parser.add_argument("--out", default="cadp_overhead.json", help="file name under benchmarks/results/")
    parser.add_argument("overrides", nargs="*", help="extra key=value options for both programs "
                        "(e.g. algo.matmul_precision=bfloat16)")
    args = parser.parse_args()

    programs = {}
    for name, paradigm in PROGRAMS.items():
        programs[name] = compiled_training(args.map, [*paradigm, *args.overrides], args.iterations)
        print(f"{name}: compiled in {programs[name].compile_seconds:.1f} s", flush=True)
    rates: dict[str, list[float]] = {name: [] for name in programs}
    for repeat in range(args.repeats):
        for name, program in programs.items():
            rate, _ = program.timed_call()
            rates[name].append(rate)
        print(f"repeat {repeat + 1}: " + ", ".join(f"{n} {r[-1]:,.0f} steps/s" for n, r in rates.items()), flush=True)
    median = {name: statistics.median(r) for name, r in rates.items()}
    flops = {name: flop_count(program.compiled) for name, program in programs.items()}
    ratio = median["qmix"] / median["cadp_qmix"]  # time per env step, CADP over QMIX
    results = {
        "map": args.map, "settings": "ctde defaults (8 envs, whole episodes, batch 32, 4 updates per rollout)",
        "overrides": args.overrides, "iterations_per_measurement": args.iterations, "repeats": args.repeats,
        "machine": f"{platform.processor() or platform.machine()}, {jax.device_count()} {jax.devices()[0].platform} "
                   f"device(s)", "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"),
        "steps_per_second": median, "runs": rates,
        "compile_seconds": {name: program.compile_seconds for name, program in programs.items()},
        "cadp_time_per_step_over_qmix": ratio, "target": 1.3,
        "xla_flops_per_call": flops,
        "cadp_flops_over_qmix": flops["cadp_qmix"] / flops["qmix"] if all(flops.values()) else None,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / args.out
    path.write_text(json.dumps(results, indent=2))
    print(f"CADP-QMIX costs {ratio:.2f}x QMIX per env step on {args.map} "
          f"({median['cadp_qmix']:,.0f} vs {median['qmix']:,.0f} env steps/s; target <= 1.3)")
    if results["cadp_flops_over_qmix"]:
        print(f"XLA counts {results['cadp_flops_over_qmix']:.2f}x the floating-point operations per call")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
