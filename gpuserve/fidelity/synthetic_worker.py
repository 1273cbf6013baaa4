"""The synthetic worker a replay runs: init takes the scenario's cold start, each job its sampled service time.

Run by a backend as `python synthetic_worker.py` with the platform's worker environment plus:
    GPUSERVE_FIDELITY_DIR   folder where the replay driver writes `<worker id>.json` = {"init_s": ...}
                            (this worker's cold-start time at the replay's speedup) at spawn
    GPUSERVE_FIDELITY_MODE  `sleep` (default) or `busy` (spin on the CPU for the service time)
    GPUSERVE_FIDELITY_CONCURRENCY  jobs at once (the endpoint's concurrency_per_worker; default 1)
Each job's input carries `service_s`, the service time already divided by the speedup.
It imports only the standard library and gpuserve's worker SDK, so it also runs in a worker image.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

PLAN_WAIT_S = 10.0  # the driver writes the init file right after the spawn returns; a few ms in practice


def _busy_wait(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _init_s() -> float:
    folder = os.environ.get("GPUSERVE_FIDELITY_DIR")
    worker = os.environ.get("GPUSERVE_WORKER_ID") or os.environ.get("RUNPOD_POD_ID")
    if not folder or not worker:
        return 0.0
    path = Path(folder) / f"{worker}.json"
    deadline = time.monotonic() + PLAN_WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            return 0.0
        time.sleep(0.002)
    return float(json.loads(path.read_text())["init_s"])


def handler(job: dict[str, Any]) -> dict[str, Any]:
    service_s = float(job["input"].get("service_s", 0.0))
    if MODE == "busy":
        _busy_wait(service_s)
    else:
        time.sleep(service_s)
    return {"service_s": service_s, "done_wall_s": time.time()}


MODE = os.environ.get("GPUSERVE_FIDELITY_MODE", "sleep")

if __name__ == "__main__":
    init_s = _init_s()
    # The init phase: what image pull, container start, runtime init and model load would take.
    if MODE == "busy":
        _busy_wait(init_s)
    else:
        time.sleep(init_s)
    from gpuserve import serverless

    concurrency = max(1, int(os.environ.get("GPUSERVE_FIDELITY_CONCURRENCY", "1")))
    serverless.start({"handler": handler, "concurrency_modifier": lambda _current: concurrency})
