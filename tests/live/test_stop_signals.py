"""The job-stop channel keeps a stop it may need to send again until the worker's heartbeats stop listing the job."""

from __future__ import annotations

import asyncio

from gpuserve.live.waiters import StopSignals


def test_a_stop_is_resent_after_a_heartbeat_built_before_the_take_answer() -> None:
    """The SDK drops a stop that comes before its job task starts; the server sends it again while
    heartbeats list the job. One heartbeat that does not list it yet (built before the take's answer
    arrived) must not make the server forget the stop."""
    stops = StopSignals()

    async def poll() -> list[str]:
        return await stops.wait("w1", 0.01, closing=False)

    stops.signal("w1", "j1")
    assert asyncio.run(poll()) == ["j1"]  # handed out; the SDK had no task for it yet and dropped it
    stops.resend_listed("w1", [])  # a heartbeat built before the take's answer: not listed yet
    assert stops.told("w1", "j1")
    stops.resend_listed("w1", ["j1"])  # the next one lists it: the stop goes out again
    assert asyncio.run(poll()) == ["j1"]
    stops.resend_listed("w1", [])
    stops.resend_listed("w1", [])  # two in a row without it: the job is gone from the worker
    assert not stops.told("w1", "j1") and stops.size() == 0
