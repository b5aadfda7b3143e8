"""Checkpoints with orbax: the whole run state (replay included, so a resumed run reproduces the
uninterrupted one), the agent parameters on their own (cheap to restore for evaluation), and host metadata.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed while
saving leaves the previous checkpoint intact. The most recent `keep` checkpoints are kept; if the newest is
unreadable, restoring falls back to the one before and says so.

Every checkpoint's metadata records `format` (CHECKPOINT_FORMAT) and the ctde version that wrote it. A checkpoint
of another format is refused before its arrays are read, with the version that can read it: its state may be laid
out differently, and restoring it into this program's state would fail with an unhelpful orbax error or, worse,
succeed with values in the wrong places. A save that fails (a full disk, a quota) removes its partial directory
and raises CheckpointError naming the checkpoint that is still intact.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from ctde import __version__
from ctde.errors import CheckpointError

log = logging.getLogger(__name__)

# Bump when the layout of a saved run state changes. 0: checkpoints written before the format was recorded
# (ctde 0.1.0 until 2026-12-04).
CHECKPOINT_FORMAT = 1
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
        """Write checkpoint `step`. On failure (e.g. no space left) the partial directory is removed, the
        checkpoints already written are untouched, and CheckpointError says which one a resume would use."""
        meta = {**meta, "format": CHECKPOINT_FORMAT, "ctde_version": __version__}
        try:
            with _quiet_absl():  # orbax's writer thread logs a failed write with its traceback; the error says it
                self.manager.save(step, args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state), agent_params=ocp.args.StandardSave(agent_params),
                    meta=ocp.args.JsonSave(meta)), force=True)
                self.manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - orbax wraps the OS error in its own types, or not at all
            # One item's write can fail while orbax's threads still write the others into the temporary directory:
            # let them end first, so the removal below is not followed by their files.
            with contextlib.suppress(Exception):
                self.manager.wait_until_finished()
            self._remove_partial(step)
            cause = _root_cause(e)
            previous = [s for s in self.steps() if s != step]
            kept = (f"The previous checkpoint ({previous[-1]}) is intact; continue from it with `ctde train "
                    f"--resume {self.directory.parent}`." if previous else "No earlier checkpoint exists.")
            if _is_disk_full(cause):
                raise CheckpointError(f"Could not write checkpoint {step} in {self.directory}: the disk is full "
                                      f"({getattr(cause, 'strerror', None) or 'No space left on device'}). {kept} "
                                      f"Free space (or move the run to a larger disk) first.") from None
            raise CheckpointError(f"Could not write checkpoint {step} in {self.directory} ({type(cause).__name__}: "
                                  f"{str(cause).splitlines()[0][:300] if str(cause) else ''}). {kept}") from None

    def _remove_partial(self, step: int) -> None:
        """Delete what a failed save of `step` left: its temporary directory, or a final one missing its
        commit marker. Completed checkpoints of other steps are never touched."""
        for attempt in range(5):  # a writer thread that was still finishing can leave a file behind the first pass
            partial = [path for path in self.directory.glob(f"{step}*")
                       if path.name == str(step) or path.name.startswith(f"{step}.orbax-checkpoint-tmp")]
            if not partial:
                break
            for path in partial:
                shutil.rmtree(path, ignore_errors=True)
            time.sleep(0.1 * attempt)
        try:
            self.manager.reload()
        except Exception:  # noqa: BLE001 - the manager's cached step list; a stale one only affects logging
            pass

    def _restore(self, step: int, abstract: Any, item: str) -> tuple[Any, dict]:
        meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        written = meta.get("format", 0)
        if written != CHECKPOINT_FORMAT:
            raise CheckpointFormatError(
                f"checkpoint {step} in {self.directory} has format {written} (written by ctde "
                f"{meta.get('ctde_version', '0.1.0 before 2026-12-04')}); this ctde {__version__} reads format "
                f"{CHECKPOINT_FORMAT}. Resume it with the ctde version that wrote it, or start a new run.")
        restored = self.manager.restore(step, args=ocp.args.Composite(
            **{item: ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}))
        return restored[item], restored["meta"]

    def restore(self, abstract: Any, item: str = "state") -> tuple[Any, dict, int]:
        """Restore `item` ("state" or "agent_params") shaped like `abstract` from the newest readable
        checkpoint. Returns (value, meta, step)."""
        steps = self.steps()
        if not steps:
            raise CheckpointError(f"No checkpoint in {self.directory}. The run may have stopped before its first "
                                  f"checkpoint; start it again without --resume (with --overwrite to replace "
                                  f"{self.directory.parent}).")
        errors = []
        for step in reversed(steps):
            try:
                with _quiet_absl():  # orbax logs each unreadable file with a traceback; the error below says it
                    value, meta = self._restore(step, abstract, item)
            except CheckpointFormatError as e:
                # Every checkpoint of a run is written by one version: falling back to an older one cannot help.
                raise CheckpointError(f"Cannot restore the run: {e}") from None
            except Exception as e:  # noqa: BLE001 - orbax raises many types for unreadable or mismatched data
                errors.append(f"checkpoint {step}: {type(e).__name__}: {str(e).splitlines()[0][:300]}")
                continue
            if errors:
                log.warning("Newest checkpoint unreadable, restored checkpoint %d instead (%s)", step, errors[0])
            return value, meta, step
        raise CheckpointError(
            "No checkpoint in {} could be restored:\n  {}\nThe files are damaged (cut short or overwritten), or "
            "they do not match this program's run state. Restore them from a backup, or start a new run."
            .format(self.directory, "\n  ".join(errors)))

    def close(self) -> None:
        self.manager.close()


class CheckpointFormatError(CheckpointError):
    """A checkpoint written in another checkpoint format (by another ctde version)."""


@contextlib.contextmanager
def _quiet_absl():
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl.setLevel(level)


def _is_disk_full(error: BaseException) -> bool:
    """An OS error for a full disk or quota, or tensorstore's report of one (a ValueError carrying the errno)."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return True
    text = str(error)
    return any(f"os_error_code='{code}'" in text for code in DISK_FULL_ERRNOS) or "No space left on device" in text


def _root_cause(error: BaseException) -> BaseException:
    """The innermost exception of a chain (orbax re-raises OS errors inside its own)."""
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError):
            return error
        inner = error.__cause__ or error.__context__
        if inner is None:
            return error
        error = inner
    return error


def abstract_of(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
