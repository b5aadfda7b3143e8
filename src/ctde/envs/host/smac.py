"""StarCraft II SMAC (oxwhirl's `smac`) and SMAClite behind SMAC's methods (the unlimited-sight view of an
environment with SMAC's methods, `FullSight`, is in `ctde.envs.host.adapter`).
"""

from __future__ import annotations

import importlib

from ctde.envs.host import require_package
from ctde.errors import ConfigError


def make_smac(map_name: str, seed: int):
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
