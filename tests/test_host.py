"""Host-side environments and the host loop (ctde.envs.host, ctde.training.host), on the SMAC-interface test
environment `hostenv:ctde.envs.host.testenv:TinyBattle`; GRF where gfootball is installed."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from ctde.cli import main as cli
from ctde.envs.host import HostEnvFactory
from ctde.envs.host.workers import HostEnvs
from ctde.errors import ConfigError, IncompatibleError

TINY = "hostenv:ctde.envs.host.testenv:TinyBattle"
# One configuration for every run here, so that JAX's compilation cache serves them all after the first.
FAST = (f"env={TINY}", "algo=qmix", "eval.interval=100", "eval.episodes=2", "rollout.num_envs=2",
        "algo.batch_size=4", "algo.buffer_size=32", "log.chunk_evals=1", "algo.epsilon_anneal_steps=300")


def _random_episode(env, seed: int, rng) -> list[dict]:
    steps = [env.reset(seed)]
    while not steps[-1]["done"]:
        steps.append(env.step([rng.choice(np.flatnonzero(a)) for a in steps[-1]["avail"]]))
    return steps


def test_adapter_contract_and_unlimited_sight():
    env = HostEnvFactory("hostenv", "ctde.envs.host.testenv:TinyBattle", views=("full_obs",)).make(0)
    info = env.info()
    assert (info["n_agents"], info["n_actions"], info["obs_dim"], info["episode_limit"]) == (2, 7, 15, 12)
    rng = np.random.default_rng(0)
    outcomes = set()
    for seed in range(30):
        steps = _random_episode(env, seed, rng)
        assert _random_episode(env, seed, np.random.default_rng(1))[0]["obs"].tolist() == steps[0]["obs"].tolist()
        last = steps[-1]
        # A decided battle is terminal, a time-limit cut is not; wins only on decided battles.
        outcomes.add("won" if last["won"] else "terminal" if last["terminal"] else "cut")
        assert last["terminal"] == (last["won"] or not last["alive"].any())
        for step in steps:
            obs, full = step["obs"], step["views"]["full_obs"]
            assert obs.shape == full.shape == (2, 15)
            seen = obs != 0
            # Unlimited sight shows what the agent sees, at the same scale, and more.
            np.testing.assert_allclose(full[seen], obs[seen], rtol=1e-5)
            dead = ~step["alive"]
            assert not full[dead].any() and not obs[dead].any()
    assert outcomes >= {"won", "cut"}
    far = [s for seed in range(5) for s in _random_episode(env, seed, rng)
           if (s["views"]["full_obs"][:, 4:9] != 0).any(axis=1).sum() > (s["obs"][:, 4:9] != 0).any(axis=1).sum()]
    assert far, "the enemy starts beyond sight range: the unlimited view must show it where obs does not"


def test_worker_processes_step_exactly_as_in_process():
    factory = HostEnvFactory("hostenv", "ctde.envs.host.testenv:TinyBattle")
    remote, local = HostEnvs(factory, [3, 4], processes=True), HostEnvs(factory, [3, 4], processes=False)
    try:
        assert remote.infos == local.infos
        got = [envs.reset([0, 1], [7, 8]) for envs in (remote, local)]
        for _ in range(3):
            assert all(np.array_equal(a["obs"], b["obs"]) and a["reward"] == b["reward"] for a, b in zip(*got))
            actions = [[1, 1], [1, 1]]
            got = [envs.step([0, 1], actions) for envs in (remote, local)]
    finally:
        remote.close()
        local.close()
    assert all(w.process.poll() is not None for w in remote.workers) if remote.workers else True


def test_refusals_name_the_problem_and_the_fix(tmp_path):
    from ctde.config import build_config
    from ctde.training.resolve import resolve

    def refused(*options):
        return resolve(build_config([*options, f"out={tmp_path / 'x'}"]))

    with pytest.raises(ConfigError, match="rollout.auto_reset and rollout.length do not apply"):
        refused(f"env={TINY}", "algo=maddpg", "rollout.length=20")
    with pytest.raises(ConfigError, match="Unknown GRF scenario 'academy_3_vs_3'"):
        refused("env=grf:academy_3_vs_3")
    if importlib.util.find_spec("smac") is None:
        with pytest.raises(ConfigError, match=r"pip install git\+https://github.com/oxwhirl/smac.git"):
            refused("env=smac:3m", "paradigm=cadp")
    if importlib.util.find_spec("gfootball") is not None:
        with pytest.raises(IncompatibleError, match="GRF's observations have no sight limit"):
            refused("env=grf:academy_3_vs_1_with_keeper", "paradigm=ctds")
    # The test environment has SMAC's sight methods: IGM-DA and CTDS are accepted there.
    assert resolve(build_config([f"env={TINY}", "paradigm=ctds", f"out={tmp_path / 'y'}"])).paradigm.name == "ctds"


@pytest.mark.slow  # 83 s in make test on 2026-12-07 (cold, two workers)
def test_host_loop_trains_resumes_exactly_evaluates_and_audits(run_training, tmp_path):
    whole = run_training(*FAST, "steps=300", "rollout.host_processes=false", name="whole")
    assert whole.summary["decentralization audit"].startswith("PASS")
    rows = [r for r in whole.rows]
    assert [r["block"] for r in rows] == [0, 1, 2] and rows[-1]["env_steps"] >= 300
    assert rows[-1]["updates"] > 0 and np.isfinite(rows[-1]["train/loss"])

    # Interrupted at 100 steps, then resumed to 300, with the environments in worker processes this time:
    # every metric as the uninterrupted in-process run's (the episodes are seeded from the checkpointed keys).
    run_training(*FAST, "steps=100", "rollout.host_processes=true", name="cut")
    cut = tmp_path / "cut"
    assert cli(["train", "--resume", str(cut), "steps=300", "log.progress=false"]) == 0
    resumed = [json.loads(line) for line in (cut / "metrics.jsonl").read_text().splitlines()]
    drop = {"wall_seconds"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == \
           [{k: v for k, v in r.items() if k not in drop} for r in rows]

    assert cli(["eval", str(cut), "--episodes", "3"]) == 0
    report = json.loads((cut / "eval_agent.json").read_text())
    assert report["episodes_per_seed"] == 3 and 0 <= report["mean_std"]["win_rate"]["mean"] <= 1
    assert cli(["audit", str(cut / "policy")]) == 0
    assert (cut / "report.md").exists()


def test_mappo_on_the_host_loop_resumes_exactly(run_training, tmp_path):
    # Fixed-length rollouts of continuing episodes (auto-reset on the host), consumed by MAPPO's unchanged epochs;
    # every block starts fresh episodes, so a resumed run (here in worker processes) repeats the whole one.
    ppo = (f"env={TINY}", "algo=mappo", "eval.interval=100", "eval.episodes=2", "rollout.num_envs=2",
           "log.chunk_evals=1", "rollout.length=20", "ppo.segment_length=10", "ppo.minibatches=2")
    whole = run_training(*ppo, "steps=200", "rollout.host_processes=false", name="whole")
    assert whole.summary["decentralization audit"].startswith("PASS")
    assert all(r["updates"] > 0 and r["train/episodes"] > 0 for r in whole.rows)
    run_training(*ppo, "steps=100", "rollout.host_processes=true", name="cut")
    assert cli(["train", "--resume", str(tmp_path / "cut"), "steps=200", "log.progress=false"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(whole.rows)


@pytest.mark.slow  # about 50 s of CPU: two stages, three runs
def test_ctedd_on_maddpg_on_the_host_loop_resumes_exactly_and_exports_the_local_policy(run_training, tmp_path):
    # MADDPG replays whole episodes as value decomposition does; on the host its actors collect by sampling their
    # softmax. Stage 1 (the global policies on the state) stopped and resumed, in worker processes, repeats the
    # in-process run; stage 2 distils the local policies from episodes played on the host, and they pass the audit.
    ctedd = (f"env={TINY}", "algo=maddpg", "paradigm=ctedd", "eval.interval=100", "eval.episodes=2",
             "rollout.num_envs=2", "algo.batch_size=4", "algo.buffer_size=32", "log.chunk_evals=1",
             "ctedd.distill_episodes=4", "ctedd.distill_steps=20", "ctedd.message_bits=1")
    whole = run_training(*ctedd, "steps=200", "rollout.host_processes=false", name="whole")
    assert whole.summary["decentralization audit"].startswith("PASS")
    assert all(r["updates"] > 0 and np.isfinite(r["train/critic_loss"]) for r in whole.rows)
    assert json.loads((whole.run_dir / "distill.json").read_text())["student"]
    run_training(*ctedd, "steps=100", "rollout.host_processes=true", name="cut")
    assert cli(["train", "--resume", str(tmp_path / "cut"), "steps=200", "log.progress=false"]) == 0
    resumed = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rows]  # noqa: E731
    assert strip(resumed) == strip(whole.rows)
    stage_2 = [json.loads((d / "distill.json").read_text()) for d in (whole.run_dir, tmp_path / "cut")]
    assert stage_2[0]["student"] == stage_2[1]["student"]


@pytest.mark.slow  # about 67 s
def test_ptde_two_stages_with_two_seeds_on_a_host_env(run_training):
    # Two seeds vmapped, their 2 x 2 environments in worker processes (the default for several), stage 2 collected
    # on the host.
    result = run_training(*FAST, "steps=100", "seeds=2", "paradigm=ptde", "ptde.distill_episodes=4",
                          "ptde.distill_steps=20", "ptde.distill_batch=8", "ptde.distill_log_every=10")
    assert result.summary["decentralization audit"].startswith("PASS")
    assert any("PRR" in key for key in result.summary)
    assert sorted((r["seed"], r["block"]) for r in result.rows) == [(0, 0), (1, 0)]
    assert all(r["env_steps"] >= 100 and r["train/episodes"] > 0 for r in result.rows)


@pytest.mark.skipif(importlib.util.find_spec("gfootball") is None,
                    reason="gfootball is not installed (the optional extra: `make grf`)")
def test_grf_features_and_a_short_run(run_training):
    from ctde.envs.host.grf import GRFEnv

    env = GRFEnv("academy_3_vs_1_with_keeper", seed=0)
    info = env.get_env_info()
    env.reset(seed=0)
    obs, state = np.asarray(env.get_obs()), np.asarray(env.get_state())
    assert obs.shape == (3, info["obs_shape"]) and state.shape == (info["state_shape"],)
    reward, terminated, step_info = env.step([0, 0, 0])
    assert "battle_won" in step_info
    env.close()
    result = run_training("env=grf:academy_3_vs_1_with_keeper", "algo=qmix", "steps=300", "eval.interval=150",
                          "eval.episodes=2", "rollout.num_envs=1", "algo.batch_size=2", "algo.buffer_size=16")
    assert result.summary["decentralization audit"].startswith("PASS")


def test_adapter_closes_the_game_inside_a_wrapper_without_close():
    """SMACv2's StarCraftCapabilityEnvWrapper inherits MultiAgentEnv.close (NotImplementedError), its game in .env."""
    from ctde.envs.host.adapter import SMACAdapter
    from ctde.envs.host.testenv import TinyBattle

    closed = []

    class Game(TinyBattle):
        def close(self):
            closed.append(True)

    class Wrapper:
        def __init__(self):
            self.env = Game()

        def __getattr__(self, name):
            return getattr(self.env, name)

        def close(self):
            raise NotImplementedError

    SMACAdapter(Wrapper(), "hostenv:wrapper").close()
    assert closed == [True]
