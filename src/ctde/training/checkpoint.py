"""Checkpoints with orbax: the whole run state (replay included, so a resumed run reproduces the
uninterrupted one), the agent parameters on their own (cheap to restore for evaluation), and host metadata.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed while
saving leaves the previous checkpoint intact. The most recent `keep` checkpoints are kept; if the newest is
unreadable, restoring falls back to the one before and says so.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from ctde.errors import CheckpointError

log = logging.getLogger(__name__)


def _quiet_orbax() -> None:
    for name in ("absl", "orbax", "orbax.checkpoint"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="orbax")


class Checkpoints:
    def __init__(self, directory: str | Path, keep: int = 2, read_only: bool = False):
        _quiet_orbax()
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max(keep, 1), create=not read_only,
                                               read_only=read_only, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "agent_params", "meta"))

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: Any, agent_params: Any, meta: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), agent_params=ocp.args.StandardSave(agent_params),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()

    def _restore(self, step: int, abstract: Any, item: str) -> tuple[Any, dict]:
        restored = self.manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}))
        return restored[item], restored["meta"]

    def restore(self, abstract: Any, item: str = "state") -> tuple[Any, dict, int]:
        """Restore `item` ("state" or "agent_params") shaped like `abstract` from the newest readable
        checkpoint. Returns (value, meta, step)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"No checkpoint in {self.directory}. The run may have stopped before its first "
                                  f"checkpoint; start it again without --resume.")
        errors = []
        for step in reversed(steps):
            try:
                value, meta = self._restore(step, abstract, item)
            except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable or mismatched data
                errors.append(f"checkpoint {step}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                continue
            if errors:
                log.warning("Newest checkpoint unreadable, restored checkpoint %d instead (%s)", step, errors[0])
            return value, meta, step
        raise CheckpointError(
            "No checkpoint in {} could be restored:\n  {}\nIf the run's configuration or the ctde version changed "
            "since it was written, the checkpoint does not match this program: start a new run (or use the "
            "ctde version that wrote it).".format(self.directory, "\n  ".join(errors)))

    def close(self) -> None:
        self.manager.close()


def abstract_of(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
