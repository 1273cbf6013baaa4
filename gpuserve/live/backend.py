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

__all__ = ["LiveBackend"]


class LiveBackend(Protocol):
    """Where live workers run: local processes, Docker containers, a cluster."""

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        """The controller's view of an endpoint's workers (stopping ones hidden)."""
        ...

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        """Start `action.start` workers and stop the workers `action.stop` names."""
        ...

    def configure(self, deployment: Deployment) -> None:
        """Set (or update, marking old workers OUTDATED) what an endpoint's workers run.

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

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        """The measured start-up phases of a worker's last start, or None when none is recorded."""
        ...

    def shutdown(self) -> None:
        """Stop every worker this backend started (SIGTERM, wait, SIGKILL)."""
        ...
