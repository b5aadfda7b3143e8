"""Shared test setup: quiet JAX on CPU, and a helper to run a short training job into a temp directory."""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# Two CPU devices on any machine (`import ctde` reads this), so the tests always exercise a batch's slices
# running side by side (ctde.algos.slicing) as they do on the 2-core machines this project targets.
os.environ.setdefault("CTDE_CPU_DEVICES", "2")

from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests compile many identical programs (same configuration, different run lengths or directories): share
# them through JAX's persistent cache, kept beside pytest's own cache.
jax.config.update("jax_compilation_cache_dir", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@pytest.fixture
def run_training(tmp_path):
    """Train with `key=value` overrides into tmp_path/run; returns ctde's RunResult."""
    from ctde.training.runner import train

    def run(*overrides: str, name: str = "run", **kwargs):
        out = tmp_path / name
        args = [f"out={out}", "log.progress=false", "log.tensorboard=false", *overrides]
        return train(list(args), quiet=True, **kwargs)

    return run
