"""One environment with SMAC's methods, seen through ctde's step contract in NumPy arrays (no JAX).

    adapter.info() -> dict(n_agents, n_actions, obs_dim, state_dim, episode_limit, n_enemies, views)
    adapter.reset(seed) -> step dict            adapter.step(actions int [n]) -> step dict

A step dict holds obs float32 [n, obs_dim], state float32 [state_dim], avail bool [n, n_actions], views
{name: float32 [n, d]}, alive bool [n], reward float, terminal bool (the battle was decided: no bootstrap), done
bool (the episode ended, time limit included), won bool.

Conventions, the same as the SMAX adapter's: a time-limit end is not terminal (SMAC reports it as `terminated`,
with `info["episode_limit"]` only under `continuing_episode=True`, so a cut is recognised by the step count too);
an agent is dead when no-op is its only available action (SMAC's rule); `won` is `info["battle_won"]`.

Seeding: `reset(seed)` passes the seed to an environment whose `reset` takes one (the test environment, SMAClite),
so each episode is reproducible and a resumed run continues exactly. SMAC's StarCraft II is seeded once, when its
process starts (the worker's seed); its episodes after a resume differ from an uninterrupted run's.

Unlimited sight (`full_obs`, for IGM-DA and CTDS): oxwhirl's `StarCraft2Env` has no constructor switch for it,
but every use of the sight range in its observation goes through one method, `unit_sight_range(agent_id)`
(constant 9): `get_obs_agent` shows a unit iff `dist < sight_range` and writes its distance and relative x, y
divided by it (feature slots 1, 2, 3 of each enemy and ally block). So `FullSight` calls `get_obs` once more with
that method returning a range longer than the map's diagonal, then multiplies slots 1-3 of every enemy and ally
block by (that range / 9): the same features, at the same scale as the ordinary observation, for every living
unit. Nothing else in the observation reads the sight range (move features, pathing grid and terrain height
depend on position only; an enemy's "available to attack" on the shooting range). An environment qualifies when
it has `unit_sight_range`, `get_obs_move_feats_size`, `get_obs_enemy_feats_size` and `get_obs_ally_feats_size`
(oxwhirl's SMAC and our test environment); others are refused with the reason.
"""

from __future__ import annotations

import inspect

import numpy as np

from ctde.errors import ConfigError, IncompatibleError

FULL_OBS = "full_obs"  # the name `ctde.envs.base.FULL_OBS` gives the unlimited-sight view (no JAX import here)
SMAC_METHODS = ("unit_sight_range", "get_obs_move_feats_size", "get_obs_enemy_feats_size", "get_obs_ally_feats_size")


class SMACAdapter:
    def __init__(self, env, env_id: str, views: tuple[str, ...] = (), episode_limit: int | None = None):
        self.env = env
        self.env_id = env_id
        info = env.get_env_info()
        self.n_agents = int(info["n_agents"])
        self.n_actions = int(info["n_actions"])
        self.own_limit = int(info["episode_limit"])
        self.episode_limit = int(episode_limit) if episode_limit is not None else self.own_limit
        self.obs_dim = int(np.prod(info["obs_shape"]))
        self.state_dim = int(np.prod(info["state_shape"]))
        self.n_enemies = int(info.get("n_enemies", getattr(env, "n_enemies", 0)) or 0)
        self.views = tuple(views)
        self.full_sight = None
        if FULL_OBS in self.views:
            self.full_sight = FullSight.of(env, env_id)  # raises IncompatibleError with the reason if it cannot
        for view in self.views:
            if view != FULL_OBS:
                raise ConfigError(f"{env_id} offers the view '{FULL_OBS}' at most, not '{view}'.")
        try:
            self._reset_takes_seed = "seed" in inspect.signature(env.reset).parameters
        except (TypeError, ValueError):
            self._reset_takes_seed = False
        self.t = 0

    def info(self) -> dict:
        return {"n_agents": self.n_agents, "n_actions": self.n_actions, "obs_dim": self.obs_dim,
                "state_dim": self.state_dim, "episode_limit": self.episode_limit, "n_enemies": self.n_enemies,
                "views": {FULL_OBS: self.obs_dim} if self.supports_full_sight() else {}}

    def supports_full_sight(self) -> bool:
        return FullSight.possible(self.env) is None

    def _observe(self) -> dict:
        obs = np.asarray(self.env.get_obs(), dtype=np.float32).reshape(self.n_agents, self.obs_dim)
        avail = np.asarray(self.env.get_avail_actions()).reshape(self.n_agents, self.n_actions).astype(bool)
        alive = ~(avail[:, 0] & ~avail[:, 1:].any(axis=1))
        views = {FULL_OBS: self.full_sight.observe()} if self.full_sight is not None else {}
        return {"obs": obs, "state": np.asarray(self.env.get_state(), dtype=np.float32).reshape(self.state_dim),
                "avail": avail, "views": views, "alive": alive}

    def reset(self, seed: int) -> dict:
        if self._reset_takes_seed:
            self.env.reset(seed=int(seed))
        else:
            self.env.reset()
        self.t = 0
        return {**self._observe(), "reward": 0.0, "terminal": False, "done": False, "won": False}

    def step(self, actions) -> dict:
        reward, terminated, info = self.env.step([int(a) for a in actions])
        info = info or {}
        self.t += 1
        won = bool(info.get("battle_won", False))
        observed = self._observe()
        cut = self.t >= self.episode_limit
        # A time-limit end: flagged by SMAC (continuing_episode), or the step count reached a limit with the
        # battle undecided (a win, or every agent dead, decides it).
        time_limit = bool(info.get("episode_limit", False)) or (
            (cut or self.t >= self.own_limit) and not won and observed["alive"].any())
        done = bool(terminated) or cut
        return {**observed, "reward": float(reward), "terminal": bool(terminated) and not time_limit, "done": done,
                "won": won and done}

    def close(self) -> None:
        # SMAC's MultiAgentEnv.close raises NotImplementedError; SMACv2's wrapper keeps the game in `.env`.
        for env in (self.env, getattr(self.env, "env", None)):
            try:
                if callable(getattr(env, "close", None)):
                    env.close()
                    return
            except NotImplementedError:
                continue


class FullSight:
    """SMAC's observation with no sight limit, at the ordinary observation's scale (module docstring)."""

    def __init__(self, env):
        self.env = env
        sizes = [env.get_obs_move_feats_size(), env.get_obs_enemy_feats_size(), env.get_obs_ally_feats_size()]
        self.move = int(np.prod(sizes[0]))
        self.enemies, self.enemy_feats = sizes[1]
        self.allies, self.ally_feats = sizes[2]

    @staticmethod
    def possible(env) -> str | None:
        """None when the view can be computed for `env`, else why not."""
        missing = [m for m in SMAC_METHODS if not callable(getattr(env, m, None))]
        if missing:
            return (f"its environment has no {', '.join(missing)} (SMAC's methods through which the unlimited-sight "
                    f"observation is computed)")
        return None

    @classmethod
    def of(cls, env, env_id: str) -> "FullSight":
        why = cls.possible(env)
        if why is not None:
            raise IncompatibleError(f"{env_id} cannot offer the unlimited-sight view 'full_obs': {why}.")
        return cls(env)

    def observe(self) -> np.ndarray:
        env = self.env
        n = env.get_env_info()["n_agents"]
        own_range = float(env.unit_sight_range(0))
        width, height = float(getattr(env, "map_x", 0) or 0), float(getattr(env, "map_y", 0) or 0)
        diagonal = float(np.hypot(width, height))
        far = 2.0 * diagonal if diagonal > 0 else 1e4  # beyond any distance on the map
        saved = env.__dict__.get("unit_sight_range")
        env.unit_sight_range = lambda agent_id: far
        try:
            obs = np.array(env.get_obs(), dtype=np.float32).reshape(n, -1)
        finally:
            if saved is None:
                del env.unit_sight_range
            else:
                env.unit_sight_range = saved
        scale = np.float32(far / own_range)
        start = self.move
        for count, width_ in ((self.enemies, self.enemy_feats), (self.allies, self.ally_feats)):
            block = obs[:, start:start + count * width_].reshape(n, count, width_)
            block[:, :, 1:4] *= scale
            obs[:, start:start + count * width_] = block.reshape(n, -1)
            start += count * width_
        return obs
