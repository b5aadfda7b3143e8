"""The seed papers' value-decomposition baselines: QTRAN, CW-QMIX, OW-QMIX and DMIX.

Each objective's loss against a numpy computation on a constructed batch (networks replaced by tables where the
loss, not the network, is under test), DMIX's mean-shape mixture and its IGM through the mean, the refusals, one
train / resume / export / audit through the command line, and the matrix game on which QMIX misses the optimum
that QTRAN and weighted QMIX find.
"""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.algos.td_objectives import DMIXTD, QTRANTD, TDInputs, WeightedQMIXTD, quantile_fractions, quantile_huber
from ctde.config import build_config
from ctde.envs.base import EnvSpec
from ctde.errors import ConfigError, IncompatibleError
from ctde.nets.mixers import DMIXMixer, QMIXMixer
from ctde.paradigms.base import AgentInputs
from ctde.training.resolve import resolve

GAMMA = 0.9
N_AGENTS, N_ACTIONS, BATCH = 2, 3, 8


def _spec() -> EnvSpec:
    return EnvSpec(id="test", n_agents=N_AGENTS, n_actions=N_ACTIONS, obs_dim=1, state_dim=2, episode_limit=1)


def _algo(name: str, *overrides: str):
    return build_config([f"algo={name}", f"algo.gamma={GAMMA}", *overrides]).algo


def _inputs(seed: int = 0, quantiles: int = 0) -> TDInputs:
    """One decision step and its bootstrap entry for BATCH sequences (T = 1), the last one padding. Double Q:
    greedy and bootstrap actions are the online utilities' argmaxes (every action available)."""
    rng = np.random.default_rng(seed)
    shape = (2, BATCH, N_AGENTS, N_ACTIONS)
    z = z_target = None
    if quantiles:
        z = jnp.asarray(rng.normal(size=(*shape, quantiles)) * 2, jnp.float32)
        z_target = jnp.asarray(rng.normal(size=(*shape, quantiles)) * 2, jnp.float32)
        q, q_target = z.mean(-1), z_target.mean(-1)
    else:
        q = jnp.asarray(rng.normal(size=shape) * 2, jnp.float32)
        q_target = jnp.asarray(rng.normal(size=shape) * 2, jnp.float32)
    actions = jnp.asarray(rng.integers(0, N_ACTIONS, size=(1, BATCH, N_AGENTS)))
    actions = actions.at[0, 0].set(jnp.argmax(q[0, 0], axis=-1))  # sequence 0 took the greedy joint action
    mask = jnp.ones((1, BATCH)).at[0, -1].set(0.0)
    agents = AgentInputs(obs=jnp.zeros((2, BATCH, N_AGENTS, 1)), last_action=jnp.full((2, BATCH, N_AGENTS), -1),
                         avail=jnp.ones(shape, bool), state=None, reset=jnp.array([[True] * BATCH, [False] * BATCH]))
    return TDInputs(q=q, q_target=q_target, quantiles=z, quantiles_target=z_target, actions=actions,
                    greedy=jnp.argmax(q[:1], -1), next_actions=jnp.argmax(q[1:], -1), avail=jnp.ones(shape, bool),
                    state=jnp.asarray(rng.normal(size=(2, BATCH, 2)), jnp.float32),
                    reward=jnp.asarray(rng.normal(size=(1, BATCH)), jnp.float32), terminal=jnp.zeros((1, BATCH), bool),
                    done=jnp.zeros((1, BATCH), bool), mask=mask, agents=agents)


def _pick(values, actions):
    """numpy: values [B, n, A] at actions [B, n] -> [B, n]."""
    return np.take_along_axis(np.asarray(values), np.asarray(actions)[..., None], -1)[..., 0]


def _valid_mean(per_sequence, x: TDInputs) -> float:
    mask = np.asarray(x.mask[0])
    return float(np.sum(np.asarray(per_sequence) * mask) / mask.sum())


class TableJoint(nn.Module):
    """QTRAN's joint networks as tables: Q_jt(s, u) = table[u_1, u_2], V(s) = v · s_0."""

    @nn.compact
    def __call__(self, state, actions):
        table = self.param("table", nn.initializers.zeros, (N_ACTIONS, N_ACTIONS))
        v = self.param("v", nn.initializers.zeros, ())
        q = jnp.einsum("...a,...b,ab->...", actions[..., 0, :], actions[..., 1, :], table)
        return q[..., None], v * state[..., :1]


def test_qtran_td_opt_and_nopt_losses_by_hand():
    objective = QTRANTD(_algo("qtran"), _spec())
    objective.joint = TableJoint()
    rng = np.random.default_rng(1)
    table, table_target = rng.normal(size=(2, N_ACTIONS, N_ACTIONS)) * 3
    params = {"params": {"table": jnp.asarray(table, jnp.float32), "v": jnp.float32(0.7)}}
    target_params = {"params": {"table": jnp.asarray(table_target, jnp.float32), "v": jnp.float32(-5.0)}}
    x = _inputs(2)
    loss, metrics = objective.loss(params, target_params, x)

    u, greedy, next_u = (np.asarray(a[0]) for a in (x.actions, x.greedy, x.next_actions))  # [B, n]
    v = 0.7 * np.asarray(x.state[0, :, 0])
    q_jt = table[u[:, 0], u[:, 1]]
    y = np.asarray(x.reward[0]) + GAMMA * table_target[next_u[:, 0], next_u[:, 1]]
    td = _valid_mean((q_jt - y) ** 2, x)
    opt = _valid_mean((np.asarray(x.q[0]).max(-1).sum(-1) - table[greedy[:, 0], greedy[:, 1]] + v) ** 2, x)
    nopt = _valid_mean(np.minimum(_pick(x.q[0], u).sum(-1) - q_jt + v, 0.0) ** 2, x)
    assert opt > 0 and nopt > 0  # the batch exercises both constraints
    np.testing.assert_allclose([float(metrics["td_loss"]), float(metrics["opt_loss"]), float(metrics["nopt_loss"])],
                               [td, opt, nopt], rtol=1e-5)
    assert float(loss) == pytest.approx(td + 1.0 * opt + 0.1 * nopt, rel=1e-5)  # pymarl's weights
    # Q_jt is held fixed in the constraints: its gradient comes from L_td alone.
    only_td = QTRANTD(_algo("qtran", "algo.qtran_opt_weight=0", "algo.qtran_nopt_weight=0"), _spec())
    only_td.joint = TableJoint()
    grads = [jax.grad(lambda p, o=o: o.loss(p, target_params, x)[0])(params)["params"]["table"]
             for o in (objective, only_td)]
    np.testing.assert_allclose(np.asarray(grads[0]), np.asarray(grads[1]), rtol=1e-6, atol=1e-7)


class SumOfUtilities(nn.Module):
    """A mixer with no parameters: the sum of the utilities (stands in for QMIX and for Q*'s central mixer)."""

    @nn.compact
    def __call__(self, utilities, *rest):
        return jnp.sum(utilities, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", ["ow_qmix", "cw_qmix"])
def test_weighted_qmix_weights_and_losses_by_hand(name):
    alpha = 0.3
    objective = WeightedQMIXTD(_algo(name, f"algo.wqmix_alpha={alpha}"), _spec(), optimistic=name == "ow_qmix")
    objective.mixer = objective.central_mixer = SumOfUtilities()
    objective.central_utilities = lambda params, agents: params["central"]  # central agents as tables
    x = _inputs(3)
    rng = np.random.default_rng(4)
    central, central_target = (jnp.asarray(rng.normal(size=x.q.shape) * 2, jnp.float32) for _ in range(2))
    loss, metrics = objective.loss({"mixer": {}, "central_mixer": {}, "central": central},
                                   {"mixer": {}, "central_mixer": {}, "central": central_target}, x)

    u, greedy, next_u = (np.asarray(a[0]) for a in (x.actions, x.greedy, x.next_actions))
    y = np.asarray(x.reward[0]) + GAMMA * _pick(central_target[1], next_u).sum(-1)  # Q*^target at ū'
    q_tot = _pick(x.q[0], u).sum(-1)
    star = _pick(central[0], u).sum(-1)
    if name == "ow_qmix":
        favoured = q_tot < y
    else:
        favoured = np.all(u == greedy, axis=-1) | (y > _pick(central_target[0], greedy).sum(-1))
    w = np.where(favoured, 1.0, alpha)
    assert set(np.round(w[:-1], 6)) == {1.0, alpha}  # the batch has favoured and down-weighted steps
    qmix_loss, central_loss = _valid_mean(w * (q_tot - y) ** 2, x), _valid_mean((star - y) ** 2, x)
    np.testing.assert_allclose([float(metrics["qmix_loss"]), float(metrics["central_loss"]),
                                float(metrics["wqmix_weight"])], [qmix_loss, central_loss, _valid_mean(w, x)],
                               rtol=1e-5)
    assert float(loss) == pytest.approx(qmix_loss + central_loss, rel=1e-5)


def test_quantile_huber_loss_by_hand():
    taus = jnp.array([0.25, 0.75])
    u = jnp.array([[-2.0, 0.5], [-0.5, 3.0]])  # u[i, j] = target_j - z_i
    rho = np.asarray(quantile_huber(u, taus, kappa=1.0))
    # τ=0.25: u=-2 -> |0.25-1| (2 - 0.5) = 1.125; u=0.5 -> 0.25 * 0.125.
    # τ=0.75: u=-0.5 -> 0.25 * 0.125; u=3 -> 0.75 * 2.5
    np.testing.assert_allclose(rho, [[1.125, 0.03125], [0.03125, 1.875]], rtol=1e-6)
    rho2 = np.asarray(quantile_huber(u, taus, kappa=2.0))  # L_2(u) / 2: quadratic up to |u| = 2
    np.testing.assert_allclose(rho2, [[0.75 * 1.0, 0.25 * 0.0625], [0.25 * 0.0625, 0.75 * 2.0]], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(quantile_fractions(4)), [0.125, 0.375, 0.625, 0.875])


def test_dmix_mixture_is_qmix_of_the_means_plus_the_centred_quantile_sum():
    mixer = DMIXMixer(n_agents=3, embed_dim=8, hypernet_embed=16)
    rng = np.random.default_rng(5)
    z = jnp.asarray(rng.normal(size=(6, 3, 5)), jnp.float32)  # [B, n, N]
    state = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
    params = mixer.init(jax.random.PRNGKey(0), z, state)
    z_tot = np.asarray(mixer.apply(params, z, state))
    means = z.mean(-1)
    qmix = QMIXMixer(3, 8, 2, 16).apply({"params": params["params"]["qmix"]}, means, means, state, None)
    np.testing.assert_allclose(z_tot.mean(-1), np.asarray(qmix[:, 0]), rtol=1e-5, atol=1e-5)
    shape = np.asarray(z - means[..., None]).sum(1)
    np.testing.assert_allclose(z_tot - z_tot.mean(-1, keepdims=True), shape, rtol=1e-5, atol=1e-5)


def test_dmix_loss_by_hand():
    n_quantiles = 4
    objective = DMIXTD(_algo("dmix", f"algo.quantiles={n_quantiles}"), _spec())
    x = _inputs(6, quantiles=n_quantiles)
    params = objective.init(jax.random.PRNGKey(1))
    target_params = objective.init(jax.random.PRNGKey(2))
    loss, _ = objective.loss(params, target_params, x)

    def chosen(z, actions):  # [B, n, A, N] at [B, n] -> [B, n, N]
        return np.take_along_axis(np.asarray(z), np.asarray(actions)[..., None, None], -2)[..., 0, :]

    z_tot = np.asarray(objective.mixer.apply(params, chosen(x.quantiles[0], x.actions[0]), x.state[0]))
    next_tot = np.asarray(objective.mixer.apply(target_params, chosen(x.quantiles_target[1], x.next_actions[0]),
                                                x.state[1]))
    y = np.asarray(x.reward[0])[:, None] + GAMMA * next_tot  # [B, N']
    u = y[:, None, :] - z_tot[:, :, None]  # [B, N, N']
    taus = (2 * np.arange(n_quantiles) + 1) / (2 * n_quantiles)
    huber = np.where(np.abs(u) <= 1, 0.5 * u ** 2, np.abs(u) - 0.5)
    per_sequence = (np.abs(taus[None, :, None] - (u < 0)) * huber).mean(-1).sum(-1)
    assert float(loss) == pytest.approx(_valid_mean(per_sequence, x), rel=1e-5)


def test_dmix_is_igm_through_the_mean():
    """E[Z_tot] = QMIX(means, s): monotonic in every agent's quantiles, so the joint action maximizing it is the
    agents' own argmaxes of their mean quantiles (acting by the mean)."""
    n, actions, n_quantiles = 3, 3, 5
    mixer = DMIXMixer(n_agents=n, embed_dim=8, hypernet_embed=16)
    params = mixer.init(jax.random.PRNGKey(3), jnp.zeros((1, n, n_quantiles)), jnp.zeros((1, 4)))
    joint = np.array(list(itertools.product(range(actions), repeat=n)))  # [27, n]
    for seed in range(5):
        key_z, key_s = jax.random.split(jax.random.PRNGKey(10 + seed))
        z = jax.random.normal(key_z, (n, actions, n_quantiles)) * 3.0
        state = jax.random.normal(key_s, (1, 4))
        mean_tot = lambda zs, s: jnp.mean(mixer.apply(params, zs, s), axis=-1)  # noqa: E731
        chosen = z[jnp.arange(n), joint]  # [27, n, N]
        values = mean_tot(chosen, jnp.repeat(state, len(joint), 0))
        assert tuple(joint[int(jnp.argmax(values))]) == tuple(np.asarray(z.mean(-1).argmax(-1)))
        grads = jax.grad(lambda zs: mean_tot(zs[None], state)[0])(chosen[0])
        assert np.all(np.asarray(grads) >= 0.0)


@pytest.mark.parametrize("overrides, error, message", [
    (["algo=qtran", "paradigm=igm_da", "env=toy:retreat"], IncompatibleError, r"algo=qtran's joint value is not IGM"),
    (["algo=cw_qmix", "paradigm=igm_da", "env=toy:retreat"], IncompatibleError, r"not IGM by construction"),
    (["algo=ow_qmix", "paradigm=igm_da", "env=toy:retreat"], IncompatibleError, r"algo=dmix \(the paper's DMIX-DA\)"),
    (["algo=dmix", "paradigm=ptde"], IncompatibleError, r"learns a quantile distribution per action"),
    (["algo=qmix", "algo.wqmix_alpha=0.5"], ConfigError, r"algo.wqmix_alpha is read only by algo=cw_qmix and algo="),
    (["algo=dmix", "algo.qtran_opt_weight=2"], ConfigError, r"algo.qtran_opt_weight is read only by algo=qtran"),
    (["algo=qtran", "algo.quantiles=16"], ConfigError, r"algo.quantiles is read only by algo=dmix"),
    (["algo=dmix", "algo.quantiles=1"], ConfigError, r"algo.quantiles must be at least 2"),
    (["algo=cw_qmix", "algo.wqmix_alpha=1.5"], ConfigError, r"algo.wqmix_alpha must be in \[0, 1\]"),
])
def test_refusals(overrides, error, message):
    with pytest.raises(error, match=message):
        resolve(build_config(["env=toy:hallway", *overrides]))


@pytest.mark.parametrize("algo, paradigms", [("qtran", ("ctde", "cadp", "ptde", "ctds")),
                                             ("cw_qmix", ("ctde", "cadp", "ptde", "ctds")),
                                             ("ow_qmix", ("ctde", "cadp", "ptde", "ctds")),
                                             ("dmix", ("ctde", "cadp", "igm_da", "ctds"))])
def test_hosting_paradigms_are_accepted(algo, paradigms):
    for paradigm in paradigms:
        env = "toy:retreat" if paradigm in ("igm_da", "ctds") else "toy:hallway"
        resolve(build_config([f"env={env}", f"algo={algo}", f"paradigm={paradigm}"]))


@pytest.mark.slow
def test_dmix_trains_resumes_exports_and_passes_the_audit_through_the_cli(run_training, tmp_path):
    """CADP on DMIX (both the C and the exported D model carry quantile heads): a run stopped early resumes through
    `ctde train --resume` to the uninterrupted metrics; `ctde export` writes the D policy, which acts on the mean
    quantile, and `ctde audit` passes it."""
    import json

    from ctde.cli import main
    from ctde.policy import load_policy

    options = ("env=toy:hallway", "algo=dmix", "paradigm=cadp", "cadp.prune_start=0", "algo.quantiles=4",
               "steps=600", "eval.interval=200", "eval.episodes=4", "log.chunk_evals=1", "seeds=1",
               "rollout.num_envs=4", "algo.batch_size=8", "algo.epsilon_anneal_steps=300")
    full = run_training(*options, name="full")
    half = run_training(*options, name="half", stop_when=lambda rows: max(r["env_steps"] for r in rows) >= 200)
    assert main(["train", "--resume", str(half.run_dir)]) == 0

    def metrics(run_dir):
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]

    assert metrics(half.run_dir) == metrics(full.run_dir)
    assert main(["export", str(half.run_dir)]) == 0
    policy = load_policy(half.run_dir / "policy")
    assert policy.spec["quantiles"] == 4 and policy.spec["network"] == "cadp_decentralized"
    assert main(["audit", str(half.run_dir / "policy")]) == 0


MATRIX = ("env=toy:matrix", "seeds=3", "steps=6000", "eval.interval=3000", "eval.episodes=1", "log.chunk_evals=2",
          "rollout.num_envs=32", "algo.batch_size=32", "algo.buffer_size=500", "algo.updates_per_rollout=4",
          "algo.epsilon_finish=1.0", "algo.target_update_interval=50")


def _greedy_returns(result) -> list[float]:
    last = max(r["block"] for r in result.rows)
    return [r["test/agent/return"] for r in result.rows if r["block"] == last]


@pytest.mark.parametrize("algo, finds_optimum", [("qmix", False), ("qtran", True),  # about 25 s each
                                                 pytest.param("cw_qmix", True, marks=pytest.mark.slow),  # about 55 s
                                                 pytest.param("ow_qmix", True, marks=pytest.mark.slow)])
def test_matrix_game_qmix_misses_the_optimum_that_qtran_and_weighted_qmix_find(run_training, algo, finds_optimum):
    """QTRAN's matrix game under uniform exploration (ε = 1 throughout): QMIX's monotonic projection settles on
    a 0 cell on every seed; QTRAN, CW-QMIX and OW-QMIX reach the greedy joint return 8 on every seed."""
    returns = _greedy_returns(run_training(*MATRIX, f"algo={algo}"))
    print(f"{algo} greedy joint returns per seed: {returns}")
    if finds_optimum:
        assert returns == [8.0] * 3
    else:
        assert all(r < 8.0 for r in returns)
