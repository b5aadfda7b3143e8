"""Paradigm registry."""

from __future__ import annotations

from ctde.paradigms.base import AgentInputs, Paradigm, ParadigmOutput
from ctde.paradigms.cadp import CADP
from ctde.paradigms.ctde import CTDE
from ctde.paradigms.ctds import CTDS
from ctde.paradigms.ctedd import CTEDD
from ctde.paradigms.igm_da import IGMDA
from ctde.paradigms.ptde import PTDE

PARADIGMS: dict[str, type[Paradigm]] = {"ctde": CTDE, "cadp": CADP, "ptde": PTDE, "igm_da": IGMDA, "ctds": CTDS,
                                      "ctedd": CTEDD}

__all__ = ["AgentInputs", "Paradigm", "ParadigmOutput", "PARADIGMS", "make_paradigm"]


def make_paradigm(config, spec) -> Paradigm:
    return PARADIGMS[config.paradigm.name](config, spec)
