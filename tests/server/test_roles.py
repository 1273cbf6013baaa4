"""Keys with roles on a real server: admin keys for the operator routes, client keys for the job API, worker tokens for the worker API."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from gpuserve.config.endpoints import parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.live.auth import hash_token
from tests.support.live import KEY, SERVER_FAST, Harness, deployment, serve_process, stop_process, wait_until

HANDLERS = Path(__file__).parent / "handlers"


def test_client_keys_get_403_on_operator_routes_and_worker_tokens_401_on_client_routes(make_server):
    h = make_server()  # endpoint key KEY, admin key ADMIN_KEY, no backend: the test is the worker
    worker = h.add_worker()  # base URL /v2/ep, its token as the Authorization header
    token = worker.headers["authorization"]
    for method, path in [
        ("GET", "/api/workers/w1/logs"),
        ("GET", "/api/workers/w1/logs/stream"),
        ("GET", "/api/endpoints/ep/logs/stream"),
        ("POST", "/api/workers/w1/exec"),
        ("POST", "/api/endpoints/ep/deploy"),
    ]:
        r = h.client.request(method, path, json={"command": ["true"], "image": "x"})
        assert r.status_code == 403, (path, r.text)
        assert "admin role" in r.json()["error"] and "server.admin_keys" in r.json()["error"]
        r = httpx.request(method, h.url + path, json={"command": ["true"], "image": "x"}, headers={"Authorization": token})
        assert r.status_code == 401, (path, r.text)
    assert h.admin.get("/api/workers/w1/logs").status_code == 404  # admitted: this server keeps no logs
    # The worker's token opens its own worker routes only, never the job API.
    assert worker.get("/ping/w1").status_code == 200
    for method, path in [("POST", "/run"), ("POST", "/runsync"), ("GET", "/health"), ("GET", "/status/x")]:
        r = worker.request(method, path, json={"input": {}})
        assert r.status_code == 401, (path, r.text)
    # An admin key is not a worker token either.
    assert h.admin.get("/v2/ep/ping/w1").status_code == 401


def test_a_config_without_admin_keys_keeps_operator_routes_closed_or_on_loopback(tmp_path):
    with Harness(tmp_path / "a", [deployment()], SERVER_FAST, backend=None, keys=(KEY,), admin_keys=()) as h:
        r = h.client.get("/api/workers/w1/logs")
        assert r.status_code == 403 and "set server.admin_keys" in r.json()["error"]
    with Harness(tmp_path / "b", [deployment()], SERVER_FAST, backend=None, keys=(), admin_keys=()) as h:
        r = httpx.get(f"{h.url}/api/workers/w1/logs")  # nothing keyed: open, from 127.0.0.1
        assert r.status_code == 404 and "no backend" in r.json()["error"]


def test_admin_keys_in_the_file_are_stored_as_digests_and_empty_ones_refused():
    cfg = parse_endpoints({"server": {"admin_keys": ["sk-ops"]}, "endpoints": [{"id": "e", "image": "x"}]})
    assert cfg.admin_key_hashes == frozenset({hash_token("sk-ops")})
    with pytest.raises(ConfigError, match=r"server\.admin_keys"):
        parse_endpoints({"server": {"admin_keys": [""]}, "endpoints": [{"id": "e", "image": "x"}]})


def test_a_stopped_workers_log_is_not_readable_with_another_endpoints_key(tmp_path):
    handler = HANDLERS / "print_gpuserve.py"
    (tmp_path / "endpoints.yaml").write_text(
        "server: {heartbeat_interval_s: 2, admin_keys: [sk-ops]}\n"
        "endpoints:\n"
        f"  a: {{handler: {handler}, api_keys: [sk-a], scaling: {{max_workers: 1, idle_timeout_s: 1, extra_workers: 0}}}}\n"
        f"  b: {{handler: {handler}, api_keys: [sk-b], scaling: {{max_workers: 1, extra_workers: 0}}}}\n"
    )
    proc, url = serve_process(tmp_path / "endpoints.yaml", tmp_path / "data")
    try:
        as_a = httpx.Client(base_url=url, headers={"Authorization": "Bearer sk-a"}, timeout=60)
        r = as_a.post("/v2/a/runsync", json={"input": {"line": "secret of a"}})
        assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text
        worker = r.json()["workerId"]

        def gone() -> bool:
            (ep,) = as_a.get("/api/endpoints").json()["endpoints"]
            return not ep["workers"]

        wait_until(gone, 60, "a's worker stops after its idle timeout")
        for key, status in [("sk-b", 403), ("sk-a", 403), ("wrong", 401)]:
            r = httpx.get(f"{url}/api/workers/{worker}/logs", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == status, (key, r.text)
            assert "secret of a" not in r.text
        r = httpx.get(f"{url}/api/workers/{worker}/logs", headers={"Authorization": "Bearer sk-ops"})
        assert r.status_code == 200 and "secret of a" in r.json()["logs"]
        # The admin key is no client key: the job API refuses it.
        assert httpx.post(f"{url}/v2/a/run", json={"input": {}}, headers={"Authorization": "Bearer sk-ops"}).status_code == 401
        as_a.close()
    finally:
        stop_process(proc, signal.SIGINT, timeout_s=30)


