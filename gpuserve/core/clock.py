"""The Clock seam: time is an input, read from simulated time, wall time or a manual clock."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything that can say what time it is, in seconds since an arbitrary epoch."""

    def now_s(self) -> float: ...


class ManualClock:
    """A clock tests move by hand, so every timeline is explicit (`clock.advance(300)`)."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, dt_s: float) -> float:
        if dt_s < 0:
            raise ValueError(f"dt_s cannot be negative, was {dt_s}")
        self._now_s += dt_s
        return self._now_s

    def set(self, now_s: float) -> None:
        if now_s < self._now_s:
            raise ValueError(f"time cannot go backwards: {now_s} < {self._now_s}")
        self._now_s = now_s
