"""A privileged model and a decentralized student: the two-network layout IGM-DA and CTDS share.

    privileged model ("expert" in IGM-DA, "teacher" in CTDS): an RNN agent on the unlimited-sight
        observation, x = full_obs_i ⊕ onehot(last_action_i) ⊕ onehot(i); trained by the backbone's TD loss.
    student: the same architecture on the agent's own input, x = obs_i ⊕ onehot(last_action_i) [⊕ avail_i]
        ⊕ onehot(i); trained by the paradigm's auxiliary loss to follow the privileged model; exported.

The two networks have separate parameters (`params["<privileged>"]`, `params["student"]`) and separate
recurrent states. The paradigms (`igm_da.py`, `ctds.py`) add the roles, the student's loss and the config.
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ctde.envs.base import FULL_OBS
from ctde.nets.actions import masked_argmax
from ctde.nets.rnn import RNNAgent, agent_inputs, value_outputs, value_scores
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput

STUDENT = "student"


class PrivilegedAndStudent(Paradigm):
    """Both paradigms train the privileged model by TD through the mixer, so they need a value-decomposition
    backbone (`backbone_families`; each says why in `reasons`)."""

    required_views = (FULL_OBS,)
    backbone_families = ("value_decomposition",)
    privileged: ClassVar[str]  # the privileged model's name
    student_reads_avail: ClassVar[bool]  # IGM-DA's student reads its own avail mask; CTDS's does not
    export_model = STUDENT

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.hidden_dim = config.algo.hidden_dim
        # One architecture, two parameter sets; under DMIX the privileged model (the one the backbone learns) has
        # N quantiles per action (`value_scores`), the student one value per action as always.
        self.quantiles = config.algo.value_quantiles
        self.networks = {self.privileged: RNNAgent(self.hidden_dim, value_outputs(spec.n_actions, self.quantiles)),
                         STUDENT: RNNAgent(self.hidden_dim, spec.n_actions)}
        own = spec.n_actions + spec.n_agents  # last action and agent id
        self.input_dims = {self.privileged: spec.available_views.get(FULL_OBS, spec.obs_dim) + own,
                           STUDENT: spec.obs_dim + own + (spec.n_actions if self.student_reads_avail else 0)}

    def init(self, key):
        n = self.spec.n_agents
        carry = jnp.zeros((n, self.hidden_dim))
        resets = jnp.zeros((1, n), bool)
        return {name: self.networks[name].init(k, carry, jnp.zeros((1, n, self.input_dims[name])), resets)
                for name, k in zip((self.privileged, STUDENT), jax.random.split(key))}

    def initial_carry(self, batch_shape):
        zeros = jnp.zeros((*batch_shape, self.spec.n_agents, self.hidden_dim))
        return {self.privileged: zeros, STUDENT: zeros}

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        n_actions = self.spec.n_actions
        extra = (inputs.avail,) if self.student_reads_avail else ()
        xs = {self.privileged: agent_inputs(inputs.views[FULL_OBS], inputs.last_action, n_actions),
              STUDENT: agent_inputs(inputs.obs, inputs.last_action, n_actions, extra=extra)}
        resets = jnp.broadcast_to(inputs.reset[..., None], inputs.last_action.shape)
        new_carry, scores = {}, {}
        for name, x in xs.items():
            new_carry[name], scores[name] = self.networks[name].apply(params[name], carry[name], x, resets)
        scores[self.privileged], extras = value_scores(scores[self.privileged], n_actions, self.quantiles)
        return new_carry, ParadigmOutput(scores=scores, extras=extras)

    def export(self, params):
        # The order of `agent_inputs`: obs, last action, extras (avail), agent id.
        inputs = ["obs", "last_action", *(["avail"] if self.student_reads_avail else []), "agent_id"]
        return {"network": "rnn_agent", "hidden_dim": self.hidden_dim, "inputs": inputs}, params[STUDENT]


def masked_agent_mean(per_agent: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of per_agent [T, B, n] over the (step, agent) pairs where mask [T, B, n] is True (0 if none)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(per_agent * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def agreement(student: jax.Array, privileged: jax.Array, avail: jax.Array, mask: jax.Array) -> jax.Array:
    """Fraction of counted (step, agent) pairs on which the student's greedy action is the privileged model's."""
    same = (masked_argmax(student, avail) == masked_argmax(privileged, avail)).astype(jnp.float32)  # [T, B, n]
    return masked_agent_mean(same, mask)
