"""Runpod's extra workers live, on the process backend: a spike above max_workers gets up to `extra_workers` more.

Real server, real worker processes. Each job holds its worker until the test creates a gate
file, so how many workers a burst got is read while every one of them is busy.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tests.support.live import SERVER_FAST, Harness, code_deployment, wait_until

GATED = """
import os, time
from gpuserve import serverless


def handler(job):
    gate = job["input"]["gate"]
    for _ in range(6000):  # at most 60 s: a test that fails never leaves a worker spinning
        if os.path.exists(gate):
            break
        time.sleep(0.01)
    return {"worker": os.environ["GPUSERVE_WORKER_ID"]}


serverless.start({"handler": handler})
"""


def _busy(h: Harness, endpoint_id: str) -> set[str]:
    """Workers of the endpoint holding a job (IN_PROGRESS)."""
    return {w.worker_id for w in h.registry.all(endpoint_id) if w.in_flight}


def _burst(h: Harness, endpoint_id: str, n: int, gate: Path) -> list[str]:
    return [h.submit({"input": {"gate": str(gate)}}, ep=endpoint_id) for _ in range(n)]


def _max_target(h: Harness, endpoint_id: str) -> int:
    return max(a.action.target for a in h.rt.telemetry.recent_actions if a.endpoint_id == endpoint_id)


def test_a_burst_gets_extra_workers_above_max_workers_unless_the_endpoint_opts_out(make_server, tmp_path: Path) -> None:
    extra = code_deployment(tmp_path, "extra", GATED, max_workers=1, extra_workers=2)
    capped = code_deployment(tmp_path, "capped", GATED, max_workers=1, extra_workers=0)
    h = make_server([extra, capped], backend="process", settings=replace(SERVER_FAST, account_max_workers=None))
    assert h.backend.image_cached("extra")  # a process worker's code is on this host: always "cached"
    gate = tmp_path / "go"
    jobs = {"extra": _burst(h, "extra", 4, gate), "capped": _burst(h, "capped", 3, gate)}
    # 4 jobs at 1 job per worker need 4 workers; max_workers 1 plus 2 extra allows 3.
    wait_until(lambda: len(_busy(h, "extra")) == 3, 60, "three busy workers on 'extra'")
    wait_until(lambda: len(_busy(h, "capped")) == 1, 60, "one busy worker on 'capped'")
    # The Controller has seen capped's spike (3 jobs in the system) with its worker already busy, and held at 1.
    wait_until(
        lambda: (s := h.rt.controller.last_step("capped")) is not None
        and s.snapshot.queue.in_queue == 2 and s.snapshot.current_workers == 1,
        30, "a Controller pass over capped's spike",
    )
    assert len(h.registry.all("extra")) == 3 and len(h.registry.all("capped")) == 1
    assert _max_target(h, "extra") == 3 and _max_target(h, "capped") == 1
    reasons = [a.action.reason for a in h.rt.telemetry.recent_actions if a.endpoint_id == "extra"]
    assert any("2 extra worker(s) for a spike" in r for r in reasons), reasons
    gate.touch()
    done = {eid: [h.wait_status(j, {"COMPLETED"}, ep=eid, timeout_s=60) for j in ids] for eid, ids in jobs.items()}
    assert len({b["output"]["worker"] for b in done["extra"]}) == 3
    assert len({b["output"]["worker"] for b in done["capped"]}) == 1


def test_the_account_limit_caps_extra_workers(make_server, tmp_path: Path) -> None:
    dep = code_deployment(tmp_path, "spiky", GATED, max_workers=1, extra_workers=2)
    h = make_server([dep], backend="process", settings=replace(SERVER_FAST, account_max_workers=2))
    gate = tmp_path / "go"
    jobs = _burst(h, "spiky", 4, gate)
    wait_until(lambda: len(_busy(h, "spiky")) == 2, 60, "two busy workers")
    # The guardrails asked for 3 (1 + 2 extra); the account limit let 2 start and refused the rest.
    wait_until(
        lambda: (s := h.rt.controller.last_step("spiky")) is not None and s.account_blocked >= 1
        and s.snapshot.current_workers == 2,
        30, "a pass the account limit blocked",
    )
    assert len(h.registry.all("spiky")) == 2
    gate.touch()
    done = [h.wait_status(j, {"COMPLETED"}, ep="spiky", timeout_s=60) for j in jobs]
    assert len({b["output"]["worker"] for b in done}) == 2
