"""CADP (Zhou et al., IJCAI 2025) against the authors' released code (zyh1999/CADP).

Value decomposition (CADP-VD/src): their `ATTRNNAgent` (modules/agents/atten_rnn_agent.py, attention in
modules/layers/self_atten.py) through their `NMAC` controller, and their `q_learner_teacher.QLearner.train()`
(QMIX and VDN with the pruning KL) with a pymarl batch of our recorded SMAX episodes; ours: the CADP paradigm
(`ctde.paradigms.cadp`, `ctde.nets.cadp`) in the real `ValueDecomposition.td_loss` and optimizer (`vd_step`).

Parameter mapping (ours -> theirs): fc1 -> fc1, gru -> rnn (GRUCell), query/key/value -> att.toqueries/tokeys/
tovalues (bias-free; both lay the 128 outputs out head-major, feature h·32 + d, since theirs `.view(b, n, 4, 32)`
and ours reshapes [..., 4, 32]), advice -> fc2, head_in -> fc_inter[0], head_hidden -> fc_last[0], head_out ->
fc_last[2]. QMIX (their config sets no `hypernet_layers`, so their QMixer uses one-layer hypernetworks; ours is
run with algo.hypernet_layers=1): hyper_w1 -> hyper_w_1, hyper_b1 -> hyper_b_1, hyper_w2 -> hyper_w_final, the
state value V (ours Dense_0, Dense_1) -> V[0], V[2].

Their D model: the same forward computes it (`agent.q_v`, the head on [h, ReLU(fc2(values))], i.e. the attention
replaced by the identity), returned when `use_q_v` is set; we read `agent.q_v` after every controller step.

Gradients: their train() runs unchanged; `torch.nn.utils.clip_grad_norm_` is wrapped for the call so the raw
gradients (before clipping, as our "grad/" are) are copied before it clips; the parameters after the step are
read back from their modules. Their pruning loss is not logged: it is (loss with pruning − loss without)/α, the
second loss from a second train() on a fresh learner at t_env = breakpoint (their strict `t_env > breakpoint`
keeps pruning off there). Their logged target_mean and q_taken_mean
divide by n_agents on top of the masked mean of the mixed Q_tot: target_mean·n is our `target`; q_taken_mean is
our `q_taken` (the agents' mean utility of the taken actions) only for VDN, where Q_tot is the sum, so it is
compared there only.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, flatten, gru_grads, gru_values, pymarl_batch,
                               nested, recorded_episodes, trajectory, unflatten_like, vd_initial_params, vd_learner,
                               vd_step, watched_clip)

SYSTEM = "cadp"
VD_SOURCE = "CADP-VD/src"
EPISODES = "smax_3m"
BASE = ("env=smax:3m", "env.episode_limit=20", "paradigm=cadp")
# The learner components use narrower networks than the released (64, 4, 32) so that their golden files (online and
# target parameters, gradients and parameters after the step) stay small; four heads are kept, so the mean over
# heads·n·n and the head-major layout are exercised as released. cadp_agent runs the released widths.
LEARNER_WIDTH = (32, 4, 8)  # (hidden_dim, heads, head_dim)
ENV_STEPS = 1000  # env steps at the update: after the pruning start (ours prune_start=0, theirs breakpoint=0)
AGENT = "agents/agent/params/"


@functools.lru_cache(maxsize=None)
def _learner(*overrides: str):
    return vd_learner([*BASE, *overrides])


# -- the authors' side ----------------------------------------------------------------------------------------

AGENT_DENSE = (("fc1", "fc1"), ("query", "att.toqueries"), ("key", "att.tokeys"), ("value", "att.tovalues"),
               ("advice", "fc2"), ("head_in", "fc_inter.0"), ("head_hidden", "fc_last.0"), ("head_out", "fc_last.2"))
QMIX_DENSE = (("hyper_w1", "hyper_w_1"), ("hyper_b1", "hyper_b_1"), ("hyper_w2", "hyper_w_final"),
              ("Dense_0", "V.0"), ("Dense_1", "V.2"))


def _module(root, dotted: str):
    for part in dotted.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def _copy_agent(agent, params: dict) -> None:
    for ours, theirs in AGENT_DENSE:
        copy_dense(_module(agent, theirs), params[ours])
    copy_gru(agent.rnn, params["gru"])


def _agent_layout(agent, read) -> dict:
    """Their agent's values or gradients in our layout (read: dense_values/dense_grads, gru_values/gru_grads)."""
    dense, gru = read
    out = {ours: dense(_module(agent, theirs)) for ours, theirs in AGENT_DENSE}
    out["gru"] = gru(agent.rnn)
    return out


def _copied(tree: dict) -> dict:
    return {k: _copied(v) if isinstance(v, dict) else np.array(v, copy=True) for k, v in tree.items()}


def _copy_mixer(mixer, params: dict) -> None:
    for ours, theirs in QMIX_DENSE:
        copy_dense(_module(mixer, theirs), params[ours])


def _mixer_layout(mixer, dense) -> dict:
    return {ours: dense(_module(mixer, theirs)) for ours, theirs in QMIX_DENSE}


def _vd_args(record: dict, mixer: str | None, alpha: float, breakpoint: int, width: tuple[int, int, int] = (64, 4, 32)
             ) -> Namespace:
    """pymarl args of their QMIX_CADP / VDN_CADP configs (default.yaml + algs/*_CADP.yaml) on our batch; width:
    (rnn_hidden_dim, att_heads, att_embed_dim), their configs' (64, 4, 32) unless a component narrows it."""
    hidden, heads, head_dim = width
    _, _, n_agents = record["action"].shape
    return Namespace(
        n_agents=n_agents, n_actions=record["avail"].shape[-1], state_shape=record["state"].shape[-1],
        obs_last_action=True, obs_agent_id=True, agent="att_rnn", mac="n_mac", agent_output_type="q",
        rnn_hidden_dim=hidden, att_heads=heads, att_embed_dim=head_dim, action_selector="epsilon_greedy",
        epsilon_start=1.0, epsilon_finish=0.05, epsilon_anneal_time=50000, learner="q_learner_teacher", mixer=mixer,
        mixing_embed_dim=32, hypernet_embed=64, double_q=True, gamma=0.99, lr=0.0005, optimizer="adam",
        optim_alpha=0.99, optim_eps=1e-5, grad_norm_clip=10.0, alpha=alpha, breakpoint=breakpoint,
        target_update_interval=200, learner_log_interval=2000, device="cpu", use_cuda=False, use_onehot_loss=True)


def _their_controller_pass(mac, batch):
    """Their controller over the batch as their learner runs it: C Q-values, D Q-values (agent.q_v) and the
    attention (agent.att.dot, [b·heads, n, n] -> [b, heads, n, n]) per step, batch-major [B, T + 1, ...]."""
    import torch as th

    centralized, decentralized, attention = [], [], []
    with th.no_grad():
        mac.init_hidden(batch.batch_size)
        for t in range(batch.max_seq_length):
            centralized.append(mac.forward(batch, t=t).numpy())
            decentralized.append(mac.agent.q_v.numpy())
            dot = mac.agent.att.dot
            attention.append(dot.view(batch.batch_size, -1, *dot.shape[-2:]).numpy())
    return {"scores/centralized": np.stack(centralized, 1), "scores/decentralized": np.stack(decentralized, 1),
            "attention": np.stack(attention, 1)}


def _their_mac(args, batch, agent_params: dict):
    from controllers import REGISTRY as mac_registry

    mac = mac_registry[args.mac](batch.scheme, {"agents": args.n_agents}, args)
    _copy_agent(mac.agent, agent_params)
    return mac


def authors_agent(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    record = recorded_episodes(EPISODES)
    with authors_code(checkout / VD_SOURCE):
        args = _vd_args(record, "qmix", 0.5, 0)
        batch = pymarl_batch(record, args.n_actions)
        mac = _their_mac(args, batch, nested(golden.params, "online/" + AGENT))
        return _their_controller_pass(mac, batch)


def _their_q_learner(args, batch, params: dict):
    """Their QLearner (q_learner_teacher) with our online and target parameters copied in."""
    from learners import REGISTRY as learner_registry

    mac = _their_mac(args, batch, nested(params, "online/" + AGENT))
    logger = RecordingLogger()
    learner = learner_registry[args.learner](mac, batch.scheme, logger, args)
    _copy_agent(learner.target_mac.agent, nested(params, "target/" + AGENT))
    if learner.mixer is not None and args.mixer == "qmix":
        _copy_mixer(learner.mixer, nested(params, "online/mixer/params/"))
        _copy_mixer(learner.target_mixer, nested(params, "target/mixer/params/"))
    return learner, logger


def authors_q_learner(checkout: Path, golden: Golden, mixer: str, alpha: float) -> dict[str, np.ndarray]:
    record = recorded_episodes(EPISODES)
    env_steps = int(golden.inputs["env_steps"])
    with authors_code(checkout / VD_SOURCE):
        args = _vd_args(record, mixer, alpha, breakpoint=0, width=LEARNER_WIDTH)
        batch = pymarl_batch(record, args.n_actions)
        n = args.n_agents

        # TD loss alone: a fresh learner at t_env = breakpoint (their `t_env > breakpoint` keeps pruning off).
        learner, logger = _their_q_learner(args, batch, golden.params)
        learner.train(batch, t_env=args.breakpoint, episode_num=0)
        td_loss = logger.stats["loss"]

        learner, logger = _their_q_learner(args, batch, golden.params)
        out = _their_controller_pass(learner.mac, batch)
        del out["attention"]
        with watched_clip() as watch:
            learner.train(batch, t_env=env_steps, episode_num=0)  # episode 0: no target copy
        watch.restore()  # the gradients as they reached train()'s clip
        grads = {"agent": _copied(_agent_layout(learner.mac.agent, (dense_grads, gru_grads)))}
        if args.mixer == "qmix":
            grads["mixer"] = _copied(_mixer_layout(learner.mixer, dense_grads))
        stats = logger.stats
        out.update({"loss": np.float32(stats["loss"]), "metric/td_loss": np.float32(td_loss),
                    "metric/pruning_loss": np.float32((stats["loss"] - td_loss) / alpha),
                    "metric/td_error_abs": np.float32(stats["td_error_abs"]),
                    "metric/target": np.float32(stats["target_mean"] * n)})
        if args.mixer == "vdn":  # Q_tot / n is the agents' mean utility, our q_taken, only when Q_tot is a sum
            out["metric/q_taken"] = np.float32(stats["q_taken_mean"])
        out.update(flatten(grads["agent"], prefix="grad/" + AGENT))
        out.update(flatten(_agent_layout(learner.mac.agent, (dense_values, gru_values)), prefix="after/" + AGENT))
        if args.mixer == "qmix":
            out.update(flatten(grads["mixer"], prefix="grad/mixer/params/"))
            out.update(flatten(_mixer_layout(learner.mixer, dense_values), prefix="after/mixer/params/"))
        return out


# -- our side ---------------------------------------------------------------------------------------------------

AGENT_OVERRIDES = ("algo=qmix", "algo.hypernet_layers=1")


def prepare_agent() -> Golden:
    _, _, _, backbone = _learner(*AGENT_OVERRIDES)
    params = vd_initial_params(backbone, seed=0)
    return Golden({}, {k: v for k, v in params.items() if k.startswith("online/agents/")})


def ours_agent(golden: Golden) -> dict[str, np.ndarray]:
    _, _, paradigm, _ = _learner(*AGENT_OVERRIDES)
    template = paradigm.init(jax.random.PRNGKey(0))
    params = unflatten_like(template, golden.params, "online/agents/")
    batch = trajectory(recorded_episodes(EPISODES)).transpose()  # time-major

    @jax.jit
    def forward(params, inputs):
        return paradigm.apply(params, paradigm.initial_carry(batch.reward.shape[1:]), inputs)[1]

    output = forward(params, batch.agent_inputs())
    out = {f"scores/{m}": np.swapaxes(np.asarray(s), 0, 1) for m, s in output.scores.items()}
    out["attention"] = np.swapaxes(np.asarray(output.extras["attention"]), 0, 1)
    return out


def _pruning_overrides(algo: str, alpha: float) -> tuple[str, ...]:
    mixer = ("algo.hypernet_layers=1",) if algo == "qmix" else ()
    hidden, heads, head_dim = LEARNER_WIDTH
    return (f"algo={algo}", *mixer, f"algo.hidden_dim={hidden}", f"cadp.heads={heads}", f"cadp.head_dim={head_dim}",
            "algo.optimizer=adam", "algo.lr=0.0005", "algo.grad_clip=10",
            "algo.double_q=true", "algo.gamma=0.99", f"cadp.alpha={alpha}", "cadp.prune_start=0")


def prepare_pruning(algo: str, alpha: float, seed: int):
    def prepare() -> Golden:
        _, _, _, backbone = _learner(*_pruning_overrides(algo, alpha))
        return Golden({"env_steps": np.int64(ENV_STEPS)}, vd_initial_params(backbone, seed))
    return prepare


def ours_pruning(algo: str, alpha: float):
    def ours(golden: Golden) -> dict[str, np.ndarray]:
        _, _, _, backbone = _learner(*_pruning_overrides(algo, alpha))
        return vd_step(backbone, golden, recorded_episodes(EPISODES), int(golden.inputs["env_steps"]))
    return ours


def authors_pruning(mixer: str, alpha: float):
    def authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
        return authors_q_learner(checkout, golden, mixer, alpha)
    return authors


# -- MAPPO: the pruning KL of CADP-PG ---------------------------------------------------------------------------

PG_SOURCE = "CADP-PG"
MAPPO_OVERRIDES = ("env=smax:3m", "env.episode_limit=20", "algo=mappo", "paradigm=cadp", "cadp.prune_start=0",
                   "cadp.alpha=0.5", f"algo.hidden_dim={LEARNER_WIDTH[0]}", f"cadp.heads={LEARNER_WIDTH[1]}",
                   f"cadp.head_dim={LEARNER_WIDTH[2]}")


@functools.lru_cache(maxsize=None)
def _mappo_paradigm():
    """Our CADP paradigm as MAPPO builds it (`ctde train algo=mappo paradigm=cadp`)."""
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import PARADIGMS, make_paradigm
    from ctde.training.resolve import resolve

    config = resolve(build_config(list(MAPPO_OVERRIDES)))
    env = make_env(config.env, views=PARADIGMS[config.paradigm.name].required_views)
    return make_paradigm(config, env.spec)


def _mappo_masks(record: dict) -> dict[str, np.ndarray]:
    """[B, T + 1, n] masks: ours (MAPPO's `batch["mask"]`: valid step and living agent) and all-ones (theirs)."""
    alive = record["alive"] & record["valid"][..., None]
    return {"masked": alive, "unmasked": np.ones_like(alive)}


def prepare_mappo_kl() -> Golden:
    paradigm = _mappo_paradigm()
    return Golden({"env_steps": np.int64(ENV_STEPS)}, flatten(paradigm.init(jax.random.PRNGKey(3))))


def ours_mappo_kl(golden: Golden) -> dict[str, np.ndarray]:
    paradigm = _mappo_paradigm()
    params = unflatten_like(paradigm.init(jax.random.PRNGKey(0)), golden.params)
    record = recorded_episodes(EPISODES)
    batch = trajectory(record).transpose()
    env_steps = jnp.int32(int(golden.inputs["env_steps"]))

    @jax.jit
    def pruning(params, inputs, mask):
        def loss(params):
            _, output = paradigm.apply(params, paradigm.initial_carry(batch.reward.shape[1:]), inputs)
            return paradigm.auxiliary_loss(params, output, inputs, mask, env_steps)
        return jax.value_and_grad(loss, has_aux=True)(params)

    out = {}
    for name, mask in _mappo_masks(record).items():
        (weighted, metrics), grads = pruning(params, batch.agent_inputs(), jnp.asarray(np.swapaxes(mask, 0, 1)))
        out[f"{name}/loss"] = np.asarray(weighted)
        out[f"{name}/pruning_loss"] = np.asarray(metrics["pruning_loss"])
        for part in ("query", "key"):
            out[f"{name}/grad/{part}/kernel"] = np.asarray(grads["agent"]["params"][part]["kernel"])
    return out


def authors_mappo_kl(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    """Their CADP-PG attention module (r_actor_critic_cadp.SelfAttention) on our agent inputs, and the KL lines of
    their R_MAPPO.ppo_update (r_mappo.py, `use_CADP` branch: F.kl_div(log(att + 1e-8), eye, reduction="mean"),
    weight 0.5), reproduced here since ppo_update needs their whole policy and buffer. "unmasked" is their term as
    released (every row of the minibatch); "masked" is the same kl_div over only the attention rows (step, head,
    agent i) of counted (step, agent) pairs: our masking, which ctde adds on purpose."""
    import torch as th
    import torch.nn.functional as F

    record = recorded_episodes(EPISODES)
    paradigm = _mappo_paradigm()
    from ctde.nets.rnn import agent_inputs as build_inputs

    x = np.asarray(build_inputs(jnp.asarray(record["obs"]), jnp.asarray(record["last_action"]),
                                paradigm.spec.n_actions))  # [B, T + 1, n, in], batch-major
    b, t, n, width = x.shape
    agent = nested(golden.params, "agent/params/")
    out = {}
    with authors_code(checkout / PG_SOURCE):
        from onpolicy.algorithms.r_mappo.algorithm.r_actor_critic_cadp import SelfAttention

        for name, mask in _mappo_masks(record).items():
            att_module = SelfAttention(width, LEARNER_WIDTH[1], LEARNER_WIDTH[2])
            for ours, theirs in (("query", "toqueries"), ("key", "tokeys"), ("value", "tovalues")):
                copy_dense(getattr(att_module, theirs), agent[ours])
            att_module(th.as_tensor(x.reshape(b * t, n, width)))
            att = att_module.dot  # [(B·(T+1))·heads, n, n]
            eps = 1e-8
            eye = th.eye(n).unsqueeze(0).repeat(att.shape[0], 1, 1).view(-1, n)
            att = att.view(-1, n)
            rows = th.as_tensor(np.repeat(mask.reshape(b * t, 1, n), LEARNER_WIDTH[1], axis=1).reshape(-1))
            cadp_loss = F.kl_div((att[rows] + eps).log(), eye[rows], reduction="mean")
            weighted = 0.5 * cadp_loss
            weighted.backward()
            out[f"{name}/loss"] = weighted.detach().numpy()
            out[f"{name}/pruning_loss"] = cadp_loss.detach().numpy()
            out[f"{name}/grad/query/kernel"] = att_module.toqueries.weight.grad.numpy().T.copy()
            out[f"{name}/grad/key/kernel"] = att_module.tokeys.weight.grad.numpy().T.copy()
    return out


BOUNDARY_NOTE = (
    "Pruning switch: theirs `t_env > breakpoint` (strict), ours `env_steps >= cadp.prune_start` (the paper's "
    "σ(t) = α for t ≥ T); both read the env steps collected before the update, so they differ only for an update "
    "made at exactly t_env = T (checked here well after the start: ours prune_start 0, theirs breakpoint 0, "
    f"t_env {ENV_STEPS}).")

COMPONENTS = [
    Component(
        name="cadp_agent", system=SYSTEM,
        what="CADP agent (ATTRNNAgent via NMAC): C and D Q-values and the per-head n×n attention per step",
        prepare=prepare_agent, ours=ours_agent, authors=authors_agent,
        note="Their D model is their own `agent.q_v` (attention output replaced by the values, c = I), computed in "
             "the same forward."),
    Component(
        name="cadp_qmix_pruning", system=SYSTEM,
        what="q_learner_teacher.train(), QMIX, pruning on (α 0.5), Adam: loss, TD and pruning loss, grads, params",
        prepare=prepare_pruning("qmix", 0.5, seed=1), ours=ours_pruning("qmix", 0.5),
        authors=authors_pruning("qmix", 0.5),
        note="Their QMIX_CADP config leaves hypernet_layers unset, so their QMixer has one-layer hypernetworks "
             "(ctde's QMIX default is 2): ours runs with algo.hypernet_layers=1. " + BOUNDARY_NOTE),
    Component(
        name="cadp_vdn_pruning", system=SYSTEM,
        what="q_learner_teacher.train(), VDN, pruning on (α 1.0), Adam: loss, TD and pruning loss, grads, params",
        prepare=prepare_pruning("vdn", 1.0, seed=2), ours=ours_pruning("vdn", 1.0),
        authors=authors_pruning("vdn", 1.0), note=BOUNDARY_NOTE),
    Component(
        name="cadp_mappo_kl", system=SYSTEM,
        what="CADP-PG pruning KL (their SelfAttention + r_mappo's kl_div, weight 0.5): loss and query/key grads, "
             "as released (unmasked) and with our dead-agent/padding mask",
        prepare=prepare_mappo_kl, ours=ours_mappo_kl, authors=authors_mappo_kl, verdict="departs on purpose",
        note="Their MAPPO KL (r_mappo.py) averages over every row of the minibatch, dead agents and padding "
             "included; ctde masks both (ALGORITHMS.md known defects). 'unmasked/*' is their term as released "
             "against ours with an all-ones mask; 'masked/*' is their same kl_div restricted to the rows of living "
             "agents at valid steps against ours as MAPPO calls it (mask = valid & alive). Their KL lines are "
             "reproduced around their real SelfAttention module (ppo_update needs their whole policy). Only the "
             "KL is compared: their MAPPO actor and critic are on-policy MAPPO's networks (input LayerNorm, "
             "Linear-ReLU-LayerNorm ×2, GRU + LayerNorm, orthogonal init; the actor's attention on the obs alone) "
             "while ctde's are pymarl-style (CADPAgent; Linear-ReLU-GRU-Linear critic), so no parameter copy "
             "can make them equal; the attention here is fed ctde's agent input (obs, last action, id)."),
]
