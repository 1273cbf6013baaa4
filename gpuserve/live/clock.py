"""The live clocks: SteadyClock (monotonic, reading as Unix seconds) for deadlines and liveness, WallClock for display."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["SteadyClock", "WallClock"]


class WallClock:
    """Implements gpuserve.core.Clock with `time.time()`: moves with every wall-clock step.

    Only for instants shown to people or compared across machines; the runtime's deadlines
    use SteadyClock, so an NTP correction or an operator's `date -s` cannot expire them.
    """

    def now_s(self) -> float:
        return time.time()


class SteadyClock:
    """Implements gpuserve.core.Clock: the wall time at construction plus monotonic time elapsed since.

    The live platform's one clock. Within one server life it never jumps: a +40 s wall step
    leaves every heartbeat age, execution timeout and ttl as it was (with WallClock, every
    worker would look 40 s silent, past the 30 s liveness window, and be killed). Its values
    still read as Unix seconds, so the times the store keeps mean the same after a restart:
    the next life anchors to the wall clock again, and a job stored at 1_700_000_000.0 with a
    ttl of 86_400 s still expires one day after it was submitted. A wall step during a life
    shows up only as that much offset in the timestamps of that life (`wall_offset_s`).
    """

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self._origin_s = wall() - monotonic()  # captured once: later wall steps do not reach it

    def now_s(self) -> float:
        return self._origin_s + self._monotonic()

    def wall_offset_s(self) -> float:
        """How far the wall clock has stepped away from this clock since it was made (+40.0 after `date -s +40s`)."""
        return self._wall() - self.now_s()
