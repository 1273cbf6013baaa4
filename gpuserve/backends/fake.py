"""An in-memory backend and queue for testing controller logic with no I/O at all."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gpuserve.core.types import EndpointSpec, QueueStats, ScaleAction, WorkerState, WorkerView

__all__ = ["FakeBackend", "FakeQueue"]


@dataclass
class FakeBackend:
    """Workers appear INITIALIZING on start and vanish on stop; tests move their states by hand."""

    _workers: dict[str, dict[str, WorkerView]] = field(default_factory=dict)
    actions: list[tuple[str, ScaleAction, float]] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        return list(self._workers.get(endpoint_id, {}).values())

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        self.actions.append((endpoint.endpoint_id, action, now_s))
        pool = self._workers.setdefault(endpoint.endpoint_id, {})
        for worker_id in action.stop:
            pool.pop(worker_id, None)
        for _ in range(action.start):
            wid = f"w{next(self._ids)}"
            pool[wid] = WorkerView(
                wid, WorkerState.INITIALIZING, created_s=now_s, capacity=endpoint.concurrency_per_worker
            )

    def set_state(
        self,
        endpoint_id: str,
        worker_id: str,
        state: WorkerState,
        *,
        in_flight: int = 0,
        idle_since_s: float | None = None,
    ) -> None:
        pool = self._workers[endpoint_id]
        pool[worker_id] = replace(pool[worker_id], state=state, in_flight=in_flight, idle_since_s=idle_since_s)


@dataclass
class FakeQueue:
    """Queue statistics set directly by a test."""

    by_endpoint: dict[str, QueueStats] = field(default_factory=dict)

    def stats(self, endpoint_id: str, now_s: float) -> QueueStats:
        return self.by_endpoint.get(endpoint_id, QueueStats())
