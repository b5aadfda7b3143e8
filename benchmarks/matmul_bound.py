"""How fast could a training iteration be on this machine? A bound from its matmuls and the environment alone.

A training iteration steps the environment, then learns; the two cannot overlap (the update needs the
rollout, the next rollout needs the updated parameters). So an iteration takes at least

    t_env   the environment alone for the same steps (random actions, the faster CPU kernels; as in
            benchmarks/throughput.py), plus
    t_dots  its matrix products, each run at the best rate this machine reaches for exactly that product,

with every other operation (element-wise work, reductions, the optimizer, loop overheads) free. The script
takes the iteration's jaxpr, removes its dead code, counts every dot_general with its trip count (scan
lengths multiplied; of a `cond` the costlier branch), times each distinct product on this machine — alone,
and as two independent copies inside a compiled loop (so products too small to use both cores are credited
with running side by side), each under XLA's default and its own CPU kernels, keeping the fastest — and
reports

    bound on the fraction of the env-only ceiling = t_env / (t_env + t_dots)

next to the measured fraction t_env / t_iteration (timed alternately with the env-only rollout). A bound
below a target means that no program computing the same products with XLA reaches the target on this
machine; a measured fraction far under its bound means the time goes to work other than matmuls. The same
bound with every product at this machine's peak rate (a 2048^3 product) holds for any implementation of
the same arithmetic.

    python benchmarks/matmul_bound.py                          # every case below (about 20 minutes)
    python benchmarks/matmul_bound.py --cases qmix_fixed,cadp_qmix_fixed  # some of them

Results: benchmarks/results/matmul_bound.json (or --out).
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax
from jax._src.interpreters import partial_eval
from jax.extend import core as jax_core

from throughput import RESULTS, SETTINGS, alternate_with_env_only, best_time, peak_rate
from ctde.config import build_config
from ctde.training import cpu_kernels
from ctde.algos.base import collect_and_learn
from ctde.training.runner import build_program
from ctde.training.resolve import resolve
from ctde.training.runner import seed_keys

CASES = {
    "mappo_64_float32": ["algo=mappo", "rollout.num_envs=64"],
    "mappo_64_bfloat16": ["algo=mappo", "rollout.num_envs=64", "algo.matmul_precision=bfloat16"],
    "mappo_256_float32": ["algo=mappo", "rollout.num_envs=256"],
    "mappo_256_bfloat16": ["algo=mappo", "rollout.num_envs=256", "algo.matmul_precision=bfloat16"],
    # ctde's QMIX defaults with fixed-length rollouts (8 envs x 70 steps, resets inside, batch 32 x 70 steps),
    # so that the update's matmuls do not depend on episode lengths: CADP's cost against QMIX.
    "qmix_fixed": ["paradigm=ctde", "rollout.auto_reset=true"],
    "cadp_qmix_fixed": ["paradigm=cadp", "rollout.auto_reset=true"],
    "qmix_b_float32": SETTINGS["b_jaxmarl_matched"],
    "qmix_b_bfloat16": SETTINGS["b_jaxmarl_matched_bfloat16"],
}
KERNELS = ("ynnpack", "native")


def count_dots(jaxpr, trips: int = 1, found: collections.Counter | None = None) -> collections.Counter:
    """Executions of each distinct dot_general in `jaxpr`: {(lhs aval, rhs aval, dimension numbers, output
    dtype): executions}, scan bodies multiplied by their length, of each `cond` the branch with the most
    FLOPs (the learning branch of an iteration: its other branch, skipping, has none; branches with different
    products raise ValueError), `while` bodies once (SMAX's loops hold no products)."""
    found = collections.Counter() if found is None else found
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            key = (eqn.invars[0].aval, eqn.invars[1].aval, eqn.params["dimension_numbers"],
                   eqn.params["preferred_element_type"] or eqn.outvars[0].aval.dtype)
            found[key] += trips
            continue
        if name == "cond":
            branches = [count_dots(branch.jaxpr, trips) for branch in eqn.params["branches"]]
            costs = {total_flops(branch) for branch in branches} - {0}
            if len(costs) > 1:
                raise ValueError(
                    "the iteration picks between branches with different matmuls at run time (a value-"
                    "decomposition update trims episode padding to the longest sampled episode), so its matmuls "
                    "depend on the data: measure a fixed-length configuration (rollout.auto_reset=true)")
            found.update(max(branches, key=total_flops))
            continue
        inner = trips * (eqn.params["length"] if name == "scan" else 1)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if isinstance(sub, jax_core.ClosedJaxpr):
                    count_dots(sub.jaxpr, inner, found)
                elif isinstance(sub, jax_core.Jaxpr):
                    count_dots(sub, inner, found)
    return found


def dot_flops(key) -> int:
    lhs, rhs, dims, _ = key
    (lc, rc), (lb, rb) = dims
    size = lambda shape, ds: math.prod(shape[d] for d in ds)  # noqa: E731
    free = lambda shape, used: math.prod(s for d, s in enumerate(shape) if d not in used)  # noqa: E731
    return 2 * size(lhs.shape, lb) * size(lhs.shape, lc) * free(lhs.shape, (*lc, *lb)) * free(rhs.shape, (*rc, *rb))


def total_flops(dots: collections.Counter) -> int:
    return sum(dot_flops(key) * n for key, n in dots.items())


def best_rate(key) -> dict:
    """The fastest this machine computes one dot_general `key` (FLOP/s): alone (one call per dispatch) and as
    two independent copies per iteration of a compiled loop (operands perturbed by the loop carry so that
    nothing is hoisted), under each CPU-kernel choice."""
    lhs_aval, rhs_aval, dims, out_dtype = key
    flops = dot_flops(key)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    operands = [jax.random.normal(k, aval.shape).astype(aval.dtype)
                for k, aval in zip(keys, (lhs_aval, rhs_aval, lhs_aval, rhs_aval))]
    dot = lambda a, b: lax.dot_general(a, b, dims, preferred_element_type=out_dtype)  # noqa: E731
    trips = max(1, min(2000, int(0.02 / max(flops / 2e11, 1e-7))))

    def paired(a1, b1, a2, b2):
        def body(_, carry):
            c1, c2 = carry
            o1 = dot(a1 + c1.astype(a1.dtype), b1)
            o2 = dot(a2 + c2.astype(a2.dtype), b2)
            return o1.reshape(-1)[0] * 0.0, o2.reshape(-1)[0] * 0.0
        return lax.fori_loop(0, trips, body, (jnp.float32(0), jnp.float32(0)))

    rates = {}
    for kernels in KERNELS:
        options = cpu_kernels.compiler_options(kernels, algo="none", precision="float32", learning=False)
        alone = best_time(jax.jit(dot, compiler_options=options), *operands[:2])
        looped = best_time(jax.jit(paired, compiler_options=options), *operands) / (2 * trips)
        rates[f"{kernels}_alone"], rates[f"{kernels}_paired"] = flops / alone, flops / looped
    return {"flops": flops, "rates": rates, "best": max(rates.values())}


def _describe(key) -> str:
    lhs, rhs, dims, out = key
    return f"{lhs.str_short()} x {rhs.str_short()} dims={dims} -> {jnp.dtype(out).name}"


def measure_case(name: str, overrides: list[str], map_name: str, repeats: int, peaks: dict) -> dict:
    config = resolve(build_config([f"env=smax:{map_name}", "algo=qmix", "seeds=1", "out=/tmp/unused", *overrides]))
    program = build_program(config)
    backbone = program.backbone
    learner = jax.tree.map(lambda x: x[0], program.init(seed_keys(config)).learner)
    closed = jax.make_jaxpr(lambda s: collect_and_learn(backbone, program.env, s))(learner)
    # Dead code out first, as XLA removes it: e.g. the input gradient of a first layer, which a custom
    # derivative (bfloat16 matmuls) computes and nothing uses. (A JAX-internal pass; benchmarks only.)
    live, _ = partial_eval.dce_jaxpr(closed.jaxpr, [True] * len(closed.jaxpr.outvars))
    dots = count_dots(live)
    steps = backbone.rollout.num_envs * backbone.rollout.length
    flops = total_flops(dots)
    print(f"{name}: {steps} env steps per iteration, {flops / 1e9:.1f} GFLOP of matmuls "
          f"({flops / steps / 1e6:.2f} MFLOP per env step), {len(dots)} distinct products; timing them...", flush=True)
    products = []
    for key, executions in sorted(dots.items(), key=lambda kv: -dot_flops(kv[0]) * kv[1]):
        rate = best_rate(key)
        products.append({"product": _describe(key), "executions": executions,
                         "gflop": rate["flops"] * executions / 1e9, "best_gflops": rate["best"] / 1e9,
                         "seconds": rate["flops"] * executions / rate["best"],
                         "rates_gflops": {k: v / 1e9 for k, v in rate["rates"].items()}})
    dot_seconds = sum(p["seconds"] for p in products)
    bfloat16 = "algo.matmul_precision=bfloat16" in overrides
    peak = peaks["bfloat16" if bfloat16 else "float32"]

    # The measured iteration and the env-only rollout of the same steps, timed alternately.
    timed = alternate_with_env_only(map_name, overrides, repeats)
    compile_seconds = timed["compile_seconds"]
    env_seconds = steps / max(statistics.median(rates) for rates in timed["env_only"].values())
    iteration_seconds = steps / statistics.median(timed["learner"])
    bound = env_seconds / (env_seconds + dot_seconds)
    result = {
        "overrides": overrides, "env_steps_per_iteration": steps, "matmul_gflop_per_iteration": flops / 1e9,
        "matmul_seconds_at_best_rates": dot_seconds, "env_only_seconds": env_seconds,
        "iteration_seconds_measured": iteration_seconds, "compile_seconds": compile_seconds,
        "bound_steps_per_second": steps / (env_seconds + dot_seconds),
        "measured_steps_per_second": steps / iteration_seconds,
        "env_only_steps_per_second": steps / env_seconds,
        "bound_fraction_of_env_only": bound, "measured_fraction_of_env_only": env_seconds / iteration_seconds,
        "matmul_seconds_at_peak": flops / peak, "bound_fraction_at_peak": env_seconds / (env_seconds + flops / peak),
        "products": products,
    }
    print(f"  env alone {env_seconds:.3f} s, matmuls at their best rates {dot_seconds:.3f} s "
          f"(at the 2048^3 peak {flops / peak:.3f} s); measured iteration {iteration_seconds:.3f} s (median of "
          f"{repeats})\n  fraction of env-only: bound {100 * bound:.1f}% (at peak "
          f"{100 * result['bound_fraction_at_peak']:.1f}%), measured {100 * result['measured_fraction_of_env_only']:.1f}%"
          f"\n  steps/s: bound {result['bound_steps_per_second']:,.0f}, measured "
          f"{result['measured_steps_per_second']:,.0f}, env alone {result['env_only_steps_per_second']:,.0f}",
          flush=True)
    for p in products[:8]:
        print(f"    {p['gflop']:7.2f} GFLOP at {p['best_gflops']:6.1f} GFLOP/s = {p['seconds']:.3f} s  {p['product']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="matmul_bound.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    names = [c for c in args.cases.split(",") if c]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}")
    peaks = peak_rate()
    print("peak matmul rate (2048^3): " + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()), flush=True)
    results = {name: measure_case(name, CASES[name], args.map, args.repeats, peaks) for name in names}
    RESULTS.mkdir(exist_ok=True)
    record = {"machine": platform.processor() or platform.machine(), "jax": jax.__version__,
              "devices": [str(d) for d in jax.devices()], "map": args.map,
              "peak_gflops": {k: v / 1e9 for k, v in peaks.items()}, "cases": results,
              "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    path = RESULTS / args.out
    path.write_text(json.dumps(record, indent=1, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
