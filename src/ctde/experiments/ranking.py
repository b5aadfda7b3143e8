"""Learning-to-Rank evaluation: the mean NDCG@k of a trained model over every query of a held-out split.

Training-time evaluation samples queries (`eval.episodes` draws of the evaluation split); this goes through each
query exactly once, greedily, so methods on the same split get the same, exact figure.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ctde.paradigms.base import AgentInputs
from ctde.algos.rollout import no_action
from ctde.nets.actions import masked_argmax


def query_ndcg(program: Any, agent_params: Any, model: str, split: str = "test") -> np.ndarray:
    """NDCG@k of `model`'s greedy scores on every query of `split`, float [Q_split], for one seed's parameters.

    `program` is a `ctde.training.program.Program` on an `ltr:` environment; padded documents are masked out of the
    ranking and of the actions as in training."""
    env, paradigm = program.env, program.paradigm
    queries = jnp.asarray(env.evaluation_queries(split))

    @jax.jit
    def scores(params, queries):
        states, ts = jax.vmap(env.reset_to)(queries)
        batch = (queries.shape[0],)
        inputs = AgentInputs(obs=ts.obs[None], last_action=no_action(env.spec, batch)[None], avail=ts.avail[None],
                             state=ts.state[None], reset=jnp.ones((1, *batch), bool))
        _, output = paradigm.apply(params, paradigm.initial_carry(batch), inputs)
        actions = masked_argmax(output.scores[model][0], ts.avail)
        return jax.vmap(env.reward)(states, actions)

    return np.asarray(scores(agent_params, queries))


def mean_ndcg(program: Any, agent_params: Any, model: str, split: str = "test") -> float:
    """The mean of `query_ndcg` (one seed's parameters)."""
    return float(query_ndcg(program, agent_params, model, split).mean())
