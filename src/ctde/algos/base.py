"""The backbone interface: how parameters learn from collected data.

A backbone says how it wants data collected (`RolloutSpec`), how its collecting model acts (`actor` over
`acting_params`), and learns from one collected trajectory (`learn`). Who collects is not its business: the
compiled training program runs `ctde.algos.rollout.run_rollout` inside `jit` (`collect_and_learn` below), the
host loop (`ctde.training.host`) steps environments outside JAX and fills the same `Trajectory`. Both then call
the same `learn`.

What each algorithm name is and can host is declared as `Capabilities` in the backbone registry
(`ctde.algos.BACKBONES`); paradigms declare what they need (`ctde.paradigms.base.Paradigm`), and
`ctde.training.resolve` checks the pairing in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import jax
from flax import struct

from ctde.algos.rollout import Actor, EpisodeStats, RolloutState, Trajectory, run_rollout, start_rollouts
from ctde.envs.base import Environment


@dataclass(frozen=True)
class RolloutSpec:
    """How a backbone's data is collected each iteration.

    num_envs      environments stepped side by side (per seed)
    length        steps per rollout (the episode limit for whole episodes)
    auto_reset    a finished environment is reset at once inside the rollout (JaxMARL style); otherwise each
                  environment plays one episode and is padded after it ends (pymarl style)
    continuing    the next rollout continues this one's episodes (MAPPO); otherwise every rollout starts fresh
                  ones
    carry_every   k > 0 records the actor's recurrent state before every k-th step (`Trajectory.segment_carry`);
                  0 records none
    """

    num_envs: int
    length: int
    auto_reset: bool
    continuing: bool = False
    carry_every: int = 0


@dataclass(frozen=True)
class Capabilities:
    """What a backbone (one algorithm name) is and can host.

    family              "value_decomposition", "policy_gradient" or "actor_critic"
    igm                 its joint value's maximum is at the agents' greedy actions (false for QTRAN, weighted QMIX)
    continuous_actions  it can act in continuous action spaces
    """

    family: str
    igm: bool = True
    continuous_actions: bool = False


@struct.dataclass
class Collected:
    """One rollout as a backbone learns from it.

    trajectory   batch-major [E, T + 1, ...] (`ctde.algos.rollout.Trajectory`)
    stats        sums over the episodes that finished in it
    final_carry  the acting model's recurrent state after the last step (what bootstraps a continuing rollout)
    continue_from  where the next rollout continues (a `RolloutState`), or None when the collector keeps that
                 itself (the host loop)
    """

    trajectory: Trajectory
    stats: EpisodeStats
    final_carry: Any
    continue_from: Any = None


class Backbone(Protocol):
    """A learner of the paradigm's networks (and networks of its own: mixers, critics)."""

    rollout: RolloutSpec
    # The vmapped seeds' axis name when seeds run side by side (decisions that must agree across seeds are then
    # agreed over it; ctde.algos.seeds), else None. Set through `for_seeds`.
    seed_axis: str | None

    def init(self, key: jax.Array) -> Any:
        """One seed's learner state (params, optimizer, replay, counters env_steps / episodes / updates, rng)."""

    def actor(self, env_steps: jax.Array) -> Actor:
        """How the collecting model acts at `env_steps` (int []): exploration included."""

    def acting_params(self, state: Any) -> Any:
        """The parameters `actor` acts with."""

    def learn(self, state: Any, collected: Collected, active: jax.Array | None, rng: jax.Array, key: jax.Array
              ) -> tuple[Any, EpisodeStats, dict[str, jax.Array], jax.Array]:
        """Learn from one collected rollout: (state, episode sums, summed update metrics, updates made). `rng`
        becomes the state's next key; `key` drives the updates. Where `active` (bool [], None for true) is false
        the state comes back unchanged and the sums are zero (ctde.algos.seeds)."""

    def agent_params(self, state: Any) -> Any:
        """The paradigm's networks (what is evaluated and exported)."""

    def exploration(self, state: Any) -> dict[str, jax.Array]:
        """Exploration parameters to log (epsilon), {} if none."""


def rollout_of(backbone: Backbone, env: Environment, state: Any, key: jax.Array) -> Collected:
    """The rollout `backbone.rollout` asks for, inside `jit`, acting with `backbone.actor`: continuing the state's
    episodes, or fresh ones whose start key is split from `key`."""
    spec = backbone.rollout
    actor = backbone.actor(state.env_steps)
    if spec.continuing:
        start = state.rollout
    else:
        start_key, key = jax.random.split(key)
        start = start_rollouts(env, actor, start_key, spec.num_envs)
    trajectory, stats, end = run_rollout(env, actor, backbone.acting_params(state), key, start, length=spec.length,
                                         auto_reset=spec.auto_reset, carry_every=spec.carry_every)
    return Collected(trajectory=trajectory, stats=stats, final_carry=end.carry,
                     continue_from=end if spec.continuing else None)


def collect_and_learn(backbone: Backbone, env: Environment, state: Any, active: jax.Array | None = None
                      ) -> tuple[Any, EpisodeStats, dict[str, jax.Array], jax.Array]:
    """One training iteration inside `jit`: `rollout_of`, then `backbone.learn`. The state's rng splits into (next
    rng, rollout key, learn key), as the host loop splits it."""
    rng, rollout_key, learn_key = jax.random.split(state.rng, 3)
    return backbone.learn(state, rollout_of(backbone, env, state, rollout_key), active, rng, learn_key)


__all__ = ["Backbone", "Capabilities", "Collected", "RolloutSpec", "RolloutState", "collect_and_learn", "rollout_of"]
