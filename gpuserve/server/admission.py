"""Whether a new job may come in: queued jobs per endpoint (429), and /run and /runsync body bytes being received (503).

`QueueGate` reads an endpoint's queue length from the store at most every `refresh_s` and counts
what it admitted since, so a burst cannot pass the cap while the read is cached and a
PostgreSQL store is not asked once per submit. `BodyBudget` reserves a body's declared size
(or its bytes as they arrive) until it is read: a thousand clients each declaring 20 MB and
sending slowly hold the budget, not a thousand times 20 MB.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Admission", "BodyBudget", "QueueGate"]


class QueueGate:
    """Queued-job counts per endpoint, read at most every `refresh_s`; `admit` answers None or why not."""

    def __init__(self, refresh_s: float = 0.05) -> None:
        self.refresh_s = refresh_s
        self._seen: dict[str, tuple[float, int]] = {}  # endpoint -> (read at, queued then + admitted since)

    def stale(self, endpoint_id: str, now_s: float) -> bool:
        """Whether the endpoint's count must be read again (`observe`) before `admit`."""
        seen = self._seen.get(endpoint_id)
        return seen is None or now_s - seen[0] >= self.refresh_s

    def observe(self, endpoint_id: str, queued: int, now_s: float) -> None:
        self._seen[endpoint_id] = (now_s, queued)

    def admit(self, endpoint_id: str, cap: int | None) -> int | None:
        """None: admitted (counted until the next read); else the queue length that refused it (at least `cap`)."""
        if cap is None:
            return None
        read_s, queued = self._seen.get(endpoint_id, (float("-inf"), 0))
        if queued >= cap:
            return queued
        self._seen[endpoint_id] = (read_s, queued + 1)
        return None


class BodyBudget:
    """Bytes of request bodies being received, all clients together, against a cap."""

    def __init__(self, cap_bytes: int | None) -> None:
        self.cap_bytes = cap_bytes
        self.held_bytes = 0

    def reserve(self, n_bytes: int) -> bool:
        if self.cap_bytes is not None and self.held_bytes + n_bytes > self.cap_bytes:
            return False
        self.held_bytes += n_bytes
        return True

    def release(self, n_bytes: int) -> None:
        self.held_bytes = max(0, self.held_bytes - n_bytes)


@dataclass
class Admission:
    """The server's admission state, kept on the app (`app.state.admission`)."""

    queue_cap: Callable[[int], int | None]  # max_workers -> the most jobs an endpoint may hold queued
    bodies: BodyBudget
    queues: QueueGate = field(default_factory=QueueGate)
