"""The host loop: training on environments stepped outside JAX (SMAC, SMAClite, GRF, any SMAC-interface class).

The run is the same as on a JAX environment (`ctde.training.program`): the same `RunState` (the backbone's learner,
replay included, and the evaluation key), the same chunks of evaluation blocks, metrics, checkpoints, resume,
stage 2, export and audit, all driven by the same runner. What changes is who steps the environments:

    per iteration:  keys (jit)  ->  num_envs episodes on the host, `act` jitted per step  ->  store + learn (jit)
    (value decomposition; MAPPO: `rollout.length` steps of continuing episodes -> its epochs)

- `act` is the paradigm's collecting model with the backbone's epsilon-greedy choice, vmapped over seeds and
  environments; the host sends each environment its agents' actions and gathers what it returns.
- Each episode is written in the JAX rollout's layout (`Trajectory` [E, T + 1, ...], padded after the episode's
  end by repeating its last inputs, valid = False there) and stored and learned from by
  `ctde.algos.replay.store_and_learn`, the very code that follows a JAX rollout: the update is unchanged.
- Every environment's episode is seeded from the run's keys (which the checkpoint holds), so with a seedable
  environment a resumed run repeats the uninterrupted one exactly; an iteration is whole episodes, so a checkpoint
  is always between episodes.
- Environments: seeds x `rollout.num_envs`, environment k of seed s built with seed 1000 (seed + s) + k (`envs`),
  each in its own process (`ctde.envs.host.workers`) or in this one (`rollout.host_processes`).

MAPPO / IPPO run here too, as the compiled loop runs them: fixed-length rollouts of continuing episodes consumed
at once by the backbone's unchanged `learn_from` (see the section at the end). MADDPG (hence CTEDD) replays
whole episodes as value decomposition does, so it runs the episode path, exploring with its own
`exploring_selection` (its actors' sampled softmax) where value decomposition explores epsilon-greedily.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ctde.algos.replay import store_and_learn
from ctde.paradigms.base import AgentInputs
from ctde.training.program import SEED_AXIS, Program, RunState
from ctde.algos.rollout import EpisodeStats, Trajectory, paradigm_actor, policy_actor
from ctde.nets.actions import greedy_for

MAX_SEED = 2 ** 31 - 1


@dataclass
class Episodes:
    """What a host rollout returns: the trajectory (NumPy, [S, E, T + 1, ...]) and sums per seed over the
    episodes it finished (EpisodeStats of arrays [S])."""

    trajectory: Trajectory
    stats: EpisodeStats


@dataclass
class HostProgram(Program):
    _envs: Any = field(default=None, repr=False)
    _live: Any = field(default=None, repr=False)  # MAPPO: the episodes in progress between iterations

    # -- environments ------------------------------------------------------------------------------------

    @property
    def envs_per_seed(self) -> int:
        return self.backbone.num_envs

    def envs(self, episodes_played: np.ndarray | None = None):
        """The environments, started on first use. Environment k of seed s gets seed 1000 (seed + s) + k, plus
        7919 x the seed's episodes played when a resumed run starts them: an environment seeded only when it
        starts (StarCraft II) then does not replay the random stream of the run's first episodes."""
        if self._envs is None:
            from ctde.envs.host.workers import HostEnvs

            config, per_seed = self.config, self.envs_per_seed
            played = np.zeros(config.seeds, np.int64) if episodes_played is None else np.asarray(episodes_played)
            seeds = [(1000 * (config.seed + s) + k + 7919 * int(played[s])) % 2 ** 31 for s in range(config.seeds)
                     for k in range(per_seed)]
            processes = config.rollout.host_processes
            self._envs = HostEnvs(self.env.host, seeds, len(seeds) > 1 if processes is None else processes)
        return self._envs

    def close(self) -> None:
        if self._envs is not None:
            self._envs.close()
            self._envs = None

    # -- jitted pieces -----------------------------------------------------------------------------------

    def _act_fn(self, actor_for):
        """jit(vmap over seeds) of one step of the Actor `actor_for(aux)` on [E] environments: (params, carry, obs,
        state, avail, views, last_action, reset, key, t, aux) -> (carry, actions [S, E, n])."""

        def act_one(params, carry, obs, state, avail, views, last_action, reset, key, t, aux):
            inputs = AgentInputs(obs=obs[None], last_action=last_action[None], avail=avail[None], state=state[None],
                                 reset=reset[None], views={k: v[None] for k, v in views.items()})
            carry, actions, _ = actor_for(aux).step(params, carry, inputs, jax.random.fold_in(key, t))
            return carry, actions

        return jax.jit(jax.vmap(act_one, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0, None, 0)))

    @functools.cached_property
    def _explore(self):
        paradigm, backbone = self.paradigm, self.backbone
        return self._act_fn(lambda env_steps: paradigm_actor(
            paradigm, paradigm.collect_model, backbone.exploring_selection(env_steps)))

    def _greedy(self, model: str, select=None, deterministic=None):
        """The act function of `model` choosing with `select` (default: greedy), cached per choice."""
        paradigm = self.paradigm
        select = select or greedy_for(self.env.spec)
        deterministic = not paradigm.stochastic_evaluation if deterministic is None else deterministic
        cache = self.__dict__.setdefault("_act_cache", {})
        if (model, select, deterministic) not in cache:
            cache[model, select, deterministic] = self._act_fn(
                lambda _: paradigm_actor(paradigm, model, select, deterministic))
        return cache[model, select, deterministic]

    @functools.cached_property
    def _begin(self):
        """Per seed: the iteration's rollout key (as `off_policy_iteration` splits it), the episodes' seeds, the
        env steps (epsilon's clock) and the collecting parameters."""
        backbone, per_seed = self.backbone, self.envs_per_seed

        def begin(state: RunState):
            _, rollout_key, _ = jax.random.split(state.learner.rng, 3)
            seeds = jax.random.randint(jax.random.fold_in(rollout_key, 1), (per_seed,), 0, MAX_SEED)
            return rollout_key, seeds, state.learner.env_steps, backbone.agent_params(state.learner)

        return jax.jit(jax.vmap(begin))

    def _learn_one(self, state: RunState, trajectory: Trajectory, stats: EpisodeStats, active: jax.Array):
        rng, _, update_key = jax.random.split(state.learner.rng, 3)
        learner, stats, metrics, updates = store_and_learn(self.backbone, state.learner, trajectory, stats, active,
                                                           rng, update_key)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
        nonfinite_step = jnp.where((state.first_nonfinite_step < 0) & ~finite, learner.env_steps,
                                   state.first_nonfinite_step)
        return state.replace(learner=learner, first_nonfinite_step=nonfinite_step), stats, metrics, updates

    @functools.cached_property
    def _learn(self):
        self.backbone.seed_axis = SEED_AXIS
        return jax.jit(jax.vmap(self._learn_one, axis_name=SEED_AXIS), donate_argnums=0,
                       compiler_options=self.compiler_options())

    @staticmethod
    def _eval_keys(state: RunState, models: int):
        def split(rng):
            rng, key = jax.random.split(rng)
            return rng, jax.random.split(key, models)

        return jax.jit(jax.vmap(split))(state.eval_rng)

    # -- host rollouts -----------------------------------------------------------------------------------

    def _zeros(self, S: int, E: int, T: int) -> Trajectory:
        spec, views = self.env.spec, self.env.views
        n = spec.n_agents
        return Trajectory(
            obs=np.zeros((S, E, T, n, spec.obs_dim), np.float32), state=np.zeros((S, E, T, spec.state_dim), np.float32),
            avail=np.ones((S, E, T, n, spec.n_actions), bool),
            views={v: np.zeros((S, E, T, n, spec.available_views[v]), np.float32) for v in views},
            last_action=np.full((S, E, T, n), -1, np.int32), reset=np.zeros((S, E, T), bool),
            action=np.zeros((S, E, T, n), np.int32), reward=np.zeros((S, E, T), np.float32),
            terminal=np.zeros((S, E, T), bool), done=np.zeros((S, E, T), bool), valid=np.zeros((S, E, T), bool),
            alive=np.ones((S, E, T, n), bool), extras={})

    def rollout(self, act, params: Any, carry: Any, keys: Any, reset_seeds: np.ndarray, aux: Any,
                active: np.ndarray, count: int) -> Episodes:
        """One episode in each of the first `count` environments of every active seed, acting with the jitted
        `act` (see `_act_fn`); inactive seeds' environments are not stepped (their entries stay invalid)."""
        S, per_seed, T = len(active), self.envs_per_seed, self.env.spec.episode_limit
        envs = self.envs()
        traj = self._zeros(S, count, T + 1)
        current = self._zeros(S, count, 1)  # the inputs each environment shows now ([:, :, 0])
        running = np.zeros((S, count), bool)
        running[active] = True
        places = [(s, k) for s in range(S) for k in range(count) if active[s]]
        first = envs.reset([s * per_seed + k for s, k in places], [int(reset_seeds[s, k]) for s, k in places])
        for (s, k), step in zip(places, first):
            self._write(current, s, k, step)
        last_action = np.full((S, count, self.env.spec.n_agents), -1, np.int32)
        returns, lengths, won = np.zeros((S, count)), np.zeros((S, count), np.int32), np.zeros((S, count), bool)
        t = 0
        while t < T and running.any():
            inputs = [jax.tree.map(lambda x: x[:, :, 0], getattr(current, name))
                      for name in ("obs", "state", "avail", "views")]
            carry, actions = act(params, carry, *inputs, last_action, np.full((S, count), t == 0), keys, t, aux)
            actions = np.asarray(actions)
            self._copy_inputs(traj, t, current)
            traj.last_action[:, :, t] = last_action
            traj.reset[:, :, t] = t == 0
            traj.valid[:, :, t] = running
            traj.action[:, :, t] = np.where(running[..., None], actions, 0)
            stepped = list(zip(*np.nonzero(running)))
            results = envs.step([s * per_seed + k for s, k in stepped], [actions[s, k] for s, k in stepped])
            for (s, k), step in zip(stepped, results):
                self._write(current, s, k, step)
                traj.reward[s, k, t], traj.terminal[s, k, t], traj.done[s, k, t] = (
                    step["reward"], step["terminal"], step["done"])
                returns[s, k] += step["reward"]
                lengths[s, k] += 1
                if step["done"]:
                    running[s, k] = False
                    won[s, k] = step["won"]
            last_action = np.where(traj.valid[:, :, t, None], actions, last_action).astype(np.int32)
            t += 1
        for u in range(t, T + 1):  # the inputs after the last step, then padding: the same, never valid
            self._copy_inputs(traj, u, current)
            traj.last_action[:, :, u] = last_action
        finished = active[:, None] & ~running
        stats = EpisodeStats(episodes=finished.sum(1).astype(np.float32),
                             returns=np.where(finished, returns, 0.0).sum(1).astype(np.float32),
                             wins=(finished & won).sum(1).astype(np.float32),
                             lengths=np.where(finished, lengths, 0).sum(1).astype(np.float32),
                             env_steps=traj.valid.sum((1, 2)).astype(np.int32))
        return Episodes(trajectory=traj, stats=stats)

    @staticmethod
    def _copy_inputs(traj: Trajectory, t: int, current: Trajectory) -> None:
        """Entry t of every environment's inputs (obs, state, avail, views, alive) from `current` ([:, :, 0])."""
        for name in ("obs", "state", "avail", "views", "alive"):
            jax.tree.map(lambda out, now: out.__setitem__((slice(None), slice(None), t), now[:, :, 0]),
                         getattr(traj, name), getattr(current, name))

    def _write(self, current: Trajectory, s: int, k: int, step: dict) -> None:
        current.obs[s, k, 0], current.state[s, k, 0], current.avail[s, k, 0] = step["obs"], step["state"], step["avail"]
        current.alive[s, k, 0] = step["alive"]
        for v in current.views:
            current.views[v][s, k, 0] = step["views"][v]

    def _initial_carry(self, S: int, E: int) -> Any:
        carry = self.paradigm.initial_carry((E,))
        return jax.tree.map(lambda x: jnp.broadcast_to(x, (S, *x.shape)), carry)

    def episodes(self, act, params: Any, keys: jax.Array, episodes: int, active: np.ndarray | None = None,
                 initial_carry=None) -> Episodes:
        """`episodes` episodes per seed in rounds of at most `rollout.num_envs`; round r's keys are
        fold_in(keys, r). Trajectories are concatenated over rounds ([S, episodes, T + 1, ...])."""
        S = keys.shape[0]
        active = np.ones(S, bool) if active is None else active
        parts, done = [], 0
        round_ = 0
        while done < episodes:
            count = min(self.envs_per_seed, episodes - done)
            round_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, round_)
            seeds = np.asarray(jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (count,), 0, MAX_SEED))(
                round_keys))
            carry = (initial_carry or self._initial_carry)(S, count)
            parts.append(self.rollout(act, params, carry, round_keys, seeds, np.zeros(S, np.int32), active, count))
            done += count
            round_ += 1
        trajectory = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[p.trajectory for p in parts])
        stats = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0), *[p.stats for p in parts])
        return Episodes(trajectory=trajectory, stats=stats)

    @staticmethod
    def _summary(stats: EpisodeStats) -> dict[str, np.ndarray]:
        count = np.maximum(stats.episodes, 1.0)
        return {"win_rate": stats.wins / count, "return": stats.returns / count,
                "episode_length": stats.lengths / count}

    # -- the runner's interface (see Program) ------------------------------------------------------------

    def compile_chunk(self, abstract: RunState, total_steps: jax.Array) -> tuple[Any, Any]:
        """Compiles the update (the one large program) for the run's shapes, so compile time is reported apart
        """
        if self.on_policy:
            self.__dict__["_ppo_learn_compiled"] = self._ppo_learn.lower(abstract, *self._ppo_abstract_batch(
                abstract)).compile()
        else:
            self.__dict__["_learn_compiled"] = self._learn.lower(abstract, *self._abstract_batch()).compile()
        return self.run_chunk, None

    @property
    def on_policy(self) -> bool:
        """MAPPO / IPPO: fixed-length rollouts of continuing episodes, consumed at once (`_ppo_iteration`)."""
        return hasattr(self.backbone, "learn_from")

    def iteration(self, state: RunState, active: np.ndarray):
        if self.on_policy:
            return self._ppo_iteration(state, active)
        rollout_keys, seeds, env_steps, params = self._begin(state)
        S = len(active)
        got = self.rollout(self._explore, params, self._initial_carry(S, self.envs_per_seed), rollout_keys,
                           np.asarray(seeds), env_steps, active, self.envs_per_seed)
        learn = self.__dict__.get("_learn_compiled", self._learn)  # compiled once, in compile_chunk
        return learn(state, got.trajectory, got.stats, jnp.asarray(active))

    def run_chunk(self, state: RunState, first_block: Any, total_steps: Any) -> tuple[RunState, dict]:
        """`log.chunk_evals` evaluation blocks on the host; metrics {name: [seeds, chunk_evals]} as the compiled
        chunk's."""
        config = self.config
        self.envs(np.asarray(state.learner.episodes))
        rows = []
        for b in range(config.log.chunk_evals):
            block = int(first_block) + b
            if block >= self.n_blocks:  # past the run's end: the runner drops these rows
                rows.append(rows[-1])
                continue
            mark = min((block + 1) * config.eval.interval, int(total_steps))
            sums, update_sums, n_updates = None, None, np.zeros(config.seeds, np.int32)
            while True:
                active = ((np.asarray(state.learner.env_steps) < mark)
                          & (np.asarray(state.first_nonfinite_step) < 0))
                if not active.any():
                    break
                state, stats, metrics, updates = self.iteration(state, active)
                stats, metrics = jax.device_get((stats, metrics))
                self.__dict__["_metric_shapes"] = metrics
                sums = stats if sums is None else jax.tree.map(np.add, sums, stats)
                update_sums = metrics if update_sums is None else jax.tree.map(np.add, update_sums, metrics)
                n_updates = n_updates + np.asarray(updates)
            eval_rng, row = self._row(state, sums, update_sums, n_updates)
            rows.append(row)
            state = state.replace(eval_rng=eval_rng)
            self._live = None  # evaluation reset the environments: MAPPO's episodes start afresh
        return state, {k: np.stack([r[k] for r in rows], axis=1) for k in rows[0]}

    def _row(self, state: RunState, sums, update_sums, n_updates) -> tuple[Any, dict[str, np.ndarray]]:
        """The block's metric row (as `Program._block`'s) and the evaluation key to continue with."""
        learner = state.learner
        S = self.config.seeds
        sums = sums if sums is not None else jax.tree.map(lambda x: np.zeros(S, x.dtype), EpisodeStats.zero())
        row = {"env_steps": np.asarray(learner.env_steps), "episodes": np.asarray(learner.episodes),
               "updates": np.asarray(learner.updates), "nonfinite_step": np.asarray(state.first_nonfinite_step),
               "train/episodes": sums.episodes}
        episodes = np.maximum(sums.episodes, 1.0)
        row["train/return"] = sums.returns / episodes
        row["train/win_rate"] = sums.wins / episodes
        row["train/episode_length"] = sums.lengths / episodes
        if update_sums is None:  # no iteration in this block: zeros, as the compiled chunk reports
            update_sums = {k: np.zeros(S, v.dtype) for k, v in self._update_metrics(state).items()}
        for name, total in update_sums.items():
            row[f"train/{name}"] = total / np.maximum(n_updates, 1)
        for name, value in jax.device_get(jax.vmap(self.backbone.exploration)(learner)).items():
            row[f"train/{name}"] = value
        models = self.paradigm.train_eval_models
        eval_rng, keys = self._eval_keys(state, len(models))
        for m, model in enumerate(models):
            got = self.episodes(self._greedy(model), self.backbone.agent_params(learner), keys[:, m],
                                self.config.eval.episodes)
            for name, value in self._summary(got.stats).items():
                row[f"test/{model}/{name}"] = value
        return eval_rng, row

    def _abstract_batch(self) -> tuple:
        """Shapes of `_learn`'s inputs after the state: trajectory, stats, active (all seeds)."""
        S, E, T = self.config.seeds, self.envs_per_seed, self.env.spec.episode_limit + 1
        shape = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
        trajectory = jax.tree.map(shape, self._zeros(S, E, T))
        stats = jax.tree.map(lambda x: jax.ShapeDtypeStruct((S,), x.dtype), EpisodeStats.zero())
        return trajectory, stats, jax.ShapeDtypeStruct((S,), bool)

    def _update_metrics(self, state: RunState) -> dict:
        """The update's metric names and dtypes (per seed): remembered from the last iteration, else traced."""
        if "_metric_shapes" not in self.__dict__ and self.on_policy:
            return {}  # (a MAPPO block with no iteration before any other: no update metrics in its row)
        if "_metric_shapes" not in self.__dict__:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
            self.backbone.seed_axis = SEED_AXIS
            self.__dict__["_metric_shapes"] = jax.eval_shape(
                jax.vmap(self._learn_one, axis_name=SEED_AXIS), abstract, *self._abstract_batch())[2]
        return self.__dict__["_metric_shapes"]

    def evaluate_seeds(self, agent_params: Any, keys: jax.Array, model: str, episodes: int) -> dict[str, Any]:
        return self._summary(self.episodes(self._greedy(model), agent_params, keys, episodes).stats)

    def run_policy(self, policy: Any, key: jax.Array, episodes: int) -> tuple[dict[str, float], list[dict]]:
        """Greedy episodes of the exported policy's first seed, in the first seed's environments, acting through
        the policy's own forward (`policy_actor`); each episode's inputs recorded for the audit."""
        actor = policy_actor(policy, policy.seed_params(0))
        params = jax.tree.map(lambda x: x[None], policy.seed_params(0))  # a seed axis of one
        got = self.episodes(self._act_fn(lambda _: actor), params, key[None], episodes,
                            initial_carry=lambda S, E: actor.initial_carry(E)[None])
        summary = {k: float(v[0]) for k, v in self._summary(got.stats).items()}
        trajectory = got.trajectory
        recorded = []
        for e in range(episodes):
            length = max(int(trajectory.valid[0, e].sum()), 1)
            recorded.append({k: getattr(trajectory, k)[0, e, :length]
                             for k in ("obs", "last_action", "avail", "state")})
        return summary, recorded

    def collect_datasets(self, agent_params: Any, keys: jax.Array, episodes: int, holdout: float) -> Any:
        from ctde.training.distill import dataset_of, distill_selector

        act = self._greedy(self.paradigm.distill_teacher, distill_selector(self), True)
        trajectory = self.episodes(act, agent_params, keys, episodes).trajectory
        return jax.jit(jax.vmap(lambda p, tr: dataset_of(self, p, tr, holdout)))(agent_params, trajectory)

    # -- MAPPO / IPPO: fixed-length rollouts of continuing episodes ------------------------------------------
    #
    # As the compiled rollout with auto_reset: each of `rollout.length` steps records the inputs, the action and
    # the actor's extras (log-probability, value); an environment whose episode ends is reset at once (its entry
    # is terminal, the next one starts the next episode); the recurrent states before every `ppo.chunk_length`-th
    # step are kept (`segment_carry`); entry T holds the inputs after the last step. The episodes in progress
    # carry over to the next iteration (`_live`) until an evaluation, which resets the environments, so every
    # block (and every chunk, hence every resume) starts with fresh episodes.

    @functools.cached_property
    def _ppo_act(self):
        actor = self.backbone.actor()

        def act_one(params, carry, obs, state, avail, views, last_action, reset, key, t):
            inputs = AgentInputs(obs=obs[None], last_action=last_action[None], avail=avail[None], state=state[None],
                                 reset=reset[None], views={k: v[None] for k, v in views.items()})
            return actor.step(params, carry, inputs, jax.random.fold_in(key, t))

        return jax.jit(jax.vmap(act_one, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0, None)))

    @functools.cached_property
    def _ppo_begin(self):
        per_seed, length, actor = self.envs_per_seed, self.backbone.length, self.backbone.actor()

        def begin(state: RunState):
            _, rollout_key, _ = jax.random.split(state.learner.rng, 3)
            start = jax.random.randint(jax.random.fold_in(rollout_key, 2), (per_seed,), 0, MAX_SEED)
            later = jax.random.randint(jax.random.fold_in(rollout_key, 3), (length, per_seed), 0, MAX_SEED)
            return rollout_key, start, later, state.learner.params, actor.initial_carry(per_seed)

        return jax.jit(jax.vmap(begin))

    @functools.cached_property
    def _ppo_learn(self):
        backbone = self.backbone
        backbone.seed_axis = SEED_AXIS

        def learn_one(state: RunState, trajectory, stats, final_critic_carry, active):
            rng, _, shuffle_key = jax.random.split(state.learner.rng, 3)
            learner, stats, metrics, updates = backbone.learn_from(state.learner, trajectory, stats,
                                                                   state.learner.rollout, final_critic_carry, active,
                                                                   rng, shuffle_key)
            finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
            nonfinite_step = jnp.where((state.first_nonfinite_step < 0) & ~finite, learner.env_steps,
                                       state.first_nonfinite_step)
            return state.replace(learner=learner, first_nonfinite_step=nonfinite_step), stats, metrics, updates

        return jax.jit(jax.vmap(learn_one, axis_name=SEED_AXIS), donate_argnums=0,
                       compiler_options=self.compiler_options())

    def _ppo_iteration(self, state: RunState, active: np.ndarray):
        S, E, T, C = len(active), self.envs_per_seed, self.backbone.length, self.backbone.ppo.chunk_length
        envs, n = self.envs(), self.env.spec.n_agents
        keys, start_seeds, later_seeds, params, fresh_carry = self._ppo_begin(state)
        start_seeds, later_seeds = np.asarray(start_seeds), np.asarray(later_seeds)
        if self._live is None:  # fresh episodes everywhere
            current = self._zeros(S, E, 1)
            places = [(s, k) for s in range(S) for k in range(E)]
            for (s, k), step in zip(places, envs.reset([s * E + k for s, k in places],
                                                       [int(start_seeds[s, k]) for s, k in places])):
                self._write(current, s, k, step)
            self._live = {"current": current, "carry": fresh_carry, "last_action": np.full((S, E, n), -1, np.int32),
                          "reset": np.ones((S, E), bool), "returns": np.zeros((S, E)),
                          "lengths": np.zeros((S, E), np.int32)}
        live = self._live
        current, carry = live["current"], live["carry"]
        traj = self._zeros(S, E, T + 1)
        extras, segments = None, None
        episodes, returns, wins, lengths = (np.zeros(S, np.float32) for _ in range(4))
        stepping = [(s, k) for s in range(S) for k in range(E) if active[s]]
        for t in range(T):
            if t % C == 0:
                leaves = jax.device_get(carry)
                if segments is None:
                    segments = jax.tree.map(lambda x: np.zeros((S, E, T // C, *x.shape[2:]), x.dtype), leaves)
                jax.tree.map(lambda out, x: out.__setitem__((slice(None), slice(None), t // C), x), segments, leaves)
            inputs = [jax.tree.map(lambda x: x[:, :, 0], getattr(current, name))
                      for name in ("obs", "state", "avail", "views")]
            carry, actions, step_extras = self._ppo_act(params, carry, *inputs, live["last_action"], live["reset"],
                                                        keys, t)
            actions, step_extras = np.asarray(actions), jax.device_get(step_extras)
            if extras is None:
                extras = jax.tree.map(lambda x: np.zeros((S, E, T + 1, *x.shape[2:]), x.dtype), step_extras)
            jax.tree.map(lambda out, x: out.__setitem__((slice(None), slice(None), t), x), extras, step_extras)
            self._copy_inputs(traj, t, current)
            traj.last_action[:, :, t], traj.reset[:, :, t] = live["last_action"], live["reset"]
            traj.valid[:, :, t] = active[:, None]
            traj.action[:, :, t] = np.where(active[:, None, None], actions, 0)
            results = envs.step([s * E + k for s, k in stepping], [actions[s, k] for s, k in stepping])
            ended = []
            for (s, k), step in zip(stepping, results):
                traj.reward[s, k, t], traj.terminal[s, k, t], traj.done[s, k, t] = (
                    step["reward"], step["done"], step["done"])
                live["returns"][s, k] += step["reward"]
                live["lengths"][s, k] += 1
                live["last_action"][s, k] = actions[s, k]
                live["reset"][s, k] = False
                self._write(current, s, k, step)
                if step["done"]:
                    episodes[s] += 1
                    returns[s] += live["returns"][s, k]
                    wins[s] += step["won"]
                    lengths[s] += live["lengths"][s, k]
                    live["returns"][s, k], live["lengths"][s, k] = 0.0, 0
                    live["last_action"][s, k], live["reset"][s, k] = -1, True
                    ended.append((s, k))
            for (s, k), step in zip(ended, envs.reset([s * E + k for s, k in ended],
                                                      [int(later_seeds[s, t, k]) for s, k in ended])):
                self._write(current, s, k, step)
        self._copy_inputs(traj, T, current)  # entry T: the inputs after the last step (never a decision)
        traj.last_action[:, :, T], traj.reset[:, :, T] = live["last_action"], live["reset"]
        live["carry"] = carry
        trajectory = traj.replace(extras=extras, segment_carry=segments)
        stats = EpisodeStats(episodes=episodes, returns=returns, wins=wins, lengths=lengths,
                             env_steps=traj.valid.sum((1, 2)).astype(np.int32))
        learn = self.__dict__.get("_ppo_learn_compiled", self._ppo_learn)  # compiled once, in compile_chunk
        return learn(state, trajectory, stats, carry[1], jnp.asarray(active))

    def _ppo_abstract_batch(self, abstract: RunState) -> tuple:
        """Shapes of `_ppo_learn`'s inputs after the state, as the compiled rollout (on the shape-only environment)
        lays them out, with the seed axis: trajectory, stats, final critic carry, active."""
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract.learner)
        trajectory, _, rollout = jax.eval_shape(self.backbone.collect, one, jax.random.PRNGKey(0))
        S = self.config.seeds
        seeded = lambda x: jax.ShapeDtypeStruct((S, *x.shape), x.dtype)  # noqa: E731
        stats = jax.tree.map(lambda x: jax.ShapeDtypeStruct((S,), x.dtype), EpisodeStats.zero())
        return (jax.tree.map(seeded, trajectory), stats, jax.tree.map(seeded, rollout.carry[1]),
                jax.ShapeDtypeStruct((S,), bool))
