"""The training program: chunks of (train until the next evaluation mark, evaluate greedily).

A training iteration is the backbone's rollout, then its `learn` (`ctde.algos.base.collect_and_learn`). Here,
everything inside a chunk runs in one `jit`-compiled function, vmapped over seeds (one seed runs as it is, see
`Program.compiled_chunk`); the host gets control back once per chunk to log, draw progress and checkpoint. The
chunk function takes the index of its first evaluation block as a traced argument, so every chunk reuses the
first chunk's compilation. `ctde.training.host.HostProgram` is the same program with the rollout collected on the
host, for environments stepped outside JAX; both write their metrics rows with `training_row`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import struct

from ctde.algos import make_backbone
from ctde.algos.base import Backbone, collect_and_learn
from ctde.algos.seeds import any_seed
from ctde.config import TrainConfig
from ctde.envs import make_env
from ctde.envs.base import Environment, evaluation_env
from ctde.paradigms import PARADIGMS, Paradigm, make_paradigm
from ctde.training import cpu_kernels
from ctde.training.distill import collect_datasets
from ctde.algos.rollout import EpisodeStats, collect, run_policy
from ctde.nets.actions import greedy_for


SEED_AXIS = "seeds"


@struct.dataclass
class RunState:
    """One seed's whole training state: the backbone's learner plus run bookkeeping."""

    learner: Any
    eval_rng: jax.Array
    first_nonfinite_step: jax.Array  # int32 []: env step at which a loss first became NaN/inf, -1 if never


def first_nonfinite_step(previous: jax.Array, metrics: dict[str, jax.Array], env_steps: jax.Array) -> jax.Array:
    """The env step at which a loss first became non-finite (int32 []), -1 while none has: `previous` unless
    this iteration's `metrics` hold a NaN or inf for the first time, then `env_steps`. A non-finite loss stops
    its seed; the runner then stops the run and keeps the last checkpoint."""
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(v)) for v in jax.tree.leaves(metrics)]))
    return jnp.where((previous < 0) & ~finite, env_steps, previous)


def training_row(counters: tuple[Any, Any, Any], nonfinite_step: Any, episode_sums: EpisodeStats,
                 update_sums: dict[str, Any], n_updates: Any, exploration: dict[str, Any], xp: Any = jnp
                 ) -> dict[str, Any]:
    """The training half of an evaluation block's metrics row, from the learner's (env steps, episodes, updates)
    and one block's sums: counters, episode means, update-metric means and exploration. `xp` is jax.numpy inside
    the compiled chunk, NumPy on the host loop."""
    env_steps, episodes, updates = counters
    row = {"env_steps": env_steps, "episodes": episodes, "updates": updates,
           "nonfinite_step": nonfinite_step, "train/episodes": episode_sums.episodes}
    episodes = xp.maximum(episode_sums.episodes, 1.0)
    row["train/return"] = episode_sums.returns / episodes
    row["train/win_rate"] = episode_sums.wins / episodes
    row["train/episode_length"] = episode_sums.lengths / episodes
    for name, total in update_sums.items():
        row[f"train/{name}"] = total / xp.maximum(n_updates, 1)
    for name, value in exploration.items():
        row[f"train/{name}"] = value
    return row


@dataclass
class Program:
    """The pieces of a run that the runner drives: environment, paradigm, backbone and compiled functions.

    Data is collected inside `jit` (`ctde.algos.base.collect_and_learn`); `ctde.training.host.HostProgram`
    collects on the host instead and keeps everything else."""

    config: TrainConfig
    env: Environment
    paradigm: Paradigm
    backbone: Backbone
    n_blocks: int  # evaluation blocks in the whole run
    n_chunks: int
    vmaps_one_seed: ClassVar[bool] = False  # whether one seed, too, is vmapped (the host loop's jitted steps are)

    def init(self, keys: jax.Array, sharding: Any = None) -> RunState:
        """keys [seeds, 2] -> RunState with a leading seed axis. `sharding` (the compiled chunk's
        `input_shardings[0][0]`) creates it where the chunk takes it: on several devices the chunk holds the state
        on each, and a state made on one device would be copied there before the first chunk."""
        return jax.jit(self._init_all_seeds, out_shardings=sharding)(keys)

    @functools.cached_property
    def _init_all_seeds(self):
        # One function object for every call, so that JAX compiles init once.
        return jax.vmap(self._init_one)

    @staticmethod
    def backbone_steps(state: RunState) -> jax.Array:
        """Env steps per seed, int32 [seeds]."""
        return state.learner.env_steps

    def _init_one(self, key: jax.Array) -> RunState:
        learner_key, eval_key = jax.random.split(key)
        return RunState(learner=self.backbone.init(learner_key), eval_rng=eval_key,
                        first_nonfinite_step=jnp.int32(-1))

    # -- evaluation --------------------------------------------------------------------------------------

    def evaluate(self, agent_params: Any, key: jax.Array, model: str, episodes: int) -> dict[str, jax.Array]:
        """Greedy episodes of `model` in parallel, in the evaluation environment (`envs.base.evaluation_env`:
        held-out data where there is some): win rate, mean return, mean episode length."""
        _, stats = collect(evaluation_env(self.env), self.paradigm, agent_params, key, num_envs=episodes,
                           length=self.env.spec.episode_limit, auto_reset=False, model=model,
                           select_actions=greedy_for(self.env.spec),
                           deterministic=not self.paradigm.stochastic_evaluation)
        return stats.means()

    # -- one chunk ---------------------------------------------------------------------------------------

    def _iteration(self, learner: Any, active: jax.Array | None = None):
        return collect_and_learn(self.backbone, self.env, learner, active)

    def _block(self, state: RunState, block: jax.Array, total_steps: jax.Array
               ) -> tuple[RunState, dict[str, jax.Array]]:
        """Train until env steps reach the block's mark (or the run's end), then evaluate every eval model."""
        config, backbone = self.config, self.backbone
        mark = jnp.minimum((block + 1) * config.eval.interval, total_steps)

        def active(state):
            return (state.learner.env_steps < mark) & (state.first_nonfinite_step < 0)

        def keep_going(carry):
            # While any seed is short of its mark; the others sit the iterations out unchanged, so every seed is
            # still evaluated at its own mark, and the vmapped loop need not choose between whole states.
            return any_seed(active(carry[0]), backbone.seed_axis)

        def train_iteration(carry):
            state, episode_sums, update_sums, n_updates = carry
            learner, stats, metrics, updates = self._iteration(state.learner, active(state))
            state = state.replace(learner=learner, first_nonfinite_step=first_nonfinite_step(
                state.first_nonfinite_step, metrics, learner.env_steps))
            update_sums = jax.tree.map(jnp.add, update_sums, metrics)
            return state, episode_sums + stats, update_sums, n_updates + updates

        metric_shapes = jax.eval_shape(self._iteration, state.learner)[2]
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
        carry = (state, EpisodeStats.zero(), zero_metrics, jnp.int32(0))
        state, episode_sums, update_sums, n_updates = jax.lax.while_loop(keep_going, train_iteration, carry)

        eval_rng, key = jax.random.split(state.eval_rng)
        state = state.replace(eval_rng=eval_rng)
        learner = state.learner
        row = training_row((learner.env_steps, learner.episodes, learner.updates), state.first_nonfinite_step,
                           episode_sums, update_sums, n_updates, backbone.exploration(learner))
        agent_params = backbone.agent_params(state.learner)
        models = self.paradigm.train_eval_models
        for model, model_key in zip(models, jax.random.split(key, len(models))):
            for name, value in self.evaluate(agent_params, model_key, model, config.eval.episodes).items():
                row[f"test/{model}/{name}"] = value
        return state, row

    def chunk(self, state: RunState, first_block: jax.Array, total_steps: jax.Array
              ) -> tuple[RunState, dict[str, jax.Array]]:
        """`log.chunk_evals` blocks for one seed; metrics come back stacked [chunk_evals]. The block index and
        the run length are traced, so one compilation serves every chunk and any `steps`."""
        blocks = first_block + jnp.arange(self.config.log.chunk_evals)
        return jax.lax.scan(lambda s, b: self._block(s, b, total_steps), state, blocks)

    def compiled_chunk(self):
        """The chunk for all seeds at once (state and metrics with a leading seed axis), state donated so the
        replay buffer is updated in place.

        Several seeds are vmapped. A single seed runs as it is, its seed axis dropped on the way in and restored on
        the way out: vmap over one seed leaves a unit axis inside every time-major activation ([T, 1, B, ...]),
        around which XLA copies and transposes the GRU's sequences (docs/backbones.md measures the cost)."""
        if self.config.seeds > 1:
            chunk = jax.vmap(self.chunk, in_axes=(0, None, None), axis_name=SEED_AXIS)
        else:
            def chunk(state, first_block, total_steps):
                state, metrics = self.chunk(jax.tree.map(lambda x: x[0], state), first_block, total_steps)
                return jax.tree.map(lambda x: x[None], (state, metrics))

        return jax.jit(chunk, donate_argnums=0, compiler_options=self.compiler_options())

    # -- what the runner does with a program (the host loop, ctde.training.host, overrides these) --------

    def compile_chunk(self, abstract: RunState, total_steps: jax.Array) -> tuple[Any, Any]:
        """(chunk function, placement of its state): `compiled_chunk` compiled for `abstract`."""
        compiled = self.compiled_chunk().lower(abstract, jnp.int32(0), total_steps).compile()
        return compiled, compiled.input_shardings[0][0]

    def evaluate_seeds(self, agent_params: Any, keys: jax.Array, model: str, episodes: int) -> dict[str, Any]:
        """`evaluate` for every seed (params and keys with a leading seed axis): {metric: [seeds]}."""
        return jax.device_get(jax.jit(jax.vmap(lambda p, k: self.evaluate(p, k, model, episodes)),
                                      compiler_options=self.compiler_options(learning=False))(agent_params, keys))

    def run_policy(self, policy: Any, key: jax.Array, episodes: int) -> tuple[dict[str, float], list[dict]]:
        """Greedy episodes of the exported policy's first seed (`ctde.algos.rollout.run_policy`)."""
        return run_policy(policy, evaluation_env(self.env), policy.seed_params(0), key, episodes=episodes)

    def collect_datasets(self, agent_params: Any, keys: jax.Array, episodes: int, holdout: float) -> Any:
        """Stage 2's data set for every seed (`ctde.training.distill.collect_datasets`)."""
        return collect_datasets(self, agent_params, keys, episodes, holdout)

    def close(self) -> None:
        """Release what the program holds outside JAX (the host loop's environment processes)."""

    def compiler_options(self, learning: bool = True) -> dict[str, str] | None:
        """XLA options for this run's training programs, or (learning=False) its evaluation-only programs:
        the CPU kernels `algo.cpu_kernels` selects (`ctde.training.cpu_kernels`)."""
        algo = self.config.algo
        # (read for value decomposition only: MAPPO's updates per rollout are ppo.epochs x ppo.minibatches)
        rollout = self.backbone.rollout
        steps_per_update = rollout.num_envs * rollout.length / max(algo.updates_per_rollout, 1)
        return cpu_kernels.compiler_options(algo.cpu_kernels, algo=algo.name, precision=algo.matmul_precision,
                                            learning=learning, env_steps_per_update=steps_per_update)


def assemble_program(config: TrainConfig, program: type[Program] = Program) -> Program:
    """The run's environment, paradigm and backbone, as a `program`: `Program` collects inside `jit`,
    `ctde.training.host.HostProgram` on the host (`ctde.training.runner.build_program` chooses)."""
    cpu_kernels.unroll_threefry()
    env = make_env(config.env, views=PARADIGMS[config.paradigm.name].required_views, ltr_options=config.ltr)
    paradigm = make_paradigm(config, env.spec)
    backbone = make_backbone(config, env, paradigm)
    # Seeds run side by side under a named vmap (whose decisions then agree across seeds: ctde.algos.seeds),
    # except one seed in the compiled chunk, which runs as it is (`Program.compiled_chunk`).
    backbone.seed_axis = SEED_AXIS if config.seeds > 1 or program.vmaps_one_seed else None
    n_blocks = -(-config.steps // config.eval.interval)
    n_chunks = -(-n_blocks // config.log.chunk_evals)
    return program(config=config, env=env, paradigm=paradigm, backbone=backbone, n_blocks=n_blocks, n_chunks=n_chunks)
