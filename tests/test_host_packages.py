"""The `smac:` and `smaclite:` ids end to end, on stand-ins with those packages' interfaces (tests/stand_ins: no
StarCraft II binary can be installed here and SMAClite is not on PyPI). They check ctde's side: finding the
package, the map checks, SMAC's seeding and methods, SMAClite's gymnasium signatures and episode limit, the
unlimited-sight view through SMAC's methods (and its refusal on SMAClite), training in worker processes, and the
audit of the exported policy."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from ctde.errors import ConfigError, IncompatibleError

STAND_INS = Path(__file__).parent / "stand_ins"
FAST = ("algo=qmix", "steps=100", "eval.interval=100", "eval.episodes=2", "rollout.num_envs=2", "algo.batch_size=4",
        "algo.buffer_size=32", "log.chunk_evals=1", "algo.epsilon_anneal_steps=300")


@pytest.fixture
def stand_ins(monkeypatch):
    """The stand-in packages importable here and in the environments' worker processes; forgotten afterwards."""
    import gymnasium

    monkeypatch.syspath_prepend(str(STAND_INS))
    monkeypatch.setenv("PYTHONPATH", f"{STAND_INS}:{os.environ.get('PYTHONPATH', '')}")
    yield
    for name in [m for m in sys.modules if m.split(".")[0] in ("smac", "smaclite")]:
        del sys.modules[name]
    for key in [k for k in gymnasium.envs.registry if k.startswith("smaclite/")]:
        del gymnasium.envs.registry[key]


def test_smac_trains_in_worker_processes_and_offers_unlimited_sight(stand_ins, run_training):
    from ctde.config import build_config
    from ctde.envs.host import HostEnvFactory
    from ctde.training.resolve import resolve

    result = run_training("env=smac:3m", *FAST)
    assert result.summary["decentralization audit"].startswith("PASS")
    assert result.rows[-1]["env_steps"] >= 100 and result.rows[-1]["updates"] > 0

    # SMAC's reset takes no seed (StarCraft II is seeded when it starts): two environments built with one seed
    # play the same episodes.
    first, second = (HostEnvFactory("smac", "3m", ("full_obs",)).make(7) for _ in range(2))
    a, b = first.reset(123), second.reset(456)
    assert np.array_equal(a["obs"], b["obs"])
    # The unlimited-sight view agrees with the observation wherever that shows a unit.
    shown = a["obs"] != 0
    assert np.allclose(a["views"]["full_obs"][shown], a["obs"][shown])
    assert resolve(build_config(["env=smac:3m", "paradigm=ctds", "out=/tmp/unused"])).paradigm.name == "ctds"

    with pytest.raises(ConfigError, match=r"Unknown SMAC map 'nope'. SMAC's maps: 2m_vs_1z, 3m"):
        resolve(build_config(["env=smac:nope", "out=/tmp/unused"]))


def test_smaclite_trains_with_smacs_episode_limit_and_refuses_unlimited_sight(stand_ins, run_training):
    from ctde.config import build_config
    from ctde.envs.host import HostEnvFactory
    from ctde.training.resolve import resolve

    result = run_training("env=smaclite:3m", "env.episode_limit=20", *FAST)
    assert result.summary["decentralization audit"].startswith("PASS")
    assert 0 < max(r["test/agent/episode_length"] for r in result.rows) <= 20

    # No episode limit of its own: SMAC's for the map (3m: 60); gymnasium's reset(seed=...) makes episodes repeat.
    from ctde.envs import make_env

    assert make_env(resolve(build_config(["env=smaclite:3m", "out=/tmp/unused"])).env).spec.episode_limit == 60
    first, second = (HostEnvFactory("smaclite", "3m", (), 60).make(0) for _ in range(2))
    assert np.array_equal(first.reset(123)["obs"], second.reset(123)["obs"])

    with pytest.raises(IncompatibleError, match="SMAClite's sight range is a module constant"):
        resolve(build_config(["env=smaclite:3m", "paradigm=ctds", "out=/tmp/unused"]))
    with pytest.raises(ConfigError, match=r"Unknown SMAClite map 'nope'. SMAClite's maps: 2s3z, 3m"):
        resolve(build_config(["env=smaclite:nope", "out=/tmp/unused"]))
