"""PTDE's networks: the recurrent trunk and Q head, the global-information modules (GIP, and the GIU
ablation) that turn the state into an agent's knowledge z, and the student that predicts z from local inputs.

Shapes: inputs x [T, *B, n, x_dim], state s [T, *B, state_dim]; z, mu, var [T, *B, n, z_dim].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ctde.nets.precision import Dense
from ctde.nets.rnn import ResettableGRU


class Trunk(nn.Module):
    """h_i = GRU(ReLU(Linear(x_i -> H)))."""

    hidden_dim: int

    @nn.compact
    def __call__(self, h0, xs, resets):
        embedded = nn.relu(Dense(self.hidden_dim, name="fc1")(xs))
        return ResettableGRU(self.hidden_dim, name="gru")(h0, embedded, resets)


class QHead(nn.Module):
    """Q_i = Linear(H + z_dim -> |A|)([ReLU(Linear(H -> H)(h_i)), z_i])."""

    hidden_dim: int
    n_actions: int

    @nn.compact
    def __call__(self, h, z):
        features = nn.relu(Dense(self.hidden_dim, name="fc_h")(h))
        return Dense(self.n_actions, name="q")(jnp.concatenate([features, z], axis=-1))


MAX_LOG_VARIANCE = 10.0  # var <= e^10 (about 22,000)


class DistributionGenerator(nn.Module):
    """mu = Linear, LeakyReLU, Linear on u; var = max(exp(min(same-shaped MLP on u, MAX_LOG_VARIANCE)),
    min_variance)."""

    z_dim: int
    min_variance: float = 0.01

    @nn.compact
    def __call__(self, u):
        mu = Dense(self.z_dim, name="mu_out")(nn.leaky_relu(Dense(self.z_dim, name="mu_hidden")(u)))
        log_var = Dense(self.z_dim, name="var_out")(nn.leaky_relu(Dense(self.z_dim, name="var_hidden")(u)))
        # Bounded above so that a wide state (LTR: 10 documents x 300 features) cannot overflow exp at
        # initialization (var reached 1e38 there); SMAX's variances stay far below the bound.
        return mu, jnp.maximum(jnp.exp(jnp.minimum(log_var, MAX_LOG_VARIANCE)), self.min_variance)


class PersonalizedGlobalInfo(nn.Module):
    """GIP: an agent-hypernetwork on x_i gives the weights W [state_dim, z_dim] and bias b [z_dim] that turn the
    state into u_i = ELU(s W + b); each agent reads the same state through its own weights."""

    state_dim: int
    z_dim: int
    hypernet_hidden: int = 64
    min_variance: float = 0.01

    @nn.compact
    def __call__(self, x, state):
        weights = Dense(self.state_dim * self.z_dim, name="hyper_w_out")(
            nn.relu(Dense(self.hypernet_hidden, name="hyper_w_hidden")(x)))
        weights = weights.reshape(*x.shape[:-1], self.state_dim, self.z_dim)
        bias = Dense(self.z_dim, name="hyper_b")(x)
        s = jnp.broadcast_to(state[..., None, :], (*x.shape[:-1], state.shape[-1]))
        u = nn.elu(jnp.einsum("...s,...sz->...z", s, weights) + bias)
        return DistributionGenerator(self.z_dim, self.min_variance, name="generator")(u)


class UnifiedGlobalInfo(nn.Module):
    """GIU (the ablation): u = ELU(MLP(s)), identical for every agent; the same distribution generator."""

    n_agents: int
    z_dim: int
    hidden: int = 64
    min_variance: float = 0.01

    @nn.compact
    def __call__(self, x, state):
        u = nn.elu(Dense(self.z_dim, name="encode_out")(nn.relu(Dense(self.hidden, name="encode")(state))))
        u = jnp.broadcast_to(u[..., None, :], (*x.shape[:-1], self.z_dim))
        return DistributionGenerator(self.z_dim, self.min_variance, name="generator")(u)


class Student(nn.Module):
    """z'_i = MLP(x_i -> H -> z_dim -> z_dim) with ReLU then LeakyReLU: the teacher's mu from local inputs."""

    z_dim: int
    hidden: int = 64

    @nn.compact
    def __call__(self, x):
        hidden = nn.relu(Dense(self.hidden, name="fc1")(x))
        return Dense(self.z_dim, name="fc3")(nn.leaky_relu(Dense(self.z_dim, name="fc2")(hidden)))


def sample_z(rng: jax.Array | None, mu: jax.Array, var: jax.Array) -> jax.Array:
    """Reparameterized z ~ N(mu, var); the mean when `rng` is None."""
    if rng is None:
        return mu
    return mu + jnp.sqrt(var) * jax.random.normal(rng, mu.shape)
