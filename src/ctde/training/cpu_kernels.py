"""Which kernels XLA:CPU uses for a compiled program: its YNNPACK library calls, or its own emitted code.

Since JAX 0.10, XLA:CPU by default hands dots and float32 reductions to the YNNPACK library. That pays for the
learner's large matmuls and loss reductions, but every library call has a fixed cost, and SMAX's step is full of
tiny reductions (distances over the two coordinates of every pair of units), which XLA's own kernels run much
faster. Where a program's time goes decides which wins, and `algo.cpu_kernels=auto` picks per program
(`kernel_choice`):

- MAPPO / IPPO, float32: native; in bfloat16: ynnpack_dots (bfloat16 matmuls are fast only in YNNPACK).
  An on-policy iteration spends a large share of its time stepping the environment.
- value decomposition: ynnpack below `DOTS_ONLY_FROM_STEPS_PER_UPDATE` environment steps per replayed update,
  where the update's reductions, which gain from YNNPACK, dominate; ynnpack_dots from there on, as the
  environment's share grows with the steps collected per update.
- evaluation (environment and greedy actor): native.

The other values force one choice for every program of a run; off the CPU the setting does nothing. The choice
changes float rounding, not what is computed. docs/performance.md ("CPU kernels") has the timings behind these
choices and the threshold's place between the two measured settings; `benchmarks/throughput.py` records both.

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
    compute, and SMAX draws several times per environment step, so the loop is a visible part of a rollout
    (docs/performance.md, "Random draws", measures it). The random bits are identical
    (`tests/test_cpu_kernels.py`). Returns False, changing nothing, where this JAX version lacks the internals
    it uses.
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
