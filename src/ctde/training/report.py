"""Run reports: learning curves (mean and spread over seeds) and `report.md` with final numbers."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np


def test_models(rows: list[dict]) -> list[str]:
    models = []
    for key in rows[0] if rows else []:
        if key.startswith("test/") and key.count("/") == 2:
            model = key.split("/")[1]
            if model not in models:
                models.append(model)
    return models


def curves(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(env steps [blocks], values [seeds, blocks]) for one metric; seeds ordered by index.

    Env steps differ slightly between seeds (episodes end at different times); the x value of a block is
    the mean over seeds.
    """
    by_seed: dict[int, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        by_seed[row["seed"]][row["block"]] = row
    blocks = sorted(set.intersection(*(set(b) for b in by_seed.values()))) if by_seed else []
    seeds = sorted(by_seed)
    steps = np.array([np.mean([by_seed[s][b]["env_steps"] for s in seeds]) for b in blocks])
    values = np.array([[np.nan if by_seed[s][b].get(key) is None else by_seed[s][b][key] for b in blocks]
                       for s in seeds], dtype=float)
    return steps, values


def label_env_steps(ax) -> None:
    """x axis in env steps with engineering ticks (250k, 1.5M): plain integers run into each other."""
    from matplotlib.ticker import EngFormatter

    ax.set_xlabel("env steps")
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))


def plot_learning_curves(rows: list[dict], path: str | Path, title: str, show_win_rate: bool = True,
                         marks: dict[str, float] | None = None, diagnostics: tuple[str, ...] = ()) -> Path:
    """Test curves of every evaluated model (mean and min-max over seeds), one panel per metric, plus one
    panel per `train/<diagnostic>` metric; `marks` are labelled env steps drawn as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(f"test {m.replace('_', ' ')}", [(model, f"test/{model}/{m}") for model in test_models(rows)])
              for m in (["win_rate"] if show_win_rate else []) + ["return"]]
    panels += [(f"train {d.replace('_', ' ')}", [(d, f"train/{d}")]) for d in diagnostics]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    last_step = max((r["env_steps"] for r in rows), default=0)
    for ax, (ylabel, series) in zip(axes[0], panels):
        for label, key in series:
            steps, values = curves(rows, key)
            if values.size == 0:
                continue
            mean = np.nanmean(values, axis=0)
            line, = ax.plot(steps, mean, label=f"{label} (mean of {values.shape[0]} seed{'s' * (values.shape[0] > 1)})")
            if values.shape[0] > 1:
                ax.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0), alpha=0.2,
                                color=line.get_color(), linewidth=0)
        for label, x in (marks or {}).items():
            if x > last_step:  # beyond this run: drawing it would only stretch the axis
                continue
            ax.axvline(x, color="grey", linestyle="--", linewidth=1)
            ax.text(x, ax.get_ylim()[1], f" {label}", va="top", fontsize=8, color="grey")
        label_env_steps(ax)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title + ("  (shaded: min-max over seeds)" if rows and len({r['seed'] for r in rows}) > 1 else ""),
                 fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def final_table(rows: list[dict]) -> list[dict]:
    """Per model: mean and std over seeds of the last evaluation's win rate, return and episode length."""
    if not rows:
        return []
    last_block = max(r["block"] for r in rows)
    last = [r for r in rows if r["block"] == last_block]
    table = []
    for model in test_models(rows):
        entry = {"model": model, "seeds": len(last)}
        for metric in ("win_rate", "return", "episode_length"):
            values = np.array([r[f"test/{model}/{metric}"] for r in last], dtype=float)
            entry[metric] = (float(np.mean(values)), float(np.std(values)))
        table.append(entry)
    return table


def steps_to_reach(rows: list[dict], model: str, threshold: float, metric: str = "win_rate") -> float | None:
    """First env step at which the median over seeds of the test metric reaches `threshold`."""
    steps, values = curves(rows, f"test/{model}/{metric}")
    if values.size == 0:
        return None
    # Test points where no seed evaluated this model (a PTDE student before stage 2) never count as reached.
    evaluated = ~np.all(np.isnan(values), axis=0)
    median = np.full(values.shape[1], -np.inf)
    median[evaluated] = np.nanmedian(values[:, evaluated], axis=0)
    hits = np.nonzero(median >= threshold)[0]
    return float(steps[hits[0]]) if hits.size else None


def write_report(run_dir: str | Path, config_summary: dict, rows: list[dict], summary: dict,
                 show_win_rate: bool = True, extra_images: list[str] | None = None) -> Path:
    run_dir = Path(run_dir)
    lines = [f"# ctde run: {config_summary['env']} · {config_summary['algo']} · {config_summary['paradigm']}", ""]
    lines += ["| setting | value |", "|---|---|"]
    for key, value in config_summary.items():
        lines.append(f"| {key} | {value} |")
    lines += ["", "## Final greedy evaluation", "",
              f"Last test point, {config_summary.get('eval episodes', '?')} greedy episodes per seed; mean ± std over "
              f"seeds.", "", "| model | seeds | win rate | return | episode length |", "|---|---|---|---|---|"]
    for entry in final_table(rows):
        fmt = lambda pair, digits=3: f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"  # noqa: E731
        lines.append(f"| {entry['model']} | {entry['seeds']} | {fmt(entry['win_rate'])} | {fmt(entry['return'], 2)} "
                     f"| {fmt(entry['episode_length'], 1)} |")
    lines += ["", "![learning curves](learning_curve.png)", "", "## Run", "", "| | |", "|---|---|"]
    for key, value in summary.items():
        lines.append(f"| {key} | {value} |")
    for image in extra_images or []:
        lines += ["", f"![{image.removesuffix('.png').replace('_', ' ')}]({image})"]
    lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
