"""Training throughput (env steps/s) of QMIX and MAPPO on SMAX, with the environment alone as the ceiling and
JaxMARL's own `qmix_rnn` as the baseline, measured in the same run.

MAPPO (on-policy: no replay, each rollout consumed by 5 epochs) is measured at `--mappo-envs` parallel
environments (default 64 and 256) with its defaults otherwise (400-step rollouts, one minibatch), and reported
as a fraction of the env-only ceiling at the same number of environments (target: at least 30% at 64+): timed
calls of the two alternate, and the fraction is the median of the per-pair ratios.

The env-only ceiling is the faster of two compilations of the random-action rollout: with XLA:CPU's default
kernels (YNNPACK library calls for dots and reductions) and with XLA's own (`algo.cpu_kernels=native`); SMAX's
many tiny reductions make the latter about twice as fast. Our learners are compiled with `algo.cpu_kernels=auto`
(`ctde.training.cpu_kernels`); JaxMARL's with XLA's defaults, as it ships.

Settings:
  (a) pymarl: 8 envs, whole episodes padded to the episode limit, replay of 5000 episodes, batch 32, one update
      per rollout (pymarl2's; ctde's own default is 4).
  (b) matched to JaxMARL's qmix_rnn with its ql_rnn_smax.yaml defaults except hidden size 64: 16 envs,
      128-step rollouts with resets inside, 8 updates of 32 sequences per rollout, mixer embedding 64,
      hypernetwork hidden 256, buffer 5000.
  (b, bfloat16) the same with `algo.matmul_precision=bfloat16` (bfloat16 matmul inputs, float32 accumulation,
      in the gradient steps; JaxMARL runs float32).

  maddpg_simple_tag: `algo=maddpg` (plain CTDE, default options: 8 envs, whole 25-step episodes, 4 updates of
      32 episodes per rollout) on `mpe:simple_tag`, 1 seed, through the program `ctde train` runs (the compiled
      training chunk, initialisation excluded, one greedy episode at the end), each timed run right after the
      env-only rollout of mpe:simple_tag (random actions, the same environments and env steps, resets inside)
      with both CPU kernel choices; the fraction is the median of the per-pair ratios to the faster env-only
      rollout. Selected with `--settings maddpg_simple_tag`; results (alone) default to throughput_maddpg.json:

      python benchmarks/throughput.py --settings maddpg_simple_tag --env-counts '' --mappo-envs ''

Throughput is steady state: the replay already holds enough data, so every iteration learns (JaxMARL starts
learning only once its buffer holds 32 rollouts, 65,536 steps at (b); a short fixed-length run of it is mostly
collection). For JaxMARL, steady state is the difference between two run lengths; its whole-run figure is
reported too. Ours and JaxMARL's are timed in alternation, `--rounds` times, and the ratio reported is the
median of the per-round ratios. Compile time is reported separately. The machine's rate on a 2048^3 product
(float32 and bfloat16) is recorded at the start and before every round: on a shared host it moves with the
neighbours' load, and the ratio with it. Results: benchmarks/results/throughput.json.

    python benchmarks/throughput.py                       # ours only
    python benchmarks/throughput.py --jaxmarl-qmix ~/JaxMARL/baselines/QLearning/qmix_rnn.py \
        --jaxmarl-python ~/jaxmarl-venv/bin/python        # plus JaxMARL side by side
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp

from ctde.config import build_config
from ctde.envs import make_env
from ctde.algos.base import collect_and_learn
from ctde.training.runner import build_program
from ctde.training.resolve import resolve
from ctde.training import cpu_kernels
from ctde.training.runner import seed_keys

RESULTS = Path(__file__).parent / "results"

SETTING_B = ["rollout.num_envs=16", "rollout.length=128", "rollout.auto_reset=true", "algo.updates_per_rollout=8",
             "algo.batch_size=32", "algo.buffer_size=5000", "algo.mixer_embed_dim=64", "algo.hypernet_embed=256",
             "algo.hidden_dim=64", "algo.target_update_interval=80"]
BFLOAT16 = ["algo.matmul_precision=bfloat16"]
SETTINGS = {"a_pymarl": ["algo.updates_per_rollout=1"], "b_jaxmarl_matched": SETTING_B,
            "b_jaxmarl_matched_bfloat16": SETTING_B + BFLOAT16}
# Off-SMAX settings: name -> (env id, overrides), measured by `maddpg_paired` against that env's own rollout.
MADDPG_SETTINGS = {"maddpg_simple_tag": ("mpe:simple_tag", [])}
MADDPG_STEPS = 100_000  # env steps of each timed MADDPG run (500 iterations of 8 x 25 steps)


def env_id_of(name: str) -> str:
    """An env id from a SMAX map name ("5m_vs_6m") or a full id ("mpe:simple_tag")."""
    return name if ":" in name else f"smax:{name}"


def env_only_program(map_name: str, num_envs: int, steps: int, kernels: str = "native"):
    """A jitted rollout of random available actions, vmapped over environments, reset inside the scan: the
    ceiling, compiled with XLA:CPU `kernels` (`ctde.training.cpu_kernels`: "native" is the fastest for SMAX,
    "ynnpack" is XLA's default). `map_name`: a SMAX map or a full env id (`env_id_of`). Returns the function
    of a PRNG key."""
    cpu_kernels.unroll_threefry()  # as every training program does (ctde.training.program.build_program)
    env = make_env(build_config([f"env={env_id_of(map_name)}"]).env)

    def rollout(key):
        state, ts = jax.vmap(env.reset)(jax.random.split(key, num_envs))

        def step(carry, key):
            state, ts = carry
            act_key, step_key, reset_key = jax.random.split(key, 3)
            action = jax.random.categorical(act_key, jnp.where(ts.avail, 0.0, -jnp.inf)).astype(jnp.int32)
            state, ts = jax.vmap(env.step)(jax.random.split(step_key, num_envs), state, action)
            fresh_state, fresh_ts = jax.vmap(env.reset)(jax.random.split(reset_key, num_envs))
            pick = lambda a, b: jax.tree.map(  # noqa: E731
                lambda x, y: jnp.where(ts.done.reshape((-1,) + (1,) * (x.ndim - 1)), x, y), a, b)
            return (pick(fresh_state, state), pick(fresh_ts, ts)), ts.reward

        return jax.lax.scan(step, (state, ts), jax.random.split(key, steps))[1]

    options = cpu_kernels.compiler_options(kernels, algo="none", precision="float32", learning=False)
    return jax.jit(rollout, compiler_options=options)


CEILING_KERNELS = ("native", "ynnpack")


def env_only(map_name: str, num_envs: int, steps: int = 128, repeats: int = 5) -> dict:
    """Env-only throughput (see `env_only_program`) with XLA's own kernels and with XLA's default (YNNPACK),
    timed alternately: median of `repeats` timed rollouts each after a compile. The ceiling is the faster."""
    fns = {k: env_only_program(map_name, num_envs, steps, k) for k in CEILING_KERNELS}
    compile_seconds = {}
    for kernels, fn in fns.items():
        tic = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(0)))
        compile_seconds[kernels] = time.perf_counter() - tic
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for kernels, fn in fns.items():
            tic = time.perf_counter()
            jax.block_until_ready(fn(jax.random.PRNGKey(r + 1)))
            times[kernels].append(time.perf_counter() - tic)
    rates = {k: num_envs * steps / statistics.median(t) for k, t in times.items()}
    return {"num_envs": num_envs, "steps_per_second": max(rates.values()), "by_cpu_kernels": rates,
            "compile_seconds": compile_seconds}


def cpu_description() -> dict:
    """The CPU these figures came from: its model name and the matrix instructions XLA's kernels can use
    (AVX512-BF16; AMX). Shared hosts of one size differ here, and our bfloat16 lead over JaxMARL with them."""
    model, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {"model": model, "matrix_instructions": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})}


def best_time(fn, *args, repeats: int = 5) -> float:
    """Seconds of the fastest of `repeats` calls of `fn(*args)`, after one untimed call (compilation)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tic)
    return min(times)


# One jitted function, so that measuring the rate again (before every side-by-side round) does not recompile.
_square_product = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))


def peak_rate() -> dict:
    """This machine's rate right now on a 2048^3 product, {"float32": FLOP/s, "bfloat16": FLOP/s} (float32
    accumulation; best of 3). On a shared host it moves with the neighbours' load, and bfloat16 moves most."""
    return {jnp.dtype(dtype).name: 2 * 2048 ** 3 / best_time(_square_product, jnp.ones((2048, 2048), dtype),
                                                               repeats=3)
            for dtype in (jnp.float32, jnp.bfloat16)}


@dataclass
class TrainingProgram:
    """A compiled scan of learning iterations of one seed and the learner it continues from: each timed call
    advances `learner`, so successive calls keep training instead of repeating the same iterations."""

    compiled: Callable
    learner: Any
    compile_seconds: float

    def timed_call(self) -> tuple[float, int]:
        """One timed call: (env steps/s, updates made)."""
        before = int(self.learner.env_steps)
        tic = time.perf_counter()
        self.learner, updates = self.compiled(self.learner)
        jax.block_until_ready(self.learner)
        elapsed = time.perf_counter() - tic
        return (int(self.learner.env_steps) - before) / elapsed, int(updates.sum())

    def timed_calls(self, repeats: int) -> tuple[list[float], list[int]]:
        """`repeats` timed calls: env steps/s and updates per call."""
        calls = [self.timed_call() for _ in range(repeats)]
        return [rate for rate, _ in calls], [updates for _, updates in calls]


def compiled_training(map_name: str, overrides: list[str], iterations: int) -> TrainingProgram:
    """A jitted scan of `iterations` learning iterations of one seed, compiled, with its warmed-up learner
    (the replay already holds more than a batch, so every measured iteration learns)."""
    config = resolve(build_config([f"env=smax:{map_name}", "algo=qmix", "seeds=1", "out=/tmp/unused", *overrides]))
    # (overrides come last, so "algo=mappo" among them selects MAPPO)
    program = build_program(config)
    backbone = program.backbone
    state = program.init(seed_keys(config))
    learner = jax.tree.map(lambda x: x[0], state.learner)

    def run(learner):
        def body(learner, _):
            learner, stats, metrics, n_updates = collect_and_learn(backbone, program.env, learner)
            return learner, n_updates
        return jax.lax.scan(body, learner, None, length=iterations)

    fn = jax.jit(run, donate_argnums=0, compiler_options=program.compiler_options())
    tic = time.perf_counter()
    compiled = fn.lower(learner).compile()
    compile_seconds = time.perf_counter() - tic
    for _ in range(100):  # warm-up until the replay holds a batch, so every measured call learns
        learner, updates = compiled(learner)
        if int(updates.sum()) > 0:
            break
    return TrainingProgram(compiled, learner, compile_seconds)


def ours(program: TrainingProgram, overrides: list[str], iterations: int, repeats: int) -> dict:
    """Steady-state training throughput of our QMIX: `program` (`compiled_training` of `overrides`, jitted scans of
    `iterations` learning iterations) timed `repeats` times."""
    rates, update_counts = program.timed_calls(repeats)
    return {"steps_per_second": statistics.median(rates), "runs": rates, "compile_seconds": program.compile_seconds,
            "updates_per_measurement": update_counts[-1], "iterations_per_measurement": iterations,
            "overrides": overrides}


def alternate_with_env_only(map_name: str, overrides: list[str], repeats: int) -> dict:
    """One learning iteration of `overrides` timed `repeats` times, each right after env-only rollouts of the same
    length and environments (with XLA's own kernels and with XLA's default, YNNPACK), so that all see the same
    machine state. (On these shared 2-core machines speed drifts by 10-20% over minutes, more than the margins
    being measured, when the two are timed minutes apart.)

    Returns {"learner": [env steps/s per iteration], "env_only": {kernels: [env steps/s]}, "env_steps": rollout
    length, "compile_seconds", "config"}; every timed iteration has learned."""
    program = compiled_training(map_name, overrides, 1)
    config = resolve(build_config([f"env=smax:{map_name}", "algo=qmix", *overrides]))
    backbone = build_program(config).backbone  # (its rollout length: value decomposition's is the episode limit)
    num_envs, steps = backbone.rollout.num_envs, backbone.rollout.length
    ceilings = {k: env_only_program(map_name, num_envs, steps, k) for k in CEILING_KERNELS}
    for fn in ceilings.values():
        jax.block_until_ready(fn(jax.random.PRNGKey(0)))
    learner_rates: list[float] = []
    env_rates: dict[str, list[float]] = {k: [] for k in ceilings}
    for r in range(repeats):
        for kernels, fn in ceilings.items():
            tic = time.perf_counter()
            jax.block_until_ready(fn(jax.random.PRNGKey(r + 1)))
            env_rates[kernels].append(num_envs * steps / (time.perf_counter() - tic))
        rate, updates = program.timed_call()
        assert updates > 0, "a timed iteration made no update"
        learner_rates.append(rate)
    return {"learner": learner_rates, "env_only": env_rates, "env_steps": steps,
            "compile_seconds": program.compile_seconds, "config": config}


def mappo_paired(map_name: str, num_envs: int, precision: str, repeats: int) -> dict:
    """MAPPO's steady-state throughput as a fraction of env-only throughput at the same number of environments.

    Timed calls alternate (`alternate_with_env_only`): env-only rollouts of the same length as MAPPO's, then one
    MAPPO iteration (rollout and its 5 epochs of updates); the fraction is the median of the per-pair ratios to
    the faster env-only rollout (the ceiling). The fraction against the XLA-default environment alone, this
    benchmark's ceiling before the kernel choice was known, is reported as well."""
    overrides = ["algo=mappo", f"rollout.num_envs={num_envs}", f"algo.matmul_precision={precision}"]
    timed = alternate_with_env_only(map_name, overrides, repeats)
    learner_rates, env_rates, config = timed["learner"], timed["env_only"], timed["config"]
    best_env = [max(rates) for rates in zip(*env_rates.values())]
    fractions = [mine / env for mine, env in zip(learner_rates, best_env)]
    default_fractions = [mine / env for mine, env in zip(learner_rates, env_rates["ynnpack"])]
    return {"steps_per_second": statistics.median(learner_rates), "runs": learner_rates,
            "cpu_kernels": cpu_kernels.kernel_choice(config.algo.cpu_kernels, algo="mappo", precision=precision,
                                                     learning=True),
            "env_only_steps_per_second": statistics.median(best_env),
            "env_only_runs_by_cpu_kernels": env_rates, "env_only_rollout_steps": timed["env_steps"],
            "fraction_of_env_only_same_envs": statistics.median(fractions), "paired_fractions": fractions,
            "fraction_of_xla_default_env_only": statistics.median(default_fractions),
            "compile_seconds": timed["compile_seconds"], "overrides": overrides}


def compile_training_chunk(program, total_steps: jax.Array) -> tuple[Any, float, Any]:
    """The run's training chunk compiled as `ctde train` compiles it: (compiled, compile seconds, the sharding its
    state is created with, for `program.init(keys, placement)`)."""
    tic = time.perf_counter()
    abstract = jax.eval_shape(program.init, seed_keys(program.config))
    compiled = program.compiled_chunk().lower(abstract, jnp.int32(0), total_steps).compile()
    return compiled, time.perf_counter() - tic, compiled.input_shardings[0][0]


def ours_whole_run(map_name: str, overrides: list[str], rollouts: int, repeats: int) -> dict:
    """A fresh run of `rollouts` iterations timed whole (compile excluded), as JaxMARL's figure is, through the
    program `ctde train` runs: initialisation, then the training chunk (one seed, one evaluation block
    ending in a single greedy episode)."""
    probe = build_program(resolve(build_config([f"env=smax:{map_name}", "algo=qmix", "out=/tmp/unused",
                                                *overrides]))).backbone
    steps = rollouts * probe.rollout.num_envs * probe.rollout.length
    config = resolve(build_config([f"env=smax:{map_name}", "algo=qmix", "seeds=1", "out=/tmp/unused", f"steps={steps}",
                                   f"eval.interval={steps}", "eval.episodes=1", "log.chunk_evals=1", *overrides]))
    # (overrides come last, so "algo=mappo" among them selects MAPPO)
    program = build_program(config)
    total = jnp.int32(steps)
    compiled, compile_seconds, placement = compile_training_chunk(program, total)
    times = []
    for r in range(repeats):
        keys = jnp.stack([jax.random.PRNGKey(r)])
        for _ in range(2):  # init's own compilation stays out of the timing (a second call has compiled again)
            jax.block_until_ready(program.init(keys, placement))
        tic = time.perf_counter()
        state, _ = compiled(program.init(keys, placement), jnp.int32(0), total)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - tic)
    env_steps = int(state.learner.env_steps[0])
    return {"env_steps": env_steps, "run_seconds": times, "compile_seconds": compile_seconds,
            "steps_per_second": env_steps / statistics.median(times), "program": "the training chunk",
            "overrides": overrides}


def maddpg_paired(env_id: str, overrides: list[str], steps: int, repeats: int) -> dict:
    """MADDPG's training throughput (1 seed) through the compiled training chunk of `ctde train`, as a fraction
    of the env-only rate of the same environment at the same number of environments.

    One chunk runs a fresh run of `steps` env steps (initialisation untimed, learning from the first full batch
    of replay: 4 of the 500 iterations at the defaults do not learn; one greedy episode at the end). Timed runs
    alternate with env-only rollouts of the same environments and env steps (`env_only_program`, both CPU kernel
    choices), so both see the same machine state; the fraction is the median of the per-pair ratios to the
    faster env-only rollout."""
    config = resolve(build_config([f"env={env_id}", "algo=maddpg", "seeds=1", "out=/tmp/unused", f"steps={steps}",
                                   f"eval.interval={steps}", "eval.episodes=1", "log.chunk_evals=1", *overrides]))
    program = build_program(config)
    num_envs, length = program.backbone.rollout.num_envs, program.backbone.rollout.length
    total = jnp.int32(steps)
    compiled, compile_seconds, placement = compile_training_chunk(program, total)
    env_steps_per_rollout = -(-steps // num_envs)  # per environment
    ceilings = {k: env_only_program(env_id, num_envs, env_steps_per_rollout, k) for k in CEILING_KERNELS}
    env_compile = {}
    for kernels, fn in ceilings.items():
        tic = time.perf_counter()
        jax.block_until_ready(fn(jax.random.PRNGKey(0)))
        env_compile[kernels] = time.perf_counter() - tic
    learner_rates: list[float] = []
    env_rates: dict[str, list[float]] = {k: [] for k in ceilings}
    run_seconds, updates = [], []
    for r in range(repeats):
        for kernels, fn in ceilings.items():
            tic = time.perf_counter()
            jax.block_until_ready(fn(jax.random.PRNGKey(r + 1)))
            env_rates[kernels].append(num_envs * env_steps_per_rollout / (time.perf_counter() - tic))
        keys = jnp.stack([jax.random.PRNGKey(r)])
        for _ in range(2):  # init's own compilation stays out of the timing (a second call has compiled again)
            jax.block_until_ready(program.init(keys, placement))
        state = program.init(keys, placement)
        jax.block_until_ready(state)
        tic = time.perf_counter()
        state, _ = compiled(state, jnp.int32(0), total)
        jax.block_until_ready(state)
        elapsed = time.perf_counter() - tic
        run_seconds.append(elapsed)
        learner_rates.append(int(state.learner.env_steps[0]) / elapsed)
        updates.append(int(state.learner.updates[0]))
    best_env = [max(rates) for rates in zip(*env_rates.values())]
    fractions = [mine / env for mine, env in zip(learner_rates, best_env)]
    return {"env": env_id, "num_envs": num_envs, "rollout_length": length, "env_steps_per_run": steps,
            "updates_per_run": updates, "updates_per_rollout": config.algo.updates_per_rollout,
            "batch_size": config.algo.batch_size, "steps_per_second": statistics.median(learner_rates),
            "runs": learner_rates, "run_seconds": run_seconds, "program": "the training chunk",
            "cpu_kernels": cpu_kernels.kernel_choice(
                config.algo.cpu_kernels, algo="maddpg", precision=config.algo.matmul_precision, learning=True,
                env_steps_per_update=num_envs * length / max(config.algo.updates_per_rollout, 1)),
            "env_only_steps_per_second": statistics.median(best_env), "env_only_runs_by_cpu_kernels": env_rates,
            "env_only_compile_seconds": env_compile,
            "fraction_of_env_only_same_envs": statistics.median(fractions), "paired_fractions": fractions,
            "compile_seconds": compile_seconds, "overrides": overrides}


def jaxmarl(qmix_file: str, python: str, map_name: str) -> dict:
    """JaxMARL's qmix_rnn at (b): whole-run figures at two lengths, and steady state from their difference."""
    driver = Path(__file__).parent / "jaxmarl_qmix_baseline.py"

    def measure(steps: int) -> dict:
        out = subprocess.run([python, str(driver), qmix_file, "--steps", str(steps), "--map", map_name,
                              "--repeats", "1"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    per_rollout = 16 * 128
    warmup_rollouts = 32  # its buffer can sample once it holds 32 rollouts; learning every rollout after that
    short, long = 50, 90
    first = measure(short * per_rollout)
    second = measure(long * per_rollout)
    steady = (long - short) * per_rollout / (second["run_seconds"][0] - first["run_seconds"][0])
    return {"steady_state_steps_per_second": steady,
            "whole_run": {f"{short * per_rollout}_steps": first, f"{long * per_rollout}_steps": second},
            "learning_rollouts": {f"{short * per_rollout}_steps": short - warmup_rollouts,
                                  f"{long * per_rollout}_steps": long - warmup_rollouts}}


def side_by_side(map_name: str, programs: dict[str, TrainingProgram], qmix_file: str, python: str, rounds: int,
                 repeats: int) -> dict:
    """Our steady state at (b) settings, `programs` {setting name: `compiled_training` program}, and
    JaxMARL's, timed in alternation `rounds` times.

    This machine's speed drifts by 10-20% over minutes, more than the margins compared, so each round's ratio
    divides figures measured within a few minutes of each other, and the ratio reported is the median over
    rounds. Our programs keep learning across rounds (each timed call: 4 iterations, every one learning);
    JaxMARL's steady state is the difference of its two whole runs (`jaxmarl`), run afresh each round.
    """
    names = list(programs)
    table = []
    for round_index in range(rounds):
        # Our bfloat16 advantage is matmul throughput, the first thing a busy neighbour on a shared core takes
        # away (one day's host ran 2048^3 products at 139 / 211 GFLOP/s float32 / bfloat16 instead of 213 / 394,
        # and this ratio fell below 1): every round records the rate it ran at.
        row: dict = {"peak_gflops": {k: v / 1e9 for k, v in peak_rate().items()}, "ours": {}, "ours_runs": {}}
        for name, program in programs.items():
            rates, _ = program.timed_calls(repeats)
            row["ours"][name], row["ours_runs"][name] = statistics.median(rates), rates
        row["jaxmarl"] = jaxmarl(qmix_file, python, map_name)
        steady = row["jaxmarl"]["steady_state_steps_per_second"]
        row["ratios"] = {name: rate / steady for name, rate in row["ours"].items()}
        table.append(row)
        mine = ", ".join(f"{name} {rate:,.0f} ({row['ratios'][name]:.2f}x)" for name, rate in row["ours"].items())
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in row["peak_gflops"].items())
        print(f"round {round_index + 1}/{rounds}: JaxMARL steady {steady:,.0f} steps/s; ours {mine} (2048^3 "
              f"products at the round's start: {peaks} GFLOP/s)", flush=True)
    return {"rounds": table,
            "median_ratio": {name: statistics.median(row["ratios"][name] for row in table) for name in names},
            "ours_median_steps_per_second": {name: statistics.median(row["ours"][name] for row in table)
                                             for name in names},
            "jaxmarl_median_steady_steps_per_second": statistics.median(
                row["jaxmarl"]["steady_state_steps_per_second"] for row in table)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map", default="5m_vs_6m")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jaxmarl-qmix", help="path of JaxMARL's baselines/QLearning/qmix_rnn.py")
    parser.add_argument("--jaxmarl-python", default=sys.executable,
                        help="a Python with jaxmarl, flashbax, hydra-core, omegaconf, wandb and six")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of ours and JaxMARL at (b)")
    parser.add_argument("--settings", default="a_pymarl,b_jaxmarl_matched,b_jaxmarl_matched_bfloat16")
    parser.add_argument("--env-counts", default="16,64,512")
    parser.add_argument("--mappo-envs", default="64,256", help="parallel environments for MAPPO ('' to skip)")
    parser.add_argument("--mappo-precisions", default="float32,bfloat16", help="algo.matmul_precision values")
    parser.add_argument("--mappo-repeats", type=int, default=7, help="paired (env-only, MAPPO) timings per setting")
    parser.add_argument("--maddpg-steps", type=int, default=MADDPG_STEPS, help="env steps of each timed MADDPG run")
    parser.add_argument("--out", default=None, help="file name under benchmarks/results/ (a partial "
                        "measurement, e.g. --settings '' for MAPPO alone, should not overwrite the full one); "
                        "default throughput.json, or throughput_maddpg.json when only MADDPG settings are selected")
    args = parser.parse_args()
    selected = [n for n in args.settings.split(",") if n]
    unknown = [n for n in selected if n not in SETTINGS and n not in MADDPG_SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; choose from {', '.join([*SETTINGS, *MADDPG_SETTINGS])}")
    if args.out is None:
        only_maddpg = selected and all(n in MADDPG_SETTINGS for n in selected)
        args.out = "throughput_maddpg.json" if only_maddpg else "throughput.json"
    mappo_envs = [int(n) for n in args.mappo_envs.split(",") if n]
    env_counts = sorted(int(n) for n in args.env_counts.split(",") if n)

    results: dict = {"map": args.map, "machine": f"{platform.processor() or platform.machine()}, "
                     f"{jax.device_count()} {jax.devices()[0].platform} device(s)", "jax": jax.__version__,
                     "cpu": cpu_description(), "date": time.strftime("%Y-%m-%d")}
    results["peak_gflops"] = {k: v / 1e9 for k, v in peak_rate().items()}
    print("2048^3 products: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in results["peak_gflops"].items()),
          flush=True)
    results["env_only"] = [env_only(args.map, n) for n in env_counts]
    for row in results["env_only"]:
        by_kernels = ", ".join(f"{k} {v:,.0f}" for k, v in row["by_cpu_kernels"].items())
        print(f"env only, {row['num_envs']:>4} envs: {row['steps_per_second']:>10,.0f} steps/s ({by_kernels})",
              flush=True)
    results["ours"], programs = {}, {}
    for name in (n for n in selected if n in MADDPG_SETTINGS):
        env_id, overrides = MADDPG_SETTINGS[name]
        r = maddpg_paired(env_id, overrides, args.maddpg_steps, args.repeats)
        results.setdefault("maddpg", {})[name] = r
        print(f"MADDPG {name} ({env_id}, {r['num_envs']} envs, 1 seed, {r['cpu_kernels']} kernels): "
              f"{r['steps_per_second']:,.0f} env steps/s through the training chunk; env-only alongside "
              f"{r['env_only_steps_per_second']:,.0f}: median paired ratio {r['fraction_of_env_only_same_envs']:.1%} "
              f"(per pair: {', '.join(f'{x:.1%}' for x in r['paired_fractions'])}; compile "
              f"{r['compile_seconds']:.1f} s)", flush=True)
    for name in (n for n in selected if n in SETTINGS):
        iterations = 4 if name.startswith("b") else 40
        programs[name] = compiled_training(args.map, SETTINGS[name], iterations)
        results["ours"][name] = ours(programs[name], SETTINGS[name], iterations, args.repeats)
        r = results["ours"][name]
        print(f"ours {name}: {r['steps_per_second']:,.0f} steps/s (compile {r['compile_seconds']:.1f} s)", flush=True)
    for n in mappo_envs:
        for precision in args.mappo_precisions.split(","):
            r = mappo_paired(args.map, n, precision, args.mappo_repeats)
            name = f"{n}_envs" if precision == "float32" else f"{n}_envs_{precision}"
            results.setdefault("mappo", {})[name] = r
            print(f"MAPPO, {n} envs, {precision} ({r['cpu_kernels']} kernels): {r['steps_per_second']:,.0f} "
                  f"steps/s, env-only alongside {r['env_only_steps_per_second']:,.0f}: median paired fraction "
                  f"{r['fraction_of_env_only_same_envs']:.1%} (target >= 30%; of the XLA-default env alone "
                  f"{r['fraction_of_xla_default_env_only']:.1%}; compile {r['compile_seconds']:.1f} s)", flush=True)
    if args.jaxmarl_qmix:
        b_names = [name for name in results["ours"] if name.startswith("b_")]
        paired = side_by_side(args.map, {name: programs[name] for name in b_names}, args.jaxmarl_qmix,
                              args.jaxmarl_python, args.rounds, args.repeats)
        results["side_by_side_b"] = paired
        results["jaxmarl_qmix_rnn_b"] = paired["rounds"][-1]["jaxmarl"]
        for name in b_names:
            suffix = name.removeprefix("b_jaxmarl_matched")
            ratio = paired["median_ratio"][name]
            results[f"ratio_ours_b{suffix}_over_jaxmarl_b_steady_state"] = ratio
            print(f"ratio ours ({name}) / JaxMARL at (b), steady state, median of {args.rounds} rounds: "
                  f"{ratio:.2f}x", flush=True)
            # JaxMARL's buffer can sample only once it holds 32 rollouts (65,536 steps at (b)); a whole run of
            # the same length with learning from the same point is the like-for-like whole-run comparison.
            for steps_key, theirs in results["jaxmarl_qmix_rnn_b"]["whole_run"].items():
                rollouts = int(steps_key.split("_")[0]) // (16 * 128)
                mine = ours_whole_run(args.map, SETTINGS[name] + ["algo.learning_starts=65536"], rollouts, 1)
                results.setdefault(f"whole_run_matched_learning_start{suffix}", {})[steps_key] = {
                    "ours": mine, "jaxmarl_steps_per_second": theirs["steps_per_second"],
                    "ratio": mine["steps_per_second"] / theirs["steps_per_second"]}
                print(f"whole run of {steps_key.replace('_', ' ')} ({name}), learning from 65,536: ours "
                      f"{mine['steps_per_second']:,.0f}, JaxMARL {theirs['steps_per_second']:,.0f} steps/s "
                      f"({mine['steps_per_second'] / theirs['steps_per_second']:.2f}x)", flush=True)
    if results["env_only"]:
        ceiling = max(r["steps_per_second"] for r in results["env_only"])
        for name, r in results["ours"].items():
            r["fraction_of_env_only_ceiling"] = r["steps_per_second"] / ceiling
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / args.out
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
