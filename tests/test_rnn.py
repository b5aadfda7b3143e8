"""The recurrent agent's GRU: its hand-written backward pass against autodiff of the same recurrence."""

import jax
import jax.numpy as jnp
import numpy as np

from ctde.nets.rnn import ResettableGRU


def _reference_gru(params, h0, xs, resets):
    """The same GRU (PyTorch gate layout, hidden state zeroed where resets) written as a plain scan, so that
    JAX differentiates it itself."""
    p = params["params"]
    hidden = h0.shape[-1]
    projected = xs @ p["input"]["kernel"] + p["input"]["bias"]

    def step(h, inputs):
        x_t, reset = inputs
        h = jnp.where(reset[..., None], 0.0, h)
        r = jax.nn.sigmoid(x_t[..., :hidden] + h @ p["hidden_r"] + p["hidden_bias_r"])
        z = jax.nn.sigmoid(x_t[..., hidden:2 * hidden] + h @ p["hidden_z"] + p["hidden_bias_z"])
        n = jnp.tanh(x_t[..., 2 * hidden:] + r * (h @ p["hidden_n"] + p["hidden_bias_n"]))
        h = (1.0 - z) * n + z * h
        return h, h

    return jax.lax.scan(step, h0, (projected, resets))[1]


def test_gru_backward_pass_matches_autodiff_with_resets():
    hidden, steps, batch, features = 8, 7, (3, 2), 5
    k_params, k_h, k_x, k_g, k_r = jax.random.split(jax.random.PRNGKey(3), 5)
    gru = ResettableGRU(hidden)
    h0 = jax.random.normal(k_h, (*batch, hidden))
    xs = jax.random.normal(k_x, (steps, *batch, features))
    # Resets at the first step for some sequences and in the middle for others: both paths of the zeroing.
    resets = jax.random.bernoulli(k_r, 0.3, (steps, *batch)).at[0, 0].set(True).at[3, 1].set(True)
    params = gru.init(k_params, h0, xs, resets)
    # Non-zero recurrent biases, so that their gradients and the r * (h W_n + b_n) term are exercised.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(k_g, a.shape), params)
    cotangent = jax.random.normal(k_g, (steps, *batch, hidden))

    def loss(fn, params, h0, xs):
        return jnp.sum(fn(params, h0, xs) * cotangent)

    ours = lambda params, h0, xs: gru.apply(params, h0, xs, resets)[1]  # noqa: E731
    reference = lambda params, h0, xs: _reference_gru(params, h0, xs, resets)  # noqa: E731
    np.testing.assert_allclose(ours(params, h0, xs), reference(params, h0, xs), rtol=1e-5, atol=1e-5)
    grads = jax.grad(lambda *a: loss(ours, *a), argnums=(0, 1, 2))(params, h0, xs)
    expected = jax.grad(lambda *a: loss(reference, *a), argnums=(0, 1, 2))(params, h0, xs)
    flat, flat_expected = jax.tree.leaves_with_path(grads), jax.tree.leaves(expected)
    assert len(flat) == len(flat_expected) == 2 + 8  # h0, xs, and the GRU's 8 parameter arrays
    for (path, got), want in zip(flat, flat_expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
        assert np.abs(np.asarray(want)).max() > 1e-3, jax.tree_util.keystr(path)  # a gradient that tests something
    # h0's gradient is zero exactly for the sequences that reset at the first step.
    assert np.all(np.asarray(grads[1])[0, 0] == 0.0) and np.abs(np.asarray(grads[1])[1, 0]).max() > 0
