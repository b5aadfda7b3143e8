"""CTEDD: Centralized Training and Exploration, Decentralized execution via policy Distillation (AAMAS 2020).

Stage 1 (reinforcement learning, the MADDPG backbone's own loop): every agent's global policy pi~_i(s, .) is a
shared global network on the full state followed by a small head of the agent's own (`nets.ctedd.GlobalPolicy`).
The global policies collect the data (sampling their softmax) and learn through MADDPG's centralized critic
Q(s, a_1..a_n) with target networks: the backbone's reparameterized (Gumbel-softmax) actor gradient stands for
the paper's policy gradient of Eq. 1. The maximum-entropy term alpha * H(pi~_i(s, .)) of Eq. 1 is this paradigm's
auxiliary loss and reaches the local heads only (the shared features are held fixed in it), as the paper's
gradient for the heads' parameters omega_i.

Stage 2 (distillation, `ctde.training.distill`): with stage 1 frozen, the global policies play
`ctedd.distill_episodes` episodes (sampling, as they collected), and the local policies learn to reproduce
them, L_D = mean over steps of sum_i ||pi~_i(s) - pi^_i(o_i, m)||^2 on the policies' action distributions,
consuming the samples in the order they were collected, `ctedd.iterations_per_batch` steps on each batch
(Eq. 2). A local policy (`nets.ctedd`) turns o_i into k binary message bits (`ctedd.message_bits`) and acts on
o_i and every agent's bits; the bits are trained straight-through (or with logistic noise: `gumbel`).

Models: `global` (CTEDD-G: collects and learns in stage 1) and `local` (CTEDD-k: evaluated and exported after
stage 2). The exported policy is the local one; its audit checks that each agent reads only its own inputs and
the received bits, and that each message reads only its sender's inputs (`ctde.policy`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from ctde import envs
from ctde.config import DistillationOptions, option
from ctde.errors import IncompatibleError, require
from ctde.nets.actions import masked_logits, sample_softmax, tanh_with_noise
from ctde.nets.ctedd import (GlobalPolicy, MessageActor, MessageGenerator, binary_message, local_input,
                             local_policy_logits)
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput, register_paradigm
from ctde.policy import PolicyNetwork, own_input, own_input_zeros, register_network


@dataclass
class _CTEDDNetworks:
    message_bits: int = option(1, "k: bits each agent broadcasts to the others in the distilled local policy")
    message_estimator: Literal["straight_through", "gumbel"] = option(
        "straight_through", "how stage 2 trains the binary messages: straight_through (hard threshold forward, "
        "sigmoid gradient backward) or gumbel (logistic noise added before the threshold while training)")
    entropy_coef: float | None = option(
        None, "alpha: weight of the entropy of the global policies' local heads (stage 1); None = 0.01 with discrete "
        "actions, 0 with continuous ones (deterministic tanh actors have no entropy)")
    global_hidden: int = option(128, "width of the shared global network on the state (2 layers)")
    head_hidden: int = option(32, "width of each agent's own local head on the global features")
    local_hidden: int = option(64, "width of the local policy's message generator and actor")


@dataclass
class CTEDDOptions(DistillationOptions, _CTEDDNetworks):
    """Options of paradigm=ctedd (ALGORITHMS.md, CTEDD); refused with any other paradigm."""

    # Its networks' options first, then stage 2's (DistillationOptions) with CTEDD's defaults, then its own.
    distill_episodes: int = DistillationOptions.default("distill_episodes", 400)
    distill_steps: int = DistillationOptions.default("distill_steps", 3000)
    distill_batch: int = DistillationOptions.default("distill_batch", 256)
    distill_lr: float = DistillationOptions.default("distill_lr", 1e-3)
    distill_log_every: int = DistillationOptions.default("distill_log_every", 100)
    iterations_per_batch: int = option(4, "stage 2: regression steps on each batch before the next one")


@register_paradigm
class CTEDD(Paradigm):
    name = "ctedd"
    summary = ("global policies on the state (MADDPG-style), distilled into local policies that exchange k-bit "
               "messages")
    options = CTEDDOptions
    backbone_families = ("actor_critic",)
    needs_state = True
    reasons = {"backbone": "trains its global policies with DDPG-style updates through a centralized critic",
               "state": "for its global policies"}
    collect_model = learned_model = select_model = "global"
    eval_models = ("global", "local")
    train_eval_models = ("global",)  # the local policies mean nothing until stage 2
    export_model = "local"
    post_training = ("distill",)
    diagnostics = ("entropy",)
    distill_teacher = "global"
    distill_student = "local"
    distill_row_dims = 2  # one row per step: a local policy reads every agent's messages
    distill_actions = "sample"
    distill_order = "collection"

    @classmethod
    def resolve_options(cls, config) -> None:
        options = config.ctedd
        continuous = envs.make_env(config.env, ltr_options=config.ltr).spec.continuous_actions
        if continuous and options.entropy_coef:
            raise IncompatibleError(f"ctedd.entropy_coef={options.entropy_coef}: with continuous actions the global "
                                    f"policies are deterministic tanh actors, which have no entropy. Remove it (0 is "
                                    f"the default there).")
        if options.entropy_coef is None:
            options.entropy_coef = 0.0 if continuous else 0.01
        require([
            (1 <= options.message_bits <= 16, "ctedd.message_bits must be between 1 and 16"),
            (options.entropy_coef >= 0, "ctedd.entropy_coef must be non-negative"),
            (min(options.global_hidden, options.head_hidden, options.local_hidden) >= 1,
             "ctedd network widths must be positive"),
            *options.checks("ctedd"),
            (options.iterations_per_batch >= 1, "ctedd.iterations_per_batch must be positive"),
        ])

    def __init__(self, config, spec):
        super().__init__(config, spec)
        options = config.ctedd
        self.bits = options.message_bits
        self.estimator = options.message_estimator
        self.entropy_coef = options.entropy_coef
        self.local_hidden = options.local_hidden
        self.global_policy = GlobalPolicy(spec.n_agents, spec.n_actions, options.global_hidden, options.head_hidden)
        self.generator = MessageGenerator(self.bits, options.local_hidden)
        self.actor = MessageActor(spec.n_actions, options.local_hidden)
        self.continuous = spec.continuous_actions

    def policy_output(self, scores: jax.Array, avail: jax.Array) -> jax.Array:
        """What L_D compares: the action distribution (masked softmax), or with continuous actions the action
        tanh(scores) itself. [..., |A|] -> [..., |A|]."""
        if self.continuous:
            return jnp.tanh(scores)
        return jax.nn.softmax(masked_logits(scores, avail), axis=-1)

    def distill_sampler(self, spec):
        """The global policies play the distillation episodes as they explored in stage 1: sampling their softmax,
        or tanh plus MADDPG's Gaussian noise."""
        return tanh_with_noise(self.config.maddpg.noise_std) if self.continuous else sample_softmax

    def init(self, key):
        n = self.spec.n_agents
        global_key, message_key, actor_key = jax.random.split(key, 3)
        x = jnp.zeros((1, n, self.spec.obs_dim + n))
        return {"global": self.global_policy.init(global_key, jnp.zeros((1, self.spec.state_dim))),
                "local": {"messages": self.generator.init(message_key, x),
                          "actor": self.actor.init(actor_key, x, jnp.zeros((1, n, n * self.bits)))}}

    def initial_carry(self, batch_shape):
        # Both policies are feed-forward: the state and o_i are what they act on.
        return jnp.zeros((*batch_shape, self.spec.n_agents, 0))

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        features = self.global_policy.apply(params["global"], inputs.state, method=GlobalPolicy.features)
        global_logits = self.global_policy.apply(params["global"], features, method=GlobalPolicy.heads)
        # The entropy term's view of the same policies: gradients reach the heads, not the shared network.
        head_logits = self.global_policy.apply(params["global"], jax.lax.stop_gradient(features),
                                               method=GlobalPolicy.heads)
        local_logits, _ = local_policy_logits(self.generator, self.actor, params["local"], local_input(inputs.obs))
        return carry, ParadigmOutput(scores={"global": global_logits, "local": local_logits},
                                     extras={"head_logits": head_logits})

    def auxiliary_loss(self, params, output: ParadigmOutput, inputs: AgentInputs, mask, env_steps):
        """-alpha * mean over counted (step, agent) pairs of H(pi~_i(s, .)), the entropy over available actions
        (reported as 0 with continuous actions, whose deterministic tanh actors have none)."""
        if self.continuous:
            return jnp.float32(0.0), {"entropy": jnp.float32(0.0)}
        logits = masked_logits(output.extras["head_logits"], inputs.avail)
        log_probs = jax.nn.log_softmax(logits)
        entropy = -jnp.sum(jnp.where(inputs.avail, jnp.exp(log_probs) * log_probs, 0.0), axis=-1)
        weight = mask.astype(jnp.float32)
        mean_entropy = jnp.sum(entropy * weight) / jnp.maximum(weight.sum(), 1.0)
        return -self.entropy_coef * mean_entropy, {"entropy": mean_entropy}

    def export(self, params):
        spec = {"network": "ctedd_local", "message_bits": self.bits, "local_hidden": self.local_hidden,
                "hidden_dim": 0, "inputs": ["obs", "agent_id"]}
        return spec, params["local"]

    # -- stage 2 hooks (see ctde.training.distill) -------------------------------------------------------

    def distillation_rows(self, params, inputs: AgentInputs) -> tuple[jax.Array, jax.Array]:
        """Every agent's local input and global action distribution per step: ([..., n, o + n], [..., n, |A|])."""
        logits = self.global_policy.apply(params["global"], inputs.state)
        return local_input(inputs.obs), self.policy_output(logits, inputs.avail)

    def student_prediction(self, student_params, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """The local policies' outputs [N, n, |A|] (`policy_output`, every action counted as available: the local
        policy reads no mask) from rows x [N, n, o + n]; `key` (training with the gumbel estimator) samples the
        message bits."""
        key = key if self.estimator == "gumbel" else None
        logits, _ = local_policy_logits(self.generator, self.actor, student_params, x, key)
        return self.policy_output(logits, jnp.ones(logits.shape, bool))


@register_network("ctedd_local")
def local_network(spec: dict) -> PolicyNetwork:
    """The exported local policy: agent j sends k bits `binary_message(MessageGenerator(x_j))`, agent i's actor
    chooses from x_i and all n * k bits (agent-major, own included), x = the agent's own input vector
    (obs ⊕ onehot(i) for inputs ["obs", "agent_id"]). Feed-forward: the hidden state passes through unchanged.
    Parameters: {"messages": MessageGenerator params, "actor": MessageActor params}."""
    missing = [key for key in ("message_bits", "local_hidden", "hidden_dim") if key not in spec]
    if missing:
        raise ValueError(f"A ctedd_local policy spec needs {missing} (message_bits = k, local_hidden = the "
                         f"generator's and actor's width, hidden_dim = 0 for this feed-forward policy).")
    bits = int(spec["message_bits"])
    generator = MessageGenerator(bits=bits, hidden_dim=spec["local_hidden"])
    actor = MessageActor(spec["n_actions"], hidden_dim=spec["local_hidden"])

    def sender(params, obs, last_action, avail, agent_index):
        x = own_input(spec, obs, last_action, avail, agent_index)
        # No key: at execution a bit is deterministically 1 exactly when its logit is positive.
        return binary_message(generator.apply(params["messages"], x))

    def receiver(params, hidden, obs, last_action, avail, agent_index, reset, messages):
        x = own_input(spec, obs, last_action, avail, agent_index)
        # [n, k] -> [n * k] agent-major, the layout `local_policy_logits` trains with.
        return hidden, actor.apply(params["actor"], x, messages.reshape(-1))

    def init(key):  # the exported tree: {"messages", "actor"}
        x = own_input_zeros(spec)
        message_key, actor_key = jax.random.split(key)
        return {"messages": generator.init(message_key, x),
                "actor": actor.init(actor_key, x, jnp.zeros((spec["n_agents"] * bits,)))}

    return PolicyNetwork(receiver=receiver, sender=sender, bits=bits, init=init)
