"""Backbones: how parameters learn from data. Each maps algorithm names to one learner class."""

from __future__ import annotations

from ctde.algos.value_decomposition import ValueDecomposition

VALUE_DECOMPOSITION = ("iql", "vdn", "qmix", "qplex")

BACKBONES = {name: ValueDecomposition for name in VALUE_DECOMPOSITION}


def make_backbone(config, env, paradigm):
    return BACKBONES[config.algo.name](config, env, paradigm)
