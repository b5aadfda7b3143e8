"""benchmarks/matmul_bound.py's count of the matmuls an iteration executes (its timings are not tested here)."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from matmul_bound import count_dots, dot_flops, total_flops  # noqa: E402


def test_counts_trips_of_nested_scans_and_the_learning_branch_of_a_cond():
    w = jnp.ones((8, 4))

    def iteration(x, learn):
        def inner(h, _):
            return h, jnp.tanh(h @ w)  # [3, 8] x [8, 4], 5 x 2 times

        def outer(h, _):
            return jax.lax.scan(inner, h, None, length=5)[0], None

        def update(x):
            return jax.lax.scan(outer, x, None, length=2)[0]

        x = jax.lax.cond(learn, update, lambda x: x, x)
        return jnp.einsum("bti,btj->ij", x[None], x[None])  # contraction over leading axes: [8, 8], once

    dots = count_dots(jax.make_jaxpr(iteration)(jnp.ones((3, 8)), True).jaxpr)
    executions = sorted(dots.values())
    assert executions == [1, 10]
    assert total_flops(dots) == 10 * 2 * 3 * 8 * 4 + 2 * 3 * 8 * 8


def test_batched_dot_flops():
    dots = count_dots(jax.make_jaxpr(lambda a, b: jnp.einsum("bmk,bkn->bmn", a, b))(
        jnp.ones((6, 3, 5)), jnp.ones((6, 5, 7))).jaxpr)
    (key,) = dots
    assert dot_flops(key) == 2 * 6 * 3 * 5 * 7


def test_refuses_an_iteration_whose_matmuls_depend_on_the_data():
    w = jnp.ones((8, 8))

    def trimmed_update(x, length_index):
        # as value decomposition trims padding: a switch between products of different sizes
        return jax.lax.switch(length_index, [lambda x: (x[:2] @ w).sum(), lambda x: (x @ w).sum()], x)

    with pytest.raises(ValueError, match="auto_reset=true"):
        count_dots(jax.make_jaxpr(trimmed_update)(jnp.ones((4, 8)), 1).jaxpr)
