"""The worker registry: the one record of which jobs a worker holds, its tokens, and the changes it announces."""

from __future__ import annotations

from gpuserve.core.types import WorkerState
from gpuserve.live.registry import Change, LiveWorker, WorkerRegistry


def test_jobs_follow_takes_and_ends_and_move_the_worker_between_idle_and_running() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0, capacity=2)
    reg.on_take("w1", [], 1.0)  # first poll: up, idle
    assert reg.get("w1").state is WorkerState.IDLE  # type: ignore[union-attr]
    reg.on_take("w1", ["a", "b"], 2.0)
    assert reg.jobs_of("w1") == ["a", "b"] and reg.get("w1").state is WorkerState.RUNNING  # type: ignore[union-attr]
    reg.on_job_end("w1", "a", 3.0)
    reg.on_job_end("w1", "b", 4.0)
    w = reg.get("w1")
    assert w is not None and w.state is WorkerState.IDLE and w.idle_since_s == 4.0 and reg.jobs_of("w1") == []


def test_a_worker_removed_while_holding_jobs_leaves_them_as_orphans_until_released() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", ["j1"], 1.0)
    gone = reg.remove("w1", 2.0)  # the backend reaped a crashed process
    assert gone is not None and reg.get("w1") is None
    assert reg.orphaned() == ["w1"] and reg.jobs_of("w1") == ["j1"]
    assert reg.release_jobs("w1", 3.0) == ["j1"]
    assert reg.orphaned() == [] and reg.jobs_of("w1") == []


def test_an_orphan_whose_job_ended_meanwhile_needs_no_release() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", ["j1"], 1.0)
    reg.remove("w1")
    reg.on_job_end("w1", "j1", 2.0)  # e.g. its execution timeout fired first
    assert reg.orphaned() == []


def test_release_takes_every_job_from_a_live_worker() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0, capacity=3)
    reg.on_take("w1", ["c", "a", "b"], 1.0)
    reg.set_state("w1", WorkerState.UNHEALTHY, 2.0)
    assert reg.unhealthy_holding_jobs() == ["w1"]
    assert reg.release_jobs("w1", 2.0) == ["a", "b", "c"]
    assert reg.unhealthy_holding_jobs() == [] and reg.get("w1").draining  # type: ignore[union-attr]


def test_tokens_are_kept_as_digests_and_an_adopted_worker_keeps_its_own() -> None:
    reg = WorkerRegistry()
    fresh = reg.add("w1", "ep", 0.0)
    assert fresh.startswith("wk_") and reg.authenticate("w1", fresh) is not None
    assert reg.authenticate("w1", "wk_wrong") is None and fresh not in reg.get("w1").token_hash  # type: ignore[union-attr]
    kept = reg.add("w2", "ep", 0.0, token="wk_the_container_s_own")
    assert kept == "wk_the_container_s_own" and reg.authenticate("w2", kept) is not None


def test_revive_is_a_fresh_start_under_a_new_token() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", [], 1.0)
    reg.set_draining("w1", True)
    assert reg.revive("w1", 9.0, capacity=2, token="wk_new")
    w = reg.get("w1")
    assert w is not None and w.state is WorkerState.INITIALIZING and w.first_take_s is None
    assert not w.draining and w.created_s == 9.0 and w.last_seen_s == 9.0 and w.capacity == 2
    assert reg.authenticate("w1", "wk_new") is not None
    assert not reg.revive("nobody", 9.0, capacity=1, token="wk_x")


def test_a_restarted_worker_is_not_silent_until_it_first_calls() -> None:
    """A stopped container started again boots a new process: on a loaded host that can take longer
    than the liveness timeout, which must not count before its first call (as for a cold start)."""
    reg = WorkerRegistry()
    reg.add("paused", "ep", 0.0)
    reg.add("stopped", "ep", 0.0)
    for wid in ("paused", "stopped"):
        reg.on_take(wid, [], 1.0)
    assert reg.revive("paused", 9.0, capacity=1, token="wk_a")
    assert reg.revive("stopped", 9.0, capacity=1, token="wk_b", restarted=True)
    assert [w.worker_id for w in reg.silent_since(30.0, timeout_s=5.0)] == ["paused"]
    reg.on_take("stopped", [], 31.0)  # its first call: from now on it is watched
    assert sorted(w.worker_id for w in reg.silent_since(40.0, timeout_s=5.0)) == ["paused", "stopped"]


def test_subscribers_hear_every_change_in_order_with_its_time_and_jobs() -> None:
    reg = WorkerRegistry()
    heard: list[tuple[str, Change, WorkerState, float | None, tuple[str, ...]]] = []

    def listen(w: LiveWorker, change: Change, now_s: float | None, job_ids: tuple[str, ...]) -> None:
        heard.append((w.worker_id, change, w.state, now_s, job_ids))
        assert reg.get(w.worker_id) is not None or change is Change.REMOVED  # a listener may read the registry

    reg.subscribe(listen)
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", ["j"], 1.0)
    reg.on_job_end("w1", "j", 2.0)
    reg.set_state("w1", WorkerState.OUTDATED, 3.0)
    reg.remove("w1", 4.0)
    assert heard == [
        ("w1", Change.ADDED, WorkerState.INITIALIZING, 0.0, ()),
        ("w1", Change.TOOK, WorkerState.RUNNING, 1.0, ("j",)),
        ("w1", Change.JOB_ENDED, WorkerState.IDLE, 2.0, ("j",)),
        ("w1", Change.STATE, WorkerState.OUTDATED, 3.0, ()),
        ("w1", Change.REMOVED, WorkerState.OUTDATED, 4.0, ()),
    ]


def test_a_held_job_two_heartbeats_did_not_list_is_released_after_the_grace() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", ["a"], 1.0)
    assert reg.on_ping("w1", ["a"], 1.5, lease_grace_s=1.0).unlisted == ()  # it lists its jobs
    reg.on_job_end("w1", "a", 2.0)
    reg.on_take("w1", ["b"], 10.0)  # its answer never reached the worker
    assert reg.on_ping("w1", [], 10.2, lease_grace_s=1.0).unlisted == ()  # may predate the answer
    assert reg.on_ping("w1", [], 10.8, lease_grace_s=1.0).unlisted == ()  # inside the grace
    beat = reg.on_ping("w1", [], 11.2, lease_grace_s=1.0)
    assert beat.unlisted == ("b",) and reg.jobs_of("w1") == []
    w = reg.get("w1")
    assert w is not None and w.state is WorkerState.IDLE and w.leases == {}


def test_a_listed_job_renews_its_lease_and_a_job_it_does_not_hold_is_a_stranger() -> None:
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0, capacity=2)
    reg.on_take("w1", ["a"], 1.0)
    for t in (2.0, 3.0, 4.0, 5.0):  # a long job, listed by every heartbeat
        beat = reg.on_ping("w1", ["a", "zombie"], t, lease_grace_s=1.0)
        assert beat.unlisted == () and beat.strangers == ("zombie",)
    assert reg.jobs_of("w1") == ["a"]


def test_a_worker_whose_heartbeats_never_listed_a_job_keeps_what_it_holds() -> None:
    """An SDK whose heartbeat lists nothing would otherwise lose every job after two heartbeats."""
    reg = WorkerRegistry()
    reg.add("w1", "ep", 0.0)
    reg.on_take("w1", ["a"], 1.0)
    for t in (2.0, 3.0, 4.0):
        assert reg.on_ping("w1", [], t, lease_grace_s=1.0).unlisted == ()
    assert reg.jobs_of("w1") == ["a"]
