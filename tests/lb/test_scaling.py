"""Load-balancing endpoints scaled by the Controller, with real worker servers: from zero, to zero, routing, health.

Every wait is bounded (`wait_until`); nothing asserts on how long something took.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx

from gpuserve.core.types import WorkerState
from tests.lb.support import LB_FAST, lb_deployment
from tests.support.live import API_KEY, Live, wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _ready(live: Live, eid: str) -> list[str]:
    return [w.worker_id for w in live.registry.all(eid) if w.state in (WorkerState.IDLE, WorkerState.RUNNING)]


def test_scale_from_zero_holds_the_request_then_204_200_then_idle_to_zero(tmp_path: Path) -> None:
    dep = lb_deployment("gen", tmp_path / "files", load_s=1.0, min_workers=0, max_workers=2, idle_timeout_s=0.5)
    with Live(tmp_path, [dep], LB_FAST) as live:
        assert live.registry.all("gen") == []
        # At zero workers the request is held, counts as demand, starts a worker, and is answered.
        r = httpx.post(f"{live.url}/lb/gen/echo", content=b"x", headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text + live.all_logs()
        worker_id = r.json()["worker"]
        w = live.registry.get(worker_id)
        assert w is not None
        # Its health said 204 (loading) first, then 200: the cold start runs from one to the other.
        assert w.first_initializing_s is not None and w.first_take_s is not None
        assert w.first_take_s > w.first_initializing_s
        record = live.backend.cold_start(worker_id)
        assert record is not None and record.first_take_s is not None and record.first_take_s > 0
        assert record.total_s is not None and record.total_s >= record.first_take_s
        # Idle past its timeout, the endpoint goes back to zero workers.
        live.until(lambda: not live.registry.all("gen"), "scaled down to zero", 30)
        health = httpx.get(f"{live.url}/v2/gen/health", headers=AUTH).json()
        assert sum(health["workers"].values()) == 0
        assert health["requests"]["total"] == 1 and health["requests"]["rejected"] == 0


def test_fewest_in_flight_across_three_workers_ties_to_the_most_recently_used(tmp_path: Path) -> None:
    files = tmp_path / "files"
    dep = lb_deployment("route", files, min_workers=3, max_workers=3, max_concurrency=4, idle_timeout_s=60)
    with Live(tmp_path, [dep], LB_FAST) as live, ThreadPoolExecutor(8) as pool:
        wait_until(lambda: len(_ready(live, "route")) == 3, 60, "three ready workers")
        router = live.runtime.lb["route"]

        def gated(name: str) -> Future[httpx.Response]:
            before = router.in_flight()
            fut = pool.submit(httpx.get, f"{live.url}/lb/route/gate/{name}", headers=AUTH, timeout=60)
            wait_until(lambda: router.in_flight() == before + 1, 30, f"request {name} in flight")
            return fut

        held = [gated(f"g{i}") for i in range(4)]
        per_worker = sorted(len(w.in_flight) for w in live.registry.all("route"))
        assert per_worker == [1, 1, 2]  # three spread one each, the fourth to a worker with one
        for i in range(4):
            (files / f"open-g{i}").touch()
        served = [f.result().json()["worker"] for f in held]
        assert len(set(served[:3])) == 3
        wait_until(lambda: router.in_flight() == 0, 30, "all requests done")
        # One at a time, every worker has none in flight: the most recently used one takes them all.
        last = httpx.get(f"{live.url}/lb/route/echo", headers=AUTH).json()["worker"]
        again = {httpx.get(f"{live.url}/lb/route/echo", headers=AUTH).json()["worker"] for _ in range(5)}
        assert again == {last}


def test_an_unhealthy_worker_is_taken_out_and_replaced(tmp_path: Path) -> None:
    files = tmp_path / "files"
    dep = lb_deployment("sick", files, min_workers=1, max_workers=1, idle_timeout_s=60)
    with Live(tmp_path, [dep], LB_FAST) as live:
        first = wait_until(lambda: _ready(live, "sick"), 60, "a ready worker")[0]
        (files / f"sick-{first}").touch()  # its /ping answers 500 from now on
        live.until(
            lambda: (w := live.registry.get(first)) is None or w.state is WorkerState.UNHEALTHY, "the sick worker UNHEALTHY", 30
        )
        # Out of the pool at once; a replacement starts (after the crash back-off) and serves.
        second = wait_until(lambda: [w for w in _ready(live, "sick") if w != first], 60, "a replacement")[0]
        r = httpx.get(f"{live.url}/lb/sick/echo", headers=AUTH, timeout=60)
        assert r.status_code == 200 and r.json()["worker"] == second
        # A worker that dies mid-request: 502 naming it; the backend sees the exit and replaces it.
        r = httpx.get(f"{live.url}/lb/sick/exit", headers=AUTH, timeout=60)
        assert r.status_code == 502 and r.json()["error"].startswith(f"worker {second} did not answer")
        third = wait_until(lambda: [w for w in _ready(live, "sick") if w not in (first, second)], 60, "another replacement")[0]
        assert httpx.get(f"{live.url}/lb/sick/echo", headers=AUTH, timeout=60).json()["worker"] == third


def test_hold_timeout_503_with_its_reason_and_request_timeout_504(tmp_path: Path) -> None:
    files = tmp_path / "files"
    busy = lb_deployment("busy", files, min_workers=1, max_workers=1, max_concurrency=1, hold_timeout_s=0.5)
    none = lb_deployment("none", files, max_workers=0, hold_timeout_s=0.5)
    loading = lb_deployment("loading", files, load_s=10_000.0, min_workers=1, max_workers=1, hold_timeout_s=0.5)
    slow = lb_deployment("slow", files, min_workers=1, max_workers=1, request_timeout_s=0.5)
    with Live(tmp_path, [busy, none, loading, slow], LB_FAST) as live, ThreadPoolExecutor(2) as pool:
        for eid in ("busy", "slow"):
            wait_until(lambda eid=eid: _ready(live, eid), 60, f"a ready {eid} worker")
        wait_until(lambda: any(w.first_initializing_s for w in live.registry.all("loading")), 60, "a loading worker")
        router = live.runtime.lb["busy"]
        occupied = pool.submit(httpx.get, f"{live.url}/lb/busy/gate/b1", headers=AUTH, timeout=60)
        wait_until(lambda: router.in_flight() == 1, 30, "the only slot taken")

        r = httpx.get(f"{live.url}/lb/busy/echo", headers=AUTH, timeout=30)
        assert r.status_code == 503
        assert r.json() == {"error": "max_workers reached (1 workers, each at max_concurrency 1) for 0.5 s"}
        (files / "open-b1").touch()
        assert occupied.result().status_code == 200

        r = httpx.get(f"{live.url}/lb/none/echo", headers=AUTH, timeout=30)
        assert r.status_code == 503 and r.json() == {"error": "max_workers is 0: the endpoint may run no worker"}

        r = httpx.get(f"{live.url}/lb/loading/echo", headers=AUTH, timeout=30)
        assert r.status_code == 503 and r.json() == {"error": "no healthy worker within 0.5 s"}

        r = httpx.get(f"{live.url}/lb/slow/sleep?s=30", headers=AUTH, timeout=30)
        assert r.status_code == 504
        assert r.json() == {"error": "the worker did not answer within request_timeout_s (0.5 s)"}
        # The slot is free again: the next request is served.
        assert httpx.get(f"{live.url}/lb/slow/echo", headers=AUTH, timeout=30).status_code == 200
        health = httpx.get(f"{live.url}/v2/busy/health", headers=AUTH).json()
        assert health["requests"]["rejected"] == 1
