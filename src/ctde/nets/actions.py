"""Choosing actions from per-agent scores: greedy, epsilon-greedy, sampled, continuous. Every masked argmax and
masked softmax in ctde goes through this module, so unavailable actions are excluded one way everywhere.

An `ActionSelector` is (key, scores [..., |A|], avail bool [..., |A|]) -> actions int [...] (continuous actions:
float [..., |A|]).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

# pymarl's mask for a value of an unavailable action before a max or an argmax.
UNAVAILABLE_VALUE = -1e7
# The logit of an unavailable action before a softmax (its probability is then exactly 0 in float32).
MASKED_LOGIT = -1e10

ActionSelector = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (key, scores, avail) -> actions


def masked_argmax(scores: jax.Array, avail: jax.Array) -> jax.Array:
    """Greedy action among available ones. scores [..., |A|], avail bool [..., |A|] -> int [...]."""
    return jnp.argmax(jnp.where(avail, scores, UNAVAILABLE_VALUE), axis=-1)


def random_available(key: jax.Array, avail: jax.Array) -> jax.Array:
    """Uniformly random available action. avail bool [..., |A|] -> int [...]."""
    return jax.random.categorical(key, jnp.where(avail, 0.0, -jnp.inf), axis=-1)


def epsilon_greedy(epsilon: jax.Array) -> ActionSelector:
    def select(key, scores, avail):
        explore_key, action_key = jax.random.split(key)
        explore = jax.random.uniform(explore_key, scores.shape[:-1]) < epsilon
        return jnp.where(explore, random_available(action_key, avail), masked_argmax(scores, avail))

    return select


def greedy(key, scores, avail):
    return masked_argmax(scores, avail)


def sample_softmax(key: jax.Array, scores: jax.Array, avail: jax.Array) -> jax.Array:
    """A sample of the masked softmax policy of `scores` (a policy's logits): what a hard Gumbel-softmax returns."""
    return jax.random.categorical(key, masked_logits(scores, avail), axis=-1)


def tanh_with_noise(noise_std: float) -> ActionSelector:
    """Continuous exploration: tanh(scores) plus Gaussian noise of `noise_std`, clipped to [-1, 1]."""

    def select(key, scores, avail):
        noise = noise_std * jax.random.normal(key, scores.shape, scores.dtype)
        return jnp.clip(jnp.tanh(scores) + noise, -1.0, 1.0)

    return select


def deterministic_continuous(key, scores, avail):
    """The greedy choice of a continuous deterministic actor: tanh of its scores, float [..., |A|] in [-1, 1]."""
    return jnp.tanh(scores)


def greedy_for(spec: Any) -> ActionSelector:
    """The greedy action selector of an environment's action space (EnvSpec)."""
    return deterministic_continuous if spec.continuous_actions else greedy


def masked_max(values: jax.Array, avail: jax.Array) -> jax.Array:
    """Max over available actions. values [..., |A|], avail bool [..., |A|] -> [...]."""
    return jnp.max(jnp.where(avail, values, UNAVAILABLE_VALUE), axis=-1)


def masked_logits(logits: jax.Array, avail: jax.Array) -> jax.Array:
    """Logits with unavailable actions pushed to `MASKED_LOGIT`. [..., |A|] -> [..., |A|]."""
    return jnp.where(avail, logits, MASKED_LOGIT)
