"""Stand-in for SMAClite (tests/stand_ins/README.md): importing it registers gymnasium environments
`smaclite/<map>-v0` with SMAClite's attributes and gymnasium's reset/step signatures."""

import gymnasium
import numpy as np

from ctde.envs.host.testenv import TinyBattle

MAPS = ("3m", "2s3z")


class SMACliteEnv(gymnasium.Env):
    def __init__(self, map_name: str = "3m"):
        self.battle = TinyBattle(seed=0, episode_limit=10_000)  # SMAClite has no episode limit of its own
        battle = self.battle
        self.n_agents, self.n_enemies, self.n_actions = battle.n_agents, battle.n_enemies, battle.n_actions
        self.obs_size = self.battle.get_obs_size()
        self.state_size = 3 * (self.n_agents + self.n_enemies)
        box = gymnasium.spaces.Box(-np.inf, np.inf, (self.obs_size,), np.float32)
        self.observation_space = gymnasium.spaces.Tuple([box] * self.n_agents)
        self.action_space = gymnasium.spaces.MultiDiscrete([self.n_actions] * self.n_agents)

    @property
    def enemies(self) -> list:
        return [e for e in range(self.n_enemies) if self.battle.enemy_hp[e] > 0]  # the living enemies

    def reset(self, seed=None, options=None):
        self.battle.reset(seed)
        return self.battle.get_obs(), {}

    def step(self, actions):
        reward, terminated, info = self.battle.step(actions)
        return self.battle.get_obs(), reward, terminated, False, info

    def get_state(self):
        return self.battle.get_state()

    def get_avail_actions(self):
        return self.battle.get_avail_actions()


for _map in MAPS:
    gymnasium.register(f"smaclite/{_map}-v0", entry_point=SMACliteEnv, kwargs={"map_name": _map},
                       disable_env_checker=True)
