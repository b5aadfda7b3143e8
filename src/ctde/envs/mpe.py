"""MPE (JaxMARL's pure-JAX multi-agent particle environments) behind the ctde environment interface.

Scenarios (`mpe:<name>`), each with the cooperative side as the learners:

- `mpe:simple_tag` (JaxMARL `MPE_simple_tag_v3`, predator-prey): the learners are the 3 adversaries
  (predators: size 0.075, accel 3, max speed 1); the prey (size 0.05, accel 4, max speed 1.3) follows the fixed
  policy `env.adversary_policy`; 2 static obstacles. Team reward: the adversaries' reward, +10 per
  predator-prey contact in the state reached, which JaxMARL gives identically to every adversary.
- `mpe:simple_push` (`MPE_simple_push_v3`, keep-away): the learner is the good agent; the adversary follows
  `env.adversary_policy`; 2 landmarks, one of them the goal. Team reward: the good agent's reward, minus its
  distance to the goal landmark.
- `mpe:simple_spread` (`MPE_simple_spread_v3`): all 3 agents learn; 3 landmarks. Team reward: the mean of the
  agents' rewards (each is 0.5 x minus the sum over landmarks of the nearest agent's distance, shared, plus
  0.5 x minus its own collisions with other agents).
- `mpe:push_forward`: our own scenario from the CTEDD paper, in `ctde.envs.push_forward` (`ctde.envs.make_mpe`
  builds either).

Fixed policies (`env.adversary_policy`), deterministic given the step's key:
- `heuristic` (deterministic outright): simple_tag's prey flees the nearest predator: it takes the action whose
  displacement direction has the largest dot product with the unit vector from that predator to itself, except
  that along an axis where it stands beyond the arena edge (|coordinate| > `ARENA_EDGE` = 0.9, where its own
  boundary penalty begins) it heads back toward the centre (so it cannot flee to infinity). simple_push's
  adversary chases the good agent: the action most aligned with the vector to it (it keeps the good agent away
  from the goal by bumping into it). Ties go to the lowest action index (no-op when the vector is zero).
- `random`: a uniform random action, drawn from a key split off the step's key.

Actions, discrete by default (JaxMARL's discrete decoding, checked in tests/test_mpe.py), `ACTION_DIRECTIONS`:
0 no-op, 1 left (-x), 2 right (+x), 3 down (-y), 4 up (+y); always all available. The agent's force is the
direction times its acceleration.

Continuous actions (`env.continuous_actions=true`, for MADDPG's tanh actors; all four scenarios): the spec has
`continuous_actions=True` and `n_actions=2`, `avail` is all True bool [n, 2], and `step` takes float32
[n_learners, 2], a force (x, y) clipped to [-1, 1] per component and scaled by the agent's acceleration, so that
(1, 0) is exactly the discrete right move. JaxMARL's scenarios are then built with its continuous action type
(`CONTINUOUS_ACT`), whose decoding of a 5-vector `a` is the force `[a2 - a1, a4 - a3] * accel`; a force u is
handed to it as `[0, relu(-ux), relu(ux), relu(-uy), relu(uy)]` (`force_to_jaxmarl`). The fixed side still
chooses one of the 5 discrete moves (`fixed_action` is the same in both modes) and plays it as the force of its
direction, so it behaves identically in both modes. push_forward applies the force directly.

Observations: JaxMARL's own per-agent observation of each learner. All learners must share one width: a
learner with a shorter observation would be padded with zeros at the end to the widest (none of these
scenarios needs it: simple_tag's adversaries all see 16 features, simple_spread's agents 18, simple_push's single
good agent 19).

State (float32): every entity's position in JaxMARL's entity order (agents in `env.agents` order, then the
landmarks), then every agent's velocity (landmarks never move), then, in simple_push only, the goal landmark
one-hot:
- simple_tag:    positions [adversary 0..2, prey, obstacle 0..1] (12), velocities [adversary 0..2, prey] (8) = 20
- simple_push:   positions [adversary, good agent, landmark 0..1] (8), velocities [adversary, good agent] (4),
                 goal one-hot (2) = 14
- simple_spread: positions [agent 0..2, landmark 0..2] (12), velocities [agent 0..2] (6) = 18
(communication is silent in all three, so JaxMARL's message state is always zero and left out).

Episodes end only at the time limit: 25 steps (JaxMARL's `max_steps`), or `env.episode_limit`; then
`done=True, terminal=False` (bootstrap through the cut), and `won` is always False. The environment never resets
itself: `step` calls JaxMARL's non-resetting `step_env` (JaxMARL's `step` auto-resets) and counts the limit here
(JaxMARL's own done flag, `step >= max_steps` tested before the increment, would come one step late).
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Literal

import jax
import jax.numpy as jnp

from ctde.envs.base import EnvSpec, TimeStep, strong_dtypes
from ctde.errors import ConfigError

AdversaryPolicy = Literal["heuristic", "random"]
ADVERSARY_POLICIES = ("heuristic", "random")

N_ACTIONS = 5
FORCE_DIM = 2  # the continuous action: a force along x and y
# Displacement direction of each discrete action, as JaxMARL's `_decode_discrete_action` decodes it.
ACTION_DIRECTIONS = jnp.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]], jnp.float32)
NOOP, LEFT, RIGHT, DOWN, UP = range(N_ACTIONS)
DEFAULT_EPISODE_LIMIT = 25  # JaxMARL's (and MPE's) max_steps
# Where the heuristic prey turns back: JaxMARL's prey boundary penalty starts at |x| or |y| = 0.9.
ARENA_EDGE = 0.9


@dataclass(frozen=True)
class Scenario:
    """How one JaxMARL scenario maps onto ctde: who learns, who is fixed, and the team reward."""

    jaxmarl_id: str
    learners: tuple[str, ...]  # JaxMARL agent names of the learners, in ctde's agent order
    fixed: str | None  # JaxMARL agent name of the fixed-policy agent, if any
    team_reward: Literal["shared", "mean"]  # shared: the first learner's (identical for all); mean: the average
    description: str


SCENARIOS: dict[str, Scenario] = {
    "simple_tag": Scenario(
        "MPE_simple_tag_v3", ("adversary_0", "adversary_1", "adversary_2"), "agent_0", "shared",
        "predator-prey: 3 predators (learners) chase a fixed prey (env.adversary_policy: heuristic = flee the "
        "nearest predator, random) among 2 obstacles; +10 per predator-prey contact"),
    "simple_push": Scenario(
        "MPE_simple_push_v3", ("agent_0",), "adversary_0", "shared",
        "keep-away: 1 good agent (learner) goes to the goal landmark past a fixed adversary (env.adversary_policy: "
        "heuristic = chase the good agent, random); reward = minus the distance to the goal"),
    "simple_spread": Scenario(
        "MPE_simple_spread_v3", ("agent_0", "agent_1", "agent_2"), None, "mean",
        "cooperative navigation: 3 agents cover 3 landmarks without colliding; no fixed side"),
}
PUSH_FORWARD_DESCRIPTION = ("CTEDD's Push Forward (our definition): 2 agents push a heavy box along +x; "
                            "reward 10 x forward progress; local obs only; no fixed side")
SCENARIO_NAMES = (*SCENARIOS, "push_forward")
# Scenarios with a fixed-policy side that `env.adversary_policy` configures.
WITH_FIXED_SIDE = tuple(name for name, s in SCENARIOS.items() if s.fixed is not None)


def _import_jaxmarl() -> None:
    """Import jaxmarl with file descriptor 1 silenced the first time (it prints two lines about optional
    submodules, and swaps sys.stdout and sys.stderr while doing so: its mabrax module sets both back to
    sys.__stdout__ / sys.__stderr__, which would undo a caller's redirection, e.g. of our error message)."""
    if "jaxmarl" not in sys.modules:
        sys.stdout.flush()
        saved_stdout, saved_stderr, saved_fd = sys.stdout, sys.stderr, os.dup(1)
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            try:
                import jaxmarl  # noqa: F401
            finally:
                os.dup2(saved_fd, 1)
                os.close(saved_fd)
                sys.stdout, sys.stderr = saved_stdout, saved_stderr


def _make_jaxmarl(env_id: str, continuous_actions: bool = False, **kwargs):
    """`jaxmarl.make`, imported silently; `continuous_actions`: JaxMARL's continuous action type (a 5-vector
    per agent, see `force_to_jaxmarl`) instead of its 5 discrete actions."""
    _import_jaxmarl()
    from jaxmarl import make
    from jaxmarl.environments.mpe.default_params import CONTINUOUS_ACT, DISCRETE_ACT

    return make(env_id, action_type=CONTINUOUS_ACT if continuous_actions else DISCRETE_ACT, **kwargs)


def check_scenario(name: str) -> None:
    """Raise ConfigError, with a did-you-mean, if `name` is not an MPE scenario ctde provides."""
    if name not in SCENARIO_NAMES:
        close = difflib.get_close_matches(name, SCENARIO_NAMES, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(f"Unknown MPE scenario '{name}'.{hint} Valid: {', '.join(SCENARIO_NAMES)}.")


def check_options(name: str, sight_range: float | None, adversary_policy: str, views: tuple[str, ...] = ()) -> None:
    """Refuse the options an MPE scenario cannot honour, with the reason."""
    check_scenario(name)
    if sight_range is not None:
        raise ConfigError(f"env.sight_range does not apply to mpe:{name}: MPE observations have no sight range "
                          f"(it applies to SMAX maps and toy:retreat). Remove env.sight_range.")
    if adversary_policy not in ADVERSARY_POLICIES:
        raise ConfigError(f"env.adversary_policy={adversary_policy!r}; valid: {', '.join(ADVERSARY_POLICIES)}.")
    if adversary_policy != "heuristic" and name not in WITH_FIXED_SIDE:
        raise ConfigError(f"env.adversary_policy={adversary_policy} has no effect on mpe:{name}, where every agent "
                          f"learns; it applies to {', '.join(f'mpe:{n}' for n in WITH_FIXED_SIDE)}.")
    if views:
        raise ConfigError(f"mpe:{name} offers no privileged views (asked for: {', '.join(views)}).")


def force_to_jaxmarl(force: jax.Array) -> jax.Array:
    """float32 [..., 5]: JaxMARL's continuous action for the force `force` float32 [..., 2] (in units of the
    agent's acceleration): [0, relu(-ux), relu(ux), relu(-uy), relu(uy)], which JaxMARL decodes back to
    [a2 - a1, a4 - a3] = (ux, uy)."""
    ux, uy = force[..., 0], force[..., 1]
    relu = jax.nn.relu
    return jnp.stack([jnp.zeros_like(ux), relu(-ux), relu(ux), relu(-uy), relu(uy)], axis=-1).astype(jnp.float32)


def continuous_forces(actions: jax.Array, n: int) -> jax.Array:
    """float32 [n, 2]: continuous `actions` checked to be [n, 2] and clipped to [-1, 1]."""
    if actions.shape != (n, FORCE_DIM):
        raise ValueError(f"continuous actions must be float [{n}, {FORCE_DIM}] (a force per agent), got shape "
                         f"{tuple(actions.shape)}")
    return jnp.clip(actions.astype(jnp.float32), -1.0, 1.0)


def best_action(direction: jax.Array) -> jax.Array:
    """int32 []: the action whose displacement is most aligned with `direction` float32 [2] (lowest index on a
    tie, so the no-op for a zero vector)."""
    return jnp.argmax(ACTION_DIRECTIONS @ direction).astype(jnp.int32)


def flee_action(prey_pos: jax.Array, predator_pos: jax.Array, edge: float = ARENA_EDGE) -> jax.Array:
    """The heuristic prey's action, int32 []: away from the nearest predator, back inward along any axis on which
    it stands beyond `edge`. prey_pos float32 [2], predator_pos float32 [k, 2]."""
    rel = prey_pos[None, :] - predator_pos  # [k, 2]: from each predator to the prey
    dist = jnp.sqrt(jnp.sum(jnp.square(rel), axis=-1))
    nearest = jnp.argmin(dist)
    away = rel[nearest] / jnp.maximum(dist[nearest], 1e-6)
    direction = jnp.where(jnp.abs(prey_pos) > edge, -jnp.sign(prey_pos), away)
    return best_action(direction)


class MPEEnv:
    """A JaxMARL MPE scenario with its cooperative side learning; see the module docstring."""

    has_sight_range = False

    def __init__(self, scenario: str, episode_limit: int | None = None,
                 adversary_policy: AdversaryPolicy = "heuristic", continuous_actions: bool = False):
        check_options(scenario, None, adversary_policy)
        if scenario not in SCENARIOS:
            raise ConfigError(f"mpe:{scenario} is not a JaxMARL scenario; build it with make_mpe.")
        if episode_limit is not None and episode_limit < 1:
            raise ConfigError(f"env.episode_limit={episode_limit} must be at least 1.")
        self.name = scenario
        self.scenario = SCENARIOS[scenario]
        self.adversary_policy = adversary_policy
        self.limit = DEFAULT_EPISODE_LIMIT if episode_limit is None else int(episode_limit)
        self.continuous = bool(continuous_actions)
        self._env = _make_jaxmarl(self.scenario.jaxmarl_id, continuous_actions=self.continuous, max_steps=self.limit)
        env = self._env
        self.learner_index = tuple(env.a_to_i[a] for a in self.scenario.learners)
        self.n = len(self.learner_index)
        self.fixed_index = None if self.scenario.fixed is None else env.a_to_i[self.scenario.fixed]
        widths = [env.observation_spaces[a].shape[0] for a in self.scenario.learners]
        self.obs_dim = max(widths)
        self._has_goal = scenario == "simple_push"
        state_dim = env.num_entities * 2 + env.num_agents * 2 + (env.num_landmarks if self._has_goal else 0)
        fixed = f" [this env: {adversary_policy}]" if self.scenario.fixed is not None else ""
        self.n_actions = FORCE_DIM if self.continuous else N_ACTIONS
        mode = " [continuous actions: a 2-D force]" if self.continuous else ""
        self.spec = EnvSpec(id=f"mpe:{scenario}", n_agents=self.n, n_actions=self.n_actions, obs_dim=self.obs_dim,
                            state_dim=state_dim, episode_limit=self.limit, available_views={}, n_enemies=0,
                            description=self.scenario.description + fixed + mode, has_win=False,
                            continuous_actions=self.continuous)
        self._fixed_policy = self._make_fixed_policy()

    # -- the fixed side ------------------------------------------------------------------------------------

    def _make_fixed_policy(self) -> Callable[[jax.Array, object], jax.Array] | None:
        """(key, JaxMARL state) -> int32 [] action of the fixed-policy agent, or None if all agents learn."""
        if self.fixed_index is None:
            return None
        if self.adversary_policy == "random":
            return lambda key, state: jax.random.randint(key, (), 0, N_ACTIONS, dtype=jnp.int32)
        fixed = self.fixed_index
        if self.name == "simple_tag":
            predators = jnp.array(self.learner_index)
            return lambda key, state: flee_action(state.p_pos[fixed], state.p_pos[predators])
        target = self.learner_index[0]  # simple_push: chase the good agent
        return lambda key, state: best_action(state.p_pos[target] - state.p_pos[fixed])

    def fixed_action(self, key: jax.Array, env_state) -> jax.Array:
        """int32 []: what the fixed-policy agent does in `env_state` with the step's `key` (see `step`)."""
        if self._fixed_policy is None:
            raise ValueError(f"mpe:{self.name} has no fixed-policy agent")
        return self._fixed_policy(jax.random.split(key)[1], env_state)

    # -- observations --------------------------------------------------------------------------------------

    def observe(self, env_state) -> jax.Array:
        """float32 [n_learners, obs_dim]: JaxMARL's observations of the learners, zero-padded to one width."""
        obs = self._env.get_obs(env_state)
        rows = [obs[a].astype(jnp.float32) for a in self.scenario.learners]
        rows = [jnp.pad(r, (0, self.obs_dim - r.shape[0])) for r in rows]
        return jnp.stack(rows)

    def world_state(self, env_state) -> jax.Array:
        """float32 [state_dim]: entity positions, agent velocities (and the goal one-hot in simple_push)."""
        parts = [env_state.p_pos.reshape(-1), env_state.p_vel[: self._env.num_agents].reshape(-1)]
        if self._has_goal:
            parts.append(jax.nn.one_hot(env_state.goal, self._env.num_landmarks))
        return jnp.concatenate(parts).astype(jnp.float32)

    def _timestep(self, env_state, reward: jax.Array, done: jax.Array) -> TimeStep:
        return TimeStep(obs=self.observe(env_state), state=self.world_state(env_state),
                        avail=jnp.ones((self.n, self.n_actions), bool), reward=jnp.asarray(reward, jnp.float32),
                        terminal=jnp.asarray(False), done=jnp.asarray(done), won=jnp.asarray(False))

    # -- interface -----------------------------------------------------------------------------------------

    def reset(self, key: jax.Array):
        """A fresh episode: (JaxMARL state, TimeStep). `key`: a PRNG key."""
        _, env_state = self._env.reset(key)
        env_state = strong_dtypes(env_state)  # no second compilation of a jitted step
        return env_state, self.timestep_of(env_state)

    def timestep_of(self, env_state) -> TimeStep:
        return self._timestep(env_state, jnp.float32(0.0), jnp.asarray(False))

    def step(self, key: jax.Array, env_state, actions: jax.Array):
        """One step of the learners' `actions`: int32 [n_learners], or with continuous actions float32
        [n_learners, 2] forces, clipped to [-1, 1] (the fixed side acts itself, with a discrete move)."""
        env_key, fixed_key = jax.random.split(key)
        if self.continuous:
            forces = force_to_jaxmarl(continuous_forces(jnp.asarray(actions), self.n))
            action_dict = {a: forces[i] for i, a in enumerate(self.scenario.learners)}
        else:
            action_dict = {a: actions[i].astype(jnp.int32) for i, a in enumerate(self.scenario.learners)}
        if self._fixed_policy is not None:
            fixed_action = self._fixed_policy(fixed_key, env_state)
            if self.continuous:  # the same move, as the force of its direction
                fixed_action = force_to_jaxmarl(ACTION_DIRECTIONS[fixed_action])
            action_dict[self.scenario.fixed] = fixed_action
        # `step_env`, not `step`: JaxMARL's `step` resets finished episodes itself; the ctde rollout decides.
        _, env_state, rewards, _, _ = self._env.step_env(env_key, env_state, action_dict)
        if self.scenario.team_reward == "shared":
            reward = rewards[self.scenario.learners[0]]
        else:
            reward = jnp.mean(jnp.stack([rewards[a] for a in self.scenario.learners]))
        done = env_state.step >= self.limit
        return env_state, self._timestep(env_state, reward, done)


def scenario_description(name: str) -> str:
    return PUSH_FORWARD_DESCRIPTION if name == "push_forward" else SCENARIOS[name].description
