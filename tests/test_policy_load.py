"""Loading an exported policy checks it against its policy.json before anything runs (issue 36, point 4).

Every built-in network declares its parameter tree (`PolicyNetwork.init`); the policy each paradigm exports (for
every network it can export, with its size options) has exactly that tree and loads; edited sizes, seeds, action
types, per-agent counts and foreign parameters are each refused with a `CheckpointError` that names the field. The
same mismatches from the command line (exit 2, no traceback) are cases of the bad-input catalogue.
"""

from __future__ import annotations

import json
import time

import flax.serialization
import jax
import numpy as np
import pytest

from ctde.config import build_config
from ctde.errors import CheckpointError
from ctde.policy import expected_shapes, load_policy
from ctde.training.resolve import resolve
from ctde.training.runner import build_program, export, seed_keys

# (overrides, the network exported): every registered built-in network, and the options that size them.
EXPORTS = {
    "rnn_agent": (["paradigm=ctde", "algo=vdn", "env=toy:hallway"], "rnn_agent"),
    "rnn_agent_quantiles": (["paradigm=ctde", "algo=dmix", "env=toy:hallway"], "rnn_agent"),
    "rnn_agent_per_agent": (["paradigm=ctde", "algo=vdn", "algo.share_parameters=false", "env=toy:hallway"],
                            "rnn_agent_per_agent"),
    "rnn_agent_continuous": (["paradigm=ctde", "algo=maddpg", "env=toy:target_sum"], "rnn_agent"),
    "igm_da_student": (["paradigm=igm_da", "algo=vdn", "env=toy:hallway"], "rnn_agent"),
    "ctds_student": (["paradigm=ctds", "algo=vdn", "env=toy:hallway"], "rnn_agent"),
    "cadp": (["paradigm=cadp", "algo=vdn", "env=toy:hallway"], "cadp_decentralized"),
    "cadp_residual_quantiles": (["paradigm=cadp", "algo=dmix", "cadp.residual=true", "cadp.heads=2",
                                 "cadp.head_dim=8", "env=toy:hallway"], "cadp_decentralized"),
    "ptde": (["paradigm=ptde", "algo=qmix", "env=toy:hallway"], "ptde_student"),
    "ctedd": (["paradigm=ctedd", "algo=maddpg", "ctedd.message_bits=3", "env=toy:hallway"], "ctedd_local"),
}


def _export(directory, overrides, seeds=2):
    """The policy a run of `overrides` exports (the run's own export path), from parameters with the tree and
    shapes of the paradigm's `init` (`jax.eval_shape`: running it would cost seconds) and values 0: loading reads
    no value."""
    program = build_program(resolve(build_config([*overrides, f"seeds={seeds}"])))
    shapes = jax.eval_shape(jax.vmap(program.paradigm.init), seed_keys(program.config))
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    export(directory, program=program, agent_params=params)
    return directory / "policy"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {name: _export(root / name, overrides) for name, (overrides, _) in EXPORTS.items()}


def _spec(policy_dir):
    return json.loads((policy_dir / "policy.json").read_text())


def _edited(tmp_path, policy_dir, **fields):
    """A copy of an exported policy whose policy.json has `fields` changed."""
    import shutil

    copy = tmp_path / "edited"
    shutil.copytree(policy_dir, copy)
    (copy / "policy.json").write_text(json.dumps({**_spec(policy_dir), **fields}))
    return copy


@pytest.mark.parametrize("name", list(EXPORTS))
def test_every_exported_network_has_the_tree_its_spec_declares_and_loads(exported, name):
    policy_dir = exported[name]
    spec = _spec(policy_dir)
    assert spec["network"] == EXPORTS[name][1]
    params = flax.serialization.msgpack_restore((policy_dir / "params.msgpack").read_bytes())
    shapes = {"/".join(str(k.key) for k in path): leaf.shape[1:]
              for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert shapes == expected_shapes(spec)
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(params))
    tic = time.perf_counter()
    policy = load_policy(policy_dir)
    assert time.perf_counter() - tic < 5.0  # abstract: no parameter is computed (usually well under a second)
    assert policy.n_seeds == 2


@pytest.mark.parametrize("name, fields, message", [
    ("rnn_agent", {"hidden_dim": 7}, r"hidden_dim: policy\.json says 7, the parameters were made for \d+"),
    ("rnn_agent", {"n_actions": 6}, r"n_actions: policy\.json says 6, the parameters were made for 4"),
    ("rnn_agent", {"n_agents": 3}, r"n_agents: policy\.json says 3, the parameters were made for 2"),
    ("rnn_agent", {"seeds": 3}, r"seeds: policy\.json says 3, the parameters hold 2 seed"),
    ("rnn_agent", {"quantiles": 4}, r"quantiles: policy\.json says 4, the parameters were made for 0"),
    ("rnn_agent_quantiles", {"quantiles": 0}, r"quantiles: policy\.json says 0, the parameters were made for \d+"),
    ("rnn_agent", {"continuous_actions": True}, r"continuous_actions: policy\.json says true"),
    ("rnn_agent_continuous", {"continuous_actions": False}, r"continuous_actions: policy\.json says false"),
    ("rnn_agent", {"inputs": ["obs", "state"]}, r"inputs: policy\.json says"),
    ("rnn_agent", {"network": "cadp_decentralized", "heads": 4, "head_dim": 32, "residual": False},
     r"network: policy\.json says cadp_decentralized, whose parameters these are not"),
    ("cadp", {"residual": True}, r"residual: policy\.json says true, the parameters were made for false"),
    ("cadp_residual_quantiles", {"residual": False}, r"residual: policy\.json says false, the parameters were made"),
    ("ptde", {"z_dim": 5}, r"z_dim: policy\.json says 5, the parameters were made for \d+"),
    ("ctedd", {"message_bits": 2}, r"message_bits: policy\.json says 2, the parameters were made for 3"),
    ("ctedd", {"message_bits": "three"}, r"ctedd_local cannot be built|message_bits"),
])
def test_a_mismatch_is_refused_naming_the_field(exported, tmp_path, name, fields, message):
    with pytest.raises(CheckpointError, match=message + r".*ctde export RUN"):
        load_policy(_edited(tmp_path, exported[name], **fields))


def test_per_agent_networks_for_fewer_agents_are_refused(exported, tmp_path):
    copy = _edited(tmp_path, exported["rnn_agent_per_agent"])
    params = flax.serialization.msgpack_restore((copy / "params.msgpack").read_bytes())
    fewer = jax.tree.map(lambda leaf: np.asarray(leaf)[:, :1], params)
    (copy / "params.msgpack").write_bytes(flax.serialization.to_bytes(fewer))
    with pytest.raises(CheckpointError, match=r"n_agents: policy\.json says 2, the parameters were made for 1"):
        load_policy(copy)


def test_a_network_without_declared_parameters_gets_the_seed_check(exported, tmp_path):
    from ctde.policy import POLICY_NETWORKS, PolicyNetwork, register_network

    register_network("undeclared_for_test")(lambda spec: PolicyNetwork(POLICY_NETWORKS["rnn_agent"](spec).receiver))
    try:
        copy = _edited(tmp_path, exported["rnn_agent"], network="undeclared_for_test")
        assert load_policy(copy).n_seeds == 2
        with pytest.raises(CheckpointError, match=r"seeds: policy\.json says 1, the parameters hold 2"):
            load_policy(_edited(tmp_path / "b", copy, seeds=1))
    finally:
        POLICY_NETWORKS.pop("undeclared_for_test")
