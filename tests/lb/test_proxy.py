"""The load-balancing proxy against real worker servers (tests/lb/lb_app.py under uvicorn) on 127.0.0.1.

One server with one ready worker answers the tests of the data path: method, path, query and
headers kept, auth, a 30 MB body, a stream arriving chunk by chunk, a WebSocket echo.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.lb.support import LB_FAST, lb_deployment
from tests.support.live import API_KEY, Live, wait_until

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("lb-proxy")
    dep = lb_deployment("chat", tmp / "files", min_workers=1, max_workers=1)
    with Live(tmp, [dep], LB_FAST) as live:
        wait_until(lambda: any(w.first_take_s for w in live.registry.all("chat")), 60, "a ready worker")
        yield live


def files(live: Live) -> Path:
    return live.tmp_path / "files"


def test_method_path_query_and_headers_reach_the_worker(live: Live) -> None:
    r = httpx.put(
        f"{live.url}/lb/chat/echo/a%20b?x=1&y=two",
        content=b"payload",
        headers={**AUTH, "X-Custom": "kept", "Connection": "keep-alive, X-Hop", "X-Hop": "dropped", "TE": "trailers"},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["method"] == "PUT"
    assert got["path"] == "/echo/a b"
    assert got["query"] == "x=1&y=two"
    assert got["length"] == len(b"payload")
    assert got["headers"]["x-custom"] == "kept"
    # Hop-by-hop headers (and those Connection names) stop at the proxy; so does gpuserve's key.
    assert "x-hop" not in got["headers"] and "te" not in got["headers"]
    assert "authorization" not in got["headers"]
    assert got["headers"]["x-forwarded-for"] == "127.0.0.1"
    assert r.headers["x-gpuserve-worker"] == got["worker"]
    assert r.headers.get_list("date") and len(r.headers.get_list("date")) == 1


def test_a_host_naming_the_endpoint_routes_every_path(live: Live) -> None:
    r = httpx.get(f"{live.url}/echo?via=host", headers={**AUTH, "Host": "chat.api.localhost"})
    assert r.status_code == 200, r.text
    assert r.json()["path"] == "/echo" and r.json()["query"] == "via=host"
    # Another host is the ordinary API.
    assert httpx.get(f"{live.url}/echo", headers={**AUTH, "Host": "other.localhost"}).status_code == 404


def _proxied_counts(live: Live) -> dict[tuple[str, str], float]:
    """gpuserve_http_requests_total of the proxy's requests, by (method, status)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{live.url}/metrics").text
    return {
        (s.labels["method"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "gpuserve_http_requests_total" and s.labels["route"] == "/lb/{endpoint_id}/*"
    }


def test_auth_401_without_or_with_a_wrong_key(live: Live) -> None:
    before = _proxied_counts(live)
    r = httpx.get(f"{live.url}/lb/chat/echo")
    assert r.status_code == 401
    assert r.json() == {"error": "missing or invalid API key for endpoint 'chat'"}
    assert httpx.get(f"{live.url}/lb/chat/echo", headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    assert httpx.get(f"{live.url}/lb/nope/echo", headers=AUTH).status_code == 404
    assert httpx.get(f"{live.url}/lb/chat/echo", headers=AUTH).status_code == 200
    # The proxy counts its own requests for /metrics (the metrics wrapper sits behind it), by one route.
    after = _proxied_counts(live)
    for key, n in {("GET", "401"): 2, ("GET", "404"): 1, ("GET", "200"): 1}.items():
        assert after.get(key, 0) - before.get(key, 0) == n, (key, before, after)


def test_a_30_mb_body_goes_through_and_a_larger_one_is_refused(live: Live) -> None:
    body = os.urandom(30 * 1000 * 1000)  # Runpod's 30 MB, decimal (gpuserve.live.settings.MB)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the proxy streams it and counts
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    r = httpx.post(f"{live.url}/lb/chat/echo", content=chunks(), headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["length"] == len(body)
    assert r.json()["sha256"] == hashlib.sha256(body).hexdigest()
    too_big = httpx.post(f"{live.url}/lb/chat/echo", content=body + b"x", headers=AUTH, timeout=120)
    assert too_big.status_code == 413
    assert "30000000 byte limit" in too_big.json()["error"]


def test_a_stream_arrives_chunk_by_chunk(live: Live) -> None:
    with httpx.stream("GET", f"{live.url}/lb/chat/stream/s1", headers=AUTH, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        parts = r.iter_raw()
        # The worker sends its last chunk only once this file exists, which the test creates
        # after reading the first: the first chunk came through before the last was produced.
        assert next(parts) == b"data: first\n\n"
        (files(live) / "open-s1").touch()
        assert b"".join(parts) == b"data: last\n\n"


def test_a_websocket_echo(live: Live) -> None:
    url = live.url.replace("http://", "ws://") + "/lb/chat/ws"
    with connect(url, additional_headers=AUTH) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        ws.send(b"\x00\x01")
        assert ws.recv(timeout=30) == b"\x00\x01"
    with pytest.raises(Exception, match="403"):
        with connect(url):
            pass
    # An upgraded connection leaves the per-client connection count (server/conn_guard.py) when it upgrades.
    server = live.platform._server._server
    protocol = server.config.http_protocol_class

    def balanced() -> bool:
        try:  # read from this thread while the server's loop runs: retry a read that raced a change
            counted = [c for c in list(server.server_state.connections) if getattr(c, "_counted_host", None)]
            return sum(protocol.per_client.values()) == len(counted)
        except RuntimeError:
            return False

    wait_until(balanced, 10, "the per-client counts to match the open HTTP connections")


def test_health_reports_workers_and_requests(live: Live) -> None:
    r = httpx.get(f"{live.url}/v2/chat/health", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["workers"]["idle"] + body["workers"]["running"] == 1
    assert set(body["requests"]) == {"in_flight", "held", "total", "rejected"}
    assert body["requests"]["total"] >= 1
    listed = httpx.get(f"{live.url}/api/endpoints", headers=AUTH).json()["endpoints"]
    assert [(e["id"], e["type"]) for e in listed] == [("chat", "load_balancer")]
    assert listed[0]["queue"]["inQueue"] == 0 and len(listed[0]["workers"]) == 1


def test_the_worker_log(live: Live) -> None:
    worker_id = live.registry.all("chat")[0].worker_id
    assert f"lb_app {worker_id} listening on port" in live.backend.logs(worker_id)
