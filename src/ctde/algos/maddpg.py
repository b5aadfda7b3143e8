"""MADDPG: the off-policy actor-critic backbone (Lowe et al., 2017), for discrete and continuous actions.

Deterministic actors, one per agent role, supplied by the paradigm (plain CTDE: the recurrent agent on the
agent's own input, shared across agents with the agent id in its input; CTEDD: the global policies on the state).
A centralized critic Q(s, a_1..a_n) on the global state and every agent's one-hot action, owned by this backbone;
the task is cooperative (one team reward), so one critic serves every agent. Discrete actions go through the
Gumbel-softmax: rollouts sample from the actor's masked softmax (the hard Gumbel-softmax's forward value, the
exploration noise of discrete MADDPG), and the actor loss differentiates the straight-through estimator.
Continuous actions (`env.continuous_actions`) are tanh of the actor's outputs, explored with Gaussian noise
(`maddpg.noise_std`, clipped to [-1, 1]) and differentiated directly, as DDPG's; the critic then reads the
action vectors where it reads one-hot vectors for discrete actions.

Per update, on a batch of whole episodes from replay (as EPyMARL's MADDPG):
- critic: y_t = r_t + gamma * (1 - terminal_t) * Q'(s_{t+1}, onehot(argmax mu'(t+1))) (continuous:
  tanh mu'(t+1)), with Q' and mu' the target networks (the target policy is deterministic, as DDPG's);
  loss = mean over valid steps (Q(s_t, a_t) - y_t)^2;
- actor: for every agent i, the replayed joint action with agent i's own replaced by its straight-through
  Gumbel-softmax sample (continuous: tanh of its output);
  loss = -mean_i Q(s_t, a_{-i}, a~_i) + maddpg.actor_reg * mean(logits^2), plus the
  paradigm's auxiliary loss (CTEDD's entropy term);
- both networks step with Adam (separate gradient clips), then the target networks move by Polyak averaging
  (maddpg.tau) after every step.

The training step of any paradigm on this backbone is `loss` plus `update` below.
"""

from __future__ import annotations

from typing import Any

import flashbax as fbx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ctde.algos.base import Collected, RolloutSpec
from ctde.algos.replay import store_and_learn
from ctde.config import TrainConfig
from ctde.envs.base import Environment
from ctde.nets.precision import Dense, learner_precision
from ctde.paradigms.base import Paradigm
from ctde.algos.rollout import Actor, EpisodeStats, Trajectory, collect, paradigm_actor
from ctde.nets.actions import masked_argmax, masked_logits, sample_softmax, tanh_with_noise



class CentralCritic(nn.Module):
    """Q(s, a_1..a_n): state [*B, s] and one-hot joint action [*B, n, |A|] -> [*B]. Two ReLU layers."""

    hidden_dim: int

    @nn.compact
    def __call__(self, state: jax.Array, joint_action: jax.Array) -> jax.Array:
        x = jnp.concatenate([state, joint_action.reshape(*joint_action.shape[:-2], -1)], axis=-1)
        x = nn.relu(Dense(self.hidden_dim, name="fc1")(x))
        x = nn.relu(Dense(self.hidden_dim, name="fc2")(x))
        return Dense(1, name="q")(x)[..., 0]



def gumbel_softmax(key: jax.Array, logits: jax.Array, temperature: float) -> jax.Array:
    """Straight-through Gumbel-softmax: the one-hot of a sample from softmax(logits) forward, the gradient of the
    relaxed sample softmax((logits + g) / temperature) backward. logits [..., |A|] -> [..., |A|]."""
    gumbel = jax.random.gumbel(key, logits.shape, logits.dtype)
    soft = jax.nn.softmax((logits + gumbel) / temperature, axis=-1)
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), logits.shape[-1], dtype=soft.dtype)
    return hard + soft - jax.lax.stop_gradient(soft)


def with_own_action(replayed: jax.Array, own: jax.Array) -> jax.Array:
    """For every agent i, the joint action with agent i's entry taken from `own`, the others from `replayed`.
    replayed, own [*B, n, |A|] -> [*B, n (whose own action), n, |A|]."""
    n = replayed.shape[-2]
    is_own = jnp.eye(n, dtype=bool)[:, :, None]  # [i, j, 1]
    return jnp.where(is_own, own[..., None, :, :], replayed[..., None, :, :])


@struct.dataclass
class MADDPGParams:
    agents: Any  # the paradigm's networks (the actors)
    critic: Any


@struct.dataclass
class MADDPGState:
    """Everything one seed's learner carries between iterations (and what a checkpoint holds)."""

    params: MADDPGParams
    target_params: MADDPGParams
    opt_state: Any
    replay: Any  # flashbax buffer state of Trajectory items [T + 1, ...]
    env_steps: jax.Array
    episodes: jax.Array
    updates: jax.Array
    rng: jax.Array


class MADDPG:
    """Centralized-critic actor-critic on replayed episodes. See the module docstring."""

    def __init__(self, config: TrainConfig, env: Environment, paradigm: Paradigm):
        self.config = config
        self.algo = config.algo
        self.options = config.maddpg
        self.env = env
        self.paradigm = paradigm
        self.rollout = RolloutSpec(num_envs=config.rollout.num_envs,
                                   length=config.rollout.length or env.spec.episode_limit,
                                   auto_reset=bool(config.rollout.auto_reset))
        self.critic = CentralCritic(self.options.critic_hidden)
        self.replay = fbx.make_item_buffer(max_length=self.algo.buffer_size, min_length=self.algo.batch_size,
                                           sample_batch_size=self.algo.batch_size, add_batches=True)

        def adam(lr: float) -> optax.GradientTransformation:
            return optax.chain(optax.clip_by_global_norm(self.algo.grad_clip), optax.adam(lr))

        self.optimizer = optax.multi_transform(
            {"actor": adam(self.algo.lr), "critic": adam(self.options.critic_lr or self.algo.lr)},
            lambda params: MADDPGParams(agents=jax.tree.map(lambda _: "actor", params.agents),
                                        critic=jax.tree.map(lambda _: "critic", params.critic)))
        self.seed_axis: str | None = None  # set by the training program when seeds are vmapped
        self.continuous = env.spec.continuous_actions
        self.explore = tanh_with_noise(self.options.noise_std) if self.continuous else sample_softmax

    # -- actions: one-hot vectors for discrete actions, the actions themselves for continuous ones -------

    def action_vectors(self, actions: jax.Array) -> jax.Array:
        """Replayed actions as the critic reads them: int [..., n] -> one-hot [..., n, A]; float as they are."""
        return actions if self.continuous else jax.nn.one_hot(actions, self.env.spec.n_actions)

    def deterministic_actions(self, scores: jax.Array, avail: jax.Array) -> jax.Array:
        """The target policy's actions as vectors: one-hot of the best available action, or tanh(scores)."""
        if self.continuous:
            return jnp.tanh(scores)
        return jax.nn.one_hot(masked_argmax(scores, avail), self.env.spec.n_actions)

    def differentiable_actions(self, key: jax.Array, scores: jax.Array, avail: jax.Array) -> jax.Array:
        """The actor loss's own actions: straight-through Gumbel-softmax samples, or tanh(scores)."""
        if self.continuous:
            return jnp.tanh(scores)
        return gumbel_softmax(key, masked_logits(scores, avail), self.options.gumbel_temperature)

    # -- setup -------------------------------------------------------------------------------------------

    def init(self, key: jax.Array) -> MADDPGState:
        agent_key, critic_key, rollout_key, key = jax.random.split(key, 4)
        spec = self.env.spec
        agents = self.paradigm.init(agent_key)
        critic = self.critic.init(critic_key, jnp.zeros((1, spec.state_dim)),
                                  jnp.zeros((1, spec.n_agents, spec.n_actions)))
        params = MADDPGParams(agents=agents, critic=critic)
        # flashbax needs one example item to lay out its storage.
        example, _ = collect(self.env, self.paradigm, agents, rollout_key, num_envs=1, length=self.rollout.length,
                             auto_reset=self.rollout.auto_reset, model=self.paradigm.collect_model,
                             select_actions=self.explore)
        zero = jnp.int32(0)
        return MADDPGState(params=params, target_params=params, opt_state=self.optimizer.init(params),
                           replay=self.replay.init(jax.tree.map(lambda x: x[0], example)), env_steps=zero,
                           episodes=zero, updates=zero, rng=key)

    # -- the training step -------------------------------------------------------------------------------

    def critic_target(self, target_params: MADDPGParams, batch: Trajectory, target_logits: jax.Array) -> jax.Array:
        """y_t = r_t + gamma * (1 - terminal_t) * Q'(s_{t+1}, onehot(argmax mu'_{t+1})), [T, B], from the target
        actors' logits [T + 1, B, n, |A|] over time-major `batch` [T + 1, B, ...] (continuous: tanh mu'_{t+1})."""
        next_joint = self.deterministic_actions(target_logits[1:], batch.avail[1:])
        next_q = self.critic.apply(target_params.critic, batch.state[1:], next_joint)
        continues = 1.0 - batch.terminal[:-1].astype(jnp.float32)
        return batch.reward[:-1] + self.algo.gamma * continues * next_q

    def loss(self, params: MADDPGParams, target_params: MADDPGParams, batch: Trajectory, env_steps: jax.Array,
             key: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Critic TD loss + actor loss + the paradigm's auxiliary loss, on time-major `batch` [T + 1, B, ...].
        The critic's gradient reaches only the critic, the actor's only the actors."""
        paradigm, spec = self.paradigm, self.env.spec
        inputs = batch.agent_inputs()
        carry = paradigm.initial_carry(batch.reward.shape[1:])
        online_key, target_key, gumbel_key = jax.random.split(key, 3)
        _, online = paradigm.apply(params.agents, carry, inputs, rng=online_key)
        _, target = paradigm.apply(target_params.agents, carry, inputs, rng=target_key)
        mask = batch.valid[:-1].astype(jnp.float32)  # [T, B]
        count = jnp.maximum(mask.sum(), 1.0)
        replayed = self.action_vectors(batch.action[:-1])  # [T, B, n, |A|]

        targets = jax.lax.stop_gradient(self.critic_target(target_params, batch, target.scores[paradigm.learned_model]))
        q_taken = self.critic.apply(params.critic, batch.state[:-1], replayed)
        critic_loss = jnp.sum(mask * (q_taken - targets) ** 2) / count

        own = self.differentiable_actions(gumbel_key, online.scores[paradigm.learned_model][:-1], batch.avail[:-1])
        frozen_critic = jax.lax.stop_gradient(params.critic)
        state = jnp.broadcast_to(batch.state[:-1, :, None], (*replayed.shape[:-2], spec.n_agents, spec.state_dim))
        q_own = self.critic.apply(frozen_critic, state, with_own_action(replayed, own))  # [T, B, n]
        raw_logits = jnp.where(batch.avail[:-1], online.scores[paradigm.learned_model][:-1], 0.0)
        logit_size = jnp.sum(mask[..., None, None] * raw_logits ** 2) / (count * spec.n_agents * spec.n_actions)
        actor_loss = -jnp.sum(mask[..., None] * q_own) / (count * spec.n_agents) + self.options.actor_reg * logit_size

        agent_mask = jnp.broadcast_to(batch.valid[..., None], batch.alive.shape)  # [T + 1, B, n]
        aux_loss, aux_metrics = paradigm.auxiliary_loss(params.agents, online, inputs, agent_mask, env_steps)
        metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_taken": jnp.sum(mask * q_taken) / count,
                   "target": jnp.sum(mask * targets) / count, **aux_metrics}
        return critic_loss + actor_loss + aux_loss, metrics

    def update(self, learner: tuple, replay: Any, env_steps: jax.Array, key: jax.Array) -> tuple[tuple, dict]:
        """One gradient step on a batch of episodes sampled from `replay`, then the soft target update.
        learner = (params, target_params, opt_state, updates); the replay is only read."""
        params, target_params, opt_state, n_updates = learner
        sample_key, loss_key = jax.random.split(key)
        batch = self.replay.sample(replay, sample_key).experience.transpose()  # [T + 1, B, ...]
        with learner_precision(self.algo.matmul_precision):
            (loss, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(params, target_params, batch,
                                                                                 env_steps, loss_key)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        tau = self.options.tau
        target_params = jax.tree.map(lambda new, old: tau * new + (1.0 - tau) * old, params, target_params)
        metrics = {"loss": loss, "actor_grad_norm": optax.tree.norm(grads.agents),
                   "critic_grad_norm": optax.tree.norm(grads.critic), **metrics}
        return (params, target_params, opt_state, n_updates + 1), metrics

    # -- collecting and learning (the training program runs the rollout: ctde.algos.base) ---------------

    def actor(self, env_steps: jax.Array) -> Actor:
        """The collecting model sampling its actors' masked softmax (continuous: tanh plus Gaussian noise), the
        same at every `env_steps`."""
        return paradigm_actor(self.paradigm, self.paradigm.collect_model, self.explore)

    def acting_params(self, state: MADDPGState) -> Any:
        return state.params.agents

    def learn(self, state: MADDPGState, collected: Collected, active: jax.Array | None, rng: jax.Array,
              key: jax.Array) -> tuple[MADDPGState, EpisodeStats, dict[str, jax.Array], jax.Array]:
        """Store the collected episodes, then `algo.updates_per_rollout` updates
        (`ctde.algos.replay.store_and_learn`)."""
        return store_and_learn(self, state, collected.trajectory, collected.stats, active, rng, key)

    def agent_params(self, state: MADDPGState) -> Any:
        return state.params.agents

    def exploration(self, state: MADDPGState) -> dict[str, jax.Array]:
        return {}
