"""The rolling-update rule as a pure function: not-yet-serving old workers go at once, a replacement comes up before each serving one leaves."""

from __future__ import annotations

from gpuserve.core.types import WorkerState
from gpuserve.live.rollout import Member, RolloutStep, next_step

IDLE, RUN, INIT, THR, OUT = WorkerState.IDLE, WorkerState.RUNNING, WorkerState.INITIALIZING, WorkerState.THROTTLED, WorkerState.OUTDATED
UNH = WorkerState.UNHEALTHY


def test_no_old_worker_left_is_done() -> None:
    assert next_step([Member("n", IDLE, "v2"), Member("o", OUT, "v1", draining=True)], "v2", surged=0, surge_room=True).done


def test_old_workers_not_serving_yet_are_retired_at_once() -> None:
    step = next_step([Member("a", INIT, "v1"), Member("b", THR, "v1"), Member("c", IDLE, "v1")], "v2", surged=0, surge_room=True)
    assert step.retire == ("a", "b") and step.surge == 0


def test_a_replacement_first_then_the_longest_idle_old_worker_then_busy_ones() -> None:
    old = [Member("busy", RUN, "v1"), Member("idle-late", IDLE, "v1", idle_since_s=20.0), Member("idle-early", IDLE, "v1", idle_since_s=10.0)]
    first = next_step(old, "v2", surged=0, surge_room=True)
    assert first == RolloutStep(surge=1, surged=1)
    starting = [*old, Member("new", INIT, "v2")]
    assert next_step(starting, "v2", surged=1, surge_room=True) == RolloutStep(surged=1)  # wait for it
    up = [*old, Member("new", IDLE, "v2")]
    assert next_step(up, "v2", surged=1, surge_room=True) == RolloutStep(retire=("idle-early",), surged=0)
    only_busy = [Member("busy", RUN, "v1"), Member("new", IDLE, "v2"), Member("new2", IDLE, "v2")]
    assert next_step(only_busy, "v2", surged=1, surge_room=True).retire == ("busy",)


def test_without_room_for_a_replacement_one_old_worker_goes_first() -> None:
    step = next_step([Member("a", IDLE, "v1"), Member("b", RUN, "v1")], "v2", surged=0, surge_room=False)
    assert step == RolloutStep(retire=("a",), surged=0)


def test_a_failed_replacement_retires_nobody_and_is_tried_again_once_gone() -> None:
    """A new version that does not come up (an image tag that is not there) must not take the endpoint down."""
    old = [Member("old", IDLE, "v1", idle_since_s=5.0)]
    assert next_step([*old, Member("new", UNH, "v2")], "v2", surged=1, surge_room=True) == RolloutStep(surged=1)
    assert next_step(old, "v2", surged=1, surge_room=True) == RolloutStep(surge=1, surged=1)  # the failed one is gone
    # Without room for another try, one old worker goes and the Controller replaces it (rule 4).
    assert next_step(old, "v2", surged=1, surge_room=False) == RolloutStep(retire=("old",), surged=0)
    # A replacement waiting THROTTLED for the old worker's GPU lets it go, as before.
    assert next_step([*old, Member("new", THR, "v2")], "v2", surged=1, surge_room=True).retire == ("old",)
