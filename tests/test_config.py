"""Typed configuration: overrides, validation before compilation, help text."""

import pytest

from ctde.config import TrainConfig, build_config, help_text, iter_options
from ctde.errors import ConfigError, IncompatibleError
from ctde.training.resolve import resolve


def test_section_shorthand_and_types():
    config = build_config(["env=smax:5m_vs_6m", "algo=vdn", "steps=2e6", "seeds=3", "env.sight_range=0",
                           "rollout.auto_reset=true", "algo.lr=1e-3"])
    assert config.env.id == "smax:5m_vs_6m"
    assert config.algo.name == "vdn"
    assert config.steps == 2_000_000 and isinstance(config.steps, int)
    assert config.seeds == 3
    assert config.env.sight_range == 0.0
    assert config.rollout.auto_reset is True
    assert config.algo.lr == pytest.approx(1e-3)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"Unknown option 'algo.lrr'.*Did you mean 'algo.lr'"):
        build_config(["algo.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"Unknown option 'sedes'.*'seeds'"):
        build_config(["sedes=3"])


def test_invalid_choice_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"algo.name='qmx' is not a valid choice; valid: iql, vdn, qmix, qplex.*'qmix'"):
        build_config(["algo=qmx"])


@pytest.mark.parametrize("override, message", [
    ("steps=ten", "expected an integer"),
    ("steps=1.5", "expected an integer, got a fraction"),
    ("algo.double_q=maybe", "expected true or false"),
    ("algo.lr=fast", "expected a number"),
    ("env.id.x=3", "is an option, not a section"),
    ("novalue", "Expected key=value"),
])
def test_malformed_values(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config([override])


def test_unknown_map_and_refused_maps_fail_before_compiling():
    with pytest.raises(ConfigError, match=r"Unknown SMAX map '5m_vs_7m'.*Did you mean"):
        resolve(build_config(["env=smax:5m_vs_7m"]))
    with pytest.raises(ConfigError, match="medivacs"):
        resolve(build_config(["env=smax:MMM2"]))
    with pytest.raises(ConfigError, match="terrain"):
        resolve(build_config(["env=smax:corridor"]))
    with pytest.raises(ConfigError, match="Unknown environment family 'smaxx'.*'smax'"):
        resolve(build_config(["env=smaxx:3m"]))


def test_impossible_combinations():
    with pytest.raises(ConfigError, match="shorter than the episode limit"):
        resolve(build_config(["env=smax:3m", "rollout.length=10"]))
    with pytest.raises(ConfigError, match="batch_size cannot exceed"):
        resolve(build_config(["algo.batch_size=64", "algo.buffer_size=32"]))
    with pytest.raises(ConfigError, match="sight_range applies to SMAX"):
        resolve(build_config(["env=toy:two_step", "env.sight_range=0"]))


def test_paradigm_needing_a_missing_view_is_refused(monkeypatch):
    from ctde.paradigms import PARADIGMS
    from ctde.paradigms.ctde import CTDE

    class NeedsFullSight(CTDE):
        name = "needs_full_sight"
        required_views = ("full_obs",)

    monkeypatch.setitem(PARADIGMS, "ctde", NeedsFullSight)
    with pytest.raises(IncompatibleError, match="needs the privileged view.*full_obs.*toy:two_step"):
        resolve(build_config(["env=toy:two_step"]))
    resolve(build_config(["env=smax:3m"]))  # SMAX offers it


def test_resolution_fills_map_dependent_defaults():
    easy = resolve(build_config(["env=smax:3m"]))
    hard = resolve(build_config(["env=smax:3s5z_vs_3s6z"]))
    assert easy.algo.epsilon_anneal_steps == 50_000
    assert hard.algo.epsilon_anneal_steps == 500_000
    assert easy.env.episode_limit == 60 and hard.env.episode_limit == 170
    assert easy.out.startswith("runs/smax_3m_qmix_ctde_")


def test_help_lists_every_option_with_type_and_default():
    text = help_text()
    for key, kind, default, meaning in iter_options(TrainConfig):
        assert key in text
        assert meaning and meaning in text
    assert "default: 'qmix'" in text


def test_preset_files_load_and_resolve():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        resolve(build_config(["env=smax:3m"], config_file=preset))
