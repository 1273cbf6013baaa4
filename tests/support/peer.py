"""A small real HTTP peer for worker tests: implements Runpod's worker routes on 127.0.0.1 and records every call."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Call", "Peer"]


@dataclass
class Call:
    method: str
    route: str  # job-take, job-take-batch, job-done, job-stream, ping, job-stop
    worker_id: str
    job_id: str | None
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    at_s: float = field(default_factory=time.monotonic)


class Peer:
    """Hands out queued jobs (long-polling `hold_s`), takes results, streams, pings and stop polls."""

    def __init__(self, hold_s: float = 0.3) -> None:
        self.hold_s = hold_s
        self.cond = threading.Condition()
        self.queue: deque[dict[str, Any]] = deque()
        self.calls: list[Call] = []
        self.to_stop: list[str] = []
        self.take_status: int | None = None  # force an answer to every take (e.g. 500)
        self.done_failures = 0  # answer this many job-done posts with 503 first
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Peer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- test API -------------------------------------------------------------------------

    def submit(self, job_input: Any, job_id: str, **extra: Any) -> None:
        with self.cond:
            self.queue.append({"id": job_id, "input": job_input, **extra})
            self.cond.notify_all()

    def stop_job(self, job_id: str) -> None:
        with self.cond:
            self.to_stop.append(job_id)
            self.cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met within {timeout_s} s; calls: {self.summary()}")
                self.cond.wait(min(left, 0.1))

    def of(self, route: str, job_id: str | None = None) -> list[Call]:
        with self.cond:
            return [c for c in self.calls if c.route == route and (job_id is None or c.job_id == job_id)]

    def results(self, job_id: str) -> list[Call]:
        """Final job-done posts (progress posts excluded)."""
        return [c for c in self.of("job-done", job_id) if not (isinstance(c.body, dict) and c.body.get("status") == "IN_PROGRESS")]

    def done(self, *job_ids: str) -> bool:
        return all(self.results(j) for j in job_ids)

    def summary(self) -> list[str]:
        return [f"{c.route} {c.job_id or ''} {c.query}" for c in self.calls[-30:]]

    # -- serving ----------------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self.cond:
            self.calls.append(call)
            self.cond.notify_all()

    def _take(self, n: int) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.hold_s
        with self.cond:
            while not self.queue and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            out = []
            while self.queue and len(out) < n:
                out.append(self.queue.popleft())
            return out

    def _stops(self) -> list[str]:
        deadline = time.monotonic() + self.hold_s
        with self.cond:
            while not self.to_stop and time.monotonic() < deadline:
                self.cond.wait(deadline - time.monotonic())
            out, self.to_stop = self.to_stop, []
            return out


def _handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            if body is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _call(self) -> Call:
            parts = urlsplit(self.path)
            segs = [s for s in parts.path.split("/") if s]  # v2, ep, route, worker[, job]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw.strip() else None
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            return Call(
                method=self.command,
                route=segs[2],
                worker_id=segs[3],
                job_id=segs[4] if len(segs) > 4 else None,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )

        def do_GET(self) -> None:
            call = self._call()
            peer._record(call)
            if call.route in ("job-take", "job-take-batch"):
                if peer.take_status is not None:
                    return self._reply(peer.take_status, {"error": "forced"})
                n = int(call.query.get("batch_size", "1")) if call.route == "job-take-batch" else 1
                jobs = peer._take(n)
                if not jobs:
                    return self._reply(204)
                return self._reply(200, jobs if call.route == "job-take-batch" else jobs[0])
            if call.route == "job-stop":
                ids = peer._stops()
                return self._reply(200, {"jobsToStop": ids}) if ids else self._reply(204)
            if call.route == "ping":
                return self._reply(200, {})
            return self._reply(404, {"error": "no route"})

        def do_POST(self) -> None:
            call = self._call()
            if call.route == "job-done" and peer.done_failures > 0:
                with peer.cond:
                    peer.done_failures -= 1
                call.route = "job-done-refused"
                peer._record(call)
                return self._reply(503, {"error": "try again"})
            peer._record(call)
            return self._reply(200, {})

    return Handler
