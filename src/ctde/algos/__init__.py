"""Backbones: how parameters learn from data. `BACKBONES` maps each algorithm name to its learner class and what
it is and can host (`ctde.algos.base.Capabilities`): the one home of those facts. `ctde.training.resolve` checks
a paradigm's declared needs (`ctde.paradigms.base.Paradigm`) against them; `ctde.experiments.compare` and the
test harnesses (`ctde.testing`) read them too."""

from __future__ import annotations

from dataclasses import dataclass

from ctde.algos.base import Capabilities
from ctde.algos.maddpg import MADDPG
from ctde.algos.mappo import PPO
from ctde.algos.value_decomposition import ValueDecomposition

@dataclass(frozen=True)
class BackboneEntry:
    """One algorithm name.

    learner       the learner class (one class serves several names; it reads `config.algo.name`)
    capabilities  family, IGM, continuous actions
    mixer         value decomposition through a mixer, a joint value of the agents' values (IQL has none)
    section       the config section of its own options (`ppo`, `maddpg`), None if it reads only `algo.*`
    """

    learner: type
    capabilities: Capabilities
    mixer: bool = False
    section: str | None = None


def _value_decomposition(igm: bool = True, mixer: bool = True) -> BackboneEntry:
    return BackboneEntry(ValueDecomposition, Capabilities("value_decomposition", igm=igm), mixer=mixer)


# Value decomposition whose Q_tot is not IGM by construction (docs/backbones.md: QTRAN, weighted QMIX) says
# igm=False: no paradigm may treat the agents' greedy actions as the argmax of the learned joint value there.
BACKBONES: dict[str, BackboneEntry] = {
    "iql": _value_decomposition(mixer=False),
    "vdn": _value_decomposition(),
    "qmix": _value_decomposition(),
    "qplex": _value_decomposition(),
    "qtran": _value_decomposition(igm=False),
    "cw_qmix": _value_decomposition(igm=False),
    "ow_qmix": _value_decomposition(igm=False),
    "dmix": _value_decomposition(),
    "mappo": BackboneEntry(PPO, Capabilities("policy_gradient"), section="ppo"),
    "ippo": BackboneEntry(PPO, Capabilities("policy_gradient"), section="ppo"),
    "maddpg": BackboneEntry(MADDPG, Capabilities("actor_critic", continuous_actions=True), section="maddpg"),
}


def capabilities(algo_name: str) -> Capabilities:
    return BACKBONES[algo_name].capabilities


def family(algo_name: str) -> str:
    """"value_decomposition", "policy_gradient" or "actor_critic"."""
    return BACKBONES[algo_name].capabilities.family


def names_of(family_name: str) -> tuple[str, ...]:
    """The algorithm names of one family, in registry order."""
    return tuple(name for name, entry in BACKBONES.items() if entry.capabilities.family == family_name)


def make_backbone(config, env, paradigm):
    return BACKBONES[config.algo.name].learner(config, env, paradigm)
