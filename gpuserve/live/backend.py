"""The LiveBackend protocol: everything the live runtime, the operator API and the fidelity tools ask of a backend.

A backend is the controller's Backend seam (`workers`, `apply`) plus the lifetime of real
workers. Every method a caller uses is declared here, so no caller probes a backend with
`getattr` or `hasattr`: a backend that has nothing to do for one of them says so in its body.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gpuserve.core.startup import ColdStartRecord
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerView
from gpuserve.live.deployment import Deployment
from gpuserve.live.worker_ops import ExecResult, LogReader
from gpuserve.store.base import WorkerRecord

__all__ = ["LiveBackend"]


class LiveBackend(Protocol):
    """Where live workers run: local processes, Docker containers, a cluster."""

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        """The controller's view of an endpoint's workers (stopping ones hidden)."""
        ...

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        """Start `action.start` workers and stop the workers `action.stop` names."""
        ...

    def image_cached(self, endpoint_id: str) -> bool:
        """Does this host hold what the endpoint's workers run, so a start needs no pull?

        Runpod's condition for extra workers on a spike (`scaling.extra_workers`): the shared
        Controller allows them only while this is True. It is asked on every Controller pass
        of an endpoint with extra workers, on the event loop, so it must answer from memory.
        """
        ...

    def configure(self, deployment: Deployment) -> None:
        """Set (or update) what an endpoint's new workers run; raises ConfigError, changing nothing, if it cannot run it.

        Running workers of an old version keep serving: the runtime's rolling update
        (gpuserve.live.rollout) marks them OUTDATED one by one and hands each to `recycle`.

        A backend whose workers outlive the server (containers) adopts the running workers of
        the current version here, registering them again, so a restart does not cold-start them.
        """
        ...

    def poll(self, now_s: float) -> None:
        """Reap exited workers, restart crashed ones with back-off, replace OUTDATED ones."""
        ...

    def recycle(self, worker_id: str) -> None:
        """stopPod: replace this worker once its jobs end (it takes no more jobs meanwhile)."""
        ...

    def logs(self, worker_id: str, tail_lines: int = 200) -> str: ...

    def open_log(self, worker_id: str, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> LogReader:
        """A worker's log from its last `tail_lines` lines (or from `since_wall_s`), followed while it runs if `follow`.

        Raises LookupError for a worker it has no log of.
        """
        ...

    def exec(self, worker_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """Run `argv` in a running worker (its container, or its directory and environment); LookupError if none."""
        ...

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        """The measured start-up phases of a worker's last start, or None when none is recorded."""
        ...

    def adopt(self, record: WorkerRecord, now_s: float) -> bool:
        """Take over a running worker another server started (its leader died): True once this backend manages it.

        The runtime has entered it in the registry as a guest; the backend checks the worker still
        runs where it was started, tracks it as its own and `claim`s the registry entry. False when
        it cannot: a worker of this kind dies with its server (the process backend), or it is gone.
        Called off the event loop.
        """
        ...

    def shutdown(self) -> None:
        """Stop every worker this backend started (SIGTERM, wait, SIGKILL)."""
        ...
