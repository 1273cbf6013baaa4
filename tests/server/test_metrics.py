"""/metrics on a real server with a real worker process: a known sequence of jobs, scraped and parsed, counts exact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpuserve.core.billing import billing_preset
from gpuserve.server.metrics import route_of
from tests.support.live import Live, code_deployment, deployment

HANDLER = """
from gpuserve import serverless

def handler(job):
    if job["input"].get("fail"):
        raise ValueError("asked to fail")
    return job["input"]

serverless.start({"handler": handler})
"""


def _scrape(url: str) -> dict[str, list[Any]]:
    r = httpx.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return samples


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The one sample of `name` whose labels include `labels` (0 if the series does not exist yet)."""
    found = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return float(found[0]) if found else 0.0


def _sum(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(float(s.value) for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_known_sequence_of_jobs_gives_exact_counts(tmp_path: Path) -> None:
    ep = code_deployment(tmp_path, "ep", HANDLER, max_workers=1, idle_timeout_s=600)
    parked = deployment("parked", max_workers=0)  # no worker ever starts: its job waits until cancelled
    billing = billing_preset("runpod", prices_usd_per_gpu_s={"cpu": 0.001})
    with Live(tmp_path, [ep, parked], backend="process", billing=billing) as live:
        for i in range(3):
            r = live.http.post("/ep/runsync", json={"input": {"i": i}})
            assert r.json()["status"] == "COMPLETED", r.text
        assert live.http.post("/ep/runsync", json={"input": {"fail": True}}).json()["status"] == "FAILED"
        waiting = live.run("parked", {"x": 1})
        assert live.http.post(f"/parked/cancel/{waiting}").json()["status"] == "CANCELLED"
        assert live.http.get("/ep/status/no-such-job").status_code == 404
        assert live.http.get("/no-such-route").status_code == 404  # /v2/no-such-route

        s = _scrape(live.url)
        assert _value(s, "gpuserve_jobs_submitted_total", endpoint="ep") == 4
        assert _value(s, "gpuserve_jobs_submitted_total", endpoint="parked") == 1
        assert _value(s, "gpuserve_jobs_ended_total", endpoint="ep", status="COMPLETED") == 3
        assert _value(s, "gpuserve_jobs_ended_total", endpoint="ep", status="FAILED") == 1
        assert _value(s, "gpuserve_jobs_ended_total", endpoint="parked", status="CANCELLED") == 1
        assert _value(s, "gpuserve_jobs_queued", endpoint="parked") == 0
        assert _value(s, "gpuserve_jobs_in_progress", endpoint="ep") == 0
        # Every job the worker took waited and ran; the cancelled one did neither.
        assert _value(s, "gpuserve_job_queue_delay_seconds_count", endpoint="ep") == 4
        assert _value(s, "gpuserve_job_queue_delay_seconds_bucket", endpoint="ep", le="+Inf") == 4
        assert _value(s, "gpuserve_job_execution_seconds_count", endpoint="ep") == 4
        assert _value(s, "gpuserve_job_queue_delay_seconds_count", endpoint="parked") == 0
        # One worker, started once, cold, with its stages measured.
        assert _sum(s, "gpuserve_workers", endpoint="ep") == 1
        assert _sum(s, "gpuserve_workers", endpoint="parked") == 0
        assert _value(s, "gpuserve_worker_starts_total", endpoint="ep", kind="cold") == 1
        assert _value(s, "gpuserve_worker_start_stage_seconds_count", endpoint="ep", stage="total") == 1
        assert _value(s, "gpuserve_worker_start_stage_seconds_count", endpoint="ep", stage="runtime_init") == 1
        assert _sum(s, "gpuserve_scale_actions_total", endpoint="ep", action="start") == 1
        assert _sum(s, "gpuserve_scale_actions_total", endpoint="ep", action="stop") == 0
        # The ledger: the worker is billed while it initializes and runs; the bill includes the rounding.
        assert _value(s, "gpuserve_billed_gpu_seconds_total", endpoint="ep", state="INITIALIZING") > 0
        assert _value(s, "gpuserve_billed_gpu_seconds_total", endpoint="parked", state="IDLE") == 0
        pro_rata = _sum(s, "gpuserve_cost_usd_total", endpoint="ep")
        assert 0 < pro_rata <= _value(s, "gpuserve_bill_usd", endpoint="ep") <= pro_rata + 0.001
        # HTTP: route templates, never ids; the fast path's requests counted like the rest.
        assert _value(s, "gpuserve_http_requests_total", method="POST", route="/v2/{endpoint_id}/runsync", status="200") == 4
        assert _value(s, "gpuserve_http_requests_total", method="POST", route="/v2/{endpoint_id}/run", status="200") == 1
        assert _value(s, "gpuserve_http_requests_total", method="POST", route="/v2/{endpoint_id}/cancel/{job_id}", status="200") == 1
        assert _value(s, "gpuserve_http_requests_total", method="GET", route="/v2/{endpoint_id}/status/{job_id}", status="404") == 1
        assert _sum(s, "gpuserve_http_requests_total", route="/v2/{endpoint_id}/job-done/{worker_id}/{job_id}") == 4
        assert _value(s, "gpuserve_http_requests_total", method="GET", route="other", status="404") == 1
        assert not any(waiting in str(x.labels) for x in s["gpuserve_http_requests_total"])
        assert _value(s, "process_cpu_seconds_total") > 0
        assert _sum(s, "python_gc_collections_total") > 0

        # A second server in the same process keeps its own registry; without the fast path,
        # the same requests are counted the same way.
        with Live(tmp_path / "second", [deployment("ep")], backend=None, fast_path=False) as other:
            t = _scrape(other.url)
            assert _value(t, "gpuserve_jobs_submitted_total", endpoint="ep") == 0
            assert _sum(t, "gpuserve_http_requests_total") == 0
            assert other.http.get("/ep/status/no-such-job").status_code == 404
            assert other.http.post("/ep/run", json={"input": {}}).status_code == 200
            t = _scrape(other.url)
            assert _value(t, "gpuserve_http_requests_total", method="GET", route="/v2/{endpoint_id}/status/{job_id}", status="404") == 1
            assert _value(t, "gpuserve_http_requests_total", method="POST", route="/v2/{endpoint_id}/run", status="200") == 1
            assert _value(t, "gpuserve_http_requests_total", method="GET", route="/metrics", status="200") == 1
        assert _value(_scrape(live.url), "gpuserve_jobs_submitted_total", endpoint="ep") == 4


def test_route_templates_never_carry_ids() -> None:
    assert route_of("/v2/ep/run") == "/v2/{endpoint_id}/run"
    assert route_of("/v2/ep/job-done/w-1/j-2") == "/v2/{endpoint_id}/job-done/{worker_id}/{job_id}"
    assert route_of("/v2/ep/status/j-1") == "/v2/{endpoint_id}/status/{job_id}"
    assert route_of("/v2/ep/status/j-1/extra") == "/v2/{endpoint_id}/*"  # a load-balancing endpoint's own path
    assert route_of("/v2/lb/generate") == "/v2/{endpoint_id}/*"
    assert route_of("/nothing/here") == "other"


def test_metrics_auth_admin_takes_an_admin_key_and_none_is_open(tmp_path: Path) -> None:
    from dataclasses import replace

    from gpuserve.config.endpoints import parse_endpoints
    from gpuserve.core.errors import ConfigError
    from gpuserve.live.settings import ServerSettings
    from gpuserve.platform import Platform
    from tests.support.live import ADMIN_KEY, API_KEY, FAST

    with Live(tmp_path / "admin", [deployment("ep")], replace(FAST, metrics_auth="admin"), backend=None) as live:
        anonymous = httpx.get(f"{live.url}/metrics")
        assert anonymous.status_code == 401 and "admin key" in anonymous.json()["error"]
        client = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
        assert client.status_code == 403 and "client key" in client.json()["error"]
        admin = httpx.get(f"{live.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert admin.status_code == 200
        counted = {f.name: f for f in text_string_to_metric_families(admin.text)}["gpuserve_http_requests"]
        by_status = {s.labels["status"]: s.value for s in counted.samples if s.labels.get("route") == "/metrics"}
        assert by_status == {"401": 1.0, "403": 1.0}  # this scrape is counted once it is answered
    with Live(tmp_path / "open", [deployment("ep")], backend=None) as live:  # the default: none
        assert httpx.get(f"{live.url}/metrics").status_code == 200

    # endpoints.yaml: server.metrics_auth reaches the server's settings; anything else is refused by name.
    (tmp_path / "h.py").write_text("")
    doc = {"server": {"metrics_auth": "admin", "admin_keys": ["sk-ops"]}, "endpoints": [{"id": "e", "handler": "h.py"}]}
    platform = Platform.from_config(parse_endpoints(doc, tmp_path), data_dir=tmp_path / "yaml", backend=None)
    try:
        assert platform.settings.metrics_auth == "admin"
    finally:
        platform.stop()
    with pytest.raises(ConfigError, match=r"metrics_auth.*bearer"):
        parse_endpoints({**doc, "server": {"metrics_auth": "bearer"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"metrics_auth must be 'admin' or 'none', was 'open'"):
        ServerSettings(metrics_auth="open")
