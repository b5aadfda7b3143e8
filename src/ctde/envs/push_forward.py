"""`mpe:push_forward`: the CTEDD paper's "Push Forward" (arXiv 1910.09152), defined here in JAX.

No public scenario has this name; the paper describes agents that must jointly push an object forward. Our
definition, with MPE's physics:

- Entities: 2 agents (radius 0.05, mass 1, acceleration 5: MPE's defaults) and one box (radius 0.2, mass 4).
  Every pair collides. The box is heavy enough that one agent alone pushes it markedly slower than two: at
  steady state (damping balancing the push) one agent moves it at 0.4 units/s, two at 0.67 (e.g. one behind
  the other along the line of centres). Like every MPE entity the box is a frictionless disc: a push off its
  centre line turns into a sideways slide of the pusher, so the agents must keep themselves behind the box.
- Start: the box at the origin, at rest; each agent at rest at a uniform random position behind it,
  x in [-1, -0.4], y in [-0.5, 0.5].
- Actions: 5 discrete, as the JaxMARL MPE adapter (`ctde.envs.mpe.ACTION_DIRECTIONS`): 0 no-op, 1 left (-x),
  2 right (+x), 3 down (-y), 4 up (+y); the agent's force is the direction times its acceleration 5. With
  `continuous_actions=True` (`env.continuous_actions=true`): float32 [2, 2], each agent's force (x, y) clipped to
  [-1, 1] per component and times the same acceleration 5 (so (1, 0) is exactly the right move); the spec then
  has `continuous_actions=True`, `n_actions=2`, and `avail` is all True [2, 2].
- Physics, per step (MPE's, dt 0.1, damping 0.25): each pair (a, b) in contact pushes apart with force
  `100 * (p_a - p_b) / |p_a - p_b| * softplus(-(|p_a - p_b| - r_a - r_b) / 1e-3) * 1e-3` (MPE's softplus
  penetration: contact force 1e2, margin 1e-3); then, as the original MPE integrates,
  `v <- v * (1 - damping) + F / m * dt` and `p <- p + v * dt` (no speed limit). There are no walls.
- Team reward per step: 10 x the box's displacement along +x in that step (negative when it goes back), so an
  episode's return is 10 x the box's total forward progress.
- Episodes: 25 steps (or `env.episode_limit`); the time limit is the only end (`done=True, terminal=False`,
  `won` always False).
- Observation of agent i (local, float32 [8]): own position (2), own velocity (2), the box's position relative
  to itself (2), the box's velocity (2). The other agent is not observed: coordination must come from training
  (or from a paradigm's communication), not from the observation.
- State (float32 [12]): positions of agent 0, agent 1, the box (6), then their velocities in the same order (6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct

from ctde.envs.base import EnvSpec, TimeStep
from ctde.envs.mpe import (ACTION_DIRECTIONS, DEFAULT_EPISODE_LIMIT, FORCE_DIM, N_ACTIONS, PUSH_FORWARD_DESCRIPTION,
                           continuous_forces)
from ctde.errors import ConfigError

N_AGENTS = 2
BOX = N_AGENTS  # the box's entity index, after the agents
AGENT_SIZE, BOX_SIZE = 0.05, 0.2
AGENT_MASS, BOX_MASS = 1.0, 4.0
AGENT_ACCEL = 5.0
DT, DAMPING = 0.1, 0.25
CONTACT_FORCE, CONTACT_MARGIN = 1e2, 1e-3
REWARD_SCALE = 10.0
START_X, START_Y = (-1.0, -0.4), (-0.5, 0.5)  # the agents' start area, behind the box

SIZES = jnp.array([AGENT_SIZE] * N_AGENTS + [BOX_SIZE], jnp.float32)
MASSES = jnp.array([AGENT_MASS] * N_AGENTS + [BOX_MASS], jnp.float32)


@struct.dataclass
class PushForwardState:
    pos: jax.Array  # float32 [3, 2]: agent 0, agent 1, box
    vel: jax.Array  # float32 [3, 2]
    t: jax.Array  # int32 []: steps taken in the episode


def contact_forces(pos: jax.Array) -> jax.Array:
    """float32 [3, 2]: the sum of MPE's soft contact forces on each entity at positions `pos` float32 [3, 2]."""
    delta = pos[:, None, :] - pos[None, :, :]  # [a, b, 2]: from b to a
    dist = jnp.sqrt(jnp.sum(jnp.square(delta), axis=-1))  # [a, b]
    # Softplus penetration: a smooth, slightly soft contact (MPE's), nonzero only within about a margin of touching.
    penetration = jnp.logaddexp(0.0, -(dist - (SIZES[:, None] + SIZES[None, :])) / CONTACT_MARGIN) * CONTACT_MARGIN
    # No force of an entity on itself, nor between coincident centres (no direction; avoids 0 / 0).
    apart = (dist > 0) & ~jnp.eye(pos.shape[0], dtype=bool)
    unit = delta / jnp.where(apart, dist, 1.0)[..., None]
    force = jnp.where(apart[..., None], CONTACT_FORCE * unit * penetration[..., None], 0.0)
    return jnp.sum(force, axis=1)


def physics_step(pos: jax.Array, vel: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One MPE integration step. pos, vel float32 [3, 2]; actions int [2] -> the new (pos, vel)."""
    return force_step(pos, vel, ACTION_DIRECTIONS[actions])


def force_step(pos: jax.Array, vel: jax.Array, forces: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One MPE integration step under the agents' `forces` float32 [2, 2], in units of their acceleration."""
    action_force = forces.astype(jnp.float32) * AGENT_ACCEL  # [2, 2]
    force = contact_forces(pos) + jnp.concatenate([action_force, jnp.zeros((1, 2), jnp.float32)])
    vel = vel * (1.0 - DAMPING) + force / MASSES[:, None] * DT
    return pos + vel * DT, vel


class PushForward:
    """Two agents push a heavy box along +x; see the module docstring."""

    has_sight_range = False

    def __init__(self, episode_limit: int | None = None, continuous_actions: bool = False):
        if episode_limit is not None and episode_limit < 1:
            raise ConfigError(f"env.episode_limit={episode_limit} must be at least 1.")
        self.limit = DEFAULT_EPISODE_LIMIT if episode_limit is None else int(episode_limit)
        self.continuous = bool(continuous_actions)
        self.n_actions = FORCE_DIM if self.continuous else N_ACTIONS
        mode = " [continuous actions: a 2-D force]" if self.continuous else ""
        self.spec = EnvSpec(id="mpe:push_forward", n_agents=N_AGENTS, n_actions=self.n_actions, obs_dim=8,
                            state_dim=12, episode_limit=self.limit, available_views={}, n_enemies=0,
                            description=PUSH_FORWARD_DESCRIPTION + mode, has_win=False,
                            continuous_actions=self.continuous)

    def observe(self, s: PushForwardState) -> jax.Array:
        """float32 [2, 8]: per agent [own position, own velocity, box position - own position, box velocity]."""
        own_pos, own_vel = s.pos[:N_AGENTS], s.vel[:N_AGENTS]
        box_rel = s.pos[BOX][None, :] - own_pos
        box_vel = jnp.broadcast_to(s.vel[BOX], (N_AGENTS, 2))
        return jnp.concatenate([own_pos, own_vel, box_rel, box_vel], axis=-1).astype(jnp.float32)

    def _timestep(self, s: PushForwardState, reward: jax.Array, done: jax.Array) -> TimeStep:
        return TimeStep(obs=self.observe(s), state=jnp.concatenate([s.pos.reshape(-1), s.vel.reshape(-1)]),
                        avail=jnp.ones((N_AGENTS, self.n_actions), bool), reward=jnp.asarray(reward, jnp.float32),
                        terminal=jnp.asarray(False), done=jnp.asarray(done), won=jnp.asarray(False))

    def reset(self, key: jax.Array):
        """Box at the origin, agents at random behind it, all at rest: (PushForwardState, TimeStep)."""
        low = jnp.array([START_X[0], START_Y[0]], jnp.float32)
        high = jnp.array([START_X[1], START_Y[1]], jnp.float32)
        agents = jax.random.uniform(key, (N_AGENTS, 2), jnp.float32, low, high)
        s = PushForwardState(pos=jnp.concatenate([agents, jnp.zeros((1, 2), jnp.float32)]),
                             vel=jnp.zeros((N_AGENTS + 1, 2), jnp.float32), t=jnp.zeros((), jnp.int32))
        return s, self.timestep_of(s)

    def timestep_of(self, s: PushForwardState) -> TimeStep:
        return self._timestep(s, jnp.float32(0.0), jnp.asarray(False))

    def step(self, key: jax.Array, s: PushForwardState, actions: jax.Array):
        """Apply `actions` int [2] (or with continuous actions float32 [2, 2] forces, clipped to [-1, 1]); the team
        reward is 10 x the box's +x displacement. `key` is unused."""
        if self.continuous:
            pos, vel = force_step(s.pos, s.vel, continuous_forces(jnp.asarray(actions), N_AGENTS))
        else:
            pos, vel = physics_step(s.pos, s.vel, actions)
        reward = REWARD_SCALE * (pos[BOX, 0] - s.pos[BOX, 0])
        s = PushForwardState(pos=pos, vel=vel, t=s.t + 1)
        return s, self._timestep(s, reward, s.t >= self.limit)
