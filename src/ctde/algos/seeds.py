"""How a backbone's iteration stays cheap when the training program vmaps it over seeds.

Under `jax.vmap` a condition that differs between seeds cannot branch: `lax.cond` runs both sides and selects,
and a `while_loop` chooses, every iteration, between each seed's old and new carry. With a replay buffer
in the state, that choice copies the whole buffer every iteration (docs/backbones.md, "Seeds side by side, each
to its own mark", measures the cost).

So the training program keeps looping while any seed is short of its evaluation mark, and passes each seed an
`active` flag; a backbone then leaves an inactive seed's state as it was without choosing between whole
states (`where_active` on small leaves, a masked write into the replay buffer), and branches only on
conditions the seeds agree on (`agreed_branch`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def where_active(active: jax.Array | None, new: Any, old: Any) -> Any:
    """`new` where `active` (bool []) holds, `old` elsewhere, leaf by leaf; `new` when `active` is None.
    Meant for small leaves: over a large one it is the copy this module exists to avoid."""
    if active is None:
        return new
    return jax.tree.map(lambda n, o: jnp.where(active, n, o), new, old)


def agreed_branch(flag: jax.Array, seed_axis: str | None) -> jax.Array:
    """Index of the branch to take for a per-seed bool [] `flag`: 0 when it holds for no seed, 1 for some
    (the branch must then keep only the flagged seeds' results), 2 for every seed. The index is the same for
    all seeds, so `lax.switch` on it stays a real branch under vmap. Without a seed axis: 0 or 2."""
    if seed_axis is None:
        return jnp.where(flag, 2, 0)
    every = jax.lax.pmin(flag.astype(jnp.int32), seed_axis) > 0
    return jnp.where(every, 2, jnp.where(any_seed(flag, seed_axis), 1, 0))


def any_seed(flag: jax.Array, seed_axis: str | None) -> jax.Array:
    """Whether the per-seed bool [] `flag` holds for at least one seed (the flag itself without a seed axis)."""
    if seed_axis is None:
        return flag
    return jax.lax.pmax(flag.astype(jnp.int32), seed_axis) > 0


def learn_when_ready(ready: jax.Array, seed_axis: str | None, learn: Any, learner: Any) -> tuple[Any, Any, jax.Array]:
    """Run `learn(learner) -> (learner, summed metrics, updates int32 [])` for the seeds whose bool [] `ready`
    holds, as a real branch: none learn, every seed learns, or (seeds disagree) every seed learns and the
    unready ones' results are dropped, which costs the update but not a copy of the replay buffer."""

    def skip(learner):
        shapes = jax.eval_shape(learn, learner)[1]
        return learner, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), jnp.int32(0)

    def learn_where_ready(learner):
        return where_active(ready, learn(learner), skip(learner))

    return jax.lax.switch(agreed_branch(ready, seed_axis), [skip, learn_where_ready, learn], learner)
