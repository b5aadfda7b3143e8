"""CTEDD's networks: the global policies of stage 1 and the communicating local policies of stage 2.

Global policy (training only): one shared global network on the full state s, then a small head of each
agent's own on the shared features. The heads are separate parameters per agent (stacked on a leading agent
axis), as in the paper's Figure 1: the shared part carries what all agents know, the heads choose actions.

Local policy (execution): two parts per agent, parameters shared across agents (the agent id is an input).
Part 1, the message generator, turns the agent's own input x_i = obs_i ⊕ onehot(i) into k bits m_i. Part 2, the
actor, chooses from x_i and the messages of all agents [m_1, ..., m_n] (its own included). A message is a
function of its sender's own input only; `ctde.audit` checks both halves of that claim.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ctde.nets.precision import Dense


class GlobalPolicy(nn.Module):
    """Logits of every agent's global policy pi~_i(s, .). state [*B, s] -> logits [*B, n, |A|].

    `features` and `heads` are exposed separately so that a loss can reach the heads alone (CTEDD's entropy
    term trains the local heads, not the shared network)."""

    n_agents: int
    n_actions: int
    hidden_dim: int = 128
    head_dim: int = 32

    def setup(self):
        self.trunk_in = Dense(self.hidden_dim, name="trunk_in")
        self.trunk_out = Dense(self.hidden_dim, name="trunk_out")
        n, h, k, a = self.n_agents, self.hidden_dim, self.head_dim, self.n_actions

        def per_agent(shape):  # weights of every agent's own head, stacked on the agent axis: [n, in, out]
            init = nn.initializers.lecun_normal()
            return lambda key: jax.vmap(lambda agent_key: init(agent_key, shape))(jax.random.split(key, n))

        self.head_w1 = self.param("head_w1", per_agent((h, k)))
        self.head_b1 = self.param("head_b1", nn.initializers.zeros, (n, k))
        self.head_w2 = self.param("head_w2", per_agent((k, a)))
        self.head_b2 = self.param("head_b2", nn.initializers.zeros, (n, a))

    def features(self, state: jax.Array) -> jax.Array:
        """The shared global network's output: [*B, s] -> [*B, H]."""
        return nn.relu(self.trunk_out(nn.relu(self.trunk_in(state))))

    def heads(self, features: jax.Array) -> jax.Array:
        """Every agent's own head on the shared features: [*B, H] -> logits [*B, n, |A|]."""
        hidden = nn.relu(jnp.einsum("...h,nhk->...nk", features, self.head_w1) + self.head_b1)
        return jnp.einsum("...nk,nka->...na", hidden, self.head_w2) + self.head_b2

    def __call__(self, state: jax.Array) -> jax.Array:
        return self.heads(self.features(state))


@jax.custom_vjp
def _hard_bits(logits: jax.Array) -> jax.Array:
    return (logits > 0).astype(logits.dtype)


def _hard_bits_fwd(logits):
    return _hard_bits(logits), logits


def _hard_bits_bwd(logits, g):
    # Straight-through: the gradient of sigmoid(logits), the soft bit the hard one stands for.
    s = jax.nn.sigmoid(logits)
    return (g * s * (1.0 - s),)


_hard_bits.defvjp(_hard_bits_fwd, _hard_bits_bwd)


def binary_message(logits: jax.Array, key: jax.Array | None = None) -> jax.Array:
    """k-bit messages from message logits [..., k]: exactly 0 or 1 forward, a sigmoid gradient backward.

    With `key` (the `gumbel` estimator while training) logistic noise, the two-class Gumbel difference, is added
    before the threshold, so a bit is 1 with probability sigmoid(logit)."""
    if key is not None:
        u = jax.random.uniform(key, logits.shape, minval=1e-6, maxval=1.0 - 1e-6)
        logits = logits + jnp.log(u) - jnp.log1p(-u)
    return _hard_bits(logits)


class MessageGenerator(nn.Module):
    """Part 1: own input x_i [..., in] -> message logits [..., k] (binarized by `binary_message`)."""

    bits: int
    hidden_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return Dense(self.bits, name="out")(nn.relu(Dense(self.hidden_dim, name="fc")(x)))


class MessageActor(nn.Module):
    """Part 2: own input x_i [..., in] and all agents' messages [..., n * k] -> action logits [..., |A|]."""

    n_actions: int
    hidden_dim: int = 64

    @nn.compact
    def __call__(self, x: jax.Array, messages: jax.Array) -> jax.Array:
        h = nn.relu(Dense(self.hidden_dim, name="fc1")(jnp.concatenate([x, messages], axis=-1)))
        h = nn.relu(Dense(self.hidden_dim, name="fc2")(h))
        return Dense(self.n_actions, name="out")(h)


def local_input(obs: jax.Array) -> jax.Array:
    """x_i = obs_i ⊕ onehot(i). obs [..., n, o] -> [..., n, o + n]."""
    n = obs.shape[-2]
    ids = jnp.broadcast_to(jnp.eye(n, dtype=obs.dtype), (*obs.shape[:-2], n, n))
    return jnp.concatenate([obs, ids], axis=-1)


def local_policy_logits(generator: MessageGenerator, actor: MessageActor, params: dict, x: jax.Array,
                        key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """The local policies of all agents at once. x [..., n, in] (from `local_input`) ->
    (logits [..., n, |A|], messages [..., n, k]). Every agent receives every agent's k bits."""
    bits = binary_message(generator.apply(params["messages"], x), key)
    n, k = bits.shape[-2:]
    received = jnp.broadcast_to(bits.reshape(*bits.shape[:-2], 1, n * k), (*bits.shape[:-1], n * k))
    return actor.apply(params["actor"], x, received), bits
