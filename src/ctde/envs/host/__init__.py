"""Host-side environments: Python environments stepped outside JAX (StarCraft II SMAC, SMAClite, Google Research
Football, or any class with SMAC's methods), trained by the host loop (`ctde.training.host`).

Ids:
    smac:<map>                     oxwhirl's SMAC (StarCraft II + `pip install git+https://github.com/oxwhirl/smac.git`)
    smaclite:<map>                 SMAClite (`pip install git+https://github.com/uoe-agents/smaclite.git`)
    grf:<academy scenario>         Google Research Football (`make grf`)
    hostenv:<module>:<Class>       any class with SMAC's methods (`get_obs`, `get_state`, `get_avail_actions`,
                                   `get_env_info`, `reset`, `step` -> reward, terminated, info with `battle_won`)

Everything in this package is plain Python and NumPy: the environment workers import it without JAX (see
`ctde.envs.host.workers`), and a package is imported only when its id is used.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import importlib.util
from dataclasses import dataclass

from ctde.envs.host.adapter import SMACAdapter
from ctde.errors import ConfigError, IncompatibleError

HOST_FAMILIES = {
    "smac": "StarCraft II SMAC maps through oxwhirl's smac package (host-side; needs StarCraft II)",
    "smaclite": "SMAClite maps (pure-Python SMAC; host-side)",
    "grf": "Google Research Football academy scenarios with PTDE's features (host-side; `make grf`)",
    "hostenv": "any class with SMAC's methods: hostenv:<module>:<Class> (host-side)",
}

INSTALL = {
    "smac": "oxwhirl's smac is not on PyPI (PyPI's `smac` is an unrelated AutoML tool): `pip install "
            "git+https://github.com/oxwhirl/smac.git`, then install the StarCraft II binary and SMAC's maps and set "
            "SC2PATH (https://github.com/oxwhirl/smac#installing-starcraft-ii)",
    "smaclite": "SMAClite is not on PyPI: `pip install git+https://github.com/uoe-agents/smaclite.git`",
    "grf": "run `make grf` in the ctde checkout (system packages, then `pip install --no-build-isolation "
           "gfootball==2.10.2` with gym==0.25.2)",
}
MODULES = {"smac": "smac.env", "smaclite": "smaclite", "grf": "gfootball.env"}

# The academy scenarios CADP and PTDE report: scenario -> (agents the learners control, episode limit).
GRF_SCENARIOS = {
    "academy_3_vs_1_with_keeper": (3, 150),
    "academy_counterattack_easy": (4, 150),
    "academy_counterattack_hard": (4, 150),
    "academy_run_pass_and_shoot_with_keeper": (2, 150),
}
GRF_ALIASES = {name[len("academy_"):]: name for name in GRF_SCENARIOS}  # grf:3_vs_1_with_keeper works too


def is_host_family(family: str) -> bool:
    return family in HOST_FAMILIES


def importable(module: str) -> bool:
    """Whether dotted `module` can be imported (its whole path: PyPI's unrelated `smac` has no smac.env). Finding a
    submodule imports its package, whose banners (gym's, under gfootball) are kept off the terminal."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_package(family: str) -> None:
    """ConfigError naming the install step if `family`'s package is not importable."""
    module = MODULES.get(family)
    if module is not None and not importable(module):
        raise ConfigError(f"env={family}:... needs the `{module.split('.')[0]}` package, which is not installed. "
                          f"{INSTALL[family][0].upper()}{INSTALL[family][1:]}.")


def grf_scenario(name: str) -> str:
    """The full academy scenario name of `grf:<name>`, or ConfigError listing the valid ones."""
    name = GRF_ALIASES.get(name, name)
    if name not in GRF_SCENARIOS:
        valid = list(GRF_SCENARIOS) + list(GRF_ALIASES)
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"Unknown GRF scenario '{name}'.{hint} Supported (the academy scenarios CADP and PTDE "
                          f"report): {', '.join(GRF_SCENARIOS)}.")
    return name


def split_class_path(name: str) -> tuple[str, str]:
    module, _, cls = name.rpartition(":")
    if not module or not cls:
        raise ConfigError(f"env=hostenv:{name}: expected hostenv:<module>:<Class>, e.g. "
                          f"hostenv:ctde.envs.host.testenv:TinyBattle.")
    return module, cls


def check_host_env(family: str, name: str, sight_range, views: tuple[str, ...] = ()) -> None:
    """Validate a host environment id and options without building anything (cheap; before anything compiles)."""
    if sight_range is not None:
        raise ConfigError(f"env.sight_range is not available on {family}:{name}: host-side environments keep their "
                          f"package's own sight range. Remove env.sight_range (it applies to smax:* maps and "
                          f"toy:retreat).")
    if family == "grf":
        grf_scenario(name)
    elif family == "hostenv":
        module, cls = split_class_path(name)
        if not importable(module):
            raise ConfigError(f"env=hostenv:{name}: module '{module}' cannot be imported. Check the module path (it "
                              f"must be importable by the Python running ctde).")
    elif not name:
        raise ConfigError(f"env={family}: expected {family}:<map>, e.g. {family}:3m.")
    require_package(family)
    if views and family in ("smaclite", "grf"):
        refuse_views(f"{family}:{name}", views, FULL_SIGHT_REFUSALS[family])


FULL_SIGHT_REFUSALS = {
    "smaclite": "SMAClite's sight range is a module constant (AGENT_SIGHT_RANGE) used both to find the visible "
                "units and in assertions on them, so no adapter can widen it for one observation",
    "grf": "GRF's observations have no sight limit to lift (every player is always seen); IGM-DA and CTDS distil "
           "an unlimited-sight teacher, which is the same network here",
}


def refuse_views(env_id: str, views: tuple[str, ...], why: str) -> None:
    raise IncompatibleError(f"{env_id} cannot offer the view(s) {list(views)} that the paradigm needs: {why}. "
                            f"Use paradigm=ctde, cadp or ptde there, or a smax:<map> for IGM-DA and CTDS.")


@dataclass(frozen=True)
class HostEnvFactory:
    """Everything a worker process needs to build one environment (picklable, no JAX): the id, the views the run
    asked for, an episode-limit override, and the base seed of this worker's environment."""

    family: str
    name: str
    views: tuple[str, ...] = ()
    episode_limit: int | None = None

    @property
    def env_id(self) -> str:
        return f"{self.family}:{self.name}"

    def make_raw(self, seed: int):
        """The environment with SMAC's methods (the package's own, or our shim around it)."""
        if self.family == "smac":
            from ctde.envs.host.smac import make_smac

            return make_smac(self.name, seed)
        if self.family == "smaclite":
            from ctde.envs.host.smac import make_smaclite

            return make_smaclite(self.name, seed, self.episode_limit)
        if self.family == "grf":
            from ctde.envs.host.grf import GRFEnv

            return GRFEnv(grf_scenario(self.name), seed=seed)
        module, cls = split_class_path(self.name)
        try:
            target = getattr(importlib.import_module(module), cls)
        except AttributeError:
            raise ConfigError(f"env=hostenv:{self.name}: module '{module}' has no '{cls}'.") from None
        try:
            return target(seed=seed)
        except TypeError:
            return target()

    def make(self, seed: int):
        """The adapter: our step/reset contract in NumPy arrays (`ctde.envs.host.adapter.SMACAdapter`)."""
        return SMACAdapter(self.make_raw(seed), self.env_id, views=self.views, episode_limit=self.episode_limit)
