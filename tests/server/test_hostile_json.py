"""Hostile JSON bodies get a 400 that names the problem, never a 500, on the fast path and through FastAPI."""

from __future__ import annotations

import pytest

from gpuserve.server.limits import MAX_JSON_DEPTH
from tests.support.live import Harness

HOSTILE = {
    "NaN": b'{"input": {"x": NaN}}',
    "Infinity": b'{"input": {"x": -Infinity}}',
    "970 levels": b'{"input": ' + b"[" * 970 + b"]" * 970 + b"}",
    "a 5,000-digit integer": b'{"input": {"x": ' + b"9" * 5000 + b"}}",
}


@pytest.mark.parametrize("fast_path", [True, False])
def test_hostile_bodies_get_400_and_a_deep_but_allowed_one_runs(make_server, fast_path: bool) -> None:
    h: Harness = make_server(fast_path=fast_path)
    headers = {"Content-Type": "application/json"}
    for name, raw in HOSTILE.items():
        for route in ("run", "runsync"):
            r = h.client.post(f"/v2/ep/{route}", content=raw, headers=headers)
            assert r.status_code == 400, (name, route, r.status_code, r.text)
            assert "JSON" in r.json()["error"] or "nests deeper" in r.json()["error"], r.text
    # Brackets inside strings do not count, and MAX_JSON_DEPTH levels in all are accepted.
    deep = b'{"input": {"s": "' + b"[" * 500 + b'", "v": ' + b"[" * (MAX_JSON_DEPTH - 2) + b"]" * (MAX_JSON_DEPTH - 2) + b"}}"
    r = h.client.post("/v2/ep/run", content=deep, headers=headers)
    assert r.status_code == 200, r.text
    assert h.store.count() == 1  # nothing refused was stored


def test_a_worker_result_with_nan_fails_its_job_with_the_reason(make_server) -> None:
    h: Harness = make_server()
    w1 = h.add_worker("w1")
    job_id = h.submit({"input": {}})
    assert w1.get("/job-take/w1").json()["id"] == job_id
    r = w1.post(f"/job-done/w1/{job_id}", content=b'{"output": NaN}')
    assert r.status_code == 400
    body = h.job_status(job_id)
    assert body["status"] == "FAILED" and "NaN" in body["error"]
