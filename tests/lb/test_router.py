"""LbRouter on its own: the pick, FIFO holding, the hold timeout, shutdown, and the demand it reports (a real registry)."""

from __future__ import annotations

import asyncio

import pytest

from gpuserve.core.clock import ManualClock
from gpuserve.core.types import LoadBalancingSpec
from gpuserve.live.lb import LbRouter, Rejected
from gpuserve.live.registry import WorkerRegistry


def _router(hold_timeout_s: float = 30.0, max_concurrency: int = 2, workers: int = 2) -> tuple[LbRouter, WorkerRegistry]:
    registry = WorkerRegistry()
    clock = ManualClock()
    for i in range(workers):
        registry.add(f"w{i}", "ep", 0.0)
        registry.set_upstream(f"w{i}", f"http://127.0.0.1:{9000 + i}", f"http://127.0.0.1:{9000 + i}/ping")
        registry.on_take(f"w{i}", [], 0.0)  # ready (its first 200)
    spec = LoadBalancingSpec(concurrency_target=1, max_concurrency=max_concurrency, hold_timeout_s=hold_timeout_s)
    return LbRouter("ep", spec, registry, clock, max_workers=lambda: workers), registry


def test_fewest_in_flight_then_the_most_recently_used() -> None:
    async def go() -> None:
        router, registry = _router()
        a = await router.acquire()
        b = await router.acquire()
        assert {a.worker_id, b.worker_id} == {"w0", "w1"}  # one each
        router.release(a)
        router.release(b)
        # Both idle now: ties go to the most recently used (b's worker), again and again.
        for _ in range(3):
            c = await router.acquire()
            assert c.worker_id == b.worker_id
            router.release(c)
        assert router.in_flight() == 0 and all(not w.in_flight for w in registry.all("ep"))

    asyncio.run(go())


def test_held_requests_get_freed_slots_oldest_first_and_count_as_demand() -> None:
    async def go() -> None:
        router, _ = _router(max_concurrency=1, workers=1)
        first = await router.acquire()
        held = [asyncio.create_task(router.acquire()) for _ in range(2)]
        await asyncio.sleep(0)
        stats = router.stats(0.0)
        assert (stats.in_queue, stats.in_progress, stats.submitted_total) == (2, 1, 3)
        router.release(first)  # the slot goes to the oldest held request
        got = await held[0]
        assert got.worker_id == "w0" and not held[1].done()
        router.release(got)
        router.release(await held[1])
        assert router.stats(0.0).in_queue == 0

    asyncio.run(go())


def test_the_hold_timeout_and_shutdown_refuse_with_a_reason() -> None:
    async def go() -> None:
        router, _ = _router(hold_timeout_s=0.05, max_concurrency=1, workers=1)
        lease = await router.acquire()
        with pytest.raises(Rejected, match=r"max_workers reached \(1 workers, each at max_concurrency 1\) for 0.05 s"):
            await router.acquire()
        waiting = asyncio.create_task(router.acquire())
        await asyncio.sleep(0)
        router.reject_held("the server is shutting down")
        with pytest.raises(Rejected, match="the server is shutting down"):
            await waiting
        assert router.rejected_total == 2 and router.held == 0
        router.release(lease)

    asyncio.run(go())


def test_a_worker_gone_is_forgotten() -> None:
    async def go() -> None:
        router, registry = _router()
        router.release(await router.acquire())
        registry.remove("w0")
        registry.remove("w1")
        router.prune()
        assert router._last_used == {}
        with pytest.raises(Rejected, match="no healthy worker"):
            router.spec = LoadBalancingSpec(hold_timeout_s=0.0)
            await router.acquire()

    asyncio.run(go())
