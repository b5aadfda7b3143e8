"""Errors a user can act on.

Every error the library raises on purpose derives from `CtdeError` and carries a message that names the
problem and the fix. The CLI prints these messages without a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations


class CtdeError(Exception):
    """Base class for errors that come with a message meant for the user."""


class ConfigError(CtdeError):
    """An option, value or combination of options is invalid. Raised before anything compiles."""


def require(checks: list[tuple[bool, str]]) -> None:
    """Raise ConfigError with the message of the first (condition, message) pair whose condition is false."""
    for ok, message in checks:
        if not ok:
            raise ConfigError(message + ".")


class IncompatibleError(ConfigError):
    """A paradigm, backbone and environment that cannot be combined (e.g. a missing privileged view)."""


class CheckpointError(CtdeError):
    """A checkpoint or run directory is missing, unreadable, or does not match the configuration."""


class TrainingDivergedError(CtdeError):
    """The loss became NaN or infinite. The last good checkpoint is kept; the message says at which step."""


class AuditFailedError(CtdeError):
    """A policy's actions depend on information other than each agent's own inputs."""
