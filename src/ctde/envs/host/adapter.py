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
"""

from __future__ import annotations

import inspect

import numpy as np

from ctde.errors import ConfigError

FULL_OBS = "full_obs"  # the name `ctde.envs.base.FULL_OBS` gives the unlimited-sight view (no JAX import here)


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
            from ctde.envs.host.smac import FullSight

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
        from ctde.envs.host.smac import FullSight

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
