"""MAPPO and IPPO: the on-policy backbone. No replay: each rollout is consumed by several epochs of minibatch
updates and then discarded.

Recurrent MAPPO as in Yu et al. (2022) with the defaults of CADP's MAPPO experiments (ALGORITHMS.md): the
paradigm's actor (shared across agents) and a recurrent value network owned by this backbone, fed the global
state alone (`ppo.critic_input=state`, MAPPO's "EP" value: one value per environment, shared by its agents),
the state plus the agent's own observation and id (`agent_specific`, one value per agent), or, for IPPO, the
agent's own observation and id. GAE(lambda), clipped surrogate, clipped
Huber value loss on normalized returns, entropy bonus, available-action masking of the policy, gradient-norm
clipping per network, and recurrent training on segments of `ppo.segment_length` steps that start from the
recurrent states recorded during the rollout.

A minibatch is a set of (environment, segment) pairs with every agent of each environment-timestep in it, so a
paradigm that attends over teammates (CADP) sees the real teammates at update time. Steps where an agent is
dead or past the rollout are masked out of actor, value and auxiliary losses.

A large minibatch's gradient is computed in slices of whole segments (`algo.slice_rows` agent-steps each; see
`ctde.algos.slicing`): every loss term is a mean over the counted (step, agent) pairs, so the slices' losses
weighted by their shares of those pairs are exactly the minibatch's.

The training step of any paradigm on this backbone is `loss` plus `update` below.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ctde.algos.seeds import where_active
from ctde.algos.slicing import slice_count, slice_devices, slicing_options, sum_over_slices
from ctde.config import TrainConfig
from ctde.envs.base import Environment
from ctde.nets.actions import masked_logits
from ctde.nets.precision import Dense, learner_precision
from ctde.nets.rnn import ResettableGRU
from ctde.paradigms.base import AgentInputs, Paradigm
from ctde.algos.base import Collected, RolloutSpec
from ctde.algos.rollout import Actor, EpisodeStats, Trajectory, start_rollouts



class RecurrentCritic(nn.Module):
    """Linear(in -> H), ReLU, GRU(H), Linear(H -> 1), shared across value heads. [T, *B, v, in] -> [T, *B, v]."""

    hidden_dim: int

    @nn.compact
    def __call__(self, h0: jax.Array, xs: jax.Array, resets: jax.Array) -> tuple[jax.Array, jax.Array]:
        embedded = nn.relu(Dense(self.hidden_dim, name="fc1")(xs))
        h_last, hs = ResettableGRU(self.hidden_dim, name="gru")(h0, embedded, resets)
        return h_last, Dense(1, name="value")(hs)[..., 0]


@struct.dataclass
class ValueNorm:
    """Running mean and variance of returns (MAPPO's ValueNorm, beta 0.99999, debiased)."""

    mean: jax.Array
    mean_sq: jax.Array
    debias: jax.Array

    @staticmethod
    def create() -> "ValueNorm":
        return ValueNorm(jnp.float32(0.0), jnp.float32(0.0), jnp.float32(0.0))

    def stats(self) -> tuple[jax.Array, jax.Array]:
        debias = jnp.maximum(self.debias, 1e-5)
        mean = self.mean / debias
        var = jnp.maximum(self.mean_sq / debias - mean ** 2, 1e-2)
        return mean, var

    def update(self, values: jax.Array, mask: jax.Array, beta: float = 0.99999) -> "ValueNorm":
        count = jnp.maximum(mask.sum(), 1.0)
        batch_mean = jnp.sum(values * mask) / count
        batch_mean_sq = jnp.sum(values ** 2 * mask) / count
        return ValueNorm(mean=beta * self.mean + (1 - beta) * batch_mean,
                         mean_sq=beta * self.mean_sq + (1 - beta) * batch_mean_sq,
                         debias=beta * self.debias + (1 - beta))

    def normalize(self, values: jax.Array) -> jax.Array:
        mean, var = self.stats()
        return (values - mean) / jnp.sqrt(var)

    def denormalize(self, values: jax.Array) -> jax.Array:
        mean, var = self.stats()
        return values * jnp.sqrt(var) + mean


@struct.dataclass
class PPOParams:
    agents: Any  # the paradigm's networks (the actor)
    critic: Any


@struct.dataclass
class PPOState:
    params: PPOParams
    opt_state: Any
    value_norm: ValueNorm
    rollout: Any  # RolloutState: environments continue across iterations
    env_steps: jax.Array
    episodes: jax.Array
    updates: jax.Array
    rng: jax.Array


def gae(rewards: jax.Array, values: jax.Array, terminal: jax.Array, done: jax.Array, gamma: float, lam: float
        ) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimates and returns, backwards over time.

    rewards, terminal, done: [T, *B]; values: [T + 1, *B, n] (entry T bootstraps the last step). A terminal step
    does not bootstrap; an episode end (done) stops the advantage from flowing back across episodes.
    Returns (advantages [T, *B, n], returns [T, *B, n]).
    """
    cont = (1.0 - terminal.astype(jnp.float32))[..., None]
    carry_on = (1.0 - done.astype(jnp.float32))[..., None]
    deltas = rewards[..., None] + gamma * cont * values[1:] - values[:-1]

    def backwards(next_advantage, xs):
        delta, keep = xs
        advantage = delta + gamma * lam * keep * next_advantage
        return advantage, advantage

    _, advantages = jax.lax.scan(backwards, jnp.zeros_like(deltas[0]), (deltas, carry_on), reverse=True)
    return advantages, advantages + values[:-1]


def huber(x: jax.Array, delta: float) -> jax.Array:
    return jnp.where(jnp.abs(x) <= delta, 0.5 * x ** 2, delta * (jnp.abs(x) - 0.5 * delta))


def clipped_surrogate(log_prob: jax.Array, old_log_prob: jax.Array, advantage: jax.Array, clip: float) -> jax.Array:
    """Per-sample PPO objective to maximize: min(r A, clip(r, 1 - eps, 1 + eps) A)."""
    ratio = jnp.exp(log_prob - old_log_prob)
    return jnp.minimum(ratio * advantage, jnp.clip(ratio, 1.0 - clip, 1.0 + clip) * advantage)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
    return jnp.sum(x * mask) / jnp.maximum(mask.sum(), 1.0)


def segment_starts(num_envs: int, length: int, segment_length: int) -> tuple[jax.Array, jax.Array]:
    """(environment index, first step) of every training segment, in the order `PPO.prepare` lays segments out; a
    segment holds all agents of its steps."""
    per_env = length // segment_length
    env = jnp.repeat(jnp.arange(num_envs), per_env)
    first = jnp.tile(jnp.arange(per_env) * segment_length, num_envs)
    return env, first


class PPO:
    """MAPPO (centralized value) or IPPO (per-agent value on local observations). See module docstring."""

    def __init__(self, config: TrainConfig, env: Environment, paradigm: Paradigm):
        self.config = config
        self.algo = config.algo
        self.ppo = config.ppo
        self.env = env
        self.paradigm = paradigm
        spec = env.spec
        self.num_envs = config.rollout.num_envs
        self.length = config.rollout.length
        # Continuing episodes, reset at once when they end; the recurrent states kept at every training segment's
        # first step.
        self.rollout = RolloutSpec(num_envs=self.num_envs, length=self.length, auto_reset=True, continuing=True,
                                   carry_every=self.ppo.segment_length)
        self.critic_input = "local" if self.algo.name == "ippo" else self.ppo.critic_input
        self.critic = RecurrentCritic(self.algo.hidden_dim)
        self.n_segments = self.num_envs * (self.length // self.ppo.segment_length)
        self.segments_per_minibatch = self.n_segments // self.ppo.minibatches
        # One device unless asked: the minibatch's large products already use every core (ctde.algos.slicing).
        slice_rows, devices_wanted = slicing_options(self.algo, "policy_gradient")
        self.slices = slice_count(self.segments_per_minibatch, self.ppo.segment_length * spec.n_agents, slice_rows)
        self.slice_devices = slice_devices(self.slices, devices_wanted)

        def network_optimizer():
            return optax.chain(optax.clip_by_global_norm(self.algo.grad_clip), optax.adam(self.algo.lr, eps=1e-5))

        # Actor and critic keep separate optimizers and gradient clips, as in MAPPO.
        self.optimizer = optax.multi_transform(
            {"actor": network_optimizer(), "critic": network_optimizer()},
            lambda params: PPOParams(agents=jax.tree.map(lambda _: "actor", params.agents),
                                     critic=jax.tree.map(lambda _: "critic", params.critic)))
        self.seed_axis: str | None = None  # unused: PPO has no data-dependent shapes

    # -- networks ----------------------------------------------------------------------------------------

    @property
    def value_heads(self) -> int:
        """Values per environment-step: 1 when the value reads only the global state, else one per agent."""
        return 1 if self.critic_input == "state" else self.env.spec.n_agents

    def critic_features(self, inputs: AgentInputs) -> jax.Array:
        """Value-network input: [T, *B, value_heads, d]."""
        if self.critic_input == "state":
            return inputs.state[..., None, :]
        obs = inputs.obs
        n = obs.shape[-2]
        ids = jnp.broadcast_to(jnp.eye(n, dtype=obs.dtype), (*obs.shape[:-2], n, n))
        if self.critic_input == "local":
            return jnp.concatenate([obs, ids], axis=-1)
        state = jnp.broadcast_to(inputs.state[..., None, :], (*obs.shape[:-1], inputs.state.shape[-1]))
        return jnp.concatenate([state, obs, ids], axis=-1)

    def critic_values(self, critic_params, carry, inputs: AgentInputs) -> tuple[jax.Array, jax.Array]:
        """(new carry [*B, value_heads, H], values [T, *B, n]).

        A state-only value is the same function of the same input for every agent, so it is computed once per
        environment and broadcast to the agents (MAPPO computes n identical copies); per-agent masking of the
        value loss then weights each step by its living agents, exactly as with the copies."""
        x = self.critic_features(inputs)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        new_carry, values = self.critic.apply(critic_params, carry, x, resets)
        return new_carry, jnp.broadcast_to(values, inputs.obs.shape[:-1])

    def critic_carry(self, batch_shape: tuple[int, ...]) -> jax.Array:
        return jnp.zeros((*batch_shape, self.value_heads, self.algo.hidden_dim))

    def actor(self, env_steps: jax.Array | None = None) -> Actor:
        """Samples from the collecting model's masked policy (the same at every `env_steps`); records what the
        update needs: log-probabilities and values."""
        paradigm = self.paradigm

        def step(params: PPOParams, carry, inputs: AgentInputs, key):
            agent_carry, critic_carry = carry
            network_key, key = jax.random.split(key)
            new_agent_carry, output = paradigm.apply(params.agents, agent_carry, inputs, rng=network_key)
            logits = masked_logits(output.scores[paradigm.collect_model][0], inputs.avail[0])
            action = jax.random.categorical(key, logits)
            log_prob = jnp.take_along_axis(jax.nn.log_softmax(logits), action[..., None], axis=-1)[..., 0]
            new_critic_carry, value = self.critic_values(params.critic, critic_carry, inputs)
            extras = {"log_prob": log_prob, "value": value[0]}
            return (new_agent_carry, new_critic_carry), action.astype(jnp.int32), extras

        return Actor(initial_carry=lambda e: (paradigm.initial_carry((e,)), self.critic_carry((e,))), step=step)

    # -- setup -------------------------------------------------------------------------------------------

    def init(self, key: jax.Array) -> PPOState:
        agent_key, critic_key, rollout_key, key = jax.random.split(key, 4)
        spec = self.env.spec
        agents = self.paradigm.init(agent_key)
        n = spec.n_agents
        dummy = AgentInputs(obs=jnp.zeros((1, 1, n, spec.obs_dim)), last_action=jnp.zeros((1, 1, n), jnp.int32),
                            avail=jnp.ones((1, 1, n, spec.n_actions), bool), state=jnp.zeros((1, 1, spec.state_dim)),
                            reset=jnp.ones((1, 1), bool))
        x = self.critic_features(dummy)
        critic = self.critic.init(critic_key, self.critic_carry((1,)), x, jnp.ones(x.shape[:-1], bool))
        params = PPOParams(agents=agents, critic=critic)
        zero = jnp.int32(0)
        return PPOState(params=params, opt_state=self.optimizer.init(params), value_norm=ValueNorm.create(),
                        rollout=start_rollouts(self.env, self.actor(), rollout_key, self.num_envs), env_steps=zero,
                        episodes=zero, updates=zero, rng=key)

    # -- the training step -------------------------------------------------------------------------------

    def loss(self, params: PPOParams, batch: dict, value_norm: ValueNorm, env_steps: jax.Array,
             key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Clipped PPO loss on a set of segments (time-major [C, M, ...]) plus the paradigm's auxiliary loss.

        Every term and metric is a mean over the (step, agent) pairs of `batch["mask"]`: `update` relies on
        that to combine slices of a minibatch."""
        ppo, paradigm = self.ppo, self.paradigm
        inputs: AgentInputs = batch["inputs"]
        mask = batch["mask"]  # [C, M, n]: valid step and living agent
        _, output = paradigm.apply(params.agents, batch["agent_carry"], inputs, rng=key)
        logits = masked_logits(output.scores[paradigm.learned_model], inputs.avail)
        log_probs = jax.nn.log_softmax(logits)
        log_prob = jnp.take_along_axis(log_probs, batch["action"][..., None], axis=-1)[..., 0]
        probs = jnp.exp(log_probs)
        entropy = -jnp.sum(jnp.where(inputs.avail, probs * log_probs, 0.0), axis=-1)
        objective = clipped_surrogate(log_prob, batch["old_log_prob"], batch["advantage"], ppo.clip)
        policy_loss = -masked_mean(objective, mask)

        _, values = self.critic_values(params.critic, batch["critic_carry"], inputs)
        targets = value_norm.normalize(batch["returns"]) if ppo.value_norm else batch["returns"]
        old_values = batch["old_value"]
        error = huber(values - targets, ppo.huber_delta)
        if ppo.value_clip:
            clipped = old_values + jnp.clip(values - old_values, -ppo.clip, ppo.clip)
            error = jnp.maximum(error, huber(clipped - targets, ppo.huber_delta))
        value_loss = masked_mean(error, mask)
        entropy_mean = masked_mean(entropy, mask)
        aux_loss, aux_metrics = paradigm.auxiliary_loss(params.agents, output, inputs, mask > 0, env_steps)
        total = policy_loss - ppo.entropy_coef * entropy_mean + ppo.value_coef * value_loss + aux_loss
        ratio = jnp.exp(log_prob - batch["old_log_prob"])
        metrics = {"policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy_mean,
                   "approx_kl": masked_mean(batch["old_log_prob"] - log_prob, mask),
                   "clip_fraction": masked_mean((jnp.abs(ratio - 1.0) > ppo.clip).astype(jnp.float32), mask),
                   **aux_metrics}
        return total, metrics

    @staticmethod
    def gather(segments: dict, indices: jax.Array) -> dict:
        """The segments `indices` [M] of a prepared rollout, time-major [C, M, ...] (recurrent states stay [M, ...])."""
        picked = jax.tree.map(lambda x: x[indices], segments)
        return {k: (v if k in ("agent_carry", "critic_carry") else
                    jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), v)) for k, v in picked.items()}

    def update(self, state: PPOState, segments: dict, indices: jax.Array, key: jax.Array
               ) -> tuple[PPOState, dict[str, jax.Array]]:
        """One optimizer step on the minibatch of segments `indices` [M] of the prepared rollout `segments`.

        The gradient is summed over `self.slices` slices of the minibatch, each slice's loss weighted by its
        share of the minibatch's counted (step, agent) pairs (`sum_over_slices`)."""

        def slice_loss(params, indices, key):
            with learner_precision(self.algo.matmul_precision):
                return jax.value_and_grad(self.loss, has_aux=True)(
                    params, self.gather(segments, indices), state.value_norm, state.env_steps, key)

        slices = indices.reshape(self.slices, -1)
        counts = jnp.sum(segments["mask"][slices], axis=tuple(range(1, segments["mask"].ndim + 1)))
        (loss, metrics), grads = sum_over_slices(lambda part, k: slice_loss(state.params, part, k), slices,
                                                 counts, key, self.slice_devices)
        updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "actor_grad_norm": optax.tree.norm(grads.agents),
                   "critic_grad_norm": optax.tree.norm(grads.critic), **metrics}
        return state.replace(params=params, opt_state=opt_state, updates=state.updates + 1), metrics

    def prepare(self, state: PPOState, trajectory: Trajectory, final_critic_carry) -> tuple[dict, ValueNorm]:
        """Advantages, returns and value-norm update for a rollout; the rollout cut into segments [K, C, ...].

        Segment k covers environment k // (T / C), steps C * (k mod T / C) onward (`segment_starts`): in the
        batch-major trajectory [E, T + 1, ...] that is a reshape, so the large arrays (observations, states) are
        copied once; only the small per-step arrays GAE runs over are made time-major."""
        ppo, algo = self.ppo, self.algo
        time_major = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
        inputs = trajectory.agent_inputs()  # batch-major [E, T + 1, ...]
        last_inputs = jax.tree.map(lambda x: time_major(x[:, -1:]), inputs)
        _, last_value = self.critic_values(state.params.critic, final_critic_carry, last_inputs)
        values = jnp.concatenate([time_major(trajectory.extras["value"][:, :-1]), last_value])  # [T + 1, E, n]
        raw_values = state.value_norm.denormalize(values) if ppo.value_norm else values
        step_data = jax.tree.map(lambda x: time_major(x[:, :-1]), (trajectory.reward, trajectory.terminal,
                                                                    trajectory.done, trajectory.valid,
                                                                    trajectory.alive))
        reward, terminal, done, valid, alive = step_data  # [T, E, ...]
        advantages, returns = gae(reward, raw_values, terminal, done, algo.gamma, ppo.gae_lambda)
        mask = (valid[..., None] & alive).astype(jnp.float32)  # [T, E, n]
        value_norm = state.value_norm.update(returns, mask) if ppo.value_norm else state.value_norm
        mean = masked_mean(advantages, mask)
        std = jnp.sqrt(masked_mean((advantages - mean) ** 2, mask))
        advantages = (advantages - mean) / (std + 1e-5)

        length, segment_length = self.length, ppo.segment_length
        n_segments = self.num_envs * (length // segment_length)
        # [E, T(+1), ...] -> [K, C, ...]
        segment = lambda x: x[:, :length].reshape(n_segments, segment_length, *x.shape[2:])  # noqa: E731
        segment_time_major = lambda x: segment(time_major(x))  # noqa: E731  [T, E, ...] -> [K, C, ...]
        # Recurrent states before each segment's first step, as recorded while acting: [E, T / C, ...] -> [K, ...].
        starts = lambda x: x.reshape(n_segments, *x.shape[2:])  # noqa: E731
        agent_carry, critic_carry = trajectory.segment_carry
        segments = {
            "inputs": jax.tree.map(segment, inputs),
            "action": segment(trajectory.action),
            "old_log_prob": segment(trajectory.extras["log_prob"]),
            "old_value": segment_time_major(values[:-1]),
            "advantage": segment_time_major(advantages),
            "returns": segment_time_major(returns),
            "mask": segment_time_major(mask),
            "agent_carry": jax.tree.map(starts, agent_carry),
            "critic_carry": starts(critic_carry),
        }
        return segments, value_norm

    def acting_params(self, state: PPOState) -> Any:
        return state.params

    def learn(self, state: PPOState, collected: Collected, active: jax.Array | None, rng: jax.Array, key: jax.Array
              ) -> tuple[PPOState, EpisodeStats, dict[str, jax.Array], jax.Array]:
        """`ppo.epochs` passes of `ppo.minibatches` updates over one rollout (trajectory [E, T + 1, ...] with the
        recurrent states at every segment start, its sums `stats`); `key` shuffles the segments. The value after the
        last step bootstraps from the critic's recurrent state then (`collected.final_carry`). Where `active` (bool
        [], None for true) is false the state comes back unchanged and the sums are zero (ctde.algos.seeds; PPO's
        state holds no replay, so a plain choice between states is cheap)."""
        trajectory, stats = collected.trajectory, collected.stats
        shuffle_key = key
        _, final_critic_carry = collected.final_carry
        rollout = state.rollout if collected.continue_from is None else collected.continue_from
        start = state
        segments, value_norm = self.prepare(state, trajectory, final_critic_carry)
        state = state.replace(rollout=rollout, rng=rng, value_norm=value_norm,
                              env_steps=state.env_steps + stats.env_steps,
                              episodes=state.episodes + stats.episodes.astype(jnp.int32))

        def epoch(state, key):
            order = jax.random.permutation(key, self.n_segments)
            minibatches = order[: self.segments_per_minibatch * self.ppo.minibatches].reshape(
                self.ppo.minibatches, self.segments_per_minibatch)

            def one(state, xs):
                indices, loss_key = xs
                return self.update(state, segments, indices, loss_key)

            loss_keys = jax.random.split(jax.random.fold_in(key, 1), self.ppo.minibatches)
            return jax.lax.scan(one, state, (minibatches, loss_keys))

        state, metrics = jax.lax.scan(epoch, state, jax.random.split(shuffle_key, self.ppo.epochs))
        n_updates = jnp.int32(self.ppo.epochs * self.ppo.minibatches)
        metrics = jax.tree.map(jnp.sum, metrics)
        if active is None:
            return state, stats, metrics, n_updates
        nothing = (EpisodeStats.zero(), jax.tree.map(jnp.zeros_like, metrics), jnp.int32(0))
        return where_active(active, (state, stats, metrics, n_updates), (start, *nothing))

    def agent_params(self, state: PPOState) -> Any:
        return state.params.agents

    def exploration(self, state: PPOState) -> dict[str, jax.Array]:
        return {}
