"""The papers' other value-decomposition baselines against their released learners: QPLEX (pymarl2's
dmaq_qatten_learner + DMAQer), QTRAN-base (pymarl2's qtran_learner + QTranBase), CW-QMIX and OW-QMIX (wqmix's
max_q_learner with QMixerCentralFF and the central RNN agents) and DMIX (IGM-DA's copy of DFAC's iqn_learner with
its DMixer).

Each component runs the authors' own `train()` once on the recorded SMAX 3m batch, with our initial online and
target parameters copied into their agent, mixer and target networks. Captured there: the agents' Q-values per step
(their controllers' `forward`), the mixers' outputs per step (forward hooks), the loss and logged metrics (a
RecordingLogger), the gradient of the total loss before clipping (torch.nn.utils.clip_grad_norm_ wrapped to
snapshot `.grad` first) and the parameters after their optimizer's one step. Ours: `vd_step` (our real
`ValueDecomposition.td_loss` and optimizer), with the objective's mixers and TD returns observed inside the same
trace (`_observe`: each `apply` output, and the targets, are returned as extra metrics; nothing is recomputed).

Network widths are smaller than the papers' (agent 32, hypernetworks 32, 2 QPLEX kernels, central mixer 32) so
each golden file stays small; both sides are configured the same through documented options
(`algo.hidden_dim`, `algo.hypernet_embed`, `algo.qplex_kernels`, `algo.central_embed`, ... and the authors' args).
One-step TD (their `td_lambda` 0 where their learner has one), double Q, gradient clip 10 on both sides.
Parameters: ours (`vd_initial_params`), except that every bias is drawn as PyTorch draws it (ctde's are zero, which
would hide a misplaced bias) and single parameters listed in SHIFTS are moved so every branch of a loss is taken.

Import torch only inside the `authors` functions: tests/test_golden.py imports this module without it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, flatten, gru_grads, gru_values, pymarl_batch,
                               recorded_episodes, vd_initial_params, vd_learner, vd_step, nested,
                               watched_clip, ClipWatch)

EPISODES = "smax_3m"
SEED = 0
ENV = ["env=smax:3m", "env.episode_limit=20"]
SMALL = ["algo.hidden_dim=32", "algo.hypernet_embed=32"]

OVERRIDES = {
    # pymarl2 qplex.yaml: Adam lr 1e-3, double Q, adv_hypernet_layers 2 (our QPLEX MLPs are 2-layer)
    "qplex_1step": ENV + SMALL + ["algo=qplex", "algo.lr=0.001", "algo.qplex_kernels=2"],
    # pymarl2 qtran.yaml: Adam, lr 5e-4 (default.yaml), mixing_embed_dim -> algo.qtran_embed
    "qtran_1step": ENV + SMALL + ["algo=qtran", "algo.qtran_embed=32"],
    # wqmix cw_qmix.yaml / ow_qmix.yaml: max_q_learner's RMSprop (alpha 0.99, eps 1e-5), lr 5e-4, w = 0.1
    "cw_qmix_1step": ENV + SMALL + ["algo=cw_qmix", "algo.optimizer=rmsprop", "algo.central_embed=32",
                                    "algo.central_hidden=32"],
    "ow_qmix_1step": ENV + SMALL + ["algo=ow_qmix", "algo.optimizer=rmsprop", "algo.central_embed=32",
                                    "algo.central_hidden=32"],
    # IGM-DA dmix.yaml: RMSProp, lr 5e-4, double Q, 8 quantiles (N = N' = 8)
    "dmix_1step": ENV + SMALL + ["algo=dmix", "algo.optimizer=rmsprop", "algo.quantiles=8"],
}

AGENT = "agents/agent/params"


# -- helpers: parameter paths ---------------------------------------------------------------------------------

def _agent_layers(path: str, agent) -> list:
    """(our path, kind, torch module) of a pymarl RNN agent (fc1, GRUCell rnn, fc2)."""
    return [(f"{path}/fc1", "dense", agent.fc1), (f"{path}/gru", "gru", agent.rnn), (f"{path}/fc2", "dense", agent.fc2)]


def _qmix_layers(path: str, mixer) -> list:
    """Our QMIXMixer's Dense layers (creation order: hyper_w1, hyper_b1, hyper_w2, value) in pymarl's QMixer
    (also DFAC's DMixer, whose QMIX part has the same attribute names)."""
    return [(f"{path}/Dense_0", "dense", mixer.hyper_w_1[0]), (f"{path}/Dense_1", "dense", mixer.hyper_w_1[2]),
            (f"{path}/hyper_b1", "dense", mixer.hyper_b_1),
            (f"{path}/Dense_2", "dense", mixer.hyper_w_final[0]), (f"{path}/Dense_3", "dense", mixer.hyper_w_final[2]),
            (f"{path}/Dense_4", "dense", mixer.V[0]), (f"{path}/Dense_5", "dense", mixer.V[2])]


def _qplex_layers(path: str, mixer, kernels: int) -> list:
    """Our QPLEXMixer (hyper_w, hyper_v, then per kernel key, agents, action; 2 Dense each) in pymarl2's DMAQer."""
    layers = [(f"{path}/Dense_0", "dense", mixer.hyper_w_final[0]),
              (f"{path}/Dense_1", "dense", mixer.hyper_w_final[2]),
              (f"{path}/Dense_2", "dense", mixer.V[0]), (f"{path}/Dense_3", "dense", mixer.V[2])]
    weight = mixer.si_weight
    for k in range(kernels):
        for j, extractors in enumerate((weight.key_extractors, weight.agents_extractors, weight.action_extractors)):
            first = 4 + 6 * k + 2 * j
            layers += [(f"{path}/Dense_{first}", "dense", extractors[k][0]),
                       (f"{path}/Dense_{first + 1}", "dense", extractors[k][2])]
    return layers


def _sequential_layers(path: str, first: int, sequential) -> list:
    """Consecutive Dense_<first>... of ours <- the Linear layers of a torch nn.Sequential, in order."""
    import torch.nn as nn

    linears = [m for m in sequential if isinstance(m, nn.Linear)]
    return [(f"{path}/Dense_{first + i}", "dense", layer) for i, layer in enumerate(linears)]


def _copy_into(layers: list, flat: dict[str, np.ndarray], role: str) -> None:
    for path, kind, module in layers:
        params = nested(flat, f"{role}/{path}/")
        if kind == "dense":
            if tuple(module.weight.shape) != params["kernel"].T.shape:
                raise ValueError(f"{path}: ours {params['kernel'].shape}, theirs {tuple(module.weight.shape)}")
            copy_dense(module, params)
        else:
            if tuple(module.weight_hh.shape) != (3 * module.hidden_size, module.hidden_size) or \
                    params["hidden_r"].shape != (module.hidden_size, module.hidden_size):
                raise ValueError(f"{path}: GRU sizes differ")
            copy_gru(module, params)


def _read(layers: list, prefix: str, gradients: bool) -> dict[str, np.ndarray]:
    out = {}
    for path, kind, module in layers:
        if kind == "dense":
            value = dense_grads(module) if gradients else dense_values(module)
        else:
            value = gru_grads(module) if gradients else gru_values(module)
        out.update(flatten(value, prefix=f"{prefix}{path}/"))
    return out


# -- helpers: running the authors' learner ------------------------------------------------------------------------

def _load(source_dir: Path, relative: str, name: str):
    """A module of the checkout loaded from its file, without its package's __init__ (pymarl's
    learners/__init__.py imports every learner, some of which need modules the checkouts lack: smac, ...)."""
    path = Path(source_dir) / relative
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _grads_of(layers: list, watch: ClipWatch) -> dict[str, np.ndarray]:
    """The recorded (pre-clip) gradients of `layers`, in our layout, as "grad/<path>/..."."""
    watch.restore()
    return _read(layers, "grad/", gradients=True)


def _base_args(record: dict[str, np.ndarray], config, **extra) -> Namespace:
    n_agents = record["action"].shape[-1]
    args = Namespace(
        n_agents=n_agents, n_actions=record["avail"].shape[-1], state_shape=record["state"].shape[-1],
        obs_shape=record["obs"].shape[-1], episode_limit=20,
        agent="rnn", mac="basic_mac", rnn_hidden_dim=config.algo.hidden_dim, obs_last_action=True, obs_agent_id=True,
        agent_output_type="q", action_selector="epsilon_greedy", epsilon_start=1.0, epsilon_finish=0.05,
        epsilon_anneal_time=50000, gamma=config.algo.gamma, lr=config.algo.lr, optim_alpha=0.99, optim_eps=1e-5,
        grad_norm_clip=config.algo.grad_clip, double_q=True, target_update_interval=200, learner_log_interval=0,
        use_cuda=False, device="cpu", batch_size=record["action"].shape[0], buffer_size=5000, name="crosscheck",
        td_lambda=0.0,
    )
    args.update(extra)
    return args


def _record_forward(mac, store: list) -> None:
    """Record every output of a controller's `forward` (one per time step, in the order train() calls it)."""
    forward = mac.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        store.append(out)
        return out

    mac.forward = recording


def _hook(module, store: list) -> None:
    module.register_forward_hook(lambda _module, _inputs, output: store.append(output))


def _np(tensor) -> np.ndarray:
    return tensor.detach().numpy().astype(np.float32)


def _stack(outputs: list, shape: tuple) -> np.ndarray:
    """Per-step controller outputs [B, ...] -> [B, T + 1, ...] reshaped to `shape`."""
    import torch

    return _np(torch.stack([o.reshape(shape[0], *shape[2:]) for o in outputs], dim=1))


# -- our side ------------------------------------------------------------------------------------------------------

class _Observed:
    """A flax module whose `apply` outputs are recorded (label, output) in call order; everything else is the
    module's own (`init`, attributes)."""

    def __init__(self, module, label: str, calls: list):
        self._module, self._label, self._calls = module, label, calls

    def apply(self, *args, **kwargs):
        out = self._module.apply(*args, **kwargs)
        self._calls.append((self._label, out))
        return out

    def __getattr__(self, name):
        return getattr(self._module, name)


def _observe(objective, modules: tuple[str, ...]) -> None:
    """Make the objective return, beside its metrics, what its networks computed in this very trace:
    "capture/<module>/<call>" (each `apply` output, in call order), "capture/returns/<call>" (the TD targets) and
    "capture/x/<field>" (the TDInputs td_loss assembled). Time-major, as inside the learner."""
    calls: list = []
    for name in modules:
        setattr(objective, name, _Observed(getattr(objective, name), name, calls))
    loss, returns = objective.loss, objective.returns

    def observed_returns(x, next_values):
        targets = returns(x, next_values)
        calls.append(("returns", targets))
        return targets

    def observed_loss(params, target_params, x):
        calls.clear()
        value, metrics = loss(params, target_params, x)
        extra, counts = {}, {}
        for label, out in calls:
            index = counts.get(label, 0)
            counts[label] = index + 1
            if isinstance(out, tuple):
                for j, part in enumerate(out):
                    extra[f"capture/{label}/{index}/{j}"] = part
            else:
                extra[f"capture/{label}/{index}"] = out
        for field in ("q", "q_target", "quantiles", "quantiles_target", "mask"):
            if getattr(x, field) is not None:
                extra[f"capture/x/{field}"] = getattr(x, field)
        return value, {**metrics, **extra}

    objective.returns = observed_returns
    objective.loss = observed_loss


def _ours_step(name: str, golden: Golden, modules: tuple[str, ...]):
    """(vd_step's outputs with the captures, record, config) for component `name`."""
    config, _, _, backbone = vd_learner(OVERRIDES[name])
    _observe(backbone.objective, modules)
    record = recorded_episodes(EPISODES)
    out = vd_step(backbone, golden, record, int(golden.inputs["env_steps"]))
    return out, record, config


def _bm(value: np.ndarray) -> np.ndarray:
    """Time-major [T, B, ...] -> batch-major [B, T, ...]."""
    return np.swapaxes(np.asarray(value), 0, 1)


def _common_ours(out: dict, record: dict) -> dict[str, np.ndarray]:
    """What every component compares from our side: the loss, the agents' Q-values (online and target) per step,
    the gradients and the parameters after one step."""
    result = {"loss": out["loss"], "scores/agent": out["scores/agent"],
              "scores/agent_target": _bm(out["metric/capture/x/q_target"])}
    result.update({k: v for k, v in out.items() if k.startswith(("grad/", "after/"))})
    # the global norm the clip reads (theirs: clip_grad_norm_'s return value)
    result["grad_norm"] = np.float32(np.sqrt(sum(np.sum(np.asarray(v, np.float64) ** 2)
                                                 for k, v in out.items() if k.startswith("grad/"))))
    return result


def _valid(record: dict) -> np.ndarray:
    """[B, T, 1] float: 1 on valid decision steps."""
    return record["valid"][:, :-1, None].astype(np.float32)


def _with_biases(params: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Our initial parameters with every bias drawn as PyTorch draws them, U(±1/sqrt(fan_in)) (GRU: ±1/sqrt(H)),
    instead of ctde's zeros: with zero biases a bias applied in the wrong place (e.g. a GRU's hidden bias outside
    its reset gate) changes no forward output, and every post-step bias would be ±lr, where the float32 rounding
    of Adam's bias correction alone is 7e-6 of it."""
    rng = np.random.default_rng(seed)
    out = dict(params)
    for key, value in sorted(params.items()):
        layer, _, leaf = key.rpartition("/")
        if leaf == "bias":
            fan_in = params[f"{layer}/kernel"].shape[0]
        elif leaf.startswith("hidden_bias_"):
            fan_in = params[f"{layer}/hidden_{leaf[-1]}"].shape[0]
        else:
            continue
        bound = 1.0 / np.sqrt(fan_in)
        out[key] = rng.uniform(-bound, bound, value.shape).astype(value.dtype)
    return out


# Shifts of single parameters so that every branch of a loss is taken on the recorded batch: with the drawn
# parameters QTRAN's Σ Q_i(u) − Q_jt(u) + V(s) is positive at every step (it ranges 0.06..1.5), so L_nopt's min(., 0)
# would be 0 throughout; V's output bias lowered by 0.75 makes it negative at about half the steps.
SHIFTS = {"qtran_1step": {"online/mixer/params/Dense_5/bias": -0.75}}


def _prepare(name: str):
    def prepare() -> Golden:
        _, _, _, backbone = vd_learner(OVERRIDES[name])
        params = _with_biases(vd_initial_params(backbone, SEED), SEED)
        for key, shift in SHIFTS.get(name, {}).items():
            params[key] = (params[key] + shift).astype(params[key].dtype)
        return Golden(inputs={"env_steps": np.asarray(0, np.int32)}, params=params)

    return prepare


# -- QPLEX (pymarl2: dmaq_qatten_learner, DMAQer) --------------------------------------------------------------

def qplex_ours(golden: Golden) -> dict[str, np.ndarray]:
    out, record, _ = _ours_step("qplex_1step", golden, ("mixer",))
    valid = _valid(record)
    result = _common_ours(out, record)
    result.update({
        "metric/td_loss": out["metric/td_loss"], "metric/td_error_abs": out["metric/td_error_abs"],
        "metric/target": out["metric/target"],
        "q_tot": _bm(out["metric/capture/mixer/0"]),
        "target_q_tot": _bm(out["metric/capture/mixer/1"]),
        "targets": _bm(out["metric/capture/returns/0"]) * valid,
    })
    return result


def qplex_authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    config, _, _, _ = vd_learner(OVERRIDES["qplex_1step"])
    algo = config.algo
    record = recorded_episodes(EPISODES)
    with authors_code(checkout / "src"):
        from controllers import REGISTRY as mac_registry

        learner_module = _load(checkout / "src", "learners/dmaq_qatten_learner.py", "xcheck_pymarl2_dmaq_learner")
        batch = pymarl_batch(record, record["avail"].shape[-1])
        args = _base_args(record, config, mixer="dmaq", mixing_embed_dim=algo.mixer_embed_dim,
                          hypernet_embed=algo.hypernet_embed, adv_hypernet_layers=2,
                          adv_hypernet_embed=algo.hypernet_embed, num_kernel=algo.qplex_kernels, is_minus_one=True,
                          weighted_head=True, is_adv_attention=True, is_stop_gradient=True, td_lambda=0.0)
        mac = mac_registry["basic_mac"](batch.scheme, {"agents": args.n_agents}, args)
        logger = RecordingLogger()
        learner = learner_module.DMAQ_qattenLearner(mac, batch.scheme, logger, args)
        layers = {"online": _agent_layers(AGENT, mac.agent) + _qplex_layers("mixer/params", learner.mixer,
                                                                             algo.qplex_kernels),
                  "target": _agent_layers(AGENT, learner.target_mac.agent)
                  + _qplex_layers("mixer/params", learner.target_mixer, algo.qplex_kernels)}
        for role, role_layers in layers.items():
            _copy_into(role_layers, golden.params, role)
        q, q_target, mixed, target_mixed, targets = [], [], [], [], []
        _record_forward(mac, q)
        _record_forward(learner.target_mac, q_target)
        _hook(learner.mixer, mixed)
        _hook(learner.target_mixer, target_mixed)
        build = learner_module.build_td_lambda_targets

        def recording_targets(*a, **k):
            out = build(*a, **k)
            targets.append(out)
            return out

        learner_module.build_td_lambda_targets = recording_targets
        # Departure reproduced: pymarl2's dmaq learner minimises 0.5 * mean squared TD error; ctde (and the original
        # QPLEX code) the mean squared TD error. Doubling the gradient before their clip and step is exactly the
        # gradient of ours, clipped at the same norm.
        with watched_clip(scale=2.0) as watch:
            learner.train(batch, t_env=0, episode_num=0)
        shape = record["avail"].shape
        n = args.n_agents
        result = {
            "loss": np.float32(2.0 * logger.stats["loss"]),
            "metric/td_loss": np.float32(2.0 * logger.stats["loss"]),
            "metric/td_error_abs": np.float32(logger.stats["td_error_abs"]),
            "metric/target": np.float32(logger.stats["target_mean"] * n),  # their mean over valid steps / n
            "scores/agent": _stack(q, shape), "scores/agent_target": _stack(q_target, shape),
            # each mixer is called twice: V part (is_v=True) and advantage part; Q_tot is their sum
            "q_tot": _np(mixed[0] + mixed[1]),
            "target_q_tot": _np(target_mixed[0] + target_mixed[1])[:, 1:],
            "targets": _np(targets[0]) * _valid(record),
        }
        result["grad_norm"] = np.float32(watch.norms[-1])
        result.update(_grads_of(layers["online"], watch))
        result.update(_read(layers["online"], "after/", gradients=False))
    return result



# -- QTRAN-base (pymarl2: qtran_learner, QTranBase with qtran_arch coma_critic) --------------------------------

def qtran_ours(golden: Golden) -> dict[str, np.ndarray]:
    out, record, _ = _ours_step("qtran_1step", golden, ("joint",))
    result = _common_ours(out, record)
    result.update({f"metric/{k}": out[f"metric/{k}"] for k in ("td_loss", "opt_loss", "nopt_loss", "td_error_abs",
                                                               "q_taken")})
    for index, name in enumerate(("taken", "greedy", "target")):
        result[f"q_jt/{name}"] = _bm(out[f"metric/capture/joint/{index}/0"])
        result[f"v/{name}"] = _bm(out[f"metric/capture/joint/{index}/1"])
    return result


def qtran_authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    config, _, _, _ = vd_learner(OVERRIDES["qtran_1step"])
    algo = config.algo
    record = recorded_episodes(EPISODES)
    with authors_code(checkout / "src"):
        from controllers import REGISTRY as mac_registry

        learner_module = _load(checkout / "src", "learners/qtran_learner.py", "xcheck_pymarl2_qtran_learner")
        batch = pymarl_batch(record, record["avail"].shape[-1])
        # qtran_arch coma_critic: Q_jt on state + one-hot joint action (ctde's documented choice; qtran.yaml has
        # qtran_paper, which reads the agents' GRU hidden states)
        args = _base_args(record, config, mixer="qtran_base", qtran_arch="coma_critic", network_size="small",
                          mixing_embed_dim=algo.qtran_embed, opt_loss=algo.qtran_opt_weight,
                          nopt_min_loss=algo.qtran_nopt_weight, optimizer="adam")
        mac = mac_registry["basic_mac"](batch.scheme, {"agents": args.n_agents}, args)
        logger = RecordingLogger()
        learner = learner_module.QLearner(mac, batch.scheme, logger, args)

        def mixer_layers(mixer):
            return _sequential_layers("mixer/params", 0, mixer.Q) + _sequential_layers("mixer/params", 3, mixer.V)

        layers = {"online": _agent_layers(AGENT, mac.agent) + mixer_layers(learner.mixer),
                  "target": _agent_layers(AGENT, learner.target_mac.agent) + mixer_layers(learner.target_mixer)}
        for role, role_layers in layers.items():
            _copy_into(role_layers, golden.params, role)
        q, q_target, mixed, target_mixed = [], [], [], []
        _record_forward(mac, q)
        _record_forward(learner.target_mac, q_target)
        _hook(learner.mixer, mixed)
        _hook(learner.target_mixer, target_mixed)
        with watched_clip() as watch:
            learner.train(batch, t_env=0, episode_num=0)
        shape = record["avail"].shape
        b, t = shape[0], shape[1] - 1
        stats = logger.stats
        result = {"loss": np.float32(stats["loss"]), "scores/agent": _stack(q, shape),
                  "scores/agent_target": _stack(q_target, shape),
                  **{f"metric/{k}": np.float32(stats[k]) for k in ("td_loss", "opt_loss", "nopt_loss",
                                                                   "td_error_abs")},
                  "metric/q_taken": np.float32(stats["agent_indiv_qs"])}
        # mixer calls in train(): Q_jt and V at the taken actions, then Q_jt at the agents' greedy actions;
        # the target mixer once, at the bootstrap (double-Q) actions of t + 1
        for name, (q_jt, v) in zip(("taken", "greedy", "target"), (mixed[0], mixed[1], target_mixed[0])):
            result[f"q_jt/{name}"] = _np(q_jt).reshape(b, t, 1)
            result[f"v/{name}"] = _np(v).reshape(b, t, 1)
        result["grad_norm"] = np.float32(watch.norms[-1])
        result.update(_grads_of(layers["online"], watch))
        result.update(_read(layers["online"], "after/", gradients=False))
    return result


# -- CW-QMIX / OW-QMIX (wqmix: max_q_learner, QMixerCentralFF, central_rnn agents) -------------------------------

def _wqmix_ours(name: str, golden: Golden) -> dict[str, np.ndarray]:
    out, record, _ = _ours_step(name, golden, ("mixer", "central_agent", "central_mixer"))
    result = _common_ours(out, record)
    result.update({f"metric/{k}": out[f"metric/{k}"] for k in ("qmix_loss", "central_loss", "td_error_abs",
                                                               "target")})
    result["q_tot"] = _bm(out["metric/capture/mixer/0"])
    result["central/scores"] = _bm(out["metric/capture/central_agent/0/1"])
    result["central/scores_target"] = _bm(out["metric/capture/central_agent/1/1"])
    result["q_star/target_next"] = _bm(out["metric/capture/central_mixer/0"])
    result["q_star/taken"] = _bm(out["metric/capture/central_mixer/1"])
    if name.startswith("cw"):
        result["q_star/target_greedy"] = _bm(out["metric/capture/central_mixer/2"])
    result["targets"] = _bm(out["metric/capture/returns/0"]) * _valid(record)
    return result


def _wqmix_authors(name: str, checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    config, _, _, _ = vd_learner(OVERRIDES[name])
    algo = config.algo
    if algo.central_hidden != algo.hidden_dim:
        raise ValueError("wqmix's central_rnn agent is as wide as the agents (args.rnn_hidden_dim): set "
                         "algo.central_hidden = algo.hidden_dim")
    record = recorded_episodes(EPISODES)
    with authors_code(checkout / "src"):
        from controllers import REGISTRY as mac_registry

        learner_module = _load(checkout / "src", "learners/max_q_learner.py", "xcheck_wqmix_max_q_learner")
        batch = pymarl_batch(record, record["avail"].shape[-1])
        args = _base_args(record, config, mixer="qmix", mixing_embed_dim=algo.mixer_embed_dim,
                          hypernet_layers=algo.hypernet_layers, hypernet_embed=algo.hypernet_embed,
                          central_loss=algo.central_loss_weight, qmix_loss=1, w=algo.wqmix_alpha,
                          hysteretic_qmix=name.startswith("ow"), central_mixing_embed_dim=algo.central_embed,
                          central_action_embed=1, central_mac="basic_central_mac", central_agent="central_rnn",
                          central_rnn_hidden_dim=algo.central_hidden, central_mixer="ff")
        mac = mac_registry["basic_mac"](batch.scheme, {"agents": args.n_agents}, args)
        logger = RecordingLogger()
        learner = learner_module.MAXQLearner(mac, batch.scheme, logger, args)

        def mixer_layers(qmix, central_agent, central_mixer):
            return (_qmix_layers("mixer/mixer/params", qmix)
                    + _agent_layers("mixer/central_agent/params", central_agent)
                    + _sequential_layers("mixer/central_mixer/params", 0, central_mixer.net)
                    + _sequential_layers("mixer/central_mixer/params", 4, central_mixer.V))

        layers = {"online": _agent_layers(AGENT, mac.agent)
                  + mixer_layers(learner.mixer, learner.central_mac.agent, learner.central_mixer),
                  "target": _agent_layers(AGENT, learner.target_mac.agent)
                  + mixer_layers(learner.target_mixer, learner.target_central_mac.agent,
                                 learner.target_central_mixer)}
        for role, role_layers in layers.items():
            _copy_into(role_layers, golden.params, role)
        q, q_target, central, central_target = [], [], [], []
        mixed, star, star_target = [], [], []
        _record_forward(mac, q)
        _record_forward(learner.target_mac, q_target)
        _record_forward(learner.central_mac, central)
        _record_forward(learner.target_central_mac, central_target)
        _hook(learner.mixer, mixed)
        _hook(learner.central_mixer, star)
        _hook(learner.target_central_mixer, star_target)
        with watched_clip() as watch:
            learner.train(batch, t_env=0, episode_num=0)
        shape = record["avail"].shape
        stats = logger.stats
        valid = _valid(record)
        # their 1-step targets, r + gamma (1 - terminated) Q*^target(s', u'), as train() forms them (not logged)
        terminated = (record["terminal"] & record["valid"])[:, :-1, None].astype(np.float32)
        targets = record["reward"][:, :-1, None] + args.gamma * (1 - terminated) * _np(star_target[0])
        result = {"loss": np.float32(stats["loss"]), "scores/agent": _stack(q, shape),
                  "scores/agent_target": _stack(q_target, shape),
                  **{f"metric/{k}": np.float32(stats[k]) for k in ("qmix_loss", "central_loss", "td_error_abs")},
                  "metric/target": np.float32(stats["target_mean"] * args.n_agents),
                  "q_tot": _np(mixed[0]),
                  "central/scores": _stack(central, shape), "central/scores_target": _stack(central_target, shape),
                  "q_star/target_next": _np(star_target[0]), "q_star/taken": _np(star[0]),
                  "targets": targets.astype(np.float32) * valid}
        if name.startswith("cw"):
            result["q_star/target_greedy"] = _np(star_target[1])
        result["grad_norm"] = np.float32(watch.norms[-1])
        result.update(_grads_of(layers["online"], watch))
        result.update(_read(layers["online"], "after/", gradients=False))
    return result


# -- DMIX (IGM-DA's copy of DFAC: iqn_learner, DMixer) ----------------------------------------------------------

def dmix_ours(golden: Golden) -> dict[str, np.ndarray]:
    out, record, _ = _ours_step("dmix_1step", golden, ("mixer",))
    result = _common_ours(out, record)
    result["metric/td_loss"] = out["metric/td_loss"]
    result["quantiles"] = _bm(out["metric/capture/x/quantiles"])
    result["quantiles_target"] = _bm(out["metric/capture/x/quantiles_target"])
    result["z_tot"] = _bm(out["metric/capture/mixer/0"])
    result["z_tot_target_next"] = _bm(out["metric/capture/mixer/1"])
    return result


def dmix_authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    import torch

    config, _, _, _ = vd_learner(OVERRIDES["dmix_1step"])
    algo = config.algo
    n_quantiles = algo.quantiles
    record = recorded_episodes(EPISODES)
    with authors_code(checkout / "src"):
        from controllers.basic_controller import BasicMAC

        learner_module = _load(checkout / "src", "learners/iqn_learner.py", "xcheck_hda_iqn_learner")
        batch = pymarl_batch(record, record["avail"].shape[-1])
        args = _base_args(record, config, mixer="dmix", mixing_embed_dim=algo.mixer_embed_dim,
                          hypernet_layers=algo.hypernet_layers, hypernet_embed=algo.hypernet_embed,
                          n_quantiles=n_quantiles, n_target_quantiles=n_quantiles, optimizer="RMSProp",
                          name="dmix")
        n_agents, n_actions = args.n_agents, args.n_actions
        # Departure reproduced: ctde's DMIX agent is pymarl's RNN agent with |A| x N outputs and fixed fractions
        # tau_k = (2k - 1) / 2N, in place of DFAC's IQN agent (sampled fractions, cosine embedding). Their learner
        # receives these outputs and fractions through the controller; its mixer and loss run as released.
        taus = torch.tensor((2.0 * np.arange(n_quantiles) + 1.0) / (2.0 * n_quantiles), dtype=torch.float32)

        class FixedFractionMAC(BasicMAC):
            def forward(self, ep_batch, t, forward_type=None):
                inputs = self._build_inputs(ep_batch, t)
                outs, self.hidden_states = self.agent(inputs, self.hidden_states)
                size = ep_batch.batch_size
                return outs.view(size * n_agents, n_actions, n_quantiles), taus.view(1, -1).expand(size, -1)

        mac = FixedFractionMAC(batch.scheme, {"agents": n_agents},
                               Namespace({**args, "n_actions": n_actions * n_quantiles}))
        logger = RecordingLogger()
        learner = learner_module.IQNLearner(mac, batch.scheme, logger, args)

        def mixer_layers(mixer):
            return _qmix_layers("mixer/params/qmix", mixer)

        layers = {"online": _agent_layers(AGENT, mac.agent) + mixer_layers(learner.mixer),
                  "target": _agent_layers(AGENT, learner.target_mac.agent) + mixer_layers(learner.target_mixer)}
        for role, role_layers in layers.items():
            _copy_into(role_layers, golden.params, role)
        q, q_target, mixed, target_mixed = [], [], [], []
        _record_forward(mac, q)
        _record_forward(learner.target_mac, q_target)
        _hook(learner.mixer, mixed)
        _hook(learner.target_mixer, target_mixed)
        with watched_clip() as watch:
            learner.train(batch, t_env=0, episode_num=0)
        shape = (*record["avail"].shape, n_quantiles)
        quantiles = _stack([out for out, _ in q], shape)
        quantiles_target = _stack([out for out, _ in q_target], shape)
        result = {"loss": np.float32(logger.stats["loss"]), "metric/td_loss": np.float32(logger.stats["loss"]),
                  "quantiles": quantiles, "quantiles_target": quantiles_target,
                  # what acting and double Q read: each action's mean (their learner: .mean(dim=4))
                  "scores/agent": quantiles.mean(-1), "scores/agent_target": quantiles_target.mean(-1),
                  "z_tot": _np(mixed[0])[:, :, 0], "z_tot_target_next": _np(target_mixed[0])[:, :, 0]}
        result["grad_norm"] = np.float32(watch.norms[-1])
        result.update(_grads_of(layers["online"], watch))
        result.update(_read(layers["online"], "after/", gradients=False))
    return result


def _wqmix_component(name: str, label: str, weighting: str) -> Component:
    return Component(
        name=name, system="wqmix",
        what=f"{label} one-step double-Q: agent and central-agent Q per step (online, target), QMIX Q_tot, "
             f"Q* (taken, target{', target at greedy' if name.startswith('cw') else ''}), TD targets, QMIX and "
             "central losses, grads, RMSprop step",
        prepare=_prepare(name), ours=lambda golden: _wqmix_ours(name, golden),
        authors=lambda checkout, golden: _wqmix_authors(name, checkout, golden),
        note=f"wqmix's max_q_learner run as released ({weighting}; w = 0.1, central_loss 1, RMSprop alpha 0.99 eps "
             "1e-5, clip 10). Widths reduced on both sides (agent 32, hypernet 32, central mixer 32); wqmix's "
             "central_rnn agent takes its width from rnn_hidden_dim (central_rnn_hidden_dim is unused), so "
             "algo.central_hidden = algo.hidden_dim here. Their logged w_to_use averages the weights over padded "
             "steps too, ours over valid steps: not compared (the weighted qmix_loss is). Targets compared on valid "
             "steps only (ours treat padding after a terminal as terminal, theirs do not; both masked). Shim: "
             "`.cuda()` returns the tensor.",
    )

COMPONENTS = [
    Component(
        name="qplex_1step", system="pymarl2",
        what="QPLEX (duplex dueling, 2 attention kernels) one-step double-Q TD: agent Q per step (online, target), "
             "Q_tot and target Q_tot per step, TD targets, loss, grads, Adam step",
        prepare=_prepare("qplex_1step"), ours=qplex_ours, authors=qplex_authors,
        verdict="departs on purpose",
        note="pymarl2's dmaq_qatten_learner minimises 0.5 x the masked mean squared TD error; ctde (like the original "
             "QPLEX code, wjh720/QPLEX as copied in wqmix/IGM-DA/CTDS) minimises the mean squared TD error without "
             "the 0.5. The cross-check doubles their gradient before their clip_grad_norm_ and reports 2 x their "
             "logged loss; everything else (DMAQer with weighted_head, is_minus_one, num_kernel attention on "
             "state + one-hot joint action, adv_hypernet_layers 2, detached advantage, max over available actions "
             "with -9999999) is their code as is. Widths reduced on both sides (agent 32, hypernet 32, 2 kernels). "
             "Shim: `.cuda()` returns the tensor (CPU run).",
    ),
    Component(
        name="qtran_1step", system="pymarl2",
        what="QTRAN-base one-step double-Q: agent Q per step (online, target), Q_jt and V at the taken, greedy and "
             "target actions, L_td, L_opt, L_nopt, loss, grads, Adam step",
        prepare=_prepare("qtran_1step"), ours=qtran_ours, authors=qtran_authors,
        verdict="departs on purpose",
        note="pymarl2's qtran.yaml sets qtran_arch: qtran_paper (Q_jt reads the agents' GRU hidden states with their "
             "actions); ctde's Q_jt reads the state and the one-hot joint action, pymarl's own `coma_critic` "
             "architecture (docs/backbones.md: paradigms expose utilities, not hidden states). The cross-check "
             "configures their QTranBase with qtran_arch coma_critic (network_size small); its unused "
             "action_encoding gets no gradient. Everything else is their qtran_learner as is (online Q_jt at the "
             "greedy action for L_opt, detached Q_jt in both constraints, Adam lr 5e-4, clip 10). Widths reduced on "
             "both sides (agent 32, Q_jt/V 32); V's output bias is lowered by 0.75 (SHIFTS) so that L_nopt is "
             "non-zero at about half the steps. Shim: `.cuda()` returns the tensor.",
    ),
    _wqmix_component("cw_qmix_1step", "CW-QMIX",
                     "hysteretic_qmix False: w = 1 where u = greedy or y > Q*^target(s, greedy)"),
    _wqmix_component("ow_qmix_1step", "OW-QMIX", "hysteretic_qmix True: w = 1 where Q_tot < y"),
    Component(
        name="dmix_1step", system="igm_da",
        what="DMIX one-step double-Q: per-step quantiles (online, target) and their means, Z_tot and target Z_tot "
             "per step (mean-shape mixer), quantile Huber loss, grads, RMSprop step",
        prepare=_prepare("dmix_1step"), ours=dmix_ours, authors=dmix_authors,
        verdict="departs on purpose",
        note="DFAC's DMIX (IGM-DA's copy: iqn_learner + DMixer) uses IQN agents: sampled fractions with a cosine "
             "embedding; ctde uses fixed fractions tau_k = (2k - 1)/2N (QR-DQN) on pymarl's RNN agent with |A| x N "
             "outputs (docs/backbones.md). The cross-check gives their learner a controller whose agent is their "
             "own pymarl RNNAgent with |A| x N outputs and whose fractions are ours (N = N' = 8); their DMixer, "
             "double-Q target, quantile Huber loss (F.smooth_l1_loss, mean over targets, sum over quantiles, mean "
             "over valid steps) and RMSprop step run as released. Widths reduced on both sides (agent 32, "
             "hypernet 32). Shim: `.cuda()` returns the tensor.",
    ),
]
