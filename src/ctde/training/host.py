"""The host loop: training on environments stepped outside JAX (SMAC, SMAClite, GRF, any SMAC-interface class).

The run is the compiled one (`ctde.training.program`) with one difference: who collects. `HostCollector` steps
the environments on the host, acting through a jitted, seed-vmapped step of the backbone's own `actor`, and fills
the same `Trajectory` that `ctde.algos.rollout.run_rollout` fills inside `jit`, for either kind of
`RolloutSpec`:

- fresh whole episodes (value decomposition, MADDPG): one episode per environment, [E, episode limit + 1],
  padded after the episode's end by repeating its last inputs (valid = False there);
- continuing episodes (MAPPO / IPPO): `length` steps, an environment whose episode ends is reset at once (its
  entry is terminal), the recurrent states before every `carry_every`-th step kept, and the episodes in
  progress carried over to the next iteration until an evaluation resets the environments.

The backbone then learns from it through its one `learn`, as after a compiled rollout; the metrics row, the
non-finite check and the evaluation summary are the compiled program's own functions.

Seeding: environment k of seed s is built with seed 1000 (seed + s) + k, and every episode is reset with a seed
drawn from the run's keys (which the checkpoint holds), so with a seedable environment a resumed run repeats the
uninterrupted one exactly. Each environment runs in its own process (`ctde.envs.host.workers`) or in this one
(`rollout.host_processes`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np

from ctde.algos.base import Collected, rollout_of
from ctde.algos.rollout import Actor, EpisodeStats, Trajectory, paradigm_actor, policy_actor
from ctde.envs.base import EnvSpec
from ctde.envs.host.workers import HostEnvs
from ctde.nets.actions import greedy_for
from ctde.paradigms.base import AgentInputs
from ctde.training.distill import dataset_of, distill_selector
from ctde.training.program import SEED_AXIS, Program, RunState, first_nonfinite_step, training_row

MAX_SEED = 2 ** 31 - 1
INPUTS = ("obs", "state", "avail", "views")


def act_function(actor_for: Callable[[Any], Actor]):
    """One step of the Actor `actor_for(aux)` in [E] environments of every seed, jitted and vmapped over seeds:
    (params, carry, obs, state, avail, views, last_action, reset, key, t, aux) -> (carry, actions [S, E, n],
    extras). The step's key is fold_in(key, t)."""

    def act_one(params, carry, obs, state, avail, views, last_action, reset, key, t, aux):
        inputs = AgentInputs(obs=obs[None], last_action=last_action[None], avail=avail[None], state=state[None],
                             reset=reset[None], views={k: v[None] for k, v in views.items()})
        return actor_for(aux).step(params, carry, inputs, jax.random.fold_in(key, t))

    return jax.jit(jax.vmap(act_one, in_axes=(0, 0, 0, 0, 0, 0, 0, 0, 0, None, 0)))


@dataclass
class Episodes:
    """What a host rollout returns: the trajectory (NumPy, [S, E, T + 1, ...]), sums per seed over the episodes it
    finished (EpisodeStats of arrays [S]) and the acting model's recurrent state after the last step."""

    trajectory: Trajectory
    stats: EpisodeStats
    final_carry: Any = None


@dataclass
class _Live:
    """What the environments show now and the episodes in progress ([S, E, ...])."""

    current: Trajectory  # the inputs each environment shows now, at [:, :, 0]
    carry: Any
    last_action: np.ndarray
    reset: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray


class HostCollector:
    """Host environments (seeds x `per_seed`) stepped with a jitted act function into `Trajectory` arrays."""

    def __init__(self, envs: HostEnvs, spec: EnvSpec, views: tuple[str, ...], per_seed: int):
        self.envs, self.spec, self.views, self.per_seed = envs, spec, views, per_seed
        self.live: _Live | None = None  # continuing episodes between calls

    def zeros(self, S: int, E: int, T: int) -> Trajectory:
        spec, n = self.spec, self.spec.n_agents
        return Trajectory(
            obs=np.zeros((S, E, T, n, spec.obs_dim), np.float32), state=np.zeros((S, E, T, spec.state_dim), np.float32),
            avail=np.ones((S, E, T, n, spec.n_actions), bool),
            views={v: np.zeros((S, E, T, n, spec.available_views[v]), np.float32) for v in self.views},
            last_action=np.full((S, E, T, n), -1, np.int32), reset=np.zeros((S, E, T), bool),
            action=np.zeros((S, E, T, n), np.int32), reward=np.zeros((S, E, T), np.float32),
            terminal=np.zeros((S, E, T), bool), done=np.zeros((S, E, T), bool), valid=np.zeros((S, E, T), bool),
            alive=np.ones((S, E, T, n), bool), extras={})

    def _reset(self, current: Trajectory, places: list[tuple[int, int]], seeds: list[int]) -> None:
        for (s, k), step in zip(places, self.envs.reset([s * self.per_seed + k for s, k in places], seeds)):
            self._show(current, s, k, step)

    @staticmethod
    def _show(current: Trajectory, s: int, k: int, step: dict) -> None:
        current.obs[s, k, 0], current.state[s, k, 0], current.avail[s, k, 0] = step["obs"], step["state"], step["avail"]
        current.alive[s, k, 0] = step["alive"]
        for v in current.views:
            current.views[v][s, k, 0] = step["views"][v]

    @staticmethod
    def _record_inputs(trajectory: Trajectory, t: int, current: Trajectory) -> None:
        for name in (*INPUTS, "alive"):
            jax.tree.map(lambda out, now: out.__setitem__((slice(None), slice(None), t), now[:, :, 0]),
                         getattr(trajectory, name), getattr(current, name))

    def collect(self, act: Any, params: Any, carry: Any, keys: Any, aux: Any, active: np.ndarray, *, count: int,
                length: int, auto_reset: bool, start_seeds: np.ndarray, later_seeds: np.ndarray | None = None,
                carry_every: int = 0) -> Episodes:
        """`length` steps in the first `count` environments of every active seed (inactive seeds' environments are
        not stepped and their entries stay invalid).

        Fresh episodes (`auto_reset` false): every environment is reset with `start_seeds` [S, count] and plays
        one episode, from recurrent state `carry`; the rollout stops once all have ended. Continuing episodes:
        the environments continue from the last call (the first one resets them with `start_seeds` and starts
        from `carry`), an ended episode is reset at once with `later_seeds` [S, length, count]."""
        S, T, n = len(active), length, self.spec.n_agents
        live = self.live if auto_reset else None
        if live is None:
            current = self.zeros(S, count, 1)
            starting = [(s, k) for s in range(S) for k in range(count) if auto_reset or active[s]]
            self._reset(current, starting, [int(start_seeds[s, k]) for s, k in starting])
            live = _Live(current=current, carry=carry, last_action=np.full((S, count, n), -1, np.int32),
                         reset=np.ones((S, count), bool), returns=np.zeros((S, count)),
                         lengths=np.zeros((S, count), np.int32))
        self.live = live if auto_reset else None  # an episode of fresh ones resets what continuing ones left
        current, carry = live.current, live.carry
        trajectory = self.zeros(S, count, T + 1)
        extras, segments = None, None
        running = np.zeros((S, count), bool)
        running[active] = True
        won = np.zeros((S, count), bool)
        sums = [np.zeros(S, np.float32) for _ in range(4)]  # continuing: episodes, returns, wins, lengths
        t = 0
        while t < T and running.any():
            if carry_every and t % carry_every == 0:
                leaves = jax.device_get(carry)
                if segments is None:
                    segments = jax.tree.map(lambda x: np.zeros((S, count, T // carry_every, *x.shape[2:]), x.dtype),
                                            leaves)
                jax.tree.map(lambda out, x: out.__setitem__((slice(None), slice(None), t // carry_every), x),
                             segments, leaves)
            inputs = [jax.tree.map(lambda x: x[:, :, 0], getattr(current, name)) for name in INPUTS]
            carry, actions, step_extras = act(params, carry, *inputs, live.last_action, live.reset, keys, t, aux)
            actions, step_extras = np.asarray(actions), jax.device_get(step_extras)
            if extras is None:
                extras = jax.tree.map(lambda x: np.zeros((S, count, T + 1, *x.shape[2:]), x.dtype), step_extras)
            jax.tree.map(lambda out, x: out.__setitem__((slice(None), slice(None), t), x), extras, step_extras)
            self._record_inputs(trajectory, t, current)
            trajectory.last_action[:, :, t], trajectory.reset[:, :, t] = live.last_action, live.reset
            trajectory.valid[:, :, t] = running
            trajectory.action[:, :, t] = np.where(running[..., None], actions, 0)
            stepped = list(zip(*np.nonzero(running)))
            ended = []
            for (s, k), step in zip(stepped, self.envs.step([s * self.per_seed + k for s, k in stepped],
                                                            [actions[s, k] for s, k in stepped])):
                self._show(current, s, k, step)
                trajectory.reward[s, k, t], trajectory.done[s, k, t] = step["reward"], step["done"]
                # With resets inside the rollout, a time-limit end is terminal too: the next entry is another
                # episode's first input, nothing to bootstrap from (as run_rollout).
                trajectory.terminal[s, k, t] = step["done"] if auto_reset else step["terminal"]
                live.returns[s, k] += step["reward"]
                live.lengths[s, k] += 1
                if step["done"] and auto_reset:
                    for total, value in zip(sums, (1, live.returns[s, k], step["won"], live.lengths[s, k])):
                        total[s] += value
                    live.returns[s, k], live.lengths[s, k] = 0.0, 0
                    ended.append((s, k))
                elif step["done"]:
                    running[s, k], won[s, k] = False, step["won"]
            live.last_action = np.where(trajectory.valid[:, :, t, None], actions, live.last_action).astype(np.int32)
            # Fresh episodes start together; a continuing episode starts where an ended one was reset.
            live.reset = live.reset & ~running if auto_reset else np.zeros_like(live.reset)
            for s, k in ended:
                live.last_action[s, k], live.reset[s, k] = -1, True
            self._reset(current, ended, [int(later_seeds[s, t, k]) for s, k in ended])
            t += 1
        for u in range(t, T + 1):  # the inputs after the last step (never a decision), then padding: the same
            self._record_inputs(trajectory, u, current)
            trajectory.last_action[:, :, u] = live.last_action
        if auto_reset:
            trajectory.reset[:, :, T] = live.reset
            live.carry = carry
            stats = EpisodeStats(*sums, env_steps=trajectory.valid.sum((1, 2)).astype(np.int32))
        else:
            finished = active[:, None] & ~running
            stats = EpisodeStats(episodes=finished.sum(1).astype(np.float32),
                                 returns=np.where(finished, live.returns, 0.0).sum(1).astype(np.float32),
                                 wins=(finished & won).sum(1).astype(np.float32),
                                 lengths=np.where(finished, live.lengths, 0).sum(1).astype(np.float32),
                                 env_steps=trajectory.valid.sum((1, 2)).astype(np.int32))
        trajectory = trajectory.replace(extras=extras or {}, segment_carry=segments)
        return Episodes(trajectory=trajectory, stats=stats, final_carry=carry)


@dataclass
class HostProgram(Program):
    """The training program with collection on the host; see the module docstring."""

    vmaps_one_seed = True  # the jitted act and learn steps always carry a seed axis
    _collector: HostCollector | None = field(default=None, repr=False)

    # -- environments ------------------------------------------------------------------------------------

    @property
    def envs_per_seed(self) -> int:
        return self.backbone.rollout.num_envs

    def collector(self, episodes_played: np.ndarray | None = None) -> HostCollector:
        """The environments, started on first use. Environment k of seed s gets seed 1000 (seed + s) + k, plus
        7919 x the seed's episodes played when a resumed run starts them: an environment seeded only when it
        starts (StarCraft II) then does not replay the random stream of the run's first episodes."""
        if self._collector is None:
            config, per_seed = self.config, self.envs_per_seed
            played = np.zeros(config.seeds, np.int64) if episodes_played is None else np.asarray(episodes_played)
            seeds = [(1000 * (config.seed + s) + k + 7919 * int(played[s])) % 2 ** 31 for s in range(config.seeds)
                     for k in range(per_seed)]
            processes = config.rollout.host_processes
            envs = HostEnvs(self.env.host, seeds, len(seeds) > 1 if processes is None else processes)
            self._collector = HostCollector(envs, self.env.spec, self.env.views, per_seed)
        return self._collector

    def close(self) -> None:
        if self._collector is not None:
            self._collector.envs.close()
            self._collector = None

    # -- jitted pieces -----------------------------------------------------------------------------------

    @functools.cached_property
    def _explore(self):
        return act_function(self.backbone.actor)

    def _act(self, model: str, select=None, deterministic=None):
        """The act function of `model` choosing with `select` (default: greedy), cached per choice."""
        paradigm = self.paradigm
        select = select or greedy_for(self.env.spec)
        deterministic = not paradigm.stochastic_evaluation if deterministic is None else deterministic
        cache = self.__dict__.setdefault("_act_cache", {})
        if (model, select, deterministic) not in cache:
            actor = paradigm_actor(paradigm, model, select, deterministic)
            cache[model, select, deterministic] = act_function(lambda _: actor)
        return cache[model, select, deterministic]

    @functools.cached_property
    def _begin(self):
        """Per seed, from the state's rng as `collect_and_learn` splits it: the rollout key, the episodes' reset
        seeds (continuing: those of the first reset, and of every later one [length, E]), the env steps, the
        acting parameters and a fresh recurrent state."""
        backbone, per_seed, spec = self.backbone, self.envs_per_seed, self.backbone.rollout

        def begin(state: RunState):
            _, rollout_key, _ = jax.random.split(state.learner.rng, 3)
            def draw(salt, shape):
                return jax.random.randint(jax.random.fold_in(rollout_key, salt), shape, 0, MAX_SEED)

            if spec.continuing:
                start, later = draw(2, (per_seed,)), draw(3, (spec.length, per_seed))
            else:
                start, later = draw(1, (per_seed,)), None
            carry = backbone.actor(state.learner.env_steps).initial_carry(per_seed)
            return rollout_key, start, later, state.learner.env_steps, backbone.acting_params(state.learner), carry

        return jax.jit(jax.vmap(begin))

    def _learn_one(self, state: RunState, trajectory: Trajectory, stats: EpisodeStats, final_carry: Any,
                   active: jax.Array):
        rng, _, key = jax.random.split(state.learner.rng, 3)
        collected = Collected(trajectory=trajectory, stats=stats, final_carry=final_carry)
        learner, stats, metrics, updates = self.backbone.learn(state.learner, collected, active, rng, key)
        state = state.replace(learner=learner, first_nonfinite_step=first_nonfinite_step(
            state.first_nonfinite_step, metrics, learner.env_steps))
        return state, stats, metrics, updates

    @functools.cached_property
    def _learn(self):
        return jax.jit(jax.vmap(self._learn_one, axis_name=SEED_AXIS), donate_argnums=0,
                       compiler_options=self.compiler_options())

    def _abstract_batch(self, abstract: RunState) -> tuple:
        """Shapes of `_learn`'s inputs after the state, as the compiled rollout lays them out on the shape-only
        environment, with the seed axis: trajectory, stats, final carry (continuing rollouts only), active."""
        one = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract.learner)
        collected = jax.eval_shape(lambda learner: rollout_of(self.backbone, self.env, learner, jax.random.PRNGKey(0)),
                                   one)
        seeded = lambda x: jax.ShapeDtypeStruct((self.config.seeds, *x.shape), x.dtype)  # noqa: E731
        final_carry = collected.final_carry if self.backbone.rollout.continuing else None
        return (*jax.tree.map(seeded, (collected.trajectory, collected.stats, final_carry)),
                jax.ShapeDtypeStruct((self.config.seeds,), bool))

    # -- training ----------------------------------------------------------------------------------------

    def compile_chunk(self, abstract: RunState, total_steps: jax.Array) -> tuple[Any, Any]:
        """Compiles the update (the one large program) for the run's shapes, so compile time is reported apart."""
        self.__dict__["_learn_compiled"] = self._learn.lower(abstract, *self._abstract_batch(abstract)).compile()
        return self.run_chunk, None

    def iteration(self, state: RunState, active: np.ndarray):
        """One rollout on the host, then the backbone's `learn` (jitted): (state, stats, metrics, updates)."""
        spec = self.backbone.rollout
        keys, start, later, env_steps, params, carry = self._begin(state)
        got = self.collector().collect(
            self._explore, params, carry, keys, env_steps, active, count=spec.num_envs, length=spec.length,
            auto_reset=spec.auto_reset, start_seeds=np.asarray(start),
            later_seeds=None if later is None else np.asarray(later), carry_every=spec.carry_every)
        learn = self.__dict__.get("_learn_compiled", self._learn)  # compiled once, in compile_chunk
        return learn(state, got.trajectory, got.stats, got.final_carry if spec.continuing else None,
                     jax.numpy.asarray(active))

    def run_chunk(self, state: RunState, first_block: Any, total_steps: Any) -> tuple[RunState, dict]:
        """`log.chunk_evals` evaluation blocks on the host; metrics {name: [seeds, chunk_evals]} as the compiled
        chunk's."""
        config = self.config
        self.collector(np.asarray(state.learner.episodes))
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
        return state, {k: np.stack([r[k] for r in rows], axis=1) for k in rows[0]}

    def _row(self, state: RunState, sums, update_sums, n_updates) -> tuple[Any, dict[str, np.ndarray]]:
        """The block's metric row (`training_row`, then the greedy evaluations) and the evaluation key to go on
        with."""
        learner, S = state.learner, self.config.seeds
        sums = sums if sums is not None else jax.tree.map(lambda x: np.zeros(S, x.dtype), EpisodeStats.zero())
        if update_sums is None:  # no iteration in this block: zeros, as the compiled chunk reports
            update_sums = {k: np.zeros(S, v.dtype) for k, v in self._update_metrics(state).items()}
        exploration = jax.device_get(jax.vmap(self.backbone.exploration)(learner))
        counters = tuple(np.asarray(x) for x in (learner.env_steps, learner.episodes, learner.updates))
        row = training_row(counters, np.asarray(state.first_nonfinite_step), sums, update_sums, n_updates,
                           exploration, xp=np)
        models = self.paradigm.train_eval_models
        eval_rng, keys = self._eval_keys(state.eval_rng)
        for m, model in enumerate(models):
            got = self.episodes(self._act(model), self.backbone.agent_params(learner), keys[:, m],
                                self.config.eval.episodes)
            for name, value in got.stats.means(np).items():
                row[f"test/{model}/{name}"] = value
        return eval_rng, row

    @functools.cached_property
    def _eval_keys(self):
        """Per seed: (the evaluation key to go on with, one key per evaluated model), jitted once for the run (a
        fresh jit per block would trace and compile again every block)."""
        models = len(self.paradigm.train_eval_models)

        def split(rng):
            rng, key = jax.random.split(rng)
            return rng, jax.random.split(key, models)

        return jax.jit(jax.vmap(split))

    def _update_metrics(self, state: RunState) -> dict:
        """The update's metric names and dtypes (per seed): remembered from the last iteration, else traced."""
        if "_metric_shapes" not in self.__dict__:
            abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
            self.__dict__["_metric_shapes"] = jax.eval_shape(
                jax.vmap(self._learn_one, axis_name=SEED_AXIS), abstract, *self._abstract_batch(abstract))[2]
        return self.__dict__["_metric_shapes"]

    # -- greedy episodes ---------------------------------------------------------------------------------

    def episodes(self, act, params: Any, keys: jax.Array, episodes: int, initial_carry=None) -> Episodes:
        """`episodes` fresh episodes per seed in rounds of at most `rollout.num_envs`; round r's keys are
        fold_in(keys, r). Trajectories are concatenated over rounds ([S, episodes, T + 1, ...])."""
        S, collector = keys.shape[0], self.collector()
        parts, done, round_ = [], 0, 0
        while done < episodes:
            count = min(self.envs_per_seed, episodes - done)
            round_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, round_)
            seeds = np.asarray(jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 1), (count,), 0, MAX_SEED))(
                round_keys))
            carry = (initial_carry or self._initial_carry)(S, count)
            parts.append(collector.collect(act, params, carry, round_keys, np.zeros(S, np.int32), np.ones(S, bool),
                                           count=count, length=self.env.spec.episode_limit, auto_reset=False,
                                           start_seeds=seeds))
            done += count
            round_ += 1
        trajectory = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *[p.trajectory for p in parts])
        stats = jax.tree.map(lambda *xs: np.sum(np.stack(xs), axis=0), *[p.stats for p in parts])
        return Episodes(trajectory=trajectory, stats=stats)

    def _initial_carry(self, S: int, E: int) -> Any:
        carry = self.paradigm.initial_carry((E,))
        return jax.tree.map(lambda x: jax.numpy.broadcast_to(x, (S, *x.shape)), carry)

    # -- the runner's interface (see Program) ------------------------------------------------------------

    def evaluate_seeds(self, agent_params: Any, keys: jax.Array, model: str, episodes: int) -> dict[str, Any]:
        return self.episodes(self._act(model), agent_params, keys, episodes).stats.means(np)

    def run_policy(self, policy: Any, key: jax.Array, episodes: int) -> tuple[dict[str, float], list[dict]]:
        """Greedy episodes of the exported policy's first seed, in the first seed's environments, acting through
        the policy's own forward (`policy_actor`); each episode's inputs recorded for the audit."""
        actor = policy_actor(policy, policy.seed_params(0))
        params = jax.tree.map(lambda x: x[None], policy.seed_params(0))  # a seed axis of one
        got = self.episodes(act_function(lambda _: actor), params, key[None], episodes,
                            initial_carry=lambda S, E: actor.initial_carry(E)[None])
        summary = {k: float(v[0]) for k, v in got.stats.means(np).items()}
        trajectory = got.trajectory
        recorded = []
        for e in range(episodes):
            length = max(int(trajectory.valid[0, e].sum()), 1)
            recorded.append({k: getattr(trajectory, k)[0, e, :length]
                             for k in ("obs", "last_action", "avail", "state")})
        return summary, recorded

    def collect_datasets(self, agent_params: Any, keys: jax.Array, episodes: int, holdout: float) -> Any:
        act = self._act(self.paradigm.distill_teacher, distill_selector(self), True)
        trajectory = self.episodes(act, agent_params, keys, episodes).trajectory
        return jax.jit(jax.vmap(lambda p, tr: dataset_of(self, p, tr, holdout)))(agent_params, trajectory)
