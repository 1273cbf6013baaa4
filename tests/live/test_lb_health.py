"""Load-balancing health polls: the start timeout counts from a worker's start, not from a wait THROTTLED before it."""

from __future__ import annotations

import asyncio
import socket

from gpuserve.core.clock import ManualClock
from gpuserve.core.types import WorkerState
from gpuserve.live.lb_health import HealthMonitor
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.settings import ServerSettings

TIMEOUT_S = 480.0


def _monitor(reg: WorkerRegistry, clock: ManualClock) -> HealthMonitor:
    settings = ServerSettings(lb_start_timeout_s=TIMEOUT_S, lb_unhealthy_after=3)
    return HealthMonitor({"ep"}, reg, settings, clock, on_ready=lambda _eid: None)


def _state(reg: WorkerRegistry, worker_id: str) -> WorkerState:
    w = reg.get(worker_id)
    assert w is not None
    return w.state


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: a poll there is refused at once (no answer)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_placed_after_waiting_throttled_past_the_timeout_gets_the_whole_timeout_to_answer() -> None:
    reg, clock = WorkerRegistry(), ManualClock()
    monitor = _monitor(reg, clock)
    reg.add("w1", "ep", 0.0)
    reg.set_state("w1", WorkerState.THROTTLED, 0.0)  # no free GPU
    placed_s = 2 * TIMEOUT_S  # a GPU freed long after the timeout
    reg.set_state("w1", WorkerState.INITIALIZING, placed_s)
    monitor.observe("w1", None, placed_s + 1.0)  # its server is not listening yet
    assert _state(reg, "w1") is WorkerState.INITIALIZING
    monitor.observe("w1", None, placed_s + TIMEOUT_S - 1.0)
    assert _state(reg, "w1") is WorkerState.INITIALIZING
    monitor.observe("w1", None, placed_s + TIMEOUT_S + 1.0)  # the timeout, counted from its placement
    w = reg.get("w1")
    assert w is not None and w.state is WorkerState.UNHEALTHY


def test_a_worker_never_throttled_still_times_out_from_its_registration() -> None:
    reg, clock = WorkerRegistry(), ManualClock()
    monitor = _monitor(reg, clock)
    reg.add("w1", "ep", 10.0)
    monitor.observe("w1", None, 10.0 + TIMEOUT_S - 1.0)
    assert _state(reg, "w1") is WorkerState.INITIALIZING
    monitor.observe("w1", None, 10.0 + TIMEOUT_S + 1.0)
    assert _state(reg, "w1") is WorkerState.UNHEALTHY


def test_a_revived_worker_times_out_from_its_revival() -> None:
    reg, clock = WorkerRegistry(), ManualClock()
    monitor = _monitor(reg, clock)
    token = reg.add("w1", "ep", 0.0)
    assert reg.revive("w1", 1000.0, 1, token, restarted=True)
    monitor.observe("w1", None, 1001.0)
    assert _state(reg, "w1") is WorkerState.INITIALIZING


def test_a_throttled_worker_is_not_polled_however_long_it_waits() -> None:
    """The Docker backend gives a worker its port (and health URL) when it registers it, THROTTLED or not."""
    reg, clock = WorkerRegistry(), ManualClock()
    monitor = _monitor(reg, clock)
    port = _closed_port()
    reg.add("w1", "ep", 0.0)
    reg.set_upstream("w1", f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/ping")
    reg.set_state("w1", WorkerState.THROTTLED, 0.0)
    clock.set(3 * TIMEOUT_S)

    async def polls() -> None:
        try:
            for _ in range(3):  # lb_unhealthy_after polls
                await monitor.poll_once()
        finally:
            await monitor.aclose()

    asyncio.run(polls())
    assert _state(reg, "w1") is WorkerState.THROTTLED
    # Placed at last: polled from now on, and given the whole timeout from its placement.
    reg.set_state("w1", WorkerState.INITIALIZING, clock.now_s())
    clock.advance(1.0)
    asyncio.run(polls())
    assert _state(reg, "w1") is WorkerState.INITIALIZING
    clock.advance(TIMEOUT_S)
    asyncio.run(polls())
    assert _state(reg, "w1") is WorkerState.UNHEALTHY  # polled: its silence now counts
