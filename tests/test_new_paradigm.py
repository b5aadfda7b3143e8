"""Adding a paradigm is one file: this test file defines a small paradigm of its own (recurrent agents of their
own width and a squared-score penalty, with an options section and an exported network registered here) and,
with no edit anywhere else in ctde, trains it, evaluates it, exports it, loads the policy and audits it.

docs/extending.md ("Adding a paradigm") walks through the same steps."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ctde.audit import audit_policy
from ctde.config import build_config, from_dict, help_text, load_yaml, option
from ctde.errors import ConfigError, IncompatibleError, require
from ctde.nets.rnn import RNNAgent, agent_inputs
from ctde.paradigms.base import Paradigm, ParadigmOutput, register_paradigm, unregister_paradigm
from ctde.policy import AgentStep, load_policy, recurrent_agent_step, register_network
from ctde.testing.planted_leaks import ReceiverReadsTeammateObs, _as
from ctde.training.resolve import resolve
from ctde.training.runner import evaluate

# ---------------------------------------------------------------------------------------------------------
# The paradigm: everything ctde needs to know about it is here.


@dataclass
class TinyAuxOptions:
    """Options of paradigm=tiny_aux (a test's own paradigm)."""

    width: int = option(16, "width of its agents' recurrent network")
    penalty: float = option(0.01, "weight of the mean squared action score, its auxiliary loss")


class TinyAux(Paradigm):
    name = "tiny_aux"
    summary = "a test's recurrent agents with a squared-score penalty"
    options = TinyAuxOptions
    backbone_families = ("value_decomposition", "policy_gradient")  # not MADDPG
    collect_model = learned_model = select_model = export_model = "agent"
    eval_models = ("agent",)
    diagnostics = ("score_penalty",)

    @classmethod
    def resolve_options(cls, config):
        require([(config.tiny_aux.width >= 1, "tiny_aux.width must be positive"),
                 (config.tiny_aux.penalty >= 0, "tiny_aux.penalty must be non-negative")])
        if config.algo.value_quantiles:
            raise IncompatibleError(f"paradigm=tiny_aux has one value per action; algo={config.algo.name} learns "
                                    f"quantiles. Use another backbone.")

    def __init__(self, config, spec):
        super().__init__(config, spec)
        self.width = config.tiny_aux.width
        self.penalty = config.tiny_aux.penalty
        self.network = RNNAgent(self.width, spec.n_actions)
        self.input_dim = spec.obs_dim + spec.n_actions + spec.n_agents

    def init(self, key):
        n = self.spec.n_agents
        x = jnp.zeros((1, n, self.input_dim))
        return {"agent": self.network.init(key, self.initial_carry(()), x, jnp.zeros((1, n), bool))}

    def initial_carry(self, batch_shape):
        return jnp.zeros((*batch_shape, self.spec.n_agents, self.width))

    def apply(self, params, carry, inputs, rng=None):
        x = agent_inputs(inputs.obs, inputs.last_action, self.spec.n_actions)
        resets = jnp.broadcast_to(inputs.reset[..., None], x.shape[:-1])
        carry, scores = self.network.apply(params["agent"], carry, x, resets)
        return carry, ParadigmOutput(scores={"agent": scores})

    def auxiliary_loss(self, params, output, inputs, mask, env_steps):
        per_agent = jnp.mean(output.scores["agent"] ** 2, axis=-1)  # [T, *B, n]
        weight = mask.astype(jnp.float32)
        value = jnp.sum(per_agent * weight) / jnp.maximum(weight.sum(), 1.0)
        return self.penalty * value, {"score_penalty": value}

    def export(self, params):
        spec = {"network": "tiny_aux_agent", "hidden_dim": self.width, "width": self.width,
                "inputs": ["obs", "last_action", "agent_id"]}
        return spec, params["agent"]


@register_network("tiny_aux_agent")
def tiny_aux_agent(spec: dict) -> AgentStep:
    """The exported network: one agent's recurrent step on its own input vector."""
    return recurrent_agent_step(spec, RNNAgent(spec["width"], spec["n_actions"]).apply)


@pytest.fixture(scope="module")
def tiny_aux():
    """Registered for this module's tests only (other tests' configurations keep their sections)."""
    register_paradigm(TinyAux)
    yield TinyAux
    unregister_paradigm(TinyAux.name)


FAST = ("env=toy:hallway", "algo=vdn", "eval.interval=500", "eval.episodes=8", "log.chunk_evals=2",
        "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200", "rollout.num_envs=4")


# ---------------------------------------------------------------------------------------------------------


def test_its_options_are_a_configuration_section(tiny_aux):
    config = build_config(["paradigm=tiny_aux", "tiny_aux.width=24"])
    assert config.tiny_aux.width == 24 and config.tiny_aux.penalty == 0.01
    assert "tiny_aux.width" in help_text() and "tiny_aux = a test's recurrent agents" in help_text()
    with pytest.raises(ConfigError, match="Did you mean 'tiny_aux.width'"):
        build_config(["tiny_aux.widht=3"])
    with pytest.raises(ConfigError, match=r"tiny_aux\.width configures paradigm=tiny_aux, but paradigm=ctde"):
        resolve(build_config(["env=toy:hallway", "tiny_aux.width=8"]))
    with pytest.raises(ConfigError, match=r"tiny_aux\.width must be positive"):
        resolve(build_config(["env=toy:hallway", "paradigm=tiny_aux", "tiny_aux.width=0"]))
    # Its declared backbone families are checked by resolve, with the others named.
    with pytest.raises(IncompatibleError, match="paradigm=tiny_aux is not available on algo=maddpg"):
        resolve(build_config(["env=toy:hallway", "paradigm=tiny_aux", "algo=maddpg"]))
    with pytest.raises(IncompatibleError, match="it hosts ctde and ctedd"):
        resolve(build_config(["env=toy:hallway", "paradigm=tiny_aux", "algo=maddpg"]))
    # Plain CTDE does not host a network per agent, and neither does tiny_aux (it does not declare it).
    with pytest.raises(ConfigError, match="paradigm=tiny_aux shares its agent networks"):
        resolve(build_config(["env=toy:hallway", "paradigm=tiny_aux", "algo.share_parameters=false"]))


# About 40 s cold: a whole run of the test-file paradigm (make test-slow; CI runs it).
@pytest.mark.slow
def test_it_trains_evaluates_exports_and_passes_the_audit(tiny_aux, run_training):
    result = run_training(*FAST, "paradigm=tiny_aux", "tiny_aux.width=24", "tiny_aux.penalty=0.5", "steps=600")
    run_dir = result.run_dir

    # The saved configuration holds its section and loads again.
    saved = from_dict(load_yaml(run_dir / "config.yaml"))
    assert saved.paradigm.name == "tiny_aux" and saved.tiny_aux.width == 24 and saved.tiny_aux.penalty == 0.5

    # Its auxiliary loss ran: its diagnostic is logged, finite and positive.
    penalties = [row["train/score_penalty"] for row in result.rows if "train/score_penalty" in row]
    assert penalties and all(np.isfinite(p) and p > 0 for p in penalties)

    # Greedy evaluation of the saved run.
    report = evaluate(run_dir, episodes=4, quiet=True)
    assert "return" in str(report)

    # The exported policy: its own network, with its option's width, loaded from files.
    policy = load_policy(run_dir / "policy")
    assert policy.spec["network"] == "tiny_aux_agent" and policy.spec["width"] == 24
    widths = {leaf.shape[-1] for leaf in jax.tree.leaves(policy.params) if leaf.ndim >= 2}
    assert 24 in widths

    # The audit passes it (each agent reads its own inputs only), not vacuously; a planted leak fails it.
    audit = audit_policy(policy, trials=2)
    assert audit.passed, audit.message
    assert audit.own_sensitivity > 1e-4
    leaky = _as(ReceiverReadsTeammateObs)(policy)
    assert not audit_policy(leaky, trials=2).passed
