"""ctde: cooperative multi-agent RL where training may use more information than execution.

Public API:
    ctde.train(config)            train a run (TrainConfig, list of "key=value", or nested dict)
    ctde.evaluate(run_dir)        greedy evaluation of a saved run
    ctde.load_policy(path)        load an exported decentralized policy
    ctde.audit_policy(policy)     verify that each agent acts on its own inputs only
"""

__version__ = "0.1.0"  # first: modules below read it (checkpoints record it)

import importlib

from ctde.config import TrainConfig, build_config
from ctde.training.cpu_kernels import one_device_per_core
from ctde.errors import (AuditFailedError, CheckpointError, ConfigError, CtdeError, IncompatibleError,
                         TrainingDivergedError)

# Before JAX's first operation, or the count is fixed: the slices of a batch then run side by side on the cores.
one_device_per_core()

# The built-in paradigms register themselves (their `paradigm=` names, option sections and exported networks)
# when imported: every configuration and policy file reads them, so `import ctde` loads them (after the line above:
# some modules build JAX arrays on import).
importlib.import_module("ctde.paradigms")

__all__ = ["TrainConfig", "build_config", "train", "evaluate", "export", "load_policy", "audit_policy",
           "CtdeError", "ConfigError", "IncompatibleError", "CheckpointError", "TrainingDivergedError",
           "AuditFailedError"]


def train(config=None, **kwargs):
    from ctde.training.runner import train as _train

    return _train(config, **kwargs)


def evaluate(run_dir, **kwargs):
    from ctde.training.runner import evaluate as _evaluate

    return _evaluate(run_dir, **kwargs)


def export(run_dir):
    from ctde.training.runner import export as _export

    return _export(run_dir)


def load_policy(path):
    from ctde.policy import load_policy as _load

    return _load(path)


def audit_policy(policy, **kwargs):
    from ctde.audit import audit_policy as _audit

    return _audit(policy, **kwargs)
