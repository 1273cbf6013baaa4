"""The synthetic load-balancing worker a replay runs: an HTTP server whose start takes the scenario's cold start.

Run by the process backend as `python synthetic_lb_worker.py` with the platform's worker
environment (`PORT`, `GPUSERVE_WORKER_ID`) plus the replay's `GPUSERVE_FIDELITY_DIR` and
`GPUSERVE_FIDELITY_MODE` (as gpuserve/fidelity/synthetic_worker.py reads them). It serves:

    GET  /ping   204 while its init phase (the scenario's cold start at the replay's speedup)
                 lasts, then 200
    POST /work   {"service_s": S}: sleeps (or spins, mode `busy`) S seconds, then answers
                 {"start_wall_s", "end_wall_s", "worker"}

Requests run in threads of their own, so concurrent requests do not slow each other (the
simulator's model). Standard library only, so it starts fast and runs anywhere.
"""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PLAN_WAIT_S = 10.0  # the driver writes the init file right after the spawn returns; a few ms in practice
MODE = os.environ.get("GPUSERVE_FIDELITY_MODE", "sleep")
WORKER = os.environ.get("GPUSERVE_WORKER_ID", "")
READY = threading.Event()


def _init_s() -> float:
    folder = os.environ.get("GPUSERVE_FIDELITY_DIR")
    if not folder or not WORKER:
        return 0.0
    path = Path(folder) / f"{WORKER}.json"
    deadline = time.monotonic() + PLAN_WAIT_S
    while not path.is_file():
        if time.monotonic() > deadline:
            return 0.0
        time.sleep(0.002)
    return float(json.loads(path.read_text())["init_s"])


def _wait(seconds: float) -> None:
    if MODE != "busy":
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the proxy pools its connections

    def log_message(self, format: str, *args: object) -> None:  # one line per request would flood the log
        return

    def _answer(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/ping":
            self._answer(200 if READY.is_set() else 204)
        else:
            self._answer(404, b'{"error": "not found"}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        payload = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/work":
            self._answer(404, b'{"error": "not found"}')
            return
        start = time.time()
        _wait(float(payload.get("service_s", 0.0)))
        self._answer(200, json.dumps({"start_wall_s": start, "end_wall_s": time.time(), "worker": WORKER}).encode())


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), _Handler)
    server.daemon_threads = True

    def init() -> None:
        _wait(_init_s())  # image pull, container start, runtime init, model load: /ping says 204 meanwhile
        READY.set()

    threading.Thread(target=init, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
