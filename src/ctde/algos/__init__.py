"""Backbones: how parameters learn from data. Each maps algorithm names to one learner class."""

from __future__ import annotations

from ctde.algos.maddpg import MADDPG
from ctde.algos.mappo import PPO
from ctde.algos.value_decomposition import ValueDecomposition

VALUE_DECOMPOSITION = ("iql", "vdn", "qmix", "qplex", "qtran", "cw_qmix", "ow_qmix", "dmix")
# Value decomposition whose Q_tot is not IGM by construction (docs/backbones.md): no paradigm may treat the agents'
# greedy actions as the argmax of the learned joint value.
NOT_IGM = ("qtran", "cw_qmix", "ow_qmix")
POLICY_GRADIENT = ("mappo", "ippo")
ACTOR_CRITIC = ("maddpg",)

BACKBONES = {**{name: ValueDecomposition for name in VALUE_DECOMPOSITION}, **{name: PPO for name in POLICY_GRADIENT},
             **{name: MADDPG for name in ACTOR_CRITIC}}


def make_backbone(config, env, paradigm):
    return BACKBONES[config.algo.name](config, env, paradigm)
