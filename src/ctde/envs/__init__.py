"""Environment registry: `family:name` ids to environments in the functional interface of `envs.base`.

MPE (`ctde.envs.mpe`, `ctde.envs.push_forward`) is imported only when an mpe:* id is checked, built or listed: those
modules build JAX arrays when imported, which starts JAX's backend (on a machine with a GPU, JAX then takes its
memory), and every `import ctde` imports this package.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from ctde.config import EnvConfig, LTRConfig
from ctde.envs.base import FULL_OBS, Environment, EnvSpec, TimeStep
from ctde.envs.host import GRF_SCENARIOS, HOST_FAMILIES, MODULES, check_host_env, importable, is_host_family
from ctde.envs.host.environment import make_host_env
from ctde.envs.ltr import DESCRIPTION as LTR_DESCRIPTION
from ctde.envs.ltr import cached_ltr_env, check_config
from ctde.envs.smax import REFUSED_MAPS, SMAXEnv, check_map, map_info, map_names
from ctde.envs.toy import TOY_ENVS, make_toy
from ctde.errors import ConfigError

if TYPE_CHECKING:
    from ctde.envs.mpe import AdversaryPolicy

FAMILIES = {
    "mpe": "JaxMARL's MPE particle worlds (simple_tag, simple_push, simple_spread) and CTEDD's push_forward",
    "smax": "JaxMARL's SMAX (pure-JAX StarCraft micromanagement) with a heuristic enemy",
    "toy": "tiny environments for fast tests",
    "ltr": "Learning to Rank on LETOR/SVMlight files (ltr:<file or folder>): one agent per document, reward NDCG@k",
}
FAMILIES.update(HOST_FAMILIES)  # stepped on the host, trained by ctde.training.host

__all__ = ["FULL_OBS", "Environment", "EnvSpec", "TimeStep", "make_env", "split_id", "list_environments"]


def split_id(env_id: str) -> tuple[str, str]:
    if ":" not in env_id:
        raise ConfigError(f"env={env_id!r}: expected family:name, e.g. smax:3m or toy:hallway. "
                          f"Families: {', '.join(FAMILIES)}.")
    family, name = env_id.split(":", 1)
    if family not in FAMILIES:
        close = difflib.get_close_matches(family, list(FAMILIES), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown environment family '{family}'.{hint} Families: {', '.join(FAMILIES)}.")
    return family, name


def check_env(config: EnvConfig, ltr_options=None) -> None:
    """Validate an environment id without building it (cheap; used before anything compiles).

    `ltr_options`: the run's `ltr` section (an `LTRConfig`), checked for env=ltr:<path>; None = its defaults."""
    family, name = split_id(config.id)
    sized = ("hallway", "retreat")  # the toy environments that read env.toy_size
    if config.toy_size is not None and not (family == "toy" and name in sized):
        raise ConfigError(f"env.toy_size sizes {' and '.join(f'toy:{n}' for n in sized)}; {config.id} has no size "
                          f"parameter and would ignore it. Remove env.toy_size.")
    if family == "mpe":
        from ctde.envs.mpe import check_options

        check_options(name, config.sight_range, config.adversary_policy)
        return
    if config.continuous_actions:
        raise ConfigError(f"env.continuous_actions=true turns MPE's 5 discrete moves into 2-D forces (mpe:* "
                          f"scenarios only); {config.id} has its own fixed action space (toy:target_sum is "
                          f"continuous by itself). Remove env.continuous_actions.")
    if config.adversary_policy != "heuristic":
        raise ConfigError(f"env.adversary_policy={config.adversary_policy} configures the fixed side of MPE "
                          f"scenarios (mpe:simple_tag's prey, mpe:simple_push's adversary); {config.id} has none.")
    if family == "ltr":
        check_config(name, config.sight_range, config.episode_limit, ltr_options)
    elif family == "smax":
        check_map(name)
    elif is_host_family(family):
        check_host_env(family, name, config.sight_range)
    elif family == "toy":
        if name not in TOY_ENVS:
            close = difflib.get_close_matches(name, list(TOY_ENVS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"Unknown toy environment '{name}'.{hint} Valid: {', '.join(TOY_ENVS)}.")
        if config.episode_limit is not None:
            # Each toy task's length is part of its definition (hallway: toy_size + 3 steps); a limit would be ignored.
            raise ConfigError(f"env.episode_limit does not apply to {config.id}, whose episode length is part of the "
                              f"task (`ctde envs` lists it). Remove env.episode_limit.")


def make_env(config: EnvConfig, views: tuple[str, ...] = (), ltr_options=None) -> Environment:
    """Build the environment a config names, providing the privileged `views` a paradigm asked for.

    `ltr_options`: the run's `ltr` section (an `LTRConfig`) for env=ltr:<path>; None = its defaults."""
    check_env(config, ltr_options)
    family, name = split_id(config.id)
    if is_host_family(family):
        return make_host_env(family, name, config.sight_range, config.episode_limit, views)
    if family == "ltr":
        return cached_ltr_env(name, ltr_options, views)
    if family == "smax":
        return SMAXEnv(name, sight_range=config.sight_range, episode_limit=config.episode_limit,
                       smac_parity=config.smac_parity, views=views)
    if family == "mpe":
        return make_mpe(name, episode_limit=config.episode_limit, adversary_policy=config.adversary_policy,
                        sight_range=config.sight_range, views=views, continuous_actions=config.continuous_actions)
    return make_toy(name, config.toy_size, views, config.sight_range)


def make_mpe(name: str, episode_limit: int | None = None, adversary_policy: AdversaryPolicy = "heuristic",
             sight_range: float | None = None, views: tuple[str, ...] = (), continuous_actions: bool = False):
    """Build `mpe:<name>` (a JaxMARL scenario, `ctde.envs.mpe.MPEEnv`, or CTEDD's push_forward,
    `ctde.envs.push_forward.PushForward`), refusing options it cannot honour; `continuous_actions`: 2-D forces in
    [-1, 1] instead of the 5 discrete moves."""
    from ctde.envs.mpe import MPEEnv, check_options

    check_options(name, sight_range, adversary_policy, views)
    if name == "push_forward":
        from ctde.envs.push_forward import PushForward

        return PushForward(episode_limit=episode_limit, continuous_actions=continuous_actions)
    return MPEEnv(name, episode_limit=episode_limit, adversary_policy=adversary_policy,
                  continuous_actions=continuous_actions)


def list_environments() -> list[dict]:
    """One row per environment and map: id, agents, enemies, episode limit, views, description."""
    from ctde.envs.mpe import SCENARIO_NAMES, scenario_description

    rows = []
    for name in map_names():
        info = map_info(name)
        rows.append({"id": f"smax:{name}", "agents": info["allies"], "enemies": info["enemies"],
                     "episode_limit": info["episode_limit"], "views": FULL_OBS, "description": info["units"]})
    for name, why in REFUSED_MAPS.items():
        rows.append({"id": f"smax:{name}", "agents": None, "enemies": None, "episode_limit": None, "views": "",
                     "description": f"refused: {why}"})
    for name, description in TOY_ENVS.items():
        spec = make_toy(name, None, ()).spec
        rows.append({"id": f"toy:{name}", "agents": spec.n_agents, "enemies": 0, "episode_limit": spec.episode_limit,
                     "views": ",".join(spec.available_views), "description": description})
    for name in SCENARIO_NAMES:
        spec = make_mpe(name).spec
        rows.append({"id": f"mpe:{name}", "agents": spec.n_agents, "enemies": 0, "episode_limit": spec.episode_limit,
                     "views": "", "description": scenario_description(name)})
    rows.append({"id": "ltr:<path>", "agents": LTRConfig().docs_per_query, "enemies": 0, "episode_limit": 1,
                 "views": "", "description": LTR_DESCRIPTION})
    rows.extend(host_rows())
    return rows


def host_rows() -> list[dict]:
    """One row per host-side family (and GRF scenario), saying whether its package is installed here."""

    def installed(family: str) -> str:
        return "installed" if importable(MODULES[family]) else "not installed: docs/environments.md says how"

    rows = [{"id": "smac:<map>", "agents": None, "enemies": None, "episode_limit": None, "views": FULL_OBS,
             "description": f"host-side StarCraft II SMAC ({installed('smac')})"},
            {"id": "smaclite:<map>", "agents": None, "enemies": None, "episode_limit": None, "views": "",
             "description": f"host-side SMAClite ({installed('smaclite')})"}]
    for scenario, (agents, limit) in GRF_SCENARIOS.items():
        rows.append({"id": f"grf:{scenario}", "agents": agents, "enemies": None, "episode_limit": limit, "views": "",
                     "description": f"host-side Google Research Football, PTDE's features ({installed('grf')})"})
    rows.append({"id": "hostenv:<module>:<Class>", "agents": None, "enemies": None, "episode_limit": None,
                 "views": "", "description": "host-side: any class with SMAC's methods (e.g. "
                                             "hostenv:ctde.envs.host.testenv:TinyBattle, full_obs where it allows)"})
    return rows
