"""Slices of a batch on several CPU devices (`ctde.algos.slicing`) and the device count `import ctde` sets
(`ctde.training.cpu_kernels.one_device_per_core`). conftest.py asks for two CPU devices, whatever the cores."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ctde  # noqa: F401  (sets the CPU device count before JAX's first operation)
from ctde.algos.slicing import slice_count, slice_devices, sum_over_slices


def _loss_and_grads(w):
    """A masked-mean loss of the form sum_over_slices expects, with its gradient in w."""
    def loss_and_grads(one_slice, key):
        x, mask = one_slice
        def loss(w):
            pred = jnp.tanh(x @ w) + 0.01 * jax.random.normal(key, (x.shape[0], w.shape[1]))
            return jnp.sum(mask[:, None] * pred ** 2) / jnp.maximum(mask.sum(), 1.0)
        return jax.value_and_grad(loss)(w)
    return loss_and_grads


def test_conftest_gives_two_cpu_devices():
    assert jax.device_count() == 2


def test_slice_devices_is_the_largest_divisor_within_the_devices():
    assert slice_devices(4, 8) == 2  # two CPU devices here
    assert slice_devices(8, 2) == 2
    assert slice_devices(3, 2) == 1  # 3 slices cannot be shared evenly by 2
    assert slice_devices(4, 1) == 1
    assert slice_devices(1, 2) == 1


def test_every_device_gets_slices_of_its_own_even_in_a_small_batch():
    # Value decomposition picks the devices for its longest prefix (32 x 61 steps x 3 agents: 2 slices of 4096
    # -> 2 devices); a shorter prefix that fits one slice is still cut in two, one per device.
    assert slice_count(32, 61 * 3, 4096) == 2
    assert slice_count(32, 16 * 3, 4096) == 1
    assert slice_count(32, 16 * 3, 4096, devices=2) == 2
    assert slice_count(32, 129 * 5, 4096, devices=2) == 4  # already a multiple of 2
    assert slice_count(24, 100, 800, devices=2) == 4  # 3 slices raised to the next even divisor of 24
    assert slice_count(9, 10, 0, devices=2) == 1  # 9 sequences cannot be shared by 2


@pytest.mark.parametrize("k", [2, 4])
def test_slices_on_two_devices_sum_to_the_one_device_result(k):
    """Each device sums its share and the shares are added: the loss and gradient of one device, up to float
    rounding (the two programs fuse their arithmetic differently)."""
    rows = 6
    x = jax.random.normal(jax.random.PRNGKey(0), (k, rows, 5))
    mask = (jax.random.uniform(jax.random.PRNGKey(1), (k, rows)) < 0.7).astype(jnp.float32)
    w = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (5, 3))
    counts = mask.sum(axis=1)
    assert len(set(np.asarray(counts).tolist())) > 1  # uneven weights
    run = lambda devices: jax.jit(lambda w, x, mask, counts: sum_over_slices(  # noqa: E731
        _loss_and_grads(w), (x, mask), counts, jax.random.PRNGKey(3), devices))
    one = jax.device_get(run(1)(w, x, mask, counts))
    program = run(2).lower(w, x, mask, counts).compile()
    assert "all-reduce" in program.as_text()  # the two devices' partial sums are added
    two = jax.device_get(program(w, x, mask, counts))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(two)):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


def _devices_in_fresh_process(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("CTDE_CPU_DEVICES", "XLA_FLAGS")}
    environment.update(env)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1] + "\n" + result.stderr


def test_import_ctde_sets_the_cpu_device_count_from_the_environment():
    out = _devices_in_fresh_process("import ctde, jax; print(jax.device_count())", CTDE_CPU_DEVICES="3")
    assert out.splitlines()[0] == "3"
    out = _devices_in_fresh_process("import ctde, jax; print(jax.device_count())", CTDE_CPU_DEVICES="x")
    assert out.splitlines()[0] == str(len(os.sched_getaffinity(0)))  # one per core, with a warning
    assert "CTDE_CPU_DEVICES='x' is not a positive integer" in out


def test_a_count_fixed_before_import_is_left_alone():
    """After JAX's first operation the count cannot change: ctde leaves it (slices then share one device)."""
    code = ("import jax, jax.numpy as jnp; jnp.ones(1).block_until_ready(); import ctde; "
            "from ctde.training.cpu_kernels import one_device_per_core; print(one_device_per_core(), "
            "jax.device_count())")
    assert _devices_in_fresh_process(code, CTDE_CPU_DEVICES="3").splitlines()[0] == "0 1"
