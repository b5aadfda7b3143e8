"""The trainer's side of a host environment (imports JAX; the workers never import this module).

`make_env` returns a `HostEnvironment` for a host family: its `spec`, read from one environment built here, and
`host`, the factory the host loop's workers build theirs with. It also implements the functional interface with
zeros, so code that only needs shapes (a backbone laying out its replay buffer) runs unchanged; the host loop
(`ctde.training.host`) never steps it.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from ctde.envs.base import EnvSpec, TimeStep
from ctde.envs.host import HostEnvFactory, check_host_env
from ctde.envs.smax import SMAC_EPISODE_LIMITS


@functools.lru_cache(maxsize=16)
def _info(factory: HostEnvFactory) -> dict:
    env = factory.make(0)
    try:
        return env.info()
    finally:
        env.close()


class HostEnvironment:
    has_sight_range = False

    def __init__(self, factory: HostEnvFactory):
        self.host = factory
        info = _info(factory)
        self.views = factory.views
        self.spec = EnvSpec(id=factory.env_id, n_agents=info["n_agents"], n_actions=info["n_actions"],
                            obs_dim=info["obs_dim"], state_dim=info["state_dim"],
                            episode_limit=info["episode_limit"], available_views=dict(info["views"]),
                            n_enemies=info["n_enemies"], description="host-side environment")

    def timestep_of(self, env_state) -> TimeStep:
        s = self.spec
        return TimeStep(obs=jnp.zeros((s.n_agents, s.obs_dim)), state=jnp.zeros((s.state_dim,)),
                        avail=jnp.ones((s.n_agents, s.n_actions), bool), reward=jnp.float32(0.0),
                        terminal=jnp.asarray(False), done=jnp.asarray(False), won=jnp.asarray(False),
                        views={v: jnp.zeros((s.n_agents, s.available_views[v])) for v in self.views},
                        alive=jnp.ones((s.n_agents,), bool))

    def reset(self, key):
        return jnp.int32(0), self.timestep_of(None)

    def step(self, key, env_state, actions):
        return env_state, self.timestep_of(env_state)


def make_host_env(family: str, name: str, sight_range, episode_limit, views: tuple[str, ...] = ()
                  ) -> HostEnvironment:
    check_host_env(family, name, sight_range, views)
    if episode_limit is None and family == "smaclite":
        episode_limit = SMAC_EPISODE_LIMITS.get(name, 150)
    return HostEnvironment(HostEnvFactory(family, name, tuple(views), episode_limit))
