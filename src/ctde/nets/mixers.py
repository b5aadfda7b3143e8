"""Mixers: how per-agent utilities Q_i combine into the team value Q_tot.

One call signature for all, so the TD learner never special-cases a mixer:

    mixer(chosen [..., n], best [..., n], state [..., s], actions [..., n, |A|]) -> values [..., k]

`chosen` are the agents' utilities of the actions taken (or to be evaluated), `best` their maximum over
available actions, `actions` the one-hot joint action. k = 1 for a team value; IQL has no mixer and
returns each agent's own value (k = n), each trained on the team reward.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from ctde.nets.precision import Dense


class NoMixer(nn.Module):
    """IQL: every agent learns its own Q_i from the team reward."""

    @nn.compact
    def __call__(self, chosen, best, state, actions):
        return chosen


class VDNMixer(nn.Module):
    """VDN: Q_tot = sum_i Q_i."""

    @nn.compact
    def __call__(self, chosen, best, state, actions):
        return jnp.sum(chosen, axis=-1, keepdims=True)


def _hypernet(features: int, hidden: int, layers: int, name: str) -> nn.Module:
    if layers == 1:
        return Dense(features, name=name)
    return nn.Sequential([Dense(hidden), nn.relu, Dense(features)], name=name)


class QMIXMixer(nn.Module):
    """QMIX: a two-layer mixing network whose non-negative weights come from hypernetworks on the state.

    Q_tot = elu(Q · |W1(s)| + b1(s)) · |w2(s)| + V(s); non-negative weights make Q_tot monotonic in every Q_i.
    """

    n_agents: int
    embed_dim: int = 32
    hypernet_layers: int = 2
    hypernet_embed: int = 64

    @nn.compact
    def __call__(self, chosen, best, state, actions):
        e = self.embed_dim
        w1 = jnp.abs(_hypernet(self.n_agents * e, self.hypernet_embed, self.hypernet_layers, "hyper_w1")(state))
        w1 = w1.reshape(*state.shape[:-1], self.n_agents, e)
        b1 = Dense(e, name="hyper_b1")(state)
        hidden = nn.elu(jnp.einsum("...n,...ne->...e", chosen, w1) + b1)
        w2 = jnp.abs(_hypernet(e, self.hypernet_embed, self.hypernet_layers, "hyper_w2")(state))
        v = nn.Sequential([Dense(e), nn.relu, Dense(1)], name="value")(state)
        return jnp.sum(hidden * w2, axis=-1, keepdims=True) + v


class QPLEXMixer(nn.Module):
    """QPLEX (Wang et al. 2021): duplex dueling. Per-agent values are first transformed with state-conditioned
    positive weights, Q_i' = w_i(s) Q_i + v_i(s); then

        Q_tot = sum_i Q_i'  +  sum_i (lambda_i(s, a) - 1) * stopgrad(Q_i' - max_a Q_i')

    with lambda_i > 0 from an attention over `kernels` heads. The advantage term is <= 0 and zero exactly at
    every agent's greedy action, so argmax Q_tot equals the agents' own argmaxes (IGM).
    """

    n_agents: int
    kernels: int = 4
    hypernet_embed: int = 64

    def _mlp(self, features: int, name: str) -> nn.Module:
        return nn.Sequential([Dense(self.hypernet_embed), nn.relu, Dense(features)], name=name)

    @nn.compact
    def __call__(self, chosen, best, state, actions):
        n = self.n_agents
        weights = jnp.abs(self._mlp(n, "hyper_w")(state)) + 1e-10
        bias = self._mlp(n, "hyper_v")(state)
        chosen_t = weights * chosen + bias
        best_t = weights * best + bias
        advantage = jax.lax.stop_gradient(chosen_t - best_t)  # <= 0, as in the authors' code
        joint = jnp.concatenate([state, actions.reshape(*actions.shape[:-2], -1)], axis=-1)
        lambdas = 0.0
        for k in range(self.kernels):
            key = jnp.abs(self._mlp(1, f"key_{k}")(state)) + 1e-10
            agents = jax.nn.sigmoid(self._mlp(n, f"agents_{k}")(state))
            action = jax.nn.sigmoid(self._mlp(n, f"action_{k}")(joint))
            lambdas = lambdas + key * agents * action
        value = jnp.sum(chosen_t, axis=-1, keepdims=True)
        return value + jnp.sum(advantage * (lambdas - 1.0), axis=-1, keepdims=True)


class QTRANJoint(nn.Module):
    """QTRAN-base's joint networks (Son et al. 2019; pymarl's QTranBase, "small" size): an unrestricted joint
    action-value Q_jt(s, u) and a state value V_jt(s), each a 3-layer ReLU MLP of width `embed_dim`.

    Q_jt reads the state and the one-hot joint action (pymarl's `qtran_arch: coma_critic` input). pymarl's
    default feeds the agents' GRU hidden states with their actions instead; ctde's paradigms expose only the
    agents' utilities, not their hidden states, so this is the documented deviation.

    state [..., s], actions one-hot [..., n, |A|] -> (q_jt [..., 1], v [..., 1]).
    """

    embed_dim: int = 64

    def _mlp(self, name: str) -> nn.Module:
        e = self.embed_dim
        return nn.Sequential([Dense(e), nn.relu, Dense(e), nn.relu, Dense(1)], name=name)

    @nn.compact
    def __call__(self, state, actions):
        joint = jnp.concatenate([state, actions.reshape(*actions.shape[:-2], -1)], axis=-1)
        return self._mlp("joint_q")(joint), self._mlp("value")(state)


class CentralMixer(nn.Module):
    """Weighted QMIX's unrestricted central Q* (Rashid et al. 2020; wqmix's QMixerCentralFF): a feed-forward
    network on the state and the central agents' utilities, 3 ReLU layers of width `embed_dim`, plus a state value
    V(s) (one ReLU layer) in place of a final bias. No sign constraint: Q* can represent any joint value.

    utilities [..., n], state [..., s] -> [..., 1].
    """

    embed_dim: int = 256

    @nn.compact
    def __call__(self, utilities, state):
        e = self.embed_dim
        x = jnp.concatenate([state, utilities], axis=-1)
        advantage = nn.Sequential([Dense(e), nn.relu, Dense(e), nn.relu, Dense(e), nn.relu, Dense(1)], name="net")(x)
        return advantage + nn.Sequential([Dense(e), nn.relu, Dense(1)], name="value")(state)


class DMIXMixer(nn.Module):
    """DMIX (Sun et al. 2021, DFAC): the mean-shape decomposition of the team return distribution.

        Z_tot(τ) = ψ_QMIX(Q_1 .. Q_n, s) + Σ_i (Z_i(τ) − Q_i),    Q_i = mean over τ of Z_i(τ)

    The mean goes through QMIX (so E[Z_tot] = ψ_QMIX(Q, s), monotonic in every Q_i: IGM through the mean); the
    shape is the quantile mixture of the agents' centred quantiles with unit weights (DFAC's `DMixer`).

    quantiles [..., n, N], state [..., s] -> [..., N].
    """

    n_agents: int
    embed_dim: int = 32
    hypernet_layers: int = 2
    hypernet_embed: int = 64

    @nn.compact
    def __call__(self, quantiles, state):
        means = jnp.mean(quantiles, axis=-1)  # [..., n]
        qmix = QMIXMixer(self.n_agents, self.embed_dim, self.hypernet_layers, self.hypernet_embed, name="qmix")
        mean_tot = qmix(means, means, state, None)  # [..., 1]; QMIX reads neither `best` nor `actions`
        return mean_tot + jnp.sum(quantiles - means[..., None], axis=-2)


def make_mixer(name: str, n_agents: int, embed_dim: int = 32, hypernet_layers: int = 2, hypernet_embed: int = 64,
               qplex_kernels: int = 4) -> nn.Module:
    if name == "iql":
        return NoMixer()
    if name == "vdn":
        return VDNMixer()
    if name in ("qmix", "cw_qmix", "ow_qmix"):  # weighted QMIX's Q_tot is QMIX's
        return QMIXMixer(n_agents, embed_dim, hypernet_layers, hypernet_embed)
    if name == "qplex":
        return QPLEXMixer(n_agents, qplex_kernels, hypernet_embed)
    raise KeyError(name)
