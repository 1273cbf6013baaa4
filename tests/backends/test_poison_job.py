"""A poison job that kills every worker it reaches ends FAILED after max_retries, and slows only the slots it crashed.

A real server with the process backend. The poison job waits until the good jobs submitted with
it are running, then kills its worker (os._exit), each time it is retried. The crash back-off is
per slot (core/crashslots.py): the good jobs' workers wait none of it, and the circuit breaker
(the runtime's max_retries) fails the poison job with its reason instead of backing the endpoint off.
"""

from __future__ import annotations

from pathlib import Path

from gpuserve.core.backoff import CRASH_BACKOFF
from gpuserve.core.crashslots import CrashSlots, Start
from tests.support.live import FAST, Live, code_deployment

GOODS = 3

HANDLER = """
import os, time
from gpuserve import serverless

MARKS = os.environ["MARKS"]

def handler(job):
    if job["input"]["kind"] == "good":
        open(os.path.join(MARKS, job["id"]), "w").close()
        time.sleep(1.0)
        return {"pid": os.getpid()}
    deadline = time.monotonic() + 30  # the first run waits for the good jobs to be running
    while len(os.listdir(MARKS)) < job["input"]["goods"] and time.monotonic() < deadline:
        time.sleep(0.05)
    os._exit(1)

serverless.start({"handler": handler})
"""


def test_a_poison_job_fails_after_its_retries_and_good_jobs_wait_no_back_off(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    dep = code_deployment(tmp_path, "mixed", HANDLER, max_workers=GOODS + 1, env={"MARKS": str(marks)})
    with Live(tmp_path, [dep]) as live:
        poison = live.run("mixed", {"kind": "poison", "goods": GOODS})
        goods = [live.run("mixed", {"kind": "good"}) for _ in range(GOODS)]
        done = [live.wait("mixed", job_id) for job_id in goods]
        failed = live.wait("mixed", poison, timeout_s=90)
        slots = {body["workerId"]: live.backend.crash_slot(body["workerId"]) for body in done}
    assert [body["status"] for body in done] == ["COMPLETED"] * GOODS, done
    # Each good job ran on its own worker, in a fresh slot whose spawn waited no back-off.
    assert len(slots) == GOODS and set(slots.values()) == {(0, 0.0)}, slots
    assert failed["status"] == "FAILED", failed
    assert failed["retries"] == FAST.max_retries
    assert "exited with code 1 while running it" in failed["error"] and f"gave up after {FAST.max_retries} retries" in failed["error"], failed


def test_a_crash_backs_off_only_the_slot_it_emptied() -> None:
    slots = CrashSlots()
    # Three workers each crash once on the same poison input at t=10: three empty slots, 1 s each.
    for _ in range(3):
        slots.crashed(0, lived_s=2.0, now_s=10.0)
    assert [slots.claim(10.0) for _ in range(3)] == [Start(1, 11.0)] * 3
    # Any other start waits nothing (an endpoint-wide streak of 3 would have made it wait 4 s).
    fresh = slots.claim(10.0)
    assert (fresh.streak, fresh.wait_s(10.0)) == (0, 0.0)
    # The same slot crashing again doubles its own wait, capped.
    streak = 0
    for n in range(1, 10):
        streak = slots.crashed(streak, lived_s=0.5, now_s=100.0).streak
        start = slots.claim(100.0)
        assert start.wait_s(100.0) == CRASH_BACKOFF.delay_s(n) and start.streak == n
    assert CRASH_BACKOFF.delay_s(9) == CRASH_BACKOFF.max_s
    # A worker that lived a healthy lifetime starts its slot's streak again.
    assert slots.crashed(streak, lived_s=120.0, now_s=200.0).streak == 1
    # A slot nobody refilled is forgotten after a healthy lifetime past its back-off.
    assert len(slots) == 1 and slots.claim(200.0 + 1.0 + 60.0).streak == 0
