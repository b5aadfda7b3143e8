"""IGM-DA (Hong, Jin & Tang, NeurIPS 2022): value decomposition learned by a full-sight expert, imitated by a
decentralized student (DAgger).

    expert   RNN agent on full_obs ⊕ last action ⊕ id; its Q-values go through the mixer and learn by TD
             (the backbone's loss), with the backbone's target network.
    student  RNN agent on obs ⊕ last action ⊕ avail ⊕ id (under sight 0 the avail mask is its only enemy
             information); no target network; exported as the decentralized policy.

DAgger as released: the student collects all data (epsilon-greedy) and the double-Q target bootstraps at the
student's greedy available action,

    y = r + γ · Q_tot^target(s', [Q_expert^target(τ'_i, argmax_{a avail} Q_student(τ'_i, a))]_i).

Imitation loss (`auxiliary_loss`), with a_i* = argmax over available actions of the expert's Q (detached):

    L_im = w · (1 / #valid steps) · Σ_valid (t, b)  (1 / (n |A|)) Σ_i Σ_a (Q_student(τ_i, a) − onehot(a_i*)_a)²

i.e. the mean squared error over every (valid step, agent, action) entry: a mean over actions and agents,
then a masked mean over the (valid step, agent) pairs the backbone counts (`w` = igm_da.imitation_weight). Every agent counts, dead ones included
(SMAX leaves them only "stop", which the expert's masked argmax then picks).

BC ablation (`igm_da.collector=expert`): the expert collects the data and the target bootstraps at the
expert's own greedy action. One optimizer covers expert, student and mixer, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp

from ctde.config import option
from ctde.errors import ConfigError, IncompatibleError
from ctde.nets.actions import masked_argmax
from ctde.paradigms.base import register_paradigm
from ctde.paradigms.privileged import STUDENT, PrivilegedAndStudent, agreement, masked_agent_mean

EXPERT = "expert"


@dataclass
class IGMDAOptions:
    """Options of paradigm=igm_da (ignored, and refused if set, under other paradigms)."""

    collector: Literal["student", "expert"] = option(
        "student", "who collects data and picks the bootstrap action: student = IGM-DA (DAgger); expert = the "
        "paper's behaviour-cloning ablation")
    imitation_weight: float = option(
        1.0, "weight of the imitation loss (MSE of the student's Q vector to one-hot of the expert's greedy action)")


@register_paradigm
class IGMDA(PrivilegedAndStudent):
    name = "igm_da"
    summary = "full-sight expert imitated by a student (DAgger)"
    options = IGMDAOptions
    needs_mixer = needs_igm = True
    reasons = {
        "backbone": "trains its expert by TD through a mixer",
        "mixer": "imitates an expert trained by IGM value decomposition through a mixer (the paper wraps QMIX, "
                 "QPLEX and DMIX)",
        "igm": "has the student imitate the expert's greedy actions as the argmax of an IGM value decomposition "
               "and bootstraps Q_tot at the student's greedy action",
    }
    backbone_notes = {"dmix": "the paper's DMIX-DA"}
    privileged = EXPERT
    student_reads_avail = True
    learned_model = EXPERT
    eval_models = (STUDENT, EXPERT)

    def __init__(self, config, spec):
        super().__init__(config, spec)
        options = config.igm_da
        # DAgger: the student collects and picks the bootstrap action; BC: the expert does both.
        self.collect_model = self.select_model = STUDENT if options.collector == "student" else EXPERT
        self.imitation_weight = options.imitation_weight

    @classmethod
    def resolve_options(cls, config):
        super().resolve_options(config)
        if config.igm_da.imitation_weight < 0:
            raise ConfigError("igm_da.imitation_weight must be non-negative.")
        if not config.algo.double_q:
            raise IncompatibleError(
                "paradigm=igm_da defines its target by double-Q at the student's greedy action (the expert's in the "
                "BC ablation); algo.double_q=false has no such action. Leave algo.double_q=true.")

    def auxiliary_loss(self, params, output, inputs, mask, env_steps):
        student = output.scores[STUDENT]  # [T, B, n, A]
        expert = jax.lax.stop_gradient(output.scores[EXPERT])
        target = jax.nn.one_hot(masked_argmax(expert, inputs.avail), student.shape[-1])
        per_agent = jnp.mean((student - target) ** 2, axis=-1)  # mean over actions: [T, B, n]
        imitation = masked_agent_mean(per_agent, mask)
        return self.imitation_weight * imitation, {
            "imitation_loss": imitation,
            "student_expert_agreement": agreement(student, expert, inputs.avail, mask),
        }
