"""The `ctde` command.

    ctde train [--resume RUN] [--config FILE] [--overwrite] key=value ...
    ctde eval RUN [--model NAME] [--episodes N]      # NAME: agent | student, expert (igm_da) | student, teacher (ctds)
                                                     #       | global, local (ctedd)
    ctde export RUN
    ctde audit POLICY_DIR [--episodes N] [--horizon H] [--trials T]
    ctde envs
    ctde report RUN
    ctde replay RUN [--model M] [--episodes N] [--seed S] [--run-seed K] [--out FILE.gif|.mp4] [--fps N]
    ctde sweep [--resume OUT] [--skip-invalid] [--ray-address ADDR] key=v1,v2,... key=value ... out=DIR
    ctde compare DIR... [--out DIR] [--metric win_rate|return] [--model M,...] [--group-by KEYS] [--task-by KEYS]

Errors a user can fix are printed as one clear message (exit status 2), never as a bare traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctde.config import build_config, help_text
from ctde.envs import list_environments
from ctde.errors import AuditFailedError, ConfigError, CtdeError
from ctde.experiments import sweep as sweeps
from ctde.experiments.compare import compare, parse_keys
from ctde.experiments.render import replay
from ctde.policy import load_policy
from ctde.training.audit_episodes import audit_exported
from ctde.training.checkpoint import DISK_FULL_ERRNOS
from ctde.training.compile_cache import enable_compile_cache
from ctde.training.logger import read_metrics
from ctde.training.resolve import resolve
from ctde.training.runner import build_program, evaluate, export, load_run_config, make_report, train

TRAIN_EPILOG = """examples:
  ctde train env=smax:5m_vs_6m algo=qmix seeds=3 steps=2e6
  ctde train env=smax:3m algo=vdn steps=3e5 eval.episodes=64 out=runs/my_vdn
  ctde train --resume runs/my_vdn
  ctde train env=smax:5m_vs_6m env.sight_range=0 algo=qmix paradigm=igm_da seeds=3 steps=2e6
  ctde train --config configs/igm_da_smac.yaml env=smax:5m_vs_6m igm_da.collector=expert
  ctde train env=smax:3s_vs_5z algo=qmix paradigm=ctds
  ctde train env=smax:5m_vs_6m algo=qmix paradigm=cadp seeds=3 steps=2e6
  ctde train env=smax:3s_vs_5z algo=qmix paradigm=ptde
  ctde train env=smax:5m_vs_6m algo=mappo paradigm=cadp cadp.prune_start=3e6
  ctde train env=mpe:simple_tag algo=maddpg seeds=3 steps=1e6
  ctde train env=mpe:push_forward algo=maddpg paradigm=ctedd ctedd.message_bits=3
"""


def _train(args) -> int:
    if args.resume and args.config:
        # Ignoring the file silently would continue the old run while the user believes its options took effect.
        raise ConfigError(f"--config cannot be combined with --resume: a resumed run continues with the "
                          f"configuration saved in {Path(args.resume) / 'config.yaml'} (only steps and some log.* "
                          f"options may change, as key=value). Drop --config, or start a new run with it.")
    if args.resume and args.overwrite:
        raise ConfigError(f"--overwrite cannot be combined with --resume: --resume continues {args.resume}, "
                          f"--overwrite would delete it. Drop one of them.")
    enable_compile_cache()
    if args.resume:
        train(resume=args.resume, resume_overrides=args.overrides)
    else:
        train(build_config(args.overrides, config_file=args.config), overwrite=args.overwrite)
    return 0


def _positive(value: int | None, flag: str) -> None:
    """Refuse a count flag below 1 here: further down it would be an empty array or a JAX shape error."""
    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be at least 1, got {value}.")


def _eval(args) -> int:
    _positive(args.episodes, "--episodes")
    enable_compile_cache()
    evaluate(args.run, model=args.model, episodes=args.episodes)
    return 0


def _export(args) -> int:
    policy = export(args.run)
    print(f"Exported the decentralized policy ({policy.spec['model']} model, {policy.n_seeds} seed(s)) to "
          f"{Path(args.run) / 'policy'}")
    return 0


def _audit(args) -> int:
    _positive(args.trials, "--trials")  # an audit of no trials checks nothing, yet would report a pass
    _positive(args.episodes, "--episodes")
    _positive(args.horizon, "--horizon")
    policy = load_policy(args.policy)
    enable_compile_cache()
    report = audit_exported(policy, episodes=args.episodes, horizon=args.horizon, trials=args.trials)
    print(f"Audit of {args.policy} ({policy.spec['network']}, own inputs: {', '.join(policy.spec['inputs'])}):")
    print(f"  {report.message}")
    print(f"  inputs: {report.inputs}")
    print(f"  sensitivity to own inputs (min over agents): {report.own_sensitivity:.3g}")
    if not report.passed:
        raise AuditFailedError(report.message)
    return 0


def _envs(args) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="ctde environments (env=<id>)")
    for column in ("id", "agents", "enemies", "episode limit", "views", "units / description"):
        table.add_column(column)
    for row in list_environments():
        table.add_row(row["id"], str(row["agents"] or "-"), str(row["enemies"] if row["enemies"] is not None else "-"),
                      str(row["episode_limit"] or "-"), row["views"] or "-", row["description"])
    Console().print(table)
    print("SMAX episode limits are SMAC's (env.smac_parity=true), MPE's are 25 steps; env.episode_limit overrides "
          "them. MPE's non-learning side (simple_tag's prey, simple_push's adversary) follows env.adversary_policy.")
    return 0


def _report(args) -> int:
    import json

    run = Path(args.run)
    config = resolve(load_run_config(run))
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    make_report(run, config, build_program(config), read_metrics(run), summary)
    print(f"Wrote {run / 'report.md'} and {run / 'learning_curve.png'}")
    return 0


def _replay(args) -> int:
    _positive(args.episodes, "--episodes")
    _positive(args.fps, "--fps")
    enable_compile_cache()
    replay(args.run, model=args.model, episodes=args.episodes, seed=args.seed, run_seed=args.run_seed,
           out=args.out, fps=args.fps)
    return 0


SWEEP_EPILOG = """examples:
  ctde sweep env=smax:3m,smax:2s3z algo=qmix,vdn paradigm=ctde,cadp seeds=5 steps=5e5 out=sweeps/s1
  ctde sweep env=smax:3m,smax:2s3z algo=qmix,vdn paradigm=ctde,cadp seeds=5 steps=5e5 out=sweeps/s1   # again: resumes
  ctde sweep --resume sweeps/s1                    # the same, from sweeps/s1/sweep.json
  ctde sweep --resume sweeps/s1 steps=1e6          # extend every trial
  ctde sweep algo=qmix,maddpg paradigm=ctde,cadp env=mpe:simple_tag out=sweeps/s2 --skip-invalid
  ctde sweep algo=qmix,vdn out=sweeps/s1 --dry-run # the trials and what a run would do with each
  ctde sweep ... --ray-address auto                # every trial a Ray task on an existing cluster

key=v1,v2,... is an axis of the grid; key=value without a comma is shared by every trial; escape a comma
inside a value as \\, (quoted: 'key=a\\,b,c' is the values "a,b" and "c"). Every trial is validated before any
runs. Trials are run directories under out= named from their grid values (env=smax-3m,algo=qmix,...);
out=/sweep.json records each one's status, wall time and final test results. Re-running skips finished
trials, resumes interrupted ones from their last checkpoint, and refuses a different grid on the same out=.
Exit status: 0 all trials finished, 1 some failed (listed), 2 bad input.
"""


def _sweep(args) -> int:
    executor = args.executor or ("ray" if args.ray_address else "local")
    if args.ray_address and executor != "ray":
        raise ConfigError("--ray-address runs the trials on a Ray cluster; drop --executor local, or the address.")
    if args.resume:
        if args.config or args.overwrite:
            raise ConfigError(f"--resume continues the sweep saved in {Path(args.resume) / 'sweep.json'} with its own "
                              f"options; --config and --overwrite cannot be combined with it.")
        arguments, config_file, skip_invalid = sweeps.resume_arguments(args.resume, args.overrides)
        arguments = [a for a in arguments if a.split("=", 1)[0].strip() != "out"] + [f"out={args.resume}"]
        skip_invalid = skip_invalid or args.skip_invalid
    else:
        arguments, config_file, skip_invalid = list(args.overrides), args.config, args.skip_invalid
    sweep = sweeps.plan_sweep(arguments, config_file=config_file, skip_invalid=skip_invalid)
    if args.dry_run:
        sweeps.prepare_out(sweep, overwrite=args.overwrite)  # refuses a different grid, as a real run would
        print(sweeps.describe_plan(sweep) + (f"\n(--overwrite: {sweep.out} would be deleted first)"
                                              if args.overwrite and sweep.out.exists() else ""))
        return 0
    enable_compile_cache()
    try:
        record = sweeps.run_sweep(sweep, overwrite=args.overwrite, executor=executor, ray_address=args.ray_address,
                                  ray_cpus_per_trial=args.ray_cpus_per_trial,
                                  ray_gpus_per_trial=args.ray_gpus_per_trial)
    except KeyboardInterrupt:
        print(f"interrupted: finished trials and the running one's last checkpoint are kept; continue with "
              f"`ctde sweep --resume {sweep.out}`.", file=sys.stderr)
        return 130
    failed = sweeps.failed_trials(record)
    if failed:
        print(f"{len(failed)} trial(s) did not finish: {', '.join(failed)}. Their errors are above and in "
              f"{sweep.out / 'sweep.json'}; re-running the sweep retries them from their last checkpoints.",
              file=sys.stderr)
        return 1
    return 0


COMPARE_EPILOG = """examples:
  ctde compare sweeps/s1                               # every run under sweeps/s1, grouped by what differs
  ctde compare runs/qmix_3m runs/cadp_3m --out results/3m
  ctde compare sweeps/s1 --group-by paradigm,algo --metric return
  ctde compare sweeps/cadp --model export,centralized  # CADP's models as cadp/decentralized and cadp/centralized
  ctde compare sweeps/s1 --task-by env.id,env.sight_range

DIR is a run directory (config.yaml + metrics.jsonl) or a folder searched recursively for them. Methods are
named by the options that differ between runs (paradigm, algo, then others as key=value), tasks by env id.
A run's score per seed is its final test metric. Writes table.md and table.tex (mean ± std over seeds, best
in bold), aggregate.md (IQM, mean, median with 95% stratified bootstrap CIs; probability of improvement),
curves_<task>.png, performance_profile.png, marl_eval.json and compare.json; see docs/compare.md.
Needs rliable: pip install 'ctde[stats]'.
"""


def _compare(args) -> int:
    _positive(args.reps, "--reps")
    models = [m.strip() for m in args.model.split(",") if m.strip()] if args.model else None
    result = compare(args.dirs, out=args.out, metric=args.metric, models=models,
                     group_by=parse_keys(args.group_by, "--group-by"), task_by=parse_keys(args.task_by, "--task-by"),
                     normalize=args.normalize, curve_stat=args.curve_stat, reps=args.reps, seed=args.seed,
                     skip_unevaluated=args.skip_unevaluated)
    print(result.table_markdown)
    for note in result.summary["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"\nWrote {', '.join(f.name for f in result.files)} to {result.out}")
    return 0


class _TrainHelp(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.print_help()
        print()
        print(help_text())
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctde", description="Cooperative MARL where training may use more "
                                     "information than execution.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a run (or resume one)", add_help=False, epilog=TRAIN_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           usage="ctde train [--resume RUN] [--config FILE] [--overwrite] key=value ...")
    train.add_argument("-h", "--help", action=_TrainHelp, nargs=0, help="show every option, its type, default and meaning")
    train.add_argument("--resume", metavar="RUN", help="continue the run in directory RUN from its last checkpoint")
    train.add_argument("--config", metavar="FILE", help="YAML file of options, applied before key=value overrides")
    train.add_argument("--overwrite", action="store_true", help="delete an existing run directory at out=...")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="greedy evaluation of a saved run")
    ev.add_argument("run")
    ev.add_argument("--model", help="which of the run's models to evaluate (default: the exported one). ctde: agent; "
                    "igm_da: student, expert; ctds: student, teacher")
    ev.add_argument("--episodes", type=int, help="greedy episodes per seed (default: max(eval.episodes, 32))")
    ev.set_defaults(func=_eval)

    ex = sub.add_parser("export", help="write RUN/policy/, the decentralized policy artifact")
    ex.add_argument("run")
    ex.set_defaults(func=_export)

    au = sub.add_parser("audit", help="check that an exported policy acts on each agent's own inputs only")
    au.add_argument("policy", help="an exported policy directory (or a run directory)")
    au.add_argument("--trials", type=int, default=8, help="perturbation trials on recorded episodes, as many on "
                    "random ones (8)")
    au.add_argument("--episodes", type=int, metavar="N", help="episodes rolled out in the policy's environment, "
                    "half greedy with the policy, half with random available actions (8)")
    au.add_argument("--horizon", type=int, metavar="H", help="longest episode rolled out, and the random "
                    "episodes' length (default: the episode limit, at least 25)")
    au.set_defaults(func=_audit)

    en = sub.add_parser("envs", help="list environments and maps")
    en.set_defaults(func=_envs)

    rp = sub.add_parser("report", help="(re)write RUN/report.md and its learning curves")
    rp.add_argument("run")
    rp.set_defaults(func=_report)

    rl = sub.add_parser("replay", help="a GIF (or MP4) of greedy episodes of a saved run (smax, mpe)")
    rl.add_argument("run")
    rl.add_argument("--model", help="a model from the run's checkpoints (as ctde eval --model) instead of the "
                    "exported policy RUN/policy (the default)")
    rl.add_argument("--episodes", type=int, default=1, help="episodes, played one after another (1)")
    rl.add_argument("--seed", type=int, default=0, help="random seed of the episodes (0)")
    rl.add_argument("--run-seed", type=int, default=0, metavar="K", help="which of the run's seeds acts (0: its first)")
    rl.add_argument("--out", metavar="FILE", help="FILE.gif, or FILE.mp4 with ffmpeg (default: RUN/replay_<model>.gif)")
    rl.add_argument("--fps", type=int, help="frames per second (SMAX: 20, 8 frames per step; MPE: 10)")
    rl.set_defaults(func=_replay)

    sw = sub.add_parser("sweep", help="run a grid of runs (key=v1,v2,...), resumable, here or on Ray",
                        epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                        usage="ctde sweep [--resume OUT] [--config FILE] [--overwrite] [--skip-invalid] [--dry-run] "
                              "[--executor {local,ray}] [--ray-address ADDR] key=v1,v2,... key=value ... out=DIR")
    sw.add_argument("--resume", metavar="OUT", help="continue the sweep in folder OUT (its sweep.json has the grid)")
    sw.add_argument("--config", metavar="FILE", help="YAML file of options for every trial, applied first")
    sw.add_argument("--overwrite", action="store_true", help="delete the sweep already in out= and start this one")
    sw.add_argument("--skip-invalid", action="store_true",
                    help="run the valid trials and record the invalid combinations as skipped (default: refuse)")
    sw.add_argument("--dry-run", action="store_true", help="list the trials and what a run would do; run nothing")
    sw.add_argument("--executor", choices=("local", "ray"),
                    help="local: trials one after another in this process (default); ray: each a Ray task")
    sw.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to use (e.g. auto); implies --executor ray")
    sw.add_argument("--ray-cpus-per-trial", type=float, default=1.0, metavar="N", help="Ray: CPUs per trial (1)")
    sw.add_argument("--ray-gpus-per-trial", type=float, default=0.0, metavar="N",
                    help="Ray: GPUs per trial (0: CPU only, as Ray hides the GPUs from a task that asks for none; "
                    "a fraction shares a GPU: then also set XLA_PYTHON_CLIENT_MEM_FRACTION)")
    sw.add_argument("overrides", nargs="*", metavar="key=value")
    sw.set_defaults(func=_sweep)

    cp = sub.add_parser("compare", help="compare runs: tables, IQM / bootstrap CIs, curves (rliable)",
                        epilog=COMPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cp.add_argument("dirs", nargs="+", metavar="DIR", help="run directories, or folders searched for runs")
    cp.add_argument("--out", metavar="DIR", help="output folder (default: <first DIR>/compare)")
    cp.add_argument("--metric", choices=("win_rate", "return"),
                    help="final test metric to compare (default: win_rate where the env has wins, else return)")
    cp.add_argument("--model", metavar="M[,M...]",
                    help="models to compare, each its own method where a run has several: names (e.g. centralized), "
                    "export (each run's exported model; the default) or all")
    cp.add_argument("--group-by", metavar="KEYS", help="option keys that name a method, comma-separated (e.g. "
                    "paradigm,algo,cadp.alpha; run = one method per run directory); default: the options that differ")
    cp.add_argument("--task-by", metavar="KEYS", help="option keys that name a task (default: env.id)")
    cp.add_argument("--normalize", choices=("auto", "none", "minmax"), default="auto",
                    help="per-task min-max scaling for the aggregates and profile (auto: for returns over several "
                    "tasks)")
    cp.add_argument("--curve-stat", choices=("iqm", "mean"), default="iqm", help="curve line over seeds (iqm)")
    cp.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (2000)")
    cp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (0)")
    cp.add_argument("--skip-unevaluated", action="store_true",
                    help="leave out runs with no test evaluation yet (default: refuse, naming them)")
    cp.set_defaults(func=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command not in ("train", "sweep") or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except CtdeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_FULL_ERRNOS:
            raise
        # Checkpoints are written atomically, and metrics rows cut short are dropped on resume.
        print(f"error: the disk is full writing {e.filename or 'a run file'} ({e.strerror}). Files written before "
              f"are kept; free space, then continue with `ctde train --resume <run>`.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is kept; continue with `ctde train --resume <run>`.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
