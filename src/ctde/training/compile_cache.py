"""JAX's persistent compilation cache, shared by every command that compiles a training program."""

import os
from pathlib import Path

import jax


def enable_compile_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache); CTDE_COMPILE_CACHE=off disables it."""
    path = os.environ.get("CTDE_COMPILE_CACHE", str(Path.home() / ".cache" / "ctde" / "jax"))
    if path.lower() in ("", "0", "off", "none", "false"):
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
