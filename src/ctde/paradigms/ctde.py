"""Plain CTDE: one recurrent agent network on each agent's own input, shared across agents.

Centralized information enters only through the backbone (the mixer's state input, or MAPPO's critic), so
the trained agent network is already the decentralized policy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ctde.nets.rnn import RNNAgent, agent_inputs
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput


class CTDE(Paradigm):
    name = "ctde"
    collect_model = td_model = select_model = export_model = "agent"
    eval_models = ("agent",)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.hidden_dim = config.algo.hidden_dim
        self.network = RNNAgent(self.hidden_dim, spec.n_actions)
        self.input_dim = spec.obs_dim + spec.n_actions + spec.n_agents

    def init(self, key):
        n = self.spec.n_agents
        x = jnp.zeros((1, n, self.input_dim))
        return {"agent": self.network.init(key, self.initial_carry(()), x, jnp.zeros((1, n), bool))}

    def initial_carry(self, batch_shape):
        return jnp.zeros((*batch_shape, self.spec.n_agents, self.hidden_dim))

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        x = agent_inputs(inputs.obs, inputs.last_action, self.spec.n_actions)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        carry, q = self.network.apply(params["agent"], carry, x, resets)
        return carry, ParadigmOutput(scores={"agent": q})

    def export(self, params):
        return {"network": "rnn_agent", "hidden_dim": self.hidden_dim,
                "inputs": ["obs", "last_action", "agent_id"]}, params["agent"]
