"""The value-decomposition backbone against pymarl2 (hijkzzz/pymarl2, `--checkout pymarl2=PATH`): the recurrent
agent, and one learning step of IQL, VDN and QMIX with one-step double-Q TD (their `QLearner`, `q_learner.py`)
and of QMIX with TD(lambda) (their `NQLearner`, `nq_learner.py`, with pymarl2's `nmix.Mixer`, as PTDE's code
uses it), each with our initial parameters copied into theirs.

The authors' side runs their real modules: `BasicMAC`/`NMAC` with `RNNAgent`/`NRNNAgent`, `QMixer`/`VDNMixer`/
`nmix.Mixer`, and their learner's `train()` itself on `pymarl_batch`, with a `RecordingLogger`. What is read out
of it, and how:

- per-step Q-values of the online agents (`scores/agent`): the online controller's `forward` wrapped to keep its
  outputs;
- the mixer's outputs, Q_tot of the taken actions (`mixer/q_tot`) and the target mixer at the bootstrap action
  (`mixer/target_q_tot`): both mixers' `forward` wrapped;
- the TD targets (`td/targets`, times the learner's mask, as padding differs on purpose: ours keeps `terminal`
  over the padding, pymarl only at the last step): NQLearner's `build_td_lambda_targets` wrapped; for QLearner,
  whose one-step target is an inline expression, that one line (r + gamma (1 - terminated) Q'_tot) reproduced
  from the captured target mixer output (for IQL, from the captured target agents' outputs at the double-Q
  action, as the line before it does);
- the gradient of the loss (`grad/...`): snapshot inside `clip_grad_norm_` (wrapped), i.e. before clipping,
  like ours; the parameters after their optimizer's step (`after/...`);
- our metrics (`metric/td_loss`, `td_error_abs`, `q_taken`, `target`) from those captured tensors, with our
  definitions (pymarl's logged `q_taken_mean`/`target_mean` divide the team value by n again, and pymarl2's
  NQLearner logs the mean of 0.5 td^2 as `td_error_abs`).

Both pymarl2 learners minimise 0.5 * mean td^2 (oxwhirl's pymarl, which ctde follows, minimises mean td^2):
`authors` doubles their gradient before their clip and optimizer (wrapped `clip_grad_norm_`) and their loss,
so the rest can be compared as it is. Their `envs` package (StarCraft II) is replaced by a stub while importing.
"""

from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, gru_grads, gru_values, pymarl_batch, recorded_episodes,
                               flatten, trajectory, vd_initial_params, vd_learner, vd_params, nested,
                               watched_clip)

SYSTEM = "pymarl2"
RECORD = "smax_3m"
SEED = 0
ENV_STEPS = 0


@dataclass(frozen=True)
class Setting:
    """One learner setting: ctde's overrides and pymarl2's arguments for the same thing."""

    algo: str  # iql | vdn | qmix
    optimizer: str  # adam | rmsprop
    lr: float
    td_lambda: float = 0.0  # > 0: pymarl2's NQLearner (TD(lambda), nmix.Mixer); 0: QLearner

    @property
    def overrides(self) -> list[str]:
        return ["env=smax:3m", "env.episode_limit=20", f"algo={self.algo}", "paradigm=ctde",
                f"algo.optimizer={self.optimizer}", f"algo.lr={self.lr}", f"algo.td_lambda={self.td_lambda}"]

    @property
    def nq(self) -> bool:
        return self.td_lambda > 0


# -- our side -------------------------------------------------------------------------------------------------

_LEARNERS: dict = {}


def _learner(setting: Setting):
    if setting not in _LEARNERS:
        _LEARNERS[setting] = vd_learner(setting.overrides)
    return _LEARNERS[setting]


def prepare(setting: Setting) -> Golden:
    _, _, _, backbone = _learner(setting)
    recorded_episodes(RECORD)
    return Golden(inputs={"env_steps": np.int32(ENV_STEPS)}, params=vd_initial_params(backbone, SEED))


class _MixerSpy:
    """Stands in for an objective's mixer while `td_loss` is traced: keeps each `apply`'s output, in call order
    (MixerTD applies the online mixer to the taken actions, then the target mixer at the bootstrap actions)."""

    def __init__(self, mixer, seen: list):
        self.mixer, self.seen = mixer, seen

    def apply(self, params, *args):
        out = self.mixer.apply(params, *args)
        self.seen.append(out)
        return out


def _observed(backbone, td_loss):
    """`td_loss` returning, beside its loss, (metrics, what the objective computed): Q_tot [T, B, k], the target
    mixer at the bootstrap actions [T, B, k] and the TD targets times the mask [T, B, k], observed by standing in
    for the objective's mixer and `returns` while it is traced (the same computation, nothing replaced)."""
    objective = backbone.objective

    def loss(*args):
        mixed, seen = [], {}
        returns, mixer = objective.returns, objective.mixer

        def observed_returns(x, next_values):
            targets = returns(x, next_values)
            seen["td/targets"] = targets * x.mask[..., None]
            return targets

        objective.mixer, objective.returns = _MixerSpy(mixer, mixed), observed_returns
        try:
            value, metrics = td_loss(*args)
        finally:
            objective.mixer = mixer
            del objective.returns
        seen["mixer/q_tot"], seen["mixer/target_q_tot"] = mixed
        return value, (metrics, seen)

    return loss


def ours_learner(setting: Setting, golden: Golden) -> dict[str, np.ndarray]:
    """`vd_step` (common.py: our real `td_loss` and optimizer, one jitted step), with the objective's mixer
    outputs and TD targets observed in the same trace."""
    import optax

    _, _, paradigm, backbone = _learner(setting)
    params, target_params = vd_params(backbone, golden)
    batch = trajectory(recorded_episodes(RECORD)).transpose()
    env_steps = jnp.int32(golden.inputs["env_steps"])

    @jax.jit
    def step(params, target_params, batch):
        (loss, (metrics, seen)), grads = jax.value_and_grad(_observed(backbone, backbone.td_loss), has_aux=True)(
            params, target_params, batch, env_steps, None)
        updates, _ = backbone.optimizer.update(grads, backbone.optimizer.init(params), params)
        _, output = paradigm.apply(params.agents, paradigm.initial_carry(batch.reward.shape[1:]),
                                   batch.agent_inputs())
        return loss, metrics, seen, grads, optax.apply_updates(params, updates), output

    loss, metrics, seen, grads, after, output = step(params, target_params, batch)
    out = {"loss": np.asarray(loss), **{f"metric/{k}": np.asarray(v) for k, v in metrics.items()}}
    out.update({key: np.swapaxes(np.asarray(value), 0, 1) for key, value in seen.items()})
    out.update({f"scores/{model}": np.swapaxes(np.asarray(s), 0, 1) for model, s in output.scores.items()})
    out.update(flatten(grads, prefix="grad/"))
    out.update(flatten(after, prefix="after/"))
    return out


def prepare_agent() -> Golden:
    """Only the online agent's parameters: the agent network alone is compared."""
    golden = prepare(AGENT_SETTING)
    golden.params = {k: v for k, v in golden.params.items() if k.startswith("online/agents/")}
    return golden


def ours_agent(golden: Golden) -> dict[str, np.ndarray]:
    """paradigm=ctde's agent network over the recorded batch (`paradigm.apply`, as td_loss and vd_step call it)."""
    from crosscheck.common import unflatten_like

    _, _, paradigm, _ = _learner(AGENT_SETTING)
    params = unflatten_like(paradigm.init(jax.random.PRNGKey(0)), golden.params, "online/agents/")
    batch = trajectory(recorded_episodes(RECORD)).transpose()
    _, output = jax.jit(paradigm.apply)(params, paradigm.initial_carry(batch.reward.shape[1:]), batch.agent_inputs())
    return {"scores/agent": np.swapaxes(np.asarray(output.scores["agent"]), 0, 1)}


# -- the authors' side (PyTorch) -------------------------------------------------------------------------------

@contextlib.contextmanager
def _pymarl2(checkout: Path):
    """pymarl2's src on the path, with its `envs` package (StarCraft II, SMAC) replaced by a stub: the learners
    import only `envs.matrix_game.print_matrix_status` (for a matrix-game printout)."""
    stubs = {"envs": types.ModuleType("envs"), "envs.matrix_game": types.ModuleType("envs.matrix_game")}
    stubs["envs"].__path__ = []
    stubs["envs.matrix_game"].print_matrix_status = lambda *args, **kwargs: None
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules.update(stubs)
    try:
        with authors_code(Path(checkout) / "src"):
            yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _args(setting: Setting, record: dict) -> Namespace:
    n_agents, n_actions = record["avail"].shape[-2:]
    return Namespace(
        n_agents=n_agents, n_actions=n_actions, state_shape=record["state"].shape[-1],
        obs_shape=record["obs"].shape[-1], env="sc2", use_cuda=False, gamma=0.99, grad_norm_clip=10.0,
        optimizer=setting.optimizer, lr=setting.lr, optim_alpha=0.99, optim_eps=1e-5, double_q=True,
        mixer=None if setting.algo == "iql" else setting.algo, mixing_embed_dim=32, hypernet_layers=2,
        hypernet_embed=64, td_lambda=setting.td_lambda, q_lambda=False, target_update_interval=200,
        learner_log_interval=2000, agent="n_rnn" if setting.nq else "rnn", rnn_hidden_dim=64, obs_agent_id=True,
        obs_last_action=True, agent_output_type="q", action_selector="epsilon_greedy", epsilon_start=1.0,
        epsilon_finish=0.05, epsilon_anneal_time=50000, use_layer_norm=False, use_orthogonal=False,
        use_per=False, return_priority=False)


def _scheme(record: dict, n_actions: int) -> dict:
    import torch as th

    return {"state": {"vshape": record["state"].shape[-1]},
            "obs": {"vshape": record["obs"].shape[-1], "group": "agents"},
            "actions": {"vshape": (1,), "group": "agents", "dtype": th.long},
            "avail_actions": {"vshape": (n_actions,), "group": "agents", "dtype": th.int},
            "actions_onehot": {"vshape": (n_actions,), "group": "agents", "dtype": th.float32},
            "reward": {"vshape": (1,)}, "terminated": {"vshape": (1,), "dtype": th.uint8}}


def _mac(args: Namespace, record: dict, nq: bool):
    from controllers.basic_controller import BasicMAC
    from controllers.n_controller import NMAC

    return (NMAC if nq else BasicMAC)(_scheme(record, args.n_actions), {"agents": args.n_agents}, args)


def _mixer_layers(mixer) -> dict:
    """Our QMIX mixer's Dense names -> their Linear layers (QMixer of q_learner, or pymarl2's nmix.Mixer).
    Ours are named by creation order: hyper_w1 (Dense_0, Dense_1), hyper_b1, hyper_w2 (Dense_2, Dense_3), the
    state value V (Dense_4, Dense_5)."""
    if mixer is None or not (hasattr(mixer, "hyper_b1") or hasattr(mixer, "hyper_b_1")):  # IQL, VDN
        return {}
    if hasattr(mixer, "hyper_w_1"):  # QMixer (q_learner.py)
        w1, w2, b1, value = mixer.hyper_w_1, mixer.hyper_w_final, mixer.hyper_b_1, mixer.V
    else:  # nmix.Mixer: hyper_b1 is Sequential(Linear), hyper_b2 is QMixer's V
        w1, w2, b1, value = mixer.hyper_w1, mixer.hyper_w2, mixer.hyper_b1[0], mixer.hyper_b2
    return {"Dense_0": w1[0], "Dense_1": w1[2], "hyper_b1": b1, "Dense_2": w2[0], "Dense_3": w2[2],
            "Dense_4": value[0], "Dense_5": value[2]}


def _agent_layers(agent) -> dict:
    return {"fc1": agent.fc1, "fc2": agent.fc2}


def _load(role: str, golden: Golden, agent, mixer, with_mixer: bool = True) -> None:
    """Our `role` ("online"/"target") parameters into their agent network and (with_mixer) mixer."""
    agent_params = nested(golden.params, f"{role}/agents/agent/params/")
    for name, layer in _agent_layers(agent).items():
        copy_dense(layer, agent_params[name])
    copy_gru(agent.rnn, agent_params["gru"])
    if not with_mixer:
        return
    mixer_params = nested(golden.params, f"{role}/mixer/params/")
    layers = _mixer_layers(mixer)
    if sorted(layers) != sorted(mixer_params):
        raise ValueError(f"mixer layers differ: ours {sorted(mixer_params)}, theirs {sorted(layers)}")
    for name, layer in layers.items():
        copy_dense(layer, mixer_params[name])


def _flat(prefix: str, agent, mixer, dense, gru) -> dict[str, np.ndarray]:
    """Their agent and mixer tensors (values or gradients) under our parameter paths."""
    out = {}

    def put(path: str, tree: dict):
        for key, value in tree.items():
            if isinstance(value, dict):
                put(f"{path}/{key}", value)
            else:
                out[f"{path}/{key}"] = np.array(value, copy=True)  # torch tensors change in place

    for name, layer in _agent_layers(agent).items():
        put(f"{prefix}/agents/agent/params/{name}", dense(layer))
    put(f"{prefix}/agents/agent/params/gru", gru(agent.rnn))
    for name, layer in _mixer_layers(mixer).items():
        put(f"{prefix}/mixer/params/{name}", dense(layer))
    return out


def _record_calls(module, store: list) -> None:
    """Wrap `module.forward` (an instance attribute shadows the method) to keep each output."""
    forward = module.forward

    def recorded(*args, **kwargs):
        out = forward(*args, **kwargs)
        store.append(out.detach().clone())
        return out

    module.forward = recorded


def authors_agent(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    """pymarl's BasicMAC + RNNAgent over the whole batch, one forward per step from a zero hidden state."""
    import torch as th

    record = recorded_episodes(RECORD)
    with _pymarl2(checkout):
        args = _args(AGENT_SETTING, record)
        batch = pymarl_batch(record, args.n_actions)
        mac = _mac(args, record, nq=False)
        _load("online", golden, mac.agent, None, with_mixer=False)
        with th.no_grad():
            mac.init_hidden(batch.batch_size)
            out = th.stack([mac.forward(batch, t=t) for t in range(batch.max_seq_length)], dim=1)
    return {"scores/agent": out.numpy()}


def authors_learner(setting: Setting, checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    """One call of pymarl2's QLearner.train / NQLearner.train on our recorded batch (see module docstring)."""
    import torch as th

    record = recorded_episodes(RECORD)
    with _pymarl2(checkout):
        import learners.nq_learner as nq_module
        from learners.nq_learner import NQLearner
        from learners.q_learner import QLearner

        args = _args(setting, record)
        batch = pymarl_batch(record, args.n_actions)
        mac = _mac(args, record, nq=setting.nq)
        logger = RecordingLogger()
        learner = (NQLearner if setting.nq else QLearner)(mac, None, logger, args)
        mixer = learner.mixer
        target_mixer = getattr(learner, "target_mixer", None)
        _load("online", golden, learner.mac.agent, mixer)
        _load("target", golden, learner.target_mac.agent, target_mixer)

        online_q, target_q, mixed, target_mixed, lambda_targets = [], [], [], [], []
        _record_calls(learner.mac, online_q)
        _record_calls(learner.target_mac, target_q)
        if mixer is not None:
            _record_calls(mixer, mixed)
            _record_calls(target_mixer, target_mixed)
        build = nq_module.build_td_lambda_targets

        def observed_build(*a, **k):
            out = build(*a, **k)
            lambda_targets.append(out.detach().clone())
            return out

        nq_module.build_td_lambda_targets = observed_build
        # ctde's loss is mean td^2, pymarl2's 0.5 mean td^2: the gradient ctde's optimizer sees is twice theirs
        with watched_clip(scale=2.0) as watch:
            learner.train(batch, t_env=ENV_STEPS, episode_num=0)
        watch.restore()
        grads = _flat("grad", learner.mac.agent, mixer, dense_grads, gru_grads)
        after = _flat("after", learner.mac.agent, mixer, dense_values, gru_values)

        # What train() computed, as ctde reports it.
        mask = (th.as_tensor(record["valid"][:, :-1, None]).float())  # = their filled, cut after terminated
        q = th.stack(online_q, dim=1)  # [B, T+1, n, A]
        actions = batch["actions"][:, :-1]
        chosen = th.gather(q[:, :-1], dim=3, index=actions).squeeze(3)  # [B, T, n]
        if setting.nq:
            targets = lambda_targets[0]
        elif mixer is not None:
            # QLearner's inline line: targets = rewards + gamma * (1 - terminated) * target_max_qvals
            targets = batch["reward"][:, :-1] + args.gamma * (1 - batch["terminated"][:, :-1].float()) * target_mixed[0]
        else:  # IQL: its double-Q lines then the same target line
            target_out = th.stack(target_q[1:], dim=1)
            target_out[batch["avail_actions"][:, 1:] == 0] = -9999999
            online = q.clone()
            online[batch["avail_actions"] == 0] = -9999999
            best = online[:, 1:].max(dim=3, keepdim=True)[1]
            next_q = th.gather(target_out, 3, best).squeeze(3)
            targets = batch["reward"][:, :-1] + args.gamma * (1 - batch["terminated"][:, :-1].float()) * next_q
        q_tot = mixed[0] if mixer is not None else chosen
        k = q_tot.shape[-1]
        count = mask.sum() * k
        td = (q_tot - targets) * mask
        out = {
            "scores/agent": q.numpy(),
            "loss": np.float32(2.0 * logger.stats["loss_td"]),
            "metric/td_loss": (td.pow(2).sum() / count).numpy(),
            "metric/td_error_abs": (td.abs().sum() / count).numpy(),
            "metric/q_taken": ((chosen * mask).sum() / (mask.sum() * chosen.shape[-1])).numpy(),
            "metric/target": ((targets * mask).sum() / count).numpy(),
            "td/targets": (targets * mask).numpy(),
            **grads, **after,
        }
        if mixer is not None:
            target_all = target_mixed[0]  # NQLearner mixes the targets of every step, QLearner those of 1..T
            out["mixer/q_tot"] = mixed[0].numpy()
            out["mixer/target_q_tot"] = (target_all[:, 1:] if setting.nq else target_all).numpy()
        if not setting.nq:
            # QLearner logs td_error_abs as ctde defines it; check the captured tensors against it
            assert np.isclose(logger.stats["td_error_abs"], float(out["metric/td_error_abs"]), rtol=1e-5, atol=1e-7)
    return out


def ours_for(setting: Setting):
    def ours(golden: Golden) -> dict[str, np.ndarray]:
        out = ours_learner(setting, golden)
        if setting.algo == "iql":
            out = {k: v for k, v in out.items() if not k.startswith("mixer/")}
        return out

    return ours


AGENT_SETTING = Setting("qmix", "rmsprop", 5e-4)

# Everything but the parameters after the step agrees within 1e-6. Adam's and RMSprop's first step divide each
# gradient element by its own magnitude (plus eps), so an element far below the largest (e.g. 1e-8 against 8e-3)
# turns float32 rounding of the gradient (~1e-7 of the largest element, on both sides) into a visible change of
# its update; parameters initialised at zero (biases) move by about lr, so that shows relative to them. Measured:
# up to 1.3e-5 (RMSprop, a GRU input bias) and 1.0e-5 (Adam, GRU hidden_r, an element with gradient 1.3e-8).
# optax's float32 bias correction (1 - 0.999 rounds 1.3e-5 off) adds 6.4e-6 to every Adam update as well.
LEARNER_TOLERANCE = 5e-5
_LOOSER = ("Tolerance 5e-5: only the parameters after the step exceed 1e-6, where Adam/RMSprop divide gradient "
           "elements near their eps scale by their own magnitude, so float32 rounding of tiny gradients moves "
           "their update (and optax's float32 Adam bias correction 1 − 0.999 is off by 1.3e-5).")

_DOUBLED = ("pymarl2's {file} minimises 0.5·mean td² (oxwhirl's pymarl, which ctde follows, mean td²); the "
            "cross-check doubles their loss and their gradient before their clip and optimizer (a wrapped "
            "clip_grad_norm_). ")

SETTINGS = {
    "qmix_rmsprop_1step": (Setting("qmix", "rmsprop", 5e-4), "QLearner: QMIX (QMixer, abs weights, 2-layer "
                           "hypernets 64, embed 32), 1-step double-Q TD, RMSprop 5e-4 α 0.99 ε 1e-5, clip 10"),
    "vdn_adam_1step": (Setting("vdn", "adam", 5e-4), "QLearner: VDN, 1-step double-Q TD, Adam 5e-4, clip 10"),
    "iql_rmsprop_1step": (Setting("iql", "rmsprop", 5e-4), "QLearner: IQL (no mixer), 1-step double-Q TD, "
                          "RMSprop 5e-4, clip 10"),
    "qmix_adam_td_lambda": (Setting("qmix", "adam", 1e-3, 0.6), "NQLearner (PTDE's stage-1 learner): QMIX "
                            "(nmix.Mixer, abs), TD(λ) 0.6 via build_td_lambda_targets, Adam 1e-3, clip 10"),
}

COMPONENTS = [
    Component(
        name="rnn_agent", system=SYSTEM,
        what="RNNAgent (fc1, ReLU, GRUCell, fc2) through BasicMAC's inputs (obs ⊕ last action ⊕ id): per-step "
             "Q-values over the recorded batch vs paradigm=ctde scores/agent",
        prepare=prepare_agent, ours=ours_agent, authors=authors_agent),
] + [
    Component(
        name=name, system=SYSTEM,
        what=what + ": agents' Q per step, Q_tot, target Q_tot, TD targets, loss and metrics, gradients, "
                    "parameters after one step",
        prepare=partial(prepare, setting), ours=ours_for(setting), authors=partial(authors_learner, setting),
        verdict="departs on purpose", tolerance=LEARNER_TOLERANCE,
        note=_DOUBLED.format(file="nq_learner.py" if setting.nq else "q_learner.py")
        + "TD targets compared on valid steps only (ctde keeps terminal over padding, pymarl marks only the last "
          "step; both mask them out of the loss). " + _LOOSER)
    for name, (setting, what) in SETTINGS.items()
]
