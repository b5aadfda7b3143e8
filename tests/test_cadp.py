"""CADP: the pruning loss by hand, its presence after T on every backbone, the C/D models, the exported D policy
and its audit, configuration, and learning on a tiny task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import build_config
from ctde.envs import make_env
from ctde.errors import ConfigError
from ctde.nets.cadp import pruning_loss, self_confidence
from ctde.paradigms import make_paradigm
from ctde.paradigms.base import AgentInputs, ParadigmOutput
from ctde.audit import audit_policy, audit_scores_fn
from ctde.policy import load_policy, make_policy
from ctde.training.resolve import resolve

# A constructed attention matrix: 2 heads, 3 agents; rows sum to 1.
ATTENTION = np.array([
    [[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]],
    [[1.0, 0.0, 0.0], [0.3, 0.4, 0.3], [0.0, 0.0, 1.0]],
], np.float32)
# Σ over heads and agents of −log c_ii, divided by heads · n²: the mean over heads and n × n entries.
ATTENTION_LOSS = (-np.log(0.5) - np.log(0.8) - np.log(0.6) - np.log(1.0) - np.log(0.4) - np.log(1.0)) / (2 * 9)


def _cadp(*overrides, env_id="smax:3m"):
    config = resolve(build_config([f"env={env_id}", "paradigm=cadp", "out=/tmp/unused", *overrides]))
    env = make_env(config.env)
    return config, env, make_paradigm(config, env.spec)


def _exported(paradigm, env, params, seeds):
    spec, exported = paradigm.export(params)
    spec.update(n_agents=env.spec.n_agents, n_actions=env.spec.n_actions, obs_dim=env.spec.obs_dim,
                state_dim=env.spec.state_dim, seeds=seeds)
    return make_policy(spec, exported)


# -- the pruning loss ------------------------------------------------------------------------------------


def test_pruning_loss_by_hand_and_zero_at_identity():
    assert float(pruning_loss(jnp.asarray(ATTENTION))) == pytest.approx(ATTENTION_LOSS, rel=1e-6)
    assert float(pruning_loss(jnp.broadcast_to(jnp.eye(3), (4, 3, 3)))) == 0.0
    np.testing.assert_allclose(self_confidence(jnp.asarray(ATTENTION)), [0.75, 0.6, 0.8], rtol=1e-6)


def test_auxiliary_loss_is_a_masked_mean_weighted_by_a_step_at_T():
    """[T=2, B=2] steps: the constructed matrix at three valid steps, garbage (uniform) at the padded one."""
    _, _, paradigm = _cadp("cadp.alpha=0.7", "cadp.prune_start=1000")
    uniform = np.full((2, 3, 3), 1 / 3, np.float32)
    attention = jnp.asarray(np.stack([np.stack([ATTENTION, ATTENTION]), np.stack([ATTENTION, uniform])]))
    mask = jnp.broadcast_to(jnp.array([[True, True], [True, False]])[..., None], (2, 2, 3))  # per agent
    output = ParadigmOutput(scores={}, extras={"attention": attention})
    before, metrics_before = paradigm.auxiliary_loss(None, output, None, mask, jnp.int32(999))
    after, metrics = paradigm.auxiliary_loss(None, output, None, mask, jnp.int32(1000))
    assert float(before) == 0.0 and float(metrics_before["pruning_weight"]) == 0.0
    assert float(metrics_before["pruning_loss"]) == pytest.approx(ATTENTION_LOSS, rel=1e-6)  # logged unweighted
    assert float(after) == pytest.approx(0.7 * ATTENTION_LOSS, rel=1e-6)
    assert float(metrics["pruning_weight"]) == pytest.approx(0.7)
    assert float(metrics["self_confidence"]) == pytest.approx(np.mean([0.5, 0.8, 0.6, 1.0, 0.4, 1.0]), rel=1e-6)
    # A dead agent (MAPPO masks them) drops out of the mean: agent 1 masked everywhere leaves agents 0 and 2.
    alive = mask.at[..., 1].set(False)
    _, metrics_dead = paradigm.auxiliary_loss(None, output, None, alive, jnp.int32(1000))
    kept = (-np.log(0.5) - np.log(0.6) - np.log(1.0) - np.log(1.0)) / 4 / 3  # heads averaged, ÷ n
    assert float(metrics_dead["pruning_loss"]) == pytest.approx(kept, rel=1e-6)
    assert float(metrics_dead["self_confidence"]) == pytest.approx(np.mean([0.5, 0.6, 1.0, 1.0]), rel=1e-6)


@pytest.mark.parametrize("algo", ["iql", "vdn", "qmix", "qplex"])
def test_pruning_term_reaches_the_update_after_T_and_not_before_on_every_backbone(algo):
    """Through the backbone's own `update` (the released code lost the term for QPLEX by a name typo):
    before T the loss is the TD loss alone; from T on it is TD + α·L_p, and the query weights move
    differently because of it."""
    from ctde.algos import make_backbone
    from ctde.algos.rollout import collect
    from ctde.nets.actions import epsilon_greedy

    config, env, paradigm = _cadp(f"algo={algo}", "cadp.prune_start=5000", "algo.batch_size=8",
                                  env_id="toy:hallway")
    backbone = make_backbone(config, env, paradigm)
    backbone.trim_lengths = backbone.trim_lengths[-1:]  # one update branch: a third of the compile time
    state = jax.jit(backbone.init)(jax.random.PRNGKey(0))
    episodes, _ = collect(env, paradigm, state.params.agents, jax.random.PRNGKey(1), num_envs=8,
                          length=env.spec.episode_limit, auto_reset=False, model=paradigm.collect_model,
                          select_actions=epsilon_greedy(jnp.float32(1.0)))
    state = state.replace(replay=jax.jit(backbone.replay.add)(state.replay, episodes))
    learner = (state.params, state.target_params, state.opt_state, state.updates)
    update = jax.jit(backbone.update)
    key = jax.random.PRNGKey(3)
    (params_before, *_), before = update(learner, state.replay, jnp.int32(4999), key)
    (params_after, *_), after = update(learner, state.replay, jnp.int32(5000), key)
    alpha = config.cadp.alpha
    assert alpha == (0.5 if algo == "qmix" else 1.0)
    assert float(before["pruning_weight"]) == 0.0
    assert float(before["loss"]) == pytest.approx(float(before["td_loss"]), abs=1e-7)
    assert float(after["pruning_weight"]) == pytest.approx(alpha)
    assert float(after["pruning_loss"]) > 0.01
    assert float(after["loss"] - after["td_loss"]) == pytest.approx(alpha * float(after["pruning_loss"]), rel=1e-5)
    query_before = np.asarray(params_before.agents["agent"]["params"]["query"]["kernel"])
    query_after = np.asarray(params_after.agents["agent"]["params"]["query"]["kernel"])
    assert np.abs(query_after - query_before).max() > 1e-6


# -- the C and D models ----------------------------------------------------------------------------------


def _random_inputs(spec, steps=10, seed=0) -> AgentInputs:
    rng = np.random.default_rng(seed)
    avail = rng.random((steps, spec.n_agents, spec.n_actions)) < 0.7
    avail[..., 0] = True
    return AgentInputs(obs=jnp.asarray(rng.normal(size=(steps, spec.n_agents, spec.obs_dim)), jnp.float32),
                       last_action=jnp.asarray(rng.integers(-1, spec.n_actions, (steps, spec.n_agents)), jnp.int32),
                       avail=jnp.asarray(avail), state=jnp.zeros((steps, spec.state_dim)),
                       reset=jnp.arange(steps) == 0)


@pytest.mark.parametrize("residual", [False, True])
def test_one_pass_gives_both_models_and_d_is_c_with_identity_attention(residual):
    """Queries and keys that read only the agent id, scaled up, make c = I: C's scores then equal D's."""
    config, env, paradigm = _cadp(f"cadp.residual={residual}")
    params = paradigm.init(jax.random.PRNGKey(0))
    inputs = _random_inputs(env.spec)
    apply = jax.jit(lambda p: paradigm.apply(p, paradigm.initial_carry(()), inputs)[1])
    out = apply(params)
    c, d = np.asarray(out.scores["centralized"]), np.asarray(out.scores["decentralized"])
    assert c.shape == d.shape == (len(inputs.obs), env.spec.n_agents, env.spec.n_actions)
    assert np.abs(c - d).max() > 1e-3, "random attention should make C differ from D"

    n, heads, width = env.spec.n_agents, config.cadp.heads, config.cadp.head_dim
    kernel = np.zeros(params["agent"]["params"]["query"]["kernel"].shape, np.float32)
    for h in range(heads):
        for i in range(n):
            kernel[kernel.shape[0] - n + i, h * width + i] = 20.0  # the id one-hot is x's last n entries
    forced = jax.tree.map(lambda x: x, params)
    forced["agent"]["params"]["query"]["kernel"] = jnp.asarray(kernel)
    forced["agent"]["params"]["key"]["kernel"] = jnp.asarray(kernel)
    out = apply(forced)
    attention = np.asarray(out.extras["attention"])
    np.testing.assert_allclose(attention, np.broadcast_to(np.eye(n), attention.shape), atol=1e-6)
    np.testing.assert_allclose(np.asarray(out.scores["centralized"]), np.asarray(out.scores["decentralized"]),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_exported_policy_is_d_alone_equals_it_and_passes_the_audit_while_c_fails(tmp_path, residual):
    _, env, paradigm = _cadp(f"cadp.residual={residual}")
    params = jax.vmap(paradigm.init)(jax.random.split(jax.random.PRNGKey(0), 2))
    policy = _exported(paradigm, env, params, seeds=2)
    names = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(policy.params)[0]}
    assert not any("query" in name or "key" in name.split("/") for name in names), names
    assert policy.spec["network"] == "cadp_decentralized"
    assert policy.spec["inputs"] == ["obs", "last_action", "agent_id"]
    policy.save(tmp_path / "policy")
    policy = load_policy(tmp_path / "policy")

    seed1 = jax.tree.map(lambda x: x[1], params)
    centralized_model = jax.jit(lambda inputs: paradigm.apply(seed1, paradigm.initial_carry(()), inputs)[1].scores)
    inputs = _random_inputs(env.spec, steps=12, seed=3)
    scores = policy.unroll(policy.seed_params(1), inputs.obs, inputs.last_action, inputs.avail)
    np.testing.assert_allclose(np.asarray(scores), np.asarray(centralized_model(inputs)["decentralized"]),
                               rtol=1e-5, atol=1e-5)
    report = audit_policy(policy)
    assert report.passed, report.message
    assert report.own_sensitivity > 1e-4

    def centralized(obs, last_action, avail, state):  # the C model: a deliberately leaky "policy"
        return centralized_model(AgentInputs(obs=obs, last_action=last_action, avail=avail, state=state,
                                             reset=jnp.arange(obs.shape[0]) == 0))["centralized"]

    spec = policy.spec
    leaky = audit_scores_fn(centralized, spec["n_agents"], spec["obs_dim"], spec["n_actions"], spec["state_dim"])
    assert not leaky.passed and "not decentralized" in leaky.message


# -- configuration ---------------------------------------------------------------------------------------


def test_cadp_options_resolve_and_are_refused_without_cadp():
    for algo, alpha, prune_start in (("qmix", 0.5, 700_000), ("vdn", 1.0, 700_000), ("qplex", 1.0, 700_000),
                                     ("iql", 1.0, 700_000), ("mappo", 0.5, 3_000_000)):
        resolved = resolve(build_config(["paradigm=cadp", f"algo={algo}"])).cadp
        assert (resolved.alpha, resolved.prune_start) == (alpha, prune_start)
    config = resolve(build_config(["paradigm=cadp", "algo=qplex", "cadp.alpha=0.25", "cadp.prune_start=7e5"]))
    assert config.cadp.alpha == 0.25 and config.cadp.prune_start == 700_000
    assert resolve(build_config(["paradigm=ctde"])).cadp.alpha is None
    with pytest.raises(ConfigError, match=r"cadp.alpha, cadp.residual configure paradigm=cadp, but paradigm=ctde.*Add paradigm=cadp"):
        resolve(build_config(["cadp.alpha=1.0", "cadp.residual=true"]))
    with pytest.raises(ConfigError, match="cadp.prune_start must be non-negative"):
        resolve(build_config(["paradigm=cadp", "cadp.prune_start=-1"]))
    with pytest.raises(ConfigError, match="valid: ctde, cadp, ptde, igm_da, ctds"):
        build_config(["paradigm=cadpp"])


# -- learning --------------------------------------------------------------------------------------------


def _median_at(rows, block, metric):
    return float(np.median([r[metric] for r in rows if r["block"] == block]))


@pytest.mark.slow
def test_cadp_learns_the_hallway_rendezvous_and_d_catches_up_with_c_after_pruning(run_training, tmp_path):
    """toy:hallway: each agent sees only its own cell and the time, and both must enter the goal on the same
    step. A teammate's input reveals its cell, so advice lets C enter as soon as both are next to the goal; a
    decentralized policy must instead learn a timing convention.

    Settings (9 vmapped seeds, greedy tests of 32 episodes every 4k env steps): 16k env steps, Adam 1e-3,
    epsilon annealed over the first half, pruning from 8k env steps with alpha = 10. With the QMIX default
    alpha = 0.5 c_ii stayed near 0.96 and C kept exploiting the remaining attention; the paper reports final
    performance insensitive to alpha in [0.01, 100], and a short test needs the strong end of that range.

    Measured at these settings on 9 vmapped seeds (2026-11-22): C wins 1.0 at some test on every seed (at 8k on
    8 of 9; D then 0-0.59); at 16k c_ii >= 0.997 everywhere and D's win rate within 0.04 of C's or above it on
    every seed. After pruning C has to find the timing convention D needs, and 2 of 9 seeds settled instead in
    the "enter at once" equilibrium (C 0.41, D 0.38 / 0.78). Which seeds do moves with float rounding (the same
    3 seeds, in programs compiled differently, ended with 2, 1 and 2 of them solved), so the final win rate's
    median over 3 seeds, asserted before, fails about one run in five, and is not asserted.

    Re-measured on 2026-12-07 after the TD objectives moved to ctde.algos.td_objectives (the same computation in
    another float order, so other trajectories): 9 of 9 seeds had C at 1.0 at some test, c_ii >= 0.997, and D's
    return within 0.1 of C's on 7 of 9 (shortfalls 0.375 and 0.125 on the other two). A run of 3 seeds then
    failed the median shortfall (0, 0.69, 0.44): with about 2 seeds in 9 short, a median over 3 fails about one
    run in eight, over 9 about one in thirty-five, hence 9 seeds (vmapped: the run costs about twice 3 seeds').

    Asserted, as medians over seeds: attention is used before pruning (c_ii < 0.7; 0.5 is uniform over 2
    agents); C solves the task (best test win rate >= 0.9); after pruning c_ii >= 0.95 and D is no more than
    0.1 below C in greedy return (pruning has carried C's behaviour over to D)."""
    result = run_training("env=toy:hallway", "algo=qmix", "paradigm=cadp", "steps=16000", "eval.interval=4000",
                          "algo.lr=1e-3", "algo.epsilon_anneal_steps=8000", "cadp.prune_start=8000", "cadp.alpha=10",
                          "seeds=9",
                          "eval.episodes=32", "algo.updates_per_rollout=4", "log.chunk_evals=4")
    rows = result.rows
    first, last = min(r["block"] for r in rows), max(r["block"] for r in rows)
    assert _median_at(rows, first, "train/self_confidence") < 0.7
    assert _median_at(rows, first, "train/pruning_weight") == 0.0  # 0 until 8k
    assert _median_at(rows, last, "train/pruning_weight") == 10.0
    seeds = sorted({r["seed"] for r in rows})
    best_c = [max(r["test/centralized/win_rate"] for r in rows if r["seed"] == seed) for seed in seeds]
    assert np.median(best_c) >= 0.9, best_c
    assert _median_at(rows, last, "train/self_confidence") >= 0.95
    final = {r["seed"]: r for r in rows if r["block"] == last}
    shortfall = [final[s]["test/centralized/return"] - final[s]["test/decentralized/return"] for s in seeds]
    assert np.median(shortfall) <= 0.1, f"D's return is below C's by {shortfall}"

    # The run's artifacts: both models evaluated from the saved run, the D policy exported and audited.
    from ctde.cli import main

    run_dir = result.run_dir
    for model in ("centralized", "decentralized"):
        assert main(["eval", str(run_dir), "--model", model, "--episodes", "8"]) == 0
        assert (run_dir / f"eval_{model}.json").exists()
    assert main(["audit", str(run_dir / "policy")]) == 0
    assert load_policy(run_dir / "policy").spec["network"] == "cadp_decentralized"
    report = (run_dir / "report.md").read_text()
    assert "| centralized |" in report and "| decentralized |" in report and "cadp.prune_start | 8000" in report


@pytest.mark.slow
def test_cadp_on_mappo_prunes_the_actors_attention(run_training):
    """CADP inside MAPPO's actor on toy:hallway (3 vmapped seeds, 24k env steps, pruning from 8k with alpha 10).

    Measured at these settings: C wins every greedy episode on every seed by 8k; mean c_ii goes 0.47 (8k) ->
    0.66 (16k) -> 0.86 (24k). PPO makes ten minibatch updates per 320-step rollout here, far fewer than value
    decomposition's, and Adam makes the pace insensitive to alpha (10 and 100 gave the same c_ii curve), so
    pruning is slower than on QMIX and D is not yet asserted to have caught up with C (it reached 0.44-1.0)."""
    result = run_training("env=toy:hallway", "algo=mappo", "paradigm=cadp", "steps=24000", "eval.interval=8000",
                          "rollout.length=40", "ppo.epochs=10", "seeds=3", "eval.episodes=32", "log.chunk_evals=1",
                          "cadp.prune_start=8000", "cadp.alpha=10")
    rows = result.rows
    first, last = min(r["block"] for r in rows), max(r["block"] for r in rows)
    assert _median_at(rows, first, "train/pruning_weight") < 10.0  # off until 8k
    assert _median_at(rows, last, "train/pruning_weight") == 10.0
    assert _median_at(rows, first, "train/self_confidence") < 0.6
    assert _median_at(rows, last, "train/self_confidence") >= 0.8
    assert _median_at(rows, last, "test/centralized/win_rate") >= 0.9
    policy = load_policy(result.run_dir / "policy")
    assert policy.spec["network"] == "cadp_decentralized"
    assert "query" not in policy.params["params"] and "key" not in policy.params["params"]
    import json

    assert json.loads((result.run_dir / "policy" / "audit.json").read_text())["passed"]
