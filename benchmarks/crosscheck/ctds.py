"""CTDS (cathyhxh/CTDS) against ctde's `paradigm=ctds`: one learner step of the authors' `QLearner_Teach.train`
(QMIX teacher on the unlimited-sight observation `obs_kaitu`, student on the ordinary observation, each with its
own RMSprop and its own gradient-norm clip) beside ours (`ValueDecomposition.td_loss` + the partitioned optimizer
of `own_optimizer`), on the recorded sight-0 SMAX 3m episodes, with our initial parameters copied into theirs.

The authors' side runs their real `TeaMAC`, `StuMAC`, `RNNAgent`, `QMixer` and `QLearner_Teach.train` itself
(args from their own `config/default.yaml` + `config/algs/qmix.yaml`); it is observed, not changed:
  - per-step Q-values: each controller's `forward` is wrapped to keep its outputs;
  - mixer outputs: `mixer.forward` / `target_mixer.forward` are wrapped likewise; the TD target is then
    train()'s own line `rewards + gamma * (1 - terminated) * target_max_qvals` on the captured target Q_tot;
  - gradients: `torch.nn.utils.clip_grad_norm_` is wrapped to copy every `.grad` before it clips (train() calls it
    once for the teacher + mixer after the TD backward, once for the student after the distillation backward),
    and to keep the norms it returns (= the pre-clip global norm per optimizer);
  - losses from the learner's own `log_stat` values (RecordingLogger);
  - each optimizer's RMSprop state (square_avg) summed over its parameters, which shows the clip each applied.
Our side reads the same things from our real code: per-step scores, metrics, grads and post-step parameters
from `vd_step`, and the mixer outputs / TD target by recording (not replacing) the objective's mixer calls and
`returns` inside the same traced `td_loss`, handed out through its metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, gru_grads, gru_values, pymarl_batch, recorded_episodes,
                               vd_initial_params, vd_learner, vd_step, nested, watched_clip)

EPISODES = "smax_3m_sight0"
SEED = 0

# pymarl's (and CTDS's) settings, as their default.yaml + algs/qmix.yaml give them (`_authors_args` checks that
# their files still say so), except the agents' width: 32 on both sides instead of their 64, to keep the golden
# file small (the computation is the same at any width).
HIDDEN_DIM = 32
UNUSED_TARGET = "target/agents/student/"  # no loss reads the student's target network: not stored
QMIX = ["env=smax:3m", "env.episode_limit=20", "env.sight_range=0", "algo=qmix", "paradigm=ctds",
        "algo.optimizer=rmsprop", "algo.lr=0.0005", "algo.grad_clip=10", "algo.gamma=0.99", "algo.hidden_dim=32",
        "algo.mixer_embed_dim=32", "algo.hypernet_layers=2", "algo.hypernet_embed=64", "algo.double_q=true",
        "algo.td_lambda=0"]
# our QMIX mixer's parameter names (flax auto-names the Sequential hypernetworks' layers in creation order)
# -> the authors' QMixer modules
QMIX_LAYERS = {"Dense_0": ("hyper_w_1", 0), "Dense_1": ("hyper_w_1", 2), "hyper_b1": ("hyper_b_1", None),
               "Dense_2": ("hyper_w_final", 0), "Dense_3": ("hyper_w_final", 2), "Dense_4": ("V", 0),
               "Dense_5": ("V", 2)}


def _flat(tree: dict, prefix: str) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = np.asarray(value)
    return out


# -- our side ------------------------------------------------------------------------------------------------

class _RecordingMixer:
    """Our objective's mixer, every `apply` output kept in `store["mixer"]` (in call order: online Q_tot of the
    taken actions, then the target Q_tot of the bootstrap actions); everything else passes through."""

    def __init__(self, mixer, store):
        self._mixer, self._store = mixer, store

    def apply(self, *args, **kwargs):
        out = self._mixer.apply(*args, **kwargs)
        self._store.setdefault("mixer", []).append(out)
        return out

    def __getattr__(self, name):
        return getattr(self._mixer, name)


def _record_objective(backbone) -> None:
    """Make our objective hand its mixer outputs and TD target out through its metrics (same trace, same values)."""
    objective = backbone.objective
    store: dict = {}
    objective.mixer = _RecordingMixer(objective.mixer, store)
    returns, loss = objective.returns, objective.loss

    def recording_returns(x, next_values):
        store["targets"] = returns(x, next_values)
        return store["targets"]

    def recording_loss(params, target_params, x):
        store.clear()
        value, metrics = loss(params, target_params, x)
        q_tot, target_q_tot = store["mixer"]
        return value, {**metrics, "rec_q_tot": q_tot, "rec_target_q_tot": target_q_tot,
                       "rec_td_target": store["targets"] * x.mask[..., None]}

    objective.returns, objective.loss = recording_returns, recording_loss


def _ours(overrides):
    def ours(golden: Golden) -> dict[str, np.ndarray]:
        import jax.numpy as jnp
        import optax

        record = recorded_episodes(EPISODES)
        _, _, _, backbone = vd_learner(overrides)
        _record_objective(backbone)
        student = {k: v for k, v in golden.params.items() if k.startswith("online/agents/student/")}
        golden = Golden(inputs=golden.inputs, params={  # the unused target student: zeros
            **golden.params, **{k.replace("online/", "target/", 1): np.zeros_like(v) for k, v in student.items()}})
        out = vd_step(backbone, golden, record, int(golden.inputs["env_steps"]))
        result = {"scores/teacher": out["scores/teacher"], "scores/student": out["scores/student"],
                  "loss": out["loss"], "metric/td_loss": out["metric/td_loss"],
                  "metric/td_error_abs": out["metric/td_error_abs"], "metric/target": out["metric/target"],
                  "metric/distill_loss": out["metric/distill_loss"]}
        for name in ("q_tot", "target_q_tot", "td_target"):  # time-major [T, B, 1] -> batch-major
            result[name] = np.swapaxes(out[f"metric/rec_{name}"], 0, 1)
        result.update({k: v for k, v in out.items() if k.startswith(("grad/", "after/"))})
        result.update(_rms_totals(backbone, golden, out))
        # The pre-clip global norm of each optimizer's gradients (what each of the authors' clips sees).
        grads = {k: jnp.asarray(v) for k, v in out.items() if k.startswith("grad/")}
        student = [v for k, v in grads.items() if k.startswith("grad/agents/student/")]
        shared = [v for k, v in grads.items() if not k.startswith("grad/agents/student/")]
        result["grad_norm/shared"] = np.asarray(optax.tree.norm(shared))
        result["grad_norm/student"] = np.asarray(optax.tree.norm(student))
        return result

    return ours


def _prepare(overrides):
    def prepare() -> Golden:
        _, _, _, backbone = vd_learner(overrides)
        params = {k: v for k, v in vd_initial_params(backbone, SEED).items() if not k.startswith(UNUSED_TARGET)}
        return Golden(inputs={"env_steps": np.asarray(0, np.int32)}, params=params)

    return prepare


def _rms_totals(backbone, golden: Golden, out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """"rms_total/<group>": the sum of RMSprop's second-moment state over each optimizer's parameters after our
    optimizer's first step on vd_step's gradients, (1 - 0.99) * |clip(g)|^2 = 0.01 * min(|g|, clip)^2 per group
    when each group is clipped by its own global norm. A first RMSprop step is nearly invariant to the gradient's
    scale (g / sqrt(0.01 g^2)), so the post-step parameters barely show the clip; this state shows it squared."""
    import jax

    from ctde.algos.value_decomposition import VDParams
    from crosscheck.common import flatten

    def tree(flat, prefix):  # plain nested dicts in VDParams: all the optimizer's labels need
        return VDParams(agents=nested(flat, prefix + "agents/"), mixer=nested(flat, prefix + "mixer/"))

    params, grads = tree(golden.params, "online/"), tree(out, "grad/")
    state = jax.jit(lambda g, p: backbone.optimizer.update(g, backbone.optimizer.init(p), p)[1])(grads, params)
    totals = {"shared": 0.0, "student": 0.0}
    for path, value in flatten(state).items():
        if "/nu/" in path:  # optax.partition: inner_states/<group>/inner_state/<chain index>/nu/<param path>
            group = "student" if path.split("/nu/", 1)[1].startswith("agents/student/") else "shared"
            totals[group] += np.sum(np.asarray(value, np.float64))
    return {f"rms_total/{group}": np.float32(total) for group, total in totals.items()}


# -- the authors' side (PyTorch) -----------------------------------------------------------------------------

def _authors_args(src: Path, record: dict, overrides: list[str]) -> Namespace:
    """Their args: config/default.yaml updated by config/algs/qmix.yaml (as their main.py merges them), plus what
    their runner adds from the env; checked against our overrides."""
    import yaml

    args = {}
    for name in ("default.yaml", "algs/qmix.yaml"):
        with open(src / "config" / name) as f:
            args.update(yaml.safe_load(f))
    args.update(n_agents=record["avail"].shape[2], n_actions=record["avail"].shape[3],
                state_shape=record["state"].shape[-1], use_cuda=False, device="cpu")
    options = dict(o.split("=", 1) for o in overrides)
    expected = {"lr": float(options["algo.lr"]), "optim_alpha": 0.99, "optim_eps": 1e-5,
                "gamma": float(options["algo.gamma"]), "rnn_hidden_dim": 64,
                "mixer": "qmix", "mixing_embed_dim": int(options["algo.mixer_embed_dim"]),
                "hypernet_layers": int(options["algo.hypernet_layers"]),
                "hypernet_embed": int(options["algo.hypernet_embed"]), "double_q": True, "obs_last_action": True,
                "obs_agent_id": True, "learner": "q_learner", "grad_norm_clip": float(options["algo.grad_clip"])}
    differs = {k: (args.get(k), v) for k, v in expected.items() if args.get(k) != v}
    if differs:
        raise ValueError(f"the authors' config no longer says what the cross-check assumes (theirs, ours): {differs}")
    args["rnn_hidden_dim"] = int(options["algo.hidden_dim"])  # HIDDEN_DIM on both sides
    return Namespace(args)


def _copy_agent(agent, params: dict) -> None:
    copy_dense(agent.fc1, params["fc1"])
    copy_gru(agent.rnn, params["gru"])
    copy_dense(agent.fc2, params["fc2"])


def _agent_tree(agent, values: bool) -> dict:
    dense, gru = (dense_values, gru_values) if values else (dense_grads, gru_grads)
    return {"fc1": dense(agent.fc1), "gru": gru(agent.rnn), "fc2": dense(agent.fc2)}


def _mixer_layer(mixer, ours_name):
    module, index = QMIX_LAYERS[ours_name]
    layer = getattr(mixer, module)
    return layer if index is None else layer[index]


def _copy_mixer(mixer, params: dict) -> None:
    for name in QMIX_LAYERS:
        copy_dense(_mixer_layer(mixer, name), params[name])


def _mixer_tree(mixer, values: bool) -> dict:
    return {name: (dense_values if values else dense_grads)(_mixer_layer(mixer, name)) for name in QMIX_LAYERS}


def _authors(overrides):
    def authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
        import torch as th

        record = recorded_episodes(EPISODES)
        src = Path(checkout) / "src"
        online, target = nested(golden.params, "online/"), nested(golden.params, "target/")  # no target student
        with authors_code(src):
            from controllers.stu_controller import StuMAC
            from controllers.tea_controller import TeaMAC
            from learners.q_learner_teach import QLearner_Teach

            args = _authors_args(src, record, overrides)
            obs_dim = record["obs"].shape[-1]
            batch = pymarl_batch(record, args.n_actions, extra={
                "obs_kaitu": (record["view_full_obs"], {"vshape": obs_dim, "group": "agents"})})
            groups = {"agents": args.n_agents}
            mac_t, mac_s = TeaMAC(batch.scheme, groups, args), StuMAC(batch.scheme, groups, args)
            logger = RecordingLogger()
            learner = QLearner_Teach(mac_t, mac_s, batch.scheme, logger, args)
            _copy_agent(learner.mac.agent, online["agents"]["teacher"]["params"])
            _copy_agent(learner.mac_s.agent, online["agents"]["student"]["params"])
            _copy_mixer(learner.mixer, online["mixer"]["params"])
            _copy_agent(learner.target_mac.agent, target["agents"]["teacher"]["params"])
            _copy_mixer(learner.target_mixer, target["mixer"]["params"])

            # observe: per-step outputs of both controllers and both mixers
            seen = {"teacher": [], "student": [], "mixer": [], "target_mixer": []}

            def watch(obj, key):
                forward = obj.forward

                def recorded(*a, **k):
                    out = forward(*a, **k)
                    seen[key].append(out.detach().clone())
                    return out

                obj.forward = recorded

            watch(learner.mac, "teacher")
            watch(learner.mac_s, "student")
            watch(learner.mixer, "mixer")
            watch(learner.target_mixer, "target_mixer")

            # observe: the gradients before each optimizer's clip, and the norms the clips see
            with watched_clip() as watch:
                learner.train(batch, t_env=int(golden.inputs["env_steps"]), episode_num=0)
            norms = watch.norms
            if len(norms) != 2 or learner.last_target_update_episode != 0:
                raise RuntimeError("QLearner_Teach.train no longer clips twice / updated its targets")

            out = {"scores/teacher": th.stack(seen["teacher"], 1).numpy(),
                   "scores/student": th.stack(seen["student"], 1).numpy()}
            stats = logger.stats
            out["metric/td_loss"] = np.float32(stats["loss_TD"])
            out["metric/distill_loss"] = np.float32(stats["loss_KD"])
            out["loss"] = np.float32(stats["loss_TD"] + stats["loss_KD"])  # our total: TD + 1.0 * distillation
            out["metric/td_error_abs"] = np.float32(stats["td_error_abs"])
            # their target_mean divides by n_agents as well (a per-agent habit on a [B, T, 1] Q_tot)
            out["metric/target"] = np.float32(stats["target_mean"] * args.n_agents)
            (q_tot,), (target_q_tot,) = seen["mixer"], seen["target_mixer"]
            out["q_tot"], out["target_q_tot"] = q_tot.numpy(), target_q_tot.numpy()
            # train()'s own target line on the captured target Q_tot, masked as its loss masks it
            rewards = batch["reward"][:, :-1]
            terminated = batch["terminated"][:, :-1].float()
            mask = batch["filled"][:, :-1].float()
            mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])
            targets = rewards + args.gamma * (1 - terminated) * target_q_tot
            out["td_target"] = (targets * mask).numpy()
            out["grad_norm/shared"], out["grad_norm/student"] = np.float32(norms[0]), np.float32(norms[1])

            # RMSprop's second-moment state summed over each optimizer's parameters (see _rms_totals)
            for group, optimiser in (("shared", learner.optimiser), ("student", learner.optimiser_KD)):
                out[f"rms_total/{group}"] = np.float32(sum(s["square_avg"].double().sum().item()
                                                           for s in optimiser.state.values()))
            # gradients (pre-clip) and parameters after the step, in our layout (the layout helpers read `.grad`)
            watch.restore()
            for kind, values in (("grad", False), ("after", True)):
                tree = {"agents": {"teacher": {"params": _agent_tree(learner.mac.agent, values)},
                                   "student": {"params": _agent_tree(learner.mac_s.agent, values)}},
                        "mixer": {"params": _mixer_tree(learner.mixer, values)}}
                out.update(_flat(tree, f"{kind}/"))
        return {k: np.asarray(v, np.float32) for k, v in out.items()}

    return authors


# Post-step parameters agree only to ~4e-5 relative (the rest to <=2e-6): RMSprop's first step from a zero state maps
# the clipped g to lr*g/(0.1|g| + 1e-5), whose slope is up to lr/1e-5 = 50 for |g| <~ 1e-5; the mixer's zero-initialised
# biases are that update alone after the step (scale lr/0.1 = 5e-3), so the float32 round-off of their small
# gradient entries shows magnified (worst: hyper_w2's first bias (Dense_2), entry 0, g = 6.7e-5 agreeing to 1e-8,
# after the step 1.8e-7 apart, 3.7e-5 of the array's largest value).
TOLERANCE = 1e-4
NOTE = ("tolerance 1e-4: gradients agree to float32 round-off (<=1.3e-6 rel), but RMSprop's first step "
        "lr*g/(0.1|g|+1e-5) magnifies the round-off of small gradient entries of the mixer's zero-initialised biases "
        "(worst 3.7e-5 rel, after/mixer Dense_2 bias). Agents 32 wide instead of their 64 (golden-file size). "
        "Student clip inactive (norm 7.7), teacher+mixer clip active (12.3 > 10): rms_total shows each optimizer "
        "clips its own gradients (a single clip over both would scale the student's by 0.69).")

COMPONENTS = [
    Component(
        name="ctds_qmix", system="ctds",
        what="CTDS on QMIX, one QLearner_Teach.train step (authors' config): teacher (full-sight obs) and student "
             "per-step Q, mixer Q_tot and target Q_tot, TD target, TD and distillation losses, pre-clip grad norms "
             "per optimizer, grads of every parameter, parameters after both optimizers' steps, "
             "each optimizer's RMSprop state total (shows its own clip)",
        prepare=_prepare(QMIX), ours=_ours(QMIX), authors=_authors(QMIX), tolerance=TOLERANCE, note=NOTE),
]
