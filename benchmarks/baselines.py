"""The papers' value-decomposition baselines (QTRAN, CW-QMIX, OW-QMIX, DMIX): the matrix game and the audit.

1. `toy:matrix` (QTRAN's payoff [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]]) under uniform exploration (ε = 1
   throughout), QMIX and the four baselines, 3 vmapped seeds each, the settings of `tests/test_baselines.py`:
   the greedy joint return of every seed at each evaluation (8 = the optimum).
2. The decentralization audit of the exported policy of every paradigm × backbone combination that `resolve`
   accepts for the four baselines (`ctde.testing.planted_leaks.audit_real_policies`, from initialization).

    python benchmarks/baselines.py        # ~5 min on 2 shared CPU cores

Writes benchmarks/results/baselines.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

BASELINES = ("qtran", "cw_qmix", "ow_qmix", "dmix")


def matrix_game() -> list[dict]:
    from test_baselines import MATRIX

    from ctde.training.runner import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for algo in ("qmix", *BASELINES):
            tic = time.perf_counter()
            result = train([*MATRIX, f"algo={algo}", f"out={tmp}/{algo}", "log.progress=false",
                            "log.tensorboard=false"], quiet=True)
            by_block: dict[int, list[float]] = {}
            for row in result.rows:
                by_block.setdefault(int(row["env_steps"]), []).append(float(row["test/agent/return"]))
            rows.append({"algo": algo, "greedy_return_per_seed": by_block,
                         "seconds": round(time.perf_counter() - tic, 1)})
            print(algo, by_block, flush=True)
    return rows


def audit() -> list[dict]:
    from ctde.testing.planted_leaks import audit_real_policies, real_policy_combinations

    combinations = [c for c in real_policy_combinations() if c[1].split()[0] in BASELINES]
    rows = audit_real_policies(combinations)
    for row in rows:
        print(row["paradigm"], row["backbone"], row["network"], "passed" if row["passed"] else "FAILED", flush=True)
    return rows


def main() -> None:
    tic = time.perf_counter()
    matrix, audits = matrix_game(), audit()
    record = {"date": time.strftime("%Y-%m-%d"), "command": "python benchmarks/baselines.py", "matrix_game": matrix,
              "audit": audits, "total_seconds": round(time.perf_counter() - tic, 1)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(record, indent=2, default=str))
    lines = [f"# The papers' baselines ({record['date']}, `{record['command']}`)", "",
             "## toy:matrix, ε = 1 throughout, 3 seeds: greedy joint return per seed (optimum 8)", "",
             "| algo | " + " | ".join(f"{s:,} env steps" for s in matrix[0]["greedy_return_per_seed"]) + " | s |",
             "|---" * (len(matrix[0]["greedy_return_per_seed"]) + 2) + "|"]
    for row in matrix:
        cells = [", ".join(f"{r:g}" for r in returns) for returns in row["greedy_return_per_seed"].values()]
        lines.append(f"| {row['algo']} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |")
    lines += ["", "QMIX's monotonic projection of the uniformly explored payoff settles on a 0 cell; DMIX's expected "
              "value is QMIX's mixture of the agents' means, equally monotonic, so it does too (tests/test_baselines.py "
              "asserts QMIX misses 8 and QTRAN, CW-QMIX and OW-QMIX reach it on every seed)."]
    passed = sum(r["passed"] and r["sensitive"] for r in audits)
    lines += ["", f"## Audit of the exported policies: {passed} of {len(audits)} pass (not vacuously)", "",
              "| paradigm | backbone | network | passed | max deviation | own sensitivity |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['paradigm']} | {r['backbone']} | {r['network']} | {'yes' if r['passed'] else 'NO'} | "
              f"{r['max_deviation']:g} | {r['own_sensitivity']:.3f} |" for r in audits]
    lines += ["", f"Total: {record['total_seconds'] / 60:.1f} min on this machine (2 cores shared with other jobs)."]
    (RESULTS / "baselines.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
