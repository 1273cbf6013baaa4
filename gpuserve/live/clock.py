"""WallClock: the live Clock, Unix time in seconds, so stored timestamps survive a server restart."""

from __future__ import annotations

import time

__all__ = ["WallClock"]


class WallClock:
    """Implements gpuserve.core.Clock with `time.time()`.

    Unix time (not `time.monotonic()`) because jobs persist across server restarts and
    their submission times must stay comparable with the next life's clock.
    """

    def now_s(self) -> float:
        return time.time()
