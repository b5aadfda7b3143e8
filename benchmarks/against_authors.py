"""ctde against the authors' released code: their networks, mixers and learners run beside ours on identical
inputs (real SMAX episodes recorded by ctde) with our initial parameters copied into theirs, and every output,
loss, gradient and post-step parameter compared (benchmarks/crosscheck/: one module per system).

    python benchmarks/against_authors.py --checkout pymarl2=PATH --checkout wqmix=PATH --checkout cadp=PATH \\
        --checkout ptde=PATH --checkout igm_da=PATH --checkout ctds=PATH [--only NAME ...] [--no-golden]

Checkouts (clone them outside this repository; the commit of each is recorded):
    pymarl2  hijkzzz/pymarl2        wqmix   oxwhirl/wqmix          cadp   zyh1999/CADP
    ptde     chenyiqun/ptde-open    igm_da  momo-xiaoyi/pymarl_HDA  ctds   cathyhxh/CTDS

PyTorch runs on the CPU. It is not a dependency of ctde and `make test` never needs it: use a separate
virtual environment with both, e.g.

    python3 -m venv ../xcheck-venv && ../xcheck-venv/bin/pip install -e '.[crosscheck]'

Writes benchmarks/results/against_authors.{md,json} (component -> max absolute and relative difference ->
verdict, with each checkout's commit) and, unless --no-golden, tests/golden/<component>.npz: the inputs, our
parameter values and the authors' outputs, which tests/test_golden.py checks ours against in every `make test`.
A component whose system has no checkout given is skipped (its previous results are kept).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from crosscheck.common import REPO, compare, save_golden  # noqa: E402
from crosscheck.registry import components  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def commit_of(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", action="append", default=[], metavar="SYSTEM=PATH")
    parser.add_argument("--only", nargs="*", default=None, help="component names (default: all with a checkout)")
    parser.add_argument("--no-golden", action="store_true", help="compare only; leave tests/golden/ as it is")
    args = parser.parse_args(argv)
    checkouts = {}
    for item in args.checkout:
        system, _, path = item.partition("=")
        if not path or not Path(path).is_dir():
            parser.error(f"--checkout {item}: expected SYSTEM=PATH to an existing directory")
        checkouts[system] = Path(path).resolve()

    import torch

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    results_path = RESULTS / "against_authors.json"
    rows = {}
    failures = 0
    for name, component in components().items():
        if args.only is not None and name not in args.only:
            continue
        if component.system not in checkouts:
            print(f"skip {name}: no --checkout {component.system}=PATH")
            continue
        checkout = checkouts[component.system]
        started = time.perf_counter()
        golden = component.prepare()
        golden.expected = {k: v for k, v in component.authors(checkout, golden).items()}
        ours = component.ours(golden)
        differences = compare(ours, golden.expected)
        worst_key = max(differences, key=lambda k: differences[k][1])
        absolute = max(d[0] for d in differences.values())
        relative = differences[worst_key][1]
        passed = relative <= component.tolerance
        failures += not passed
        rows[name] = {
            "system": component.system, "what": component.what, "checkout": str(checkout.name),
            "commit": commit_of(checkout), "outputs": len(differences), "max_abs": absolute, "max_rel": relative,
            "worst_output": worst_key, "tolerance": component.tolerance,
            "verdict": component.verdict if passed else "MISMATCH", "note": component.note,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{'ok  ' if passed else 'FAIL'} {name}: {len(differences)} outputs, max abs {absolute:.2e}, "
              f"max rel {relative:.2e} ({worst_key})")
        if not passed:
            for key, (a, r) in sorted(differences.items(), key=lambda kv: -kv[1][1])[:8]:
                print(f"       {key}: abs {a:.2e} rel {r:.2e}")
        if passed and not args.no_golden:
            save_golden(name, golden)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".against_authors.lock", "w") as lock:  # several runs at once merge their rows
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = json.loads(results_path.read_text()) if results_path.exists() else {"components": {}}
        rows = {**previous["components"], **rows}
        results_path.write_text(json.dumps({"torch": torch.__version__, "components": rows}, indent=1) + "\n")
        (RESULTS / "against_authors.md").write_text(table(rows, torch.__version__))
    print(f"{len(rows)} components recorded in {results_path.relative_to(REPO)}; {failures} mismatched this run")
    return 1 if failures else 0


def table(rows: dict, torch_version: str) -> str:
    lines = ["# ctde against the authors' code", "",
             f"`python benchmarks/against_authors.py --checkout ...` (PyTorch {torch_version}, CPU, float32). "
             "Relative difference: the largest absolute difference of an output over the largest absolute value "
             "of the authors' output, worst over the component's outputs (per-step network outputs, losses, "
             "gradients of every parameter, parameters after one optimizer step).", "",
             "| component | what | authors' code @ commit | outputs | max abs | max rel | tolerance | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in sorted(rows.items()):
        lines.append(f"| `{name}` | {row['what']} | {row['checkout']} @ {row['commit'][:10]} | {row['outputs']} | "
                     f"{row['max_abs']:.1e} | {row['max_rel']:.1e} | {row['tolerance']:.0e} | {row['verdict']} |")
    notes = [(name, row["note"]) for name, row in sorted(rows.items()) if row["note"]]
    if notes:
        lines += ["", "## Notes", ""] + [f"- `{name}`: {note}" for name, note in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
