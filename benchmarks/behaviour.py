"""Fixed-seed runs whose every logged number and exported parameter a refactoring must leave bit-identical.

    python benchmarks/behaviour.py record [--only NAME ...]    # writes benchmarks/results/behaviour.json
    python benchmarks/behaviour.py check  [--only NAME ...]    # reruns, compares with it; exit 1 on a difference

Each run trains through `ctde.training.runner.train` at a small budget (one seed; compile time dominates) and is
fingerprinted by: its metric rows (metrics.jsonl and, for two-stage paradigms, distill_metrics.jsonl) without wall
times, kept whole so a difference names the first row and key; and the SHA-256 of the exported policy's parameter
file (policy/params.msgpack) and of distill.json without its wall time. The runs cover what issue 35's redesign touches: QMIX, CADP,
PTDE (both stages), IGM-DA and CTDS on SMAX 3m; MAPPO with CADP; MADDPG with CTEDD on MPE; QMIX and MAPPO on the
host loop's test environment; QMIX on Learning to Rank.

Bit-identity holds on one machine and library stack: XLA's CPU code differs between processor models and versions,
so `check` is meaningful against a record made on the same machine with the same installed packages (both are
written beside the fingerprints, and `check` says when they differ).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "behaviour.json"
LTR_DATA = REPO.parent / "shared" / "data" / "ltr" / "mslr_web10k_sample"
HOST_ENV = "hostenv:ctde.envs.host.testenv:TinyBattle"

SMAX = ("env=smax:3m", "seeds=1", "steps=4000", "eval.interval=2000", "eval.episodes=8", "rollout.num_envs=4",
        "algo.batch_size=8")
HOST = (f"env={HOST_ENV}", "seeds=1", "steps=200", "eval.interval=100", "eval.episodes=2", "rollout.num_envs=2",
        "log.chunk_evals=1", "rollout.host_processes=false")
RUNS: dict[str, tuple[str, ...]] = {
    "qmix_smax_3m": (*SMAX, "algo=qmix"),
    "cadp_qmix_smax_3m": (*SMAX, "algo=qmix", "paradigm=cadp", "cadp.prune_start=2000"),
    "ptde_qmix_smax_3m": (*SMAX, "algo=qmix", "paradigm=ptde", "ptde.distill_episodes=8", "ptde.distill_steps=200",
                          "ptde.distill_batch=256"),
    "igm_da_qmix_smax_3m": (*SMAX, "algo=qmix", "paradigm=igm_da", "env.sight_range=0"),
    "ctds_qmix_smax_3m": (*SMAX, "algo=qmix", "paradigm=ctds", "env.sight_range=0"),
    "cadp_mappo_smax_3m": ("env=smax:3m", "seeds=1", "steps=4096", "eval.interval=2048", "eval.episodes=8",
                           "algo=mappo", "paradigm=cadp", "cadp.prune_start=2048", "rollout.num_envs=8",
                           "rollout.length=128", "ppo.segment_length=16"),
    "ctedd_maddpg_mpe_tag": ("env=mpe:simple_tag", "seeds=1", "steps=2000", "eval.interval=1000", "eval.episodes=8",
                             "algo=maddpg", "paradigm=ctedd", "ctedd.distill_episodes=8", "ctedd.distill_steps=100"),
    "qmix_host": (*HOST, "algo=qmix", "algo.batch_size=4", "algo.buffer_size=32"),
    "mappo_host": (*HOST, "algo=mappo", "rollout.length=20", "ppo.segment_length=10", "ppo.minibatches=2"),
    "qmix_ltr": (f"env=ltr:{LTR_DATA}", "seeds=1", "steps=2000", "eval.interval=1000", "eval.episodes=8",
                 "algo=qmix", "ltr.docs_per_query=6", "ltr.k=6"),
}
PACKAGES = ("jax", "jaxlib", "flax", "optax", "flashbax", "jaxmarl", "numpy")


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if "wall" not in k and not k.endswith("_seconds")} for row in rows]


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _timeless(value):
    """A JSON value without its wall times (keys "seconds", "*_seconds", "*wall*"), at any depth."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items()
                if k != "seconds" and not k.endswith("_seconds") and "wall" not in k}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def _json_sha256(path: Path) -> str | None:
    """sha256 of a JSON file's content without wall times (distill.json records the stage's duration)."""
    if not path.exists():
        return None
    content = json.dumps(_timeless(json.loads(path.read_text())), sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()


def fingerprint(name: str) -> dict:
    from ctde.training.runner import train

    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory) / name
        started = time.perf_counter()
        train([*RUNS[name], f"out={run_dir}", "log.progress=false", "log.tensorboard=false"], quiet=True)
        return {"overrides": list(RUNS[name]), "seconds": round(time.perf_counter() - started, 1),
                "metrics": _rows(run_dir / "metrics.jsonl"),
                "distill_metrics": _rows(run_dir / "distill_metrics.jsonl"),
                "policy_params_sha256": _sha256(run_dir / "policy" / "params.msgpack"),
                "distill_json_sha256": _json_sha256(run_dir / "distill.json")}


def environment() -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"machine": platform.machine(), "cpu": _cpu_model(), "python": sys.version.split()[0],
            "packages": versions}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def first_difference(recorded: dict, now: dict) -> str | None:
    for field in ("metrics", "distill_metrics"):
        before, after = recorded[field], now[field]
        if len(before) != len(after):
            return f"{field}: {len(before)} rows recorded, {len(after)} now"
        for index, (a, b) in enumerate(zip(before, after)):
            for key in sorted(set(a) | set(b)):
                if a.get(key) != b.get(key):
                    return f"{field} row {index}, {key}: recorded {a.get(key)!r}, now {b.get(key)!r}"
    for field in ("policy_params_sha256", "distill_json_sha256"):
        if recorded[field] != now[field]:
            return f"{field} differs"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("--only", nargs="*", default=None, choices=sorted(RUNS), metavar="NAME")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = args.only or list(RUNS)
    stored = json.loads(args.results.read_text()) if args.results.exists() else {"runs": {}}
    if args.action == "check":
        if stored.get("environment") != environment():
            print(f"note: recorded on {stored.get('environment')}, checking on {environment()}: bits may differ")
        missing = [n for n in names if n not in stored["runs"]]
        if missing:
            parser.error(f"{args.results} has no record of {missing}: run `record` first")
    differences = 0
    for name in names:
        now = fingerprint(name)
        if args.action == "record":
            stored["runs"][name] = now
            write(stored, args.results)  # after every run, so a failure later keeps what was recorded
            print(f"recorded {name}: {len(now['metrics'])} metric rows, {now['seconds']} s")
            continue
        difference = first_difference(stored["runs"][name], now)
        differences += difference is not None
        print(f"{'same' if difference is None else 'DIFFERS'} {name} ({now['seconds']} s)"
              + (f": {difference}" if difference else ""))
    if args.action == "record":
        print(f"wrote {args.results}")
    return 1 if differences else 0


def write(stored: dict, path: Path) -> None:
    stored["environment"] = environment()
    stored["commit"] = os.popen(f"git -C {REPO} rev-parse HEAD").read().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
