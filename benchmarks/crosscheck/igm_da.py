"""IGM-DA against the authors' released code (momo-xiaoyi/pymarl_HDA, the "HDA" configs).

The paper's runs use `src/config/algs/qmix_HDA.yaml` (learner `q_learner_teach`), `qplex_HDA.yaml`
(`dmaq_qatten_learner_teach`) and `dmix_HDA.yaml` (`iqn_learner_teach`); the BC ablation is `qmix_HBC.yaml`
(`q_learner_teach_bijiao`, run by `run2.py`, whose runner collects with the expert `learner.mac_all`). In all of
them the student is `basic_mac_avalible_action` (input obs ⊕ last action ⊕ avail ⊕ id, pymarl's `rnn` agent)
and the expert `basic_mac_all` (input `obs_all` ⊕ last action ⊕ id, where `obs_all` is the runner's
`env.get_obs_all()`: SMAC's observation at sight range 9), with a target copy of the expert and of the mixer
and none of the student.

Each component runs the authors' learner `train()` itself (Namespace args, a RecordingLogger and a pymarl batch
of ctde's recorded SMAX 3m episodes at sight range 0, `view_full_obs` as their `obs_all`), with our initial
parameters (online and target) copied into their networks. Captured: the agents' per-step Q-values (wrapping the
two controllers' `forward`), train()'s own locals at its return (`targets`, `masked_td_error`, `mask`,
`loss_teach`; a profile hook on the train frame), the gradients (snapshot of `.grad` as train() calls clip_grad_norm_)
and the parameters after its RMSprop step. Ours: `vd_learner([... "paradigm=igm_da"])` and `vd_step`.

What the comparison pins down (all as in ctde): the student's input order obs ⊕ last action ⊕ avail ⊕ id and the
expert's obs_all ⊕ last action ⊕ id (zeros as last action at t = 0); the double-Q bootstrap action is the
student's greedy available action (-9999999 on unavailable ones), evaluated by the expert's *target* network
through the target mixer (the BC ablation: the online expert's greedy action); the student has no target
network; the imitation target is one-hot(argmax of the detached expert over available actions); the imitation
loss is Σ over (valid step, agent, action) of the squared error / (#valid steps · n · |A|), i.e. the mean over
actions and agents and a masked mean over steps, dead agents included, weight 1, summed with the TD loss; one
RMSprop (lr 5e-4, alpha 0.99, eps 1e-5) over student, expert and mixer after a global-norm clip at 10.

DMIX-DA (`iqn_learner_teach`, dmix_HDA.yaml) is not cross-checked: there the *student* is an IQN network too
(`basic_mac_iqn_avalible_action`, agent `iqn_rnn`: quantile outputs [n, A, N] from sampled fractions with a
cosine embedding, greedy by their mean, and every quantile regressed onto the expert's one-hot), while ctde's
DMIX-DA student is the plain RNN agent with one value per action and its expert a fixed-fraction quantile head
(docs/backbones.md). Making the two sides agree would replace both of their agent networks and their loss, so
nothing of their code would be left to compare.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, flatten, gru_grads, gru_values, pymarl_batch,
                               recorded_episodes, vd_initial_params, vd_learner, vd_step, nested,
                               watched_clip)

SYSTEM = "igm_da"
EPISODES = "smax_3m_sight0"
# Smaller hidden layers than the paper's 64 (their args take the same sizes) keep the golden files small.
BASE = ["env=smax:3m", "env.episode_limit=20", "env.sight_range=0", "algo.optimizer=rmsprop", "paradigm=igm_da",
        "algo.hidden_dim=32", "algo.hypernet_embed=32"]
SEED = 0
ENV_STEPS = 0


@functools.lru_cache(maxsize=None)
def _learner(overrides: tuple[str, ...]):
    return vd_learner(list(overrides))


# -- our side ------------------------------------------------------------------------------------------------

# The student has no target network: ctde keeps target parameters for it (the paradigm's whole tree) that no
# loss reads. The golden file leaves them out and `ours` fills them with zeros (were they read, the outputs
# would show it).
UNUSED_TARGET = "target/agents/student/"


def _prepare(overrides: tuple[str, ...]):
    def prepare() -> Golden:
        _, _, _, backbone = _learner(overrides)
        params = {k: v for k, v in vd_initial_params(backbone, SEED).items() if not k.startswith(UNUSED_TARGET)}
        return Golden(inputs={"env_steps": np.int32(ENV_STEPS)}, params=params)
    return prepare


def _ours(overrides: tuple[str, ...], keys: tuple[str, ...]):
    def ours(golden: Golden) -> dict[str, np.ndarray]:
        _, _, _, backbone = _learner(overrides)
        student = {k: v for k, v in golden.params.items() if k.startswith("online/agents/student/")}
        params = {**golden.params, **{k.replace("online/", "target/", 1): np.zeros_like(v) for k, v in student.items()}}
        golden = Golden(inputs=golden.inputs, params=params)
        out = vd_step(backbone, golden, recorded_episodes(EPISODES), int(golden.inputs["env_steps"]))
        result = {key: out[key] for key in keys}
        result.update({k: v for k, v in out.items() if k.startswith(("grad/", "after/"))})
        grads = [v for k, v in out.items() if k.startswith("grad/")]
        result["grad_norm"] = np.sqrt(sum(np.sum(np.asarray(g, np.float64) ** 2) for g in grads))
        return result
    return ours


# -- the authors' side ---------------------------------------------------------------------------------------

def _copy_agent(agent, params: dict) -> None:
    copy_dense(agent.fc1, params["fc1"])
    copy_gru(agent.rnn, params["gru"])
    copy_dense(agent.fc2, params["fc2"])


def _agent_layout(agent, grads: bool) -> dict:
    dense, gru = (dense_grads, gru_grads) if grads else (dense_values, gru_values)
    return _copied({"fc1": dense(agent.fc1), "gru": gru(agent.rnn), "fc2": dense(agent.fc2)})


def _copied(tree: dict) -> dict:
    """NumPy copies of a tree of arrays (`.numpy()` views share the tensors' memory, which clipping and the
    optimizer's step then overwrite)."""
    return {k: _copied(v) if isinstance(v, dict) else np.array(v, copy=True) for k, v in tree.items()}


# QMIX: their QMixer (hypernet_layers 2) by our flax names (nn.Sequential layers bound to the mixer scope are
# named in creation order: hyper_w1 = Dense_0, Dense_1; hyper_w2 = Dense_2, Dense_3; value = Dense_4, Dense_5).
def _qmix_layers(mixer) -> dict:
    return {"Dense_0": mixer.hyper_w_1[0], "Dense_1": mixer.hyper_w_1[2], "hyper_b1": mixer.hyper_b_1,
            "Dense_2": mixer.hyper_w_final[0], "Dense_3": mixer.hyper_w_final[2],
            "Dense_4": mixer.V[0], "Dense_5": mixer.V[2]}


def _qplex_layers(mixer) -> dict:
    """Our QPLEXMixer (creation order: hyper_w, hyper_v, then per kernel key, agents, action; 2 Dense each) in
    their DMAQer (hyper_w_final, V, si_weight's extractors), configured with 2-layer extractors."""
    layers = {"Dense_0": mixer.hyper_w_final[0], "Dense_1": mixer.hyper_w_final[2],
              "Dense_2": mixer.V[0], "Dense_3": mixer.V[2]}
    weight = mixer.si_weight
    for k in range(weight.num_kernel):
        for j, extractors in enumerate((weight.key_extractors, weight.agents_extractors, weight.action_extractors)):
            first = 4 + 6 * k + 2 * j
            layers[f"Dense_{first}"] = extractors[k][0]
            layers[f"Dense_{first + 1}"] = extractors[k][2]
    return layers


def _args(overrides: tuple[str, ...], **extra) -> Namespace:
    algo = _learner(overrides)[0].algo
    spec = recorded_episodes(EPISODES)
    n_agents = spec["action"].shape[-1]
    n_actions = spec["avail"].shape[-1]
    args = Namespace(
        n_agents=n_agents, n_actions=n_actions, state_shape=spec["state"].shape[-1],
        obs_shape=spec["obs"].shape[-1], episode_limit=20,
        # default.yaml
        gamma=algo.gamma, batch_size=spec["action"].shape[0], lr=algo.lr, optim_alpha=0.99, optim_eps=0.00001,
        grad_norm_clip=algo.grad_clip, rnn_hidden_dim=algo.hidden_dim, obs_agent_id=True, obs_last_action=True,
        learner_log_interval=2000,
        use_cuda=False, device="cpu",
        # qmix_HDA.yaml
        action_selector="epsilon_greedy", epsilon_start=1.0, epsilon_finish=0.1, epsilon_anneal_time=50000,
        target_update_interval=200, agent_output_type="q", double_q=True, mixer="qmix",
        mixing_embed_dim=algo.mixer_embed_dim,
        hypernet_layers=algo.hypernet_layers, hypernet_embed=algo.hypernet_embed, agent="rnn",
        mac="basic_mac_avalible_action", upper_mac="basic_mac_all", agent_all="rnn", if_lower=True)
    args.update(extra)
    return args


def _run_teach_learner(checkout, golden: Golden, learner_module: str, learner_class: str, args: Namespace,
                       mixer_layers, loss_frame: str = "train") -> dict[str, np.ndarray]:
    """The authors' learner's train() on the recorded batch with our parameters; see the module docstring.
    `loss_frame`: the learner method whose locals hold the loss terms (QPLEX's train() calls sub_train())."""
    record = recorded_episodes(EPISODES)
    params = golden.params
    with authors_code(checkout / "src"):
        import importlib

        from controllers import REGISTRY as mac_registry

        module = importlib.import_module(learner_module)
        batch = pymarl_batch(record, args.n_actions, extra={
            "obs_all": (record["view_full_obs"], {"vshape": record["view_full_obs"].shape[-1], "group": "agents"})})
        mac = mac_registry[args.mac](batch.scheme, {"agents": args.n_agents}, args)
        learner = getattr(module, learner_class)(mac, batch.scheme, RecordingLogger(), args)

        _copy_agent(learner.mac.agent, nested(params, "online/agents/student/params/"))
        _copy_agent(learner.mac_all.agent, nested(params, "online/agents/expert/params/"))
        _copy_agent(learner.target_mac_all.agent, nested(params, "target/agents/expert/params/"))
        for role, mixer in (("online", learner.mixer), ("target", learner.target_mixer)):
            for name, layer in mixer_layers(mixer).items():
                copy_dense(layer, {leaf: params[f"{role}/mixer/params/{name}/{leaf}"] for leaf in ("kernel", "bias")})

        outputs: dict[str, list] = {"student": [], "expert": []}

        def recording(name, forward):
            def wrapped(*a, **k):
                value = forward(*a, **k)
                outputs[name].append(value.detach().numpy().copy())
                return value
            return wrapped

        learner.mac.forward = recording("student", learner.mac.forward)
        learner.mac_all.forward = recording("expert", learner.mac_all.forward)

        train_code = getattr(type(learner), loss_frame).__code__
        local = {}

        def profile(frame, event, arg):
            if event == "return" and frame.f_code is train_code:
                local.update(frame.f_locals)

        previous = sys.getprofile()
        # watched_clip also makes `.cuda()` return the tensor itself: dmaq_qatten_learner_teach builds one with it.
        with watched_clip() as watch:
            sys.setprofile(profile)
            try:
                learner.train(batch, t_env=0, episode_num=0)
            finally:
                sys.setprofile(previous)
        # The gradients of the total loss, as they reached train()'s clip.
        watch.restore()
        grads = {"student": _agent_layout(learner.mac.agent, grads=True),
                 "expert": _agent_layout(learner.mac_all.agent, grads=True),
                 "mixer": _copied({name: dense_grads(layer) for name, layer in mixer_layers(learner.mixer).items()})}

        stats = learner.logger.stats
        mask = local["mask"]  # [B, T, 1], the TD mask
        td = local["masked_td_error"]
        expert = np.stack(outputs["expert"], axis=1)  # [B, T + 1, n, A]
        chosen = np.take_along_axis(expert[:, :-1], record["action"][:, :-1, :, None], axis=-1)[..., 0]
        step_mask = mask.numpy()  # [B, T, 1]
        out = {
            "scores/student": np.stack(outputs["student"], axis=1),
            "scores/expert": expert,
            "loss": np.float32(stats["loss"]),
            "grad_norm": np.float32(stats["grad_norm"]),
            "metric/td_loss": ((td ** 2).sum() / mask.sum()).detach().numpy(),
            "metric/td_error_abs": np.float32(stats["td_error_abs"]),
            "metric/target": ((local["targets"] * mask).sum() / mask.sum()).detach().numpy(),
            # our q_taken: mean utility of the taken action over valid steps and agents (theirs logs the mixed
            # value over n instead), from their expert's per-step outputs
            "metric/q_taken": np.sum(chosen * step_mask) / (step_mask.sum() * args.n_agents),
            "metric/imitation_loss": local["loss_teach"].detach().numpy(),
        }
        out.update(flatten({"agents": {"expert": {"params": grads["expert"]},
                                        "student": {"params": grads["student"]}},
                            "mixer": {"params": grads["mixer"]}}, prefix="grad/"))
        after = {"agents": {"expert": {"params": _agent_layout(learner.mac_all.agent, grads=False)},
                            "student": {"params": _agent_layout(learner.mac.agent, grads=False)}},
                 "mixer": {"params": _copied({name: dense_values(layer)
                                              for name, layer in mixer_layers(learner.mixer).items()})}}
        out.update(flatten(after, prefix="after/"))
    return {key: np.asarray(value, np.float32) for key, value in out.items()}


# The post-step parameters are compared at 1e-4 rather than 1e-5: the gradients agree to float32 round-off
# (relative 1e-7 to 1e-6 of each array's scale), but RMSprop's first step from a zero state maps g to
# lr·g/(0.1|g| + 1e-5), whose slope is up to lr/1e-5 = 50 for |g| ≲ 1e-5 (and clipping, the grad norm is ~21 for
# QMIX, shrinks g further), so a zero-initialised bias, whose value after the step is that update alone, shows
# the round-off of its near-zero gradient entries magnified: up to 1e-5 relative here (the BC ablation's expert
# GRU hidden_bias_z), 4e-5 at the paper's hidden size 64 (an entry with g = -4.3e-5 and 1e-8 round-off).
AFTER_TOLERANCE = 1e-4
AFTER_NOTE = ("Hidden sizes 32 (paper 64) on both sides to keep the golden file small. Tolerance 1e-4: gradients "
              "agree to float32 round-off (<=1e-6 rel), but RMSprop's first step lr*g/(0.1|g|+1e-5) magnifies the "
              "round-off of near-zero gradient entries of zero-initialised biases (up to 1e-5 rel here, 4e-5 at "
              "hidden size 64).")

KEYS = ("scores/student", "scores/expert", "loss", "metric/td_loss", "metric/td_error_abs", "metric/target",
        "metric/q_taken", "metric/imitation_loss")

QMIX = tuple(BASE + ["algo=qmix"])
QPLEX_KERNELS = 2  # qplex_HDA.yaml has 10; fewer keep the golden file small (both sides take the same count)
QPLEX = tuple(BASE + ["algo=qplex", f"algo.qplex_kernels={QPLEX_KERNELS}"])
QMIX_BC = tuple(BASE + ["algo=qmix", "igm_da.collector=expert"])


def _authors_qmix(checkout, golden):
    return _run_teach_learner(checkout, golden, "learners.q_learner_teach", "QLearner", _args(QMIX), _qmix_layers)


def _authors_qmix_bc(checkout, golden):
    return _run_teach_learner(checkout, golden, "learners.q_learner_teach_bijiao", "QLearner",
                              _args(QMIX_BC, learner="q_learner_teach_bijiao", run="run2"), _qmix_layers)


def _authors_qplex(checkout, golden):
    # qplex_HDA.yaml, except adv_hypernet_layers 3 -> 2 (ours has 2-layer extractors; see the component's note)
    algo = _learner(QPLEX)[0].algo
    args = _args(QPLEX, learner="dmaq_qatten_learner_teach", mixer="dmaq", adv_hypernet_layers=2,
                 adv_hypernet_embed=algo.hypernet_embed, num_kernel=algo.qplex_kernels, is_minus_one=True,
                 weighted_head=True, is_adv_attention=True, is_stop_gradient=True)
    return _run_teach_learner(checkout, golden, "learners.dmaq_qatten_learner_teach", "DMAQ_qattenLearner", args,
                              _qplex_layers, loss_frame="sub_train")


COMPONENTS = [
    Component(
        name="igm_da_qmix", system=SYSTEM,
        what="QMIX-DA learner step (q_learner_teach.train): student and expert Q per step, TD loss and target, "
             "imitation loss, total loss, grads, params after RMSprop",
        prepare=_prepare(QMIX), ours=_ours(QMIX, KEYS), authors=_authors_qmix,
        tolerance=AFTER_TOLERANCE, note=AFTER_NOTE),
    Component(
        name="igm_da_bc", system=SYSTEM,
        what="BC ablation (igm_da.collector=expert) vs q_learner_teach_bijiao.train (qmix_HBC): bootstrap at "
             "the expert's own greedy action; same outputs as igm_da_qmix",
        prepare=_prepare(QMIX_BC), ours=_ours(QMIX_BC, KEYS), authors=_authors_qmix_bc,
        tolerance=AFTER_TOLERANCE, note=AFTER_NOTE),
    Component(
        name="igm_da_qplex", system=SYSTEM,
        what="QPLEX-DA learner step (dmaq_qatten_learner_teach.train): student and expert Q per step, "
             "TD loss and target, imitation loss, total loss, grads, params after RMSprop",
        prepare=_prepare(QPLEX), ours=_ours(QPLEX, KEYS), authors=_authors_qplex,
        tolerance=AFTER_TOLERANCE, verdict="departs on purpose",
        note="qplex_HDA.yaml's advantage-attention extractors (key, agents, action) are 3-layer MLPs "
             "(adv_hypernet_layers 3); ctde's QPLEX mixer has 2-layer ones (as pymarl2's qplex.yaml), so their "
             "DMAQer runs with adv_hypernet_layers=2; otherwise qplex_HDA.yaml, with 2 kernels (their 10) and "
             "hidden sizes 32 on both sides to keep the golden file small; tolerance 1e-4 as igm_da_qmix. "
             "Shim: Tensor.cuda() -> the tensor itself during train() (their learner builds the bootstrap "
             "one-hot with .cuda())."),
]
