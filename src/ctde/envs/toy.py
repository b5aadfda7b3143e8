"""Tiny environments, in the same interface as SMAX, small enough that learning tests finish in seconds.

- `toy:two_step`: the two-step cooperative game of the QMIX paper (Rashid et al. 2018, Fig. 3). Agent 0's
  first action picks state 2A (every joint action pays 7) or 2B (pays [[0, 1], [1, 8]]). Reaching 8 needs
  the agents to coordinate on (2B, 1, 1) instead of the safe 7.
- `toy:hallway`: a partially observable coordination task (after the "hallway" of Wang et al. 2020).
  Each agent stands in its own corridor of `toy_size` cells (default 2) at a random distance from the goal
  and sees only its own cell and the time. All agents must enter the goal on the same step (reward 1, a
  win); if only some enter, the episode ends with nothing. The `full_obs` view shows every agent's cell.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ctde.envs.base import FULL_OBS, EnvSpec, TimeStep
from ctde.errors import ConfigError


@struct.dataclass
class ToyState:
    t: jax.Array  # int32 []: step within the episode
    position: jax.Array  # int32 [n]: a task-specific discrete position per agent (or the game's state)
    done: jax.Array  # bool []


def _check_views(views, offered: tuple[str, ...], name: str) -> tuple[str, ...]:
    for view in views:
        if view not in offered:
            raise ConfigError(f"toy:{name} does not offer the view '{view}' (offers: {', '.join(offered) or 'none'}).")
    return tuple(views)


class TwoStepGame:
    """The QMIX paper's two-step game: 2 agents, 2 actions, 2 steps, fully observed."""

    def __init__(self, views: tuple[str, ...] = ()):
        self.views = _check_views(views, (), "two_step")
        self.payoff_2b = jnp.array([[0.0, 1.0], [1.0, 8.0]])
        self.spec = EnvSpec(id="toy:two_step", n_agents=2, n_actions=2, obs_dim=3, state_dim=3, episode_limit=2,
                            description="QMIX paper two-step game; optimum 8, safe choice 7", has_win=False)

    def _timestep(self, s: ToyState, reward, done) -> TimeStep:
        onehot = jax.nn.one_hot(s.position[0], 3)
        return TimeStep(obs=jnp.stack([onehot, onehot]), state=onehot, avail=jnp.ones((2, 2), bool),
                        reward=jnp.asarray(reward, jnp.float32), terminal=jnp.asarray(done), done=jnp.asarray(done),
                        won=jnp.asarray(False))

    def reset(self, key):
        s = ToyState(t=jnp.int32(0), position=jnp.zeros((2,), jnp.int32), done=jnp.asarray(False))
        return s, self._timestep(s, 0.0, False)

    def step(self, key, s: ToyState, actions):
        first = s.t == 0
        next_state = jnp.where(first, 1 + actions[0], s.position[0])  # 1 = 2A, 2 = 2B
        reward = jnp.where(first, 0.0, jnp.where(s.position[0] == 1, 7.0, self.payoff_2b[actions[0], actions[1]]))
        done = ~first
        s = ToyState(t=s.t + 1, position=jnp.full((2,), next_state, jnp.int32), done=done)
        return s, self._timestep(s, reward, done)


class Hallway:
    """Partially observable rendezvous: every agent must enter the goal on the same step.

    Actions: 0 wait, 1 step towards the goal, 2 step away, 3 enter the goal (available only next to it).
    Observation: one-hot of the agent's own cell (1..length) and the episode's progress t / limit.
    `full_obs`: every agent's cell one-hot, then the progress. State: the same as `full_obs` for one agent.
    """

    WAIT, TOWARDS, AWAY, ENTER = 0, 1, 2, 3

    def __init__(self, n_agents: int = 2, length: int | None = None, views: tuple[str, ...] = ()):
        self.length = length or 2
        if self.length < 2:
            raise ConfigError("toy:hallway needs env.toy_size >= 2 (corridor length).")
        self.n = n_agents
        self.limit = self.length + 3
        self.views = _check_views(views, (FULL_OBS,), "hallway")
        own = self.length + 1
        full = self.n * self.length + 1
        self.spec = EnvSpec(id="toy:hallway", n_agents=self.n, n_actions=4, obs_dim=own, state_dim=full,
                            episode_limit=self.limit, available_views={FULL_OBS: full},
                            description=f"{self.n} agents, corridors of {self.length}; win = enter together")

    def _timestep(self, s: ToyState, reward, terminal, done, won) -> TimeStep:
        cells = jax.nn.one_hot(s.position - 1, self.length)  # [n, length]
        progress = jnp.full((self.n, 1), s.t / self.limit)
        obs = jnp.concatenate([cells, progress], axis=-1)
        full = jnp.concatenate([cells.reshape(-1), progress[0]])
        avail = jnp.stack([
            jnp.ones(self.n, bool),
            s.position > 1,
            s.position < self.length,
            s.position == 1,
        ], axis=-1)
        views = {FULL_OBS: jnp.broadcast_to(full, (self.n, full.shape[0]))} if FULL_OBS in self.views else {}
        return TimeStep(obs=obs, state=full, avail=avail, reward=jnp.asarray(reward, jnp.float32),
                        terminal=jnp.asarray(terminal), done=jnp.asarray(done), won=jnp.asarray(won), views=views)

    def reset(self, key):
        position = jax.random.randint(key, (self.n,), 1, self.length + 1).astype(jnp.int32)
        s = ToyState(t=jnp.int32(0), position=position, done=jnp.asarray(False))
        return s, self._timestep(s, 0.0, False, False, False)

    def step(self, key, s: ToyState, actions):
        moves = jnp.where(actions == self.TOWARDS, -1, jnp.where(actions == self.AWAY, 1, 0))
        position = jnp.clip(s.position + moves, 1, self.length)
        entered = (actions == self.ENTER) & (s.position == 1)
        all_entered = jnp.all(entered)
        any_entered = jnp.any(entered)
        t = s.t + 1
        # The agents observe the time, so the time limit is part of the task: no bootstrap past it.
        done = any_entered | (t >= self.limit)
        terminal = done
        reward = jnp.where(all_entered, 1.0, 0.0)
        s = ToyState(t=t, position=position.astype(jnp.int32), done=done)
        return s, self._timestep(s, reward, terminal, done, all_entered)


TOY_ENVS = {
    "two_step": "QMIX paper two-step game (2 agents; optimum 8, safe choice 7)",
    "hallway": "partially observable rendezvous, 2 agents (toy_size corridor length, default 2)",
}


def make_toy(name: str, size: int | None, views: tuple[str, ...]):
    if name == "two_step":
        return TwoStepGame(views)
    if name == "hallway":
        return Hallway(2, size, views)
    raise KeyError(name)
