"""The `ctde` command.

    ctde train [--resume RUN] [--config FILE] [--overwrite] key=value ...
    ctde eval RUN [--model NAME] [--episodes N]      # NAME: agent | student, expert (igm_da) | student, teacher (ctds)
                                                     #       | global, local (ctedd)
    ctde export RUN
    ctde audit POLICY_DIR
    ctde envs
    ctde report RUN

Errors a user can fix are printed as one clear message (exit status 2), never as a bare traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ctde.errors import CtdeError

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


def _enable_compile_cache() -> None:
    """Reuse compiled programs across runs (JAX's persistent cache); CTDE_COMPILE_CACHE=off disables it."""
    import os

    path = os.environ.get("CTDE_COMPILE_CACHE", str(Path.home() / ".cache" / "ctde" / "jax"))
    if path.lower() in ("", "0", "off", "none", "false"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def _train(args) -> int:
    from ctde.config import build_config
    from ctde.errors import ConfigError
    from ctde.training.runner import train

    if args.resume and args.config:
        # Ignoring the file silently would continue the old run while the user believes its options took effect.
        raise ConfigError(f"--config cannot be combined with --resume: a resumed run continues with the "
                          f"configuration saved in {Path(args.resume) / 'config.yaml'} (only steps and some log.* "
                          f"options may change, as key=value). Drop --config, or start a new run with it.")
    if args.resume and args.overwrite:
        raise ConfigError(f"--overwrite cannot be combined with --resume: --resume continues {args.resume}, "
                          f"--overwrite would delete it. Drop one of them.")
    _enable_compile_cache()
    if args.resume:
        train(resume=args.resume, resume_overrides=args.overrides)
    else:
        train(build_config(args.overrides, config_file=args.config), overwrite=args.overwrite)
    return 0


def _positive(value: int | None, flag: str) -> None:
    """Refuse a count flag below 1 here: further down it would be an empty array or a JAX shape error."""
    from ctde.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"{flag} must be at least 1, got {value}.")


def _eval(args) -> int:
    from ctde.training.runner import evaluate

    _positive(args.episodes, "--episodes")
    _enable_compile_cache()
    evaluate(args.run, model=args.model, episodes=args.episodes)
    return 0


def _export(args) -> int:
    from ctde.training.runner import export

    policy = export(args.run)
    print(f"Exported the decentralized policy ({policy.spec['model']} model, {policy.n_seeds} seed(s)) to "
          f"{Path(args.run) / 'policy'}")
    return 0


def _audit(args) -> int:
    from ctde.errors import AuditFailedError
    from ctde.policy import audit_policy, load_policy

    _positive(args.trials, "--trials")  # an audit of no trials checks nothing, yet would report a pass
    policy = load_policy(args.policy)
    report = audit_policy(policy, trials=args.trials)
    print(f"Audit of {args.policy} ({policy.spec['network']}, own inputs: {', '.join(policy.spec['inputs'])}):")
    print(f"  {report.message}")
    print(f"  sensitivity to own inputs (min over agents): {report.own_sensitivity:.3g}")
    if not report.passed:
        raise AuditFailedError(report.message)
    return 0


def _envs(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from ctde.envs import list_environments

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
    from ctde.training.logger import read_metrics
    from ctde.training.loop import build_program
    from ctde.training.resolve import resolve
    from ctde.training.runner import load_run_config, make_report
    import json

    run = Path(args.run)
    config = resolve(load_run_config(run))
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    make_report(run, config, build_program(config), read_metrics(run), summary)
    print(f"Wrote {run / 'report.md'} and {run / 'learning_curve.png'}")
    return 0


class _TrainHelp(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        from ctde.config import help_text

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
    au.add_argument("--trials", type=int, default=8)
    au.set_defaults(func=_audit)

    en = sub.add_parser("envs", help="list environments and maps")
    en.set_defaults(func=_envs)

    rp = sub.add_parser("report", help="(re)write RUN/report.md and its learning curves")
    rp.add_argument("run")
    rp.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command != "train" or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    try:
        return args.func(args)
    except CtdeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from ctde.training.checkpoint import DISK_FULL_ERRNOS

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
