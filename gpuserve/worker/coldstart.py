"""Measure a worker's start-up (spawn -> process start -> SDK import -> start() -> first job-take) and write its report."""

from __future__ import annotations

import json
import os
import time

from gpuserve.core.startup import StartReport

__all__ = ["SDK_IMPORT_WALL_S", "process_start_wall_s", "write_report"]

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


def write_report(report: StartReport, path: str) -> None:
    """Write the cold-start file whole (a reader never sees half of it): beside it, then renamed."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(report.as_json(), f)
    os.replace(tmp, path)
