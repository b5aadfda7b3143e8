"""`ctde compare`: tables, aggregate statistics and curves over many runs, grouped into methods and tasks.

A *run* is a directory written by `ctde train` (config.yaml + metrics.jsonl). Each run contributes one *entry*
per compared model: its method label (built from the options that differ between runs, e.g. `cadp/qmix`), its
task (the env id), and a *score* per seed, the final test metric. Entries with the same method and task pool
their seeds.

Statistics follow Agarwal et al. (2021), "Deep RL at the Edge of the Statistical Precipice", through their
library rliable (`pip install 'ctde[stats]'`): interquartile mean (IQM), mean and median over all runs and
tasks with stratified bootstrap confidence intervals, the probability of improvement between methods, and
performance profiles. rliable's bootstrap (arch's resampling, stratified by task) is used as is; the statistics
it resamples are numpy expressions of rliable's own metrics, vectorized (over tasks, thresholds or curve points)
because arch calls them once per resample in a Python loop, and checked against rliable's functions in the
tests.

Outputs (see docs/compare.md): table.md / table.tex (methods x tasks, mean ± std over seeds, best in bold),
aggregate.md, curves_<task>.png, performance_profile.png, marl_eval.json (marl-eval's raw-data format) and
compare.json (every number).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctde.algos import BACKBONES
from ctde.config import from_dict, iter_options, load_yaml, to_dict
from ctde.envs.toy import TOY_ENVS, make_toy
from ctde.errors import ConfigError, CtdeError
from ctde.paradigms import PARADIGMS
from ctde.training.logger import read_metrics
from ctde.training.report import curves, label_env_steps

METRICS = ("win_rate", "return")
# Metrics copied into marl_eval.json at every evaluation (marl-eval wants the same set at every step).
MARL_EVAL_METRICS = ("win_rate", "return", "episode_length")
STATS_INSTALL = "pip install 'ctde[stats]'"
# `--group-by` / `--task-by` shorthands for the options that name things.
SHORTHANDS = {"paradigm": "paradigm.name", "algo": "algo.name", "env": "env.id"}
NAME_KEYS = ("paradigm.name", "algo.name", "env.id")  # shown as bare values in labels, not key=value
RUN_KEY = "run"  # pseudo-key: the run directory's name (one method per run)
# Options that never make a different method: the task itself, seeds, bookkeeping, and the CPU kernel /
# slicing choices (which change speed, not what is computed). `steps` is left out too: runs of one method
# stopped at different budgets are still that method (`--group-by ...,steps` separates them).
NOT_METHOD_PREFIXES = ("env.", "ltr.", "log.", "eval.")
NOT_METHOD_KEYS = ("seed", "seeds", "out", "steps", "algo.cpu_kernels", "algo.slice_rows", "algo.slice_devices")


class StatsUnavailableError(CtdeError):
    """rliable (ctde's `stats` extra) is not installed or does not import."""


def rliable_modules():
    """(rliable.library, rliable.metrics), or a StatsUnavailableError that names the install step."""
    try:
        from rliable import library, metrics
    except ImportError as e:
        raise StatsUnavailableError(
            f"`ctde compare` needs the rliable statistics library, which is not installed ({e}). Install it with "
            f"`{STATS_INSTALL}`.") from None
    except TypeError as e:
        # arch < 8 (which rliable 1.2 requires) fails at import under pandas 3, in a pandas decorator.
        raise StatsUnavailableError(
            f"rliable is installed but its dependency arch does not import ({e}); arch 7 needs pandas < 3. "
            f"Reinstall with `{STATS_INSTALL}`, which pins a working set.") from None
    return library, metrics


# ---------------------------------------------------------------------------------------------------------
# Finding and reading runs


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file() and (path / "metrics.jsonl").is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories among `paths`: each path is a run, or a folder searched recursively for runs.

    A run directory is one with config.yaml and metrics.jsonl; the search does not descend into runs (their
    checkpoints/ and policy/ hold no runs)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ConfigError(f"{path} does not exist. Give run directories, or folders that contain them.")
        if not path.is_dir():
            raise ConfigError(f"{path} is a file; give run directories (with config.yaml and metrics.jsonl), or "
                              f"folders that contain them.")
        for root, dirs, _ in os.walk(path):
            here = Path(root)
            if _is_run(here):
                found.append(here)
                dirs.clear()
            else:
                dirs.sort()
    unique = list(dict.fromkeys(p.resolve() for p in found))
    if not unique:
        raise ConfigError(f"No ctde runs found in {', '.join(map(str, paths))}: a run directory holds config.yaml "
                          f"and metrics.jsonl, as `ctde train` writes them.")
    return sorted(unique)


def _flat(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def env_has_win(env_id: str, toy_size: int | None = None) -> bool:
    """Whether an environment reports wins, without building it (SMAX does; MPE, LTR and the matrix games do not)."""
    family, _, name = env_id.partition(":")
    if family == "smax":
        return True
    if family == "toy":
        return name in TOY_ENVS and make_toy(name, toy_size, ()).spec.has_win
    return False


@dataclass
class Run:
    """One run directory, read: its dotted options, metric rows, and what its paradigm evaluates."""

    path: Path
    options: dict[str, Any]
    rows: list[dict]
    has_win: bool
    export_model: str
    models: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.name


def load_run(path: str | Path) -> Run:
    """Read a run directory; its exported model is policy/policy.json's "model", else the paradigm's."""
    path = Path(path)
    try:
        options = _flat(to_dict(from_dict(load_yaml(path / "config.yaml"))))
    except ConfigError as e:
        raise ConfigError(f"The saved configuration of {path} does not load in this ctde: {e}") from None
    paradigm = PARADIGMS[options["paradigm.name"]]
    export_model = paradigm.export_model
    policy_file = path / "policy" / "policy.json"
    if policy_file.is_file():
        try:
            export_model = json.loads(policy_file.read_text()).get("model", export_model)
        except (json.JSONDecodeError, OSError):
            pass  # a damaged policy.json does not change which model the paradigm exports
    return Run(path=path, options=options, rows=read_metrics(path),
               has_win=env_has_win(options["env.id"], options.get("env.toy_size")),
               export_model=export_model, models=tuple(paradigm.eval_models))


# ---------------------------------------------------------------------------------------------------------
# Scores


@dataclass
class Scores:
    """Final test scores of one model of one run: `values` [seeds], aligned with `seeds` and `env_steps`."""

    seeds: list[int]
    values: np.ndarray
    env_steps: list[int | None]
    source: str


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (json.JSONDecodeError, OSError):
        return None


def _distill_scores(run: Run, model: str, metric: str) -> Scores | None:
    """A distilled model's evaluation when stage 2 ended (distill.json), if `model` is one of its two."""
    record = _read_json(run.path / "distill.json")
    for role, name in (record or {}).get("models", {}).items():
        if name == model and metric in record.get(role, {}):
            return Scores(list(record["seeds"]), np.asarray(record[role][metric], float),
                          [None] * len(record["seeds"]), "distill.json")
    return None


def _eval_scores(run: Run, model: str, metric: str) -> Scores | None:
    """`ctde eval RUN --model M`'s greedy evaluation (eval_<model>.json)."""
    record = _read_json(run.path / f"eval_{model}.json")
    if not record or not record.get("per_seed") or metric not in record["per_seed"][0]:
        return None
    per_seed = record["per_seed"]
    steps = record.get("env_steps") or [None] * len(per_seed)
    return Scores([r["seed"] for r in per_seed], np.array([r[metric] for r in per_seed], float), list(steps),
                  f"eval_{model}.json")


def final_scores(run: Run, model: str, metric: str) -> Scores | None:
    """Each seed's last logged evaluation of `model` (metrics.jsonl); for a model never evaluated during
    training (PTDE's student, CTEDD's local policies), its post-training evaluation. None if there is none."""
    key = f"test/{model}/{metric}"
    last: dict[int, dict] = {}
    for row in run.rows:
        if row.get(key) is not None and (row["seed"] not in last or row["block"] >= last[row["seed"]]["block"]):
            last[row["seed"]] = row
    if last:
        seeds = sorted(last)
        blocks = sorted({last[s]["block"] for s in seeds})
        where = f"block {blocks[0]}" if len(blocks) == 1 else f"blocks {blocks[0]}-{blocks[-1]}"
        return Scores(seeds, np.array([last[s][key] for s in seeds], float),
                      [last[s].get("env_steps") for s in seeds], f"metrics.jsonl ({where})")
    return _distill_scores(run, model, metric) or _eval_scores(run, model, metric)


# ---------------------------------------------------------------------------------------------------------
# Grouping runs into methods and tasks


def parse_keys(text: str | None, what: str) -> list[str] | None:
    """`--group-by` / `--task-by`: comma-separated option keys (dotted, as in `ctde train`), the shorthands
    paradigm, algo, env, or `run` (the run directory's name). None when not given."""
    if text is None:
        return None
    valid = [k for k, *_ in iter_options()]
    keys = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        key = SHORTHANDS.get(raw, raw)
        if key != RUN_KEY and key not in valid:
            close = difflib.get_close_matches(key, valid + list(SHORTHANDS) + [RUN_KEY], n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(f"{what} {raw!r} is not an option.{hint} Use option keys as in `ctde train` "
                              f"(e.g. paradigm,algo,cadp.alpha), the shorthands {', '.join(SHORTHANDS)}, or run.")
        keys.append(key)
    if not keys:
        raise ConfigError(f"{what} is empty; give option keys, e.g. {what} paradigm,algo.")
    return keys


def _value(run: Run, key: str) -> Any:
    return run.name if key == RUN_KEY else run.options.get(key)


def _show(value: Any) -> str:
    """An option value in a label: floats compactly (0.0 -> 0, 5e-4 -> 0.0005), the rest as written."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _label(run: Run, keys: Sequence[str]) -> str:
    """Names (paradigm, algo, env id, run) joined by '/', then the other options that apply to the run as
    ` key=value` (a CTDE run is not labelled by cadp.alpha)."""
    names = [str(_value(run, k)) for k in keys if k in NAME_KEYS or k == RUN_KEY]
    options = [f"{k}={_show(_value(run, k))}" for k in keys if k not in NAME_KEYS and k != RUN_KEY and _applies(k, run)]
    return " ".join(["/".join(names)] + options if names else options)


def _applies(key: str, run: Run) -> bool:
    """Whether an option means anything for this run: a paradigm's own section only under that paradigm,
    ppo.* only for MAPPO/IPPO, maddpg.* only for MADDPG (every config carries every section): the sections the
    paradigm and backbone registries declare (`ctde.paradigms.PARADIGMS`' options, `ctde.algos.BACKBONES`' section)."""
    section = key.split(".")[0]
    if section in PARADIGMS and PARADIGMS[section].options is not None:
        return run.options["paradigm.name"] == section
    backbone_sections = {entry.section for entry in BACKBONES.values()}
    if section in backbone_sections:
        return BACKBONES[run.options["algo.name"]].section == section
    return True


def default_method_keys(runs: Sequence[Run], task_of: Callable[[Run], str]) -> list[str]:
    """paradigm.name and algo.name (each only if it differs between runs), then every other method option that
    differs between runs of the same task, paradigm and backbone, in declaration order.

    Compared within a task because resolved defaults depend on the map (e.g. epsilon annealing on the hard
    SMAX maps), and within a paradigm and backbone because they depend on those too (MAPPO's rollout length):
    such options follow from the names already in the label, and across groups they would only repeat them."""
    varying = []
    for key in runs[0].options:
        if key in NOT_METHOD_KEYS or key.startswith(NOT_METHOD_PREFIXES):
            continue
        if key in ("paradigm.name", "algo.name"):
            if len({run.options[key] for run in runs}) > 1:
                varying.append(key)
            continue
        groups: dict[tuple, set] = {}
        for run in runs:
            if _applies(key, run):
                group = (task_of(run), run.options["paradigm.name"], run.options["algo.name"])
                groups.setdefault(group, set()).add(json.dumps(run.options.get(key)))
        if any(len(values) > 1 for values in groups.values()):
            varying.append(key)
    names = [k for k in ("paradigm.name", "algo.name") if k in varying]
    if not names:  # every run has the same paradigm and backbone: still name it
        names = ["paradigm.name"]
    return names + [k for k in varying if k not in names]


@dataclass
class Entry:
    """One model of one run, as a method on a task: final scores [seeds] and where they came from."""

    run: Run
    model: str
    method: str
    task: str
    scores: Scores
    base: str = ""  # the method label before a model suffix


def build_entries(runs: Sequence[Run], *, metric: str | None = None, models: Sequence[str] | None = None,
                  group_by: Sequence[str] | None = None, task_by: Sequence[str] | None = None,
                  skip_unevaluated: bool = False, notes: list[str] | None = None) -> tuple[list[Entry], str]:
    """Entries of every run and requested model, and the metric compared.

    `models`: model names, `export` (each run's exported model; the default) or `all` (every model the
    paradigm evaluates). A run contributes each requested model it has. Method labels get a `/<model>` suffix
    where one label covers several models (e.g. `cadp/decentralized` and `cadp/centralized`)."""
    notes = notes if notes is not None else []
    task_keys = list(task_by or ["env.id"])
    task_of = lambda run: _label(run, task_keys)  # noqa: E731
    metric = _choose_metric(runs, metric)
    method_keys = list(group_by) if group_by else default_method_keys(runs, task_of)
    requested = list(models or ["export"])
    entries: list[Entry] = []
    unevaluated: list[str] = []
    for run in runs:
        wanted: list[str] = []
        for name in requested:
            for model in (run.export_model,) if name == "export" else run.models if name == "all" else (name,):
                if model in run.models and model not in wanted:
                    wanted.append(model)
        if not wanted:
            raise ConfigError(f"Run {run.path} (paradigm {run.options['paradigm.name']}) has none of the models "
                              f"{', '.join(requested)}; its models: {', '.join(run.models)}. Add `export` to "
                              f"--model (e.g. --model export,{requested[0]}) to use each run's exported model.")
        base = _label(run, method_keys)
        for model in wanted:
            scores = final_scores(run, model, metric)
            if scores is None or scores.values.size == 0:
                unevaluated.append(f"{run.path} ({model})")
                continue
            entries.append(Entry(run=run, model=model, method=base, task=task_of(run), scores=scores, base=base))
    if unevaluated:
        message = (f"{len(unevaluated)} run(s) have no test evaluation of {metric} yet: {'; '.join(unevaluated)}. "
                   f"A run logs its first evaluation after eval.interval env steps; a distilled student is "
                   f"evaluated when stage 2 ends (or run `ctde eval RUN --model M`).")
        if not skip_unevaluated or not entries:
            hint = "" if skip_unevaluated else " Pass --skip-unevaluated to compare the others."
            raise ConfigError(message + hint)
        notes.append("Skipped: " + message)
    models_per_base: dict[str, set[str]] = {}
    for entry in entries:
        models_per_base.setdefault(entry.base, set()).add(entry.model)
    for entry in entries:
        if len(models_per_base[entry.base]) > 1:
            entry.method = f"{entry.base}/{entry.model}"
    return entries, metric


def _choose_metric(runs: Sequence[Run], metric: str | None) -> str:
    if metric is not None:
        if metric not in METRICS:
            raise ConfigError(f"--metric {metric!r}: choose win_rate or return.")
        if metric == "win_rate":
            no_wins = sorted({r.options["env.id"] for r in runs if not r.has_win})
            if no_wins:
                raise ConfigError(f"--metric win_rate: {', '.join(no_wins)} report no wins (their win rate is "
                                  f"always 0). Use --metric return, or leave those runs out.")
        return metric
    defaults = {("win_rate" if r.has_win else "return") for r in runs}
    if len(defaults) > 1:
        wins = sorted({r.options["env.id"] for r in runs if r.has_win})
        no_wins = sorted({r.options["env.id"] for r in runs if not r.has_win})
        raise ConfigError(f"Mixed metrics: {', '.join(wins)} are scored by win rate, {', '.join(no_wins)} (no wins) "
                          f"by return, and one comparison needs one metric. Pass --metric return (every env has "
                          f"returns), or compare the two groups separately.")
    return defaults.pop()


# ---------------------------------------------------------------------------------------------------------
# Statistics


def _ordered(items) -> list:
    return list(dict.fromkeys(items))


def per_task_table(entries: Sequence[Entry]) -> dict[str, dict[str, dict]]:
    """{method: {task: {mean, std, n, scores, env_steps}}}: seeds of every run of a method on a task pooled;
    std over seeds with ddof=0, as ctde's run reports."""
    table: dict[str, dict[str, dict]] = {}
    for entry in entries:
        cell = table.setdefault(entry.method, {}).setdefault(entry.task, {"scores": [], "env_steps": [], "runs": []})
        cell["scores"].extend(float(v) for v in entry.scores.values)
        cell["env_steps"].extend(entry.scores.env_steps)
        cell["runs"].append(str(entry.run.path))
    for cells in table.values():
        for cell in cells.values():
            values = np.asarray(cell["scores"])
            cell.update(mean=float(values.mean()), std=float(values.std()), n=int(values.size))
    return table


def score_matrices(table: dict[str, dict[str, dict]], tasks: Sequence[str], normalize: bool,
                   notes: list[str]) -> dict[str, np.ndarray]:
    """{method: scores [runs, tasks]} over `tasks`, the rectangular layout rliable's stratified bootstrap needs.

    A method with more seeds on one task than another keeps its first `min` seeds of each task (noted).
    `normalize`: each task's scores min-max scaled over all methods' seeds on it (marl-eval's normalisation),
    so that tasks with returns on different scales weigh alike."""
    bounds = {}
    for task in tasks:
        every = np.concatenate([np.asarray(cells[task]["scores"]) for cells in table.values()])
        bounds[task] = (float(every.min()), float(every.max()))
    matrices = {}
    for method, cells in table.items():
        n = min(cells[task]["n"] for task in tasks)
        if any(cells[task]["n"] != n for task in tasks):
            counts = ", ".join(f"{t}: {cells[t]['n']}" for t in tasks)
            notes.append(f"{method}: seeds per task differ ({counts}); the "
                         f"aggregate uses the first {n} of each task.")
        columns = []
        for task in tasks:
            values = np.asarray(cells[task]["scores"][:n], float)
            if normalize:
                low, high = bounds[task]
                values = (values - low) / (high - low) if high > low else np.zeros_like(values)
            columns.append(values)
        matrices[method] = np.stack(columns, axis=1)
    return matrices


def _interquartile_mean(values: np.ndarray) -> np.ndarray:
    """Mean of the middle half along axis 0, cutting int(n / 4) values at each end as scipy's
    trim_mean(values, 0.25, axis=0) (what rliable's aggregate_iqm calls), by a sort, cheaper per call than
    scipy's, as the bootstrap calls it once per resample (docs/compare.md). values [n, ...] -> [...]."""
    n = values.shape[0]
    cut = int(0.25 * n)
    return np.sort(values, axis=0)[cut:n - cut].mean(axis=0)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of every run and task together (rliable.metrics.aggregate_iqm): scores [runs, tasks]."""
    return float(_interquartile_mean(np.asarray(scores, float).reshape(-1)))


def _aggregate_statistics(scores: np.ndarray) -> np.ndarray:
    """[IQM, mean, median] of scores [runs, tasks], as rliable's aggregate_iqm / aggregate_mean / aggregate_median
    (the mean and median are of the per-task means)."""
    task_means = scores.mean(axis=0)
    return np.array([_interquartile_mean(scores.reshape(-1)), task_means.mean(), np.median(task_means)])


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) + P(X = Y) / 2 for a run of X and a run of Y on the same task, averaged over tasks: the
    Mann-Whitney U statistic over m·n, as rliable.metrics.probability_of_improvement, by broadcasting (that one
    calls scipy once per task, which dominates a bootstrap). scores_x [runs_x, tasks], scores_y [runs_y, tasks]."""
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    per_task = np.mean((x > y) + 0.5 * (x == y), axis=(0, 1))
    return float(per_task.mean())


def score_distribution(scores: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Performance profile: fraction of all runs and tasks scoring above each threshold (rliable's
    score_distributions). scores [runs, tasks], tau [thresholds] -> [thresholds]."""
    return np.mean(np.asarray(scores).reshape(-1)[:, None] > tau[None, :], axis=0)


def _per_step(stat: str) -> Callable[[np.ndarray], np.ndarray]:
    """The curve statistic at every evaluation point: scores [runs, tasks, steps] -> [steps]."""
    if stat == "iqm":
        return lambda s: _interquartile_mean(s.reshape(-1, s.shape[-1]))
    return lambda s: s.reshape(-1, s.shape[-1]).mean(axis=0)


def _interval(score_dict: dict, func: Callable, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable.library.get_interval_estimates (stratified bootstrap, percentile 95% CIs), reproducible by `seed`.

    rliable's stratified bootstraps draw their resampling indices from NumPy's global generator
    (`np.random.choice` in `update_indices`), not from the `random_state` they accept, so the global generator is
    seeded for the call and restored afterwards. arch deprecates the `random_state` rliable passes it, in favour
    of a keyword rliable does not offer, so that FutureWarning is silenced here only."""
    library, _ = rliable_modules()
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return library.get_interval_estimates(score_dict, func, reps=reps,
                                                  random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(saved)


def aggregate(matrices: dict[str, np.ndarray], reps: int, seed: int) -> dict[str, dict]:
    """{method: {iqm|mean|median: {value, ci: [low, high]}}} over matrices {method: [runs, tasks]}."""
    points, intervals = _interval(matrices, _aggregate_statistics, reps, seed)
    return {method: {name: {"value": float(points[method][i]),
                            "ci": [float(intervals[method][0][i]), float(intervals[method][1][i])]}
                     for i, name in enumerate(("iqm", "mean", "median"))} for method in matrices}


def improvement_table(matrices: dict[str, np.ndarray], reps: int, seed: int) -> list[dict]:
    """P(X > Y) with its 95% CI for every ordered pair of methods (independent stratified bootstrap of X's and
    Y's runs). Only X < Y is resampled: P(Y > X) = 1 - P(X > Y) exactly, and so are its percentile bounds."""
    methods = list(matrices)
    pairs = {f"{i},{j}": (matrices[methods[i]], matrices[methods[j]])
             for i in range(len(methods)) for j in range(i + 1, len(methods))}
    if not pairs:
        return []
    points, intervals = _interval(pairs, probability_of_improvement, reps, seed)
    out = []
    for key in pairs:
        i, j = map(int, key.split(","))
        p, (low, high) = float(points[key]), (float(intervals[key][0][0]), float(intervals[key][1][0]))
        out.append({"x": methods[i], "y": methods[j], "p": p, "ci": [low, high]})
        out.append({"x": methods[j], "y": methods[i], "p": 1.0 - p, "ci": [1.0 - high, 1.0 - low]})
    return out


def performance_profile(matrices: dict[str, np.ndarray], tau: np.ndarray, reps: int, seed: int) -> dict[str, dict]:
    """{method: {profile, ci_low, ci_high}}, each [thresholds]: the fraction of runs scoring above tau."""
    points, intervals = _interval(matrices, lambda s: score_distribution(s, tau), reps, seed)
    return {m: {"profile": points[m].tolist(), "ci_low": intervals[m][0].tolist(), "ci_high": intervals[m][1].tolist()}
            for m in matrices}


def _method_curves(entries: Sequence[Entry], metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(env steps [points], values [seeds, points]) of one method on one task, pooling its runs' seeds.

    Runs evaluated at the same env steps stack as they are; otherwise every seed's curve is interpolated onto
    the densest run's evaluation points that every run covers."""
    series = []
    for entry in entries:
        steps, values = curves(entry.run.rows, f"test/{entry.model}/{metric}")
        if values.size == 0:
            continue
        keep = ~np.isnan(values).any(axis=0)  # points where some seed did not evaluate this model
        if keep.any():
            series.append((steps[keep], values[:, keep]))
    if not series:
        return None
    grid = max(series, key=lambda s: s[0].size)[0]
    # Env steps differ a little between runs (episodes end at different times): 2% counts as the same point.
    if all(s.shape == grid.shape and np.allclose(s, grid, rtol=0.02) for s, _ in series):
        return grid, np.concatenate([v for _, v in series])
    first, last = max(s[0] for s, _ in series), min(s[-1] for s, _ in series)
    grid = grid[(grid >= 0.98 * first) & (grid <= 1.02 * last)]  # no extrapolation beyond any run
    if grid.size == 0:
        return None
    return grid, np.concatenate([np.stack([np.interp(grid, s, row) for row in v]) for s, v in series])


def learning_curves(entries: Sequence[Entry], metric: str, stat: str, reps: int, seed: int,
                    notes: list[str]) -> dict[str, dict[str, dict]]:
    """{task: {method: {env_steps, center, ci_low, ci_high, seeds}}}: the IQM or mean over seeds of the test
    metric at every evaluation, with stratified bootstrap 95% CIs over seeds."""
    out: dict[str, dict[str, dict]] = {}
    for task in _ordered(e.task for e in entries):
        for method in _ordered(e.method for e in entries if e.task == task):
            mine = [e for e in entries if e.task == task and e.method == method]
            combined = _method_curves(mine, metric)
            if combined is None:
                notes.append(f"{method} on {task}: no learning curve (its model is evaluated only after training).")
                continue
            steps, values = combined
            points, intervals = _interval({method: values[:, None, :]}, _per_step(stat), reps, seed)
            out.setdefault(task, {})[method] = {
                "env_steps": steps.tolist(), "center": points[method].tolist(),
                "ci_low": intervals[method][0].tolist(), "ci_high": intervals[method][1].tolist(),
                "seeds": int(values.shape[0])}
    return out


# ---------------------------------------------------------------------------------------------------------
# Writing


def _metric_heading(metric: str) -> str:
    return "test win rate (%)" if metric == "win_rate" else "test return"


def _cell(metric: str, mean: float, std: float) -> tuple[str, str]:
    """(mean, std) as shown: win rates in percent with one decimal (as SMAC papers), returns with two."""
    if metric == "win_rate":
        return f"{100 * mean:.1f}", f"{100 * std:.1f}"
    return f"{mean:.2f}", f"{std:.2f}"


def _column_names(tasks: Sequence[str]) -> list[str]:
    """Task labels for table columns: a family prefix shared by every task (`smax:`) is dropped."""
    families = {t.split(":", 1)[0] for t in tasks if ":" in t}
    if len(families) == 1 and all(":" in t for t in tasks):
        return [t.split(":", 1)[1] for t in tasks]
    return list(tasks)


def _best(table: dict, methods: Sequence[str], task: str) -> set[str]:
    means = {m: table[m][task]["mean"] for m in methods if task in table[m]}
    if not means:
        return set()
    top = max(means.values())
    return {m for m, v in means.items() if v >= top - 1e-12}


def table_markdown(table: dict, methods: Sequence[str], tasks: Sequence[str], metric: str) -> str:
    """Methods x tasks, `mean ± std` over seeds (n seeds in the header note), best mean per column in bold."""
    names = _column_names(tasks)
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(tasks)]
    for method in methods:
        cells = []
        for task in tasks:
            if task not in table[method]:
                cells.append("–")
                continue
            c = table[method][task]
            mean, std = _cell(metric, c["mean"], c["std"])
            text = f"{mean} ± {std}"
            cells.append(f"**{text}**" if method in _best(table, methods, task) else text)
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in text)


def table_latex(table: dict, methods: Sequence[str], tasks: Sequence[str], metric: str, caption: str) -> str:
    """The same table as a booktabs LaTeX table (needs \\usepackage{booktabs})."""
    names = _column_names(tasks)
    lines = [r"\begin{table}[t]", r"\centering", "\\caption{" + tex_escape(caption).replace("±", r"$\pm$") + "}",
             r"\begin{tabular}{l" + "c" * len(tasks) + "}", r"\toprule",
             "Method & " + " & ".join(tex_escape(n) for n in names) + r" \\", r"\midrule"]
    for method in methods:
        cells = []
        for task in tasks:
            if task not in table[method]:
                cells.append("--")
                continue
            c = table[method][task]
            mean, std = _cell(metric, c["mean"], c["std"])
            body = f"{mean} \\pm {std}"
            cells.append(f"$\\mathbf{{{body}}}$" if method in _best(table, methods, task) else f"${body}$")
        lines.append(tex_escape(method) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _fmt_ci(stat: dict, digits: int = 3) -> str:
    return f"{stat['value']:.{digits}f} [{stat['ci'][0]:.{digits}f}, {stat['ci'][1]:.{digits}f}]"


def aggregate_markdown(summary: dict) -> str:
    agg = summary["aggregate"]
    metric = summary["metric"]
    lines = [f"# Aggregate {_metric_heading(metric).replace(' (%)', '')} over tasks and seeds", ""]
    notes = ["## Notes", ""] + [f"- {n}" for n in summary["notes"]] + [""] if summary["notes"] else []
    if not agg["methods"]:
        return "\n".join(lines + [agg.get("reason", "No aggregate."), ""] + notes)
    scale = {"none": "raw scores", "minmax": "scores min-max normalized per task over all methods' seeds"}
    lines += [f"Tasks: {', '.join(agg['tasks'])}. Score per run: the final test {metric.replace('_', ' ')} of each "
              f"seed ({scale[agg['normalization']]}). Point estimates with 95% stratified bootstrap CIs "
              f"({summary['reps']} resamples, rliable; percentile method).", "",
              "| method | runs × tasks | IQM [95% CI] | mean [95% CI] | median [95% CI] |", "|---|---|---|---|---|"]
    for method, stats in agg["methods"].items():
        runs = agg["runs_per_task"][method]
        lines.append(f"| {method} | {runs} × {len(agg['tasks'])} | {_fmt_ci(stats['iqm'])} | {_fmt_ci(stats['mean'])} "
                     f"| {_fmt_ci(stats['median'])} |")
    poi = summary["probability_of_improvement"]
    if poi:
        methods = list(agg["methods"])
        lookup = {(p["x"], p["y"]): p for p in poi}
        lines += ["", "## Probability of improvement", "",
                  "P(row > column): the probability that a run of the row method scores higher than a run of the "
                  "column method on the same task (ties count half), averaged over tasks; 95% CIs.", "",
                  "| P(row > column) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for x in methods:
            cells = ["–" if x == y else f"{lookup[(x, y)]['p']:.2f} [{lookup[(x, y)]['ci'][0]:.2f}, "
                     f"{lookup[(x, y)]['ci'][1]:.2f}]" for y in methods]
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
    lines += ["", "![performance profile](performance_profile.png)", ""]
    return "\n".join(lines + notes)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "task"


def _plot_curves(task: str, per_method: dict[str, dict], metric: str, stat: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, c in per_method.items():
        steps = np.asarray(c["env_steps"])
        line, = ax.plot(steps, c["center"], label=f"{method} ({c['seeds']} seed{'s' * (c['seeds'] > 1)})")
        ax.fill_between(steps, c["ci_low"], c["ci_high"], color=line.get_color(), alpha=0.2, linewidth=0)
    label_env_steps(ax)
    ax.set_ylabel(_metric_heading(metric).replace(" (%)", ""))
    ax.set_title(f"{task}: {stat.upper() if stat == 'iqm' else 'mean'} over seeds, 95% bootstrap CI", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_profile(profile: dict, metric: str, normalized: bool, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tau = np.asarray(profile["tau"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, p in profile["methods"].items():
        line, = ax.plot(tau, p["profile"], label=method)
        ax.fill_between(tau, p["ci_low"], p["ci_high"], color=line.get_color(), alpha=0.2, linewidth=0)
    what = metric.replace("_", " ") + (" (normalized per task)" if normalized else "")
    ax.set_xlabel(f"final test {what} τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Performance profile (95% bootstrap CI)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def marl_eval_data(entries: Sequence[Entry]) -> dict:
    """marl-eval's raw-data layout: {env: {task: {algorithm: {run: {"step_<k>": {"step_count": int,
    metric: [value]}, ..., "absolute_metrics": {metric: [value]}}}}}}.

    env is the env family, task the task label without it (both lower case: marl-eval lower-cases the names it
    looks up), algorithm the method label, run the seed (`<seed>_<i>` where runs of one method share a seed).
    Each logged value is already a mean over evaluation episodes, so every list holds one element, as marl-eval
    allows for win rates. "absolute_metrics" (last, where marl-eval looks for it) holds the most thorough final
    evaluation there is: `ctde eval`'s eval_<model>.json, else distill.json, else the last logged evaluation."""
    data: dict = {}
    for entry in entries:
        family, _, rest = entry.task.partition(":")
        env, task = (family, rest) if rest else ("ctde", family)
        runs = data.setdefault(env.lower(), {}).setdefault(task.lower(), {}).setdefault(entry.method, {})
        by_seed: dict[int, list[dict]] = {}
        for row in entry.run.rows:
            by_seed.setdefault(row["seed"], []).append(row)
        absolute = {m: _eval_scores(entry.run, entry.model, m) or _distill_scores(entry.run, entry.model, m)
                    for m in MARL_EVAL_METRICS}
        for seed in entry.scores.seeds:
            record: dict = {}
            last: dict[str, float] = {}
            for row in sorted(by_seed.get(seed, []), key=lambda r: r["block"]):
                values = {m: row.get(f"test/{entry.model}/{m}") for m in MARL_EVAL_METRICS}
                if any(v is None for v in values.values()):
                    continue
                record[f"step_{row['block']}"] = {"step_count": int(row["env_steps"]),
                                                  **{m: [float(v)] for m, v in values.items()}}
                last = values
            final = {}
            for m in MARL_EVAL_METRICS:
                scores = absolute[m]
                if scores is not None and seed in scores.seeds:
                    final[m] = [float(scores.values[scores.seeds.index(seed)])]
                elif m in last:
                    final[m] = [float(last[m])]
            record["absolute_metrics"] = final
            key, i = str(seed), 1
            while key in runs:
                key, i = f"{seed}_{i}", i + 1
            runs[key] = record
    return data


@dataclass
class CompareResult:
    out: Path
    summary: dict  # everything written to compare.json
    table_markdown: str
    files: list[Path] = field(default_factory=list)


def compare(paths: Sequence[str | Path], *, out: str | Path | None = None, metric: str | None = None,
            models: Sequence[str] | None = None, group_by: Sequence[str] | None = None,
            task_by: Sequence[str] | None = None, normalize: str = "auto", curve_stat: str = "iqm",
            reps: int = 2000, seed: int = 0, skip_unevaluated: bool = False) -> CompareResult:
    """Compare the runs found under `paths` and write every output into `out` (default: <first path>/compare).

    normalize: auto (min-max per task for returns over several tasks, none otherwise), none, or minmax; it
    affects the aggregate statistics and the performance profile only (tables show raw scores)."""
    if normalize not in ("auto", "none", "minmax"):
        raise ConfigError(f"--normalize {normalize!r}: choose auto, none or minmax.")
    if curve_stat not in ("iqm", "mean"):
        raise ConfigError(f"--curve-stat {curve_stat!r}: choose iqm or mean.")
    if reps < 1:
        raise ConfigError(f"--reps must be at least 1, got {reps}.")
    rliable_modules()  # before any work: a missing library is the first thing to say
    run_dirs = find_runs(paths)
    runs = [load_run(p) for p in run_dirs]
    notes: list[str] = []
    entries, metric = build_entries(runs, metric=metric, models=models, group_by=group_by, task_by=task_by,
                                    skip_unevaluated=skip_unevaluated, notes=notes)
    methods = _ordered(e.method for e in entries)
    tasks = _ordered(e.task for e in entries)
    table = per_task_table(entries)
    for method, cells in table.items():
        for task, cell in cells.items():
            steps = [s for s in cell["env_steps"] if s is not None]
            if steps and max(steps) > 1.1 * min(steps):
                notes.append(f"{method} on {task}: final evaluations at {min(steps):,}-{max(steps):,} env steps "
                             f"(runs of different lengths).")

    common = [t for t in tasks if all(t in table[m] for m in methods)]
    normalized = normalize == "minmax" or (normalize == "auto" and metric == "return" and len(common) > 1)
    aggregate_summary: dict = {"tasks": common, "normalization": "minmax" if normalized else "none",
                               "methods": {}, "runs_per_task": {}}
    poi: list[dict] = []
    profile: dict = {}
    if common:
        if len(common) < len(tasks):
            notes.append(f"Aggregates cover the tasks every method ran ({', '.join(common)}); left out: "
                         f"{', '.join(t for t in tasks if t not in common)}.")
        matrices = score_matrices(table, common, normalized, notes)
        aggregate_summary["methods"] = aggregate(matrices, reps, seed)
        aggregate_summary["runs_per_task"] = {m: int(v.shape[0]) for m, v in matrices.items()}
        poi = improvement_table(matrices, reps, seed)
        every = np.concatenate([v.reshape(-1) for v in matrices.values()])
        low, high = (0.0, 1.0) if metric == "win_rate" or normalized else (float(every.min()), float(every.max()))
        tau = np.linspace(low, high, 101)
        profile = {"tau": tau.tolist(), "methods": performance_profile(matrices, tau, reps, seed)}
    else:
        aggregate_summary["reason"] = ("No task was run by every method, so no aggregate over tasks compares them "
                                       "all; see table.md for each task.")
    curve_data = learning_curves(entries, metric, curve_stat, reps, seed, notes)

    out = Path(out) if out is not None else Path(paths[0]) / "compare"
    out.mkdir(parents=True, exist_ok=True)
    summary = {
        "metric": metric, "normalize": aggregate_summary["normalization"], "reps": reps, "seed": seed,
        "confidence": 0.95, "curve_stat": curve_stat, "methods": methods, "tasks": tasks,
        "runs": [{"path": str(e.run.path), "method": e.method, "task": e.task, "model": e.model,
                  "seeds": e.scores.seeds, "scores": e.scores.values.tolist(), "final_env_steps": e.scores.env_steps,
                  "source": e.scores.source} for e in entries],
        "table": {m: {t: {k: c[k] for k in ("mean", "std", "n", "scores", "env_steps", "runs")}
                      for t, c in cells.items()} for m, cells in table.items()},
        "aggregate": aggregate_summary, "probability_of_improvement": poi, "performance_profile": profile,
        "curves": curve_data, "notes": notes,
    }
    files = []
    markdown = table_markdown(table, methods, tasks, metric)
    counts = sorted({c["n"] for cells in table.values() for c in cells.values()})
    seeds_text = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    caption = (f"Final {_metric_heading(metric)}, mean ± std over {seeds_text} seeds; best per task in bold.")
    (out / "table.md").write_text(f"{caption}\n\n{markdown}\n")
    (out / "table.tex").write_text(table_latex(table, methods, tasks, metric, caption))
    (out / "aggregate.md").write_text(aggregate_markdown(summary))
    files += [out / "table.md", out / "table.tex", out / "aggregate.md"]
    for task, per_method in curve_data.items():
        path = out / f"curves_{_safe_name(task)}.png"
        _plot_curves(task, per_method, metric, curve_stat, path)
        files.append(path)
    if profile:
        _plot_profile(profile, metric, normalized, out / "performance_profile.png")
        files.append(out / "performance_profile.png")
    (out / "marl_eval.json").write_text(json.dumps(marl_eval_data(entries), indent=2))
    summary["files"] = [str(f) for f in files + [out / "marl_eval.json", out / "compare.json"]]
    (out / "compare.json").write_text(json.dumps(summary, indent=2, default=_json_default))
    files += [out / "marl_eval.json", out / "compare.json"]
    return CompareResult(out=out, summary=summary, table_markdown=f"{caption}\n\n{markdown}", files=files)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
