"""What each value-decomposition algorithm learns from the agents' utilities: its networks beyond the agents (the
"mixer" parameters) and its loss. `ValueDecomposition.td_loss` computes the utilities and the actions every
algorithm needs (`TDInputs`) and hands them to one `TDObjective`; nothing else in the learner differs.

    MixerTD          iql, vdn, qmix, qplex: Q_tot = mixer(Q_i, s), squared TD error to r + γ Q_tot^target(s', ū')
    QTRANTD          qtran: QTRAN-base's L_td on Q_jt plus its two constraint losses L_opt, L_nopt
    WeightedQMIXTD   cw_qmix, ow_qmix: QMIX's loss weighted by w, plus the unrestricted central Q*'s own TD loss
    DMIXTD           dmix: the quantile Huber loss of the mean-shape team distribution

Every objective returns the same metrics (`td_loss`, `td_error_abs`, `q_taken`, `target`) plus its own terms, so
the run report reads any of them. Defaults and sources of every option: docs/backbones.md.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import struct

from ctde.config import AlgoConfig
from ctde.envs.base import EnvSpec
from ctde.nets.actions import masked_max
from ctde.nets.mixers import CentralMixer, DMIXMixer, QTRANJoint, QMIXMixer, make_mixer
from ctde.nets.rnn import RNNAgent, agent_inputs
from ctde.paradigms.base import AgentInputs


@struct.dataclass
class TDInputs:
    """Everything an objective reads, time-major: T decision steps, each with its bootstrap entry at t + 1.

    q                 float [T + 1, B, n, |A|]  online utilities of the learned model (`learned_model`; gradients flow)
    q_target          float [T + 1, B, n, |A|]  the target network's utilities (no gradient)
    quantiles         float [T + 1, B, n, |A|, N] or None: DMIX's online quantiles (q is their mean)
    quantiles_target  float [T + 1, B, n, |A|, N] or None: the target network's
    actions           int [T, B, n]    the actions taken
    greedy            int [T, B, n]    the learned model's greedy available action at t (online)
    next_actions      int [T, B, n]    the bootstrap action at t + 1 (the paradigm's `select_model`; double Q)
    avail             bool [T + 1, B, n, |A|]
    state             float [T + 1, B, s]
    reward, terminal, done  [T, B]
    mask              float [T, B]     1 on valid decision steps
    agents            AgentInputs [T + 1, B, ...]: the agents' own inputs (weighted QMIX's central agents read them)
    """

    q: jax.Array
    q_target: jax.Array
    quantiles: jax.Array | None
    quantiles_target: jax.Array | None
    actions: jax.Array
    greedy: jax.Array
    next_actions: jax.Array
    avail: jax.Array
    state: jax.Array
    reward: jax.Array
    terminal: jax.Array
    done: jax.Array
    mask: jax.Array
    agents: AgentInputs


def lambda_returns(rewards: jax.Array, terminal: jax.Array, done: jax.Array, next_values: jax.Array,
                   gamma: float, lam: float) -> jax.Array:
    """TD(lambda) targets, computed backwards over time.

    G_t = r_t + gamma * (1 - terminal_t) * ((1 - lam) * V_{t+1} + lam * G_{t+1}), where G_{t+1} is replaced by
    V_{t+1} wherever the episode ends at t (done_t) or the sequence ends. lam = 0 gives one-step TD.

    rewards, terminal, done: [T, B]; next_values V_{t+1}: [T, B, k] -> targets [T, B, k].
    """
    cont = (1.0 - terminal.astype(jnp.float32))[..., None]
    cut = done[..., None]
    r = rewards[..., None]

    def backwards(g_next, xs):
        r_t, cont_t, cut_t, v_next = xs
        g_next = jnp.where(cut_t, v_next, g_next)
        g = r_t + gamma * cont_t * ((1.0 - lam) * v_next + lam * g_next)
        return g, g

    _, targets = jax.lax.scan(backwards, next_values[-1], (r, cont, cut, next_values), reverse=True)
    return targets


def take(values: jax.Array, actions: jax.Array) -> jax.Array:
    """values [..., |A|] at actions [...] -> [...]."""
    return jnp.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of values [T, B, ...] over the valid steps of mask [T, B] and every trailing entry."""
    per_step = values.reshape(*mask.shape, -1)
    return jnp.sum(per_step * mask[..., None]) / (jnp.maximum(mask.sum(), 1.0) * per_step.shape[-1])


def td_metrics(td_error: jax.Array, chosen: jax.Array, targets: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    """The metrics every objective reports: mean squared and absolute TD error, mean utility of the taken actions
    and mean target, each over valid steps. td_error, targets [T, B, k]; chosen [T, B, n]."""
    return {"td_loss": masked_mean(td_error ** 2, mask), "td_error_abs": masked_mean(jnp.abs(td_error), mask),
            "q_taken": masked_mean(chosen, mask), "target": masked_mean(targets, mask)}


class TDObjective:
    """Base: `init` the objective's own networks; `loss` from the utilities. `returns` turns bootstrap values
    [T, B, k] into TD(λ) targets (`lambda_returns`; one-step TD at λ = 0)."""

    def __init__(self, algo: AlgoConfig, spec: EnvSpec):
        self.algo = algo
        self.spec = spec

    def init(self, key: jax.Array) -> Any:
        raise NotImplementedError

    def loss(self, params: Any, target_params: Any, x: TDInputs) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def returns(self, x: TDInputs, next_values: jax.Array) -> jax.Array:
        return lambda_returns(x.reward, x.terminal, x.done, jax.lax.stop_gradient(next_values), self.algo.gamma,
                              self.algo.td_lambda)

    def _zeros(self) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Example (utilities [1, n], state [1, s], one-hot joint action [1, n, |A|]) for initialization."""
        n, a = self.spec.n_agents, self.spec.n_actions
        return jnp.zeros((1, n)), jnp.zeros((1, self.spec.state_dim)), jnp.zeros((1, n, a))


class MixerTD(TDObjective):
    """IQL, VDN, QMIX, QPLEX: Q_tot = mixer(Q_i(τ_i, u_i), max_a Q_i, s, u) and the squared error to
    y = r + γ Q_tot^target(s', ū'), ū' the bootstrap action. IQL's "mixer" keeps each agent's own value (k = n)."""

    def __init__(self, algo: AlgoConfig, spec: EnvSpec):
        super().__init__(algo, spec)
        self.mixer = make_mixer(algo.name, spec.n_agents, algo.mixer_embed_dim, algo.hypernet_layers,
                                algo.hypernet_embed, algo.qplex_kernels)

    def init(self, key):
        utilities, state, actions = self._zeros()
        return self.mixer.init(key, utilities, utilities, state, actions)

    def loss(self, params, target_params, x):
        n_actions = x.q.shape[-1]
        chosen = take(x.q[:-1], x.actions)
        best = masked_max(x.q[:-1], x.avail[:-1])
        next_chosen = take(x.q_target[1:], x.next_actions)
        next_best = masked_max(x.q_target[1:], x.avail[1:])
        q_tot = self.mixer.apply(params, chosen, best, x.state[:-1], jax.nn.one_hot(x.actions, n_actions))
        next_q_tot = self.mixer.apply(target_params, next_chosen, next_best, x.state[1:],
                                      jax.nn.one_hot(x.next_actions, n_actions))
        targets = self.returns(x, next_q_tot)
        metrics = td_metrics(q_tot - targets, chosen, targets, x.mask)
        return metrics["td_loss"], metrics


class QTRANTD(TDObjective):
    """QTRAN-base (Son et al. 2019; pymarl's qtran_learner), with ū = the agents' greedy joint action:

        L_td   = (Q_jt(s, u) − y)²,                       y = r + γ Q_jt^target(s', ū')
        L_opt  = (Σ_i Q_i(τ_i, ū_i) − sg(Q_jt(s, ū)) + V(s))²
        L_nopt = min(Σ_i Q_i(τ_i, u_i) − sg(Q_jt(s, u)) + V(s), 0)²
        loss   = L_td + algo.qtran_opt_weight · L_opt + algo.qtran_nopt_weight · L_nopt

    each a mean over valid steps; sg = stop-gradient, so Q_jt learns only from L_td and the agents and V only from
    the constraints (pymarl's detach). Q_jt at ū uses the online network, as pymarl ("as per author's email").
    The constraints make Σ_i Q_i − Q_jt + V zero at ū and non-negative elsewhere, which is when the agents'
    greedy actions maximise Q_jt; nothing enforces IGM before they hold (docs/backbones.md).
    """

    def __init__(self, algo: AlgoConfig, spec: EnvSpec):
        super().__init__(algo, spec)
        self.joint = QTRANJoint(algo.qtran_embed)

    def init(self, key):
        _, state, actions = self._zeros()
        return self.joint.init(key, state, actions)

    def loss(self, params, target_params, x):
        n_actions = x.q.shape[-1]
        state = x.state[:-1]
        q_jt, v = self.joint.apply(params, state, jax.nn.one_hot(x.actions, n_actions))  # [T, B, 1] each
        q_jt_greedy, _ = self.joint.apply(params, state, jax.nn.one_hot(x.greedy, n_actions))
        next_q_jt, _ = self.joint.apply(target_params, x.state[1:], jax.nn.one_hot(x.next_actions, n_actions))
        targets = self.returns(x, next_q_jt)
        chosen = take(x.q[:-1], x.actions)  # [T, B, n]
        greedy_sum = jnp.sum(masked_max(x.q[:-1], x.avail[:-1]), axis=-1, keepdims=True)  # Σ_i Q_i(τ_i, ū_i)
        opt = greedy_sum - jax.lax.stop_gradient(q_jt_greedy) + v
        nopt = jnp.minimum(jnp.sum(chosen, axis=-1, keepdims=True) - jax.lax.stop_gradient(q_jt) + v, 0.0)
        metrics = td_metrics(q_jt - targets, chosen, targets, x.mask)
        opt_loss, nopt_loss = masked_mean(opt ** 2, x.mask), masked_mean(nopt ** 2, x.mask)
        loss = metrics["td_loss"] + self.algo.qtran_opt_weight * opt_loss + self.algo.qtran_nopt_weight * nopt_loss
        return loss, {**metrics, "opt_loss": opt_loss, "nopt_loss": nopt_loss}


class WeightedQMIXTD(TDObjective):
    """CW-QMIX and OW-QMIX (Rashid et al. 2020; wqmix's max_q_learner).

    Q_tot is QMIX's mixer on the learned agents' utilities. Q̂* is unrestricted: a feed-forward central mixer
    (`CentralMixer`) on the state and the utilities of separate central agent networks (an RNN per agent on its
    own input, |A| outputs: wqmix's central_rnn with central_action_embed 1). Both are training-only: they live in
    the objective's parameters, so no paradigm changes and nothing of them is exported.

        y       = r + γ Q̂*^target(s', ū')                 ū' = the bootstrap (QMIX greedy) joint action
        loss    = mean_valid(w · (Q_tot(s, u) − y)²) + algo.central_loss_weight · mean_valid((Q̂*(s, u) − y)²)
        OW: w = 1 where Q_tot(s, u) < y, else α
        CW: w = 1 where u = ū (every agent greedy) or y > Q̂*^target(s, ū), else α        (α = algo.wqmix_alpha)

    w carries no gradient. Neither Q_tot nor Q̂* is IGM-bound to the agents' argmax; Q_tot stays monotonic.
    """

    def __init__(self, algo: AlgoConfig, spec: EnvSpec, optimistic: bool):
        super().__init__(algo, spec)
        self.optimistic = optimistic
        self.mixer = QMIXMixer(spec.n_agents, algo.mixer_embed_dim, algo.hypernet_layers, algo.hypernet_embed)
        self.central_agent = RNNAgent(algo.central_hidden, spec.n_actions)
        self.central_mixer = CentralMixer(algo.central_embed)

    def init(self, key):
        utilities, state, actions = self._zeros()
        n, spec = self.spec.n_agents, self.spec
        mixer_key, agent_key, central_key = jax.random.split(key, 3)
        x = jnp.zeros((1, n, spec.obs_dim + spec.n_actions + n))
        h0 = jnp.zeros((n, self.algo.central_hidden))
        return {"mixer": self.mixer.init(mixer_key, utilities, utilities, state, actions),
                "central_agent": self.central_agent.init(agent_key, h0, x, jnp.zeros((1, n), bool)),
                "central_mixer": self.central_mixer.init(central_key, utilities, state)}

    def central_utilities(self, params: Any, agents: AgentInputs) -> jax.Array:
        """The central agents' utilities over the sequence: [T + 1, B, n, |A|]."""
        x = agent_inputs(agents.obs, agents.last_action, self.spec.n_actions)
        resets = jnp.broadcast_to(agents.reset[..., None], x.shape[:-1])
        h0 = jnp.zeros((*x.shape[1:-1], self.algo.central_hidden))
        return self.central_agent.apply(params["central_agent"], h0, x, resets)[1]

    def loss(self, params, target_params, x):
        n_actions, state = x.q.shape[-1], x.state[:-1]
        chosen = take(x.q[:-1], x.actions)
        # QMIX reads neither `best` (passed `chosen`) nor the joint action.
        q_tot = self.mixer.apply(params["mixer"], chosen, chosen, state, jax.nn.one_hot(x.actions, n_actions))
        central = self.central_utilities(params, x.agents)
        central_target = jax.lax.stop_gradient(self.central_utilities(target_params, x.agents))
        def star_target(utilities: jax.Array, s: jax.Array) -> jax.Array:  # Q̂*^target(s, u) from utilities at u
            return self.central_mixer.apply(target_params["central_mixer"], utilities, s)

        targets = self.returns(x, star_target(take(central_target[1:], x.next_actions), x.state[1:]))
        star = self.central_mixer.apply(params["central_mixer"], take(central[:-1], x.actions), state)
        td_error = q_tot - targets
        alpha = jnp.float32(self.algo.wqmix_alpha)
        if self.optimistic:
            weights = jnp.where(td_error < 0, 1.0, alpha)
        else:
            all_greedy = jnp.all(x.actions == x.greedy, axis=-1, keepdims=True)
            star_at_greedy = star_target(take(central_target[:-1], x.greedy), state)
            weights = jnp.where(all_greedy | (targets > star_at_greedy), 1.0, alpha)
        weights = jax.lax.stop_gradient(weights)
        metrics = td_metrics(td_error, chosen, targets, x.mask)
        qmix_loss = masked_mean(weights * td_error ** 2, x.mask)
        central_loss = masked_mean((star - targets) ** 2, x.mask)
        loss = qmix_loss + self.algo.central_loss_weight * central_loss
        return loss, {**metrics, "qmix_loss": qmix_loss, "central_loss": central_loss,
                      "wqmix_weight": masked_mean(weights, x.mask)}


def quantile_fractions(n: int) -> jax.Array:
    """Fixed quantile midpoints τ_k = (2k − 1) / 2N, k = 1..N (QR-DQN's)."""
    return (2.0 * jnp.arange(n, dtype=jnp.float32) + 1.0) / (2.0 * n)


def quantile_huber(u: jax.Array, taus: jax.Array, kappa: float) -> jax.Array:
    """ρ_τ^κ(u) = |τ − 1{u < 0}| · L_κ(u) / κ with the Huber loss L_κ; u [..., N, N'] = target_j − z_i, taus [N]
    (of z's quantiles, axis −2). κ = 1 is PyTorch's smooth_l1_loss, which DFAC's learner uses."""
    huber = jnp.where(jnp.abs(u) <= kappa, 0.5 * u ** 2, kappa * (jnp.abs(u) - 0.5 * kappa)) / kappa
    return jnp.abs(taus[:, None] - (u < 0).astype(u.dtype)) * huber


class DMIXTD(TDObjective):
    """DMIX (Sun et al. 2021, DFAC's iqn_learner with its DMixer). Each agent's learned network outputs N
    quantiles per action (the paradigm's `extras["quantiles"]`; its scores are their means, which every argmax
    uses: acting, double Q, evaluation, export).

        Z_tot(s, u) = DMIXMixer(Z_i(τ_i, u_i), s)                                   [N quantiles]
        y_j         = r + γ Z_tot^target(s', ū')_j                                   [N target samples]
        loss        = mean_valid Σ_i mean_j ρ^κ_{τ_i}(y_j − Z_tot,i)

    (DFAC's reduction: mean over target samples, sum over quantiles, mean over valid steps.) Deviation from DFAC:
    fixed fractions τ_i = (2i − 1)/2N (QR-DQN) instead of IQN's sampled fractions and cosine embedding, so the
    agent network is pymarl's with |A|·N outputs. TD(λ), if set, applies per quantile (DFAC is one-step).
    """

    def __init__(self, algo: AlgoConfig, spec: EnvSpec):
        super().__init__(algo, spec)
        self.mixer = DMIXMixer(spec.n_agents, algo.mixer_embed_dim, algo.hypernet_layers, algo.hypernet_embed)
        self.taus = quantile_fractions(algo.quantiles)

    def init(self, key):
        _, state, _ = self._zeros()
        return self.mixer.init(key, jnp.zeros((1, self.spec.n_agents, self.algo.quantiles)), state)

    def loss(self, params, target_params, x):
        take_quantiles = lambda z, a: jnp.take_along_axis(z, a[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
        z = take_quantiles(x.quantiles[:-1], x.actions)  # [T, B, n, N]
        next_z = take_quantiles(x.quantiles_target[1:], x.next_actions)
        z_tot = self.mixer.apply(params, z, x.state[:-1])  # [T, B, N]
        targets = self.returns(x, self.mixer.apply(target_params, next_z, x.state[1:]))  # [T, B, N]
        u = targets[..., None, :] - z_tot[..., :, None]  # [T, B, N, N']
        per_step = jnp.sum(jnp.mean(quantile_huber(u, self.taus, self.algo.quantile_kappa), axis=-1), axis=-1)
        loss = masked_mean(per_step, x.mask)
        mean_error = jnp.mean(z_tot, axis=-1, keepdims=True) - jnp.mean(targets, axis=-1, keepdims=True)
        metrics = td_metrics(mean_error, take(x.q[:-1], x.actions), targets, x.mask)
        return loss, {**metrics, "td_loss": loss, "mean_td_loss": metrics["td_loss"]}


def make_objective(algo: AlgoConfig, spec: EnvSpec) -> TDObjective:
    """The objective of value-decomposition backbone `algo.name`."""
    if algo.name == "qtran":
        return QTRANTD(algo, spec)
    if algo.name in ("cw_qmix", "ow_qmix"):
        return WeightedQMIXTD(algo, spec, optimistic=algo.name == "ow_qmix")
    if algo.name == "dmix":
        return DMIXTD(algo, spec)
    return MixerTD(algo, spec)
