"""Recurrent agent networks shared by all paradigms.

Sequences are time-major: inputs `[T, *batch, features]`, reset flags `[T, *batch]` (True where an episode
starts, so the hidden state is zeroed before that step). Acting uses T = 1; learning unrolls whole sampled
sequences. Input projections are computed for all T at once; only the recurrence runs inside `lax.scan`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ctde.nets.precision import Dense, contract, matmul


def _gru_forward(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n):
    def step(h, inputs):
        xr, xz, xn, reset = inputs
        h = jnp.where(reset[..., None], 0.0, h)
        r = jax.nn.sigmoid(xr + matmul(h, w_r) + b_r)
        z = jax.nn.sigmoid(xz + matmul(h, w_z) + b_z)
        hn = matmul(h, w_n) + b_n
        n = jnp.tanh(xn + r * hn)
        h_new = (1.0 - z) * n + z * h
        return h_new, (h_new, h, r, z, n, hn)

    _, (hs, h_prev, r, z, n, hn) = jax.lax.scan(step, h0, (x_r, x_z, x_n, resets))
    return hs, (h_prev, r, z, n, hn)


@jax.custom_vjp
def gru_scan(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n):
    """Hidden states of a GRU over a sequence, zeroing the state where `resets` is True.

    h0 [*B, H]; x_r, x_z, x_n [T, *B, H] (input projections, input biases included); resets bool [T, *B];
    w_* [H, H] recurrent weights; b_* [H] recurrent biases -> hs [T, *B, H].

    The backward pass is written out: the reverse loop carries only dh and emits the gradient reaching each
    step's output; the gate gradients follow for all steps at once, and the weight gradients are then single
    large matmuls over all steps. Autodiff of `lax.scan` would instead accumulate [H, H] weight gradients
    inside the loop: a small outer product added to a carried gradient every step instead of one large product
    after the loop (docs/performance.md measures the difference).
    """
    return _gru_forward(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n)[0]


def _gru_fwd(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n):
    hs, saved = _gru_forward(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n)
    return hs, (saved, resets, w_r, w_z, w_n)


def _gate_gradients(g, h_prev, r, z, n, hn):
    """Gradients of the pre-activations (da_r, da_z, da_n) and of h W_n + b_n (dhn), from g, the total gradient
    reaching a step's output h_t (any shape, element-wise)."""
    da_n = g * (1.0 - z) * (1.0 - n * n)
    da_r = da_n * hn * r * (1.0 - r)
    da_z = g * (h_prev - n) * z * (1.0 - z)
    return da_r, da_z, da_n, da_n * r


def _gru_bwd(residuals, d_hs):
    (h_prev, r, z, n, hn), resets, w_r, w_z, w_n = residuals

    def step(dh_next, inputs):
        d_out, h_p, r_t, z_t, n_t, hn_t, reset = inputs
        g = d_out + dh_next
        da_r, da_z, _, dhn = _gate_gradients(g, h_p, r_t, z_t, n_t, hn_t)
        dh = g * z_t + matmul(da_r, w_r.T) + matmul(da_z, w_z.T) + matmul(dhn, w_n.T)
        dh = jnp.where(reset[..., None], 0.0, dh)
        return dh, g

    # The loop emits only g; the gate gradients are recomputed from it for all steps at once. Every stacked
    # output of a loop is a [T, *B, H] buffer zero-filled before it and written a step at a time, so one output
    # instead of four saves three such buffers (docs/performance.md measures the gain).
    dh0, g = jax.lax.scan(step, jnp.zeros_like(d_hs[0]), (d_hs, h_prev, r, z, n, hn, resets), reverse=True)
    da_r, da_z, da_n, dhn = _gate_gradients(g, h_prev, r, z, n, hn)
    flat_sum = lambda a: a.reshape(-1, a.shape[-1]).sum(axis=0)  # noqa: E731
    return (dh0, da_r, da_z, da_n, None, contract(h_prev, da_r), contract(h_prev, da_z), contract(h_prev, dhn),
            flat_sum(da_r), flat_sum(da_z), flat_sum(dhn))


gru_scan.defvjp(_gru_fwd, _gru_bwd)


class ResettableGRU(nn.Module):
    """GRU (PyTorch gate layout, as pymarl's GRUCell) whose hidden state is zeroed where `resets` is True.

    Input projections for all time steps are one matmul outside the loop; the recurrence (`gru_scan`) keeps
    three separate [H, H] matrices because slicing one fused [H, 3H] product inside the loop stops XLA:CPU
    from fusing the gate arithmetic.
    """

    hidden_dim: int

    @nn.compact
    def __call__(self, h0: jax.Array, xs: jax.Array, resets: jax.Array) -> tuple[jax.Array, jax.Array]:
        """h0 [*batch, H], xs [T, *batch, in], resets [T, *batch] -> (h_T [*batch, H], hs [T, *batch, H])."""
        hidden = self.hidden_dim
        x_r, x_z, x_n = jnp.split(Dense(3 * hidden, name="input")(xs), 3, axis=-1)
        # PyTorch's GRU initialization, U(-1/sqrt(H), 1/sqrt(H)), as in pymarl. (Not orthogonal: its QR
        # decomposition, batched over vmapped seeds, can deadlock XLA:CPU's two-thread pool on 2-core machines.)
        init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        w_r, w_z, w_n = (self.param(f"hidden_{g}", init, (hidden, hidden)) for g in "rzn")
        b_r, b_z, b_n = (self.param(f"hidden_bias_{g}", nn.initializers.zeros, (hidden,)) for g in "rzn")
        hs = gru_scan(h0, x_r, x_z, x_n, resets, w_r, w_z, w_n, b_r, b_z, b_n)
        return hs[-1], hs


class RNNAgent(nn.Module):
    """pymarl's agent: Linear(x -> H), ReLU, GRU(H), Linear(H -> |A|). Shared across agents."""

    hidden_dim: int
    n_actions: int

    @nn.compact
    def __call__(self, h0: jax.Array, xs: jax.Array, resets: jax.Array) -> tuple[jax.Array, jax.Array]:
        """h0 [*batch, H], xs [T, *batch, in], resets [T, *batch] -> (h_T, scores [T, *batch, |A|])."""
        embedded = nn.relu(Dense(self.hidden_dim, name="fc1")(xs))
        h_last, hs = ResettableGRU(self.hidden_dim, name="gru")(h0, embedded, resets)
        return h_last, Dense(self.n_actions, name="fc2")(hs)


def action_features(last_action: jax.Array, n_actions: int) -> jax.Array:
    """What a network reads of a previous action: onehot of a discrete one (int [...], -1 = none yet -> zeros),
    or a continuous one as it is (float [..., n_actions], zeros = none yet). The dtype says which."""
    if jnp.issubdtype(last_action.dtype, jnp.floating):
        return last_action
    return jax.nn.one_hot(last_action, n_actions)


def agent_inputs(obs: jax.Array, last_action: jax.Array, n_actions: int, extra: tuple[jax.Array, ...] = ()
                 ) -> jax.Array:
    """pymarl's per-agent input x_i = obs_i ⊕ onehot(last_action_i) ⊕ extra ⊕ onehot(i).

    obs [..., n, obs_dim], last_action int [..., n] (-1 = none yet) or float [..., n, |A|] (continuous actions,
    `action_features`) -> [..., n, obs_dim + |A| + extras + n].
    """
    n_agents = obs.shape[-2]
    # A constant, not jnp.eye: the online and target networks then assemble identical inputs, which XLA merges
    # into one concatenation (and one bfloat16 copy) per update instead of one each.
    ids = jnp.broadcast_to(np.eye(n_agents, dtype=obs.dtype), (*obs.shape[:-2], n_agents, n_agents))
    last = action_features(last_action, n_actions).astype(obs.dtype)
    return jnp.concatenate([obs, last, *[e.astype(obs.dtype) for e in extra], ids], axis=-1)


def value_outputs(n_actions: int, quantiles: int) -> int:
    """Width of a value head: |A|, or |A|·N with N quantiles per action (DMIX, `algo.value_quantiles`)."""
    return n_actions * max(1, quantiles)


def value_scores(outputs: jax.Array, n_actions: int, quantiles: int) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The learned model's (`learned_model`) network outputs -> (scores [..., |A|], extras).

    With DMIX (`algo.value_quantiles` = N > 0) the network has |A|·N outputs, each action's N quantiles: its scores
    are their means, so acting, evaluation, export and audit read expected values as with any backbone, and the
    quantiles [..., |A|, N] go to the objective as extras["quantiles"]. Otherwise the outputs are the scores.
    """
    if not quantiles:
        return outputs, {}
    z = outputs.reshape(*outputs.shape[:-1], n_actions, quantiles)
    return jnp.mean(z, axis=-1), {"quantiles": z}
