"""`ctde compare`: runs found and grouped, scores and statistics against hand computation and rliable's own
functions, the tables, marl-eval's JSON layout, the plots, and the CLI's errors. Fake run directories (a saved
config and metrics rows of known values) keep this fast; one test trains a tiny run to check the real files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ctde.config import build_config, save_config
from ctde.errors import ConfigError
from ctde.experiments import compare as cmp

pytest.importorskip("rliable", reason="ctde compare needs the stats extra: pip install 'ctde[stats]'")

REPS = 200  # bootstrap resamples: enough for the checks below, fast


def write_run(root: Path, name: str, overrides: list[str], finals, *, blocks: int = 3, interval: int = 500,
              models: tuple[str, ...] | None = None) -> Path:
    """A fake run directory: config.yaml from `overrides`, and metrics rows whose test win rate rises linearly
    to `finals` (per seed; or {model: per-seed finals}) at the last of `blocks` evaluations. return = 20 x win."""
    run = root / name
    run.mkdir(parents=True)
    per_model = finals if isinstance(finals, dict) else None
    seeds = len(next(iter(per_model.values())) if per_model else finals)
    config = build_config(overrides + [f"seeds={seeds}", f"eval.interval={interval}", f"out={run}"])
    save_config(config, run / "config.yaml")
    if models is None:
        from ctde.paradigms import PARADIGMS

        models = tuple(per_model) if per_model else PARADIGMS[config.paradigm.name].eval_models
    rows = []
    for block in range(blocks):
        for s in range(seeds):
            row = {"seed": config.seed + s, "block": block, "env_steps": (block + 1) * interval + s}
            for model in models:
                final = (per_model[model] if per_model else finals)[s]
                value = final * (block + 1) / blocks
                row.update({f"test/{model}/win_rate": value, f"test/{model}/return": 20 * value,
                            f"test/{model}/episode_length": 10.0})
            rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


QMIX = [0.5, 0.6, 0.7]
VDN = [0.2, 0.3, 0.25]
CADP = [0.9, 0.8, 0.95]


@pytest.fixture
def sweep(tmp_path):
    """sweeps/s1/<task>/<method>: three methods on two SMAX maps, three seeds each."""
    root = tmp_path / "sweeps" / "s1"
    for task in ("3m", "5m_vs_6m"):
        write_run(root / task, "qmix", [f"env=smax:{task}", "algo=qmix"], QMIX)
        write_run(root / task, "vdn", [f"env=smax:{task}", "algo=vdn"], VDN)
        write_run(root / task, "cadp", [f"env=smax:{task}", "algo=qmix", "paradigm=cadp"], CADP)
    return root


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One full comparison of the sweep above, shared by the checks of its outputs."""
    root = tmp_path_factory.mktemp("cmp") / "sweeps" / "s1"
    for task in ("3m", "5m_vs_6m"):
        write_run(root / task, "qmix", [f"env=smax:{task}", "algo=qmix"], QMIX)
        write_run(root / task, "vdn", [f"env=smax:{task}", "algo=vdn"], VDN)
        write_run(root / task, "cadp", [f"env=smax:{task}", "algo=qmix", "paradigm=cadp"], CADP)
    return cmp.compare([root], reps=REPS)


def test_runs_are_found_recursively_and_missing_ones_are_clear(tmp_path, sweep):
    runs = cmp.find_runs([sweep])
    assert len(runs) == 6 and all((r / "config.yaml").exists() for r in runs)
    assert cmp.find_runs([sweep / "3m" / "qmix", sweep / "3m"]) == sorted(p.resolve() for p in (sweep / "3m").iterdir())
    (tmp_path / "empty" / "deep").mkdir(parents=True)
    with pytest.raises(ConfigError, match="No ctde runs found"):
        cmp.find_runs([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="does not exist"):
        cmp.find_runs([tmp_path / "missing"])


def test_table_is_mean_and_std_over_seeds_with_the_best_in_bold(compared):
    summary = compared.summary
    assert summary["metric"] == "win_rate"  # SMAX reports wins
    assert summary["methods"] == ["cadp/qmix", "ctde/qmix", "ctde/vdn"]  # what differs: paradigm and algo
    assert summary["tasks"] == ["smax:3m", "smax:5m_vs_6m"]
    for method, finals in (("ctde/qmix", QMIX), ("ctde/vdn", VDN), ("cadp/qmix", CADP)):
        cell = summary["table"][method]["smax:3m"]
        assert cell["n"] == 3 and cell["scores"] == pytest.approx(finals)
        assert cell["mean"] == pytest.approx(np.mean(finals)) and cell["std"] == pytest.approx(np.std(finals))
    md = (compared.out / "table.md").read_text()
    # win rates in percent: CADP 88.3 ± 6.2 is best on both maps
    assert "| cadp/qmix | **88.3 ± 6.2** | **88.3 ± 6.2** |" in md
    assert "| ctde/qmix | 60.0 ± 8.2 | 60.0 ± 8.2 |" in md and "| method | 3m | 5m_vs_6m |" in md
    tex = (compared.out / "table.tex").read_text()
    assert r"\toprule" in tex and r"Method & 3m & 5m\_vs\_6m \\" in tex
    assert r"cadp/qmix & $\mathbf{88.3 \pm 6.2}$ & $\mathbf{88.3 \pm 6.2}$ \\" in tex
    assert r"ctde/vdn & $25.0 \pm 4.1$" in tex and r"mean $\pm$ std over 3 seeds" in tex
    assert compared.table_markdown.endswith(md.strip().split("\n\n", 1)[1])


def test_aggregates_match_hand_computation_and_cis_contain_them(compared):
    agg = compared.summary["aggregate"]
    assert agg["normalization"] == "none" and agg["runs_per_task"] == {m: 3 for m in compared.summary["methods"]}
    cadp = agg["methods"]["cadp/qmix"]
    # IQM of the six scores {0.8, 0.8, 0.9, 0.9, 0.95, 0.95}: drop one at each end -> mean(0.8, 0.9, 0.9, 0.95)
    assert cadp["iqm"]["value"] == pytest.approx(np.mean([0.8, 0.9, 0.9, 0.95]))
    assert cadp["mean"]["value"] == pytest.approx(np.mean(CADP)) and cadp["median"]["value"] == pytest.approx(np.mean(CADP))
    for stats in agg["methods"].values():
        for stat in stats.values():
            assert stat["ci"][0] <= stat["value"] + 1e-12 and stat["value"] <= stat["ci"][1] + 1e-12
            assert stat["ci"][0] < stat["ci"][1]  # three differing seeds: a real interval
    poi = {(p["x"], p["y"]): p for p in compared.summary["probability_of_improvement"]}
    assert len(poi) == 6  # every ordered pair
    assert poi[("cadp/qmix", "ctde/vdn")]["p"] == 1.0 and poi[("cadp/qmix", "ctde/vdn")]["ci"] == [1.0, 1.0]
    assert poi[("ctde/vdn", "ctde/qmix")]["p"] == 0.0
    for (x, y), p in poi.items():
        assert p["p"] + poi[(y, x)]["p"] == pytest.approx(1.0)
    aggregate_md = (compared.out / "aggregate.md").read_text()
    assert "| cadp/qmix | 3 × 2 | 0.887 [" in aggregate_md and "P(row > column)" in aggregate_md


def test_statistics_equal_rliables_own_functions():
    from rliable import library, metrics

    assert cmp.iqm(np.arange(8.0)) == 3.5  # middle half of 0..7: mean(2, 3, 4, 5)
    rng = np.random.default_rng(0)
    for runs, tasks in ((5, 3), (4, 1), (7, 2)):
        scores = rng.random((runs, tasks))
        expected = [metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores), metrics.aggregate_median(scores)]
        assert cmp._aggregate_statistics(scores) == pytest.approx(expected)
        other = np.round(rng.random((runs + 1, tasks)), 1)  # rounded: ties, which count half
        tied = np.round(scores, 1)
        assert cmp.probability_of_improvement(tied, other) == pytest.approx(
            metrics.probability_of_improvement(tied, other))
        tau = np.linspace(0, 1, 11)
        assert cmp.score_distribution(scores, tau) == pytest.approx(library.score_distributions(scores, tau))
    curve = rng.random((5, 1, 4))
    assert cmp._per_step("iqm")(curve) == pytest.approx([metrics.aggregate_iqm(curve[..., j]) for j in range(4)])


def test_curves_and_profile_are_plotted(compared):
    for name in ("curves_smax_3m.png", "curves_smax_5m_vs_6m.png", "performance_profile.png"):
        path = compared.out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    curve = compared.summary["curves"]["smax:3m"]["cadp/qmix"]
    assert curve["env_steps"] == pytest.approx([501, 1001, 1501])  # mean over seeds of each evaluation's steps
    assert curve["center"][-1] == pytest.approx(cmp.iqm(np.array(CADP)))
    assert all(lo <= c + 1e-12 <= hi + 2e-12 for lo, c, hi in zip(curve["ci_low"], curve["center"], curve["ci_high"]))
    profile = compared.summary["performance_profile"]
    assert profile["tau"][0] == 0.0 and profile["tau"][-1] == 1.0
    assert profile["methods"]["ctde/vdn"]["profile"][50] == 0.0 and profile["methods"]["cadp/qmix"]["profile"][50] == 1.0


def test_marl_eval_json_has_marl_evals_raw_layout(compared):
    data = json.loads((compared.out / "marl_eval.json").read_text())
    assert list(data) == ["smax"] and sorted(data["smax"]) == ["3m", "5m_vs_6m"]
    algorithms = data["smax"]["3m"]
    assert sorted(algorithms) == ["cadp/qmix", "ctde/qmix", "ctde/vdn"]
    runs = algorithms["cadp/qmix"]
    assert sorted(runs) == ["0", "1", "2"]  # keyed by seed
    run = runs["1"]
    assert list(run)[-1] == "absolute_metrics" and list(run)[:-1] == ["step_0", "step_1", "step_2"]
    assert run["step_2"] == {"step_count": 1501, "win_rate": [pytest.approx(0.8)], "return": [pytest.approx(16.0)],
                             "episode_length": [10.0]}
    assert run["absolute_metrics"]["win_rate"] == [pytest.approx(0.8)]  # no eval_<model>.json: the last evaluation
    assert all(isinstance(step["step_count"], int) for key, step in run.items() if key.startswith("step_"))
    full = json.loads((compared.out / "compare.json").read_text())
    assert {"table", "aggregate", "probability_of_improvement", "performance_profile", "curves", "runs"} <= set(full)


def test_methods_are_named_by_what_differs(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "ctde", ["env=smax:3m", "algo=qmix"], QMIX)
    write_run(root, "cadp_a", ["env=smax:3m", "algo=qmix", "paradigm=cadp", "cadp.alpha=0.5"], CADP)
    write_run(root, "cadp_b", ["env=smax:3m", "algo=qmix", "paradigm=cadp", "cadp.alpha=1.0"], VDN)
    runs = [cmp.load_run(p) for p in cmp.find_runs([root])]
    entries, _ = cmp.build_entries(runs)
    # one backbone: the paradigm names the method; cadp.alpha only applies to (and only labels) CADP's runs
    assert sorted(e.method for e in entries) == ["cadp cadp.alpha=0.5", "cadp cadp.alpha=1", "ctde"]
    entries, _ = cmp.build_entries(runs, group_by=cmp.parse_keys("paradigm,algo", "--group-by"))
    assert sorted(e.method for e in entries) == ["cadp/qmix", "cadp/qmix", "ctde/qmix"]
    assert cmp.per_task_table(entries)["cadp/qmix"]["smax:3m"]["n"] == 6  # both CADP runs' seeds pooled
    entries, _ = cmp.build_entries(runs, group_by=["run"])
    assert sorted(e.method for e in entries) == ["cadp_a", "cadp_b", "ctde"]
    with pytest.raises(ConfigError, match="Did you mean 'cadp.alpha'"):
        cmp.parse_keys("paradigm,cadp.alpah", "--group-by")


def test_map_dependent_defaults_do_not_split_a_method(tmp_path):
    # resolved configs carry map-dependent values (longer epsilon annealing on hard maps); the same across a task
    root = tmp_path / "runs"
    for task, anneal in (("3m", 50000), ("5m_vs_6m", 500000)):
        for algo in ("qmix", "vdn"):
            write_run(root, f"{algo}_{task}", [f"env=smax:{task}", f"algo={algo}",
                                               f"algo.epsilon_anneal_steps={anneal}"], QMIX)
    write_run(root, "task_by", ["env=smax:3m", "algo=qmix", "env.sight_range=0", "algo.epsilon_anneal_steps=50000"],
              VDN)
    runs = [cmp.load_run(p) for p in cmp.find_runs([root])]
    entries, _ = cmp.build_entries([r for r in runs if r.name != "task_by"])
    assert sorted({e.method for e in entries}) == ["qmix", "vdn"]
    entries, _ = cmp.build_entries(runs, task_by=cmp.parse_keys("env.id,env.sight_range", "--task-by"))
    assert sorted({e.task for e in entries}) == ["smax:3m env.sight_range=0", "smax:3m env.sight_range=None",
                                                 "smax:5m_vs_6m env.sight_range=None"]


def test_several_models_of_a_run_are_separate_methods(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "ctde", ["env=smax:3m", "algo=qmix"], QMIX)
    write_run(root, "cadp", ["env=smax:3m", "algo=qmix", "paradigm=cadp"],
              {"centralized": [1.0, 0.9, 0.95], "decentralized": CADP})
    result = cmp.compare([root], models=["export", "centralized"], reps=REPS, out=tmp_path / "out")
    assert result.summary["methods"] == ["cadp/decentralized", "cadp/centralized", "ctde"]
    assert result.summary["table"]["cadp/centralized"]["smax:3m"]["mean"] == pytest.approx(0.95)
    # the exported model is read from policy/policy.json where the run has one
    (root / "cadp" / "policy").mkdir()
    (root / "cadp" / "policy" / "policy.json").write_text(json.dumps({"model": "centralized"}))
    entries, _ = cmp.build_entries([cmp.load_run(root / "cadp")])
    assert [e.model for e in entries] == ["centralized"]
    with pytest.raises(ConfigError, match="has none of the models student.*its models: agent"):
        cmp.build_entries([cmp.load_run(root / "ctde")], models=["student"])


def test_a_student_evaluated_after_distillation_scores_from_distill_json(tmp_path):
    run = write_run(tmp_path, "ptde", ["env=smax:3m", "algo=qmix", "paradigm=ptde"], QMIX, models=("teacher",))
    (run / "distill.json").write_text(json.dumps({"seeds": [0, 1, 2], "models": {"teacher": "teacher", "student": "student"},
                                                  "teacher": {"win_rate": QMIX, "return": [1, 2, 3]},
                                                  "student": {"win_rate": [0.4, 0.5, 0.6], "return": [1, 2, 3]}}))
    (run / "eval_teacher.json").write_text(json.dumps({"per_seed": [{"seed": s, "win_rate": 0.9, "return": 18.0,
                                                                     "episode_length": 9.0} for s in range(3)],
                                                       "env_steps": [1500, 1501, 1502]}))
    result = cmp.compare([run], models=["all"], reps=REPS)
    sources = {r["model"]: r["source"] for r in result.summary["runs"]}
    assert sources == {"teacher": "metrics.jsonl (block 2)", "student": "distill.json"}
    assert result.summary["table"]["ptde/student"]["smax:3m"]["mean"] == pytest.approx(0.5)
    assert any("ptde/student" in note and "no learning curve" in note for note in result.summary["notes"])
    marl = json.loads((result.out / "marl_eval.json").read_text())["smax"]["3m"]
    assert marl["ptde/teacher"]["0"]["absolute_metrics"]["win_rate"] == [0.9]  # ctde eval's, more episodes
    assert marl["ptde/student"]["0"] == {"absolute_metrics": {"win_rate": [0.4], "return": [1.0]}}


def test_unevaluated_runs_and_mixed_metrics_are_clear_errors(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "qmix", ["env=smax:3m", "algo=qmix"], QMIX)
    fresh = write_run(root, "fresh", ["env=smax:3m", "algo=vdn"], VDN)
    (fresh / "metrics.jsonl").write_text("")  # started, not yet evaluated
    with pytest.raises(ConfigError, match=r"no test evaluation of win_rate yet: .*fresh.*--skip-unevaluated"):
        cmp.compare([root], reps=REPS)
    result = cmp.compare([root], reps=REPS, skip_unevaluated=True)
    assert result.summary["methods"] == ["qmix"] and "Skipped" in result.summary["notes"][0]
    (fresh / "metrics.jsonl").unlink()
    write_run(root, "mpe", ["env=mpe:simple_spread", "algo=qmix"], VDN)
    with pytest.raises(ConfigError, match="Mixed metrics.*--metric return"):
        cmp.compare([root], reps=REPS)
    with pytest.raises(ConfigError, match="mpe:simple_spread report no wins"):
        cmp.compare([root], metric="win_rate", reps=REPS)
    result = cmp.compare([root], metric="return", reps=REPS)
    # returns on two tasks: min-max normalized per task for the aggregate, raw in the table
    assert result.summary["aggregate"]["normalization"] == "minmax"
    assert result.summary["table"]["ctde"]["smax:3m"]["mean"] == pytest.approx(20 * np.mean(QMIX))


def test_returns_over_several_tasks_are_normalized_per_task(tmp_path):
    root = tmp_path / "runs"
    for task in ("3m", "8m"):
        write_run(root, f"qmix_{task}", [f"env=smax:{task}", "algo=qmix"], QMIX)
        write_run(root, f"vdn_{task}", [f"env=smax:{task}", "algo=vdn"], VDN)
    result = cmp.compare([root], metric="return", reps=REPS)
    agg = result.summary["aggregate"]
    assert agg["normalization"] == "minmax"
    low, high = 20 * min(VDN), 20 * max(QMIX)
    assert agg["methods"]["qmix"]["mean"]["value"] == pytest.approx((20 * np.mean(QMIX) - low) / (high - low))


def test_cli_prints_the_table_and_refuses_bad_input_in_one_line(tmp_path, sweep, capsys):
    from ctde.cli import main

    assert main(["compare", str(sweep / "3m"), "--reps", "50", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| cadp/qmix | **88.3 ± 6.2** |" in out and "table.tex" in out
    assert (tmp_path / "out" / "compare.json").exists()
    assert main(["compare", str(tmp_path / "nothing-here")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["compare", str(sweep), "--group-by", "paradgm"]) == 2
    assert "Did you mean 'paradigm'" in capsys.readouterr().err
    assert not (sweep / "compare").exists()
    with pytest.raises(SystemExit):
        main(["compare", str(sweep), "--metric", "wins"])


def test_missing_rliable_names_the_install_step(monkeypatch, sweep):
    monkeypatch.setitem(sys.modules, "rliable", None)  # import rliable now fails as if not installed
    with pytest.raises(cmp.StatsUnavailableError, match=r"pip install 'ctde\[stats\]'"):
        cmp.compare([sweep])


def test_runs_evaluated_at_different_steps_share_one_curve(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "a", ["env=smax:3m", "algo=qmix"], [0.6, 0.6], blocks=4, interval=500)   # 500 ... 2000
    write_run(root, "b", ["env=smax:3m", "algo=qmix", "seed=2"], [0.3], blocks=2, interval=750)  # 750, 1500
    result = cmp.compare([root], reps=REPS, curve_stat="mean")
    curve = result.summary["curves"]["smax:3m"]["ctde"]  # eval.interval and seeds do not make a method
    assert curve["seeds"] == 3
    assert curve["env_steps"] == pytest.approx([1000.5, 1500.5])  # a's points that b covers too
    assert any("different lengths" in n for n in result.summary["notes"])


def test_runs_as_ctde_train_writes_them(tmp_path):
    """Resolved configurations (defaults filled per backbone and paradigm) and rows through the real
    MetricsLogger (numpy scalars, NaN stored as null): a sweep of paradigm x algo is labelled by those alone."""
    from ctde.training.logger import MetricsLogger
    from ctde.training.resolve import resolve

    finals = {("ctde", "qmix"): 0.9, ("ctde", "vdn"): 0.7, ("ctde", "mappo"): 0.5, ("cadp", "qmix"): 0.8}
    for (paradigm, algo), final in finals.items():
        run = tmp_path / "sweep" / f"env=toy-hallway,algo={algo},paradigm={paradigm}"
        run.mkdir(parents=True)
        config = resolve(build_config(["env=toy:hallway", f"algo={algo}", f"paradigm={paradigm}", "seeds=2",
                                       "steps=1000", "eval.interval=500", f"out={run}"]))
        save_config(config, run / "config.yaml")
        from ctde.paradigms import PARADIGMS

        models = PARADIGMS[paradigm].eval_models
        logger = MetricsLogger(run, tensorboard=False)
        logger.write([{"seed": s, "block": b, "env_steps": np.int64(500 * (b + 1)), "train/loss": np.float32("nan"),
                       **{f"test/{m}/{k}": np.float32(final * (b + 1) / 2 - 0.1 * s) for m in models
                          for k in ("win_rate", "return", "episode_length")}} for b in range(2) for s in range(2)])
        logger.close()
    compared = cmp.compare([tmp_path / "sweep"], reps=REPS)
    assert compared.summary["metric"] == "win_rate"  # the hallway reports wins
    assert sorted(compared.summary["methods"]) == ["cadp/qmix", "ctde/mappo", "ctde/qmix", "ctde/vdn"]
    cadp = next(r for r in compared.summary["runs"] if r["method"] == "cadp/qmix")
    assert cadp["model"] == "decentralized" and cadp["seeds"] == [0, 1]  # CADP exports its decentralized model
    assert cadp["scores"] == pytest.approx([0.8, 0.7])
    marl = json.loads((compared.out / "marl_eval.json").read_text())
    assert set(marl["toy"]["hallway"]["ctde/vdn"]["0"]) == {"step_0", "step_1", "absolute_metrics"}
    assert (compared.out / "curves_toy_hallway.png").exists()


def test_the_bootstrap_is_reproducible_by_its_seed():
    # rliable draws its resampling indices from NumPy's global generator, whatever random_state it is given:
    # `_interval` seeds that generator, so the same seed gives the same intervals, and another seed others.
    rng = np.random.default_rng(0)
    matrices = {"a": rng.uniform(size=(5, 2)), "b": rng.uniform(size=(5, 2))}
    np.random.seed(1)
    first = cmp.improvement_table(matrices, reps=200, seed=3)
    np.random.seed(2)  # whatever state the caller left behind
    assert cmp.improvement_table(matrices, reps=200, seed=3) == first
    assert cmp.improvement_table(matrices, reps=200, seed=4) != first
    assert cmp.aggregate(matrices, reps=200, seed=3) == cmp.aggregate(matrices, reps=200, seed=3)
