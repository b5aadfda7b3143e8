"""Plain CTDE: one recurrent agent network on each agent's own input, shared across agents.

Centralized information enters only through the backbone (the mixer's state input, MAPPO's or MADDPG's
critic), so the trained agent network is already the decentralized policy. `algo.share_parameters=false` gives
every agent a network of its own (parameters stacked on a leading agent axis) instead of one shared network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ctde.nets.rnn import RNNAgent, agent_inputs, value_outputs, value_scores
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput, register_paradigm


@register_paradigm
class CTDE(Paradigm):
    name = "ctde"
    summary = "plain CTDE"
    per_agent_networks = True
    collect_model = learned_model = select_model = export_model = "agent"
    eval_models = ("agent",)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.hidden_dim = config.algo.hidden_dim
        self.shared = config.algo.share_parameters
        self.quantiles = config.algo.value_quantiles  # DMIX: N quantiles per action (`value_scores`)
        self.network = RNNAgent(self.hidden_dim, value_outputs(spec.n_actions, self.quantiles))
        self.input_dim = spec.obs_dim + spec.n_actions + spec.n_agents

    def init(self, key):
        n = self.spec.n_agents
        if self.shared:
            x = jnp.zeros((1, n, self.input_dim))
            return {"agent": self.network.init(key, self.initial_carry(()), x, jnp.zeros((1, n), bool))}
        x = jnp.zeros((1, self.input_dim))
        init_one = lambda k: self.network.init(k, jnp.zeros((self.hidden_dim,)), x, jnp.zeros((1,), bool))  # noqa: E731
        return {"agent": jax.vmap(init_one)(jax.random.split(key, n))}

    def initial_carry(self, batch_shape):
        return jnp.zeros((*batch_shape, self.spec.n_agents, self.hidden_dim))

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        x = agent_inputs(inputs.obs, inputs.last_action, self.spec.n_actions)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        if self.shared:
            carry, q = self.network.apply(params["agent"], carry, x, resets)
        else:  # agent i's network on agent i's slice of every array (the agent axis: -2 of x, -1 of resets)
            per_agent = jax.vmap(self.network.apply, in_axes=(0, -2, -2, -1), out_axes=(-2, -2))
            carry, q = per_agent(params["agent"], carry, x, resets)
        q, extras = value_scores(q, self.spec.n_actions, self.quantiles)
        return carry, ParadigmOutput(scores={"agent": q}, extras=extras)

    def export(self, params):
        spec = {"network": "rnn_agent" if self.shared else "rnn_agent_per_agent", "hidden_dim": self.hidden_dim,
                "inputs": ["obs", "last_action", "agent_id"]}
        if self.quantiles:  # the exported policy acts on each action's mean quantile
            spec["quantiles"] = self.quantiles
        return spec, params["agent"]
