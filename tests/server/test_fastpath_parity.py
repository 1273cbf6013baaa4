"""The fast path answers every bad request exactly as the FastAPI routes do: same status, body and content type."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gpuserve.live.settings import MB, MIB
from gpuserve.server.limits import MAX_RESULT_BYTES
from tests.support.live import KEY, Harness, deployment

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    status: int  # what both paths must answer
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    auth: str = "client"  # "client" key, "worker" token, or "none"
    chunked: bool = False  # send the body without a Content-Length, so only the read can see its size


@dataclass(frozen=True)
class Answer:
    status: int
    body: str
    content_type: str | None


def _answer(h: Harness, token: str, case: Case) -> Answer:
    headers = dict(case.headers)
    if case.auth == "client":
        headers.setdefault("Authorization", f"Bearer {KEY}")
    elif case.auth == "worker":
        headers.setdefault("Authorization", token)
    content: bytes | Iterator[bytes] | None = case.body
    if case.chunked and case.body is not None:
        whole = case.body
        content = iter([whole[i : i + MIB] for i in range(0, len(whole), MIB)])
    with httpx.Client(base_url=h.url, timeout=30) as c:
        r = c.request(case.method, case.path, content=content, headers=headers)
    # Job ids are fresh uuids on each server; everything else must match byte for byte.
    return Answer(r.status_code, _UUID.sub("<uuid>", r.text), r.headers.get("content-type"))


def _declared_too_big(h: Harness, path: str, declared_bytes: int, authorization: str) -> Answer:
    """A request that declares a body larger than the limit and sends none of it: the header alone refuses it."""
    url = urlsplit(h.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: {authorization}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared_bytes}\r\n\r\n".encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        fields = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(fields["content-length"])
        while len(rest) < length:
            rest += s.recv(65536)
    return Answer(int(lines[0].split()[1]), rest[:length].decode(), fields.get("content-type"))


def _pair(make_server, tmp_path: Path) -> list[tuple[Harness, str]]:
    """The same two endpoints behind the fast path and behind FastAPI alone, with worker w1 on `ep`."""
    out = []
    for fast_path in (True, False):
        folder = tmp_path / ("fast-path" if fast_path else "routes")
        folder.mkdir()
        h = make_server([deployment("ep"), deployment("ep2")], fast_path=fast_path, data_dir=folder)
        worker = h.add_worker("w1", "ep")
        out.append((h, str(worker.headers["Authorization"])))
        worker.close()
    return out


def _check(pair: list[tuple[Harness, str]], cases: list[Case]) -> None:
    """Run the cases in the same order on both servers (so both hold the same state) and compare."""
    problems = []
    for case in cases:
        fast, routes = (_answer(h, token, case) for h, token in pair)
        if fast != routes:
            problems.append(f"{case.name}: fast path {fast} != FastAPI routes {routes}")
        elif routes.status != case.status:
            problems.append(f"{case.name}: both answered {routes}, expected status {case.status}")
    assert not problems, "\n".join(problems)


def _job(body: str) -> bytes:
    return ('{"input": {}, ' + body + "}").encode()


CLIENT_BODY_CASES = [
    Case("bad JSON", "POST", "/v2/ep/run", 400, b"{nope", _JSON),
    Case("empty body", "POST", "/v2/ep/run", 400, b""),
    Case("not UTF-8", "POST", "/v2/ep/run", 400, b"\xff\xfe{}"),
    Case("a list", "POST", "/v2/ep/run", 400, b"[1]"),
    Case("null", "POST", "/v2/ep/run", 400, b"null"),
    Case("a string", "POST", "/v2/ep/runsync", 400, b'"text"'),
    Case("input missing", "POST", "/v2/ep/run", 422, b'{"inpt": {}}'),
    Case("input a string", "POST", "/v2/ep/run", 422, b'{"input": "text"}'),
    Case("input null", "POST", "/v2/ep/runsync", 422, b'{"input": null}'),
    Case("input a list", "POST", "/v2/ep/run", 422, b'{"input": [1]}'),
    Case("webhook not http", "POST", "/v2/ep/run", 422, _job('"webhook": "ftp://x"')),
    Case("webhook a number", "POST", "/v2/ep/run", 422, _job('"webhook": 3')),
    Case("policy a list", "POST", "/v2/ep/run", 422, _job('"policy": [1]')),
    Case("executionTimeout too small", "POST", "/v2/ep/run", 422, _job('"policy": {"executionTimeout": 4999}')),
    Case("executionTimeout too large", "POST", "/v2/ep/run", 422, _job('"policy": {"executionTimeout": 604800001}')),
    Case("executionTimeout a string", "POST", "/v2/ep/run", 422, _job('"policy": {"executionTimeout": "60000"}')),
    Case("executionTimeout a bool", "POST", "/v2/ep/run", 422, _job('"policy": {"executionTimeout": true}')),
    Case("executionTimeout null", "POST", "/v2/ep/run", 422, _job('"policy": {"executionTimeout": null}')),
    Case("executionTimeout NaN", "POST", "/v2/ep/run", 400, _job('"policy": {"executionTimeout": NaN}')),
    Case("executionTimeout Infinity", "POST", "/v2/ep/runsync", 400, _job('"policy": {"executionTimeout": Infinity}')),
    Case("ttl too small", "POST", "/v2/ep/run", 422, _job('"policy": {"ttl": 9999}')),
    Case("ttl too large", "POST", "/v2/ep/runsync", 422, _job('"policy": {"ttl": 1e20}')),
    Case("ttl a string", "POST", "/v2/ep/run", 422, _job('"policy": {"ttl": "soon"}')),
    Case("ttl an object", "POST", "/v2/ep/run", 422, _job('"policy": {"ttl": {}}')),
    Case("lowPriority a string", "POST", "/v2/ep/run", 422, _job('"policy": {"lowPriority": "yes"}')),
    Case("lowPriority a number", "POST", "/v2/ep/runsync", 422, _job('"policy": {"lowPriority": 1}')),
    Case("unknown policy field", "POST", "/v2/ep/run", 422, _job('"policy": {"speed": 1}')),
    # Valid, to show the jobs between bad requests are taken the same way.
    Case("policy at the bounds", "POST", "/v2/ep/run", 200, _job('"policy": {"executionTimeout": 5000, "ttl": 604800000}')),
    Case("/run over 10 MB", "POST", "/v2/ep/run", 413, b'{"input": {"b": "' + b"x" * (10 * MIB) + b'"}}'),
    Case("/run over 10 MB, chunked", "POST", "/v2/ep/run", 413, b'{"input": {"b": "' + b"x" * (10 * MIB) + b'"}}', chunked=True),
    Case("/runsync over 20 MB", "POST", "/v2/ep/runsync", 413, b'{"input": {"b": "' + b"x" * (20 * MIB) + b'"}}'),
    Case(
        "/runsync over 20 MB, chunked", "POST", "/v2/ep/runsync", 413,
        b'{"input": {"b": "' + b"x" * (20 * MIB) + b'"}}', chunked=True,
    ),
]

RUNSYNC_WAIT_CASES = [
    Case("wait not a number", "POST", "/v2/ep/runsync?wait=abc", 422, b'{"input": {}}'),
    Case("wait blank", "POST", "/v2/ep/runsync?wait=", 422, b'{"input": {}}'),
    Case("wait with no value", "POST", "/v2/ep/runsync?wait", 422, b'{"input": {}}'),
    Case("wait a fraction", "POST", "/v2/ep/runsync?wait=1000.5", 422, b'{"input": {}}'),
    Case("wait blank after a number", "POST", "/v2/ep/runsync?wait=1000&wait=", 422, b'{"input": {}}'),
    Case("wait a non-ASCII digit", "POST", "/v2/ep/runsync?wait=%D9%A3", 422, b'{"input": {}}'),
    Case("wait too short", "POST", "/v2/ep/runsync?wait=999", 422, b'{"input": {}}'),
    Case("wait too long", "POST", "/v2/ep/runsync?wait=300001", 422, b'{"input": {}}'),
    Case("wait negative", "POST", "/v2/ep/runsync?wait=-1", 422, b'{"input": {}}'),
    Case("wait huge", "POST", "/v2/ep/runsync?wait=99999999999999999999999", 422, b'{"input": {}}'),
    # Integers in other spellings that FastAPI reads: accepted on both paths (the job waits 1 s).
    Case("wait 1000.0", "POST", "/v2/ep/runsync?wait=1000.0", 200, b'{"input": {}}'),
    Case("wait +1000", "POST", "/v2/ep/runsync?wait=%2B1000", 200, b'{"input": {}}'),
    Case("wait 1_000", "POST", "/v2/ep/runsync?wait=1_000", 200, b'{"input": {}}'),
    Case("wait bad, endpoint unknown", "POST", "/v2/nope/runsync?wait=abc", 422, b'{"input": {}}'),
]

CLIENT_ROUTING_CASES = [
    Case("no key", "POST", "/v2/ep/run", 401, b'{"input": {}}', auth="none"),
    Case("wrong key", "POST", "/v2/ep/run", 401, b'{"input": {}}', {"Authorization": "Bearer sk-wrong"}),
    Case("bare wrong key", "POST", "/v2/ep/runsync", 401, b'{"input": {}}', {"Authorization": "sk-wrong"}),
    Case("bearer with no key", "GET", "/v2/ep/status/x", 401, headers={"Authorization": "Bearer"}),
    Case("worker token as a client key", "POST", "/v2/ep/run", 401, b'{"input": {}}', auth="worker"),
    Case("wrong key and bad JSON", "POST", "/v2/ep/run", 401, b"{nope", {"Authorization": "Bearer sk-wrong"}),
    Case("unknown endpoint, wrong key", "POST", "/v2/nope/run", 404, b"{nope", {"Authorization": "Bearer sk-wrong"}),
    Case("unknown endpoint /run", "POST", "/v2/nope/run", 404, b'{"input": {}}'),
    Case("unknown endpoint /runsync", "POST", "/v2/nope/runsync", 404, b'{"input": {}}'),
    Case("unknown endpoint /status", "GET", "/v2/nope/status/x", 404),
    Case("unknown job", "GET", "/v2/ep/status/does-not-exist", 404),
    Case("unknown job, POST", "POST", "/v2/ep/status/does-not-exist", 404),
    Case("empty endpoint segment", "POST", "/v2//run", 404, b'{"input": {}}'),
    Case("empty job segment", "GET", "/v2/ep/status/", 404),
    Case("empty endpoint and job", "POST", "/v2//status/", 404),
    Case("GET /run", "GET", "/v2/ep/run", 405),
    Case("PUT /runsync", "PUT", "/v2/ep/runsync", 405, b'{"input": {}}'),
    Case("HEAD /status", "HEAD", "/v2/ep/status/x", 405),
    Case("DELETE /status", "DELETE", "/v2/ep/status/x", 405),
    Case("too many segments", "POST", "/v2/ep/run/extra", 404, b'{"input": {}}'),
]

WORKER_CASES = [
    Case("take, no token", "GET", "/v2/ep/job-take/w1", 401, auth="none"),
    Case("take, wrong token", "GET", "/v2/ep/job-take/w1", 401, headers={"Authorization": "wrong"}),
    Case("take, client key", "GET", "/v2/ep/job-take/w1", 401, auth="client"),
    Case("take, unknown worker", "GET", "/v2/ep/job-take/w2", 401, auth="worker"),
    Case("take, the worker's other endpoint", "GET", "/v2/ep2/job-take/w1", 401, auth="worker"),
    Case("take, unknown endpoint", "GET", "/v2/nope/job-take/w1", 401, auth="worker"),
    Case("take, empty worker segment", "GET", "/v2/ep/job-take/", 404, auth="worker"),
    Case("take, POST", "POST", "/v2/ep/job-take/w1", 405, auth="worker"),
    Case("batch, wrong token", "GET", "/v2/ep/job-take-batch/w1?batch_size=2", 401, headers={"Authorization": "wrong"}),
    Case("batch_size not a number", "GET", "/v2/ep/job-take-batch/w1?batch_size=abc", 422, auth="worker"),
    Case("batch_size blank", "GET", "/v2/ep/job-take-batch/w1?batch_size=", 422, auth="worker"),
    Case("batch_size with no value", "GET", "/v2/ep/job-take-batch/w1?batch_size", 422, auth="worker"),
    Case("batch_size a fraction", "GET", "/v2/ep/job-take-batch/w1?gpu=A+B&batch_size=2.5", 422, auth="worker"),
    Case("batch_size bad, token wrong", "GET", "/v2/ep/job-take-batch/w1?batch_size=x", 422, headers={"Authorization": "wrong"}),
    Case("batch_size 0", "GET", "/v2/ep/job-take-batch/w1?batch_size=0", 422, auth="worker"),
    Case("batch_size -3", "GET", "/v2/ep/job-take-batch/w1?batch_size=-3", 422, auth="worker"),
    Case("batch_size 0, token wrong", "GET", "/v2/ep/job-take-batch/w1?batch_size=0", 401, headers={"Authorization": "wrong"}),
    Case("done, wrong token", "POST", "/v2/ep/job-done/w1/j1?isStream=false", 401, b"{}", {"Authorization": "wrong"}),
    Case("done, client key", "POST", "/v2/ep/job-done/w1/j1", 401, b"{}", auth="client"),
    Case("gpuserve_take not a number", "POST", "/v2/ep/job-done/w1/j1?gpuserve_take=x", 422, b"{}", auth="worker"),
    Case("gpuserve_take blank", "POST", "/v2/ep/job-done/w1/j1?isStream=false&gpuserve_take=", 422, b"{}", auth="worker"),
    Case("done, bad JSON", "POST", "/v2/ep/job-done/w1/j1?isStream=false", 400, b"{nope", auth="worker"),
    Case("done, not UTF-8", "POST", "/v2/ep/job-done/w1/j1", 400, b"\xff", auth="worker"),
    Case("done, empty body", "POST", "/v2/ep/job-done/w1/j1", 400, b"", auth="worker"),
    Case("done, a list for an unknown job", "POST", "/v2/ep/job-done/w1/j1", 200, b"[1]", auth="worker"),
    Case("done, an unknown job", "POST", "/v2/ep/job-done/w1/j1?gpuserve_take=2", 200, b'{"output": 1}', auth="worker"),
    Case("done, empty job segment", "POST", "/v2/ep/job-done/w1/", 404, b"{}", auth="worker"),
    Case("stream, wrong token", "POST", "/v2/ep/job-stream/w1/j1", 401, b'{"output": 1}', {"Authorization": "wrong"}),
    Case("stream, bad JSON", "POST", "/v2/ep/job-stream/w1/j1", 400, b"{nope", auth="worker"),
    Case("stream, a list", "POST", "/v2/ep/job-stream/w1/j1", 422, b"[1]", auth="worker"),
    Case("stream, an unknown job", "POST", "/v2/ep/job-stream/w1/j1", 200, b'{"output": 1}', auth="worker"),
    Case("ping, wrong token", "GET", "/v2/ep/ping/w1?job_id=a,b", 401, headers={"Authorization": "wrong"}),
    Case("ping, client key", "GET", "/v2/ep/ping/w1", 401, auth="client"),
    Case("ping, blank job_id", "GET", "/v2/ep/ping/w1?job_id=&runpod_version=1.12.0", 200, auth="worker"),
    Case("stop, wrong token", "GET", "/v2/ep/job-stop/w1", 401, headers={"Authorization": "wrong"}),
    Case("stop, unknown worker", "GET", "/v2/ep/job-stop/w9?gpu=cpu", 401, auth="worker"),
    Case("stop, nothing to stop", "GET", "/v2/ep/job-stop/w1", 204, auth="worker"),
]


def test_client_bodies_and_policies_are_refused_alike(make_server, tmp_path):
    _check(_pair(make_server, tmp_path), CLIENT_BODY_CASES)


def test_runsync_wait_is_read_alike(make_server, tmp_path):
    _check(_pair(make_server, tmp_path), RUNSYNC_WAIT_CASES)


def test_auth_unknown_endpoints_and_paths_alike(make_server, tmp_path):
    _check(_pair(make_server, tmp_path), CLIENT_ROUTING_CASES)


def test_worker_routes_refuse_alike(make_server, tmp_path):
    _check(_pair(make_server, tmp_path), WORKER_CASES)


def test_a_declared_body_over_the_limit_is_refused_alike_before_it_is_sent(make_server, tmp_path):
    pair = _pair(make_server, tmp_path)
    for path, limit_bytes, auth in [
        ("/v2/ep/run", 10 * MB, "client"),
        ("/v2/ep/runsync", 20 * MB, "client"),
        ("/v2/ep/job-done/w1/j1?isStream=false", MAX_RESULT_BYTES, "worker"),
        ("/v2/ep/job-stream/w1/j1", MAX_RESULT_BYTES, "worker"),
    ]:
        fast, routes = (
            _declared_too_big(h, path, limit_bytes + 1, f"Bearer {KEY}" if auth == "client" else token)
            for h, token in pair
        )
        assert fast == routes, path
        assert fast.status == 413 and f"MB ({limit_bytes} bytes) limit" in fast.body, fast
