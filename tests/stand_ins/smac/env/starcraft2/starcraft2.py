"""StarCraft2Env as smac's: built with a map name and a seed (seeded once, at start), `reset()` without one."""

from ctde.envs.host.testenv import TinyBattle
from smac.env.starcraft2.maps import get_map_params


class StarCraft2Env(TinyBattle):
    def __init__(self, map_name: str = "3m", seed: int | None = None, **kwargs):
        self.map_name = map_name
        super().__init__(seed=seed or 0, episode_limit=get_map_params(map_name)["limit"])

    def reset(self):
        return super().reset()
