"""What the end-of-training audit costs against the run it ends (issue 36: under 10% of a 200k-step SMAX 3m run).

    python benchmarks/audit_cost.py                      # 200k steps, SMAX 3m, QMIX, plain CTDE, one seed
    python benchmarks/audit_cost.py --steps 50000 --paradigm cadp

Runs `ctde.training.runner.train` as `ctde train` does and times, inside that same run, the call that audits the
exported policy (`ctde.training.audit_episodes.audit_exported`: building its realistic episodes, then
`ctde.audit.audit_policy`), so both figures come from one process on one machine state. Prints the run's wall time,
the audit's, and their ratio; writes benchmarks/results/audit_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import ctde.training.runner as runner

RESULTS = Path(__file__).resolve().parent / "results"


def measure(steps: int, paradigm: str, algo: str, env: str) -> dict:
    timings: list[float] = []
    audit = runner.audit_exported

    def timed_audit(*args, **kwargs):
        tic = time.perf_counter()
        try:
            return audit(*args, **kwargs)
        finally:
            timings.append(time.perf_counter() - tic)

    runner.audit_exported = timed_audit
    try:
        with tempfile.TemporaryDirectory() as directory:
            overrides = [f"env={env}", f"algo={algo}", f"paradigm={paradigm}", f"steps={steps}", "seeds=1",
                         f"out={Path(directory) / 'run'}", "log.progress=false", "log.tensorboard=false"]
            tic = time.perf_counter()
            result = runner.train(overrides, quiet=True)
            run_seconds = time.perf_counter() - tic
            verdict = json.loads((result.run_dir / "policy" / "audit.json").read_text())
    finally:
        runner.audit_exported = audit
    audit_seconds = sum(timings)
    return {"env": env, "algo": algo, "paradigm": paradigm, "steps": steps, "run_seconds": round(run_seconds, 1),
            "audit_seconds": round(audit_seconds, 1), "audit_fraction": round(audit_seconds / run_seconds, 4),
            "audit_passed": verdict["passed"], "audit_inputs": verdict.get("inputs"),
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--paradigm", default="ctde")
    parser.add_argument("--algo", default="qmix")
    parser.add_argument("--env", default="smax:3m")
    args = parser.parse_args()
    row = measure(args.steps, args.paradigm, args.algo, args.env)
    print(f"{row['env']} {row['algo']} {row['paradigm']}, {row['steps']} steps: run {row['run_seconds']} s, "
          f"audit {row['audit_seconds']} s = {100 * row['audit_fraction']:.1f}% of the run "
          f"(audit {'passed' if row['audit_passed'] else 'FAILED'})")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "audit_cost.json").write_text(json.dumps(row, indent=2) + "\n")
    (RESULTS / "audit_cost.md").write_text(
        "# The end-of-training audit's cost\n\n`python benchmarks/audit_cost.py"
        + (f" --steps {args.steps}" if args.steps != 200_000 else "") + "`\n\n"
        "| run | steps | run wall (s) | audit wall (s) | audit / run | audit |\n|---|---|---|---|---|---|\n"
        f"| {row['env']} {row['algo']} {row['paradigm']} | {row['steps']:,} | {row['run_seconds']} | "
        f"{row['audit_seconds']} | {100 * row['audit_fraction']:.1f}% | {'pass' if row['audit_passed'] else 'FAIL'} |\n\n"
        f"Inputs: {row['audit_inputs']}\n\nMeasured {row['date']} on {row['machine']}, one process: the audit is "
        "timed inside the run it ends.\n")


if __name__ == "__main__":
    main()
