"""bind_to_launch live: the job whose arrival started a worker is reserved for that worker, not taken by one that frees first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gpuserve.core.types import Dispatch
from tests.support.live import code_deployment

# A cold start (5 s of imports) that the first job's remaining 2 s cannot outlast.
SLOW_START = """
import time
time.sleep(5.0)
from gpuserve import serverless


def handler(job):
    time.sleep(job["input"].get("sleep_s", 0))
    return {"ok": True}


serverless.start({"handler": handler})
"""


def test_the_job_that_started_a_worker_waits_for_that_worker(make_server, tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "ep", SLOW_START, max_workers=2, idle_timeout_s=60.0)
    dep = replace(dep, spec=replace(dep.spec, dispatch=Dispatch.BIND_TO_LAUNCH))
    h = make_server([dep], backend="process")
    first = h.submit({"input": {"sleep_s": 2.0}})
    h.wait_status(first, {"IN_PROGRESS", "COMPLETED"}, timeout_s=60)
    # The second job finds the only worker busy and starts another. That one needs 5 s; the
    # first worker frees after 2 s, and under shared_queue would take the job then.
    second = h.submit({"input": {}})
    done_first = h.wait_status(first, {"COMPLETED"}, timeout_s=60)
    done_second = h.wait_status(second, {"COMPLETED"}, timeout_s=60)
    assert done_second["workerId"] != done_first["workerId"]
    assert len(h.registry.all("ep")) == 2
    assert h.rt._reserved == {}  # the reservation ended with the take
