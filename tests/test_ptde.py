"""PTDE: personalized global information (GIP), the GIU ablation, two-stage training, distilled execution."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.nets.ptde import PersonalizedGlobalInfo, UnifiedGlobalInfo


def _two_agent_inputs(state_dim=6, x_dim=5):
    x = jax.random.normal(jax.random.PRNGKey(0), (1, 2, x_dim))  # two agents with different local inputs
    state = jax.random.normal(jax.random.PRNGKey(1), (1, state_dim))  # one shared state
    return x, state


def test_gip_personalizes_the_state_and_giu_does_not():
    x, state = _two_agent_inputs()
    gip = PersonalizedGlobalInfo(state_dim=6, z_dim=4, hypernet_hidden=8)
    params = gip.init(jax.random.PRNGKey(2), x, state)
    mu, var = gip.apply(params, x, state)
    assert mu.shape == var.shape == (1, 2, 4)
    assert float(var.min()) >= 0.01
    # The effective weights each agent applies to the same state differ with its local input...
    hyper = params["params"]
    w = jax.nn.relu(x @ hyper["hyper_w_hidden"]["kernel"] + hyper["hyper_w_hidden"]["bias"])
    w = (w @ hyper["hyper_w_out"]["kernel"] + hyper["hyper_w_out"]["bias"]).reshape(1, 2, 6, 4)
    assert float(jnp.abs(w[0, 0] - w[0, 1]).max()) > 1e-3
    assert float(jnp.abs(mu[0, 0] - mu[0, 1]).max()) > 1e-4
    # ...and agents with the same local input read the state identically.
    same = jnp.broadcast_to(x[:, :1], x.shape)
    mu_same, _ = gip.apply(params, same, state)
    np.testing.assert_allclose(np.asarray(mu_same[0, 0]), np.asarray(mu_same[0, 1]))

    giu = UnifiedGlobalInfo(n_agents=2, z_dim=4, hidden=8)
    params = giu.init(jax.random.PRNGKey(3), x, state)
    mu, _ = giu.apply(params, x, state)
    np.testing.assert_array_equal(np.asarray(mu[0, 0]), np.asarray(mu[0, 1]))


def test_exported_student_policy_matches_the_paradigm_and_has_no_state_path():
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import make_paradigm
    from ctde.paradigms.base import AgentInputs
    from ctde.audit import audit_policy
    from ctde.policy import make_policy
    from ctde.algos.rollout import run_policy

    config = build_config(["env=smax:3m", "paradigm=ptde"])
    env = make_env(config.env)
    paradigm = make_paradigm(config, env.spec)
    params = jax.vmap(paradigm.init)(jax.random.split(jax.random.PRNGKey(0), 1))
    spec, exported = paradigm.export(params)
    assert set(exported) == {"trunk", "head", "student"}  # no hypernetwork, nothing that reads the state
    spec.update(n_agents=3, n_actions=env.spec.n_actions, obs_dim=env.spec.obs_dim, state_dim=env.spec.state_dim,
                seeds=1)
    policy = make_policy(spec, exported)
    _, episodes = run_policy(policy, env, policy.seed_params(0), jax.random.PRNGKey(1), episodes=2)
    ep = episodes[0]
    inputs = AgentInputs(obs=ep["obs"], last_action=ep["last_action"], avail=ep["avail"], state=ep["state"],
                         reset=jnp.arange(len(ep["obs"])) == 0)
    _, out = paradigm.apply(jax.tree.map(lambda x: x[0], params), paradigm.initial_carry(()), inputs)
    scores = policy.unroll(policy.seed_params(0), ep["obs"], ep["last_action"], ep["avail"])
    np.testing.assert_allclose(np.asarray(scores), np.asarray(out.scores["student"]), rtol=1e-5, atol=1e-5)
    assert audit_policy(policy, episodes=episodes).passed


FAST_STAGE_2 = ("ptde.distill_batch=256", "ptde.distill_lr=1e-3", "ptde.distill_log_every=100")


@pytest.mark.slow
def test_two_stage_training_on_hallway(run_training):
    """Stage 1 (GIP teacher) learns the rendezvous; stage 2 drives the held-out regression loss down and the
    student picks the teacher's greedy action on most held-out rows. The student cannot know where the other
    agent stands (the teacher reads it from the state), so retention is partial here; see the two-step test for
    full retention where the state is locally observable."""
    result = run_training("env=toy:hallway", "algo=qmix", "paradigm=ptde", "steps=12000", "seeds=3",
                          "eval.interval=3000", "algo.epsilon_anneal_steps=6000", "algo.updates_per_rollout=4",
                          "ptde.distill_steps=3000", *FAST_STAGE_2)
    record = json.loads((result.run_dir / "distill.json").read_text())
    assert np.median(record["teacher"]["win_rate"]) >= 0.9
    rows = [json.loads(line) for line in (result.run_dir / "distill_metrics.jsonl").read_text().splitlines()]
    for seed in {r["seed"] for r in rows}:
        mine = [r for r in rows if r["seed"] == seed]
        assert mine[0]["step"] == 0  # the untrained student
        # What the teacher draws from the other agent's position is not locally predictable, so the loss has a
        # floor; it must still fall well below the untrained student's.
        assert mine[-1]["heldout_loss"] < 0.5 * mine[0]["heldout_loss"]
    assert np.median(record["heldout_action_agreement"]) >= 0.75
    assert (result.run_dir / "distillation_loss.png").exists()
    assert json.loads((result.run_dir / "policy" / "policy.json").read_text())["network"] == "ptde_student"


@pytest.mark.slow
def test_student_retains_the_teacher_where_the_state_is_locally_observable(run_training):
    """On the two-step game every agent observes the whole state, so the teacher's mu is a function of the
    student's own input and can be matched exactly: PRR (by return; the game has no wins) must be >= 0.95."""
    result = run_training("env=toy:two_step", "algo=qmix", "paradigm=ptde", "steps=6000", "seeds=3",
                          "eval.interval=1500", "algo.epsilon_anneal_steps=3000", "algo.updates_per_rollout=4",
                          "ptde.distill_steps=1000", *FAST_STAGE_2)
    record = json.loads((result.run_dir / "distill.json").read_text())
    assert np.median(record["teacher"]["return"]) >= 7.9
    assert record["prr_metric"] == "return"
    assert np.median(record["prr"]) >= 0.95


@pytest.mark.slow
def test_ptde_on_mappo_distils_the_actor(run_training):
    """PTDE inside MAPPO's actor on the two-step game (state locally observable): the GIP actor reaches the
    optimum 8 and the distilled student keeps it (PRR by return >= 0.95); the export is the PTDE student."""
    result = run_training("env=toy:two_step", "algo=mappo", "paradigm=ptde", "steps=12000", "seeds=3",
                          "eval.interval=3000", "rollout.length=40", "ppo.epochs=10", "log.chunk_evals=4",
                          "ptde.distill_steps=1000", *FAST_STAGE_2)
    record = json.loads((result.run_dir / "distill.json").read_text())
    assert np.median(record["teacher"]["return"]) >= 7.9
    assert np.median(record["prr"]) >= 0.95
    assert json.loads((result.run_dir / "policy" / "policy.json").read_text())["network"] == "ptde_student"


@pytest.mark.slow
def test_resume_in_stage_two_reproduces_the_student(run_training, tmp_path):
    from ctde.policy import load_policy
    from ctde.training.runner import evaluate, train

    result = run_training("env=toy:two_step", "algo=vdn", "paradigm=ptde", "steps=2000", "eval.interval=1000",
                          "algo.epsilon_anneal_steps=1000", "ptde.distill_steps=3000", *FAST_STAGE_2)
    uninterrupted = load_policy(result.run_dir / "policy").params
    # Simulate a kill in stage 2: drop the newest stage-2 checkpoint and everything written after it.
    stage2 = sorted((p for p in (result.run_dir / "checkpoints_distill").iterdir() if p.name.isdigit()),
                    key=lambda p: int(p.name))
    assert len(stage2) == 2
    import shutil

    shutil.rmtree(stage2[-1])
    shutil.rmtree(result.run_dir / "policy")
    train(resume=result.run_dir, quiet=True)
    resumed = load_policy(result.run_dir / "policy").params
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    report = evaluate(result.run_dir, model="student", episodes=4, quiet=True)
    assert report["model"] == "student"
