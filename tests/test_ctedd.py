"""CTEDD: k-bit messages, the entropy term on the local heads, and both stages end to end on a tiny task."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.config import build_config
from ctde.envs import make_env
from ctde.nets.ctedd import binary_message
from ctde.paradigms import make_paradigm
from ctde.paradigms.base import AgentInputs
from ctde.policy import load_policy
from ctde.training.resolve import resolve


@pytest.mark.parametrize("bits", [1, 3])
def test_messages_are_exactly_k_bits_with_a_straight_through_gradient(bits):
    logits = jax.random.normal(jax.random.PRNGKey(bits), (5, 2, bits)) * 3
    for key in (None, jax.random.PRNGKey(7)):
        message = binary_message(logits, key)
        assert message.shape == (5, 2, bits)
        assert np.all(np.isin(np.asarray(message), [0.0, 1.0]))
    np.testing.assert_array_equal(binary_message(logits), (logits > 0).astype(jnp.float32))
    grad = jax.grad(lambda l: jnp.sum(binary_message(l)))(logits)
    sigmoid = jax.nn.sigmoid(logits)
    np.testing.assert_allclose(grad, sigmoid * (1 - sigmoid), rtol=1e-6)
    # With noise a bit is 1 with probability sigmoid(logit).
    noisy = jax.vmap(lambda k: binary_message(logits[0, 0], k))(jax.random.split(jax.random.PRNGKey(0), 20_000))
    np.testing.assert_allclose(noisy.mean(0), sigmoid[0, 0], atol=0.015)


def _paradigm(*overrides: str):
    config = resolve(build_config(["env=toy:hallway", "algo=maddpg", "paradigm=ctedd", *overrides]))
    env = make_env(config.env)
    return make_paradigm(config, env.spec), env.spec


def test_the_entropy_term_trains_the_local_heads_only():
    paradigm, spec = _paradigm("ctedd.entropy_coef=0.5")
    params = paradigm.init(jax.random.PRNGKey(0))
    T, B, n = 2, 3, spec.n_agents
    inputs = AgentInputs(obs=jnp.zeros((T, B, n, spec.obs_dim)), last_action=jnp.zeros((T, B, n), jnp.int32),
                         avail=jnp.ones((T, B, n, spec.n_actions), bool),
                         state=jax.random.normal(jax.random.PRNGKey(1), (T, B, spec.state_dim)),
                         reset=jnp.ones((T, B), bool))

    def loss(p):
        _, output = paradigm.apply(p, paradigm.initial_carry((B,)), inputs)
        return paradigm.auxiliary_loss(p, output, inputs, jnp.ones((T, B, n), bool), jnp.int32(0))[0]

    grads = jax.grad(loss)(params)["global"]["params"]
    trunk = [grads[name] for name in ("trunk_in", "trunk_out")]
    heads = [grads[name] for name in ("head_w1", "head_b1", "head_w2", "head_b2")]
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(trunk)) == 0.0
    assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(heads)) > 1e-4
    # Maximizing entropy: the loss is -alpha * H, and H of a near-uniform policy is near log |A|.
    _, output = paradigm.apply(params, paradigm.initial_carry((B,)), inputs)
    value, metrics = paradigm.auxiliary_loss(params, output, inputs, jnp.ones((T, B, n), bool), jnp.int32(0))
    assert float(value) == pytest.approx(-0.5 * float(metrics["entropy"]))
    assert 0 < float(metrics["entropy"]) <= np.log(spec.n_actions) + 1e-6


@pytest.mark.slow
def test_ctedd_distils_the_global_policies_into_communicating_local_ones(run_training):
    """Hallway: agents in separate corridors must enter the goal on the same step. The global policies see every
    agent's cell; the local ones see their own and one bit from each agent. After stage 2 the local policies
    take the global policies' action on most held-out states and win as often."""
    result = run_training("env=toy:hallway", "algo=maddpg", "paradigm=ctedd", "ctedd.message_bits=1",
                          "steps=12000", "seeds=2", "eval.interval=4000", "ctedd.distill_steps=1000")
    record = json.loads((result.run_dir / "distill.json").read_text())
    assert record["models"] == {"teacher": "global", "student": "local"}
    assert min(record["teacher"]["win_rate"]) >= 0.9
    assert min(record["student"]["win_rate"]) >= 0.9
    assert min(record["heldout_action_agreement"]) >= 0.9
    losses = [json.loads(line) for line in (result.run_dir / "distill_metrics.jsonl").read_text().splitlines()]
    for seed in {r["seed"] for r in losses}:
        mine = [r["heldout_loss"] for r in losses if r["seed"] == seed]
        assert mine[-1] < 0.25 * mine[0], mine  # held-out L_D driven down
    policy = load_policy(result.run_dir / "policy")
    assert policy.spec["network"] == "ctedd_local" and policy.message_bits == 1
    audit = json.loads((result.run_dir / "policy" / "audit.json").read_text())
    assert audit["passed"] and audit["messages"]["passed"]

    from ctde.training.runner import evaluate

    local = evaluate(result.run_dir, model="local", episodes=32, quiet=True)
    global_ = evaluate(result.run_dir, model="global", episodes=32, quiet=True)
    assert local["mean_std"]["win_rate"]["mean"] >= 0.9 and global_["mean_std"]["win_rate"]["mean"] >= 0.9


def test_ctedd_consumes_its_samples_in_collection_order():
    """Consecutive batches of `distill_batch` training rows, `iterations_per_batch` steps each, in the order the
    rows were collected; passes repeat."""
    import optax

    from ctde.training.distill import Dataset, DistillState, _make_chunk

    class Recorder:
        distill_order = "collection"

        @staticmethod
        def student_prediction(student, x, key=None):
            return x * student

    n_rows = 10
    train = jnp.array([True] * 8 + [False] * 2)
    x = jnp.arange(n_rows, dtype=jnp.float32)[:, None]
    data = Dataset(x=x, target=jnp.zeros_like(x), train=train, heldout=~train, inputs=None)
    frozen = optax.sgd(0.0)  # the student stays at weight 1, so every batch's loss is the mean of its x^2
    chunk = _make_chunk(Recorder, frozen, batch_size=3, steps=6, iterations_per_batch=2)
    state = DistillState(student=jnp.float32(1.0), opt_state=frozen.init(jnp.float32(1.0)), step=jnp.int32(0),
                         rng=jax.random.PRNGKey(0))
    _, metrics = chunk(state, data)
    expected_batches = [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5], [6, 7, 0], [6, 7, 0]]
    expected = np.mean([np.mean(np.square(b)) for b in expected_batches])
    assert float(metrics["train_loss"]) == pytest.approx(expected)


def test_ctedd_with_continuous_actions_distils_tanh_actors(run_training):
    """toy:target_sum: L_D compares the actions tanh(.) themselves; the entropy term is off (deterministic actors)."""
    result = run_training("env=toy:target_sum", "algo=maddpg", "paradigm=ctedd", "steps=5000", "seeds=2",
                          "eval.interval=2500", "ctedd.distill_steps=1000")
    record = json.loads((result.run_dir / "distill.json").read_text())
    assert min(record["teacher"]["return"]) >= 0.95 and min(record["student"]["return"]) >= 0.95, record
    assert min(record["heldout_action_agreement"]) >= 0.9
    assert [r["train/entropy"] for r in result.rows] == [0.0] * len(result.rows)


@pytest.mark.slow  # 54 s in make test on 2026-12-07 (cold, two workers)
def test_a_stopped_ctedd_run_resumes_to_the_uninterrupted_result(run_training):
    """MADDPG's learner (replay, targets, both optimizers) checkpoints and restores exactly, and stage 2 runs
    after the resumed stage 1 as it would have."""
    from ctde.training.runner import train

    fast = ("env=toy:two_step", "algo=maddpg", "paradigm=ctedd", "steps=2000", "seeds=2", "eval.interval=250",
            "eval.episodes=8", "ctedd.distill_steps=200", "ctedd.distill_episodes=20", "algo.buffer_size=200")
    full = run_training(*fast, name="full")
    half = run_training(*fast, name="half", stop_when=lambda rows: max(r["env_steps"] for r in rows) >= 700)
    resumed = train(resume=half.run_dir, quiet=True)

    def rows(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"} for line in lines]

    assert rows(resumed.run_dir) == rows(full.run_dir)
    stage_2 = [json.loads((r.run_dir / "distill.json").read_text()) for r in (full, resumed)]
    for key in ("teacher", "student", "heldout_action_agreement", "final_heldout_loss"):
        assert stage_2[0][key] == stage_2[1][key], key


def test_ctedd_is_refused_on_an_environment_without_a_global_state(monkeypatch):
    import dataclasses

    import ctde.envs
    from ctde.errors import IncompatibleError

    real = ctde.envs.make_env

    def stateless(config, views=(), ltr_options=None):
        env = real(config, views, ltr_options)
        env.spec = dataclasses.replace(env.spec, state_dim=0)
        return env

    monkeypatch.setattr(ctde.envs, "make_env", stateless)
    with pytest.raises(IncompatibleError, match="needs a global state"):
        resolve(build_config(["env=toy:hallway", "algo=maddpg", "paradigm=ctedd"]))
