"""Every exception gpuserve raises on purpose, in one tree.

    GpuserveError
    ├── ConfigError            a setting is invalid; names the field and the value
    ├── IllegalTransitionError a job or worker was asked to make a move its state machine forbids
    ├── NotFoundError          an endpoint, job or worker id that does not exist (or expired)
    ├── CapacityError          no GPU/host can take a worker right now
    ├── InUseError             a data directory another server holds
    ├── StoreError             the job store could not make a change durable (disk full, read-only, unreachable)
    └── BackendError           a backend (process, docker) failed to act on a decision
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "CapacityError",
    "ConfigError",
    "GpuserveError",
    "IllegalTransitionError",
    "InUseError",
    "NotFoundError",
    "StoreError",
]


class GpuserveError(Exception):
    """Base of every error gpuserve raises deliberately."""


class ConfigError(GpuserveError, ValueError):
    """An invalid setting. The message names the field and the offending value."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field} {problem}, was {value!r}")


class IllegalTransitionError(GpuserveError):
    """A state machine refused a move, e.g. COMPLETED -> IN_PROGRESS."""

    def __init__(self, kind: str, source: str, target: str) -> None:
        self.kind = kind
        self.source = source
        self.target = target
        super().__init__(f"illegal {kind} transition {source} -> {target}")


class NotFoundError(GpuserveError, LookupError):
    """An id that does not exist or has expired."""


class CapacityError(GpuserveError):
    """No host has a free GPU of the requested type."""


class StoreError(GpuserveError):
    """A write the job store could not make durable (or a store it could not reach): nothing changed.

    `reason` is the store's own words ("database or disk is full"); the server answers 503 with it
    and, until a write succeeds again, accepts no new jobs (read-only).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"the job store could not write: {reason}")


class BackendError(GpuserveError):
    """A backend could not carry out an action (spawn failed, engine down, ...)."""


class InUseError(GpuserveError):
    """A resource one server must own alone (its data directory) is held by another process."""
