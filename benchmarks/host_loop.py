"""The host loop's overhead against the environment alone, and a GRF academy_3_vs_1 QMIX smoke run.

For each host environment (the SMAC-interface test environment; GRF's academy_3_vs_1_with_keeper where gfootball
is installed), in alternating rounds, env steps per second of:

    env alone   the same worker set the loop uses, uniformly random available actions, whole episodes
    rollout     the host loop's episode collection: the jitted `act` (QMIX's agent network, epsilon-greedy) per
                step, actions to the workers, the trajectory written in the replay's layout
    iteration   a whole training iteration: the rollout, then store and one QMIX update on a batch (jitted)

and the ratios rollout / env alone and iteration / env alone (median of the rounds). Then, where GRF is installed,
`ctde train env=grf:academy_3_vs_1_with_keeper algo=qmix` for the smoke budget, with its test win rates.

    python benchmarks/host_loop.py                       # rounds 5, both environments, the GRF smoke run
    python benchmarks/host_loop.py --rounds 3 --no-smoke
Results: benchmarks/results/host_loop.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
TINY = "hostenv:ctde.envs.host.testenv:TinyBattle"
GRF = "grf:academy_3_vs_1_with_keeper"


def build(env_id: str, num_envs: int, processes: bool):
    """A host program for QMIX on `env_id`, its initial state (replay warm: a few iterations run) and its envs."""
    import jax

    from ctde.config import build_config
    from ctde.training.runner import build_program
    from ctde.training.resolve import resolve

    config = resolve(build_config([f"env={env_id}", "algo=qmix", f"rollout.num_envs={num_envs}", "algo.batch_size=8",
                                   "algo.buffer_size=64", f"rollout.host_processes={str(processes).lower()}",
                                   "out=/tmp/ctde_host_loop_benchmark"]))
    program = build_program(config)
    keys = jax.numpy.stack([jax.random.PRNGKey(0)])
    abstract = jax.eval_shape(program.init, keys)
    tic = time.perf_counter()
    program.compile_chunk(abstract, jax.numpy.int32(config.steps))
    compile_seconds = time.perf_counter() - tic
    state = program.init(keys)
    active = np.ones(1, bool)
    for _ in range(3):  # fill the replay past a batch, and compile act
        state, *_ = program.iteration(state, active)
    return program, state, compile_seconds


def env_alone(program, episodes: int, rng) -> float:
    envs, per_seed = program.envs(), program.envs_per_seed
    steps, tic = 0, time.perf_counter()
    for _ in range(-(-episodes // per_seed)):
        current = envs.reset(list(range(per_seed)), rng.integers(0, 2 ** 31 - 1, per_seed).tolist())
        running = list(range(per_seed))
        while running:
            actions = [[rng.choice(np.flatnonzero(a)) for a in current[k]["avail"]] for k in running]
            results = envs.step(running, actions)
            steps += len(running)
            for k, step in zip(list(running), results):
                current[k] = step
            running = [k for k, step in zip(running, results) if not step["done"]]
    return steps / (time.perf_counter() - tic)


def loop_rates(program, state, episodes: int) -> tuple[float, float, object]:
    """(rollout steps/s, iteration steps/s, state)."""
    import jax

    active = np.ones(1, bool)
    steps, tic = 0, time.perf_counter()
    for _ in range(-(-episodes // program.envs_per_seed)):
        # the loop's own pieces, timed apart from the update
        keys, seeds, env_steps, params = program._begin(state)  # noqa: SLF001
        carry = program._initial_carry(1, program.envs_per_seed)  # noqa: SLF001
        got = program.rollout(program._explore, params, carry, keys, np.asarray(seeds), env_steps, active,  # noqa: SLF001
                              program.envs_per_seed)
        steps += int(got.stats.env_steps.sum())
    rollout = steps / (time.perf_counter() - tic)
    steps, tic = 0, time.perf_counter()
    for _ in range(-(-episodes // program.envs_per_seed)):
        state, stats, _, _ = program.iteration(state, active)
        steps += int(jax.device_get(stats.env_steps).sum())
    jax.block_until_ready(state)
    return rollout, steps / (time.perf_counter() - tic), state


def measure(env_id: str, num_envs: int, processes: bool, rounds: int, episodes: int) -> dict:
    program, state, compile_seconds = build(env_id, num_envs, processes)
    rng = np.random.default_rng(0)
    rows = []
    try:
        for r in range(rounds):
            alone = env_alone(program, episodes, rng)
            rollout, iteration, state = loop_rates(program, state, episodes)
            rows.append({"env_alone": alone, "rollout": rollout, "iteration": iteration,
                         "rollout_ratio": rollout / alone, "iteration_ratio": iteration / alone})
            print(f"  {env_id} round {r + 1}: env alone {alone:,.0f} steps/s, rollout {rollout:,.0f} "
                  f"({rollout / alone:.2f}x), iteration {iteration:,.0f} ({iteration / alone:.2f}x)", flush=True)
    finally:
        program.close()
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    print(f"{env_id}, {num_envs} envs ({'processes' if processes else 'in-process'}): median env alone "
          f"{median['env_alone']:,.0f} steps/s; host loop rollout {median['rollout']:,.0f} "
          f"({median['rollout_ratio']:.2f}x the env alone), iteration {median['iteration']:,.0f} "
          f"({median['iteration_ratio']:.2f}x)")
    return {"env": env_id, "num_envs": num_envs, "processes": processes, "episodes_per_measurement": episodes,
            "compile_seconds": compile_seconds, "rounds": rows, "median": median}


def smoke(steps: int) -> dict:
    import ctde

    out = Path("/tmp/ctde_grf_smoke")
    tic = time.perf_counter()
    result = ctde.train([f"env={GRF}", "algo=qmix", f"steps={steps}", "eval.interval=2500", "eval.episodes=16",
                         "rollout.num_envs=4", "log.progress=false", f"out={out}"], overwrite=True, quiet=True)
    curve = [{"env_steps": r["env_steps"], "test_win_rate": r["test/agent/win_rate"],
              "test_return": r["test/agent/return"], "train_win_rate": r["train/win_rate"]} for r in result.rows]
    for row in curve:
        print(f"  GRF smoke: {row['env_steps']:,} steps, test win rate {row['test_win_rate']:.3f}")
    return {"command": f"ctde train env={GRF} algo=qmix steps={steps} eval.interval=2500 eval.episodes=16 "
                       f"rollout.num_envs=4", "seconds": time.perf_counter() - tic, "curve": curve,
            "summary": result.summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=16, help="episodes per measurement")
    parser.add_argument("--smoke-steps", type=int, default=10_000)
    parser.add_argument("--no-smoke", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "host_loop.json"))
    args = parser.parse_args()
    has_grf = importlib.util.find_spec("gfootball") is not None
    record = {"date": time.strftime("%Y-%m-%d"), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "rounds": args.rounds, "results": []}
    record["results"].append(measure(TINY, 4, True, args.rounds, args.episodes))
    record["results"].append(measure(TINY, 1, False, args.rounds, args.episodes))
    if has_grf:
        record["results"].append(measure(GRF, 4, True, args.rounds, args.episodes))
        if not args.no_smoke:
            record["grf_smoke"] = smoke(args.smoke_steps)
    else:
        record["grf"] = "gfootball is not installed (make grf): GRF not measured"
    Path(args.out).write_text(json.dumps(record, indent=2, default=str))
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
