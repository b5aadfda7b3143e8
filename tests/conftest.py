"""Shared test setup: quiet JAX on CPU, and a helper to run a short training job into a temp directory."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import pytest  # noqa: E402


@pytest.fixture
def run_training(tmp_path):
    """Train with `key=value` overrides into tmp_path/run; returns ctde's RunResult."""
    from ctde.training.runner import train

    def run(*overrides: str, name: str = "run", **kwargs):
        out = tmp_path / name
        args = [f"out={out}", "log.progress=false", "log.tensorboard=false", *overrides]
        return train(list(args), quiet=True, **kwargs)

    return run
