"""CADP: Centralized Advising, Decentralized Pruning (Zhou et al., IJCAI 2025).

Training: each agent's network exchanges advice with its teammates by attention (`ctde.nets.cadp.CADPAgent`):
agent i mixes every agent's value vector v_j with confidences c_ij. This centralized model C collects the data,
is what the backbone learns (its Q-values go into the mixer) and picks the double-Q bootstrap action.

Pruning: from env step T = `cadp.prune_start` on, the loss gains σ(t)·L_p with σ(t) = α for t ≥ T and 0 before
(a step, as in paper and code), and L_p = Σ_i KL(e_i ‖ c_i) drives every agent's confidence onto itself
(c → I). Computed per step as the mean over heads and the n × n entries of −e·log(c + 1e-8), i.e.
Σ_i −log c_ii / n² averaged over heads, then a masked mean over the (step, agent) pairs the backbone counts
(padding masked everywhere, dead agents too on MAPPO).

Execution: the decentralized model D is the same network with z_i replaced by the agent's own v_i (c = I). It
reads only the agent's own input, so it is exported alone, without query or key weights. Both C and D are
greedily evaluated at every test interval (`test/centralized/*`, `test/decentralized/*`; the released code's
switch for this never fired, so only C was ever evaluated there).

Logged: `train/pruning_loss` (L_p, unweighted), `train/pruning_weight` (σ(t)), `train/self_confidence`
(mean c_ii over valid steps, heads and agents; 1/n when attention is uniform, 1 when pruned).

Nothing here depends on the backbone: the defaults of α (0.5 for QMIX and MAPPO, 1.0 otherwise) and T (700k
env steps on value decomposition, 3M on MAPPO), from the released configs, are the only per-backbone facts,
filled into the saved configuration by `resolve_options`.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ctde.config import option
from ctde.errors import require
from ctde.nets.cadp import CADPAgent, agent_pruning_terms, self_confidence
from ctde.nets.rnn import agent_inputs, value_outputs, value_scores
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput, register_paradigm
from ctde.policy import PolicyNetwork, recurrent_agent_step, recurrent_init, register_network

# Per-backbone defaults of the released configs (ALGORITHMS.md): α 0.5 for QMIX and MAPPO, 1.0 otherwise;
# T 700k env steps for value decomposition, 3M for MAPPO.
DEFAULT_ALPHA = {"qmix": 0.5, "mappo": 0.5, "ippo": 0.5}
DEFAULT_PRUNE_START = {"mappo": 3_000_000, "ippo": 3_000_000}
QUERY_KEY = ("query", "key")  # parameters D never reads; the exported policy does not contain them


def default_options(algo: str) -> tuple[float, int]:
    """(α, T) of the released configs for backbone `algo`."""
    return DEFAULT_ALPHA.get(algo, 1.0), DEFAULT_PRUNE_START.get(algo, 700_000)


def pruning_weight(env_steps: jax.Array, alpha: float, prune_start: int) -> jax.Array:
    """σ(t) = α once the learner has collected `prune_start` env steps, 0 before."""
    return jnp.where(env_steps >= prune_start, jnp.float32(alpha), jnp.float32(0.0))


@dataclass
class CADPOptions:
    """Options of paradigm=cadp (ALGORITHMS.md, CADP); refused with any other paradigm."""

    alpha: float | None = option(
        None, "pruning-loss weight once pruning starts; None = the backbone's default (0.5 qmix/mappo, 1.0 otherwise)")
    prune_start: int | None = option(
        None, "env steps T after which the pruning loss applies (a step: 0 before T); None = 700k for value "
        "decomposition, 3M for mappo/ippo")
    residual: bool = option(
        False, "the paper's Eq. 5: advice enters the GRU beside the own embedding; false = released code's head")
    heads: int = option(4, "attention heads of the advice exchange")
    head_dim: int = option(32, "width of each attention head (query, key and value)")


@register_paradigm
class CADP(Paradigm):
    name = "cadp"
    summary = "advice exchange, pruned to decentralized execution"
    options = CADPOptions
    backbone_families = ("value_decomposition", "policy_gradient")
    diagnostics = ("self_confidence",)
    collect_model = learned_model = select_model = "centralized"
    eval_models = ("centralized", "decentralized")
    export_model = "decentralized"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        options = config.cadp
        self.hidden_dim = config.algo.hidden_dim
        self.residual = options.residual
        self.quantiles = config.algo.value_quantiles  # DMIX: N quantiles per action, in C and D alike
        self.network = CADPAgent(self.hidden_dim, value_outputs(spec.n_actions, self.quantiles), options.heads,
                                 options.head_dim, options.residual)
        self.input_dim = spec.obs_dim + spec.n_actions + spec.n_agents
        alpha, prune_start = default_options(config.algo.name)  # for configurations not yet resolved
        self.alpha = alpha if options.alpha is None else options.alpha
        self.prune_start = prune_start if options.prune_start is None else options.prune_start

    @classmethod
    def resolve_options(cls, config) -> None:
        options = config.cadp
        require([(options.alpha is None or options.alpha >= 0, "cadp.alpha must be non-negative"),
                 (options.prune_start is None or options.prune_start >= 0, "cadp.prune_start must be non-negative"),
                 (options.heads >= 1 and options.head_dim >= 1, "cadp.heads and cadp.head_dim must be positive")])
        alpha, prune_start = default_options(config.algo.name)
        options.alpha = alpha if options.alpha is None else options.alpha
        options.prune_start = prune_start if options.prune_start is None else options.prune_start

    def init(self, key):
        n = self.spec.n_agents
        x = jnp.zeros((1, n, self.input_dim))
        return {"agent": self.network.init(key, self.initial_carry(()), x, jnp.zeros((1, n), bool))}

    def initial_carry(self, batch_shape):
        h = jnp.zeros((*batch_shape, self.spec.n_agents, self.hidden_dim))
        return (h, h) if self.residual else h

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        x = agent_inputs(inputs.obs, inputs.last_action, self.spec.n_actions)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        carry, outputs, attention = self.network.apply(params["agent"], carry, x, resets)
        scores, extras = {}, {"attention": attention}
        for model, out in outputs.items():
            scores[model], quantiles = value_scores(out, self.spec.n_actions, self.quantiles)
            if model == self.learned_model:
                extras.update(quantiles)
        return carry, ParadigmOutput(scores=scores, extras=extras)

    def auxiliary_loss(self, params, output, inputs, mask, env_steps):
        attention = output.extras["attention"]  # [T, *B, heads, n, n]
        mask = mask.astype(jnp.float32)  # [T, *B, n]
        count = jnp.maximum(mask.sum(), 1.0)
        # The mean of agent_pruning_terms over counted (step, agent) pairs: with every agent counted, the mean
        # over steps of Σ_i −log c_ii / n² (heads averaged), the released value; dead agents drop out.
        loss = jnp.sum(agent_pruning_terms(attention) * mask) / count
        weight = pruning_weight(env_steps, self.alpha, self.prune_start)
        confidence = jnp.sum(jax.lax.stop_gradient(self_confidence(attention)) * mask) / count
        return weight * loss, {"pruning_loss": loss, "pruning_weight": weight, "self_confidence": confidence}

    def export(self, params):
        agent = params["agent"]
        pruned = {**agent, "params": {k: v for k, v in agent["params"].items() if k not in QUERY_KEY}}
        options = self.config.cadp
        spec = {"network": "cadp_decentralized", "hidden_dim": self.hidden_dim, "heads": options.heads,
                "head_dim": options.head_dim, "residual": options.residual,
                "inputs": ["obs", "last_action", "agent_id"]}
        if self.quantiles:  # the exported D model acts on each action's mean quantile
            spec["quantiles"] = self.quantiles
        return spec, pruned

    def plot_marks(self) -> dict[str, float]:
        return {"pruning starts": float(self.prune_start)}


@register_network("cadp_decentralized")
def decentralized_network(spec: dict) -> PolicyNetwork:
    """The exported D model: the advice network with each agent's own value vector in place of the attention
    mix. Its parameters hold no query or key weights; `CADPAgent.decentralized` reads none (nor creates any)."""
    network = CADPAgent(spec["hidden_dim"], value_outputs(spec["n_actions"], spec.get("quantiles", 0)), spec["heads"],
                        spec["head_dim"], spec["residual"])
    step = recurrent_agent_step(spec, lambda params, *args: network.apply(params, *args,
                                                                          method=CADPAgent.decentralized))
    return PolicyNetwork.plain(step, init=recurrent_init(spec, network, method=CADPAgent.decentralized))
