"""Measure a worker's start-up phases: spawn -> process start -> SDK import -> start() -> first job-take."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass

__all__ = ["ColdStart", "process_start_wall_s"]

# When this module was first imported: the SDK import, after the interpreter booted.
SDK_IMPORT_WALL_S = time.time()


def process_start_wall_s() -> float | None:
    """When this process was exec'd, in wall-clock seconds (Linux /proc; 10-ms resolution)."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        with open("/proc/uptime") as f:
            uptime_s = float(f.read().split()[0])
        now = time.time()
        fields = stat.rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 overall; the two before ")" are pid and comm
        age_s = uptime_s - start_ticks / os.sysconf("SC_CLK_TCK")
        return now - max(0.0, age_s)
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ColdStart:
    """Wall-clock instants of each phase; the `*_s` durations are derived from them."""

    worker_id: str
    spawn_wall_s: float | None
    process_start_wall_s: float | None
    sdk_import_wall_s: float
    start_called_wall_s: float
    first_take_wall_s: float | None = None

    def durations(self) -> dict[str, float | None]:
        def gap(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(max(0.0, b - a), 4)

        return {
            "spawn_to_process_s": gap(self.spawn_wall_s, self.process_start_wall_s),
            "process_to_sdk_import_s": gap(self.process_start_wall_s, self.sdk_import_wall_s),
            "sdk_import_to_start_s": gap(self.sdk_import_wall_s, self.start_called_wall_s),
            "start_to_first_take_s": gap(self.start_called_wall_s, self.first_take_wall_s),
            "spawn_to_first_take_s": gap(self.spawn_wall_s, self.first_take_wall_s),
            "process_to_first_take_s": gap(self.process_start_wall_s, self.first_take_wall_s),
        }

    def record(self) -> dict[str, object]:
        return {**asdict(self), **self.durations()}

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.record(), f)
        os.replace(tmp, path)
