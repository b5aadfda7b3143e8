"""PTDE: Personalized Training, Distilled Execution (Chen et al., IJCAI 2024).

Stage 1 (reinforcement learning, the backbone's own loop): each agent's Q-values (or policy logits) use
h_i from its recurrent trunk and z_i, knowledge drawn from the global state. With `ptde.global_info=personalized`
(GIP), an agent-hypernetwork on the agent's local input x_i decides how the state becomes z_i, so agents read
the same state differently; `unified` (GIU, the ablation) gives every agent the same z. z is sampled by
reparameterization while training, its mean at evaluation.

Stage 2 (distillation, `ctde.training.distill`): with stage 1 frozen, roll out the teacher, store every
agent's (x_i, s) rows, and regress a student MLP on x_i alone onto the teacher's mean mu_i. The student replaces
GIP at execution: the exported policy is trunk + head + student, with no hypernetwork and no state input.

Models: `teacher` (z from the state; collects data and learns in stage 1) and `student` (z from the student;
evaluated and exported after stage 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from ctde.config import DistillationOptions, option
from ctde.errors import IncompatibleError, require
from ctde.nets.ptde import PersonalizedGlobalInfo, QHead, Student, Trunk, UnifiedGlobalInfo, sample_z
from ctde.nets.rnn import agent_inputs
from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput, register_paradigm
from ctde.policy import PolicyNetwork, own_input, own_input_zeros, register_network


@dataclass
class _PTDENetworks:
    global_info: Literal["personalized", "unified"] = option(
        "personalized", "personalized (GIP: each agent's hypernetwork reads the state) or unified (GIU ablation)")
    z_dim: int = option(64, "size of the global-information knowledge z")
    hypernet_hidden: int = option(64, "hidden width of the agent-hypernetwork (GIP) or state encoder (GIU)")
    min_variance: float = option(0.01, "floor of z's variance")
    sample_at_execution: bool = option(
        False, "evaluate with sampled z (the authors' code) instead of its mean; the exported student is "
        "always deterministic")
    student_hidden: int = option(64, "student MLP width (x -> hidden -> z_dim -> z_dim)")


@dataclass
class PTDEOptions(DistillationOptions, _PTDENetworks):
    """PTDE options (defaults: the authors' released code, ALGORITHMS.md)."""

    # Its networks' options first, then stage 2's (DistillationOptions, whose defaults are PTDE's).


@register_paradigm
class PTDE(Paradigm):
    name = "ptde"
    summary = "personalized global information, distilled into a local student"
    options = PTDEOptions
    backbone_families = ("value_decomposition", "policy_gradient")
    needs_state = True
    reasons = {"state": "for its teacher's global information z"}
    collect_model = learned_model = select_model = "teacher"
    eval_models = ("teacher", "student")
    train_eval_models = ("teacher",)  # the student means nothing until stage 2
    export_model = "student"
    post_training = ("distill",)

    @classmethod
    def resolve_options(cls, config) -> None:
        if config.algo.value_quantiles:
            raise IncompatibleError(
                "paradigm=ptde's Q head reads the GRU state and the knowledge z, with one value per action; "
                f"algo={config.algo.name} learns a quantile distribution per action, which that head does not "
                "produce. Use paradigm=ctde, cadp, igm_da or ctds with algo=dmix, or algo=qmix with paradigm=ptde.")
        ptde = config.ptde
        require([
            (ptde.z_dim >= 1 and ptde.hypernet_hidden >= 1 and ptde.student_hidden >= 1, "ptde sizes must be positive"),
            *ptde.checks("ptde"),
            (ptde.min_variance > 0, "ptde.min_variance must be positive"),
        ])

    def __init__(self, config, spec):
        super().__init__(config, spec)
        options = config.ptde
        self.hidden_dim = config.algo.hidden_dim
        self.z_dim = options.z_dim
        self.trunk = Trunk(self.hidden_dim)
        self.head = QHead(self.hidden_dim, spec.n_actions)
        if options.global_info == "personalized":
            self.global_info = PersonalizedGlobalInfo(spec.state_dim, self.z_dim, options.hypernet_hidden,
                                                      options.min_variance)
        else:
            self.global_info = UnifiedGlobalInfo(spec.n_agents, self.z_dim, options.hypernet_hidden,
                                                 options.min_variance)
        self.student = Student(self.z_dim, options.student_hidden)
        self.sample_at_execution = options.sample_at_execution
        self.input_dim = spec.obs_dim + spec.n_actions + spec.n_agents

    def local_inputs(self, inputs: AgentInputs) -> jax.Array:
        return agent_inputs(inputs.obs, inputs.last_action, self.spec.n_actions)

    def init(self, key):
        n = self.spec.n_agents
        keys = jax.random.split(key, 4)
        x = jnp.zeros((1, n, self.input_dim))
        state = jnp.zeros((1, self.spec.state_dim))
        h = jnp.zeros((1, n, self.hidden_dim))
        return {"trunk": self.trunk.init(keys[0], self.initial_carry(()), x, jnp.zeros((1, n), bool)),
                "head": self.head.init(keys[1], h, jnp.zeros((1, n, self.z_dim))),
                "global_info": self.global_info.init(keys[2], x, state),
                "student": self.student.init(keys[3], x)}

    def initial_carry(self, batch_shape):
        return jnp.zeros((*batch_shape, self.spec.n_agents, self.hidden_dim))

    def teacher_distribution(self, params, inputs: AgentInputs) -> tuple[jax.Array, jax.Array]:
        """(mu, var) of z from the state, [T, *B, n, z_dim]."""
        return self.global_info.apply(params["global_info"], self.local_inputs(inputs), inputs.state)

    def apply(self, params, carry, inputs: AgentInputs, rng=None):
        x = self.local_inputs(inputs)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        carry, h = self.trunk.apply(params["trunk"], carry, x, resets)
        mu, var = self.global_info.apply(params["global_info"], x, inputs.state)
        z_teacher = sample_z(rng, mu, var)
        z_student = self.student.apply(params["student"], x)
        scores = {"teacher": self.head.apply(params["head"], h, z_teacher),
                  "student": self.head.apply(params["head"], h, z_student)}
        return carry, ParadigmOutput(scores=scores, extras={"mu": mu, "var": var})

    def export(self, params):
        spec = {"network": "ptde_student", "hidden_dim": self.hidden_dim, "z_dim": self.z_dim,
                "student_hidden": self.config.ptde.student_hidden, "inputs": ["obs", "last_action", "agent_id"]}
        return spec, {"trunk": params["trunk"], "head": params["head"], "student": params["student"]}

    # -- stage 2 hooks (see ctde.training.distill) -------------------------------------------------------

    def distillation_rows(self, params, inputs: AgentInputs) -> tuple[jax.Array, jax.Array]:
        """Student inputs x_i and teacher targets mu_i for every step and agent: ([..., n, x_dim], [..., n, z])."""
        mu, _ = self.teacher_distribution(params, inputs)
        return self.local_inputs(inputs), mu

    def student_prediction(self, student_params, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return self.student.apply(student_params, x)


@register_network("ptde_student")
def student_network(spec: dict) -> PolicyNetwork:
    """The exported policy: trunk + head with the student's z from the agent's own input (no state)."""
    trunk = Trunk(spec["hidden_dim"])
    head = QHead(spec["hidden_dim"], spec["n_actions"])
    student = Student(spec["z_dim"], spec["student_hidden"])

    def step(params, hidden, obs, last_action, avail, agent_index, reset):
        x = own_input(spec, obs, last_action, avail, agent_index)
        hidden, h = trunk.apply(params["trunk"], hidden[None], x[None, None], reset[None, None])
        z = student.apply(params["student"], x)
        return hidden[0], head.apply(params["head"], h[0, 0], z)

    def init(key):  # the exported tree: {"trunk", "head", "student"}
        x = own_input_zeros(spec)
        keys = jax.random.split(key, 3)
        hidden = jnp.zeros((1, spec["hidden_dim"]))
        return {"trunk": trunk.init(keys[0], hidden, x[None, None], jnp.zeros((1, 1), bool)),
                "head": head.init(keys[1], hidden[0], jnp.zeros((spec["z_dim"],))),
                "student": student.init(keys[2], x)}

    return PolicyNetwork.plain(step, init=init)
