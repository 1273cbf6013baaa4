"""The account-wide worker limit live: an endpoint's start waits while another endpoint's worker fills the account."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.support.live import SERVER_FAST, code_deployment, wait_until

SLEEPY = """
import time
from gpuserve import serverless


def handler(job):
    time.sleep(job["input"].get("sleep_s", 0))
    return {"ok": True}


serverless.start({"handler": handler})
"""


def test_a_start_waits_until_a_worker_elsewhere_frees_the_account(make_server, tmp_path: Path) -> None:
    a = code_deployment(tmp_path, "a", SLEEPY, max_workers=1, idle_timeout_s=3.0)
    b = code_deployment(tmp_path, "b", SLEEPY, max_workers=1, idle_timeout_s=3.0)
    h = make_server([a, b], backend="process", settings=replace(SERVER_FAST, account_max_workers=1))
    first = h.submit({"input": {"sleep_s": 2.0}}, ep="a")
    h.wait_status(first, {"IN_PROGRESS", "COMPLETED"}, ep="a", timeout_s=60)
    second = h.submit({"input": {}}, ep="b")
    # Without the limit b would start a worker at once (a job at zero workers gets one).
    h.wait_status(first, {"COMPLETED"}, ep="a", timeout_s=60)
    assert h.registry.all("b") == []
    assert h.job_status(second, ep="b")["status"] == "IN_QUEUE"
    assert [w.state.value for w in h.registry.all("a")] == ["IDLE"]  # a's worker holds the account until its idle timeout
    done = h.wait_status(second, {"COMPLETED"}, ep="b", timeout_s=60)
    assert done["workerId"].startswith("b-")
    wait_until(lambda: h.registry.all("a") == [], 30, "a's worker gone")
