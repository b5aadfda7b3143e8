"""`ctde replay`: recorded episodes are the evaluation's episodes, and their GIFs have a frame per tick or state.

The runs here are freshly initialized, not trained: exporting a new policy (and writing one checkpoint) takes
seconds, where training even 600 steps of smax:3m compiles for about a minute, and replay treats both alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from ctde.cli import main
from ctde.config import build_config, save_config
from ctde.envs.base import evaluation_env
from ctde.errors import ConfigError
from ctde.experiments.render import record_episode, replay
from ctde.policy import load_policy
from ctde.training.checkpoint import Checkpoints
from ctde.training.runner import build_program
from ctde.training.resolve import resolve
from ctde.algos.rollout import run_policy
from ctde.training.runner import export, seed_keys


@pytest.fixture(autouse=True)
def _keep_the_tests_compile_cache(monkeypatch):
    """`ctde replay` in this process would point JAX's persistent cache at ~/.cache/ctde (conftest's stays)."""
    monkeypatch.setenv("CTDE_COMPILE_CACHE", "off")


def _charge(path, leaf):
    """SMAX agent parameters that attack whenever an attack is available and otherwise move east, towards the
    enemy (SMAX's actions: 0-3 moves N, E, S, W, 4 stop, 5+ attack): a fresh policy walks into the walls and
    deals no damage, so every return would be 0."""
    names = [getattr(k, "key", str(k)) for k in path]
    if names[-2:] == ["fc2", "bias"]:
        return jnp.broadcast_to(jnp.array([0, 5, 0, 0, 0, 10, 10, 10], leaf.dtype), leaf.shape)
    return leaf * 0.01 if names[-2:] == ["fc2", "kernel"] else leaf


def _fresh_run(out: Path, *overrides: str, charge: bool = False) -> Path:
    """A run directory with config.yaml, an exported freshly initialized policy and one checkpoint."""
    config = resolve(build_config([*overrides, f"out={out}", "algo.buffer_size=50"]))
    out.mkdir(parents=True)
    save_config(config, out / "config.yaml")
    program = build_program(config)
    state = program.init(seed_keys(config))
    agent_params = program.backbone.agent_params(state.learner)
    if charge:
        agent_params = jax.tree_util.tree_map_with_path(_charge, agent_params)
    export(out, program=program, agent_params=agent_params)
    checkpoints = Checkpoints(out / "checkpoints")
    try:
        checkpoints.save(1, state, agent_params, {"next_chunk": 1})
    finally:
        checkpoints.close()
    return out


@pytest.fixture(scope="module")
def smax_run(tmp_path_factory) -> Path:
    return _fresh_run(tmp_path_factory.mktemp("replay") / "smax3m", "env=smax:3m", "algo=vdn", charge=True)


def _env(run: Path):
    from ctde.training.runner import load_run_config

    return evaluation_env(build_program(resolve(load_run_config(run))).env)


def _gif_frames(path: Path) -> int:
    with Image.open(path) as image:
        return image.n_frames


def _gif_duration_ms(path: Path) -> int:
    with Image.open(path) as image:
        total = 0
        for frame in range(image.n_frames):
            image.seek(frame)
            total += image.info["duration"]
        return total


SEED = 4  # an episode the charging policy wins, in 18 steps


@pytest.fixture(scope="module")
def smax_episode(smax_run):
    """(recorded episode, run_policy's summary, run_policy's episode inputs) of key PRNGKey(SEED)."""
    env, policy = _env(smax_run), load_policy(smax_run)
    key = jax.random.PRNGKey(SEED)
    stats, inputs = run_policy(policy, env, policy.seed_params(0), key, episodes=1)
    return record_episode(smax_run, env, key), stats, inputs[0]  # the run directory, as the CLI gets it


def test_recorded_episode_is_the_evaluations_episode(smax_episode):
    """With the same key, `record_episode` plays `run_policy`'s episode: the same actions, length, return and
    outcome; SMAX's recorded ticks end where the step does."""
    episode, stats, seen = smax_episode
    T = episode.info["length"]
    assert T == stats["episode_length"] == len(seen["obs"])
    assert episode.actions.shape == (T, 3) and episode.rewards.shape == (T,)
    assert jax.tree.leaves(episode.states)[0].shape[0] == T + 1
    np.testing.assert_array_equal(episode.actions[:-1], seen["last_action"][1:])  # what it did at every step
    assert episode.info["return"] == pytest.approx(stats["return"], abs=1e-6) and stats["return"] > 0
    assert episode.info["won"] == bool(stats["win_rate"])
    assert float(np.sum(episode.rewards)) == pytest.approx(episode.info["return"], rel=1e-5)
    ticks = episode.info["substates"]
    assert ticks.unit_positions.shape[:2] == (T, 8)
    np.testing.assert_allclose(ticks.unit_positions[:, -1], episode.states.state.unit_positions[1:])


def test_replay_writes_a_gif_of_every_tick_of_the_evaluated_episode(smax_run, smax_episode, tmp_path):
    episode, stats, _ = smax_episode
    result = replay(smax_run, seed=SEED, out=tmp_path / "replay.gif", quiet=True)
    T = episode.info["length"]
    assert result.episodes == [{"return": episode.info["return"], "won": True, "length": T, "frames": 8 * T + 1}]
    # Every world tick of every step (SMAX: 8 per step), then the final state. Pillow stores a run of identical
    # frames as one frame showing for their summed duration: count the frames by the GIF's duration.
    assert result.frames == 8 * T + 1
    assert T <= _gif_frames(result.path) <= result.frames
    assert _gif_duration_ms(result.path) == result.frames * 1000 // result.fps  # 20 fps: 5 cs per frame
    print(f"\nsmax:3m replay: {result.frames} frames, {result.frames_per_second:.0f} frames/s "
          f"({result.frames_per_cpu_second:.0f} per CPU second), recording {result.record_seconds:.1f} s")


def test_replay_mpe_one_frame_per_state_and_a_checkpointed_model(tmp_path, capsys):
    """MPE: a frame per state. --model replays one of the paradigm's models from the newest checkpoint: here the
    agent the policy was exported from, so it plays the same episode."""
    run = _fresh_run(tmp_path / "spread", "env=mpe:simple_spread", "algo=vdn")
    env, policy = _env(run), load_policy(run)
    stats, _ = run_policy(policy, env, policy.seed_params(0), jax.random.PRNGKey(0), episodes=1)
    assert main(["replay", str(run), "--out", str(tmp_path / "spread.gif"), "--fps", "5"]) == 0
    assert f"episode 1: return {stats['return']:.3f}, length 25\n" in capsys.readouterr().out
    assert _gif_duration_ms(tmp_path / "spread.gif") == 26 * 200  # 25 steps: 26 states

    agent = replay(run, model="agent", out=tmp_path / "agent.gif", quiet=True)
    assert agent.frames == 26 and agent.episodes[0]["return"] == pytest.approx(stats["return"], rel=1e-6)
    assert stats["return"] != 0
    with pytest.raises(ConfigError, match="not a model of paradigm ctde"):
        replay(run, model="teacher", out=tmp_path / "x.gif", quiet=True)


def test_replay_errors_are_one_clear_message(smax_run, tmp_path, capsys):
    no_policy = tmp_path / "no_policy"
    no_policy.mkdir()
    shutil.copy(smax_run / "config.yaml", no_policy / "config.yaml")
    assert main(["replay", str(no_policy)]) == 2
    assert "no exported policy" in capsys.readouterr().err

    toy = tmp_path / "toy"
    toy.mkdir()
    save_config(resolve(build_config(["env=toy:hallway", "algo=vdn", f"out={toy}"])), toy / "config.yaml")
    assert main(["replay", str(toy)]) == 2
    assert "renders SMAX (smax:*) and MPE (mpe:*)" in capsys.readouterr().err

    assert main(["replay", str(smax_run), "--out", str(tmp_path / "x.avi")]) == 2
    assert "writes .gif" in capsys.readouterr().err
    assert main(["replay", str(smax_run), "--episodes", "0"]) == 2
    assert "--episodes must be at least 1" in capsys.readouterr().err
    assert main(["replay", str(smax_run), "--run-seed", "1"]) == 2
    assert "trained 1 seed" in capsys.readouterr().err
    if shutil.which("ffmpeg") is None:
        assert main(["replay", str(smax_run), "--out", str(tmp_path / "x.mp4")]) == 2
        assert "needs ffmpeg" in capsys.readouterr().err
