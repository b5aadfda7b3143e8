"""PTDE against the authors' released code (chenyiqun/ptde-open, pymarl2-based; its modules call PTDE "GIRE").

Which of their configs is which (every config/algs/gire*.yaml holds the same settings; the controller and the
learner branch on `args.name`):
- `gire_z.yaml` (name "gire_z_env=8_adam_td_lambda"): stage 1 with GIP, `DecCoachNet` (the agent-hypernetwork on
  x_i) feeding z ~ N(mu, var) into `GIREAgent`; this is the teacher their stage 2 (`main2.py`) loads
  ("gire_z_env/seed_N"). Ours: paradigm=ptde, ptde.global_info=personalized.
- `gire_s.yaml` (name "gire_s_env=8_adam_td_lambda"): GIU, `StateCoachNet` (z from the state alone, the same for
  every agent). Ours: ptde.global_info=unified.
- `gire.yaml` (name "gire_env=8_adam_td_lambda"): a one-stage variant in which the local `PolicyAppModule`'s sample
  z' drives the Q-values while training (its KL/MI term to the coach net is commented out, so the coach net gets
  no gradient). Not PTDE's method as published; not compared.
- Stage 2: `main2.py` with `modules/gire/stage_two.py` (`DecCoachNet_TwoStage` = the teacher's mu,
  `PolicyAppModule_TwoStage` = the student), Adam 1e-4, grad-norm clip 10, loss sum over dims, mean over rows.

Sizes. The golden files store our parameters (online and target), the gradients and the parameters after a step;
GIP's hypernetwork output layer alone holds hypernet_hidden x state_dim x z_dim weights (64 x 72 x 64 = 295k
floats on 3m), so the goldens use smaller widths: GRU/head 32, z 8, hypernetwork 16, QMIX embed 8 / hypernet
16 (student 64, as released). Every width differs from every other and from x_dim (86) and state_dim (72), so a
transposed or mis-reshaped matrix cannot go unnoticed; every other setting is gire_z.yaml's.

Noise. z is sampled by reparameterization on both sides. Ours draws `jax.random.normal(key, mu.shape)`
(`ctde.nets.ptde.sample_z`; inside `td_loss` the key is first split into the online and the target network's);
`prepare` recomputes that noise from the key and stores it in the golden inputs, and the authors' side takes it
in place of `torch.distributions.Normal.rsample`'s standard-normal draw (loc + eps * scale, as torch computes it),
in call order (online mac t = 0..T, then the target mac t = 0..T).

Torch compatibility shims (runtime only, the checkout is untouched): their package `__init__`s import modules the
release lacks (`COPAAgent`, `COPACoachNet`, environment packages), so the packages `modules.agents`,
`controllers`, `learners` and `envs` are stand-ins whose files load one by one, and the two missing names are
placeholders never used by the gire_z / gire_s paths.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from crosscheck.common import (Component, Golden, Namespace, RecordingLogger, authors_code, copy_dense, copy_gru,
                               dense_grads, dense_values, flatten, gru_grads, gru_values, pymarl_batch,
                               recorded_episodes, trajectory, unflatten_like, vd_initial_params, vd_learner, nested,
                               watched_clip)

EPISODES = "smax_3m"
HIDDEN, Z_DIM, HYPER_HIDDEN, STUDENT_HIDDEN, MIX_EMBED, MIX_HYPER = 32, 8, 16, 64, 8, 16
SIZES = [f"algo.hidden_dim={HIDDEN}", f"ptde.z_dim={Z_DIM}", f"ptde.hypernet_hidden={HYPER_HIDDEN}",
         f"ptde.student_hidden={STUDENT_HIDDEN}", f"algo.mixer_embed_dim={MIX_EMBED}",
         f"algo.hypernet_embed={MIX_HYPER}"]
# gire_z.yaml: Adam 1e-3, TD(lambda) 0.6, gamma 0.99, grad-norm clip 10 (default.yaml), var_floor 0.01.
STAGE_1 = ["env=smax:3m", "env.episode_limit=20", "algo=qmix", "paradigm=ptde", "algo.optimizer=adam",
           "algo.lr=1e-3", "algo.td_lambda=0.6", "algo.gamma=0.99", "algo.grad_clip=10", "algo.double_q=true",
           "algo.hypernet_layers=2", "ptde.min_variance=0.01", *SIZES]
GIU = [*STAGE_1, "ptde.global_info=unified"]
W_EPISODES = 1  # W [.., state_dim, z_dim] is compared on the first episode only (it is 576 floats per row)
SEED = 0


# -- our side ------------------------------------------------------------------------------------------------

def _learner(overrides):
    return vd_learner(overrides)


def _key(golden: Golden) -> jax.Array:
    return jnp.asarray(golden.inputs["key"], dtype=jnp.uint32)


def _noise(key: jax.Array, shape) -> np.ndarray:
    """The standard-normal draw `ctde.nets.ptde.sample_z` makes with `key` for mu of `shape`."""
    return np.asarray(jax.random.normal(key, shape))


def _intercepting(calls: list):
    """A flax interceptor that records (module class, module name, args, output) of every __call__."""
    import flax.linen as nn

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__":
            calls.append((type(context.module).__name__, context.module.name, args, out))
        return out

    return nn.intercept_methods(interceptor)


def _first(calls, cls, name=None, index=0):
    found = [c for c in calls if c[0] == cls and (name is None or c[1] == name)]
    return found[index]


def _bm(x) -> np.ndarray:
    """time-major [T + 1, B, ...] -> batch-major [B, T + 1, ...]."""
    return np.swapaxes(np.asarray(x), 0, 1)


def _agent_params(overrides, seed=SEED) -> dict[str, np.ndarray]:
    _, _, paradigm, _ = _learner(overrides)
    return _with_floor(flatten(paradigm.init(jax.random.PRNGKey(seed)), prefix="agents/"))


def _with_floor(flat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Our initial parameters, with the bias of the variance head's output lowered by 6 in its first half of the
    z dimensions: exp(log var) then falls below the floor 0.01 in many entries, so the floor is exercised (at
    initialization every variance lies far above it)."""
    out = dict(flat)
    for key, value in flat.items():
        if key.endswith("generator/var_out/bias"):
            value = value.copy()
            value[: value.shape[0] // 2] -= 6.0
            out[key] = value
    return out


def _prepare_agent(overrides):
    def prepare() -> Golden:
        config, env, paradigm, _ = _learner(overrides)
        record = recorded_episodes(EPISODES)
        key = jax.random.PRNGKey(7)
        batch_size, length, n = record["action"].shape
        noise = _noise(key, (length, batch_size, n, config.ptde.z_dim))  # time-major, as sample_z draws it
        return Golden(inputs={"key": np.asarray(key), "noise": noise}, params=_agent_params(overrides))

    return prepare


def _ours_agent(overrides, with_w: bool):
    def ours(golden: Golden) -> dict[str, np.ndarray]:
        _, _, paradigm, _ = _learner(overrides)
        record = recorded_episodes(EPISODES)
        template = paradigm.init(jax.random.PRNGKey(0))
        params = unflatten_like(template, golden.params, "agents/")
        inputs = trajectory(record).transpose().agent_inputs()
        carry = paradigm.initial_carry(record["reward"].shape[:1])

        @jax.jit
        def run(params, key):
            calls = []
            with _intercepting(calls):
                _, output = paradigm.apply(params, carry, inputs, rng=key)
            h, z = _first(calls, "QHead")[2]
            got = {"h": h, "z": z, "mu": output.extras["mu"], "var": output.extras["var"],
                   "q": output.scores["teacher"], "u": _first(calls, "DistributionGenerator")[2][0]}
            if with_w:  # the agent-hypernetwork's outputs, read by layer name: a GIP that no longer calls
                # these layers (e.g. reassociated, W never formed) must give W and b to this check another way
                got["W"] = _first(calls, "Dense", "hyper_w_out")[3]
                got["b"] = _first(calls, "Dense", "hyper_b")[3]
            _, deterministic = paradigm.apply(params, carry, inputs)  # execution: z = mu
            got["execution/q"] = deterministic.scores["teacher"]
            return got

        got = {k: _bm(v) for k, v in run(params, _key(golden)).items()}
        if with_w:  # the flat hypernetwork output, in our [state_dim, z_dim] layout (row-major reshape)
            w = got["W"][:W_EPISODES]
            got["W"] = w.reshape(*w.shape[:-1], -1, paradigm.z_dim)
        return got

    return ours


def _prepare_stage1() -> Golden:
    config, env, paradigm, backbone = _learner(STAGE_1)
    record = recorded_episodes(EPISODES)
    key = jax.random.PRNGKey(11)
    online_key, target_key = jax.random.split(key)  # as ValueDecomposition.td_loss splits it
    batch_size, length, n = record["action"].shape
    shape = (length, batch_size, n, config.ptde.z_dim)
    return Golden(inputs={"key": np.asarray(key), "env_steps": np.asarray(10_000),
                          "noise_online": _noise(online_key, shape), "noise_target": _noise(target_key, shape)},
                  params=_with_floor(vd_initial_params(backbone, seed=SEED)))


def _ours_stage1(golden: Golden) -> dict[str, np.ndarray]:
    """`vd_step`'s computation (our real `ValueDecomposition.td_loss` under `jax.value_and_grad`, then one step
    of the backbone's own optimizer from its initial state), written out here so that the same compiled call
    also reads the per-step values inside td_loss (flax method interception): the Q-values of the online and
    target teacher heads and both mixer outputs; the lambda targets come from our `lambda_returns` on the target
    mixer's output, as `MixerTD.returns` computes them. (vd_step's own "scores/*" would be drawn with another key
    than td_loss's, and a second compilation of td_loss doubled this component's time.)"""
    import optax

    from ctde.algos.td_objectives import lambda_returns
    from crosscheck.common import vd_params

    config, env, paradigm, backbone = _learner(STAGE_1)
    record = recorded_episodes(EPISODES)
    key = _key(golden)
    env_steps = int(golden.inputs["env_steps"])
    params, target_params = vd_params(backbone, golden)
    batch = trajectory(record).transpose()

    def loss_and_inside(params, target_params, batch, key):
        calls = []
        with _intercepting(calls):
            loss, metrics = backbone.td_loss(params, target_params, batch, jnp.int32(env_steps), key)
        heads = [c for c in calls if c[0] == "QHead"]  # online teacher, online student, target teacher, target student
        mixers = [c for c in calls if c[0] == "QMIXMixer"]  # online Q_tot(s_t), target Q_tot(s_{t+1})
        if len(heads) != 4 or len(mixers) != 2:
            raise RuntimeError(f"td_loss called {len(heads)} Q heads and {len(mixers)} mixers (expected 4 and 2)")
        targets = lambda_returns(batch.reward[:-1], batch.terminal[:-1], batch.done[:-1],
                                 jax.lax.stop_gradient(mixers[1][3]), config.algo.gamma, config.algo.td_lambda)
        inside = {"q/online": heads[0][3], "q/target": heads[2][3], "q_tot": mixers[0][3][..., 0],
                  "targets": targets[..., 0] * batch.valid[:-1]}  # theirs are 0 past an episode (reward masked)
        return loss, jax.tree.map(jax.lax.stop_gradient, inside)

    @jax.jit
    def step(params, target_params, batch, key):
        (loss, inside), grads = jax.value_and_grad(loss_and_inside, has_aux=True)(params, target_params, batch, key)
        updates, _ = backbone.optimizer.update(grads, backbone.optimizer.init(params), params)
        return loss, inside, grads, optax.apply_updates(params, updates), optax.tree.norm(grads)

    loss, inside, grads, after, grad_norm = step(params, target_params, batch, key)
    out = {"loss": np.asarray(loss), "grad_norm": np.asarray(grad_norm)}
    out.update({k: _bm(v) for k, v in inside.items()})
    out.update(flatten(grads, prefix="grad/"))
    out.update(flatten(after, prefix="after/"))
    return out


def _prepare_stage2() -> Golden:
    return Golden(inputs={}, params=_agent_params(STAGE_1))


def _stage2_rows(paradigm, params, record):
    """Every valid (agent, step) row of the recorded episodes: x_i [N, x_dim], s [N, state_dim], and our
    teacher's mu_i [N, z] from `distillation_rows` (the rows stage 2 regresses onto)."""
    inputs = trajectory(record).transpose().agent_inputs()
    x, mu = paradigm.distillation_rows(params, inputs)  # [T + 1, B, n, ...]
    valid = np.asarray(record["valid"]).T  # [T + 1, B]
    rows = np.nonzero(valid)
    return np.asarray(x)[rows].reshape(-1, x.shape[-1]), np.asarray(mu)[rows].reshape(-1, mu.shape[-1]), rows


def _ours_stage2(golden: Golden) -> dict[str, np.ndarray]:
    import optax

    from ctde.training.distill import _loss

    config, _, paradigm, _ = _learner(STAGE_1)
    record = recorded_episodes(EPISODES)
    params = unflatten_like(paradigm.init(jax.random.PRNGKey(0)), golden.params, "agents/")
    x, target, _ = _stage2_rows(paradigm, params, record)
    x, target = jnp.asarray(x), jnp.asarray(target)
    optimizer = optax.adam(config.ptde.distill_lr)  # as run_distillation builds it

    @jax.jit
    def step(student):
        loss, grads = jax.value_and_grad(lambda s: _loss(paradigm, s, x, target, jnp.ones(x.shape[0])))(student)
        updates, _ = optimizer.update(grads, optimizer.init(student), student)
        return (loss, paradigm.student_prediction(student, x), grads, optax.apply_updates(student, updates))

    loss, prediction, grads, after = step(params["student"])
    return {"loss": np.asarray(loss), "teacher_mu": np.asarray(target), "student_z": np.asarray(prediction),
            "grad_norm": np.asarray(optax.tree.norm(grads)),
            **flatten(grads, prefix="grad/student/"), **flatten(after, prefix="after/student/")}


# -- the authors' side ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def _their_code(checkout: Path):
    """The checkout importable, with stand-in packages for the ones whose __init__ imports what the release lacks
    (see the module docstring); everything loaded from it is dropped on exit (authors_code, and here the
    stand-ins, whose __file__ lies in the checkout)."""
    import importlib

    checkout = Path(checkout).resolve()
    stand_ins = {}
    with authors_code(checkout):
        try:
            for package in ("modules.agents", "controllers", "learners", "envs", "envs.matrix_game"):
                module = types.ModuleType(package)
                module.__path__ = [str(checkout / package.replace(".", "/"))]
                module.__file__ = str(checkout / package.replace(".", "/") / "__init__.py")
                sys.modules[package] = stand_ins[package] = module
            import modules  # noqa: F401  (the real, empty package)

            sys.modules["modules"].agents = stand_ins["modules.agents"]
            stand_ins["envs"].matrix_game = stand_ins["envs.matrix_game"]
            stand_ins["envs.matrix_game"].print_matrix_status = lambda *args: None
            agent_module = importlib.import_module("modules.agents.gire_agent")
            coach_module = importlib.import_module("modules.gire.coach_net")
            agent_module.COPAAgent = coach_module.COPACoachNet = None  # absent from the release; unused here
            stand_ins["modules.agents"].REGISTRY = {"gire_rnn": agent_module.GIREAgent}
            yield
        finally:
            for name, module in stand_ins.items():
                if sys.modules.get(name) is module:
                    del sys.modules[name]


@contextlib.contextmanager
def _injected_noise(draws: list, variances: list | None = None):
    """torch.distributions.Normal.rsample returns loc + eps * scale (as torch computes it) with eps the next tensor
    of `draws` instead of a fresh standard-normal draw; each distribution's variance scale^2 goes to `variances`."""
    import torch

    original = torch.distributions.Normal.rsample

    def rsample(self, sample_shape=torch.Size()):
        eps = draws.pop(0)
        if tuple(eps.shape) != tuple(self.loc.shape):
            raise ValueError(f"injected noise {tuple(eps.shape)} for a distribution of {tuple(self.loc.shape)}")
        if variances is not None:
            variances.append((self.scale ** 2).detach())
        return self.loc + eps * self.scale

    torch.distributions.Normal.rsample = rsample
    try:
        yield
    finally:
        torch.distributions.Normal.rsample = original
    if draws:
        raise RuntimeError(f"{len(draws)} injected noise draws were not used")


def _args(name: str, n_agents: int, n_actions: int, state_dim: int) -> Namespace:
    """gire_z.yaml / gire_s.yaml over default.yaml, the widths as SIZES."""
    return Namespace(
        name=name, n_agents=n_agents, n_actions=n_actions, state_shape=state_dim, use_cuda=False, device="cpu",
        obs_last_action=True, obs_agent_id=True, rnn_hidden_dim=HIDDEN, z_dims=Z_DIM,
        high_hyper_hidden_dims=HYPER_HIDDEN, high_mixer_hidden_dims=32, two_hyper_layers=True, var_floor=0.01,
        lambda_kl=0.1, agent="gire_rnn", mac="n_gire_mac", agent_output_type="q", action_selector="epsilon_greedy",
        epsilon_start=1.0, epsilon_finish=0.05, epsilon_anneal_time=100000, learner="gire_learner", mixer="qmix",
        mixing_embed_dim=MIX_EMBED, hypernet_embed=MIX_HYPER, lr=1e-3, td_lambda=0.6, q_lambda=False, gamma=0.99,
        optimizer="adam", grad_norm_clip=10, target_update_interval=200, learner_log_interval=2000,
        use_layer_norm=False, use_orthogonal=False, use_per=False, return_priority=False, batch_size=128,
        cuda_num=0, seed=0, env="sc2", env_args={"map_name": "3m"})


def _copy_mac(mac, flat: dict, prefix: str, unified: bool = False) -> None:
    p = lambda path: nested(flat, prefix + path + "/")  # noqa: E731
    copy_dense(mac.shared_rnn.fc1, p("trunk/params/fc1"))
    copy_gru(mac.shared_rnn.rnn, p("trunk/params/gru"))
    copy_dense(mac.agent.fc1, p("head/params/fc_h"))
    copy_dense(mac.agent.fc2, p("head/params/q"))
    coach = mac.coach_net
    for layer, ours in ((coach.mu[0], "mu_hidden"), (coach.mu[2], "mu_out"), (coach.sigma[0], "var_hidden"),
                        (coach.sigma[2], "var_out")):
        copy_dense(layer, p(f"global_info/params/generator/{ours}"))
    if not unified:
        copy_dense(coach.w1[0], p("global_info/params/hyper_w_hidden"))
        copy_dense(coach.w1[2], p("global_info/params/hyper_w_out"))
        copy_dense(coach.b1[0], p("global_info/params/hyper_b"))


def _mac_layers(mac) -> dict:
    """Their mac's layers by our parameter path (below "agents/")."""
    coach = mac.coach_net
    gip = "global_info/params/"
    return {"trunk/params/fc1": mac.shared_rnn.fc1, "head/params/fc_h": mac.agent.fc1, "head/params/q": mac.agent.fc2,
            gip + "hyper_w_hidden": coach.w1[0], gip + "hyper_w_out": coach.w1[2], gip + "hyper_b": coach.b1[0],
            gip + "generator/mu_hidden": coach.mu[0], gip + "generator/mu_out": coach.mu[2],
            gip + "generator/var_hidden": coach.sigma[0], gip + "generator/var_out": coach.sigma[2]}


MIXER_LAYERS = {"Dense_0": ("hyper_w1", 0), "Dense_1": ("hyper_w1", 2), "hyper_b1": ("hyper_b1", 0),
                "Dense_2": ("hyper_w2", 0), "Dense_3": ("hyper_w2", 2), "Dense_4": ("hyper_b2", 0),
                "Dense_5": ("hyper_b2", 2)}


def _mixer_layers(mixer) -> dict:
    return {f"params/{ours}": getattr(mixer, seq)[index] for ours, (seq, index) in MIXER_LAYERS.items()}


def _flat(tree: dict, prefix: str) -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}/{key}"))
        else:
            out[f"{prefix}/{key}"] = np.asarray(value)
    return out


def _mac(name: str, record, n_actions: int):
    from controllers.n_gire_controller import NGIREMAC

    batch = pymarl_batch(record, n_actions)
    n_agents = record["action"].shape[-1]
    args = _args(name, n_agents, n_actions, record["state"].shape[-1])
    mac = NGIREMAC(batch.scheme, {"agents": n_agents}, args)
    return mac, batch, args


def _authors_agent(name: str, unified: bool, with_w: bool):
    def authors(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
        import torch as th

        record = recorded_episodes(EPISODES)
        n_actions = record["avail"].shape[-1]
        batch_size, length, n = record["action"].shape
        with _their_code(checkout), _quiet():
            mac, batch, args = _mac(name, record, n_actions)
            _copy_mac(mac, golden.params, "agents/", unified=unified)
            if unified:  # ours encodes the state as ELU(Linear(ReLU(Linear(s)))), theirs as Linear(s)
                encoder = _our_giu_encoder(golden.params, record["state"].shape[-1], args)
                mac.coach_net.fc1 = encoder
            captured = {k: [] for k in ("h", "z", "mu", "var", "q", "u", "W", "b")}
            hooks = [mac.coach_net.mu.register_forward_pre_hook(lambda m, i: captured["u"].append(i[0].detach())),
                     mac.coach_net.mu.register_forward_hook(lambda m, i, o: captured["mu"].append(o.detach()))]
            if with_w:
                hooks += [mac.coach_net.w1.register_forward_hook(lambda m, i, o: captured["W"].append(o.detach())),
                          mac.coach_net.b1.register_forward_hook(lambda m, i, o: captured["b"].append(o.detach()))]
            original_agent = mac.agent.forward

            def agent_forward(hidden, z):
                captured["h"].append(hidden.detach().clone())
                captured["z"].append(z.detach().clone())
                return original_agent(hidden, z)

            mac.agent.forward = agent_forward
            draws = [th.as_tensor(golden.inputs["noise"][t].reshape(batch_size * n, -1)) for t in range(length)]
            with _injected_noise(draws, captured["var"]), th.no_grad():
                mac.init_hidden(batch_size)
                for t in range(length):
                    captured["q"].append(mac.forward(batch, t, test_mode=False))
            for hook in hooks:
                hook.remove()
            del mac.agent.forward  # the class's forward again
            # Execution: ours takes z = mu where theirs samples (documented departure): their sample with eps = 0.
            zeros = [th.zeros(batch_size * n, Z_DIM) for _ in range(length)]
            execution = []
            with _injected_noise(zeros), th.no_grad():
                mac.init_hidden(batch_size)
                for t in range(length):
                    execution.append(mac.forward(batch, t, test_mode=True))

        def per_step(values):  # list over t of [B * n, ...] or [B, n, ...] -> [B, T + 1, n, ...]
            stacked = np.stack([v.reshape(batch_size, n, *v.shape[-1:]).numpy() for v in values], axis=1)
            return stacked

        out = {key: per_step(captured[key]) for key in ("h", "z", "mu", "var", "q", "u")}
        out["execution/q"] = per_step(execution)
        if with_w:
            out["b"] = per_step(captured["b"])
            w = np.stack([v.reshape(batch_size, n, -1).numpy() for v in captured["W"]], axis=1)[:W_EPISODES]
            out["W"] = w.reshape(*w.shape[:-1], record["state"].shape[-1], Z_DIM)  # their .view(-1, S, z)
        return out

    return authors


def _our_giu_encoder(flat, state_dim, args):
    import torch.nn as tnn

    encoder = tnn.Sequential(tnn.Linear(state_dim, HYPER_HIDDEN), tnn.ReLU(), tnn.Linear(HYPER_HIDDEN, args.z_dims),
                             tnn.ELU())
    copy_dense(encoder[0], nested(flat, "agents/global_info/params/encode/"))
    copy_dense(encoder[2], nested(flat, "agents/global_info/params/encode_out/"))
    return encoder


@contextlib.contextmanager
def _quiet():
    """Their constructors print module sizes and their learner prints a line per log interval."""
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _authors_stage1(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    """Their NGireQLearner.train itself (gire_z) on our recorded batch, our parameters copied into the online and
    target macs and mixers. Its gradients are snapshotted where train() clips them, after one change that
    reproduces ours: they are doubled first, since our loss is the masked mean of the squared TD error and theirs
    of half of it (0.5 * td_error^2, pymarl2's convention); their loss is compared doubled likewise."""
    import torch as th

    record = recorded_episodes(EPISODES)
    n_actions = record["avail"].shape[-1]
    batch_size, length, n = record["action"].shape
    flat = golden.params
    out: dict[str, np.ndarray] = {}
    with _their_code(checkout), _quiet():
        import learners.gire_learner as gire_learner

        mac, batch, args = _mac("gire_z_env=8_adam_td_lambda", record, n_actions)
        logger = RecordingLogger()
        learner = gire_learner.NGireQLearner(mac, batch.scheme, logger, args)
        _copy_mac(learner.mac, flat, "online/agents/")
        _copy_mac(learner.target_mac, flat, "target/agents/")
        for mixer, role in ((learner.mixer, "online"), (learner.target_mixer, "target")):
            for path, layer in _mixer_layers(mixer).items():
                copy_dense(layer, nested(flat, f"{role}/mixer/{path}/"))

        recorded: dict[str, list] = {"q/online": [], "q/target": [], "q_tot": [], "next_q_tot": [], "targets": []}

        def recording(module, key, forward):
            def wrapped(*a, **k):
                result = forward(*a, **k)
                recorded[key].append(result.detach().clone())
                return result
            module.forward = wrapped

        recording(learner.mac, "q/online", learner.mac.forward)
        recording(learner.target_mac, "q/target", learner.target_mac.forward)
        recording(learner.mixer, "q_tot", learner.mixer.forward)
        recording(learner.target_mixer, "next_q_tot", learner.target_mixer.forward)
        build_targets = gire_learner.build_td_lambda_targets

        def targets(*a, **k):
            result = build_targets(*a, **k)
            recorded["targets"].append(result.detach().clone())
            return result

        gire_learner.build_td_lambda_targets = targets
        draws = [th.as_tensor(golden.inputs[f"noise_{role}"][t].reshape(batch_size * n, -1))
                 for role in ("online", "target") for t in range(length)]
        try:
            with _injected_noise(draws), watched_clip(scale=2.0) as watch:  # our loss scale (see the docstring)
                learner.train(batch, t_env=int(golden.inputs["env_steps"]), episode_num=0)
        finally:
            gire_learner.build_td_lambda_targets = build_targets
        out["grad_norm"] = np.asarray(watch.norms[-1], np.float32)
        watch.restore()

        out["loss"] = np.asarray(2.0 * logger.stats["loss_td"], np.float32)
        out["q/online"] = np.stack([q.numpy() for q in recorded["q/online"]], axis=1)
        out["q/target"] = np.stack([q.numpy() for q in recorded["q/target"]], axis=1)
        out["q_tot"] = recorded["q_tot"][0].numpy()[..., 0]
        out["targets"] = recorded["targets"][0].numpy()[..., 0] * record["valid"][:, :-1]

        layers = {f"agents/{path}": layer for path, layer in _mac_layers(learner.mac).items()}
        layers.update({f"mixer/{path}": layer for path, layer in _mixer_layers(learner.mixer).items()})
        for path, layer in layers.items():
            out.update(_flat(dense_grads(layer), f"grad/{path}"))
            out.update(_flat(dense_values(layer), f"after/{path}"))
        rnn = learner.mac.shared_rnn.rnn
        out.update(_flat(gru_grads(rnn), "grad/agents/trunk/params/gru"))
        out.update(_flat(gru_values(rnn), "after/agents/trunk/params/gru"))
    # Their gire_z mac has no student (stage 2 builds it): it gets no gradient and no step, as ours in stage 1.
    for key, value in flat.items():
        if key.startswith("online/agents/student/"):
            out["grad/" + key[len("online/"):]] = np.zeros_like(value)
            out["after/" + key[len("online/"):]] = value
    return out


def _authors_stage2(checkout: Path, golden: Golden) -> dict[str, np.ndarray]:
    """main2.py's training step (its loop body, which sits under `__main__`): their DecCoachNet_TwoStage gives the
    teacher's mu from (s, x_i), PolicyAppModule_TwoStage the student's z', loss ((mu - z')^2).sum(-1).mean(),
    Adam 1e-4, clip_grad_norm_ 10. The rows: every valid (step, agent) of the recorded episodes."""
    import torch as th

    record = recorded_episodes(EPISODES)
    _, _, paradigm, _ = _learner(STAGE_1)
    flat = golden.params
    params = unflatten_like(paradigm.init(jax.random.PRNGKey(0)), flat, "agents/")
    x, _, rows = _stage2_rows(paradigm, params, record)  # x_i from our agent_inputs (checked in ptde_gip_agent)
    state = np.repeat(record["state"].swapaxes(0, 1)[rows], record["action"].shape[-1], axis=0)
    with _their_code(checkout), _quiet():
        from modules.gire.stage_two import DecCoachNet_TwoStage, PolicyAppModule_TwoStage

        args = Namespace(obs_input_dims=x.shape[-1], state_dims=state.shape[-1], z_dims=Z_DIM,
                         rnn_hidden_dim=STUDENT_HIDDEN, high_hyper_hidden_dims=HYPER_HIDDEN, two_hyper_layers=True,
                         var_floor=1e-7, n_agents=record["action"].shape[-1], grad_norm_clip=10)
        coach_net, policy_app = DecCoachNet_TwoStage(args), PolicyAppModule_TwoStage(args)
        p = lambda path: nested(flat, "agents/" + path + "/")  # noqa: E731
        for layer, ours in ((coach_net.w1[0], "hyper_w_hidden"), (coach_net.w1[2], "hyper_w_out"),
                            (coach_net.b1[0], "hyper_b"), (coach_net.mu[0], "generator/mu_hidden"),
                            (coach_net.mu[2], "generator/mu_out"), (coach_net.sigma[0], "generator/var_hidden"),
                            (coach_net.sigma[2], "generator/var_out")):
            copy_dense(layer, p(f"global_info/params/{ours}"))
        student = {"fc1": policy_app.poli_app1, "fc2": policy_app.poli_app2[0], "fc3": policy_app.poli_app2[2]}
        for ours, layer in student.items():
            copy_dense(layer, p(f"student/params/{ours}"))
        params_ = policy_app.parameters()
        optimizer = th.optim.Adam(params_, lr=1e-4, weight_decay=0.0)
        # main2.py's step, line by line (the rows are the whole data set here, not a random batch)
        epoch_train = th.as_tensor(np.concatenate([x, state], axis=-1), dtype=th.float)
        epoch_z = coach_net.forward(epoch_train[:, args.obs_input_dims:], epoch_train[:, :args.obs_input_dims])
        epoch_z_dot = policy_app.forward(epoch_train[:, :args.obs_input_dims])
        loss = ((epoch_z.loc - epoch_z_dot) ** 2).sum(dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(policy_app.parameters(), args.grad_norm_clip)
        grads = {ours: dense_grads(layer) for ours, layer in student.items()}
        optimizer.step()
        out = {"loss": loss.detach().numpy(), "teacher_mu": epoch_z.loc.detach().numpy(),
               "grad_norm": np.asarray(float(grad_norm), np.float32),
               "student_z": epoch_z_dot.detach().numpy()}
        for ours, layer in student.items():
            out.update(_flat(grads[ours], f"grad/student/params/{ours}"))
            out.update(_flat(dense_values(layer), f"after/student/params/{ours}"))
    if float(grad_norm) >= args.grad_norm_clip:
        raise RuntimeError(f"their stage-2 clip is active here (gradient norm {float(grad_norm):.3f}); ours has none")
    return out


COMPONENTS = [
    Component(
        name="ptde_gip_agent", system="ptde",
        what="stage-1 agent with GIP per step: hypernet W (first episode) and b, u = ELU(s W + b), mu, var, "
             "z (injected noise), GRU h, Q; and Q at execution",
        prepare=_prepare_agent(STAGE_1), ours=_ours_agent(STAGE_1, with_w=True),
        authors=_authors_agent("gire_z_env=8_adam_td_lambda", unified=False, with_w=True),
        verdict="departs on purpose",
        note="Training-time outputs (sampled z) as released (gire_z: DecCoachNet + GIREAgent through NGIREMAC), the "
             "same standard-normal noise on both sides. `execution/q`: ours uses z = mu at execution where "
             "theirs samples z in test mode too (ALGORITHMS.md, PTDE); their test-mode forward is run with the "
             "noise set to 0, i.e. z = mu."),
    Component(
        name="ptde_qmix_stage1", system="ptde",
        what="one stage-1 learner step, QMIX + GIP, TD(lambda) 0.6, Adam 1e-3, clip 10 (their "
             "NGireQLearner.train): per-step Q (online, target), Q_tot, lambda targets, loss, grads, params after",
        prepare=_prepare_stage1, ours=_ours_stage1, authors=_authors_stage1,
        verdict="departs on purpose",
        note="Their learner's loss is the masked mean of 0.5 * td_error^2 (pymarl2), ours of td_error^2 (pymarl): "
             "on their side the gradients are doubled before their clip and their loss is compared doubled, so "
             "their clip and Adam see ours (norm 8.59 here, below the clip of 10 either way; with ours the clip "
             "acts from half their norm on). The student (absent from their stage-1 mac) gets zero gradient on "
             "both sides. Targets compared where the mask is 1 (theirs are 0 past an episode). The worst output, "
             "6.8e-6, is Adam's first step on a zero-initialized bias: optax's bias correction 1 - 0.999 in "
             "float32 makes every first update about 7e-6 (relative) smaller than torch's."),
    Component(
        name="ptde_giu_agent", system="ptde",
        what="stage-1 agent with GIU (the unified ablation, their gire_s): per step u, mu, var, z (injected "
             "noise), GRU h, Q; and Q at execution",
        prepare=_prepare_agent(GIU), ours=_ours_agent(GIU, with_w=False),
        authors=_authors_agent("gire_s_env=8_adam_td_lambda", unified=True, with_w=False),
        verdict="departs on purpose",
        note="Their StateCoachNet encodes the state with one Linear (state -> z, no activation); ours with the "
             "paper's MLP, ELU(Linear(ReLU(Linear(s -> 64)) -> z)) (UnifiedGlobalInfo). Their fc1 is replaced by "
             "ours (our parameters) on their side; the distribution generator, sampling and Q head are theirs. "
             "`execution/q`: z = mu, as in ptde_gip_agent."),
    Component(
        name="ptde_stage2", system="ptde",
        what="stage-2 distillation step (their main2.py / stage_two.py): teacher mu, student z', loss "
             "sum-over-dims mean-over-rows, grads, Adam 1e-4 step",
        prepare=_prepare_stage2, ours=_ours_stage2, authors=_authors_stage2,
        note="Rows: every valid (step, agent) of the recorded episodes (291) as one batch. Their step clips the "
             "gradient norm at 10, ours does not clip; their norm here is 3.62 (checked below 10), so their clip "
             "is inactive. Our Adam step is optax.adam(ptde.distill_lr), as run_distillation builds it. The worst "
             "output, 6.9e-6, is Adam's first step on a zero-initialized bias (optax's float32 bias correction, "
             "see ptde_qmix_stage1)."),
]
