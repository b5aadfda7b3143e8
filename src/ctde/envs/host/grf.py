"""Google Research Football academy scenarios behind SMAC's methods, with PTDE's features (its Table 8).

gfootball's `create_environment(representation="raw")` gives one dictionary per controlled player; the features
are computed from it here (positions are GRF's pitch coordinates, x in [-1, 1], y in [-0.42, 0.42]; "speed" is
GRF's per-step movement direction vector):

observation of agent i (the left player it controls, `active`):
    own absolute position (2) and speed (2);
    every other left player's position and speed relative to agent i's (4 each, in team order);
    every right player's position and speed relative to agent i's (4 each);
    the ball's absolute position (3) and owning team one-hot (none, left, right: 3).
state:
    per left player, then per right player: absolute position (2), speed (2), tiredness (1), role one-hot (10);
    the ball's position (3), speed (3), rotation (3), owning team one-hot (3) and owner one-hot (left players,
    right players, nobody).

Rewards: GRF's `scoring` reward (+1 for a goal of ours, -1 for one against); `battle_won` is a goal of ours. An
episode ends where the academy scenario ends it (a goal, the ball out of play or lost to the opponents) or after
150 steps (the limit of the CDS / CADP GRF wrappers). Every one of GRF's 19 actions is always available; no player
dies. `reset(seed)` sets GRF's `game_engine_random_seed` for that episode.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

from ctde.envs.host import GRF_SCENARIOS, require_package

N_ROLES = 10  # GRF's player roles (GK, CB, LB, RB, DM, CM, LM, RM, AM, CF)
N_ACTIONS = 19  # GRF's default action set


def _one_hot(index: int, size: int) -> np.ndarray:
    out = np.zeros(size, np.float32)
    out[index] = 1.0
    return out


class GRFEnv:
    def __init__(self, scenario: str, seed: int = 0):
        require_package("grf")
        self.scenario = scenario
        self.n_agents, self.episode_limit = GRF_SCENARIOS[scenario]
        # gym 0.25.2 (gfootball's pin, chosen on purpose) prints an "unmaintained" banner on import and GRF's
        # wrappers warn about gym's old step API: once per worker process, so they are kept off the terminal.
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import gfootball.env as football

            self._env = football.create_environment(
                env_name=scenario, representation="raw", rewards="scoring", render=False,
                number_of_left_players_agent_controls=self.n_agents,
                other_config_options={"game_engine_random_seed": int(seed)})
        self._config = self._env.unwrapped._config  # noqa: SLF001 - where GRF reads its engine seed at reset
        self._raw = self._env.reset()
        self.n_left = len(self._raw[0]["left_team"])
        self.n_right = len(self._raw[0]["right_team"])

    def get_env_info(self) -> dict:
        units = self.n_left + self.n_right
        return {"n_agents": self.n_agents, "n_actions": N_ACTIONS,
                "obs_shape": 4 + 4 * (self.n_left - 1) + 4 * self.n_right + 6,
                "state_shape": units * (5 + N_ROLES) + 12 + units + 1, "episode_limit": self.episode_limit,
                "n_enemies": self.n_right}

    def reset(self, seed: int | None = None):
        if seed is not None:
            self._config.set_scenario_value("game_engine_random_seed", int(seed))
        self._raw = self._env.reset()
        return self.get_obs(), self.get_state()

    def step(self, actions):
        self._raw, reward, done, info = self._env.step([int(a) for a in actions])
        reward = float(np.asarray(reward).reshape(-1)[0])
        return reward, bool(done), {"battle_won": bool(info.get("score_reward", 0) > 0)}

    @staticmethod
    def _ball_team(raw: dict) -> np.ndarray:
        return _one_hot(int(raw["ball_owned_team"]) + 1, 3)  # -1 nobody, 0 left, 1 right

    def get_obs(self) -> list[np.ndarray]:
        observations = []
        for raw in self._raw:
            # The player GRF says this agent controls (in academy_3_vs_1_with_keeper its reset observation names
            # player 0, the keeper, for the first agent, and player 1 from the first step on).
            me = int(raw["active"])
            left, left_speed = np.asarray(raw["left_team"]), np.asarray(raw["left_team_direction"])
            right, right_speed = np.asarray(raw["right_team"]), np.asarray(raw["right_team_direction"])
            here, speed = left[me], left_speed[me]
            mates = [k for k in range(self.n_left) if k != me]
            observations.append(np.concatenate([
                here, speed,
                np.concatenate([left[mates] - here, left_speed[mates] - speed], axis=1).reshape(-1),
                np.concatenate([right - here, right_speed - speed], axis=1).reshape(-1),
                np.asarray(raw["ball"]), self._ball_team(raw)]).astype(np.float32))
        return observations

    def get_state(self) -> np.ndarray:
        raw = self._raw[0]
        teams = []
        for side in ("left", "right"):
            positions, speeds = np.asarray(raw[f"{side}_team"]), np.asarray(raw[f"{side}_team_direction"])
            tired = np.asarray(raw[f"{side}_team_tired_factor"])[:, None]
            roles = np.stack([_one_hot(int(r), N_ROLES) for r in raw[f"{side}_team_roles"]])
            teams.append(np.concatenate([positions, speeds, tired, roles], axis=1).reshape(-1))
        owner = self.n_left + self.n_right  # nobody
        if int(raw["ball_owned_team"]) >= 0:
            owner = int(raw["ball_owned_player"]) + (self.n_left if int(raw["ball_owned_team"]) == 1 else 0)
        return np.concatenate([*teams, np.asarray(raw["ball"]), np.asarray(raw["ball_direction"]),
                               np.asarray(raw["ball_rotation"]), self._ball_team(raw),
                               _one_hot(owner, self.n_left + self.n_right + 1)]).astype(np.float32)

    def get_avail_actions(self) -> list[list[int]]:
        return [[1] * N_ACTIONS for _ in range(self.n_agents)]

    def close(self) -> None:
        self._env.close()
