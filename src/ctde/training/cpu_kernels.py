"""Which kernels XLA:CPU uses for a compiled program: its YNNPACK library calls, or its own emitted code.

Since JAX 0.10, XLA:CPU by default hands dots and float32 reductions to the YNNPACK library. That pays for the
learner's large matmuls and loss reductions, but every library call has a fixed cost, and SMAX's step is full of
tiny reductions (distances over the two coordinates of every pair of units): random-action SMAX 5m_vs_6m
rollouts run 2.1-2.5x faster with XLA's own kernels at 64-512 envs (64: 31k -> 67k steps/s on a 2-core EPYC;
about the same at 16). Where a program's time goes decides which wins; measured on that machine
(`benchmarks/throughput.py` records both):

| program                                                        | fastest      | vs XLA's default |
|----------------------------------------------------------------|--------------|------------------|
| MAPPO / IPPO iteration, float32                                | native       | 1.19x            |
| MAPPO / IPPO iteration, bfloat16                               | ynnpack_dots | 1.08-1.15x       |
| QMIX, 16 envs x 128 steps per 8 updates (256 env steps/update) | ynnpack      | ynnpack_dots 0.96x, native 0.97x (bf16 0.71x) |
| QMIX, 8 envs x 70 steps per update (560)                       | either       | ynnpack_dots 1.01x, native 0.97x |
| QMIX, 64 envs x 70 steps per 4 updates (1,120)                 | ynnpack_dots | 1.41x float32, 1.25x bfloat16 (native 1.30x) |
| evaluation (environment and greedy actor)                      | native       | 2.1-2.5x (env alone) |

On-policy learners step the environment for a third of an iteration. A value-decomposition learner's share
depends on how many environment steps it collects per replayed update, whose reductions YNNPACK speeds up;
bfloat16 matmuls are fast only in YNNPACK. `algo.cpu_kernels=auto` applies this table (value decomposition:
ynnpack_dots from `DOTS_ONLY_FROM_STEPS_PER_UPDATE` env steps per update, between the measured 256 and 560);
the other values force one choice for every program of a run.
Off the CPU the setting does nothing. The choice changes float rounding, not what is computed.

Independently of the setting, `unroll_threefry` makes every random draw on the CPU straight-line code, and
`one_device_per_core` lets a batch's slices run side by side on the cores (both below).
"""

from __future__ import annotations

import os
import warnings

import jax

CPU_KERNELS = ("auto", "ynnpack", "ynnpack_dots", "native")

# XLA's DebugOptions field listing what goes to YNNPACK; absent = XLA's default (dots and reductions).
_YNN_FIELD = "xla_cpu_experimental_ynn_fusion_type"
_YNN_FUSIONS = {"ynnpack": None, "ynnpack_dots": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT", "native": ""}
DOTS_ONLY_FROM_STEPS_PER_UPDATE = 512


def kernel_choice(setting: str, *, algo: str, precision: str, learning: bool,
                  env_steps_per_update: float = 0.0) -> str:
    """The concrete kernels ("ynnpack", "ynnpack_dots" or "native") for `setting` (one of `CPU_KERNELS`), for a
    training program of backbone `algo` with learner matmuls in `precision` that collects
    `env_steps_per_update` environment steps per gradient update (read for value decomposition only), or an
    evaluation-only program (`learning=False`)."""
    if setting not in CPU_KERNELS:
        raise ValueError(f"cpu kernels {setting!r}: choose from {', '.join(CPU_KERNELS)}")
    if setting != "auto":
        return setting
    if not learning:
        return "native"
    if algo in ("mappo", "ippo"):
        return "ynnpack_dots" if precision == "bfloat16" else "native"
    return "ynnpack_dots" if env_steps_per_update >= DOTS_ONLY_FROM_STEPS_PER_UPDATE else "ynnpack"


def compiler_options(setting: str, *, algo: str, precision: str, learning: bool = True,
                     env_steps_per_update: float = 0.0) -> dict[str, str] | None:
    """Options for `jax.jit(..., compiler_options=...)` / `Lowered.compile(compiler_options=...)` that select the
    kernels of `kernel_choice`; None (XLA's defaults) off the CPU or where XLA's default is the choice."""
    choice = kernel_choice(setting, algo=algo, precision=precision, learning=learning,
                           env_steps_per_update=env_steps_per_update)
    fusions = _YNN_FUSIONS[choice]
    if fusions is None or jax.default_backend() != "cpu":
        return None
    return {_YNN_FIELD: fusions}


def unroll_threefry() -> bool:
    """Lower JAX's threefry hash, behind every `jax.random` call, as straight-line code on the CPU, as JAX
    already does on GPUs. Process-wide and idempotent; programs compiled afterwards use it.

    On the CPU JAX emits the hash's 20 rounds as a 5-trip loop to keep programs small. Every trip of every
    random call is then a few thunks on arrays of a dozen elements, each costing more to dispatch than to
    compute, and SMAX draws several times per environment step: a QMIX rollout of 16 environments x 128 steps
    on SMAX 5m_vs_6m (random actions of the acting network included) took 58 ms with the loop and 44 ms
    without it on a 2-core EPYC. The random bits are identical (`tests/test_cpu_kernels.py`). Returns False,
    changing nothing, where this JAX version lacks the internals it uses.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32
        straight_line = threefry2x32._threefry2x32_lowering_rule
        primitive = threefry2x32.threefry2x32_p
    except (ImportError, AttributeError):
        return False
    mlir.register_lowering(primitive, straight_line, platform="cpu")
    return True


CPU_DEVICES_VARIABLE = "CTDE_CPU_DEVICES"


def one_device_per_core() -> int:
    """Show JAX one CPU device per core this process may use (process-wide), so that the slices of a batch can
    run side by side (`ctde.algos.slicing`); `import ctde` calls it. Returns the device count set, or 0 where
    it changes nothing: after JAX's first operation (the count is fixed then), or where the count was already
    chosen (`jax_num_cpu_devices`, `--xla_force_host_platform_device_count` in XLA_FLAGS).

    The environment variable CTDE_CPU_DEVICES=n sets the count (1: JAX's default single device). Code that
    does not ask for the other devices runs on the first, as before; on a machine with an accelerator only the
    CPU platform's device list changes.
    """
    from jax._src import xla_bridge

    if (xla_bridge.backends_are_initialized() or jax.config.jax_num_cpu_devices != -1
            or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
        return 0
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    requested = os.environ.get(CPU_DEVICES_VARIABLE, "").strip()
    if requested:
        if requested.isdigit() and int(requested) >= 1:
            count = int(requested)
        else:
            warnings.warn(f"{CPU_DEVICES_VARIABLE}={requested!r} is not a positive integer; using one CPU device "
                          f"per core ({count}). Set it to 1 for a single device.", stacklevel=2)
    jax.config.update("jax_num_cpu_devices", count)
    return count
