"""The reliability campaign (issue 25): kills, bad input, NaNs, planted leaks and a full disk, measured.

    python benchmarks/reliability.py                       # everything: 20 kills, the catalogue, NaNs, leaks, disk
    python benchmarks/reliability.py --sections kills --kills 6
    python benchmarks/reliability.py --sections bad_input,leaks

Sections (each writes its part of benchmarks/results/reliability.json and a table of reliability.md):

- kills: real `ctde train` processes killed with SIGKILL, then `ctde train --resume`d. Three jobs, each with one
  uninterrupted reference run of the same configuration and seed: SMAX 3m QMIX (random moments after the first
  checkpoint, and the moment a checkpoint write is under way), toy:hallway VDN (random moments, and one kill
  before the first checkpoint), and toy:hallway PTDE (random moments in stage 2, the distillation). Every job
  checkpoints after every chunk. Per kill: whether the run resumed, the env steps it lost (the chunk in flight:
  at most one), and whether every metric row of the finished run equals the reference's. Equality is exact
  (every field but wall-clock time): a resumed run restores the whole run state, replay buffer and random keys
  included, and runs the same compiled program.
- bad_input: the catalogue of `ctde.testing.bad_input` through the CLI's own entry point: exit status,
  message, and whether every file already in the workspace is unchanged.
- nan: for every backbone, the loss poisoned from a chosen env step (`ctde.testing.faults.poisoned_loss`):
  the run must stop naming the step, keep the last good checkpoint, and `--resume` from it must finish. Also
  stage 2 (PTDE's distillation) poisoned.
- leaks: the planted leaks of `ctde.testing.planted_leaks` (the audit must catch every one), the real
  exported policy of every paradigm x backbone the configuration accepts (every one must pass), and the attacker
  leaks of `ctde.testing.attacker_leaks` (issue 36: non-finite masks, signed zeros, structural, gated on realistic
  inputs, late), each saved as a policy folder and audited through `ctde audit DIR`: the audit must fail each
  one (exit status 2, the expected FAIL text) and pass each one's honest twin.
- disk: a run on a small tmpfs (mounted by this script; needs root) until a checkpoint does not fit: the error
  must say so, the previous checkpoint must be intact, and the run, moved to a larger disk, must resume to the
  reference's metrics.

Runs go to --work (default /tmp/ctde_reliability), which is emptied first.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import sys
import time
import traceback
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SECTIONS = ("kills", "bad_input", "nan", "leaks", "disk")
QUIET = ["log.progress=false", "log.tensorboard=false"]

# The kill campaign's jobs: (name, overrides). Every chunk is one evaluation and ends with a checkpoint.
JOBS = {
    "smax_3m_qmix": ["env=smax:3m", "algo=qmix", "steps=30000", "eval.interval=2000", "log.chunk_evals=1",
                     "eval.episodes=8", *QUIET],
    "toy_hallway_vdn": ["env=toy:hallway", "algo=vdn", "steps=8000", "eval.interval=500", "log.chunk_evals=1",
                        "eval.episodes=8", "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200", *QUIET],
    "toy_hallway_ptde": ["env=toy:hallway", "algo=vdn", "paradigm=ptde", "steps=2000", "eval.interval=500",
                         "log.chunk_evals=1", "eval.episodes=8", "algo.epsilon_anneal_steps=1000",
                         "algo.buffer_size=200", "ptde.distill_steps=40000", "ptde.distill_log_every=200",
                         "ptde.distill_episodes=64", *QUIET],
}
CHUNK_STEPS = {"smax_3m_qmix": 2000, "toy_hallway_vdn": 500, "toy_hallway_ptde": 500}


def kill_plan(kills: int, seed: int) -> list[tuple[str, "object"]]:
    """(job, trigger) for `kills` kills: half on SMAX 3m (three of them during a checkpoint write), a quarter on
    the toy task (one before its first checkpoint), a quarter in PTDE's stage 2."""
    from ctde.testing.faults import Trigger, random_delays

    smax = max(1, kills // 2)
    toy = max(1, kills // 4)
    ptde = max(1, kills - smax - toy)
    writes = min(3, max(1, smax // 3))
    plan = [("smax_3m_qmix", Trigger("after_first_checkpoint", delay=d))
            for d in random_delays(smax - writes, 0.0, 18.0, seed)]
    plan += [("smax_3m_qmix", Trigger("checkpoint_write", from_checkpoint=c)) for c in (3, 7, 12)[:writes]]
    plan += [("toy_hallway_vdn", Trigger("before_first_checkpoint", delay=3.0))]
    plan += [("toy_hallway_vdn", Trigger("after_first_checkpoint", delay=d))
             for d in random_delays(toy - 1, 0.0, 5.0, seed + 1)]
    plan += [("toy_hallway_ptde", Trigger("stage_two", delay=d)) for d in random_delays(ptde, 0.0, 6.0, seed + 2)]
    return plan[:kills]


def run_kills(work: Path, kills: int, seed: int, say) -> dict:
    from ctde.testing.faults import (cli_environment, comparable_rows, first_difference, kill_during,
                                         resume_and_compare, run_cli)

    env = cli_environment(work / "compile_cache")
    plan = kill_plan(kills, seed)
    references = {}
    for job in sorted({job for job, _ in plan}):
        out = work / "kills" / f"{job}_reference"
        tic = time.perf_counter()
        result = run_cli(["train", *JOBS[job], f"out={out}"], env)
        if result.returncode:
            raise RuntimeError(f"reference run {job} failed:\n{result.stderr[-2000:]}")
        references[job] = out
        say(f"reference {job}: {time.perf_counter() - tic:.0f} s")
    rows = []
    for index, (job, trigger) in enumerate(plan):
        run_dir = work / "kills" / f"{index:02d}_{job}_{trigger.kind}"
        outcome = kill_during([*JOBS[job], f"out={run_dir}"], run_dir, trigger, env)
        row = {"kill": index, "job": job, "trigger": trigger.kind, "delay_s": trigger.delay,
               "killed": outcome.killed, "seconds_to_kill": round(outcome.seconds_to_kill, 1),
               "checkpoint_at_kill": outcome.checkpoint_at_kill, "checkpoint_env_steps": outcome.checkpoint_env_steps,
               "logged_env_steps": outcome.logged_env_steps, "interrupted_checkpoint_write": outcome.writing_checkpoint,
               "stage_two_losses_logged": outcome.stage_two_steps_logged}
        chunk = CHUNK_STEPS[job]
        if outcome.checkpoint_at_kill is None:
            # Killed before any checkpoint: the resume must refuse clearly, and a fresh start must reproduce.
            resumed = resume_and_compare(run_dir, references[job], env)
            row.update(resumed)
            restart = run_cli(["train", *JOBS[job], f"out={run_dir}", "--overwrite"], env)
            row["restarted"] = restart.returncode == 0
            row["metrics_equal"] = restart.returncode == 0 and first_difference(
                comparable_rows(run_dir / "metrics.jsonl"), comparable_rows(references[job] / "metrics.jsonl")) is None
            row["env_steps_lost_at_most"] = outcome.logged_env_steps + chunk
        else:
            if trigger.kind == "stage_two":
                row["env_steps_lost_at_most"] = 0  # stage 1 was complete and checkpointed
            else:
                in_flight = 0 if outcome.writing_checkpoint else chunk
                row["env_steps_lost_at_most"] = (outcome.logged_env_steps - (outcome.checkpoint_env_steps or 0)
                                                 + in_flight)
            row.update(resume_and_compare(run_dir, references[job], env))
        row["lost_within_one_chunk"] = row["env_steps_lost_at_most"] <= chunk * 1.05 + 16  # episode granularity
        rows.append(row)
        say(f"kill {index:2d} {job:<17} {trigger.kind:<24} killed={outcome.killed} at "
            f"{outcome.seconds_to_kill:5.1f}s ckpt={outcome.checkpoint_at_kill} write={outcome.writing_checkpoint} "
            f"resumed={row.get('resumed')} equal={row.get('metrics_equal')}")
        shutil.rmtree(run_dir, ignore_errors=True)
    killed = [r for r in rows if r["killed"]]
    return {"jobs": JOBS, "chunk_env_steps": CHUNK_STEPS, "kills": rows,
            "summary": {"kills_planned": len(rows), "kills_landed": len(killed),
                        "resumed": sum(bool(r.get("resumed")) for r in killed),
                        "refused_clearly_then_restarted": sum(bool(r.get("restarted")) for r in killed),
                        "metrics_equal": sum(bool(r.get("metrics_equal")) for r in killed),
                        "lost_within_one_chunk": sum(bool(r["lost_within_one_chunk"]) for r in killed),
                        "interrupted_checkpoint_writes": sum(bool(r["interrupted_checkpoint_write"]) for r in killed),
                        "stage_two_kills": sum(r["trigger"] == "stage_two" for r in killed)}}


def run_bad_input(work: Path, say) -> dict:
    from ctde.testing.bad_input import run_catalogue

    rows = run_catalogue(work / "bad_input")
    for row in rows:
        say(f"{row['case']:<40} exit {row['exit_status']} matched={row['matched']} intact={row['files_intact']}")
    return {"cases": rows, "summary": {
        "cases": len(rows), "exit_status_2": sum(r["exit_status"] == 2 for r in rows),
        "message_matched": sum(bool(r["matched"]) for r in rows), "no_traceback": sum(not r["traceback"] for r in rows),
        "files_intact": sum(bool(r["files_intact"]) for r in rows)}}


# NaN injection: (algo, extra overrides). Value decomposition and MAPPO on the toy task, MADDPG on MPE.
NAN_RUNS = {
    "iql": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "vdn": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "qmix": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "qplex": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    # The papers' baselines: their objectives (td_objectives) differ, the loss they return is td_loss's.
    "qtran": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "cw_qmix": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "ow_qmix": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "dmix": ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000"],
    "mappo": ["env=toy:hallway", "rollout.num_envs=4", "rollout.length=50", "ppo.segment_length=10",
              "ppo.minibatches=2"],
    "maddpg": ["env=mpe:simple_tag", "algo.buffer_size=200"],
}
NAN_AT = 1200


def run_nan(work: Path, say) -> dict:
    from ctde.errors import TrainingDivergedError
    from ctde.testing.faults import complete_checkpoints, poisoned_distillation, poisoned_loss
    from ctde.training.runner import train

    rows = []
    cases = [(algo, overrides, "loss") for algo, overrides in NAN_RUNS.items()]
    cases.append(("vdn", ["env=toy:hallway", "algo.buffer_size=200", "algo.epsilon_anneal_steps=1000",
                          "paradigm=ptde", "ptde.distill_steps=2000", "ptde.distill_log_every=100",
                          "ptde.distill_episodes=32"], "distillation"))
    for algo, overrides, where in cases:
        name = f"{algo}_{where}" if where != "loss" else algo
        out = work / "nan" / name
        steps = 2000 if where == "distillation" else 4000
        args = [f"algo={algo}", *overrides, f"steps={steps}", "eval.interval=500", "eval.episodes=8",
                "log.chunk_evals=2", f"out={out}", *QUIET]
        poison = poisoned_distillation(1000) if where == "distillation" else poisoned_loss(algo, NAN_AT)
        row = {"backbone": algo, "poisoned": where, "poisoned_after": 1000 if where == "distillation" else NAN_AT}
        tic = time.perf_counter()
        try:
            with poison:
                train(args, quiet=True)
            row.update(stopped=False, message="the run finished: the poisoned loss was not detected")
        except TrainingDivergedError as e:
            message = str(e)
            named = re.search(r"(?:env step|distillation step) ([\d,]+)", message)
            row.update(stopped=True, message=message, named_step=int(named.group(1).replace(",", "")) if named else None)
        folder = out / ("checkpoints_distill" if where == "distillation" else "checkpoints")
        row["checkpoints_kept"] = complete_checkpoints(folder)
        row["stage_one_checkpoints"] = complete_checkpoints(out / "checkpoints")
        try:
            resumed = train(resume=out, quiet=True)
            row["resumed"] = True
            row["resumed_audit"] = resumed.summary["decentralization audit"].split(":")[0]
        except Exception as e:  # noqa: BLE001 - recorded, the campaign goes on
            row.update(resumed=False, resume_error=f"{type(e).__name__}: {e}")
        row["seconds"] = round(time.perf_counter() - tic, 1)
        row["ok"] = bool(row["stopped"] and row["resumed"] and row.get("named_step")
                         and row["named_step"] > row["poisoned_after"] - 1
                         and (row["checkpoints_kept"] or where == "distillation"))
        rows.append(row)
        say(f"NaN {name:<18} stopped={row['stopped']} step={row.get('named_step')} kept={row['checkpoints_kept']} "
            f"resumed={row['resumed']}")
    return {"runs": rows, "summary": {"runs": len(rows), "ok": sum(r["ok"] for r in rows)}}


def run_leaks(say) -> dict:
    from ctde.testing.attacker_leaks import audit_attacker_leaks
    from ctde.testing.planted_leaks import audit_planted_leaks, audit_real_policies

    leaks = audit_planted_leaks()
    for row in leaks:
        say(f"leak {row['leak']:<36} caught={row['caught']} max deviation {row['max_deviation']:.3g}")
    real = audit_real_policies()
    for row in real:
        say(f"real {row['paradigm']:>7} x {row['backbone']:<7} {row['env']:<18} passed={row['passed']} "
            f"own sensitivity {row['own_sensitivity']:.3g}")
    attacker = audit_attacker_leaks()
    for row in attacker:
        say(f"attacker {row['leak']:<26} {row['class']:<16} caught={row['caught']} exit {row['exit_status']} "
            f"behavioural={row['behavioural_fail']} structural={row['structural_fail']} "
            f"twin {row['twin']} passed={row['twin_passed']} ({row['seconds']:.1f} s)")
    twins = {r["twin"]: r["twin_passed"] for r in attacker}
    return {"planted": leaks, "real": real, "attacker": [{k: v for k, v in r.items() if k != "output"}
                                                          for r in attacker], "summary": {
        "planted": len(leaks), "caught": sum(bool(r["caught"]) for r in leaks),
        "real_policies": len(real),
        # A pass counts only with the policy responding to its own inputs (a constant policy passes vacuously).
        "real_passed": sum(bool(r["passed"] and r.get("sensitive", True)) for r in real),
        "attacker": len(attacker), "attacker_caught": sum(bool(r["caught"]) for r in attacker),
        "attacker_twins": len(twins), "attacker_twins_passed": sum(bool(v) for v in twins.values()),
        "attacker_failed_behaviourally": sum(bool(r["behavioural_fail"]) for r in attacker),
        "attacker_failed_structurally": sum(bool(r["structural_fail"]) for r in attacker)}}


DISK_JOB = "smax_3m_qmix"


def run_disk(work: Path, say, size: str | None = None) -> dict:
    """A full disk during a checkpoint write; `size` of the tmpfs, by default one on which one of the reference
    run's checkpoints fits and a second does not (`one_checkpoint_disk`)."""
    from ctde.testing.faults import (cli_environment, comparable_rows, complete_checkpoints, first_difference,
                                         one_checkpoint_disk, run_cli, small_disk)

    env = cli_environment(work / "compile_cache")
    reference = work / "kills" / f"{DISK_JOB}_reference"
    if not (reference / "metrics.jsonl").exists():
        result = run_cli(["train", *JOBS[DISK_JOB], f"out={reference}"], env)
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
    size = size or one_checkpoint_disk(reference / "checkpoints")
    row: dict = {"job": DISK_JOB, "tmpfs_size": size}
    try:
        with small_disk(size) as disk:
            run_dir = disk / "run"
            result = run_cli(["train", *JOBS[DISK_JOB], f"out={run_dir}"], env)
            row.update(exit_status=result.returncode,
                       message=next((l for l in result.stderr.splitlines() if l.startswith("error:")),
                                    result.stderr[-500:]),
                       traceback="Traceback" in result.stderr,
                       checkpoints_left=complete_checkpoints(run_dir / "checkpoints"),
                       partial_writes_left=[p.name for p in (run_dir / "checkpoints").iterdir()
                                            if not p.name.isdigit()] if (run_dir / "checkpoints").exists() else [])
            moved = work / "disk_moved"
            shutil.rmtree(moved, ignore_errors=True)
            shutil.copytree(run_dir, moved)
    except PermissionError as e:
        row.update(skipped=str(e))
        return {"runs": [row], "summary": {"ok": False, "skipped": str(e)}}
    resumed = run_cli(["train", "--resume", str(moved)], env)
    row["resumed_on_larger_disk"] = resumed.returncode == 0
    row["metrics_equal"] = resumed.returncode == 0 and first_difference(
        comparable_rows(moved / "metrics.jsonl"), comparable_rows(reference / "metrics.jsonl")) is None
    row["ok"] = bool(row["exit_status"] == 2 and "disk is full" in row["message"] and not row["traceback"]
                     and row["checkpoints_left"] and not row["partial_writes_left"] and row["metrics_equal"])
    say(f"disk: exit {row['exit_status']} {row['message'][:160]} | kept {row['checkpoints_left']} | "
        f"resumed {row['resumed_on_larger_disk']} equal {row['metrics_equal']}")
    return {"runs": [row], "summary": {"ok": row["ok"]}}


def markdown(results: dict) -> str:
    lines = [f"# Reliability campaign ({results['date']})", "", f"Command: `{results['command']}`", ""]
    if "kills" in results:
        k = results["kills"]
        s = k["summary"]
        lines += ["## Kills (`kill -9`, then `ctde train --resume`)", "",
                  f"{s['kills_landed']} of {s['kills_planned']} kills landed; {s['resumed']} resumed, "
                  f"{s['refused_clearly_then_restarted']} (killed before the first checkpoint) were refused clearly "
                  f"and restarted; final metrics equal to the uninterrupted run in {s['metrics_equal']}; env steps "
                  f"lost within one chunk in {s['lost_within_one_chunk']}; {s['interrupted_checkpoint_writes']} kills "
                  f"interrupted a checkpoint write, {s['stage_two_kills']} landed in PTDE's stage 2.", "",
                  "| # | job | trigger | killed at (s) | checkpoint | write cut | env steps lost ≤ | resumed | "
                  "metrics equal |", "|---|---|---|---|---|---|---|---|---|"]
        for r in k["kills"]:
            lines.append(f"| {r['kill']} | {r['job']} | {r['trigger']} ({r['delay_s']} s) | {r['seconds_to_kill']} | "
                         f"{r['checkpoint_at_kill']} | {'yes' if r['interrupted_checkpoint_write'] else 'no'} | "
                         f"{r['env_steps_lost_at_most']:,} | {'yes' if r.get('resumed') else 'no: ' + str(r.get('resume_message'))[:60]} | "
                         f"{'yes' if r.get('metrics_equal') else 'NO'} |")
        lines.append("")
    if "bad_input" in results:
        b = results["bad_input"]
        s = b["summary"]
        lines += ["## Bad input", "", f"{s['cases']} cases: exit status 2 in {s['exit_status_2']}, expected message in "
                  f"{s['message_matched']}, no traceback in {s['no_traceback']}, files intact in {s['files_intact']}.",
                  "", "| case | exit | message | files intact |", "|---|---|---|---|"]
        for r in b["cases"]:
            message = " ".join(str(r["message"]).split())[:220].replace("|", "\\|")
            lines.append(f"| {r['case']} | {r['exit_status']} | {message} | {'yes' if r['files_intact'] else 'NO'} |")
        lines.append("")
    if "nan" in results:
        n = results["nan"]
        lines += ["## NaN injection", "", f"Loss poisoned after env step {NAN_AT:,} (stage 2: after distillation "
                  "step 1,000); {ok} of {runs} runs stopped naming the step, kept the last good checkpoint and "
                  "resumed.".format(**n["summary"]), "",
                  "| backbone | poisoned | stopped | step named | checkpoints kept | resumed |", "|---|---|---|---|---|---|"]
        for r in n["runs"]:
            lines.append(f"| {r['backbone']} | {r['poisoned']} | {'yes' if r['stopped'] else 'NO'} | "
                         f"{r.get('named_step')} | {r['checkpoints_kept']} | {'yes' if r['resumed'] else 'NO'} |")
        lines.append("")
    if "leaks" in results:
        lk = results["leaks"]
        s = lk["summary"]
        lines += ["## Planted leaks and real policies", "", f"The audit caught {s['caught']} of {s['planted']} planted "
                  f"leaks and passed {s['real_passed']} of {s['real_policies']} real exported policies.", "",
                  "| planted leak | reads | code path | caught | max relative change |", "|---|---|---|---|---|"]
        for r in lk["planted"]:
            lines.append(f"| {r['leak']} | {r.get('reads', '')} | {r.get('code_path', '')} | "
                         f"{'yes' if r['caught'] else 'NO'} | {r['max_deviation']:.3g} |")
        lines += ["", "| paradigm | backbone | env | network | passed | own sensitivity |", "|---|---|---|---|---|---|"]
        for r in lk["real"]:
            lines.append(f"| {r['paradigm']} | {r['backbone']} | {r['env']} | {r.get('network', '')} | "
                         f"{'yes' if r['passed'] else 'NO'} | {r['own_sensitivity']:.3g} |")
        lines.append("")
        if "attacker" in lk:
            lines += ["### Attacker leaks (issue 36), through `ctde audit DIR`", "",
                      f"The audit caught {s['attacker_caught']} of {s['attacker']} attacker leaks (exit status 2 and "
                      f"the expected FAIL text) and passed {s['attacker_twins_passed']} of {s['attacker_twins']} "
                      f"honest twins; {s.get('attacker_failed_behaviourally')} failed the behavioural audit, "
                      f"{s.get('attacker_failed_structurally')} the structural check.", "",
                      "| attacker leak | class | reads | caught | exit | failed behaviourally | failed structurally | "
                      "verdict | seconds | honest twin passed |", "|---|---|---|---|---|---|---|---|---|---|"]
            for r in lk["attacker"]:
                verdict = " ".join(str(r["verdict"]).split())[:200].replace("|", "\\|")
                lines.append(f"| {r['leak']} | {r['class']} | {r['description']} | {'yes' if r['caught'] else 'NO'} | "
                             f"{r['exit_status']} | {'yes' if r.get('behavioural_fail') else 'no'} | "
                             f"{'yes' if r.get('structural_fail') else 'no'} | {verdict} | {r['seconds']:.1f} | "
                             f"{r['twin']}: {'yes' if r['twin_passed'] else 'NO'} |")
            lines.append("")
    if "disk" in results:
        r = results["disk"]["runs"][0]
        lines += ["## Disk full", ""]
        if "skipped" in r:
            lines.append(f"Skipped: {r['skipped']}")
        else:
            lines += [f"`{DISK_JOB}` on a {r['tmpfs_size']} tmpfs: exit status {r['exit_status']}, message: "
                      f"\"{r['message']}\"", "", f"Complete checkpoints left: {r['checkpoints_left']}; partial writes "
                      f"left: {r['partial_writes_left'] or 'none'}; moved to a larger disk and resumed: "
                      f"{'yes' if r['resumed_on_larger_disk'] else 'NO'}; metrics equal to the uninterrupted run: "
                      f"{'yes' if r['metrics_equal'] else 'NO'}."]
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default="/tmp/ctde_reliability")
    parser.add_argument("--out", default=str(RESULTS / "reliability.json"))
    args = parser.parse_args()
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    work = Path(args.work)
    keep_cache = work / "compile_cache"
    if work.exists():
        for child in work.iterdir():
            if child != keep_cache:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results.update(date=time.strftime("%Y-%m-%d"), command="python " + " ".join(sys.argv),
                   machine=f"{platform.processor() or platform.machine()}, {platform.python_version()}")

    def say(message: str) -> None:
        print(message, flush=True)

    for section in sections:
        tic = time.perf_counter()
        try:
            if section == "kills":
                results["kills"] = run_kills(work, args.kills, args.seed, say)
            elif section == "bad_input":
                results["bad_input"] = run_bad_input(work, say)
            elif section == "nan":
                results["nan"] = run_nan(work, say)
            elif section == "leaks":
                results["leaks"] = run_leaks(say)
            elif section == "disk":
                results["disk"] = run_disk(work, say)
        except Exception:  # noqa: BLE001 - record the failure and go on with the other sections
            results[section] = {"error": traceback.format_exc()}
            print(traceback.format_exc(), file=sys.stderr)
        results.setdefault("seconds", {})[section] = round(time.perf_counter() - tic, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str))
        say(f"== {section}: {time.perf_counter() - tic:.0f} s; {json.dumps(results[section].get('summary'))}")
    complete = {k: v for k, v in results.items() if not (isinstance(v, dict) and "error" in v)}
    out.with_suffix(".md").write_text(markdown(complete))
    print(f"Wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
