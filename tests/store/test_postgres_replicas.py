"""Two servers on one PostgreSQL database: a job submitted to A is taken by a worker connected to B, its result
read on A; /runsync on A wakes when B's worker completes (LISTEN/NOTIFY), and without notifications the poll
fallback still gets every job done."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.live.auth import hash_token
from gpuserve.live.deployment import Deployment
from gpuserve.live.runtime import Endpoint
from gpuserve.platform import Platform
from gpuserve.store.postgres import PostgresJobStore
from tests.support.live import FAST, HANDLERS, endpoint_spec, process_backend_for_tests, wait_until
from tests.support.postgres import clear
from tests.support.proxy import failover_proxy

KEY = "sk-replicas"


def _replicas(tmp_path: Path, url: str, *, poll_fallback_s: float, notify: bool) -> tuple[Platform, Platform]:
    """A: client API only (no backend); B: the same endpoint with one warm worker process."""
    dep = Deployment(
        spec=endpoint_spec("ep", min_workers=1, max_workers=1, idle_timeout_s=60),
        handler_path=str(HANDLERS / "echo_gpuserve.py"),
        sdk="gpuserve",
    )
    endpoints = [Endpoint(dep, frozenset({hash_token(KEY)}))]
    stores = [PostgresJobStore(url, poll_fallback_s=poll_fallback_s) for _ in range(2)]
    if not notify:  # as behind a pooler that drops notifications
        for store in stores:
            store.listen = lambda *_: None  # type: ignore[method-assign]
    a = Platform(endpoints, data_dir=tmp_path / "a", backend=None, settings=FAST, store=stores[0])
    b = Platform(endpoints, data_dir=tmp_path / "b", backend=process_backend_for_tests(), settings=FAST, store=stores[1])
    # What each server heard from the other (recorded before start, where the runtime subscribes).
    a.heard_ended = []  # type: ignore[attr-defined]
    b.heard_queued = []  # type: ignore[attr-defined]
    a.runtime.done_waiters.release = _recording(a.runtime.done_waiters.release, a.heard_ended)  # type: ignore[attr-defined,method-assign]
    b.runtime._queued_elsewhere = _recording(b.runtime._queued_elsewhere, b.heard_queued)  # type: ignore[attr-defined,method-assign]
    return a.start(), b.start()


def _recording(call: Any, seen: list[str]) -> Any:
    def record(arg: str) -> None:
        seen.append(arg)
        call(arg)

    return record


@pytest.fixture
def two(tmp_path: Path, pg_database: str, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any, Any, Any]]:
    clear(pg_database)
    notify, fallback_s = request.param
    a, b = _replicas(tmp_path, pg_database, poll_fallback_s=fallback_s, notify=notify)
    headers = {"Authorization": f"Bearer {KEY}"}
    ca = httpx.Client(base_url=f"{a.url}/v2/ep", headers=headers, timeout=60)
    cb = httpx.Client(base_url=f"{b.url}/v2/ep", headers=headers, timeout=60)
    try:
        wait_until(lambda: any(w.first_take_s for w in b.registry.all("ep")), 60, "B's worker to poll")
        yield ca, cb, a, b
    finally:
        ca.close()
        cb.close()
        b.stop(quiet=True)
        a.stop(quiet=True)


# Notifications on, the fallback an hour away: B hears A's submits, A hears B's results.
@pytest.mark.parametrize("two", [(True, 3600.0)], indirect=True)
def test_submit_on_a_runs_on_bs_worker_and_runsync_on_a_wakes_by_notification(two):
    ca, cb, a, b = two
    job_id = ca.post("/run", json={"input": {"n": 1}}).json()["id"]
    wait_until(lambda: ca.get(f"/status/{job_id}").json()["status"] == "COMPLETED", 30, "the job to complete")
    body = ca.get(f"/status/{job_id}").json()
    assert body["output"] == {"echo": {"n": 1}}
    assert body["workerId"] in {w.worker_id for w in b.registry.all("ep")}  # B's worker ran it
    assert cb.get(f"/status/{job_id}").json() == body  # either server answers from the database
    # /runsync on A: B's worker ends it, and A's waiter is released by B's notification.
    sync = ca.post("/runsync?wait=20000", json={"input": {"n": 2}}).json()
    assert sync["status"] == "COMPLETED" and sync["output"] == {"echo": {"n": 2}}, sync
    wait_until(lambda: {job_id, sync["id"]} <= set(a.heard_ended), 10, "A to hear both results")
    assert "ep" in b.heard_queued  # B's parked take was woken by A's submit


# No notifications at all: the poll fallback (0.5 s) alone wakes B's parked take and A's waiting /runsync.
@pytest.mark.parametrize("two", [(False, 0.5)], indirect=True)
def test_without_notifications_the_poll_fallback_gets_every_job_done(two):
    ca, _cb, a, b = two
    ids = [ca.post("/run", json={"input": {"n": i}}).json()["id"] for i in range(5)]
    sync = ca.post("/runsync?wait=30000", json={"input": {"n": 9}}).json()
    assert sync["status"] == "COMPLETED" and sync["output"] == {"echo": {"n": 9}}, sync
    wait_until(lambda: all(ca.get(f"/status/{i}").json()["status"] == "COMPLETED" for i in ids), 30, "all jobs")
    assert a.heard_ended == [] and b.heard_queued == []  # nothing was heard: polling did it


def test_one_controller_per_endpoint_and_a_new_leader_when_it_dies(tmp_path, pg_database):
    """A leads and scales (one warm worker); B, on the same database, starts none. A dies without handing over
    (its resign never reaches the database): once its lease runs out, B leads, starts a worker and runs jobs."""
    clear(pg_database)
    dep = Deployment(
        spec=endpoint_spec("ep", min_workers=1, max_workers=1, idle_timeout_s=60),
        handler_path=str(HANDLERS / "echo_gpuserve.py"),
        sdk="gpuserve",
    )
    endpoints = [Endpoint(dep, frozenset({hash_token(KEY)}))]

    def replica(name: str) -> Platform:
        return Platform(endpoints, data_dir=tmp_path / name, backend=process_backend_for_tests(), settings=FAST,
                        store=PostgresJobStore(pg_database)).start()

    a = replica("a")
    b = None
    try:
        wait_until(lambda: any(w.first_take_s for w in a.registry.all("ep")), 60, "A's worker to poll")
        b = replica("b")
        wait_until(lambda: b.runtime._next_lead_s > 0, 10, "B to try for the lease")
        assert a.runtime._leading == {"ep"} and b.runtime._leading == set()
        assert b.registry.all("ep") == []  # B's Controller never ran: no worker of its own
        a.store.resign = lambda *_: None  # type: ignore[method-assign]  # dies: the lease is left to run out
        a.stop(quiet=True)
        wait_until(lambda: b.runtime._leading == {"ep"}, 15, "B to lead once A's lease expired")
        wait_until(lambda: any(w.first_take_s for w in b.registry.all("ep")), 60, "B's own worker to poll")
        with httpx.Client(base_url=f"{b.url}/v2/ep", headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
            body = c.post("/runsync?wait=30000", json={"input": {"n": 3}}).json()
        assert body["status"] == "COMPLETED" and body["output"] == {"echo": {"n": 3}}, body
    finally:
        if b is not None:
            b.stop(quiet=True)
        a.stop(quiet=True)


def test_a_worker_registered_on_b_takes_heartbeats_and_posts_results_through_a(tmp_path, pg_database):
    """Worker tokens are shared: B records its worker's token digest in the database, so A admits the same
    worker's take, heartbeat and result; a job taken through one server and reported through the other is
    held, not stopped; a wrong token is refused on both."""
    clear(pg_database)
    dep = Deployment(spec=endpoint_spec("ep", max_workers=1), handler_path=str(HANDLERS / "echo_gpuserve.py"), sdk="gpuserve")
    endpoints = [Endpoint(dep, frozenset({hash_token(KEY)}))]
    a, b = (
        Platform(endpoints, data_dir=tmp_path / n, backend=None, settings=FAST, store=PostgresJobStore(pg_database)).start()
        for n in ("a", "b")
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    try:
        token = b.registry.add("ep-hand", "ep", b.clock.now_s())
        assert b.runtime.directory.flush()
        wa = httpx.Client(base_url=f"{a.url}/v2/ep", headers={"Authorization": token}, timeout=30)
        wb = httpx.Client(base_url=f"{b.url}/v2/ep", headers={"Authorization": token}, timeout=30)
        with wa, wb, httpx.Client(base_url=f"{b.url}/v2/ep", headers=headers, timeout=30) as client:
            assert a.registry.get("ep-hand") is None  # A never started it
            first = client.post("/run", json={"input": {"n": 1}}).json()["id"]
            took = wa.get("/job-take/ep-hand")  # through A
            assert took.status_code == 200 and took.json()["id"] == first, took.text
            guest = a.registry.get("ep-hand")
            assert guest is not None and guest.guest and a.registry.all("ep") == []  # served, not counted by A
            # B's heartbeat lists the job A handed out: the database says ep-hand holds it, so B holds it too.
            assert wb.get("/ping/ep-hand", params={"job_id": first}).status_code == 200
            assert b.registry.jobs_of("ep-hand") == [first] and not b.runtime.stops.told("ep-hand", first)
            assert wa.get("/ping/ep-hand", params={"job_id": first}).status_code == 200
            done = wb.post(f"/job-done/ep-hand/{first}", json={"output": {"echo": 1}})  # the result through B
            assert done.json()["accepted"] == "COMPLETED", done.text
            wait_until(lambda: a.registry.jobs_of("ep-hand") == [], 10, "A to hear the job ended")
            assert client.get(f"/status/{first}").json()["output"] == {"echo": 1}
            # A second job, taken through B, reported through A.
            second = client.post("/run", json={"input": {"n": 2}}).json()["id"]
            assert wb.get("/job-take/ep-hand").json()["id"] == second
            assert wa.post(f"/job-done/ep-hand/{second}", json={"output": 2}).json()["accepted"] == "COMPLETED"
            # The heartbeats were stamped on the worker's record; a wrong token opens nothing anywhere.
            assert b.runtime.directory.flush() and a.runtime.directory.flush()
            record = a.store.find_worker("ep-hand")
            assert record is not None and record.seen_s is not None and record.token_hash == hash_token(token)
            for w in (wa, wb):
                assert w.get("/ping/ep-hand", headers={"Authorization": token + "x"}).status_code == 401
            assert wa.get("/ping/ep-nobody").status_code == 401
            # Heartbeats through A alone, past B's liveness timeout: B reads them off the record, and keeps it.
            until = time.monotonic() + FAST.liveness_timeout_s * 1.5
            while time.monotonic() < until:
                assert wa.get("/ping/ep-hand").status_code == 200
                time.sleep(0.25)
            assert b.registry.get("ep-hand").state.value == "IDLE"
        b.registry.remove("ep-hand")  # gone: its record goes with it
        assert b.runtime.directory.flush()
        assert a.store.find_worker("ep-hand") is None
    finally:
        b.stop(quiet=True)
        a.stop(quiet=True)


def test_workers_behind_a_round_robin_proxy_are_served_by_both_replicas_and_none_is_lost(tmp_path, pg_database):
    """A's two workers are given a proxy that spreads their connections over A and B (nginx's default): B serves
    the calls that reach it (a guest, recognised by the database), A counts its workers, every job completes with
    its own output and no worker is declared lost."""
    clear(pg_database)
    dep = Deployment(
        spec=endpoint_spec("ep", min_workers=2, max_workers=2, idle_timeout_s=60),
        handler_path=str(HANDLERS / "echo_gpuserve.py"),
        sdk="gpuserve",
    )
    endpoints = [Endpoint(dep, frozenset({hash_token(KEY)}))]
    with failover_proxy() as proxy:
        proxy.round_robin = True
        settings = dataclasses.replace(FAST, worker_url=f"http://127.0.0.1:{proxy.port}")
        a, b = (
            Platform(endpoints, data_dir=tmp_path / n, backend=process_backend_for_tests(), settings=settings,
                     store=PostgresJobStore(pg_database))
            for n in ("a", "b")
        )
        proxy.upstreams = [("127.0.0.1", int(a.url.rsplit(":", 1)[1]))]  # B joins once it serves
        a.start()
        try:
            wait_until(lambda: a.runtime._leading == {"ep"}, 10, "A to lead")
            wait_until(lambda: sum(1 for w in a.registry.all("ep") if w.first_take_s) == 2, 60, "A's two workers to poll")
            first = {w.worker_id for w in a.registry.all("ep")}
            b.start()
            proxy.upstreams.append(("127.0.0.1", int(b.url.rsplit(":", 1)[1])))
            headers = {"Authorization": f"Bearer {KEY}"}
            with httpx.Client(headers=headers, timeout=60) as client:

                def status(job_id: str) -> dict[str, Any]:
                    return dict(client.get(f"{a.url}/v2/ep/status/{job_id}").json())

                def run(inputs: range) -> list[dict[str, Any]]:
                    ids = [client.post(f"{(a, b)[i % 2].url}/v2/ep/run", json={"input": {"n": i}}).json()["id"] for i in inputs]
                    wait_until(lambda: all(status(i)["status"] == "COMPLETED" for i in ids), 60, "every job")
                    return [status(i) for i in ids]

                bodies = run(range(40))
                # Then the proxy cuts every connection and sends the new ones to B alone, past A's liveness
                # timeout: the workers' calls all reach B (a guest there), and A, hearing nothing itself, reads
                # their heartbeats off the database instead of declaring them lost.
                proxy.upstreams = proxy.upstreams[1:]
                proxy.cut()
                time.sleep(FAST.liveness_timeout_s * 1.5)
                bodies += run(range(40, 50))
            mine = {w.worker_id for w in a.registry.all("ep")}
            assert mine == first and b.registry.all("ep") == []  # A's two all along (none lost), B started none
            assert {body["workerId"] for body in bodies} <= mine
            assert [body["output"] for body in bodies] == [{"echo": {"n": i}} for i in range(50)]
            assert {w.state.value for w in a.registry.all("ep")} <= {"IDLE", "RUNNING"}  # none declared lost
            assert {w.worker_id for w in b.registry.guests("ep")} == mine  # B served both
        finally:
            b.stop(quiet=True)
            a.stop(quiet=True)
