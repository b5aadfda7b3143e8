"""The paradigms: each file registers its own (`ctde.paradigms.base.register_paradigm`). Importing this package
imports every module in it, so a new file here is a new `paradigm=` choice with no other edit: the built-in
ones first, in the order `paradigm=` lists them, then any other module of the package."""

from __future__ import annotations

import importlib
import pkgutil

# Imported one by one: registration order is the order of the choices (and of the options sections in a saved
# configuration).
from ctde.paradigms import ctde
from ctde.paradigms import cadp
from ctde.paradigms import ptde
from ctde.paradigms import igm_da
from ctde.paradigms import ctds
from ctde.paradigms import ctedd
from ctde.paradigms.base import PARADIGMS, AgentInputs, Paradigm, ParadigmOutput, register_paradigm

__all__ = ["AgentInputs", "Paradigm", "ParadigmOutput", "PARADIGMS", "make_paradigm", "register_paradigm"]


BUILT_IN = (ctde, cadp, ptde, igm_da, ctds, ctedd)  # their modules

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def make_paradigm(config, spec) -> Paradigm:
    return PARADIGMS[config.paradigm.name](config, spec)
