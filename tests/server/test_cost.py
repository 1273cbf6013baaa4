"""The live cost ledger on a real server: a hand-driven worker's known timeline, billed by hand, read over HTTP and by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuserve.cli import app
from gpuserve.core.billing import billing_preset
from gpuserve.core.clock import ManualClock
from tests.support.live import KEY, SERVER_FAST, Harness, deployment

PRICE = 0.001  # USD per A100-second


def test_a_worker_that_initializes_runs_idles_and_is_stopped_is_billed_as_by_hand(tmp_path: Path) -> None:
    clock = ManualClock(1000.0)
    dep = deployment("ep", gpu_type="A100", gpus_per_worker=2)
    model = billing_preset("runpod", prices_usd_per_gpu_s={"A100": PRICE})
    h = Harness(tmp_path, [dep], SERVER_FAST, backend=None, keys=(KEY,), clock=clock, billing=model).start()
    try:
        w1 = h.add_worker("w1")  # INITIALIZING from 1000
        job = h.submit({"input": {"n": 1}})
        clock.advance(2.0)
        assert w1.get("/job-take/w1").json()["id"] == job  # RUNNING from 1002
        clock.advance(3.0)
        assert w1.post(f"/job-done/w1/{job}", json={"output": 1}).json()["accepted"] == "COMPLETED"  # IDLE from 1005
        clock.advance(2.0)
        assert w1.get("/ping/w1").status_code == 200  # heard from: not lost while idle
        clock.advance(1.4)

        # Alive and idle at 1008.4: billed so far as if it stopped now, 8.4 s -> 9 s x 2 GPUs.
        body = h.client.get("/api/endpoints/ep/cost").json()
        assert body["billedSeconds"] == pytest.approx(9.0)
        assert body["gpuSeconds"] == pytest.approx(18.0)
        assert body["costUsd"] == pytest.approx(18 * PRICE)
        assert body["byState"]["INITIALIZING"]["gpuSeconds"] == pytest.approx(4.0)
        assert body["byState"]["RUNNING"]["costUsd"] == pytest.approx(6 * PRICE)
        assert body["byState"]["IDLE"]["seconds"] == pytest.approx(3.4)
        assert body["jobsStarted"] == 1
        assert body["billing"]["preset"] == "runpod"
        assert set(body["workers"]) == {"w1"}

        # The last 4 s (1004.4 .. 1008.4): 0.6 s RUNNING, 3.4 s IDLE, pro rata.
        window = h.client.get("/api/endpoints/ep/cost", params={"window_s": 4}).json()
        assert window["windowS"] == 4
        assert window["byState"]["RUNNING"]["seconds"] == pytest.approx(0.6)
        assert window["gpuSeconds"] == pytest.approx(8.0)
        assert "INITIALIZING" not in window["byState"]

        h.registry.remove("w1")  # stopped; its bill stays, and stops growing
        clock.advance(100.0)
        body = h.client.get("/api/endpoints/ep/cost").json()
        assert body["costUsd"] == pytest.approx(18 * PRICE)
        listed = h.client.get("/api/endpoints").json()["endpoints"][0]
        assert listed["cost"]["costUsd"] == pytest.approx(18 * PRICE)

        r = CliRunner().invoke(app, ["endpoints", "--url", h.url, "--api-key", KEY], env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        assert "0.0180" in r.output  # the cost column
        r = CliRunner().invoke(app, ["endpoints", "--url", h.url, "--api-key", KEY, "--json"])
        assert r.exit_code == 0 and json.loads(r.output)["endpoints"][0]["cost"]["costUsd"] == pytest.approx(18 * PRICE)
        r = CliRunner().invoke(app, ["endpoints", "--url", h.url, "--api-key", KEY, "--wide"], env={"COLUMNS": "80"})
        assert r.exit_code == 0 and "runpod_request_count" in r.output and "18.0" in r.output  # policy, GPU-seconds

        bad = h.client.get("/api/endpoints/ep/cost", params={"window_s": 0})
        assert bad.status_code == 422 and "window_s" in bad.json()["error"]
        assert h.client.get("/api/endpoints/ep/cost", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert h.client.get("/api/endpoints/nope/cost").status_code == 404
    finally:
        h.stop()
