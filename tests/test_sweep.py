"""`ctde sweep`: grid expansion, up-front validation, a real sweep on the tiny task, interruption and resume,
refusing another grid on the same folder, failures recorded while the sweep goes on, and the Ray executor."""

import json
import os
from pathlib import Path

import pytest
import yaml

from ctde.errors import ConfigError, TrainingDivergedError
from ctde.experiments import sweep as sweeps
from ctde.experiments.sweep import Axis, parse_grid, plan_sweep, run_sweep, split_values, trial_names

# The tiny task (test_cli's, so that the compiled programs are shared through JAX's cache); steps=3000 with
# eval.interval=500 and log.chunk_evals=2 makes three chunks, so a trial can be interrupted after its first
# checkpoint and before its last.
TINY = ("env=toy:hallway", "eval.episodes=8", "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200",
        "log.progress=false", "log.tensorboard=false", "steps=3000", "eval.interval=500", "log.chunk_evals=2")


# ---------------------------------------------------------------------------------------------------------
# The grid


def test_comma_lists_are_axes_and_the_rest_is_shared():
    axes, shared = parse_grid(["env=smax:3m,smax:2s3z", "algo=qmix,vdn", "paradigm=ctde,cadp", "seeds=5",
                               "steps=5e5", "out=sweeps/s1"])
    assert axes == [Axis("env", ("smax:3m", "smax:2s3z")), Axis("algo", ("qmix", "vdn")),
                    Axis("paradigm", ("ctde", "cadp"))]
    assert shared == ["seeds=5", "steps=5e5", "out=sweeps/s1"]


def test_escaped_commas_belong_to_the_value():
    assert split_values(r"a\,b,c") == ["a,b", "c"]
    assert split_values(r"a\\,b") == ["a\\", "b"]  # an escaped backslash, then a separating comma
    assert split_values(r"C:\data,x") == [r"C:\data", "x"]  # a backslash before anything else stays
    axes, shared = parse_grid([r"cadp.x=a\,b", r"algo=q\,1,v"])
    assert shared == ["cadp.x=a,b"] and axes == [Axis("algo", ("q,1", "v"))]


@pytest.mark.parametrize("items, message", [
    (["algo=qmix,"], "empty value"),
    (["algo=qmix,vdn,qmix"], "more than once"),
    (["algo=qmix,vdn", "algo=iql,qplex"], "comma list twice"),
    (["algo=qmix,vdn", "algo=iql"], "both a grid axis"),
    (["algo"], "Expected key=value"),
])
def test_malformed_grids_are_refused(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(items)


def test_trial_names_are_readable_safe_unique_and_stable():
    points = [(("env", "smax:3m"), ("algo", "qmix")), (("env", "ltr:/data/mslr"), ("algo", "qmix"))]
    assert trial_names(points) == ["env=smax-3m,algo=qmix", "env=ltr--data-mslr,algo=qmix"]
    # Two values that differ only in characters a name cannot hold get a hash of their exact text.
    clash = trial_names([(("env", "a:b"),), (("env", "a/b"),)])
    assert len(set(clash)) == 2 and all(n.startswith("env=a-b-") for n in clash)
    assert clash == trial_names([(("env", "a:b"),), (("env", "a/b"),)])
    long = trial_names([(("env", "x" * 300),)])[0]
    assert len(long) <= sweeps.MAX_NAME_LENGTH
    assert trial_names([()]) == ["run"]  # no axis: one trial


def test_plan_expands_the_cartesian_product_in_command_line_order(tmp_path):
    out = tmp_path / "s"
    sweep = plan_sweep(["env=toy:hallway,toy:two_step", "algo=vdn,qmix,iql", "seeds=2", f"out={out}"])
    assert len(sweep.trials) == 6 and all(t.valid for t in sweep.trials)
    assert [t.name for t in sweep.trials[:4]] == ["env=toy-hallway,algo=vdn", "env=toy-hallway,algo=qmix",
                                                  "env=toy-hallway,algo=iql", "env=toy-two_step,algo=vdn"]
    trial = sweep.trials[3]
    assert trial.run_dir == out / "env=toy-two_step,algo=vdn"
    assert trial.config.env.id == "toy:two_step" and trial.config.algo.name == "vdn" and trial.config.seeds == 2
    assert trial.config.out == str(trial.run_dir)
    assert sweep.shared == ["seeds=2"]
    assert not out.exists(), "planning writes nothing"
    with pytest.raises(ConfigError, match="needs out="):
        plan_sweep(["algo=vdn,qmix"])
    with pytest.raises(ConfigError, match="one value"):
        plan_sweep(["algo=vdn,qmix", f"out={out},{out}2"])


# ---------------------------------------------------------------------------------------------------------
# Up-front validation


def test_every_invalid_trial_is_reported_before_any_runs(tmp_path):
    out = tmp_path / "s"
    items = ["env=toy:hallway", "algo=vdn,maddpg", "paradigm=ctde,cadp,ctedd", f"out={out}"]
    with pytest.raises(ConfigError) as caught:
        plan_sweep(items)
    message = str(caught.value)
    assert "2 of 6 trials are invalid" in message and "--skip-invalid" in message
    assert "algo=vdn,paradigm=ctedd: paradigm=ctedd trains its global policies" in message
    assert "algo=maddpg,paradigm=cadp: paradigm=cadp is not available on algo=maddpg" in message
    assert not out.exists()
    # A mistake every trial shares is said once.
    with pytest.raises(ConfigError, match="every trial of the sweep is invalid: Unknown option 'algoo'"):
        plan_sweep(["algoo=vdn,qmix", f"out={out}"])

    sweep = plan_sweep(items, skip_invalid=True)
    assert [t.name for t in sweep.trials if not t.valid] == ["algo=vdn,paradigm=ctedd", "algo=maddpg,paradigm=cadp"]
    calls = []
    record = run_sweep(sweep, train_fn=lambda *a, **k: calls.append(k), say=lambda line: None)
    assert len(calls) == 4, "only the valid trials run"
    statuses = {t["name"]: t["status"] for t in json.loads((out / "sweep.json").read_text())["trials"]}
    assert statuses["algo=maddpg,paradigm=cadp"] == "skipped" and statuses["algo=vdn,paradigm=ctde"] == "finished"
    assert record["skip_invalid"] is True
    with pytest.raises(ConfigError, match="trials are invalid"):  # all invalid: nothing to skip to
        plan_sweep(["env=toy:hallway", "algo=vdn,qmix", "paradigm=ctedd", f"out={out}"], skip_invalid=True)


def test_dry_run_lists_the_trials_and_writes_nothing(tmp_path, capsys):
    from ctde import cli

    out = tmp_path / "s"
    # Options after a flag reach the sweep too (argparse hands them over as extras).
    code = cli.main(["sweep", "algo=vdn,maddpg", "--dry-run", "paradigm=ctde,cadp", "env=toy:hallway", f"out={out}",
                     "--skip-invalid"])
    printed = capsys.readouterr().out
    assert code == 0 and not out.exists()
    assert "4 trials over algo (2) x paradigm (2); shared: env=toy:hallway" in printed
    assert "[1/4] algo=vdn,paradigm=ctde: new" in printed
    assert "[4/4] algo=maddpg,paradigm=cadp: skipped: paradigm=cadp is not available" in printed
    assert cli.main(["sweep", "algo=vdn,maddpg", "paradigm=ctde,cadp", f"out={out}"]) == 2
    assert "1 of 4 trials are invalid" in capsys.readouterr().err and not out.exists()


# ---------------------------------------------------------------------------------------------------------
# A trial's state, from its run directory


def test_trial_state_reads_the_run_directory(tmp_path):
    sweep = plan_sweep([*TINY[:6], "steps=1000", "eval.interval=500", "seeds=2", f"out={tmp_path / 's'}"])
    config = sweep.trials[0].config
    run = tmp_path / "run"
    assert sweeps.trial_state(run, config) == "new"
    run.mkdir()
    assert sweeps.trial_state(run, config) == "new"
    (run / "config.yaml").write_text("{}")
    assert sweeps.trial_state(run, config) == "restart", "files but no checkpoint: killed before the first"
    (run / "checkpoints" / "2").mkdir(parents=True)
    assert sweeps.trial_state(run, config) == "resume"
    rows = [{"seed": s, "block": b, "env_steps": 500 * (b + 1)} for b in (0, 1) for s in (0, 1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "summary.json").write_text(json.dumps({"env steps per seed": "1,000"}))
    assert sweeps.trial_state(run, config) == "finished"
    (run / "summary.json").write_text(json.dumps({"env steps per seed": "600 (stopped early; budget 1,000)"}))
    assert sweeps.trial_state(run, config) == "resume"
    (run / "summary.json").write_text(json.dumps({"env steps per seed": "1,000"}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))  # seed 1's last is missing
    assert sweeps.trial_state(run, config) == "resume"


# ---------------------------------------------------------------------------------------------------------
# A real sweep: interrupted, resumed, and guarded against another grid


def _interrupting_train(algo: str):
    """runner.train, except that trial `algo` is interrupted (as by Ctrl-C) in its second chunk, after its first
    checkpoint: train asks stop_when after every chunk but the last, before that chunk's checkpoint."""
    from ctde.training.runner import train

    def train_fn(config=None, **kwargs):
        if config is not None and config.algo.name == algo:
            calls = []

            def stop_when(rows):
                calls.append(len(rows))
                if len(calls) == 2:
                    raise KeyboardInterrupt
                return False

            kwargs["stop_when"] = stop_when
        return train(config, **kwargs)

    return train_fn


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in run_dir.rglob("*") if p.is_file()}


def _replaced(items: list[str], changes: list[str]) -> list[str]:
    """`items` with the options of `changes` replaced by them."""
    keys = {change.split("=", 1)[0] for change in changes}
    return [item for item in items if item.split("=", 1)[0] not in keys] + changes


@pytest.mark.slow  # 67 s in make test on 2026-12-07 (cold, two workers)
def test_a_sweep_runs_is_interrupted_resumes_and_refuses_another_grid(tmp_path, monkeypatch, capsys):
    out = tmp_path / "s1"
    items = [*TINY, "algo=vdn,qmix", f"out={out}"]
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        run_sweep(plan_sweep(items), train_fn=_interrupting_train("qmix"), say=lines.append)
    record = json.loads((out / "sweep.json").read_text())
    assert [t["status"] for t in record["trials"]] == ["finished", "interrupted"]
    assert record["grid"] == [{"key": "algo", "values": ["vdn", "qmix"]}] and "steps=3000" in record["shared"]
    vdn, qmix = out / "algo=vdn", out / "algo=qmix"
    assert record["trials"][0]["run_dir"] == str(vdn) and record["trials"][0]["wall_seconds"] > 0
    assert record["trials"][0]["result"]["model"] == "agent" and 0 <= record["trials"][0]["result"]["win_rate"] <= 1
    assert (vdn / "summary.json").exists() and (vdn / "policy" / "policy.json").exists()
    assert (qmix / "checkpoints" / "1").is_dir() and not (qmix / "summary.json").exists()
    assert lines[0] == "[1/2] algo=vdn: started (new)" and lines[1].startswith("[1/2] algo=vdn: finished in ")
    assert "test win rate" in lines[1]
    vdn_files = _files(vdn)

    # The same command again: the finished trial is skipped untouched, the interrupted one resumes.
    lines.clear()
    record = run_sweep(plan_sweep(items), say=lines.append)
    assert [t["status"] for t in record["trials"]] == ["finished", "finished"]
    assert record["trials"][1]["action"] == "resume"
    assert lines[0].startswith("[1/2] algo=vdn: finished earlier, skipped: test win rate ")
    assert lines[1] == "[2/2] algo=qmix: started (resumed from its last checkpoint)"
    assert _files(vdn) == vdn_files, "a finished trial's files must not be touched"
    rows = [json.loads(line) for line in (qmix / "metrics.jsonl").read_text().splitlines()]
    assert sorted(row["block"] for row in rows) == [0, 1, 2, 3, 4, 5] and (qmix / "summary.json").exists()
    assert "Sweep " in lines[-1] and "2 finished" in lines[-1]

    # Another grid, or other options, on the same out= are refused before anything is touched.
    before = (out / "sweep.json").read_bytes()
    for changes, why in ((["algo=vdn,iql"], "trials only in this one: algo=iql"),
                         (["eval.episodes=4"], "eval.episodes 8 -> 4"),
                         (["steps=1000"], "may be extended, not shortened")):
        with pytest.raises(ConfigError, match=f"holds a different sweep.*{why}.*--overwrite"):
            run_sweep(plan_sweep(_replaced(items, changes)), train_fn=lambda *a, **k: pytest.fail("must not run"),
                      say=lines.append)
    assert (out / "sweep.json").read_bytes() == before and _files(vdn) == vdn_files

    # `ctde sweep --resume OUT`: every trial finished, nothing runs, exit status 0 and the summary table.
    from ctde import cli

    monkeypatch.setenv("CTDE_COMPILE_CACHE", "off")  # keep this process's JAX cache setting (conftest's)
    assert cli.main(["sweep", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "algo=qmix: finished earlier, skipped" in printed and "2 finished (of 2 trials)" in printed
    assert cli.main(["sweep", "--resume", str(out), "algo.lr=1"]) == 2
    assert "Cannot change algo.lr when resuming the sweep" in capsys.readouterr().err
    assert _files(vdn) == vdn_files


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    """The CLI path with runner.train replaced: a diverged trial fails, the next still runs, exit status 1."""
    from ctde import cli
    from ctde.training import runner

    ran = []

    def fake_train(config=None, **kwargs):
        ran.append(config.algo.name)
        if config.algo.name == "vdn":
            raise TrainingDivergedError("The loss became NaN or infinite at env step 1,234 (seed 0).")
        Path(config.out).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(runner, "train", fake_train)
    monkeypatch.setenv("CTDE_COMPILE_CACHE", "off")
    out = tmp_path / "s"
    assert cli.main(["sweep", *TINY, "algo=vdn,qmix", f"out={out}"]) == 1
    assert ran == ["vdn", "qmix"]
    trials = json.loads((out / "sweep.json").read_text())["trials"]
    assert trials[0]["status"] == "failed" and "TrainingDivergedError: The loss became NaN" in trials[0]["error"]
    assert trials[1]["status"] == "finished"
    captured = capsys.readouterr()
    assert "[1/2] algo=vdn: failed in" in captured.out and "1 failed" in captured.out
    assert "1 trial(s) did not finish: algo=vdn" in captured.err
    # Not a sweep folder: refused, even with --overwrite, and left as it was.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert cli.main(["sweep", "algo=vdn,qmix", f"out={tmp_path / 'mine'}", "--overwrite"]) == 2
    assert "not a sweep folder" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").exists()


# ---------------------------------------------------------------------------------------------------------
# Ray


def test_missing_ray_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"pip install 'ctde\[ray\]'"):
        run_sweep(plan_sweep(["algo=vdn,qmix", f"out={tmp_path / 's'}"]), executor="ray")
    assert not (tmp_path / "s").exists()


@pytest.mark.filterwarnings("ignore:os.fork")  # Ray starts its processes from this (JAX-threaded) one
def test_the_ray_executor_runs_each_trial_as_a_task(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    # Ray's workers inherit this environment: JAX on CPU (conftest) and the tests' compile cache.
    monkeypatch.setenv("CTDE_COMPILE_CACHE", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "s"
        # Two seeds of the vdn trial above, one chunk each: the same compiled program, served by the cache.
        record = run_sweep(plan_sweep([*TINY, "steps=1000", "algo=vdn", "seed=0,1", f"out={out}"]), executor="ray",
                           say=lambda line: None)
    finally:
        ray.shutdown()
    assert [t["status"] for t in record["trials"]] == ["finished", "finished"], record
    for trial in record["trials"]:
        assert (out / trial["name"] / "summary.json").exists() and trial["result"]["seeds"] == 1
    rows = [json.loads(line) for line in (out / "seed=1" / "metrics.jsonl").read_text().splitlines()]
    assert {row["seed"] for row in rows} == {1}
    # Workers got absolute paths: their working directory is not this one.
    saved = yaml.safe_load((out / "seed=0" / "config.yaml").read_text())
    assert os.path.isabs(saved["out"]) and Path(saved["out"]) == (out / "seed=0").resolve()
