"""Value decomposition backbone: IQL, VDN, QMIX and QPLEX share this one TD learner; the mixer is the only
difference.

pymarl conventions: a recurrent agent shared across agents (supplied by the paradigm), whole-episode replay
with padding masks, linear epsilon schedule, double-Q, hard target updates, optional TD(lambda), gradient
clipping, and unavailable actions masked before every argmax. One optimizer covers the paradigm's networks and
the mixer, except models the paradigm lists in `own_optimizer` (CTDS's student), which get their own.

The training step of any paradigm on this backbone is `td_loss` plus `update` below.
"""

from __future__ import annotations

from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ctde.algos.replay import off_policy_iteration, store_episodes
from ctde.algos.slicing import slice_count, slice_devices, slicing_options, sum_over_slices
from ctde.config import TrainConfig
from ctde.envs.base import Environment
from ctde.nets.mixers import make_mixer
from ctde.nets.precision import learner_precision
from ctde.paradigms.base import Paradigm
from ctde.training.rollout import EpisodeStats, Trajectory, collect, epsilon_greedy, masked_argmax


@struct.dataclass
class VDParams:
    agents: Any  # the paradigm's networks
    mixer: Any


@struct.dataclass
class VDState:
    """Everything one seed's learner carries between iterations (and what a checkpoint holds)."""

    params: VDParams
    target_params: VDParams
    opt_state: Any
    replay: Any  # flashbax buffer state of Trajectory items [T + 1, ...]
    env_steps: jax.Array  # int32 []
    episodes: jax.Array  # int32 []
    updates: jax.Array  # int32 []
    rng: jax.Array


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


def _take(values: jax.Array, actions: jax.Array) -> jax.Array:
    return jnp.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


class ValueDecomposition:
    """TD learning of per-agent utilities through a mixer. See module docstring."""

    def __init__(self, config: TrainConfig, env: Environment, paradigm: Paradigm):
        self.config = config
        self.algo = config.algo
        self.env = env
        self.paradigm = paradigm
        spec = env.spec
        self.mixer = make_mixer(self.algo.name, spec.n_agents, self.algo.mixer_embed_dim, self.algo.hypernet_layers,
                                self.algo.hypernet_embed, self.algo.qplex_kernels)
        rollout = config.rollout
        self.num_envs = rollout.num_envs
        self.length = rollout.length or spec.episode_limit
        self.auto_reset = rollout.auto_reset
        self.optimizer = self._optimizer(paradigm.own_optimizer)
        self.replay = fbx.make_item_buffer(max_length=self.algo.buffer_size, min_length=self.algo.batch_size,
                                           sample_batch_size=self.algo.batch_size, add_batches=True)
        self.epsilon_schedule = optax.linear_schedule(self.algo.epsilon_start, self.algo.epsilon_finish,
                                                      self.algo.epsilon_anneal_steps)
        # Whole-episode sequences are mostly padding once episodes are shorter than the limit. Like pymarl,
        # which cuts a batch to its longest episode, an update runs on the shortest of these prefix lengths
        # that holds every sampled episode (a `lax.switch`, so only that branch runs).
        full = self.length + 1
        quarters = {max(2, -(-full * k // 4)) for k in (1, 2, 4)}
        self.trim_lengths = (full,) if self.auto_reset else tuple(sorted(quarters))
        self.slice_rows, devices_wanted = slicing_options(self.algo, "value_decomposition")
        # The devices are chosen once, for the longest prefix; every shorter one is then spread over them too.
        longest = slice_count(self.algo.batch_size, self.trim_lengths[-1] * spec.n_agents, self.slice_rows)
        self.slice_devices = slice_devices(longest, devices_wanted)
        # Set by the training program when seeds are vmapped under this axis name: the prefix length and whether
        # to learn are then agreed across seeds (a switch on a per-seed value would run every branch under vmap;
        # ctde.algos.seeds).
        self.seed_axis: str | None = None

    # -- setup -------------------------------------------------------------------------------------------

    def _optimizer(self, own: tuple[str, ...]) -> optax.GradientTransformation:
        """Gradient clip then Adam or RMSprop over all parameters; models in `own` (the paradigm's
        `own_optimizer`) get a separate one with the same settings, their own clip included."""

        def make():
            if self.algo.optimizer == "adam":
                optimizer = optax.adam(self.algo.lr)
            else:  # pymarl's RMSprop: alpha 0.99, eps 1e-5 added outside the square root (PyTorch semantics)
                optimizer = optax.rmsprop(self.algo.lr, decay=0.99, eps=1e-5, eps_in_sqrt=False)
            return optax.chain(optax.clip_by_global_norm(self.algo.grad_clip), optimizer)

        if not own:
            return make()

        def labels(params: VDParams) -> VDParams:
            return VDParams(agents={name: name if name in own else "shared" for name in params.agents},
                            mixer="shared")

        return optax.partition({"shared": make(), **{name: make() for name in own}}, labels)

    def init(self, key: jax.Array) -> VDState:
        agent_key, mixer_key, rollout_key, key = jax.random.split(key, 4)
        spec = self.env.spec
        agents = self.paradigm.init(agent_key)
        n, a = spec.n_agents, spec.n_actions
        mixer = self.mixer.init(mixer_key, jnp.zeros((1, n)), jnp.zeros((1, n)), jnp.zeros((1, spec.state_dim)),
                                jnp.zeros((1, n, a)))
        params = VDParams(agents=agents, mixer=mixer)
        # flashbax needs one example item to lay out its storage.
        example, _ = collect(self.env, self.paradigm, agents, rollout_key, num_envs=1, length=self.length,
                             auto_reset=self.auto_reset, model=self.paradigm.collect_model,
                             select_actions=epsilon_greedy(jnp.float32(1.0)))
        replay = self.replay.init(jax.tree.map(lambda x: x[0], example))
        zero = jnp.int32(0)
        return VDState(params=params, target_params=params, opt_state=self.optimizer.init(params), replay=replay,
                       env_steps=zero, episodes=zero, updates=zero, rng=key)

    # -- the training step -------------------------------------------------------------------------------

    def td_loss(self, params: VDParams, target_params: VDParams, batch: Trajectory, env_steps: jax.Array,
                key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Masked TD loss through the mixer plus the paradigm's auxiliary loss. batch: time-major [T + 1, B, ...]."""
        paradigm, algo = self.paradigm, self.algo
        inputs = batch.agent_inputs()
        carry = paradigm.initial_carry(batch.reward.shape[1:])
        online_key, target_key = jax.random.split(key) if key is not None else (None, None)
        _, online = paradigm.apply(params.agents, carry, inputs, rng=online_key)
        _, target = paradigm.apply(target_params.agents, carry, inputs, rng=target_key)
        q = online.scores[paradigm.td_model]  # [T+1, B, n, A]
        q_target = jax.lax.stop_gradient(target.scores[paradigm.td_model])
        avail = batch.avail
        masked_max = lambda values, av: jnp.max(jnp.where(av, values, -1e7), axis=-1)  # noqa: E731

        actions = batch.action[:-1]
        chosen = _take(q[:-1], actions)
        best = masked_max(q[:-1], avail[:-1])
        # Bootstrap action at t+1: argmax of the selecting model (online for double-Q; IGM-DA: the student).
        selector = online.scores[paradigm.select_model] if algo.double_q else target.scores[paradigm.select_model]
        next_actions = masked_argmax(jax.lax.stop_gradient(selector[1:]), avail[1:])
        next_chosen = _take(q_target[1:], next_actions)
        next_best = masked_max(q_target[1:], avail[1:])

        n_actions = q.shape[-1]
        q_tot = self.mixer.apply(params.mixer, chosen, best, batch.state[:-1], jax.nn.one_hot(actions, n_actions))
        next_q_tot = self.mixer.apply(target_params.mixer, next_chosen, next_best, batch.state[1:],
                                      jax.nn.one_hot(next_actions, n_actions))
        targets = lambda_returns(batch.reward[:-1], batch.terminal[:-1], batch.done[:-1],
                                 jax.lax.stop_gradient(next_q_tot), algo.gamma, algo.td_lambda)

        mask = batch.valid[:-1].astype(jnp.float32)  # [T, B]
        td_error = (q_tot - targets) * mask[..., None]
        valid_count = jnp.maximum(mask.sum(), 1.0)
        td_loss = jnp.sum(td_error ** 2) / (valid_count * q_tot.shape[-1])
        agent_mask = jnp.broadcast_to(batch.valid[..., None], batch.action.shape)  # [T + 1, B, n]
        aux_loss, aux_metrics = paradigm.auxiliary_loss(params.agents, online, inputs, agent_mask, env_steps)
        metrics = {
            "td_loss": td_loss,
            "td_error_abs": jnp.sum(jnp.abs(td_error)) / (valid_count * q_tot.shape[-1]),
            "q_taken": jnp.sum(chosen * mask[..., None]) / (valid_count * chosen.shape[-1]),
            "target": jnp.sum(targets * mask[..., None]) / (valid_count * q_tot.shape[-1]),
            **aux_metrics,
        }
        return td_loss + aux_loss, metrics

    def update(self, learner: tuple, replay: Any, env_steps: jax.Array, key: jax.Array) -> tuple[tuple, dict]:
        """One gradient step on a batch of sequences sampled from `replay`, then the periodic hard target copy.

        learner = (params, target_params, opt_state, updates); the replay is read here, never written, so it
        stays out of the carried state and XLA need not copy it.
        """
        params, target_params, opt_state, n_updates = learner
        sample_key, loss_key = jax.random.split(key)
        batch = self.replay.sample(replay, sample_key).experience  # [B, T + 1, ...]

        def loss_and_grads(length: int, batch: Trajectory):
            def one_slice(sequences: Trajectory, key: jax.Array):
                prefix = jax.tree.map(lambda x: x[:, :length], sequences).transpose()
                with learner_precision(self.algo.matmul_precision):
                    return jax.value_and_grad(self.td_loss, has_aux=True)(params, target_params, prefix, env_steps,
                                                                          key)

            slices = slice_count(self.algo.batch_size, length * self.env.spec.n_agents, self.slice_rows,
                                 self.slice_devices)
            # Slices of whole sequences, weighted by their valid steps (the TD loss's mask; see ctde.algos.slicing),
            # side by side on the CPU's cores: the GRU's step-by-step loops each keep one core busy.
            parts = jax.tree.map(lambda x: x.reshape(slices, -1, *x.shape[1:]), batch)
            counts = jnp.sum(parts.valid[:, :, :length - 1], axis=(1, 2))
            return sum_over_slices(one_slice, parts, counts, loss_key, self.slice_devices)

        if len(self.trim_lengths) == 1:
            (loss, metrics), grads = loss_and_grads(self.trim_lengths[0], batch)
        else:
            needed = jnp.max(jnp.sum(batch.valid, axis=1)) + 1  # the longest episode and its bootstrap entry
            if self.seed_axis is not None:
                needed = jax.lax.pmax(needed, self.seed_axis)
            branch = jnp.searchsorted(jnp.array(self.trim_lengths), needed)
            (loss, metrics), grads = jax.lax.switch(
                branch, [lambda b, n=n: loss_and_grads(n, b) for n in self.trim_lengths], batch)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        n_updates = n_updates + 1
        copy_now = n_updates % self.algo.target_update_interval == 0
        target_params = jax.tree.map(lambda new, old: jnp.where(copy_now, new, old), params, target_params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **metrics}
        return (params, target_params, opt_state, n_updates), metrics

    # -- one iteration: collect, store, learn -----------------------------------------------------------

    def store(self, replay: Any, trajectory: Trajectory, active: jax.Array | None = None) -> Any:
        """Adds the rollout's sequences (trajectory [E, T + 1, ...]) to the replay buffer (`store_episodes`)."""
        return store_episodes(self.replay, replay, trajectory, active)

    def iteration(self, state: VDState, active: jax.Array | None = None
                  ) -> tuple[VDState, EpisodeStats, dict[str, jax.Array], jax.Array]:
        """Collect `rollout.num_envs` episodes epsilon-greedily, store them, then `algo.updates_per_rollout`
        updates (`ctde.algos.replay.off_policy_iteration`, which says what `active` does)."""
        return off_policy_iteration(self, state, active, epsilon_greedy(self.epsilon_schedule(state.env_steps)))

    def agent_params(self, state: VDState) -> Any:
        return state.params.agents

    def exploration(self, state: VDState) -> dict[str, jax.Array]:
        return {"epsilon": self.epsilon_schedule(state.env_steps)}
