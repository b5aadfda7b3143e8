"""The compiled chunk (`ctde.training.program`, `ctde.algos.seeds`): vmapped seeds each stop at their own
evaluation mark, yet neither the training loop nor the learn-or-wait branch turns into a choice between whole
states (which made real runs 2.5-3.3x slower than the iteration alone)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import build_config
from ctde.algos.replay import store_episodes
from ctde.training.runner import build_program
from ctde.training.resolve import resolve
from ctde.training.runner import seed_keys

LEN = 1_000_000


def _equations(jaxpr):
    """Every equation of a jaxpr and of the jaxprs inside it (loop bodies, branches, ...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _program(*overrides, seeds=3):
    config = resolve(build_config(["env=toy:hallway", "algo=qmix", f"seeds={seeds}", "out=/tmp/unused",
                                   "eval.interval=200", "log.chunk_evals=1", *overrides]))
    program = build_program(config)
    return program, program.compiled_chunk(), program.init(seed_keys(config))


def test_the_chunk_never_selects_between_whole_replay_buffers():
    program, chunk, state = _program()
    jaxpr = jax.make_jaxpr(chunk)(state, jnp.int32(0), jnp.int32(LEN)).jaxpr
    replay_shapes = {tuple(x.shape) for x in jax.tree.leaves(state.learner.replay) if x.ndim >= 3}
    selects = [e for e in _equations(jaxpr) if e.primitive.name == "select_n"]
    assert selects  # (the walk reaches inside the loops)
    assert not [e for e in selects if tuple(e.outvars[0].aval.shape) in replay_shapes]
    # The updates stay behind a real branch (skip / some seeds / all seeds), not run and then discarded: under
    # vmap a per-seed predicate would have turned the cond into a select.
    updates = program.config.algo.updates_per_rollout
    learn_branches = [e for e in _equations(jaxpr) if e.primitive.name == "cond" and len(e.params["branches"]) == 3
                      and any(i.primitive.name == "scan" and i.params["length"] == updates
                              for branch in e.params["branches"] for i in branch.jaxpr.eqns)]
    assert learn_branches


@pytest.mark.slow  # 47 s in make test on 2026-12-07 (cold, two workers)
def test_each_vmapped_seed_stops_at_its_own_mark_as_if_it_ran_alone():
    """Three seeds in one program end the block where each would alone: hallway's episodes differ in length,
    so the seeds cross the mark at different iterations, and learning_starts=120 makes them start learning at
    different iterations too: both take the branch where only some seeds learn."""
    overrides = ("algo.learning_starts=120",)
    program, chunk, state = _program(*overrides)
    singles = [jax.tree.map(lambda x: x[seed:seed + 1], state) for seed in range(3)]  # (the chunk donates state)
    together, _ = chunk(state, jnp.int32(0), jnp.int32(LEN))
    steps = np.asarray(together.learner.env_steps)
    assert (steps >= 200).all()
    assert len(set(steps.tolist())) > 1

    _, alone_chunk, _ = _program(*overrides, seeds=1)
    for seed, one in enumerate(singles):
        alone, _ = alone_chunk(one, jnp.int32(0), jnp.int32(LEN))
        assert int(together.learner.updates[seed]) > 0
        for name in ("env_steps", "episodes", "updates"):
            assert int(getattr(alone.learner, name)[0]) == int(getattr(together.learner, name)[seed]), (seed, name)
        np.testing.assert_array_equal(alone.learner.rng[0], together.learner.rng[seed])
        assert int(alone.learner.replay.current_index[0]) == int(together.learner.replay.current_index[seed])
        for a, b in zip(jax.tree.leaves(alone.learner.params), jax.tree.leaves(together.learner.params)):
            np.testing.assert_allclose(a[0], b[seed], rtol=1e-4, atol=1e-6)


def test_an_inactive_store_leaves_the_replay_buffer_as_it_was():
    program, _, state = _program(seeds=1)
    backbone = program.backbone
    replay = jax.tree.map(lambda x: x[0], state.learner.replay)
    trajectory = jax.tree.map(lambda stored: jnp.ones_like(stored[0, :backbone.rollout.num_envs]), replay.experience)
    kept = jax.jit(functools.partial(store_episodes, backbone.replay))(replay, trajectory, jnp.bool_(False))
    for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(replay)):
        np.testing.assert_array_equal(a, b)
    added = jax.jit(functools.partial(store_episodes, backbone.replay))(replay, trajectory, jnp.bool_(True))
    plain = jax.jit(backbone.replay.add)(replay, trajectory)
    for a, b in zip(jax.tree.leaves(added), jax.tree.leaves(plain)):
        np.testing.assert_array_equal(a, b)
    assert int(added.current_index) != int(replay.current_index)


def test_no_seed_learns_before_learning_starts():
    program, chunk, state = _program("algo.learning_starts=300")
    state, _ = chunk(state, jnp.int32(0), jnp.int32(LEN))
    assert (np.asarray(state.learner.updates) == 0).all()


def test_one_seed_runs_without_vmap_and_matches_the_vmapped_chunk():
    """A single seed's chunk drops its seed axis instead of vmapping over it (a unit axis inside every
    activation cost 8% at setting (b)), and computes what the vmapped chunk computes."""
    program, chunk, state = _program("algo.learning_starts=120", seeds=1)
    jaxpr = jax.make_jaxpr(chunk)(state, jnp.int32(0), jnp.int32(LEN)).jaxpr
    # The loops' random keys show a seed axis if one is left: uint32[1, 2] (or [k, 1, 2]) instead of uint32[2].
    loop_keys = {var.aval.shape for eqn in _equations(jaxpr) if eqn.primitive.name in ("while", "scan")
                 for var in eqn.invars if var.aval.dtype == jnp.uint32 and var.aval.ndim}
    assert (2,) in loop_keys and not any(shape[-2:-1] == (1,) for shape in loop_keys), loop_keys
    copy = jax.tree.map(jnp.copy, state)  # (the chunk donates its state)
    alone, metrics = chunk(state, jnp.int32(0), jnp.int32(LEN))
    assert metrics["env_steps"].shape == (1, 1)  # [seeds, chunk_evals], as with several seeds

    program.backbone.seed_axis = "seeds"
    vmapped = jax.jit(jax.vmap(program.chunk, in_axes=(0, None, None), axis_name="seeds"))
    together, _ = vmapped(copy, jnp.int32(0), jnp.int32(LEN))
    assert int(alone.learner.updates[0]) > 0
    for name in ("env_steps", "episodes", "updates"):
        assert int(getattr(alone.learner, name)[0]) == int(getattr(together.learner, name)[0]), name
    np.testing.assert_array_equal(alone.learner.rng, together.learner.rng)
    for a, b in zip(jax.tree.leaves(alone.learner.params), jax.tree.leaves(together.learner.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
