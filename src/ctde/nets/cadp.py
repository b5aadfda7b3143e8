"""CADP's agent network (Zhou et al., IJCAI 2025): agents exchange advice by attention during training; the
decentralized model is the same network with every agent attending to itself alone.

Per agent i with input x_i (obs ⊕ last action ⊕ id), shared across agents, as in the authors' released code:

    e_i   = ReLU(Linear(x_i -> H))                      H = hidden_dim (64)
    h_i   = GRU(e_i, h_i')                              the GRU never sees the advice
    q_i, k_i, v_i = bias-free Linear maps of x_i        heads × head_dim (4 × 32), the raw input, no embedding
    c_ij  = softmax_j(q_i · k_j / sqrt(head_dim))       per head, over all n agents (dead ones included)
    z_i   = Σ_j c_ij v_j                                heads concatenated
    adv_i = ReLU(Linear(z_i -> H))
    Q_i   = Linear(H -> |A|)(ReLU(Linear(H -> H)(ReLU(Linear(2H -> H)([h_i, adv_i])))))

The centralized model C uses z_i as above. The decentralized model D replaces z_i by the agent's own v_i,
which is exactly the network with c = identity. One forward pass yields both; since the GRU does not see
the advice, C and D share hidden-state trajectories and D needs no query or key weights at all.

`residual=True` is the paper's Eq. 5 instead: the advice enters the GRU next to the agent's own embedding,
h_i = GRU([e_i, adv_i], h_i'), and Q_i = Linear(H -> |A|)(ReLU(Linear(H -> H)(ReLU(Linear(H -> H)(h_i))))).
C and D then have separate hidden states, carried as the pair (h_C, h_D).

Sequences are time-major as in `ctde.nets.rnn`: xs [T, *B, n, in], resets [T, *B, n].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ctde.nets.precision import Dense
from ctde.nets.rnn import ResettableGRU


class CADPAgent(nn.Module):
    hidden_dim: int
    n_actions: int
    heads: int = 4
    head_dim: int = 32
    residual: bool = False

    def setup(self):
        width = self.heads * self.head_dim
        self.fc1 = Dense(self.hidden_dim)
        self.gru = ResettableGRU(self.hidden_dim)
        self.query = Dense(width, use_bias=False)
        self.key = Dense(width, use_bias=False)
        self.value = Dense(width, use_bias=False)
        self.advice = Dense(self.hidden_dim)
        self.head_in = Dense(self.hidden_dim)
        self.head_hidden = Dense(self.hidden_dim)
        self.head_out = Dense(self.n_actions)

    def _split_heads(self, projected: jax.Array) -> jax.Array:
        return projected.reshape(*projected.shape[:-1], self.heads, self.head_dim)  # [..., n, heads, d]

    def _advise(self, z: jax.Array) -> jax.Array:
        return nn.relu(self.advice(z))

    def _recur_and_score(self, h0: jax.Array, embedded: jax.Array, advice: jax.Array, resets: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
        """One model's GRU and head; returns (h_T, scores). In the released (non-residual) variant the GRU
        input does not depend on the advice, so callers share one GRU pass between C and D (see __call__)."""
        if self.residual:
            h_last, hs = self.gru(h0, jnp.concatenate([embedded, advice], axis=-1), resets)
            return h_last, self._head(hs)
        h_last, hs = self.gru(h0, embedded, resets)
        return h_last, self._head(jnp.concatenate([hs, advice], axis=-1))

    def _head(self, features: jax.Array) -> jax.Array:
        hidden = nn.relu(self.head_hidden(nn.relu(self.head_in(features))))
        return self.head_out(hidden)

    def attention(self, xs: jax.Array) -> jax.Array:
        """Confidences c [..., heads, n, n] (row i: agent i's softmax over all agents j)."""
        q, k = self._split_heads(self.query(xs)), self._split_heads(self.key(xs))
        logits = jnp.einsum("...ihd,...jhd->...hij", q, k) / jnp.sqrt(jnp.float32(self.head_dim))
        return jax.nn.softmax(logits, axis=-1)

    def __call__(self, h0, xs: jax.Array, resets: jax.Array):
        """Both models at once: (carry, {"centralized": [T, *B, n, |A|], "decentralized": ...},
        attention [T, *B, heads, n, n]). carry: h [*B, n, H], or the pair (h_C, h_D) when residual."""
        c = self.attention(xs)
        v = self._split_heads(self.value(xs))
        z_centralized = jnp.einsum("...hij,...jhd->...ihd", c, v)
        flat = lambda z: z.reshape(*z.shape[:-2], -1)  # noqa: E731 - concatenate the heads
        advice_c, advice_d = self._advise(flat(z_centralized)), self._advise(flat(v))
        embedded = nn.relu(self.fc1(xs))
        if self.residual:
            h_c, q_c = self._recur_and_score(h0[0], embedded, advice_c, resets)
            h_d, q_d = self._recur_and_score(h0[1], embedded, advice_d, resets)
            carry = (h_c, h_d)
        else:
            carry, hs = self.gru(h0, embedded, resets)
            q_c = self._head(jnp.concatenate([hs, advice_c], axis=-1))
            q_d = self._head(jnp.concatenate([hs, advice_d], axis=-1))
        return carry, {"centralized": q_c, "decentralized": q_d}, c

    def decentralized(self, h0: jax.Array, xs: jax.Array, resets: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The D model alone: (h_T, scores). Reads neither the query nor the key weights, nor any other agent:
        every operation here is per agent. This is what the exported policy runs."""
        v = self.value(xs)
        return self._recur_and_score(h0, nn.relu(self.fc1(xs)), self._advise(v), resets)


def agent_pruning_terms(attention: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Each agent's share of the pruning loss: the mean over heads of −log(c_ii + eps), divided by n.

    attention [..., heads, n, n] -> [..., n]. Their mean over agents is `pruning_loss`; keeping them per agent
    lets a backbone mask out dead agents (MAPPO) without changing the value when every agent counts.
    """
    n = attention.shape[-1]
    diagonal = jnp.diagonal(attention, axis1=-2, axis2=-1)  # [..., heads, n]
    return jnp.mean(-jnp.log(diagonal + eps), axis=-2) / n


def pruning_loss(attention: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Per step: the mean over heads and over the n × n entries of −e_ij · log(c_ij + eps), e = identity.

    attention [..., heads, n, n] -> [...]. Only diagonal entries contribute, so this is
    (1 / (heads · n²)) Σ_heads Σ_i −log(c_ii + eps): the paper's Σ_i KL(e_i ‖ c_i) divided by n², averaged over
    heads (the released code's normalization). It is 0 at c = I.
    """
    return jnp.mean(agent_pruning_terms(attention, eps), axis=-1)


def self_confidence(attention: jax.Array) -> jax.Array:
    """Each agent's c_ii, averaged over heads. attention [..., heads, n, n] -> [..., n]."""
    return jnp.mean(jnp.diagonal(attention, axis1=-2, axis2=-1), axis=-2)
