"""A small battle with SMAC's methods and observation layout, in plain NumPy: the host loop's test environment.

    ctde train env=hostenv:ctde.envs.host.testenv:TinyBattle algo=qmix

Two agents on a 6 x 6 grid fight one enemy. Actions as SMAC's: 0 no-op (the dead agent's only action), 1 stop,
2-5 move north, south, east, west (where the grid allows), 6 attack the enemy (within shooting range 2). Each
attack takes 1 of the enemy's 3 health; the enemy attacks the nearest agent in range with probability 1/2
(1 of an agent's 2 health), else steps towards it. Team reward: SMAC's shape, 20 x damage fraction / 2 plus 10
on a win. Episodes last at most 12 steps; the limit is reported as SMAC does with `continuing_episode=True`.

Observation (SMAC's layout and normalization): 4 move flags; per enemy [attackable, distance, dx, dy, health];
per other agent [visible, distance, dx, dy, health]; own health. Units are seen within sight range 3
(`unit_sight_range`), features divided by it, so the unlimited-sight view (`ctde.envs.host.adapter.FullSight`) works
here as on SMAC. State: per unit [health, x / 6, y / 6]. `reset(seed)` makes an episode reproducible.
"""

from __future__ import annotations

import numpy as np

MOVES = {2: (0, 1), 3: (0, -1), 4: (1, 0), 5: (-1, 0)}


class TinyBattle:
    map_x = map_y = 6
    n_agents, n_enemies = 2, 1
    agent_health, enemy_health = 2, 3
    shoot_range, sight = 2.0, 3.0

    def __init__(self, seed: int = 0, episode_limit: int = 12):
        self.episode_limit = episode_limit
        self.n_actions = 6 + self.n_enemies
        self._seed = seed
        self._episodes = 0
        self.reset()

    # -- SMAC's methods ---------------------------------------------------------------------------------

    def get_env_info(self) -> dict:
        return {"n_agents": self.n_agents, "n_actions": self.n_actions, "obs_shape": self.get_obs_size(),
                "state_shape": 3 * (self.n_agents + self.n_enemies), "episode_limit": self.episode_limit,
                "n_enemies": self.n_enemies}

    def get_obs_size(self) -> int:
        return self.get_obs_move_feats_size() + 5 * self.n_enemies + 5 * (self.n_agents - 1) + 1

    def get_obs_move_feats_size(self) -> int:
        return 4

    def get_obs_enemy_feats_size(self) -> tuple[int, int]:
        return self.n_enemies, 5

    def get_obs_ally_feats_size(self) -> tuple[int, int]:
        return self.n_agents - 1, 5

    def unit_sight_range(self, agent_id: int) -> float:
        return self.sight

    def reset(self, seed: int | None = None):
        self.rng = np.random.default_rng(self._seed * 100_003 + self._episodes if seed is None else seed)
        self._episodes += 1
        self.t = 0
        self.agent_pos = np.stack([self.rng.integers(0, 2, self.n_agents), self.rng.integers(0, 6, self.n_agents)], 1)
        self.enemy_pos = np.stack([self.rng.integers(4, 6, self.n_enemies), self.rng.integers(0, 6, self.n_enemies)], 1)
        self.agent_hp = np.full(self.n_agents, self.agent_health)
        self.enemy_hp = np.full(self.n_enemies, self.enemy_health)
        return self.get_obs(), self.get_state()

    def _can_move(self, pos, move) -> bool:
        x, y = pos + np.array(MOVES[move])
        return 0 <= x < self.map_x and 0 <= y < self.map_y

    def get_avail_agent_actions(self, agent_id: int) -> list[int]:
        if self.agent_hp[agent_id] <= 0:
            return [1] + [0] * (self.n_actions - 1)
        avail = [0, 1] + [int(self._can_move(self.agent_pos[agent_id], m)) for m in MOVES]
        for e in range(self.n_enemies):
            distance = np.linalg.norm(self.enemy_pos[e] - self.agent_pos[agent_id])
            avail.append(int(self.enemy_hp[e] > 0 and distance <= self.shoot_range))
        return avail

    def get_avail_actions(self) -> list[list[int]]:
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_obs_agent(self, agent_id: int) -> np.ndarray:
        obs = np.zeros(self.get_obs_size(), np.float32)
        if self.agent_hp[agent_id] <= 0:
            return obs
        sight = self.unit_sight_range(agent_id)
        avail = self.get_avail_agent_actions(agent_id)
        obs[:4] = avail[2:6]
        here = self.agent_pos[agent_id]
        units = [(self.enemy_pos[e], self.enemy_hp[e] / self.enemy_health, avail[6 + e]) for e in range(self.n_enemies)]
        units += [(self.agent_pos[a], self.agent_hp[a] / self.agent_health, 1) for a in range(self.n_agents)
                  if a != agent_id]
        for k, (pos, health, flag) in enumerate(units):
            distance = float(np.linalg.norm(pos - here))
            if health > 0 and distance < sight:
                dx, dy = pos - here
                obs[4 + 5 * k: 9 + 5 * k] = [flag, distance / sight, dx / sight, dy / sight, health]
        obs[-1] = self.agent_hp[agent_id] / self.agent_health
        return obs

    def get_obs(self) -> list[np.ndarray]:
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_state(self) -> np.ndarray:
        rows = [[hp / self.agent_health, x / self.map_x, y / self.map_y] for hp, (x, y) in
                zip(self.agent_hp, self.agent_pos)]
        rows += [[hp / self.enemy_health, x / self.map_x, y / self.map_y] for hp, (x, y) in
                 zip(self.enemy_hp, self.enemy_pos)]
        return np.asarray(rows, np.float32).reshape(-1) * (np.repeat(np.concatenate(
            [self.agent_hp, self.enemy_hp]) > 0, 3))

    def step(self, actions):
        avail = self.get_avail_actions()
        damage = 0
        for i, action in enumerate(int(a) for a in actions):
            if not avail[i][action]:
                raise ValueError(f"agent {i}: action {action} is not available ({avail[i]})")
            if action in MOVES:
                self.agent_pos[i] = self.agent_pos[i] + np.array(MOVES[action])
            elif action >= 6 and self.enemy_hp[action - 6] > 0:
                self.enemy_hp[action - 6] -= 1
                damage += 1
        for e in range(self.n_enemies):
            living = np.flatnonzero(self.agent_hp > 0)
            if self.enemy_hp[e] <= 0 or living.size == 0:
                continue
            distances = np.linalg.norm(self.agent_pos[living] - self.enemy_pos[e], axis=1)
            target = living[np.argmin(distances)]
            if distances.min() <= self.shoot_range and self.rng.random() < 0.5:
                self.agent_hp[target] -= 1
            elif distances.min() > 1:
                step = np.sign(self.agent_pos[target] - self.enemy_pos[e])
                axis = self.rng.integers(0, 2) if step.all() else int(np.flatnonzero(step)[0])
                self.enemy_pos[e, axis] += step[axis]
        self.t += 1
        won = bool((self.enemy_hp <= 0).all())
        lost = bool((self.agent_hp <= 0).all())
        reward = 10.0 * damage / (self.n_enemies * self.enemy_health) + (10.0 if won else 0.0)
        info = {"battle_won": won}
        terminated = won or lost
        if not terminated and self.t >= self.episode_limit:
            terminated = True
            info["episode_limit"] = True
        return reward, terminated, info

    def close(self) -> None:
        pass
