"""The live runtime follows gpuserve.schedule: submits it skips are passes that would have changed nothing.

With consult_on_arrival="verify" the server skips exactly as in production ("auto") and also
runs each skipped pass as a preview (applied to nothing); any preview that would have started
or stopped a worker, or changed the policy's state, is recorded. Real server, real worker
processes, real jobs: served arrivals (an idle worker takes the job at once) and arrivals that
queue at max_workers are both exercised.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.support.live import SERVER_FAST, deployment, wait_until

VERIFY = replace(SERVER_FAST, consult_on_arrival="verify")


def _dep(policy: str, **params: object):
    dep = replace(
        deployment("ep", "slow_gpuserve.py", min_workers=2, max_workers=2, idle_timeout_s=120.0, policy=policy),
        sdk="gpuserve",
    )
    return replace(dep, spec=replace(dep.spec, policy=replace(dep.spec.policy, params=params)))


def _exercise(h) -> list[str]:
    """Served arrivals one at a time, then a burst that queues at max_workers; returns the job ids."""
    wait_until(lambda: sum(1 for w in h.registry.all("ep") if w.first_take_s is not None) == 2, 60, "two ready workers")
    ids = []
    for i in range(6):  # each finds an idle worker parked in its long poll
        job_id = h.submit({"input": {"i": i}})
        h.wait_status(job_id, {"COMPLETED"}, timeout_s=60)
        wait_until(lambda: h.rt.takers.parked("ep") == 2, 30, "both workers parked again")
        ids.append(job_id)
    burst = [h.submit({"input": {"i": 100 + i, "sleep_s": 0.3}}) for i in range(8)]  # 2 run, the rest queue at max
    for job_id in burst:
        h.wait_status(job_id, {"COMPLETED"}, timeout_s=60)
    return ids + burst


@pytest.mark.parametrize("policy", ["runpod_request_count", "fixed_keepalive", "runpod_queue_delay"])
def test_skipped_submits_would_have_changed_nothing(make_server, policy: str) -> None:
    h = make_server([_dep(policy)], backend="process", settings=VERIFY)
    jobs = _exercise(h)
    assert len(jobs) == 14
    assert h.rt.skip_divergences == []
    assert h.rt.arrivals_skipped >= 6  # at least the served arrivals were skipped
    assert h.rt.arrivals_skipped + h.rt.arrivals_consulted == 14


def test_a_policy_that_declares_nothing_is_shown_every_submit(make_server) -> None:
    h = make_server([_dep("hybrid_histogram")], backend="process", settings=VERIFY)
    _exercise(h)
    assert h.rt.arrivals_skipped == 0 and h.rt.arrivals_consulted == 14


def test_always_consults_on_every_submit(make_server) -> None:
    h = make_server([_dep("runpod_request_count")], backend="process", settings=replace(SERVER_FAST, consult_on_arrival="always"))
    _exercise(h)
    assert h.rt.arrivals_skipped == 0 and h.rt.arrivals_consulted == 14
