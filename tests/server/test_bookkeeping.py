"""Bounded bookkeeping on a real server: after many short jobs expire (100,000 in one test, the issue's scale),
and many workers come and go, the server's in-memory structures are back to their empty size (none grows
with total jobs or workers)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gpuserve.live.webhooks import WEBHOOK_LOG_KEPT
from gpuserve.store.sqlite import _COMPACT_MIN
from tests.support.live import SERVER_FAST, Harness, wait_until

JOBS = 700  # two deadline entries each: past the 1,024 at which the heap is compacted
WORKERS = 40


def test_expired_jobs_and_gone_workers_leave_nothing_behind(make_server) -> None:
    h: Harness = make_server(settings=replace(SERVER_FAST, run_retention_s=0.2))
    w1 = h.add_worker("w1")
    for i in range(JOBS):
        job_id = h.submit({"input": {"i": i}})
        assert w1.get("/job-take/w1").json()["id"] == job_id
        assert w1.post(f"/job-done/w1/{job_id}", json={"output": i}).json()["accepted"] == "COMPLETED"
    # Workers that each had a job cancelled (a stop signal kept for them), then went away.
    for n in range(WORKERS):
        wid = f"gone-{n}"
        worker = h.add_worker(wid)
        job_id = h.submit({"input": {"n": n}})
        assert worker.get(f"/job-take/{wid}").json()["id"] == job_id
        assert h.client.post(f"/v2/ep/cancel/{job_id}").json()["status"] == "CANCELLED"
        worker.close()
        h.registry.remove(wid)
    wait_until(lambda: h.store.bookkeeping()["jobs"] == 0, 30, "every result expired")
    wait_until(lambda: h.rt.stops.size() == 0, 30, "the stop channels of gone workers dropped")
    sizes = h.store.bookkeeping()
    assert sizes["deadlines"] <= _COMPACT_MIN and sizes["queued_entries"] == 0, sizes
    assert h.store.count() == 0
    w = h.registry.get("w1")
    assert w is not None and w.in_flight == set() and w.leases == {}
    assert h.rt.done_waiters.job_ids() == [] and h.rt.webhooks.log.maxlen == WEBHOOK_LOG_KEPT


class _Hook(BaseHTTPRequestHandler):
    """A webhook receiver on loopback that answers 200 and counts what it got."""

    got: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.got.append(body["output"])
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


BIG_RUN = 100_000  # the scale
WAVE = 500  # jobs queued, then taken at once, then finished: what each structure holds at its peak
HOOK_EVERY = 500  # 200 webhooks through the outbox (a delivery costs about 20 ms here: more would dominate)


@pytest.fixture
def tmpfs_data(tmp_path: Path) -> Iterator[Path]:
    """A data dir on tmpfs where there is one: SQLite commits cost no disk writes there, so 100,000
    jobs fit in a test's time; the store code is the same. Set up before the server (a fixture
    listed first), so it is removed after the server stopped."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path / "data"
        return
    data = Path(tempfile.mkdtemp(prefix="gpuserve-bookkeeping-", dir=shm))
    try:
        yield data
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_100000_short_jobs_leave_every_structure_at_its_empty_size(tmpfs_data: Path, make_server) -> None:
    """100,000 jobs through the server's own submit, take and done paths (what the HTTP routes call,
    on the server's event loop, with its maintenance passes running between waves), in waves of 500
    with 0.2 s retention, every 500th with a webhook: every structure grew with the live jobs while
    they lived and is back to its empty size after. HTTP costs several ms a job (minutes for
    100,000) on a loaded 2-core host; the test above sends its jobs through the routes."""
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    _Hook.got = []
    try:
        # Liveness is not under test: the test's worker sends no heartbeats, so it must not be declared lost.
        settings = replace(SERVER_FAST, run_retention_s=0.2, heartbeat_interval_s=3600.0)
        h: Harness = make_server(settings=settings, data_dir=tmpfs_data)
        h.add_worker("w1", capacity=WAVE)
        worker = h.registry.get("w1")
        rt, store = h.rt, h.store
        peak: Counter[str] = Counter()

        def observe() -> None:
            for name, size in {**store.bookkeeping(), "in_flight": len(worker.in_flight),
                               "leases": len(worker.leases), "outbox": store.pending_webhooks()}.items():
                peak[name] = max(peak[name], size)

        async def drive() -> None:
            for wave in range(BIG_RUN // WAVE):
                ids = []
                for k in range(WAVE):
                    n = wave * WAVE + k
                    payload: dict[str, Any] = {"input": {"n": n}}
                    if n % HOOK_EVERY == 0:
                        payload["webhook"] = hook
                    job = await rt.submit("ep", payload, low_priority=False, execution_timeout_s=600.0,
                                          ttl_s=86_400.0, retention_s=0.2)
                    ids.append(job.id)
                observe()
                taken = await rt.take(worker, WAVE)
                assert [j.id for j in taken] == ids
                observe()
                for k, job in enumerate(taken):
                    outcome, _ = await rt.job_done(worker, job.id, {"output": wave * WAVE + k})
                    assert outcome == "COMPLETED"
                observe()
                await asyncio.sleep(0.001)  # the server's own loops run between waves: sweeps, webhook sends

        assert rt.loop is not None
        asyncio.run_coroutine_threadsafe(drive(), rt.loop).result(600)
        wait_until(lambda: store.bookkeeping()["jobs"] == 0, 60, "every result expired")
        wait_until(lambda: store.pending_webhooks() == 0, 60, "every webhook delivered")
        observe()
        # It grew: each wave's jobs were held (queued, then in flight), dead deadlines piled up past
        # the compaction threshold, and webhooks waited in the outbox.
        assert peak["queued_entries"] >= WAVE and peak["jobs"] >= WAVE and peak["in_flight"] == WAVE, peak
        assert peak["leases"] == WAVE and peak["deadlines"] > _COMPACT_MIN and peak["outbox"] > 0, peak
        assert peak["payload_bytes"] >= WAVE * len('{"input": {"n": 0}}'), peak  # inputs and outputs held
        # And it is back to its empty size.
        sizes = store.bookkeeping()
        assert sizes["jobs"] == 0 and sizes["queued_entries"] == 0 and sizes["deadlines"] <= _COMPACT_MIN, sizes
        assert sizes["payload_bytes"] == 0, sizes
        assert store.count() == 0
        assert worker.in_flight == set() and worker.leases == {}
        assert h.rt.done_waiters.job_ids() == [] and h.rt.stops.size() == 0
        assert sorted(_Hook.got) == list(range(0, BIG_RUN, HOOK_EVERY))
        assert len(h.rt.webhooks.log) == BIG_RUN // HOOK_EVERY and h.rt.webhooks.log.maxlen == WEBHOOK_LOG_KEPT
    finally:
        receiver.shutdown()
        receiver.server_close()
