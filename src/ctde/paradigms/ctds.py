"""CTDS: a centralized teacher on unlimited sight, distilled into a decentralized student as both train.

    teacher  RNN agent on full_obs ⊕ last action ⊕ id (every living unit, SMAX's normalization and size);
             collects the data (epsilon-greedy), learns by the backbone's TD loss through the mixer, and picks
             the double-Q bootstrap action.
    student  RNN agent on obs ⊕ last action ⊕ id (the ordinary, sight-limited observation); regresses the
             teacher's whole Q vector; exported as the decentralized policy.

Student loss (`auxiliary_loss`), on the same sampled batch as the TD loss:

    L_s = w · (1 / #valid steps) · Σ_valid (t, b)  Σ_i Σ_a (Q_student(τ_i, a) − stopgrad(Q_teacher(τ*_i, a)))²

summed over agents and actions per step, averaged over valid steps (`w` = ctds.distill_weight).

"Trained simultaneously with its own optimizer": the student is in `own_optimizer`, so the backbone gives it
a separate optimizer (same kind, learning rate and gradient clip) while teacher and mixer share theirs. The
student's gradients then never shrink the teacher's through the global-norm clip, and vice versa.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from ctde.config import option
from ctde.errors import ConfigError
from ctde.paradigms.base import register_paradigm
from ctde.paradigms.privileged import STUDENT, PrivilegedAndStudent, agreement, masked_agent_mean

TEACHER = "teacher"


@dataclass
class CTDSOptions:
    """Options of paradigm=ctds (ignored, and refused if set, under other paradigms)."""

    distill_weight: float = option(
        1.0, "weight of the student's loss: sum over agents and actions of (Q_student - Q_teacher)^2")


@register_paradigm
class CTDS(PrivilegedAndStudent):
    name = "ctds"
    summary = "full-sight teacher distilled into a student"
    options = CTDSOptions
    reasons = {"backbone": "trains its teacher by TD through a mixer"}
    privileged = TEACHER
    student_reads_avail = False
    collect_model = learned_model = select_model = TEACHER
    eval_models = (STUDENT, TEACHER)
    own_optimizer = (STUDENT,)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.distill_weight = config.ctds.distill_weight

    @classmethod
    def resolve_options(cls, config):
        super().resolve_options(config)
        if config.ctds.distill_weight < 0:
            raise ConfigError("ctds.distill_weight must be non-negative.")

    def auxiliary_loss(self, params, output, inputs, mask, env_steps):
        student = output.scores[STUDENT]  # [T, B, n, A]
        teacher = jax.lax.stop_gradient(output.scores[TEACHER])
        # Σ over agents and actions, then a mean over valid steps: the per-agent mean times n.
        per_agent = jnp.sum((student - teacher) ** 2, axis=-1)  # [T, B, n]
        distill = masked_agent_mean(per_agent, mask) * self.spec.n_agents
        return self.distill_weight * distill, {
            "distill_loss": distill,
            "student_teacher_agreement": agreement(student, teacher, inputs.avail, mask),
        }
