"""What every cross-check shares: recorded SMAX episodes, golden files, parameter trees flattened by path, the
comparison, and (PyTorch side) the pymarl batch layout, parameter copies and the import of an authors' checkout.

Layouts. ctde's replay holds batch-major sequences `[B, T + 1, ...]` (`ctde.algos.rollout.Trajectory`) and its
learners read them time-major. pymarl's `EpisodeBatch` is batch-major `[B, T + 1, ...]` with actions `[.., n, 1]`,
reward and terminated `[.., 1]`, and `filled` marking the entries written in an episode. Entry t of both holds the
inputs seen at step t, the action taken there and what the transition returned; entry T the bootstrap inputs.
`pymarl_batch` converts ours into theirs: filled = our `valid` (the learner's mask is then the same), every other
field copied as it is, padding included, so both sides read identical numbers.

Comparison. For every output array: the largest absolute difference, and the relative one, that difference over
the largest absolute value of the authors' array (a norm-wise relative error: element-wise ratios are
meaningless where values cross zero). The tolerance is relative 1e-5 in float32 unless a component states another.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden"
RELATIVE_TOLERANCE = 1e-5


# -- golden files --------------------------------------------------------------------------------------------

@dataclass
class Golden:
    """One component's golden record: the inputs, our parameter values (flattened by path) and the authors'
    outputs (losses, per-step outputs, gradients, parameters after one optimizer step), all NumPy arrays."""

    inputs: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    expected: dict[str, np.ndarray] = field(default_factory=dict)


def save_golden(name: str, golden: Golden, directory: Path = GOLDEN_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, part in (("input", golden.inputs), ("param", golden.params), ("expected", golden.expected)):
        for key, value in part.items():
            arrays[f"{prefix}:{key}"] = np.asarray(value)
    path = directory / f"{name}.npz"
    np.savez_compressed(path, **arrays)
    return path


def load_golden(name: str, directory: Path = GOLDEN_DIR) -> Golden:
    golden = Golden({}, {}, {})
    parts = {"input": golden.inputs, "param": golden.params, "expected": golden.expected}
    with np.load(directory / f"{name}.npz") as data:
        for key in data.files:
            prefix, rest = key.split(":", 1)
            parts[prefix][rest] = data[key]
    return golden


def golden_names(directory: Path = GOLDEN_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.npz"))


# -- parameter trees -----------------------------------------------------------------------------------------

def _path_name(path: tuple) -> str:
    parts = []
    for entry in path:
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                parts.append(str(getattr(entry, attribute)))
                break
    return "/".join(parts)


def flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """A pytree of arrays -> {"a/b/c": array}, paths from dict keys, dataclass fields and list indices."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {prefix + _path_name(path): np.asarray(leaf) for path, leaf in leaves}


def unflatten_like(template: Any, flat: dict[str, np.ndarray], prefix: str = "") -> Any:
    """The tree of `template` with every leaf taken from `flat` by path; a missing path or a shape that differs
    is an error naming it (the golden file was made for another network)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = []
    for path, leaf in leaves:
        name = prefix + _path_name(path)
        if name not in flat:
            raise KeyError(f"golden parameters lack {name!r}")
        value = flat[name]
        if value.shape != np.shape(leaf):
            raise ValueError(f"golden parameter {name!r} has shape {value.shape}, the network {np.shape(leaf)}")
        values.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
    return jax.tree_util.tree_unflatten(treedef, values)


def nested(flat: dict[str, np.ndarray], prefix: str) -> dict:
    """The entries of a flattened tree under `prefix` ("online/agents/", with its slash) as nested dicts: what the
    parameter copies into the authors' modules read. {"online/agents/fc1/kernel": x} -> {"fc1": {"kernel": x}}."""
    tree: dict = {}
    for key, value in flat.items():
        if key.startswith(prefix):
            *parents, leaf = key[len(prefix):].split("/")
            node = tree
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return tree


# -- comparison ----------------------------------------------------------------------------------------------

def difference(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(max absolute difference, that over max |theirs|)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: ours {ours.shape}, the authors' {theirs.shape}")
    if ours.size == 0:
        return 0.0, 0.0
    absolute = float(np.max(np.abs(ours - theirs)))
    scale = float(np.max(np.abs(theirs)))
    return absolute, absolute / scale if scale > 0 else absolute


def compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Every key of `theirs` -> (absolute, relative) difference; a key missing from `ours` is an error."""
    missing = sorted(set(theirs) - set(ours))
    if missing:
        raise KeyError(f"our side computed no {missing}")
    return {key: difference(ours[key], theirs[key]) for key in sorted(theirs)}


# -- recorded episodes ---------------------------------------------------------------------------------------

EPISODE_FIELDS = ("obs", "state", "avail", "last_action", "reset", "action", "reward", "terminal", "done", "valid",
                  "alive")


def record_smax(map_name: str = "3m", episodes: int = 6, seed: int = 0, sight_range: float | None = None,
                episode_limit: int | None = None, views: tuple[str, ...] = ("full_obs",)) -> dict[str, np.ndarray]:
    """`episodes` SMAX episodes of uniformly random available actions, recorded by ctde's own rollout
    (`ctde.algos.rollout.collect`), batch-major [B, T + 1, ...] and cut after the longest episode's bootstrap
    entry (as pymarl cuts a batch to its longest episode). Random play on 3m loses units within the episode, so
    the batch holds dead agents (all-zero observations, only no-op available), unavailable actions and padding.
    Views (e.g. full_obs, the unlimited-sight observation) are stored as `view_<name>`."""
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import make_paradigm
    from ctde.algos.rollout import collect
    from ctde.nets.actions import epsilon_greedy

    overrides = [f"env=smax:{map_name}", "algo=qmix", "paradigm=ctde"]
    if sight_range is not None:
        overrides.append(f"env.sight_range={sight_range}")
    if episode_limit is not None:
        overrides.append(f"env.episode_limit={episode_limit}")
    config = build_config(overrides)
    env = make_env(config.env, views=views)
    paradigm = make_paradigm(config, env.spec)
    key = jax.random.PRNGKey(seed)
    params = paradigm.init(key)
    trajectory, _ = collect(env, paradigm, params, jax.random.fold_in(key, 1), num_envs=episodes,
                            length=env.spec.episode_limit, auto_reset=False, model=paradigm.collect_model,
                            select_actions=epsilon_greedy(jnp.float32(1.0)))
    record = {name: np.asarray(getattr(trajectory, name)) for name in EPISODE_FIELDS}
    record.update({f"view_{name}": np.asarray(value) for name, value in trajectory.views.items()})
    keep = int(record["valid"].sum(axis=1).max()) + 1  # the longest episode and its bootstrap entry
    return {name: value[:, :keep] for name, value in record.items()}


# The recorded batches every component reads, by name: recorded once by the benchmark (when the file is missing)
# and kept under tests/golden/episodes/, so every golden file made from them sees the same numbers. An episode
# limit of 20 makes one of the six 3m episodes end by the time limit (done, not terminal).
EPISODE_SETS = {
    "smax_3m": dict(map_name="3m", episodes=6, seed=0, episode_limit=20),
    "smax_3m_sight0": dict(map_name="3m", episodes=6, seed=0, episode_limit=20, sight_range=0),
}


def recorded_episodes(name: str = "smax_3m") -> dict[str, np.ndarray]:
    """The named recorded batch (EPISODE_SETS), from tests/golden/episodes/<name>.npz; recorded there first if
    the file is missing."""
    path = GOLDEN_DIR / "episodes" / f"{name}.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, **record_smax(**EPISODE_SETS[name]))
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def trajectory(record: dict[str, np.ndarray]):
    """The recorded arrays as ctde's batch-major `Trajectory` [B, T + 1, ...]."""
    from ctde.algos.rollout import Trajectory

    views = {name[len("view_"):]: jnp.asarray(value) for name, value in record.items() if name.startswith("view_")}
    return Trajectory(**{name: jnp.asarray(record[name]) for name in EPISODE_FIELDS}, views=views)


# -- our side of a value-decomposition learner ----------------------------------------------------------------

@dataclass
class Component:
    """One cross-checked component. `prepare` records the inputs and draws our initial parameters (JAX),
    `ours` computes our outputs from a Golden (JAX only), `authors` the authors' outputs from the same Golden
    with their checkout (PyTorch). Both return {name: array} with the same names. `verdict` is "matched" or
    "departs on purpose" (then `note` says how, and the authors' side reproduces our deliberate departure, or
    ours theirs, so the outputs still match); `tolerance` is relative (see module docstring), with `note`
    giving the reason when it is looser than 1e-5."""

    name: str
    system: str
    what: str
    prepare: Any
    ours: Any
    authors: Any
    tolerance: float = RELATIVE_TOLERANCE
    verdict: str = "matched"
    note: str = ""


def vd_learner(overrides: list[str]):
    """(config, env, paradigm, backbone) of ctde's value-decomposition learner for `overrides` (`key=value`
    options of `ctde train`), built as `ctde train` builds them, nothing compiled."""
    from ctde.algos.value_decomposition import ValueDecomposition
    from ctde.config import build_config
    from ctde.envs import make_env
    from ctde.paradigms import PARADIGMS, make_paradigm
    from ctde.training.resolve import resolve

    config = resolve(build_config(overrides))
    env = make_env(config.env, views=PARADIGMS[config.paradigm.name].required_views)
    paradigm = make_paradigm(config, env.spec)
    return config, env, paradigm, ValueDecomposition(config, env, paradigm)


def vd_initial_params(backbone, seed: int = 0) -> dict[str, np.ndarray]:
    """Online and target parameters drawn by our own initializers ("online/...", "target/..."): two different
    draws, so a target network mistaken for the online one (or the reverse) shows."""
    from ctde.algos.value_decomposition import VDParams

    flat = {}
    for role, offset in (("online", 0), ("target", 1)):
        agent_key, mixer_key = jax.random.split(jax.random.PRNGKey(seed + offset))
        params = VDParams(agents=backbone.paradigm.init(agent_key), mixer=backbone.objective.init(mixer_key))
        flat.update(flatten(params, prefix=f"{role}/"))
    return flat


def vd_params(backbone, golden: Golden):
    """(online, target) VDParams of `backbone` from a golden file's parameters."""
    from ctde.algos.value_decomposition import VDParams

    template = VDParams(agents=backbone.paradigm.init(jax.random.PRNGKey(0)),
                        mixer=backbone.objective.init(jax.random.PRNGKey(0)))
    return (unflatten_like(template, golden.params, "online/"), unflatten_like(template, golden.params, "target/"))


def vd_step(backbone, golden: Golden, record: dict[str, np.ndarray], env_steps: int, key: jax.Array | None = None
            ) -> dict[str, np.ndarray]:
    """Our learner's outputs on the recorded batch `record` with the golden file's parameters: every model's
    scores per step ("scores/<model>", batch-major [B, T + 1, n, |A|], from the online parameters), the total
    loss and every logged metric ("metric/<name>"), the gradient of the total loss ("grad/<path>") and the
    parameters after one step of the backbone's own optimizer from its initial state ("after/<path>"). This is `ValueDecomposition.update` on one batch, without
    its replay sampling and its slicing (tested equal to the whole batch elsewhere)."""
    import optax

    params, target_params = vd_params(backbone, golden)
    batch = trajectory(record).transpose()
    paradigm = backbone.paradigm

    @jax.jit
    def step(params, target_params, batch):
        (loss, metrics), grads = jax.value_and_grad(backbone.td_loss, has_aux=True)(
            params, target_params, batch, jnp.int32(env_steps), key)
        updates, _ = backbone.optimizer.update(grads, backbone.optimizer.init(params), params)
        _, output = paradigm.apply(params.agents, paradigm.initial_carry(batch.reward.shape[1:]),
                                   batch.agent_inputs(), rng=key)
        return loss, metrics, grads, optax.apply_updates(params, updates), output

    loss, metrics, grads, after, output = step(params, target_params, batch)
    out = {"loss": np.asarray(loss), **{f"metric/{k}": np.asarray(v) for k, v in metrics.items()}}
    out.update({f"scores/{model}": np.swapaxes(np.asarray(s), 0, 1) for model, s in output.scores.items()})
    out.update(flatten(grads, prefix="grad/"))
    out.update(flatten(after, prefix="after/"))
    return out


# -- the authors' side (PyTorch) -----------------------------------------------------------------------------

@contextlib.contextmanager
def authors_code(source_dir: str | Path) -> Iterator[None]:
    """Import from an authors' checkout (its `src/`, where pymarl keeps `components`, `modules`, `learners`, ...).
    Every module loaded from it is dropped on exit, so the next checkout's same-named packages load afresh."""
    source_dir = str(Path(source_dir).resolve())
    before = set(sys.modules)
    sys.path.insert(0, source_dir)
    try:
        yield
    finally:
        sys.path.remove(source_dir)
        def from_checkout(module) -> bool:
            # A namespace package (a folder without __init__.py, e.g. `utils`) has no __file__, only __path__.
            places = [getattr(module, "__file__", None) or "", *getattr(module, "__path__", [])]
            return module is None or any(str(place).startswith(source_dir) for place in places)

        # Decide for every module before dropping any: a namespace path reads its parent package from sys.modules.
        dropped = [name for name in set(sys.modules) - before if from_checkout(sys.modules.get(name))]
        for name in dropped:
            del sys.modules[name]


def pymarl_batch(record: dict[str, np.ndarray], n_actions: int,
                 extra: dict[str, tuple[np.ndarray, dict]] | None = None):
    """Our recorded episodes as the checkout's `components.episode_buffer.EpisodeBatch` (call inside
    `authors_code`). `extra` adds fields: name -> (array [B, T + 1, ...], scheme entry)."""
    import torch as th
    from components.episode_buffer import EpisodeBatch
    from components.transforms import OneHot

    batch_size, length, n_agents = record["action"].shape
    scheme = {
        "state": {"vshape": record["state"].shape[-1]},
        "obs": {"vshape": record["obs"].shape[-1], "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": th.long},
        "avail_actions": {"vshape": (n_actions,), "group": "agents", "dtype": th.int},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": th.uint8},
    }
    data = {
        "state": record["state"], "obs": record["obs"], "actions": record["action"][..., None],
        "avail_actions": record["avail"].astype(np.int32), "reward": record["reward"][..., None],
        # pymarl writes terminated only at the step that ended the episode (ours stays True over the padding)
        "terminated": (record["terminal"] & record["valid"])[..., None].astype(np.uint8),
    }
    for name, (value, entry) in (extra or {}).items():
        scheme[name] = entry
        data[name] = value
    batch = EpisodeBatch(scheme, {"agents": n_agents}, batch_size, length,
                         preprocess={"actions": ("actions_onehot", [OneHot(out_dim=n_actions)])}, device="cpu")
    batch.update({name: np.ascontiguousarray(value) for name, value in data.items()}, bs=slice(None),
                 ts=slice(None), mark_filled=False)
    batch.data.transition_data["filled"][:] = th.as_tensor(record["valid"][..., None].astype(np.int64))
    return batch


class ClipWatch:
    """What `watched_clip` saw: each parameter's gradient as it reached the clip (`gradients`, by id; copies,
    since the clip rescales `.grad` in place) and the norm every clip call returned (`norms`, in call order)."""

    def __init__(self):
        self.gradients: dict[int, Any] = {}
        self.norms: list[float] = []
        self._parameters: list = []

    def restore(self) -> None:
        """Put the pre-clip gradients back into `.grad`, so the layout readers (`dense_grads`, `gru_grads`, ...)
        read the gradient of the total loss after train() has stepped."""
        for parameter in self._parameters:
            parameter.grad = self.gradients[id(parameter)]


@contextlib.contextmanager
def watched_clip(scale: float = 1.0) -> Iterator[ClipWatch]:
    """While an authors' train() runs: `torch.nn.utils.clip_grad_norm_` first multiplies every gradient by `scale`
    (ctde's loss is `scale` times theirs, e.g. 2 where theirs is 0.5·td²: their clip and optimizer then see our
    gradient), records it and, after clipping, the norm; and `.cuda()` returns the tensor itself (some of their
    learners build tensors with a bare `.cuda()`; this runs on the CPU)."""
    import torch

    watch = ClipWatch()
    clip, cuda = torch.nn.utils.clip_grad_norm_, torch.Tensor.cuda

    def recording_clip(parameters, *args, **kwargs):
        parameters = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
        for parameter in parameters:
            if parameter.grad is not None:
                if scale != 1.0:
                    parameter.grad.mul_(scale)
                watch.gradients[id(parameter)] = parameter.grad.detach().clone()
                watch._parameters.append(parameter)
        norm = clip(parameters, *args, **kwargs)
        watch.norms.append(float(norm))
        return norm

    torch.nn.utils.clip_grad_norm_ = recording_clip
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield watch
    finally:
        torch.nn.utils.clip_grad_norm_ = clip
        torch.Tensor.cuda = cuda


def torch_tensor(value: np.ndarray):
    import torch as th

    return th.as_tensor(np.ascontiguousarray(value))


def copy_dense(layer, params: dict) -> None:
    """A flax Dense {"kernel" [in, out], "bias" [out]} into a torch.nn.Linear (weight [out, in])."""
    import torch as th

    with th.no_grad():
        layer.weight.copy_(torch_tensor(np.asarray(params["kernel"]).T))
        if layer.bias is not None:
            layer.bias.copy_(torch_tensor(np.asarray(params["bias"])))
        elif "bias" in params:
            raise ValueError("our layer has a bias, the authors' has none")


def dense_grads(layer) -> dict[str, np.ndarray]:
    """A torch.nn.Linear's gradients in our layout ({"kernel" [in, out], "bias" [out]})."""
    grads = {"kernel": layer.weight.grad.detach().numpy().T}
    if layer.bias is not None:
        grads["bias"] = layer.bias.grad.detach().numpy()
    return grads


def dense_values(layer) -> dict[str, np.ndarray]:
    values = {"kernel": layer.weight.detach().numpy().T}
    if layer.bias is not None:
        values["bias"] = layer.bias.detach().numpy()
    return values


def copy_gru(cell, params: dict) -> None:
    """Our `ResettableGRU` into a torch.nn.GRUCell. Both use PyTorch's gate order (r, z, n) and biases: our
    input Dense(3H) is weight_ih / bias_ih, our hidden_{r,z,n} [H, H] (x @ W) are the rows of weight_hh."""
    import torch as th

    with th.no_grad():
        cell.weight_ih.copy_(torch_tensor(np.asarray(params["input"]["kernel"]).T))
        cell.bias_ih.copy_(torch_tensor(np.asarray(params["input"]["bias"])))
        hidden = np.concatenate([np.asarray(params[f"hidden_{g}"]).T for g in "rzn"], axis=0)
        cell.weight_hh.copy_(torch_tensor(hidden))
        cell.bias_hh.copy_(torch_tensor(np.concatenate([np.asarray(params[f"hidden_bias_{g}"]) for g in "rzn"])))


def gru_layout(weight_ih, bias_ih, weight_hh, bias_hh) -> dict:
    """A GRUCell's four tensors (values or gradients, NumPy) in our `ResettableGRU` layout."""
    weight_hh = np.asarray(weight_hh)
    hidden = weight_hh.shape[1]
    out = {"input": {"kernel": np.asarray(weight_ih).T, "bias": np.asarray(bias_ih)}}
    for index, gate in enumerate("rzn"):
        out[f"hidden_{gate}"] = weight_hh[index * hidden:(index + 1) * hidden].T
        out[f"hidden_bias_{gate}"] = np.asarray(bias_hh)[index * hidden:(index + 1) * hidden]
    return out


def gru_grads(cell) -> dict:
    return gru_layout(*(p.grad.detach().numpy() for p in (cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh)))


def gru_values(cell) -> dict:
    return gru_layout(*(p.detach().numpy() for p in (cell.weight_ih, cell.bias_ih, cell.weight_hh, cell.bias_hh)))


class Namespace(dict):
    """pymarl's `args`: attribute access over a dict (its code also calls getattr(args, name, default))."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


class RecordingLogger:
    """pymarl's logger: keeps every `log_stat` value, so a learner's loss and metrics can be read back."""

    def __init__(self):
        self.stats: dict[str, float] = {}
        self.console_logger = self

    def log_stat(self, key: str, value: Any, t: int) -> None:
        self.stats[key] = float(value)

    def info(self, *args, **kwargs) -> None:
        pass
