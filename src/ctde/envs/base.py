"""The functional environment interface every JAX environment implements.

An environment is a pair of pure functions, batched by the caller with `vmap`:

    env_state, timestep = env.reset(key)
    env_state, timestep = env.step(key, env_state, actions)     # int32 [n_agents], or float32 [n_agents, d]
    timestep = env.timestep_of(env_state)                       # what a reset into env_state shows

Environments do not reset themselves; the rollout decides (pad after the end, or reset at once). A rollout that
resets at once picks, per environment, the stepped or the fresh state and then observes the picked one with
`timestep_of`: observations are computed once per step, not for both candidates (XLA drops the unused ones).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import jax
import jax.numpy as jnp
from flax import struct

# The privileged views an environment may offer on top of the ordinary per-agent observation.
FULL_OBS = "full_obs"  # the ordinary observation computed with no sight limit (CTDS, IGM-DA experts)


@struct.dataclass
class TimeStep:
    """What every agent and the trainer see after a reset or a step (one environment, unbatched).

    obs:      float32 [n_agents, obs_dim]   each agent's own observation (restricted by sight)
    state:    float32 [state_dim]           the global state (training-time only)
    avail:    bool    [n_agents, n_actions] available actions
    reward:   float32 []                    team reward of the step that led here (0 after reset)
    terminal: bool    []                    the task ended (win or loss): no bootstrap past this step
    done:     bool    []                    the episode ended (terminal or time limit)
    won:      bool    []                    the episode ended in a win
    views:    dict[str, float32 [n_agents, view_dim]]   privileged views the run asked for
    alive:    bool    [n_agents] or None        which agents are alive (None: all of them, always)
    """

    obs: jax.Array
    state: jax.Array
    avail: jax.Array
    reward: jax.Array
    terminal: jax.Array
    done: jax.Array
    won: jax.Array
    views: dict[str, jax.Array] = struct.field(default_factory=dict)
    alive: jax.Array | None = None


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about an environment: sizes, limits and the privileged views it can provide."""

    id: str
    n_agents: int
    n_actions: int
    obs_dim: int
    state_dim: int
    episode_limit: int
    available_views: dict[str, int] = field(default_factory=dict)  # view name -> per-agent width
    n_enemies: int = 0
    description: str = ""
    # Whether the environment reports wins (SMAX does; a matrix game does not).
    has_win: bool = True
    # Continuous actions: n_actions is then the action dimension, actions are float32 [n_agents, n_actions] in
    # [-1, 1], and avail is all True.
    continuous_actions: bool = False


class Environment(Protocol):
    spec: EnvSpec
    # Whether the environment takes `env.sight_range` (a class attribute, read before building it); those
    # that do not refuse the option.
    has_sight_range: bool

    def reset(self, key: jax.Array) -> tuple[Any, TimeStep]: ...

    def step(self, key: jax.Array, env_state: Any, actions: jax.Array) -> tuple[Any, TimeStep]: ...

    def timestep_of(self, env_state: Any) -> TimeStep:
        """The observations, state, available actions, views and living agents of `env_state`, with reward 0
        and nothing ended: exactly what `reset` returns beside the state it starts."""
        ...

    # Optional: `evaluation_env() -> Environment`, where greedy evaluation runs when it is not the training
    # environment itself (Learning to Rank: the held-out queries). See `evaluation_env` below.


def strong_dtypes(tree: Any) -> Any:
    """Every leaf with a strong dtype. JaxMARL's reset returns weakly typed ints (SMAX's enemy state, MPE's step
    counter) that the first jitted step makes strong, so a step fed its own output would compile a second time."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.asarray(x).dtype), tree)


def evaluation_env(env: Environment) -> Environment:
    """The environment greedy evaluation runs in: `env.evaluation_env()` where the environment has held-out data,
    else `env` itself."""
    held_out = getattr(env, "evaluation_env", None)
    return held_out() if held_out is not None else env
