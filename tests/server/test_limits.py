"""What a client can make a real `gpuserve serve` hold: oversized headers, slowloris, a stalled body, connections per
client, rate limits (429 + Retry-After), the queue cap and the body-bytes budget; plus the pure parts.

One server for the module (small limits in its endpoints.yaml); memory is the server's VmRSS and
connections its open sockets, both read from /proc. Attacks come from 127.0.0.3 and probes from
127.0.0.2, so the per-client cap one holds never refuses the other (Linux routes all of 127/8).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.config.endpoints import LimitsSection, parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.platform import http_limits
from gpuserve.server.admission import BodyBudget, QueueGate
from gpuserve.server.limits import RUNPOD_RATE_LIMITS, HttpLimits, RouteLimit
from gpuserve.server.rate_limit import RateLimiter
from tests.support.live import serve_process, stop_process, wait_until

KEY, OTHER_KEY = "sk-limits", "sk-limits-2"
AUTH = {"Authorization": f"Bearer {KEY}"}
ATTACKER, PROBE = "127.0.0.3", "127.0.0.2"
PER_CLIENT = 40
ECHO = Path(__file__).parent / "handlers" / "echo_gpuserve.py"


class Server:
    def __init__(self, proc: Any, url: str) -> None:
        self.proc = proc
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def sockets(self) -> int:
        """Open sockets of the server process (listening socket and accepted connections)."""
        n = 0
        for fd in os.listdir(f"/proc/{self.proc.pid}/fd"):
            try:
                n += os.readlink(f"/proc/{self.proc.pid}/fd/{fd}").startswith("socket:")
            except OSError:
                pass
        return n

    def connect(self, source: str = ATTACKER) -> socket.socket:
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", self.port))
        return s

    def probe(self, path: str = "/v2/held/health", **kw: Any) -> httpx.Response:
        with httpx.Client(transport=httpx.HTTPTransport(local_address=PROBE), timeout=10) as c:
            return c.request(kw.pop("method", "GET"), self.url + path, headers=kw.pop("headers", AUTH), **kw)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 <= hard or soft < hard < 4096:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))  # the slowloris test opens 2,400 sockets
    tmp = tmp_path_factory.mktemp("limits")
    config = {
        "api_keys": [KEY, OTHER_KEY],
        "server": {
            "limits": {
                "header_timeout_s": 1.0,
                "body_timeout_s": 1.0,
                "max_connections_per_client": PER_CLIENT,
                "max_queued_jobs": 3,
                "max_body_bytes_in_flight": 100_000,
            },
            "rate_limits": {"status": {"per_10s": 5, "concurrent": 2}, "runsync": {"per_10s": 100, "concurrent": 2}},
        },
        # No workers: jobs stay queued, /runsync waits its whole `wait`.
        "endpoints": [{"id": "held", "handler": str(ECHO), "scaling": {"min_workers": 0, "max_workers": 0}},
                      {"id": "other", "handler": str(ECHO), "scaling": {"min_workers": 0, "max_workers": 0}},
                      {"id": "sizes", "handler": str(ECHO), "scaling": {"min_workers": 0, "max_workers": 0}}],
    }
    (tmp / "endpoints.yaml").write_text(json.dumps(config))
    proc, url = serve_process(tmp / "endpoints.yaml", tmp / "data")
    try:
        yield Server(proc, url)
    finally:
        stop_process(proc, signal.SIGTERM)


def _answer(s: socket.socket, timeout_s: float = 10.0) -> bytes:
    s.settimeout(timeout_s)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass  # reset after the answer: the server closed with our unread bytes
    return data


def test_a_50_mb_header_is_refused_after_64_kib_and_costs_no_memory(server: Server) -> None:
    rss_before = server.rss_bytes()
    s = server.connect()
    s.sendall(b"GET /v2/held/health HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        for _ in range(800):  # 50 MiB, 64 KiB at a time: the server closes long before
            s.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    answer = _answer(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"65536 bytes (server.limits.max_header_bytes)" in answer
    assert sent < 10 * 1024 * 1024  # it stopped reading: what got through fits in the sockets' buffers
    assert server.rss_bytes() - rss_before < 16 * 1024 * 1024
    assert server.probe().status_code == 200


def test_too_many_header_lines_get_431(server: Server) -> None:
    s = server.connect()
    s.sendall(b"GET /v2/held/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(101)) + b"\r\n")
    answer = _answer(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 431 ") and b"100 header lines" in answer, answer[:200]


def test_slowloris_2400_half_sent_requests_hold_at_most_the_per_client_cap_then_nothing(server: Server) -> None:
    baseline = server.sockets()
    rss_before = server.rss_bytes()
    held: list[socket.socket] = []
    refused = 0
    most = 0
    try:
        for i in range(2400):
            try:
                s = server.connect()
                s.sendall(b"POST /v2/held/run HTTP/1.1\r\nHost: x\r\nX-Half: %d" % i)  # never finished
                held.append(s)
            except OSError:
                refused += 1
            if i % 100 == 0:
                most = max(most, server.sockets())
        # While they wait, the server holds at most the cap of them, and still answers others.
        most = max(most, server.sockets())
        assert most <= baseline + PER_CLIENT + 2
        assert server.probe().status_code == 200
        answers = [_answer(s, 15.0)[:40] for s in held]
    finally:
        for s in held:
            s.close()
    timed_out = sum(a.startswith(b"HTTP/1.1 408 ") for a in answers)
    over_cap = sum(a.startswith(b"HTTP/1.1 429 ") for a in answers) + refused
    # Held (at most PER_CLIENT at a time: the earliest time out while later ones connect), then
    # closed by header_timeout_s; every other one was refused at once. None is left open.
    assert timed_out >= PER_CLIENT - 5
    assert timed_out + over_cap == 2400
    wait_until(lambda: server.sockets() <= baseline + 1, 10, "the server to close every slowloris connection")
    assert server.rss_bytes() - rss_before < 32 * 1024 * 1024


def test_a_stalled_body_gets_408(server: Server) -> None:
    s = server.connect()
    s.sendall(b"POST /v2/held/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
              + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"input\": {")
    answer = _answer(s)
    s.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"body paused" in answer, answer[:200]


def test_the_per_client_connection_cap_refuses_with_429_and_frees_on_close(server: Server) -> None:
    conns = [server.connect() for _ in range(PER_CLIENT)]
    try:
        extra = server.connect()
        answer = _answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 429 ") and b"retry-after: 1" in answer.lower(), answer[:200]
        assert b"max_connections_per_client" in answer
    finally:
        for c in conns:
            c.close()
    s = wait_until(lambda: _fresh_ok(server), 10, "a connection after the others closed")
    assert s


def _fresh_ok(server: Server) -> bool:
    s = server.connect()
    s.sendall(b"GET /v2/held/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() + b"\r\nConnection: close\r\n\r\n")
    ok = _answer(s).startswith(b"HTTP/1.1 200 ")
    s.close()
    return ok


def test_rate_limit_429_with_retry_after_per_key(server: Server) -> None:
    codes = [server.probe("/v2/other/status/nope").status_code for _ in range(5)]
    assert codes == [404] * 5
    refused = server.probe("/v2/other/status/nope")
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert "5 requests per 10 s" in refused.json()["error"] and "server.rate_limits.status" in refused.json()["error"]
    assert server.probe("/v2/other/stream/nope").status_code == 429  # /stream shares /status's limit (Runpod)
    # Another key has its own bucket.
    assert server.probe("/v2/other/status/nope", headers={"Authorization": f"Bearer {OTHER_KEY}"}).status_code == 404


def test_concurrent_runsync_past_the_limit_gets_429(server: Server) -> None:
    results: list[int] = []

    def wait_long() -> None:
        results.append(server.probe("/v2/other/runsync?wait=3000", method="POST", json={"input": {}}).status_code)

    threads = [threading.Thread(target=wait_long) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: server.probe("/v2/other/health").json()["jobs"]["inQueue"] >= 2, 10, "two /runsync in flight")
        third = server.probe("/v2/other/runsync?wait=1000", method="POST", json={"input": {}})
        assert third.status_code == 429 and "2 requests in flight at once" in third.json()["error"]
        assert third.headers["retry-after"] == "1"
    finally:
        for t in threads:
            t.join(30)
    assert results == [200, 200]  # the two waited their 3 s and answered IN_QUEUE with their ids


def test_queue_cap_refuses_the_fourth_job_with_429(server: Server) -> None:
    before = server.probe("/v2/held/health").json()["jobs"]["inQueue"]
    codes = [server.probe("/v2/held/run", method="POST", json={"input": {"i": i}}).status_code for i in range(3 - before)]
    assert codes == [200] * (3 - before)
    refused = server.probe("/v2/held/run", method="POST", json={"input": {}})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "has 3 jobs queued, its limit is 3" in refused.json()["error"]


def test_body_bytes_in_flight_are_capped_with_503(server: Server) -> None:
    slow = server.connect(PROBE)
    slow.sendall(b"POST /v2/other/run HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                 + b"\r\nContent-Length: 90000\r\n\r\n{")  # reserves 90,000 of the 100,000 bytes
    try:
        def refused() -> httpx.Response | None:
            r = server.probe("/v2/other/run", method="POST", content=b'{"input": {"x": "' + b"y" * 20_000 + b'"}}')
            return r if r.status_code == 503 else None

        r = wait_until(refused, 5, "the budget to be held")
        assert r.headers["retry-after"] == "1" and "max_body_bytes_in_flight" in r.json()["error"]
    finally:
        slow.close()
    small = server.probe("/v2/other/run", method="POST", content=b'{"input": {"x": "' + b"y" * 20_000 + b'"}}')
    assert small.status_code in (200, 429), small.text  # admitted by the budget (the queue cap may refuse it)


def test_body_limits_are_decimal_megabytes_and_errors_give_the_bytes(server: Server) -> None:
    r = server.probe("/v2/sizes/run", method="POST", content=b"x" * 10_000_001, headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["error"] == "request body of 10000001 bytes exceeds the 10 MB (10000000 bytes) limit of /run"


# -- the pure parts ---------------------------------------------------------------------------------


def test_token_bucket_refills_evenly_and_counts_in_flight() -> None:
    limiter = RateLimiter({"run": RouteLimit(per_10s=10, concurrent=None), "cancel": RouteLimit(None, 1)})
    key = ("ep", "run", "k")
    assert all(limiter.admit(key, 100.0) is None for _ in range(10))
    wait = limiter.admit(key, 100.0)
    assert wait is not None and wait[0] == pytest.approx(1.0)  # 10 per 10 s: one token a second
    assert limiter.admit(key, 100.5) is not None
    assert limiter.admit(key, 101.0) is None
    assert limiter.admit(("ep", "run", "other"), 101.0) is None  # per principal
    c = ("ep", "cancel", "k")
    assert limiter.admit(c, 0.0) is None
    assert limiter.admit(c, 0.0) == (1.0, "1 requests in flight at once")
    limiter.release(c)
    assert limiter.admit(c, 0.0) is None
    limiter.release(c)
    assert limiter.admit(("ep", "health", "k"), 0.0) is None  # unlimited group


def test_idle_full_buckets_are_forgotten() -> None:
    limiter = RateLimiter({"run": RouteLimit(per_10s=10)})
    for i in range(100):
        limiter.admit(("ep", "run", f"addr:{i}"), 0.0)
        limiter.release(("ep", "run", f"addr:{i}"))
    assert len(limiter) == 100
    limiter.prune(0.5)
    assert len(limiter) == 100  # not yet refilled
    limiter.prune(1.0)
    assert len(limiter) == 0


def test_queue_gate_counts_admissions_while_its_read_is_cached() -> None:
    gate = QueueGate(refresh_s=1.0)
    assert gate.stale("ep", 0.0)
    gate.observe("ep", 1, 0.0)
    assert not gate.stale("ep", 0.5)
    assert gate.admit("ep", 3) is None and gate.admit("ep", 3) is None
    assert gate.admit("ep", 3) == 3  # 1 read + 2 admitted since: at the cap without another read
    assert gate.stale("ep", 1.5)
    gate.observe("ep", 0, 1.5)  # the queue drained
    assert gate.admit("ep", 3) is None
    assert gate.admit("ep", None) is None


def test_body_budget() -> None:
    budget = BodyBudget(100)
    assert budget.reserve(60) and not budget.reserve(41) and budget.reserve(40)
    budget.release(100)
    assert budget.held_bytes == 0 and BodyBudget(None).reserve(10**12)


def test_runpod_queue_rule_and_defaults_agree_with_the_config_section() -> None:
    assert HttpLimits().queue_cap(0) == 50 and HttpLimits().queue_cap(3) == 1500
    assert HttpLimits(max_queued_jobs=7).queue_cap(3) == 7
    section, limits = LimitsSection(), HttpLimits()
    for name in ("max_header_bytes", "max_headers", "header_timeout_s", "body_timeout_s", "max_connections_per_client",
                 "max_connections", "max_queued_jobs", "max_body_bytes_in_flight"):
        assert getattr(section, name) == getattr(limits, name), name
    cfg = parse_endpoints({"endpoints": [{"id": "e", "image": "x"}]})
    assert http_limits(cfg.server) == HttpLimits()
    assert dict(http_limits(cfg.server).rate_limits) == dict(RUNPOD_RATE_LIMITS)


def test_rate_limit_overrides_and_nulls() -> None:
    cfg = parse_endpoints({
        "server": {"rate_limits": {"run": {"per_10s": 5}, "purge-queue": None}, "limits": {"header_timeout_s": None}},
        "endpoints": [{"id": "e", "image": "x"}],
    })
    limits = http_limits(cfg.server)
    assert limits.rate_limits["run"] == RouteLimit(5, None)
    assert "purge-queue" not in limits.rate_limits and limits.header_timeout_s is None
    with pytest.raises(ConfigError, match=r"server\.rate_limits\.health"):
        parse_endpoints({"server": {"rate_limits": {"health": {"per_10s": 1}}}, "endpoints": [{"id": "e", "image": "x"}]})
    with pytest.raises(ConfigError, match=r"server\.limits\.max_headers"):
        parse_endpoints({"server": {"limits": {"max_headers": 0}}, "endpoints": [{"id": "e", "image": "x"}]})
    with pytest.raises(ConfigError, match="max_header_bytes"):
        HttpLimits(max_header_bytes=0)


def test_payload_memory_limits_reach_the_store_with_the_same_defaults_everywhere(tmp_path: Path) -> None:
    """server.limits.max_payload_bytes_in_memory and spill_payload_bytes: one default in the config section,
    ServerSettings, open_store and the SQLite store; a value from endpoints.yaml reaches the store."""
    import inspect

    from gpuserve.live.settings import ServerSettings
    from gpuserve.platform import Platform
    from gpuserve.store.location import open_store
    from gpuserve.store.sqlite import SqliteJobStore

    section, settings = LimitsSection(), ServerSettings()
    for name in ("max_payload_bytes_in_memory", "spill_payload_bytes"):
        defaults = {getattr(section, name), getattr(settings, name),
                    inspect.signature(open_store).parameters[name].default,
                    inspect.signature(SqliteJobStore).parameters[name].default}
        assert len(defaults) == 1, (name, defaults)
    (tmp_path / "h.py").write_text("")
    cfg = parse_endpoints({
        "server": {"limits": {"max_payload_bytes_in_memory": 1234, "spill_payload_bytes": None}},
        "endpoints": [{"id": "e", "handler": "h.py"}],
    }, base_dir=tmp_path)
    platform = Platform.from_config(cfg, data_dir=tmp_path / "data", backend=None, port=0).start()
    try:
        budget = platform.store._budget  # type: ignore[attr-defined]
        assert (budget.max_bytes, budget.spill_bytes) == (1234, None)
    finally:
        platform.stop()
    with pytest.raises(ConfigError, match=r"server\.limits\.spill_payload_bytes"):
        parse_endpoints({"server": {"limits": {"spill_payload_bytes": -1}}, "endpoints": [{"id": "e", "image": "x"}]})
    with pytest.raises(ConfigError, match="max_payload_bytes_in_memory"):
        ServerSettings(max_payload_bytes_in_memory=-5)
