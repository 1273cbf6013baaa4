"""A wall-clock step (NTP, `date -s`) moves no deadline: no worker is declared lost and no job times out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpuserve.live.clock import SteadyClock, WallClock
from tests.support.live import Live, code_deployment

STEP_S = 40.0  # past the 3 s liveness window and the 30 s execution timeout below

SLOW = """
import time
from gpuserve import serverless

def handler(job):
    time.sleep(job["input"]["sleep_s"])
    return {"slept_s": job["input"]["sleep_s"]}

serverless.start({"handler": handler})
"""


def test_the_steady_clock_ignores_a_wall_step_and_says_how_far_the_wall_moved() -> None:
    wall, mono = [1_700_000_000.0], [5.0]
    clock = SteadyClock(wall=lambda: wall[0], monotonic=lambda: mono[0])
    assert clock.now_s() == 1_700_000_000.0  # reads as Unix seconds: stored times survive a restart
    mono[0] += 2.0
    wall[0] += 2.0 + STEP_S  # two seconds pass, and someone steps the wall clock 40 s ahead
    assert clock.now_s() == 1_700_000_002.0
    assert clock.wall_offset_s() == STEP_S


class _SteppedWall:
    """`time.time` of this process, STEP_S ahead once `step()` is called (the server runs in this process)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._real = time.time
        self._offset_s = 0.0
        monkeypatch.setattr(time, "time", lambda: self._real() + self._offset_s)

    def step(self) -> None:
        self._offset_s = STEP_S


@pytest.fixture
def stepped_wall(monkeypatch: pytest.MonkeyPatch) -> Iterator[_SteppedWall]:
    yield _SteppedWall(monkeypatch)


def _run_through_a_step(tmp_path: Path, stepped_wall: _SteppedWall, clock: SteadyClock | WallClock) -> dict[str, object]:
    dep = code_deployment(tmp_path, "ep", SLOW, max_workers=1, idle_timeout_s=60)
    with Live(tmp_path, [dep], clock=clock) as live:
        job_id = live.run("ep", {"sleep_s": 3}, policy={"executionTimeout": 30_000})
        running = live.wait("ep", job_id, {"IN_PROGRESS"})
        worker_id = running["workerId"]
        time.sleep(0.5)
        stepped_wall.step()  # mid-job: the server's wall clock jumps 40 s ahead
        done = live.wait("ep", job_id)
        # Two more heartbeats after the job: the worker is still the healthy one it was.
        time.sleep(2.5)
        states = {w.worker_id: w.state.value for w in live.workers("ep")}
        return {"done": done, "worker_id": worker_id, "states": states}


def test_a_forward_wall_step_kills_no_worker_and_times_out_no_job(tmp_path: Path, stepped_wall: _SteppedWall) -> None:
    seen = _run_through_a_step(tmp_path, stepped_wall, SteadyClock())
    done = seen["done"]
    assert isinstance(done, dict)
    # Nothing lost, nothing re-run: the job completed once, on the worker that started it.
    assert done["status"] == "COMPLETED" and done["output"] == {"slept_s": 3}
    assert done["workerId"] == seen["worker_id"] and done.get("retries", 0) == 0
    assert seen["states"] == {seen["worker_id"]: "IDLE"}
    # Durations come from the same clock: the job ran about 3 s, not 43.
    assert 2_500 <= int(done["executionTime"]) < 20_000


def test_the_same_step_under_a_wall_clock_times_the_job_out(tmp_path: Path, stepped_wall: _SteppedWall) -> None:
    """The control: what the step did before the steady clock (so the test above can fail)."""
    seen = _run_through_a_step(tmp_path, stepped_wall, WallClock())
    done = seen["done"]
    assert isinstance(done, dict) and done["status"] == "TIMED_OUT"
