"""A batch's gradient computed in slices: the same update, in pieces whose activations stay in the CPU cache.

Every backbone's loss is a sum of masked means over its batch: each term sums per-sample values over the
counted samples (valid steps, living agents) and divides by their number. For such a loss, splitting the batch
into slices S_1..S_k with N_s counted samples each gives exactly

    L(batch) = Σ_s (N_s / N) · L(S_s),    N = Σ_s N_s,

and the same for its gradient and for any metric that is such a mean. Processing a slice at a time changes
only the memory traffic: on a CPU one pass over a large batch streams its activations through main memory,
while slices of a few thousand agent-steps stay in cache (docs/backbones.md measures the gain).

A backbone opts in by keeping that contract: `algo.slice_rows` sets the slice size in agent-steps (0 = off).

Slices are independent until their sums meet, so they can also run side by side: with JAX showing one CPU
device per core (`ctde.training.cpu_kernels.one_device_per_core`), `sum_over_slices(..., devices=d)` gives each
of d devices its share of the slices and adds the d partial sums. XLA:CPU runs one program's operations nearly
one at a time, and a recurrent update is mostly chains of small products (a GRU step over 80 rows) that each
use one core; two devices keep both cores busy. MAPPO's minibatch, whose large products already use every
core, does not gain, so its default is one device (docs/backbones.md, "Slices side by side on the cores", has
the measurements behind both defaults). The sum is the same up to float rounding: each device
adds its own slices in order and the partial sums are then added across devices, so a run is reproducible for
a given device count, and differs in the last bits from the same run on one device.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

_DEVICE_AXIS = "slice_devices"


# Per backbone family: agent-steps per slice where `algo.slice_rows` is unset, and devices where
# `algo.slice_devices` is 0 (None: all). Value decomposition's smaller slices give each core more than one;
# MAPPO's minibatch keeps larger slices on one device, as neither smaller slices nor a second device sped it up
# (docs/backbones.md).
_DEFAULTS = {"value_decomposition": (4096, None), "policy_gradient": (8192, 1)}


def slicing_options(algo: Any, family: str) -> tuple[int, int | None]:
    """(agent-steps per slice, devices wanted or None for all) of backbone `family` ("value_decomposition" or
    "policy_gradient"): `algo.slice_rows` and `algo.slice_devices`, or the family's defaults."""
    rows, devices = _DEFAULTS[family]
    return (rows if algo.slice_rows is None else algo.slice_rows), (algo.slice_devices or devices)


def slice_count(units: int, rows_per_unit: int, slice_rows: int, devices: int = 1) -> int:
    """How many equal slices of whole units (sequences, segments) a batch of `units` is processed in: a divisor of
    `units` whose slices come nearest, by ratio, to `slice_rows` agent-steps; 1 when slicing is off (0) or the
    batch is no larger than one slice.

    With `devices` > 1 (a divisor of `units`) the count is raised to the next divisor that is a multiple of
    `devices`, so that every device has slices of its own even where the batch is small: a program that spans
    several devices runs everything outside `sum_over_slices` on each of them, so a batch left whole would be
    computed once per device, each copy on one core (docs/backbones.md measures the cost on the demo)."""
    count = 1
    if slice_rows > 0 and units * rows_per_unit > slice_rows:
        wanted = max(slice_rows / rows_per_unit, 1.0)  # units per slice
        sizes = [d for d in range(1, units + 1) if units % d == 0]
        best = min(sizes, key=lambda size: abs(math.log(size / wanted)))
        count = units // best
    if devices > 1 and units % devices == 0:
        count = min(m for m in range(count, units + 1) if units % m == 0 and m % devices == 0)
    return count


def slice_devices(slices: int, wanted: int | None) -> int:
    """How many CPU devices `slices` slices are spread over: the largest divisor of `slices` no larger than
    `wanted` (None: no limit) and the CPU devices JAX has; 1 off the CPU (one accelerator runs a batch in one
    pass anyway)."""
    if jax.default_backend() != "cpu":
        return 1
    limit = min(wanted or slices, slices, jax.local_device_count())
    return max(d for d in range(1, max(limit, 1) + 1) if slices % d == 0)


def sum_over_slices(loss_and_grads: Callable[[Any, jax.Array], Any], slices: Any, counts: jax.Array,
                    key: jax.Array, devices: int = 1) -> Any:
    """Σ_s (N_s / N) · loss_and_grads(slice_s, key_s) over the leading axis of `slices`.

    loss_and_grads(one slice, key) -> any pytree of arrays (typically ((loss, metrics), grads)), every leaf a
    masked mean over the slice's counted samples or the gradient of one; slices: pytree with a leading slice
    axis [k, ...]; counts: [k], the counted samples of each slice. A single slice is evaluated as it is, with
    `key` (exactly the unsliced computation); otherwise slice s gets key `fold_in(key, s)`. With nothing counted
    anywhere every such mean is 0, and equal weights keep constant metrics unchanged. With `devices` > 1 (a
    divisor of k, see `slice_devices`), the first `devices` CPU devices each sum k / devices consecutive slices
    and the partial sums are added across them.
    """
    k = counts.shape[0]
    if k == 1:
        return loss_and_grads(jax.tree.map(lambda x: x[0], slices), key)
    total = counts.sum()
    weights = jnp.where(total > 0, counts / jnp.maximum(total, 1.0), 1.0 / k)
    keys = jax.vmap(lambda s: jax.random.fold_in(key, s))(jnp.arange(k))
    shapes = jax.eval_shape(loss_and_grads, jax.tree.map(lambda x: x[0], slices), key)

    def weighted_sum(slices, weights, keys):
        def accumulate(sums, xs):
            one_slice, weight, slice_key = xs
            part = loss_and_grads(one_slice, slice_key)
            return jax.tree.map(lambda total, value: total + weight * value, sums, part), None

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return jax.lax.scan(accumulate, zeros, (slices, weights, keys))[0]

    if devices == 1:
        return weighted_sum(slices, weights, keys)
    mesh = Mesh(np.array(jax.local_devices()[:devices]), (_DEVICE_AXIS,))
    # (check_vma off: the scan starts from zeros that are the same on every device and turns into per-device
    # partial sums; psum then adds them, which is all that is needed here.)
    return jax.shard_map(lambda *args: jax.lax.psum(weighted_sum(*args), _DEVICE_AXIS), mesh=mesh,
                         in_specs=P(_DEVICE_AXIS), out_specs=P(), check_vma=False)(slices, weights, keys)
