"""Every cross-checked component, by golden-file name. A system module lists its own in `COMPONENTS`."""

from __future__ import annotations

import importlib

from crosscheck.common import Component

SYSTEM_MODULES = ("backbones", "backbones_extra", "cadp", "ptde", "igm_da", "ctds")


def components() -> dict[str, Component]:
    found: dict[str, Component] = {}
    for module_name in SYSTEM_MODULES:
        try:
            module = importlib.import_module(f"crosscheck.{module_name}")
        except ModuleNotFoundError as error:
            if error.name != f"crosscheck.{module_name}":
                raise
            continue  # not written yet
        for component in module.COMPONENTS:
            if component.name in found:
                raise ValueError(f"two components are named {component.name!r}")
            found[component.name] = component
    return found
