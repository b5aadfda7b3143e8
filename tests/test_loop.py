"""The compiled chunk (`ctde.training.loop`): vmapped seeds advance in lockstep, and neither the training loop
nor the learn-or-wait branch turns into a choice between whole states (which made real runs 2.5-3x slower)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import build_config
from ctde.training.loop import build_program
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


def _program(*overrides):
    config = resolve(build_config(["env=toy:hallway", "algo=qmix", "seeds=3", "out=/tmp/unused",
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
    # The updates stay behind a two-way branch (learn or wait), not run and then discarded.
    updates = program.config.algo.updates_per_rollout
    learn_branches = [e for e in _equations(jaxpr) if e.primitive.name == "cond" and len(e.params["branches"]) == 2
                      and any(i.primitive.name == "scan" and i.params["length"] == updates
                              for branch in e.params["branches"] for i in branch.jaxpr.eqns)]
    assert learn_branches


def test_seeds_advance_in_lockstep_to_the_mark():
    program, chunk, state = _program()
    state, rows = chunk(state, jnp.int32(0), jnp.int32(LEN))
    steps = np.asarray(state.learner.env_steps)
    assert (steps >= 200).all()
    # Every seed made the same iterations, and hallway's episodes differ in length, so the seeds that got there
    # first went on with the others (per seed, they would have stopped with different update counts).
    assert len(set(np.asarray(state.learner.updates).tolist())) == 1
    assert len(set(steps.tolist())) > 1


@pytest.mark.parametrize("starts", [0, 300])
def test_no_seed_learns_before_learning_starts(starts):
    program, chunk, state = _program(f"algo.learning_starts={starts}")
    state, _ = chunk(state, jnp.int32(0), jnp.int32(LEN))
    updates = np.asarray(state.learner.updates)
    assert (updates > 0).all() if starts == 0 else (updates == 0).all()
