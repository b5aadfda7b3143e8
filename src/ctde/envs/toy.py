"""Tiny environments, in the same interface as SMAX, small enough that learning tests finish in seconds.

- `toy:two_step`: the two-step cooperative game of the QMIX paper (Rashid et al. 2018, Fig. 3). Agent 0's
  first action picks state 2A (every joint action pays 7) or 2B (pays [[0, 1], [1, 8]]). Reaching 8 needs
  the agents to coordinate on (2B, 1, 1) instead of the safe 7.
- `toy:hallway`: a partially observable coordination task (after the "hallway" of Wang et al. 2020).
  Each agent stands in its own corridor of `toy_size` cells (default 2) at a random distance from the goal
  and sees only its own cell and the time. All agents must enter the goal on the same step (reward 1, a
  win); if only some enter, the episode ends with nothing. The `full_obs` view shows every agent's cell.
- `toy:retreat`: SMAX at sight 0 in miniature, for IGM-DA and CTDS. Two agents stand in the middle of a line
  of cells -D..D (D = `toy_size`, default 2); an enemy guards the left or the right gate (random per
  episode). Within exactly D steps the agents must withdraw through the *unguarded* gate: the team reward at
  the end is the fraction of agents standing on it (a win when all do). The guard is beyond the default
  sight range (1.5 cells) but within attack range (D), so, as in SMAX, its attack action is available from the
  first step: under `env.sight_range=0` the avail mask is the only clue where the enemy is. Attacking the
  guard does nothing but spend the step, which there is no time for. `full_obs` shows the guard always.
  A network that reads the avail mask can win every episode; one that does not can only guess (at most half).
- `toy:matrix`: QTRAN's one-step matrix game (Son et al. 2019, Table 1a; also Weighted QMIX's): 2 agents, 3
  actions, team reward [[8, -12, -12], [-12, 0, 0], [-12, 0, 0]][u_1, u_2]. The optimum 8 needs both agents on
  action 0; a monotonic mixer trained on uniformly explored data settles on a 0 cell instead, because the -12s
  pull action 0's utility below the others'.
- `toy:target_sum`: a one-step game with continuous actions, for MADDPG's tanh actors. Both agents see a
  target c ~ U(-1.5, 1.5) and each plays a_i in [-1, 1]; the team reward is 1 - (a_1 + a_2 - c)^2 (optimum 1;
  uniformly random actions score about 0.08). No single agent can reach c alone where |c| > 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
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


class _MatrixStart:
    """Two-agent games that always start in the same state (position 0) and show no reward there."""

    def reset(self, key):
        s = ToyState(t=jnp.int32(0), position=jnp.zeros((2,), jnp.int32), done=jnp.asarray(False))
        return s, self.timestep_of(s)

    def timestep_of(self, s: ToyState) -> TimeStep:
        return self._timestep(s, 0.0, False)


class TwoStepGame(_MatrixStart):
    """The QMIX paper's two-step game: 2 agents, 2 actions, 2 steps, fully observed."""

    has_sight_range = False

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
    has_sight_range = False

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
        return s, self.timestep_of(s)

    def timestep_of(self, s: ToyState) -> TimeStep:
        return self._timestep(s, 0.0, False, False, False)

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


class Retreat:
    """Withdraw through the gate the enemy does not guard; see the module docstring.

    Actions: 0 stop, 1 move left, 2 move right, 3 attack the left-gate enemy, 4 attack the right-gate enemy
    (SMAX's layout: moves and stop, then one attack per enemy slot; the empty gate's slot is a dead enemy, whose
    attack is never available). Attack k is available iff enemy k is present and within attack range D.

    Observation (SMAX's layout: other units, then own features): per other agent and per enemy slot
    [visible, relative position / D], visible iff present and nearer than the sight range (strictly, as SMAX);
    then own cell one-hot (2D + 1) and the episode's progress t / D. `full_obs`: the same with unlimited sight.
    State: every agent's cell one-hot, the guarded gate one-hot, the progress.
    """

    STOP, LEFT, RIGHT = 0, 1, 2
    has_sight_range = True
    DEFAULT_SIGHT = 1.5

    def __init__(self, n_agents: int = 2, gate: int | None = None, sight_range: float | None = None,
                 views: tuple[str, ...] = ()):
        self.gate = gate or 2
        if self.gate < 2:
            raise ConfigError("toy:retreat needs env.toy_size >= 2 (distance from the middle to a gate).")
        if sight_range is not None and sight_range < 0:
            raise ConfigError(f"env.sight_range={sight_range}: a sight range cannot be negative.")
        self.n = n_agents
        self.limit = self.gate  # no time to spare: the agents must move on every step
        self.sight = self.DEFAULT_SIGHT if sight_range is None else float(sight_range)
        self.views = _check_views(views, (FULL_OBS,), "retreat")
        self.cells = 2 * self.gate + 1
        obs_dim = 2 * (self.n - 1) + 2 * 2 + self.cells + 1
        self.spec = EnvSpec(id="toy:retreat", n_agents=self.n, n_actions=3 + 2, obs_dim=obs_dim,
                            state_dim=self.n * self.cells + 2 + 1, episode_limit=self.limit,
                            available_views={FULL_OBS: obs_dim}, n_enemies=2,
                            description=f"{self.n} agents, gates {self.gate} cells away; win = all leave by the "
                                        f"unguarded gate")

    def observe(self, s: ToyState, sight: float) -> jax.Array:
        """float32 [n, obs_dim]; `s.position` holds the agents' cells and then the guarded gate's slot."""
        cells, guard = s.position[: self.n], s.position[self.n]
        gates = jnp.array([-self.gate, self.gate])
        others = np.array([[j for j in range(self.n) if j != i] for i in range(self.n)], dtype=np.int32)
        ally_rel = (cells[None, :] - cells[:, None])[jnp.arange(self.n)[:, None], others]  # [n, n - 1]
        enemy_rel = gates[None, :] - cells[:, None]  # [n, 2]
        present = jnp.arange(2)[None, :] == guard
        rel = jnp.concatenate([ally_rel, enemy_rel], axis=1)
        visible = jnp.concatenate([jnp.ones_like(ally_rel, bool), present.repeat(self.n, 0)], axis=1)
        visible = visible & (jnp.abs(rel) < sight)
        units = jnp.stack([visible, rel / self.gate], axis=-1) * visible[..., None]  # [n, units, 2]
        own = jax.nn.one_hot(cells + self.gate, self.cells)
        progress = jnp.full((self.n, 1), s.t / self.limit)
        return jnp.concatenate([units.reshape(self.n, -1), own, progress], axis=-1).astype(jnp.float32)

    def _timestep(self, s: ToyState, reward, done, won) -> TimeStep:
        cells, guard = s.position[: self.n], s.position[self.n]
        gates = jnp.array([-self.gate, self.gate])
        in_range = (jnp.arange(2)[None, :] == guard) & (jnp.abs(gates[None, :] - cells[:, None]) <= self.gate)
        avail = jnp.concatenate([jnp.ones((self.n, 1), bool), (cells > -self.gate)[:, None],
                                 (cells < self.gate)[:, None], in_range], axis=-1)
        state = jnp.concatenate([jax.nn.one_hot(cells + self.gate, self.cells).reshape(-1),
                                 jax.nn.one_hot(guard, 2), jnp.array([s.t / self.limit])])
        views = {FULL_OBS: self.observe(s, jnp.inf)} if FULL_OBS in self.views else {}
        return TimeStep(obs=self.observe(s, self.sight), state=state.astype(jnp.float32), avail=avail,
                        reward=jnp.asarray(reward, jnp.float32), terminal=jnp.asarray(done), done=jnp.asarray(done),
                        won=jnp.asarray(won), views=views)

    def reset(self, key):
        guard = jax.random.randint(key, (1,), 0, 2)
        s = ToyState(t=jnp.int32(0), position=jnp.concatenate([jnp.zeros((self.n,), jnp.int32), guard]).astype(
            jnp.int32), done=jnp.asarray(False))
        return s, self.timestep_of(s)

    def timestep_of(self, s: ToyState) -> TimeStep:
        return self._timestep(s, 0.0, False, False)

    def step(self, key, s: ToyState, actions):
        moves = jnp.where(actions == self.LEFT, -1, jnp.where(actions == self.RIGHT, 1, 0))
        cells = jnp.clip(s.position[: self.n] + moves, -self.gate, self.gate)
        guard = s.position[self.n]
        free_gate = jnp.where(guard == 0, self.gate, -self.gate)
        t = s.t + 1
        # The agents observe the time, so the time limit is part of the task: no bootstrap past it.
        done = t >= self.limit
        escaped = cells == free_gate
        reward = jnp.where(done, jnp.mean(escaped.astype(jnp.float32)), 0.0)
        s = ToyState(t=t, position=jnp.concatenate([cells, guard[None]]).astype(jnp.int32), done=done)
        return s, self._timestep(s, reward, done, done & jnp.all(escaped))


class MatrixGame(_MatrixStart):
    """A one-step cooperative matrix game: both agents see a constant and pick one of the payoff's rows/columns."""

    has_sight_range = False
    PAYOFF = ((8.0, -12.0, -12.0), (-12.0, 0.0, 0.0), (-12.0, 0.0, 0.0))  # QTRAN's Table 1a

    def __init__(self, views: tuple[str, ...] = ()):
        self.views = _check_views(views, (), "matrix")
        self.payoff = jnp.array(self.PAYOFF)
        self.spec = EnvSpec(id="toy:matrix", n_agents=2, n_actions=3, obs_dim=1, state_dim=1, episode_limit=1,
                            description="QTRAN's non-monotonic matrix game; optimum 8 at (0, 0)", has_win=False)

    def _timestep(self, s: ToyState, reward, done) -> TimeStep:
        return TimeStep(obs=jnp.ones((2, 1)), state=jnp.ones((1,)), avail=jnp.ones((2, 3), bool),
                        reward=jnp.asarray(reward, jnp.float32), terminal=jnp.asarray(done), done=jnp.asarray(done),
                        won=jnp.asarray(False))

    def step(self, key, s: ToyState, actions):
        s = s.replace(t=s.t + 1, done=jnp.asarray(True))
        return s, self._timestep(s, self.payoff[actions[0], actions[1]], True)


class TargetSum:
    """One step, continuous actions: reward 1 - (a_1 + a_2 - c)^2 for a target c both agents see."""

    has_sight_range = False

    def __init__(self, views: tuple[str, ...] = ()):
        self.views = _check_views(views, (), "target_sum")
        self.spec = EnvSpec(id="toy:target_sum", n_agents=2, n_actions=1, obs_dim=1, state_dim=1, episode_limit=1,
                            description="continuous one-step game: actions must sum to a seen target; optimum 1",
                            has_win=False, continuous_actions=True)

    @staticmethod
    def _target(s: ToyState) -> jax.Array:
        return s.position[0].astype(jnp.float32) / 1000.0  # c stored in thousandths in the integer state

    def _timestep(self, s: ToyState, reward, done) -> TimeStep:
        c = self._target(s)
        return TimeStep(obs=jnp.full((2, 1), c), state=c[None], avail=jnp.ones((2, 1), bool),
                        reward=jnp.asarray(reward, jnp.float32), terminal=jnp.asarray(done), done=jnp.asarray(done),
                        won=jnp.asarray(False))

    def reset(self, key):
        c = jax.random.uniform(key, (), minval=-1.5, maxval=1.5)
        s = ToyState(t=jnp.int32(0), position=jnp.full((2,), jnp.round(c * 1000.0), jnp.int32), done=jnp.asarray(False))
        return s, self.timestep_of(s)

    def timestep_of(self, s: ToyState) -> TimeStep:
        return self._timestep(s, 0.0, False)

    def step(self, key, s: ToyState, actions):
        total = jnp.sum(jnp.clip(actions[:, 0], -1.0, 1.0))
        reward = 1.0 - (total - self._target(s)) ** 2
        s = s.replace(t=s.t + 1, done=jnp.asarray(True))
        return s, self._timestep(s, reward, True)


TOY_ENVS = {
    "two_step": "QMIX paper two-step game (2 agents; optimum 8, safe choice 7)",
    "hallway": "partially observable rendezvous, 2 agents (toy_size corridor length, default 2)",
    "retreat": "SMAX at sight 0 in miniature: leave by the unguarded gate; at sight 0 only the avail mask tells "
               "which (toy_size gate distance, default 2)",
    "target_sum": "continuous actions: 2 agents' actions must sum to a target both see (one step; optimum 1)",
    "matrix": "QTRAN's non-monotonic one-step matrix game (2 agents, 3 actions; optimum 8, QMIX settles on 0)",
}
_TOY_CLASSES = {"two_step": TwoStepGame, "hallway": Hallway, "retreat": Retreat, "target_sum": TargetSum,
                "matrix": MatrixGame}


def make_toy(name: str, size: int | None, views: tuple[str, ...], sight_range: float | None = None):
    """Build toy environment `name`; `sight_range` only for those that declare `has_sight_range`."""
    if sight_range is not None and not _TOY_CLASSES[name].has_sight_range:
        with_sight = ", ".join(f"toy:{n}" for n, cls in _TOY_CLASSES.items() if cls.has_sight_range)
        raise ConfigError(f"env.sight_range applies to SMAX maps and to {with_sight}; toy:{name} has no sight range.")
    if name == "two_step":
        return TwoStepGame(views)
    if name == "hallway":
        return Hallway(2, size, views)
    if name == "retreat":
        return Retreat(2, size, sight_range, views)
    if name == "target_sum":
        return TargetSum(views)
    if name == "matrix":
        return MatrixGame(views)
    raise KeyError(name)
