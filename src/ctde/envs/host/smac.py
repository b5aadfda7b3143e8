"""StarCraft II SMAC (oxwhirl's `smac`) and SMAClite behind SMAC's methods, and SMAC's unlimited-sight view.

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

import importlib

import numpy as np

from ctde.errors import ConfigError, IncompatibleError

SMAC_METHODS = ("unit_sight_range", "get_obs_move_feats_size", "get_obs_enemy_feats_size", "get_obs_ally_feats_size")


def make_smac(map_name: str, seed: int):
    from ctde.envs.host import require_package

    require_package("smac")
    from smac.env import StarCraft2Env
    from smac.env.starcraft2.maps import get_map_params

    try:
        get_map_params(map_name)
    except Exception:  # noqa: BLE001 - smac raises KeyError or its own error for an unknown map
        from smac.env.starcraft2.maps import smac_maps

        names = sorted(smac_maps.get_smac_map_registry())
        raise ConfigError(f"Unknown SMAC map '{map_name}'. SMAC's maps: {', '.join(names)}.") from None
    return StarCraft2Env(map_name=map_name, seed=seed)


class SMACliteAsSMAC:
    """SMAClite's gym environment through SMAC's methods. SMAClite pays SMAC's reward scale (20 per episode) and
    has no episode limit of its own: the limit is SMAC's for the map (`ctde.envs.smax.SMAC_EPISODE_LIMITS`,
    passed in) or env.episode_limit. A win is every enemy dead."""

    def __init__(self, env, episode_limit: int):
        self.env = env.unwrapped if hasattr(env, "unwrapped") else env
        self.episode_limit = episode_limit
        self._obs = None

    def get_env_info(self) -> dict:
        env = self.env
        return {"n_agents": env.n_agents, "n_actions": env.n_actions, "obs_shape": env.obs_size,
                "state_shape": env.state_size, "episode_limit": self.episode_limit, "n_enemies": env.n_enemies}

    def reset(self, seed: int | None = None):
        result = self.env.reset(seed=seed)
        self._obs = result[0] if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict) \
            else result
        return self._obs

    def step(self, actions):
        result = self.env.step([int(a) for a in actions])
        if len(result) == 5:  # gymnasium: obs, reward, terminated, truncated, info
            obs, reward, terminated, truncated, info = result
            done = bool(terminated or truncated)
        else:
            obs, reward, done, info = result
        self._obs = obs
        return reward, done, {"battle_won": bool(done and len(self.env.enemies) == 0)}

    def get_obs(self):
        return self._obs

    def get_state(self):
        return self.env.get_state()

    def get_avail_actions(self):
        return self.env.get_avail_actions()

    def close(self):
        self.env.close()


def make_smaclite(map_name: str, seed: int, episode_limit: int):
    from ctde.envs.host import require_package

    require_package("smaclite")
    import smaclite  # noqa: F401 - registers the smaclite/<map>-v0 environments

    registries = []  # SMAClite registers its maps with gymnasium, older versions with gym (imported only then)
    for module_name in ("gymnasium", "gym"):
        try:
            gym_module = importlib.import_module(module_name)
        except ImportError:
            continue
        if f"smaclite/{map_name}-v0" in gym_module.envs.registry:
            return SMACliteAsSMAC(gym_module.make(f"smaclite/{map_name}-v0"), episode_limit)
        registries.append(gym_module.envs.registry)
    names = sorted({k[len("smaclite/"):-3] for registry in registries for k in registry if k.startswith("smaclite/")})
    raise ConfigError(f"Unknown SMAClite map '{map_name}'. SMAClite's maps: {', '.join(names) or 'none registered'}.")


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
