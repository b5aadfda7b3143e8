"""The declarations that pair paradigms with backbones, and the configuration they shape, agree with each other."""

from __future__ import annotations

import typing

from ctde.algos import BACKBONES
from ctde.config import ALGORITHMS, AlgoConfig, TrainConfig, _field_types, from_dict, to_dict
from ctde.paradigms import PARADIGMS
from ctde.paradigms.base import ALL_FAMILIES
from ctde.training.resolve import _meets


def test_algo_name_choices_are_the_registered_backbones():
    # config sits below algos, so it keeps the names; the registry must have a learner for each, and no more.
    assert tuple(BACKBONES) == ALGORITHMS
    assert typing.get_args(_field_types(AlgoConfig)["name"]) == ALGORITHMS


def test_backbone_declarations_are_known():
    sections = set(to_dict(TrainConfig()))
    for name, entry in BACKBONES.items():
        assert entry.capabilities.family in ALL_FAMILIES, name
        assert entry.section is None or entry.section in sections, name
        assert not entry.mixer or entry.capabilities.family == "value_decomposition", name


def test_every_paradigm_has_a_backbone_and_its_section():
    config = to_dict(TrainConfig())
    for name, paradigm in PARADIGMS.items():
        assert paradigm.name == name
        assert any(_meets(paradigm, entry) for entry in BACKBONES.values()), name
        assert set(paradigm.reasons) <= {"backbone", "mixer", "igm", "state"}, name
        if paradigm.options is not None:
            assert config[name] == to_dict(paradigm.options()), name


def test_saved_configuration_keeps_its_sections():
    # Configurations saved before the paradigms registered their own sections load, and round-trip.
    config = to_dict(TrainConfig())
    assert list(config)[:6] == ["env", "ltr", "algo", "ppo", "maddpg", "paradigm"]
    assert {"ptde", "cadp", "igm_da", "ctds", "ctedd"} <= set(config)
    assert list(config["ctedd"]) == ["message_bits", "message_estimator", "entropy_coef", "global_hidden",
                                     "head_hidden", "local_hidden", "distill_episodes", "holdout", "distill_steps",
                                     "distill_batch", "distill_lr", "distill_log_every", "iterations_per_batch"]
    assert (config["ptde"]["distill_episodes"], config["ptde"]["distill_steps"], config["ptde"]["distill_batch"],
            config["ptde"]["distill_lr"], config["ptde"]["distill_log_every"]) == (100, 500_000, 2048, 1e-4, 1000)
    assert (config["ctedd"]["distill_episodes"], config["ctedd"]["distill_steps"], config["ctedd"]["distill_batch"],
            config["ctedd"]["distill_lr"], config["ctedd"]["distill_log_every"]) == (400, 3000, 256, 1e-3, 100)
    changed = from_dict({"paradigm": {"name": "ctedd"}, "ctedd": {"distill_batch": 64}, "cadp": {"alpha": 0.3}})
    assert changed.ctedd.distill_batch == 64 and changed.cadp.alpha == 0.3
    assert from_dict(to_dict(changed)) == changed
