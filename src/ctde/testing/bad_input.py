"""A catalogue of bad input to the `ctde` command line, and a runner that checks each case fails well.

"Fails well" means four things, checked for every case by `run_case`:

1. the command exits with status 2 (the CLI's status for errors a user can act on; argparse uses it too);
2. stderr carries a message that names the problem (each case's `expect` regex);
3. there is no traceback;
4. nothing already written is lost: every file and folder in the case's workspace before the command is still
   there afterwards with the same content, and the command created nothing new (a refused `train` must not
   even create its `out=` folder) unless the case documents it in `creates`.

The catalogue is data (`CASES`), so a test (tests/test_bad_input.py) and a benchmark script can both run it.
Commands run in-process through `ctde.cli.main`, with stdout and stderr captured: a case costs what the
command costs, not a fresh interpreter and JAX import. Cases that need a finished run get their own copy of a
tiny base run (`make_base_run`, trained once), so the damage one case does cannot leak into another.

    from ctde.testing.bad_input import run_catalogue
    results = run_catalogue(Path("/tmp/bad_input"))       # one dict per case
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import numpy as np

from ctde.cli import main
from ctde.config import build_config
from ctde.envs.host import importable
from ctde.training.resolve import resolve
from ctde.training.runner import build_program, export, seed_keys, train

# The base run every `needs_run` case copies: the cheapest run that still writes every artifact (config,
# metrics, a checkpoint, the exported policy and its audit).
BASE_RUN_OPTIONS = ("env=toy:hallway", "algo=vdn", "steps=1000", "eval.interval=500", "eval.episodes=8",
                    "log.chunk_evals=2", "algo.epsilon_anneal_steps=1000", "algo.buffer_size=200",
                    "log.progress=false", "log.tensorboard=false", "seeds=1")

# Put in front of every `train` case's own options (which override them, being later). If a regression lets a
# bad input through, the command then trains half a minute on a toy task instead of 2M steps of smax:3m. They
# are all options every backbone reads, so they never change which error a case gets.
SAFE_TRAIN = ("env=toy:hallway", "steps=1000", "eval.interval=500", "eval.episodes=8", "log.progress=false",
              "log.tensorboard=false")

# What a run whose every checkpoint is damaged must be told (no fallback is left).
DAMAGED = r"checkpoint.*(could be restored|unreadable|damaged|corrupt)"

RUN = "run"  # where a `needs_run` case finds its copy of the base run, inside its workspace
OUT = "out"  # where `train` cases point out=..., inside their workspace: it must not appear


@dataclass(frozen=True)
class BadInputCase:
    """One bad input: the command line it builds, and the message it must get.

    name:      unique id (test ids, benchmark rows)
    category:  the kind of mistake (option, value, combination, environment, config file, run directory,
               checkpoint, policy, data)
    argv:      builds the `ctde` arguments from the case's workspace folder
    expect:    regex that stderr must match (re.search, DOTALL)
    needs_run: the workspace holds a copy of the finished base run at workspace/"run" before `prepare` runs
    prepare:   set-up or damage done before the command (corrupt a checkpoint, write a bad YAML file)
    creates:   glob patterns (relative to the workspace) of files or folders the command may create, each one
               explained beside its case; by default none: a refused command writes nothing
    """

    name: str
    category: str
    argv: Callable[[Path], list[str]]
    expect: str
    needs_run: bool = False
    prepare: Callable[[Path], None] | None = None
    creates: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------------------
# Building blocks for the cases


def _train(*options: str) -> Callable[[Path], list[str]]:
    """`ctde train` with the case's options after the safe defaults and out= inside the workspace (so a case
    may set its own out=)."""
    return lambda ws: ["train", *SAFE_TRAIN, f"out={ws / OUT}", *options]


def _run_command(command: str, *extra: str, path: str = RUN) -> Callable[[Path], list[str]]:
    """`ctde <command> <workspace/path> extra...` (eval, export, audit, report, train --resume)."""
    return lambda ws: [*command.split(), str(ws / path), *extra]


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def prepare(ws: Path) -> None:
        path = ws / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return prepare


def _checkpoint_files(ws: Path) -> list[Path]:
    files = sorted(p for p in (ws / RUN / "checkpoints").rglob("*") if p.is_file())
    assert files, f"no checkpoint files under {ws / RUN}"  # the base run must have written one
    return files


def _truncate_checkpoints(ws: Path) -> None:
    """Every checkpoint file cut to half its length: what a full disk or a copy interrupted midway leaves."""
    for path in _checkpoint_files(ws):
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


# Deterministic "random" bytes: a case must damage the same way every time it runs.
_GARBAGE = bytes((i * 131 + 7) % 256 for i in range(997))


def _garbage_checkpoints(ws: Path) -> None:
    """Every checkpoint file overwritten with garbage of its own length (bit rot, a wrong file copied in)."""
    for path in _checkpoint_files(ws):
        size = max(path.stat().st_size, 1)
        path.write_bytes((_GARBAGE * (size // len(_GARBAGE) + 1))[:size])


def _garbage_agent_params(ws: Path) -> None:
    """Only the agent parameters of every checkpoint damaged (what `eval` and `export` read)."""
    for path in sorted((ws / RUN / "checkpoints").glob("*/agent_params/**/*")):
        if path.is_file():
            path.write_bytes(_GARBAGE)


def _older_checkpoint_format(ws: Path) -> None:
    """Every checkpoint's metadata (orbax's JSON item, checkpoints/<step>/meta/metadata) marked format 0: a
    checkpoint written by a ctde from before checkpoints recorded their format."""
    metas = sorted((ws / RUN / "checkpoints").glob("*/meta/metadata"))
    assert metas, f"no checkpoint metadata under {ws / RUN}"
    for path in metas:
        meta = json.loads(path.read_text())
        meta["format"] = 0
        meta.pop("ctde_version", None)
        path.write_text(json.dumps(meta))


def _policy_file(name: str, content: bytes | str) -> Callable[[Path], None]:
    return _write(f"{RUN}/policy/{name}", content)


def _older_policy_format(ws: Path) -> None:
    path = ws / RUN / "policy" / "policy.json"
    spec = json.loads(path.read_text())
    spec["format"] = 0
    path.write_text(json.dumps(spec, indent=2))


# Policies that do not fit their policy.json (issue 36): each starts from a real exported policy, the base run's
# (ctde, vdn on toy:hallway: rnn_agent, one seed) or one of `_OTHER_EXPORTS`, and edits its policy.json or
# swaps in other parameters.
_OTHER_EXPORTS = {
    "cadp": ("paradigm=cadp", "algo=vdn", "env=toy:hallway"),  # cadp_decentralized: has `residual`
    "per_agent": ("paradigm=ctde", "algo=vdn", "algo.share_parameters=false", "env=toy:hallway"),
    "matrix": ("paradigm=ctde", "algo=vdn", "env=toy:matrix"),  # rnn_agent of another environment
}


@functools.lru_cache(maxsize=None)
def _other_export(which: str):
    """The policy a run of `_OTHER_EXPORTS[which]` (one seed) exports, through the run's own export path
    (`ctde.training.runner.export`), built once per process. Its parameters have the tree and shapes the
    paradigm's `init` gives (`jax.eval_shape`) and all values 0: these cases are refused at loading, before any
    value is read, and running `init` itself would cost seconds."""
    program = build_program(resolve(build_config([*_OTHER_EXPORTS[which], "seeds=1"])))
    shapes = jax.eval_shape(jax.vmap(program.paradigm.init), seed_keys(program.config))
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    with tempfile.TemporaryDirectory() as run_dir:
        return export(run_dir, program=program, agent_params=params)


def _policy_dir(ws: Path, which: str) -> Path:
    """The exported policy `which` ("run": the base run's; else `_other_export`) in the workspace."""
    if which == "run":
        return ws / RUN / "policy"
    return _other_export(which).save(ws / f"{which}_policy")


def _edit_policy(which: str = "run", **fields) -> Callable[[Path], None]:
    """Edit policy.json of an exported policy: each field set to a value, or to `f(spec)` for a callable; the
    parameters stay those that were exported."""
    def prepare(ws: Path) -> None:
        path = _policy_dir(ws, which) / "policy.json"
        spec = json.loads(path.read_text())
        spec.update({key: value(spec) if callable(value) else value for key, value in fields.items()})
        path.write_text(json.dumps(spec, indent=2))

    return prepare


def _foreign_params(which: str) -> Callable[[Path], None]:
    """The base run's policy.json with the parameters exported by `_other_export(which)`."""
    def prepare(ws: Path) -> None:
        other = _policy_dir(ws, which)
        shutil.copyfile(other / "params.msgpack", ws / RUN / "policy" / "params.msgpack")
        shutil.rmtree(other)

    return prepare


def _fewer_agents(ws: Path) -> None:
    """A per-agent policy (one network per agent) whose parameters keep only the first n - 1 agents' networks."""
    import flax.serialization

    path = _policy_dir(ws, "per_agent") / "params.msgpack"
    params = flax.serialization.msgpack_restore(path.read_bytes())
    sliced = _map_leaves(lambda leaf: leaf[:, :-1], params)  # [seeds, n, ...] -> [seeds, n - 1, ...]
    path.write_bytes(flax.serialization.msgpack_serialize(sliced))


def _map_leaves(f, tree):
    return {k: _map_leaves(f, v) for k, v in tree.items()} if isinstance(tree, dict) else f(tree)


def _audit_policy(which: str = "run") -> Callable[[Path], list[str]]:
    return _run_command("audit", path=f"{RUN}/policy" if which == "run" else f"{which}_policy")


# The error every mismatch gets: the field, policy.json's value, what the parameters say, and the fix.
def _mismatch(detail: str) -> str:
    return r"does not match its policy\.json: " + detail + r".*Re-export the policy from its run: `ctde export RUN`"


def _ltr_file(ws: Path) -> None:
    """A small SVMlight file whose third line is garbage (a header pasted in, a wrong file concatenated)."""
    (ws / "ranking.txt").write_text("2 qid:1 1:0.5 2:0.1\n"
                                    "0 qid:1 1:0.2 2:0.9\n"
                                    "garbage line without a label\n"
                                    "1 qid:2 1:0.3 2:0.4\n")


def _yaml(name: str) -> Callable[[Path], list[str]]:
    return lambda ws: ["train", "--config", str(ws / name), *SAFE_TRAIN, f"out={ws / OUT}"]


# ---------------------------------------------------------------------------------------------------------
# The catalogue


CASES: list[BadInputCase] = [
    # --- options: names and types ------------------------------------------------------------------------
    BadInputCase("unknown_key", "option", _train("algo.lrr=1e-3"),
                 r"Unknown option 'algo\.lrr'.*Did you mean 'algo\.lr'"),
    BadInputCase("unknown_section", "option", _train("optim.lr=1e-3"), r"Unknown option 'optim\.lr'"),
    BadInputCase("unknown_top_level_key", "option", _train("stepz=1000"),
                 r"Unknown option 'stepz'\. Did you mean 'steps'\? Run"),
    BadInputCase("invalid_choice", "option", _train("algo=qmx"),
                 r"algo\.name='qmx' is not a valid choice.*Did you mean 'qmix'"),
    BadInputCase("bad_type_int", "option", _train("steps=abc"), r"steps='abc': expected an integer"),
    BadInputCase("fractional_int", "option", _train("seeds=1.5"), r"seeds='1\.5': expected an integer, got a fraction"),
    BadInputCase("bad_type_bool", "option", _train("log.progress=maybe"),
                 r"log\.progress='maybe': expected true or false"),
    BadInputCase("bad_type_float", "option", _train("algo.lr=fast"), r"algo\.lr='fast': expected a number"),
    BadInputCase("not_key_value", "option", _train("steps"), r"Expected key=value, got 'steps'"),
    BadInputCase("option_as_section", "option", _train("steps.max=10"), r"'steps' is an option, not a section"),
    BadInputCase("section_without_main_field", "option", _train("log=quiet"), r"'log' is a section"),
    BadInputCase("unknown_flag", "option", _train("--seeds", "3"), r"unrecognized arguments: --seeds"),
    BadInputCase("no_command", "option", lambda ws: [], r"the following arguments are required: command"),
    BadInputCase("unknown_command", "option", lambda ws: ["trian", "env=smax:3m"], r"invalid choice: 'trian'"),
    # --- option values -----------------------------------------------------------------------------------
    BadInputCase("gamma_out_of_range", "value", _train("algo.gamma=1.5"), r"algo\.gamma must be in \(0, 1\]"),
    BadInputCase("steps_zero", "value", _train("steps=0"), r"steps must be positive"),
    BadInputCase("steps_negative", "value", _train("steps=-5"), r"steps must be positive"),
    BadInputCase("steps_too_large", "value", _train("steps=3e9"), r"steps=3,000,000,000.*at most"),
    BadInputCase("steps_not_finite", "value", _train("steps=inf"),
                 r"steps='inf': expected an integer, got a value that is not finite"),
    BadInputCase("eval_interval_zero", "value", _train("eval.interval=0"), r"eval\.interval must be at least 1"),
    BadInputCase("seeds_zero", "value", _train("seeds=0"), r"seeds must be at least 1"),
    BadInputCase("num_envs_zero", "value", _train("rollout.num_envs=0"), r"rollout\.num_envs must be at least 1"),
    BadInputCase("eval_episodes_zero", "value", _train("eval.episodes=0"), r"eval\.episodes must be at least 1"),
    BadInputCase("lr_negative", "value", _train("algo.lr=-1e-3"), r"algo\.lr must be positive"),
    BadInputCase("batch_larger_than_buffer", "value", _train("algo.batch_size=64", "algo.buffer_size=32"),
                 r"algo\.batch_size cannot exceed algo\.buffer_size"),
    BadInputCase("rollout_cuts_episodes", "value", _train("rollout.length=3"),
                 r"rollout\.length=3 is shorter than the episode limit"),
    # --- paradigm x environment x backbone -------------------------------------------------------------------
    # Every environment ctde has provides a global state (SMAX, MPE, the toys, LTR's concatenated documents), so
    # ptde's and ctedd's need for one (their `needs_state`) cannot be violated from the command line; the check
    # exists for environments added later (resolve.check_pairing).
    BadInputCase("igm_da_without_full_obs", "combination", _train("env=toy:two_step", "paradigm=igm_da"),
                 r"paradigm=igm_da needs the privileged view.*full_obs.*toy:two_step does not offer"),
    BadInputCase("ctds_without_full_obs", "combination", _train("env=mpe:simple_spread", "paradigm=ctds"),
                 r"paradigm=ctds needs the privileged view.*full_obs.*mpe:simple_spread does not offer"),
    BadInputCase("igm_da_on_ltr", "combination", lambda ws: _train(f"env=ltr:{ws / 'ranking.txt'}",
                                                                    "paradigm=igm_da")(ws),
                 r"paradigm=igm_da needs the privileged view.*full_obs", prepare=_write(
                     "ranking.txt", "2 qid:1 1:0.5\n0 qid:1 1:0.2\n1 qid:2 1:0.3\n0 qid:2 1:0.1\n")),
    BadInputCase("cadp_on_maddpg", "combination", _train("algo=maddpg", "paradigm=cadp"),
                 r"paradigm=cadp is not available on algo=maddpg"),
    BadInputCase("ptde_on_maddpg", "combination", _train("algo=maddpg", "paradigm=ptde"),
                 r"paradigm=ptde is not available on algo=maddpg"),
    BadInputCase("igm_da_on_maddpg", "combination", _train("algo=maddpg", "paradigm=igm_da"),
                 r"paradigm=igm_da trains its expert by TD through a mixer, which algo=maddpg does not have"),
    BadInputCase("ctds_on_maddpg", "combination", _train("algo=maddpg", "paradigm=ctds"),
                 r"paradigm=ctds trains its teacher by TD through a mixer, which algo=maddpg does not have"),
    BadInputCase("ctedd_on_qmix", "combination", _train("algo=qmix", "paradigm=ctedd"),
                 r"paradigm=ctedd .*centralized critic, which algo=qmix does not have\. Use algo=maddpg"),
    BadInputCase("ctedd_on_mappo", "combination", _train("algo=mappo", "paradigm=ctedd"),
                 r"paradigm=ctedd .*centralized critic, which algo=mappo does not have\. Use algo=maddpg"),
    BadInputCase("igm_da_on_mappo", "combination", _train("algo=mappo", "paradigm=igm_da"),
                 r"paradigm=igm_da trains its expert by TD through a mixer, which algo=mappo does not have"),
    BadInputCase("ctds_on_ippo", "combination", _train("algo=ippo", "paradigm=ctds"),
                 r"paradigm=ctds trains its teacher by TD through a mixer, which algo=ippo does not have"),
    BadInputCase("igm_da_on_iql", "combination", _train("algo=iql", "paradigm=igm_da"),
                 r"paradigm=igm_da imitates an expert .*algo=iql has no mixer"),
    BadInputCase("igm_da_on_qtran", "combination", _train("algo=qtran", "paradigm=igm_da"),
                 r"paradigm=igm_da .*algo=qtran's joint value is not IGM by construction"),
    BadInputCase("igm_da_on_cw_qmix", "combination", _train("algo=cw_qmix", "paradigm=igm_da"),
                 r"paradigm=igm_da .*algo=cw_qmix's joint value is not IGM by construction"),
    BadInputCase("ptde_on_dmix", "combination", _train("algo=dmix", "paradigm=ptde"),
                 r"paradigm=ptde's Q head .*algo=dmix learns a quantile distribution per action"),
    BadInputCase("wqmix_option_on_qmix", "combination", _train("algo=qmix", "algo.wqmix_alpha=0.5"),
                 r"algo\.wqmix_alpha is read only by algo=cw_qmix and algo=ow_qmix"),
    BadInputCase("quantiles_on_qtran", "combination", _train("algo=qtran", "algo.quantiles=16"),
                 r"algo\.quantiles is read only by algo=dmix"),
    BadInputCase("mappo_without_auto_reset", "combination", _train("algo=mappo", "rollout.auto_reset=false"),
                 r"algo=mappo keeps its environments running across rollouts"),
    BadInputCase("mappo_segments_do_not_tile", "combination", _train("algo=mappo", "ppo.segment_length=7"),
                 r"rollout\.length=400 must be a multiple of ppo\.segment_length=7"),
    BadInputCase("ctedd_without_message_bits", "combination",
                 _train("algo=maddpg", "paradigm=ctedd", "ctedd.message_bits=0"),
                 r"ctedd\.message_bits must be between 1 and 16"),
    BadInputCase("continuous_actions_on_qmix", "combination",
                 _train("env=mpe:push_forward", "env.continuous_actions=true", "algo=qmix"),
                 r"continuous actions .*algo=qmix chooses among discrete ones\. Use algo=maddpg"),
    BadInputCase("continuous_toy_on_vdn", "combination", _train("env=toy:target_sum", "algo=vdn"),
                 r"toy:target_sum has continuous actions .*algo=vdn chooses among discrete ones"),
    BadInputCase("continuous_actions_on_smax", "combination", _train("env=smax:3m", "env.continuous_actions=true"),
                 r"env\.continuous_actions=true .*mpe:\* scenarios only"),
    BadInputCase("other_paradigms_option", "combination", _train("paradigm=ctde", "cadp.alpha=1.0"),
                 r"cadp\.alpha configures paradigm=cadp, but paradigm=ctde"),
    BadInputCase("option_the_backbone_ignores", "combination", _train("algo=vdn", "ppo.epochs=3"),
                 r"ppo\.epochs only affect algo=mappo or algo=ippo"),
    BadInputCase("unshared_parameters_with_cadp", "combination",
                 _train("paradigm=cadp", "algo.share_parameters=false"),
                 r"algo\.share_parameters=false is available with paradigm=ctde"),
    # --- environments --------------------------------------------------------------------------------------
    BadInputCase("smax_MMM2", "environment", _train("env=smax:MMM2"), r"SMAX cannot express map 'MMM2'.*medivacs"),
    BadInputCase("smax_corridor", "environment", _train("env=smax:corridor"),
                 r"SMAX cannot express map 'corridor'.*terrain"),
    BadInputCase("smax_unknown_map", "environment", _train("env=smax:3mm"), r"Unknown SMAX map '3mm'.*Did you mean"),
    BadInputCase("unknown_env_family", "environment", _train("env=smaxx:3m"),
                 r"Unknown environment family 'smaxx'\. Did you mean 'smax'"),
    BadInputCase("env_without_family", "environment", _train("env=3m"), r"env='3m': expected family:name"),
    BadInputCase("unknown_toy_env", "environment", _train("env=toy:hallwya"),
                 r"Unknown toy environment 'hallwya'\. Did you mean 'hallway'"),
    BadInputCase("unknown_mpe_scenario", "environment", _train("env=mpe:simple_tagg"),
                 r"Unknown MPE scenario 'simple_tagg'\. Did you mean 'simple_tag'"),
    BadInputCase("sight_range_on_mpe", "environment", _train("env=mpe:simple_tag", "env.sight_range=2"),
                 r"env\.sight_range does not apply to mpe:simple_tag"),
    BadInputCase("negative_sight_range", "environment", _train("env=smax:3m", "env.sight_range=-1"),
                 r"env\.sight_range=-1\.0: a sight range cannot be negative"),
    BadInputCase("toy_size_too_small", "environment", _train("env=toy:hallway", "env.toy_size=1"),
                 r"toy:hallway needs env\.toy_size >= 2"),
    BadInputCase("toy_size_elsewhere", "environment", _train("env=smax:3m", "env.toy_size=3"),
                 r"env\.toy_size sizes toy:hallway and toy:retreat; smax:3m has no size parameter"),
    BadInputCase("episode_limit_zero", "environment", _train("env=smax:3m", "env.episode_limit=0"),
                 r"env\.episode_limit=0 must be at least 1"),
    BadInputCase("episode_limit_on_toy", "environment", _train("env=toy:hallway", "env.episode_limit=50"),
                 r"env\.episode_limit does not apply to toy:hallway"),
    # Host-side environments (ctde.envs.host): the checks that run without their packages.
    BadInputCase("grf_unknown_scenario", "environment", _train("env=grf:academy_3_vs_2"),
                 r"Unknown GRF scenario 'academy_3_vs_2'.*academy_3_vs_1_with_keeper"),
    *([BadInputCase("smac_not_installed", "environment", _train("env=smac:3m"),
                    r"needs the `smac` package.*pip install git\+https://github\.com/oxwhirl/smac\.git")]
      if not importable("smac.env") else []),
    BadInputCase("hostenv_missing_module", "environment", _train("env=hostenv:no_such_module:Env"),
                 r"module 'no_such_module' cannot be imported"),
    BadInputCase("rollout_length_on_host_env", "combination",
                 _train("env=hostenv:ctde.envs.host.testenv:TinyBattle", "algo=maddpg", "rollout.length=20"),
                 r"rollout\.auto_reset and rollout\.length do not apply to host-side environments"),
    BadInputCase("host_processes_on_jax_env", "combination", _train("rollout.host_processes=true"),
                 r"rollout\.host_processes places host-side environments .*toy:hallway runs inside JAX"),
    BadInputCase("sight_range_on_host_env", "environment",
                 _train("env=hostenv:ctde.envs.host.testenv:TinyBattle", "env.sight_range=3"),
                 r"env\.sight_range is not available on hostenv:"),
    # --- data files ------------------------------------------------------------------------------------------
    BadInputCase("ltr_malformed_file", "data", lambda ws: _train(f"env=ltr:{ws / 'ranking.txt'}", "algo=vdn")(ws),
                 r"ranking\.txt:3: bad label 'garbage'", prepare=_ltr_file),
    BadInputCase("ltr_missing_path", "data", lambda ws: _train(f"env=ltr:{ws / 'no_such_data'}")(ws),
                 r"env=ltr:.*no_such_data: no such file or folder"),
    BadInputCase("ltr_empty_file", "data", lambda ws: _train(f"env=ltr:{ws / 'empty.txt'}")(ws),
                 r"empty\.txt: no documents", prepare=_write("empty.txt", "# exported by a script that failed\n\n")),
    BadInputCase("ltr_options_elsewhere", "data", _train("env=toy:hallway", "ltr.k=5"),
                 r"ltr\.k configures Learning-to-Rank environments, but env=toy:hallway"),
    # --- config files ----------------------------------------------------------------------------------------
    BadInputCase("yaml_does_not_parse", "config file", _yaml("bad.yaml"), r"bad\.yaml is not valid YAML",
                 prepare=_write("bad.yaml", "algo:\n  name: qmix\n   lr: [0.1\n")),
    BadInputCase("yaml_unknown_key", "config file", _yaml("typo.yaml"),
                 r"typo\.yaml.*Unknown option 'algo\.lrr'.*Did you mean 'algo\.lr'",
                 prepare=_write("typo.yaml", "algo:\n  name: vdn\n  lrr: 0.001\n")),
    BadInputCase("yaml_bad_type", "config file", _yaml("type.yaml"), r"type\.yaml: steps='lots': expected an integer",
                 prepare=_write("type.yaml", "steps: lots\n")),
    # Checked once the whole configuration is known (resolve), where the file is no longer told apart from the
    # command line: the message names the option, not the file.
    BadInputCase("yaml_value_out_of_range", "config file", _yaml("value.yaml"), r"algo\.gamma must be in \(0, 1\]",
                 prepare=_write("value.yaml", "algo:\n  gamma: 2\n")),
    BadInputCase("yaml_missing", "config file", _yaml("missing.yaml"), r"missing\.yaml does not exist"),
    BadInputCase("yaml_not_a_mapping", "config file", _yaml("list.yaml"), r"list\.yaml must hold a mapping",
                 prepare=_write("list.yaml", "- algo=qmix\n- steps=1000\n")),
    BadInputCase("yaml_is_a_folder", "config file", lambda ws: ["train", "--config", str(ws), *SAFE_TRAIN,
                                                                 f"out={ws / OUT}"],
                 r"is a folder, not a YAML file"),
    BadInputCase("yaml_binary", "config file", _yaml("binary.yaml"), r"binary\.yaml is not a text file",
                 prepare=_write("binary.yaml", b"\xff\xfe\x00\x81" + _GARBAGE)),
    # --- run directories -------------------------------------------------------------------------------------
    BadInputCase("resume_missing_dir", "run directory", _run_command("train --resume", path="no_such_run"),
                 r"no_such_run is not a ctde run directory"),
    BadInputCase("resume_changed_option", "run directory", _run_command("train --resume", "algo.lr=0.1"),
                 r"Cannot change \['algo\.lr'\] when resuming", needs_run=True),
    BadInputCase("resume_with_config_file", "run directory",
                 lambda ws: ["train", "--resume", str(ws / RUN), "--config", str(ws / "extra.yaml")],
                 r"--config .*--resume", needs_run=True, prepare=_write("extra.yaml", "steps: 2000\n")),
    BadInputCase("resume_with_overwrite", "run directory", _run_command("train --resume", "--overwrite"),
                 r"--overwrite .*--resume", needs_run=True),
    BadInputCase("resume_config_not_yaml", "run directory", _run_command("train --resume"),
                 r"config\.yaml is not valid YAML", needs_run=True,
                 prepare=_write(f"{RUN}/config.yaml", "env: {id: toy:hallway\nalgo: [\n")),
    # The saved configuration of a run written by a newer ctde (an option this version lacks). The message names
    # the option; it does not name the run's config.yaml (runner.load_run_config reads it without saying so).
    BadInputCase("resume_config_from_newer_version", "run directory", _run_command("train --resume"),
                 r"Unknown option 'algo\.future_option'", needs_run=True,
                 prepare=lambda ws: (ws / RUN / "config.yaml").write_text(
                     (ws / RUN / "config.yaml").read_text().replace("algo:\n", "algo:\n  future_option: 1\n", 1))),
    # The runner opens the run's checkpoint manager, which creates the (empty) checkpoints/ folder, before it finds
    # no checkpoint there: a new empty folder, nothing lost.
    BadInputCase("resume_without_checkpoints", "run directory", _run_command("train --resume"),
                 r"has no checkpoints/ to resume from.*without --resume", needs_run=True,
                 prepare=lambda ws: shutil.rmtree(ws / RUN / "checkpoints")),
    BadInputCase("out_is_existing_run", "run directory",
                 lambda ws: ["train", *BASE_RUN_OPTIONS, f"out={ws / RUN}"],
                 r"Run directory .*run already exists\. Continue it with `ctde train --resume", needs_run=True),
    BadInputCase("out_is_a_file", "run directory", lambda ws: _train(f"out={ws / 'notes.txt'}")(ws),
                 r"out=.*notes\.txt is a file", prepare=_write("notes.txt", "my notes\n")),
    BadInputCase("out_under_a_file", "run directory", lambda ws: _train(f"out={ws / 'notes.txt' / 'run'}")(ws),
                 r"out=.*notes\.txt.*is a file", prepare=_write("notes.txt", "my notes\n")),
    BadInputCase("eval_missing_dir", "run directory", _run_command("eval", path="no_such_run"),
                 r"no_such_run is not a ctde run directory"),
    BadInputCase("eval_of_a_policy_dir", "run directory", _run_command("eval", path=f"{RUN}/policy"),
                 r"policy is not a ctde run directory", needs_run=True),
    BadInputCase("eval_unknown_model", "run directory", _run_command("eval", "--model", "teacher"),
                 r"--model 'teacher' is not a model of paradigm ctde; choose from agent", needs_run=True),
    BadInputCase("eval_episodes_not_positive", "run directory", _run_command("eval", "--episodes", "-3"),
                 r"--episodes must be at least 1", needs_run=True),
    BadInputCase("eval_episodes_not_an_int", "run directory", _run_command("eval", "--episodes", "many"),
                 r"argument --episodes: invalid int value: 'many'", needs_run=True),
    BadInputCase("export_missing_dir", "run directory", _run_command("export", path="no_such_run"),
                 r"no_such_run is not a ctde run directory"),
    BadInputCase("report_missing_dir", "run directory", _run_command("report", path="no_such_run"),
                 r"no_such_run is not a ctde run directory"),
    # --- checkpoints -----------------------------------------------------------------------------------------
    BadInputCase("resume_truncated_checkpoints", "checkpoint", _run_command("train --resume"),
                 DAMAGED, needs_run=True, prepare=_truncate_checkpoints),
    BadInputCase("resume_garbage_checkpoints", "checkpoint", _run_command("train --resume"),
                 DAMAGED, needs_run=True, prepare=_garbage_checkpoints),
    BadInputCase("resume_older_checkpoint_format", "checkpoint", _run_command("train --resume"),
                 r"older|format", needs_run=True, prepare=_older_checkpoint_format),
    BadInputCase("eval_corrupted_checkpoints", "checkpoint", _run_command("eval"),
                 r"No checkpoint in .* could be restored", needs_run=True, prepare=_garbage_agent_params),
    BadInputCase("eval_truncated_checkpoints", "checkpoint", _run_command("eval"),
                 DAMAGED, needs_run=True, prepare=_truncate_checkpoints),
    BadInputCase("export_corrupted_checkpoints", "checkpoint", _run_command("export"),
                 r"No checkpoint in .* could be restored", needs_run=True, prepare=_garbage_agent_params),
    # --- exported policies ----------------------------------------------------------------------------------
    BadInputCase("audit_missing_policy", "policy", _run_command("audit", path="no_such_policy"),
                 r"No exported policy at .*no_such_policy"),
    BadInputCase("audit_run_without_policy", "policy", _run_command("audit"), r"No exported policy at .*run",
                 needs_run=True, prepare=lambda ws: shutil.rmtree(ws / RUN / "policy")),
    BadInputCase("audit_garbage_params", "policy", _run_command("audit", path=f"{RUN}/policy"),
                 r"The policy at .* is unreadable", needs_run=True, prepare=_policy_file("params.msgpack", _GARBAGE)),
    BadInputCase("audit_policy_json_not_json", "policy", _run_command("audit", path=f"{RUN}/policy"),
                 r"The policy at .* is unreadable", needs_run=True,
                 prepare=_policy_file("policy.json", "{\"network\": \"rnn\", \"n_agents\": 2,\n")),
    BadInputCase("audit_older_policy_format", "policy", _run_command("audit", path=f"{RUN}/policy"),
                 r"has format 0, this ctde reads", needs_run=True, prepare=_older_policy_format),
    BadInputCase("audit_trials_not_positive", "policy", _run_command("audit", "--trials", "0", path=f"{RUN}/policy"),
                 r"--trials must be at least 1", needs_run=True),
    # --- exported policies that do not fit their policy.json (refused before anything runs) -----------------
    BadInputCase("audit_policy_obs_dim_edited", "policy", _audit_policy(),
                 _mismatch(r"obs_dim: policy\.json says \d+, the parameters were made for \d+"), needs_run=True,
                 prepare=_edit_policy(obs_dim=lambda spec: spec["obs_dim"] + 3)),
    BadInputCase("audit_policy_n_agents_edited", "policy", _audit_policy(),
                 _mismatch(r"n_agents: policy\.json says 3, the parameters were made for 2"), needs_run=True,
                 prepare=_edit_policy(n_agents=3)),
    BadInputCase("audit_policy_hidden_dim_edited", "policy", _audit_policy(),
                 _mismatch(r"hidden_dim: policy\.json says 7, the parameters were made for \d+"), needs_run=True,
                 prepare=_edit_policy(hidden_dim=7)),
    BadInputCase("audit_policy_quantiles_edited", "policy", _audit_policy(),
                 _mismatch(r"quantiles: policy\.json says 5, the parameters were made for 0"), needs_run=True,
                 prepare=_edit_policy(quantiles=5)),
    BadInputCase("audit_policy_residual_edited", "policy", _audit_policy("cadp"),
                 _mismatch(r"residual: policy\.json says true, the parameters were made for false"),
                 prepare=_edit_policy("cadp", residual=True)),
    BadInputCase("audit_policy_other_network_params", "policy", _audit_policy(),
                 _mismatch(r"network: policy\.json says rnn_agent, whose parameters these are not .*another network"),
                 needs_run=True, prepare=_foreign_params("cadp")),
    BadInputCase("audit_policy_other_env_params", "policy", _audit_policy(),
                 _mismatch(r"parameter params/fc1/kernel has shape \(\d+, \d+\) per seed where policy\.json \(rnn_agent, "
                           r"obs_dim \d+, n_agents 2, n_actions 4\) expects .*another environment or network"),
                 needs_run=True, prepare=_foreign_params("matrix")),
    BadInputCase("audit_policy_seeds_edited", "policy", _audit_policy(),
                 _mismatch(r"seeds: policy\.json says 2, the parameters hold 1 seed"), needs_run=True,
                 prepare=_edit_policy(seeds=2)),
    BadInputCase("audit_policy_continuous_on_discrete", "policy", _audit_policy(),
                 _mismatch(r"continuous_actions: policy\.json says true, but toy:hallway's actions are discrete"),
                 needs_run=True, prepare=_edit_policy(continuous_actions=True)),
    BadInputCase("audit_policy_fewer_agent_networks", "policy", _audit_policy("per_agent"),
                 _mismatch(r"n_agents: policy\.json says 2, the parameters were made for 1"), prepare=_fewer_agents),
]

assert len({case.name for case in CASES}) == len(CASES), "case names must be unique"


# ---------------------------------------------------------------------------------------------------------
# Running cases


def make_base_run(directory: Path) -> Path:
    """Train the tiny base run (`BASE_RUN_OPTIONS`) into directory/"base" and return its path."""
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "base"
    train([*BASE_RUN_OPTIONS, f"out={out}"], overwrite=True, quiet=True)
    return out


_DIRECTORY = "<dir>"  # a snapshot's value for a folder: folders must survive too, and new ones are noticed


def snapshot(root: Path) -> dict[str, str]:
    """Every file (relative path -> sha256) and folder (-> "<dir>") under `root`."""
    entries = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_dir() and not path.is_symlink():
            entries[key] = _DIRECTORY
        elif path.is_file():
            entries[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def error_message(stderr: str) -> str:
    """The error paragraph of stderr: from the first `error:` line (ours, or argparse's `ctde train: error:`)
    to the next blank line, on one line; else stderr's first lines. Warnings printed before it are skipped."""
    lines = [line.rstrip() for line in stderr.strip().splitlines()]
    start = next((i for i, line in enumerate(lines) if re.match(r"^(\S+( \S+)?: )?error:", line)), 0)
    paragraph = []
    for line in lines[start:]:
        if not line.strip():
            break
        paragraph.append(line.strip())
    text = " ".join(paragraph)
    return text if len(text) <= 600 else text[:597] + "..."


@contextlib.contextmanager
def _in_workspace(workspace: Path) -> Iterator[None]:
    """Run with the workspace as the current folder (so a relative path a command writes is seen by the
    snapshot) and without `ctde.cli` re-pointing the caller's JAX compilation cache."""
    previous_dir, previous_cache = os.getcwd(), os.environ.get("CTDE_COMPILE_CACHE")
    os.chdir(workspace)
    os.environ["CTDE_COMPILE_CACHE"] = "off"
    try:
        yield
    finally:
        os.chdir(previous_dir)
        if previous_cache is None:
            os.environ.pop("CTDE_COMPILE_CACHE", None)
        else:
            os.environ["CTDE_COMPILE_CACHE"] = previous_cache


def call_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run `ctde argv...` in this process: (exit status, stdout, stderr), as a real process would give them.

    argparse's errors exit through SystemExit (its code is the status); an exception that escapes `main` is
    what a real process would print as a traceback with status 1, so it is formatted into stderr likewise."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(list(argv))
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if e.code is not None and not isinstance(e.code, int):
                print(e.code, file=err)
        except Exception:  # noqa: BLE001 - a bug the catalogue exists to find: report it, don't crash
            traceback.print_exc(file=err)
            status = 1
    return (0 if status is None else int(status)), out.getvalue(), err.getvalue()


def run_case(case: BadInputCase, workspace: Path, base_run: Path | None) -> dict:
    """Run one case in `workspace` (created; a copy of `base_run` goes to workspace/"run" if the case needs a
    run) and report how the command failed.

    Returns {"case", "category", "exit_status", "message", "matched", "traceback", "files_intact",
    "files_checked", "seconds"}: `message` is the error paragraph of stderr, `matched` whether stderr matches
    the case's regex, `files_intact` whether every file and folder present before the command is unchanged and
    nothing new appeared (beyond the case's `creates`), `files_checked` how many files were compared."""
    workspace = Path(workspace).absolute()
    workspace.mkdir(parents=True, exist_ok=True)
    if case.needs_run:
        if base_run is None:
            raise ValueError(f"case {case.name} needs a finished run: pass base_run (see make_base_run)")
        shutil.copytree(base_run, workspace / RUN)
    if case.prepare is not None:
        case.prepare(workspace)
    before = snapshot(workspace)
    argv = case.argv(workspace)

    tic = time.perf_counter()
    with _in_workspace(workspace):
        status, _, stderr = call_cli(argv)
    seconds = time.perf_counter() - tic

    after = snapshot(workspace)
    allowed = {key for key in after if any(Path(key).match(pattern) for pattern in case.creates)}
    kept = all(after.get(key) == value for key, value in before.items())
    created = sorted(set(after) - set(before) - allowed)
    return {
        "case": case.name,
        "category": case.category,
        "exit_status": status,
        "message": error_message(stderr),
        "matched": re.search(case.expect, stderr, re.DOTALL) is not None,
        "traceback": "Traceback (most recent call last)" in stderr,
        "files_intact": kept and not created,
        "files_checked": sum(1 for value in before.values() if value != _DIRECTORY),
        "seconds": round(seconds, 3),
        # Why files_intact is False, if it is (empty lists otherwise): for a reader of the benchmark's rows.
        "files_changed": sorted(key for key, value in before.items() if after.get(key) != value),
        "files_created": created,
    }


def run_catalogue(workdir: Path, cases: list[BadInputCase] | None = None) -> list[dict]:
    """Run every case (default: `CASES`) in its own folder workdir/cases/<name>, after training the base run
    into workdir/base if any case needs one. Returns one `run_case` dict per case, in catalogue order."""
    workdir = Path(workdir).absolute()
    cases = CASES if cases is None else cases
    base_run = make_base_run(workdir) if any(case.needs_run for case in cases) else None
    results = []
    for case in cases:
        workspace = workdir / "cases" / case.name
        if workspace.exists():
            shutil.rmtree(workspace)
        results.append(run_case(case, workspace, base_run))
    return results
