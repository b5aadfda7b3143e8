"""Matmul precision of the networks: float32, or bfloat16 inputs with float32 accumulation.

`algo.matmul_precision=bfloat16` makes the learner's gradient steps round the two inputs of every layer's
matmul (the dense layers of agent, mixer, hypernetworks, critic and paradigm networks, and the GRU's
recurrence) to bfloat16 and accumulate in float32, in the forward pass and in both matmuls of its backward
pass. Parameters, optimizer state, activations between layers, losses, the small per-sample contractions
(attention over teammates, the mixing of Q-values) and everything outside the update (rollouts, evaluation,
the exported policy) stay float32. CPUs with AVX512-BF16 or AMX run such matmuls faster than float32, and GPUs
run them on their tensor cores (docs/backbones.md, "Matmul precision", has the rates).

One mechanism carries the choice: JAX's own `jax.default_matmul_precision` context, read while a function
is traced. The backbones trace their update inside `learner_precision(config.algo.matmul_precision)`; every
network builds its layers with `Dense` (flax's, with a dot_general that reads the context) and writes
explicit matmuls as `matmul(x, w)`. JAX keys its compilation cache on this context, so a function traced in
float32 is never reused for bfloat16 or the other way round. Outside the context both are exactly
`lax.dot_general` and `x @ w`: float32 runs are unchanged bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

MATMUL_PRECISIONS = ("float32", "bfloat16")


def bfloat16_active() -> bool:
    """True while tracing inside `learner_precision("bfloat16")` (or JAX's own bfloat16 context)."""
    return jax.config.jax_default_matmul_precision == "bfloat16"


@contextlib.contextmanager
def learner_precision(precision: str) -> Iterator[None]:
    """Trace the code inside with matmuls in `precision` ("float32" or "bfloat16")."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul precision {precision!r}: choose from {', '.join(MATMUL_PRECISIONS)}")
    if precision == "float32":
        yield
        return
    with jax.default_matmul_precision(precision):
        yield


def _contract_last(x: jax.Array, w: jax.Array) -> jax.Array:
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def _sum_of_outer_products(a16: jax.Array, b16: jax.Array) -> jax.Array:
    """a [..., i], b [..., j] (bfloat16) -> Σ over leading axes of a ⊗ b, [i, j], accumulated in float32."""
    return jnp.einsum("...i,...j->ij", a16, b16, preferred_element_type=jnp.float32)


@jax.custom_vjp
def bfloat16_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., k] @ w [k, m] -> [..., m] in float32, from bfloat16-rounded inputs accumulated in float32.

    The backward pass rounds the cotangent to bfloat16 too, so both of its matmuls (dx = g wᵀ, dw = xᵀ g) run
    at the same speed as the forward; their sums over the batch still accumulate in float32. (Autodiff of a
    cast-then-matmul would instead multiply a float32 cotangent by a bfloat16 operand, which XLA:CPU
    computes in float32.)
    """
    return _contract_last(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))


def _bfloat16_matmul_fwd(x, w):
    x16, w16 = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    return _contract_last(x16, w16), (x16, w16)


def _bfloat16_matmul_bwd(residuals, g):
    x16, w16 = residuals
    g16 = g.astype(jnp.bfloat16)
    dx = lax.dot_general(g16, w16, (((g.ndim - 1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
    return dx, _sum_of_outer_products(x16, g16)


bfloat16_matmul.defvjp(_bfloat16_matmul_fwd, _bfloat16_matmul_bwd)


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., k] @ w [k, m] in the precision of the surrounding `learner_precision`."""
    return bfloat16_matmul(x, w) if bfloat16_active() else x @ w


def contract(a: jax.Array, b: jax.Array) -> jax.Array:
    """Σ over all leading axes of a [..., i] ⊗ b [..., j] -> [i, j] (a weight gradient), in the surrounding
    precision, accumulated in float32."""
    if not bfloat16_active():
        return jnp.einsum("...i,...j->ij", a, b)
    return _sum_of_outer_products(a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))


def _dense_dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    if not bfloat16_active():
        return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                               preferred_element_type=preferred_element_type)
    # flax's Dense contracts the input's last axis with the kernel's first, which is all bfloat16_matmul does.
    assert dimension_numbers == (((lhs.ndim - 1,), (0,)), ((), ())), dimension_numbers
    return bfloat16_matmul(lhs, rhs)


# flax's Dense whose matmul follows `learner_precision`. Still an `nn.Dense`: parameter names and shapes, and
# so checkpoints, are those of the plain layer.
Dense = functools.partial(nn.Dense, dot_general=_dense_dot_general)
