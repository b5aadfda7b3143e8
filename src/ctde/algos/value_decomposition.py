"""Value decomposition backbone: IQL, VDN, QMIX, QPLEX, QTRAN, CW-QMIX, OW-QMIX and DMIX share this one TD
learner; what differs is the objective (`ctde.algos.td_objectives`): the networks beyond the agents (a mixer,
QTRAN's joint Q and V, weighted QMIX's central Q*) and the loss they make of the agents' utilities.

pymarl conventions: a recurrent agent shared across agents (supplied by the paradigm), whole-episode replay
with padding masks, linear epsilon schedule, double-Q, hard target updates, optional TD(lambda), gradient
clipping, and unavailable actions masked before every argmax. One optimizer covers the paradigm's networks and
the mixer, except models the paradigm lists in `own_optimizer` (CTDS's student), which get their own.

The training step of any paradigm on this backbone is `td_loss` plus `update` below, and the objective's `loss`.
"""

from __future__ import annotations

from typing import Any

import flashbax as fbx
import jax
import jax.numpy as jnp
import optax
from flax import struct

from ctde.algos.base import Collected, RolloutSpec
from ctde.algos.replay import store_and_learn
from ctde.algos.slicing import slice_count, slice_devices, slicing_options, sum_over_slices
from ctde.config import TrainConfig
from ctde.envs.base import Environment
from ctde.algos.td_objectives import TDInputs, lambda_returns, make_objective  # noqa: F401 (lambda_returns: API)
from ctde.nets.precision import learner_precision
from ctde.paradigms.base import Paradigm
from ctde.algos.rollout import Actor, EpisodeStats, Trajectory, collect, paradigm_actor
from ctde.nets.actions import epsilon_greedy, masked_argmax


@struct.dataclass
class VDParams:
    agents: Any  # the paradigm's networks
    mixer: Any  # the objective's own networks (a mixer; QTRAN's Q_jt and V; weighted QMIX's mixer and central Q*)


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


class ValueDecomposition:
    """TD learning of per-agent utilities through a mixer. See module docstring."""

    def __init__(self, config: TrainConfig, env: Environment, paradigm: Paradigm):
        self.config = config
        self.algo = config.algo
        self.env = env
        self.paradigm = paradigm
        spec = env.spec
        self.objective = make_objective(self.algo, spec)
        rollout = config.rollout
        self.rollout = RolloutSpec(num_envs=rollout.num_envs, length=rollout.length or spec.episode_limit,
                                   auto_reset=rollout.auto_reset)
        self.optimizer = self._optimizer(paradigm.own_optimizer)
        self.replay = fbx.make_item_buffer(max_length=self.algo.buffer_size, min_length=self.algo.batch_size,
                                           sample_batch_size=self.algo.batch_size, add_batches=True)
        self.epsilon_schedule = optax.linear_schedule(self.algo.epsilon_start, self.algo.epsilon_finish,
                                                      self.algo.epsilon_anneal_steps)
        # Whole-episode sequences are mostly padding once episodes are shorter than the limit. Like pymarl,
        # which cuts a batch to its longest episode, an update runs on the shortest of these prefix lengths
        # that holds every sampled episode (a `lax.switch`, so only that branch runs).
        full = self.rollout.length + 1
        quarters = {max(2, -(-full * k // 4)) for k in (1, 2, 4)}
        self.trim_lengths = (full,) if self.rollout.auto_reset else tuple(sorted(quarters))
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
        agents = self.paradigm.init(agent_key)
        params = VDParams(agents=agents, mixer=self.objective.init(mixer_key))
        # flashbax needs one example item to lay out its storage.
        example, _ = collect(self.env, self.paradigm, agents, rollout_key, num_envs=1, length=self.rollout.length,
                             auto_reset=self.rollout.auto_reset, model=self.paradigm.collect_model,
                             select_actions=epsilon_greedy(jnp.float32(1.0)))
        replay = self.replay.init(jax.tree.map(lambda x: x[0], example))
        zero = jnp.int32(0)
        return VDState(params=params, target_params=params, opt_state=self.optimizer.init(params), replay=replay,
                       env_steps=zero, episodes=zero, updates=zero, rng=key)

    # -- the training step -------------------------------------------------------------------------------

    def td_loss(self, params: VDParams, target_params: VDParams, batch: Trajectory, env_steps: jax.Array,
                key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """The objective's TD loss plus the paradigm's auxiliary loss. batch: time-major [T + 1, B, ...].

        The paradigm's networks run over the whole sequences twice (online and target parameters); the learned
        model's (`learned_model`) utilities, the actions and the masks go to the objective (`TDInputs`), which owns
        every network beyond the agents and returns its loss.
        """
        paradigm, algo = self.paradigm, self.algo
        inputs = batch.agent_inputs()
        carry = paradigm.initial_carry(batch.reward.shape[1:])
        online_key, target_key = jax.random.split(key) if key is not None else (None, None)
        _, online = paradigm.apply(params.agents, carry, inputs, rng=online_key)
        _, target = paradigm.apply(target_params.agents, carry, inputs, rng=target_key)
        q = online.scores[paradigm.learned_model]  # [T+1, B, n, A]
        avail = batch.avail
        # Bootstrap action at t+1: argmax of the selecting model (online for double-Q; IGM-DA: the student).
        selector = online.scores[paradigm.select_model] if algo.double_q else target.scores[paradigm.select_model]
        # DMIX: the learned network's quantiles [T+1, B, n, A, N] (its scores are their means); None otherwise.
        quantiles = online.extras.get("quantiles")
        quantiles_target = target.extras.get("quantiles")
        td_inputs = TDInputs(
            q=q, q_target=jax.lax.stop_gradient(target.scores[paradigm.learned_model]),
            quantiles=quantiles,
            quantiles_target=None if quantiles_target is None else jax.lax.stop_gradient(quantiles_target),
            actions=batch.action[:-1], greedy=masked_argmax(jax.lax.stop_gradient(q[:-1]), avail[:-1]),
            next_actions=masked_argmax(jax.lax.stop_gradient(selector[1:]), avail[1:]), avail=avail,
            state=batch.state, reward=batch.reward[:-1], terminal=batch.terminal[:-1], done=batch.done[:-1],
            mask=batch.valid[:-1].astype(jnp.float32), agents=inputs)
        td_loss, td_metrics = self.objective.loss(params.mixer, target_params.mixer, td_inputs)

        agent_mask = jnp.broadcast_to(batch.valid[..., None], batch.action.shape)  # [T + 1, B, n]
        aux_loss, aux_metrics = paradigm.auxiliary_loss(params.agents, online, inputs, agent_mask, env_steps)
        return td_loss + aux_loss, {**td_metrics, **aux_metrics}

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

    # -- collecting and learning (the training program runs the rollout: ctde.algos.base) ---------------

    def actor(self, env_steps: jax.Array) -> Actor:
        """The collecting model choosing epsilon-greedily, epsilon on its schedule at `env_steps` (int [])."""
        select = epsilon_greedy(self.epsilon_schedule(env_steps))
        return paradigm_actor(self.paradigm, self.paradigm.collect_model, select)

    def acting_params(self, state: VDState) -> Any:
        return state.params.agents

    def learn(self, state: VDState, collected: Collected, active: jax.Array | None, rng: jax.Array, key: jax.Array
              ) -> tuple[VDState, EpisodeStats, dict[str, jax.Array], jax.Array]:
        """Store the collected episodes, then `algo.updates_per_rollout` updates
        (`ctde.algos.replay.store_and_learn`)."""
        return store_and_learn(self, state, collected.trajectory, collected.stats, active, rng, key)

    def agent_params(self, state: VDState) -> Any:
        return state.params.agents

    def exploration(self, state: VDState) -> dict[str, jax.Array]:
        return {"epsilon": self.epsilon_schedule(state.env_steps)}
