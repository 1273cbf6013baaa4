"""A local dev server (`--rp_serve_api` / `--serve`) that runs jobs in the background like the real API.

Standard library HTTP (the worker image has no FastAPI), one asyncio loop in a thread for
the jobs. Unlike Runpod's local server, /run really queues and runs the job, /status is a
GET, /stream hands out each chunk once, and FAILED jobs show their error: the shapes are
those of gpuserve's server, so a client written against this works against the platform.
Statuses move only through the core state machine (`transition`), and /status is built by
the same `status_body` as the server's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gpuserve.core.backoff import Backoff
from gpuserve.core.jobs import JobStatus, status_body, transition
from gpuserve.worker.runner import Job, run_job

__all__ = ["DevServer"]

log = logging.getLogger("gpuserve.worker")

MAX_BODY_BYTES = 20 * 1024 * 1024
STREAM_HOLD_S = 1.0  # /stream waits this long for a new chunk before answering empty
# A job's webhook: 3 tries, 1 s then 2 s apart (the last failure is simply logged).
WEBHOOK_RETRY = Backoff(1.0, factor=1.0, step_s=1.0, attempts=3)


@dataclass
class _LocalJob:
    job: Job
    submitted_s: float
    status: JobStatus = JobStatus.IN_QUEUE
    started_s: float | None = None  # time.monotonic(), like submitted_s
    ended_s: float | None = None
    output: Any = None
    has_output: bool = False
    error: str | None = None
    chunks: list[Any] = field(default_factory=list)
    chunks_sent: int = 0
    task: asyncio.Task[None] | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return str(self.job["id"])

    def move(self, target: JobStatus) -> None:
        """Change status through the core state machine (IllegalTransitionError on an illegal move)."""
        self.status = transition(self.status, target)

    def body(self) -> dict[str, Any]:
        """The /status body, as gpuserve's server builds it; this server's one worker is `local`."""
        return status_body(
            self.id,
            self.status,
            created_s=self.submitted_s,
            started_s=self.started_s,
            completed_s=self.ended_s,
            worker_id="local",
            output=self.output,
            has_output=self.has_output,
            error=self.error,
        )


class _DevSink:
    def __init__(self, server: DevServer, lj: _LocalJob) -> None:
        self.server = server
        self.lj = lj

    async def stream(self, job: Job, body: dict[str, Any]) -> None:
        with self.server.changed:
            self.lj.chunks.append(body.get("output"))
            self.server.changed.notify_all()

    async def progress(self, job: Job, data: Any) -> None:
        with self.server.changed:
            if not self.lj.status.is_terminal:
                self.lj.output, self.lj.has_output = data, True
                self.server.changed.notify_all()


class DevServer:
    """Serves /run, /runsync, /status/{id}, /stream/{id}, /cancel/{id}, /retry/{id}, /purge-queue, /health.

    Routes also answer under `/v2/{anything}/...`, so `runpod.Endpoint` and gpuserve clients can
    point their base URL at `http://host:port/v2`.
    """

    def __init__(self, config: dict[str, Any], host: str = "localhost", port: int = 8000) -> None:
        self.config = config
        self.changed = threading.Condition()
        self.jobs: dict[str, _LocalJob] = {}
        self.counts = {"completed": 0, "failed": 0, "retried": 0}
        self.loop = asyncio.new_event_loop()
        self._queue: asyncio.Queue[str] | None = None
        self._running = 0
        self._slot_free: asyncio.Event | None = None
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="handler")
        self._loop_thread = threading.Thread(target=self._run_loop, name="gpuserve-dev-jobs", daemon=True)
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self.httpd.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        return f"http://{name}:{port}"

    # -- job loop (its own thread) -----------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._queue = asyncio.Queue()
        self._slot_free = asyncio.Event()
        self.loop.create_task(self._dispatch())
        self.loop.run_forever()

    async def _dispatch(self) -> None:
        assert self._queue is not None and self._slot_free is not None
        modifier = self.config.get("concurrency_modifier") or (lambda c: c)
        concurrency = 1
        while True:
            job_id = await self._queue.get()
            while True:
                try:
                    concurrency = max(1, int(modifier(concurrency)))
                except Exception as exc:
                    log.error("concurrency_modifier failed: %s", exc)
                if self._running < concurrency:
                    break
                self._slot_free.clear()
                await self._slot_free.wait()
            lj = self.jobs.get(job_id)
            if lj is None or lj.status is not JobStatus.IN_QUEUE:
                continue  # cancelled or purged while queued
            self._running += 1
            lj.task = asyncio.get_running_loop().create_task(self._execute(lj))

    async def _execute(self, lj: _LocalJob) -> None:
        policy = lj.job.get("policy") or {}
        timeout_s = policy.get("executionTimeout", 600_000) / 1000.0 if isinstance(policy, dict) else 600.0
        try:
            with self.changed:
                if lj.status is not JobStatus.IN_QUEUE:
                    return  # cancelled or purged between the dispatcher's check and this task's start
                lj.move(JobStatus.IN_PROGRESS)
                lj.started_s = time.monotonic()
                self.changed.notify_all()
            outcome = await asyncio.wait_for(
                run_job(
                    self.config["handler"],
                    lj.job,
                    _DevSink(self, lj),
                    aggregate_stream=bool(self.config.get("return_aggregate_stream", False)),
                    executor=self.executor,
                    worker_id="local",
                ),
                timeout=timeout_s,
            )
        except TimeoutError:
            self._finish(lj, JobStatus.TIMED_OUT, error=f"execution timed out after {timeout_s:g} s")
        except asyncio.CancelledError:
            self._finish(lj, JobStatus.CANCELLED)
        else:
            error = outcome.body.get("error")
            if error:
                self._finish(lj, JobStatus.FAILED, error=error if isinstance(error, str) else json.dumps(error))
            else:
                self._finish(lj, JobStatus.COMPLETED, output=outcome.body.get("output"))
        finally:
            self._running -= 1
            assert self._slot_free is not None
            self._slot_free.set()

    def _finish(self, lj: _LocalJob, status: JobStatus, output: Any = None, error: str | None = None) -> None:
        with self.changed:
            if lj.status.is_terminal:
                return
            lj.move(status)
            lj.ended_s = time.monotonic()
            lj.output, lj.has_output = output, status is JobStatus.COMPLETED
            lj.error = error
            if status is JobStatus.COMPLETED:
                self.counts["completed"] += 1
            elif status in (JobStatus.FAILED, JobStatus.TIMED_OUT):
                self.counts["failed"] += 1
            lj.done.set()
            self.changed.notify_all()
        webhook = lj.job.get("webhook")
        if webhook:
            self.executor.submit(self._send_webhook, str(webhook), lj.body())

    @staticmethod
    def _send_webhook(url: str, body: dict[str, Any]) -> None:
        # Like the platform: one POST, retried twice on a non-2xx answer or no connection.
        # httpx is imported here, not at the top: only jobs with a webhook need it.
        import httpx

        for wait_s in WEBHOOK_RETRY.tries():
            try:
                if httpx.post(url, json=body, timeout=10.0).status_code < 300:
                    return
            except httpx.HTTPError as exc:
                log.warning("webhook %s failed: %s", url, exc)
            if wait_s is None:
                return
            time.sleep(wait_s)

    # -- operations called from HTTP threads -------------------------------------------------

    def submit(self, payload: dict[str, Any]) -> _LocalJob:
        job = dict(payload)
        job["id"] = str(uuid.uuid4())
        lj = _LocalJob(job=job, submitted_s=time.monotonic())
        with self.changed:
            self.jobs[lj.id] = lj
        self._enqueue(lj.id)
        return lj

    def _enqueue(self, job_id: str) -> None:
        def put() -> None:
            assert self._queue is not None
            self._queue.put_nowait(job_id)

        self.loop.call_soon_threadsafe(put)

    def cancel(self, lj: _LocalJob) -> None:
        with self.changed:
            if lj.status.is_terminal:
                return
            if lj.status is JobStatus.IN_QUEUE:
                lj.move(JobStatus.CANCELLED)
                lj.ended_s = time.monotonic()
                lj.done.set()
                self.changed.notify_all()
                return
        task = lj.task
        if task is not None:
            self.loop.call_soon_threadsafe(task.cancel)
        lj.done.wait(5.0)

    def retry(self, lj: _LocalJob) -> bool:
        with self.changed:
            # /retry takes FAILED or TIMED_OUT jobs only; the state machine's other move back to
            # IN_QUEUE (from IN_PROGRESS) is a lost worker's requeue, which this server has none of.
            if lj.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
                return False
            lj.move(JobStatus.IN_QUEUE)
            lj.started_s, lj.ended_s = None, None
            lj.output, lj.has_output, lj.error, lj.chunks, lj.chunks_sent = None, False, None, [], 0
            lj.submitted_s = time.monotonic()
            lj.done = threading.Event()
            self.counts["retried"] += 1
        self._enqueue(lj.id)
        return True

    def purge(self) -> int:
        removed = 0
        with self.changed:
            for lj in self.jobs.values():
                if lj.status is JobStatus.IN_QUEUE:
                    lj.move(JobStatus.CANCELLED)
                    lj.ended_s = time.monotonic()
                    lj.done.set()
                    removed += 1
            self.changed.notify_all()
        return removed

    def take_chunks(self, lj: _LocalJob, hold_s: float = STREAM_HOLD_S) -> dict[str, Any]:
        deadline = time.monotonic() + hold_s
        with self.changed:
            while lj.chunks_sent >= len(lj.chunks) and not lj.status.is_terminal:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            new = lj.chunks[lj.chunks_sent :]
            lj.chunks_sent = len(lj.chunks)
            return {"id": lj.id, "status": lj.status, "stream": [{"output": c} for c in new]}

    def health(self) -> dict[str, Any]:
        with self.changed:
            queued = sum(1 for j in self.jobs.values() if j.status is JobStatus.IN_QUEUE)
            running = sum(1 for j in self.jobs.values() if j.status is JobStatus.IN_PROGRESS)
            return {
                "jobs": {**self.counts, "inProgress": running, "inQueue": queued},
                "workers": {"idle": 0 if running else 1, "running": 1 if running else 0},
            }

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the job loop; the HTTP server is served by serve_forever() or in a thread."""
        self._loop_thread.start()
        while self._queue is None:
            time.sleep(0.001)

    def serve_forever(self) -> None:
        self.start()
        print(f"gpuserve dev server on {self.url} (POST /run, /runsync; GET /status/ID, /stream/ID)", flush=True)
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.httpd.server_close()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.executor.shutdown(wait=False, cancel_futures=True)


def _make_handler(dev: DevServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "gpuserve-dev/0.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("dev server: " + format, *args)

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": message})

        def _route(self) -> tuple[list[str], dict[str, list[str]]]:
            parts = urlsplit(self.path)
            segs = [s for s in parts.path.split("/") if s]
            if len(segs) >= 2 and segs[0] == "v2":
                segs = segs[2:]  # /v2/{endpoint}/run -> run
            return segs, parse_qs(parts.query)

        def _read_json(self) -> tuple[Any, str | None]:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                return None, "payload too large"
            raw = self.rfile.read(length) if length else b""
            if not raw.strip():
                return {}, None
            try:
                return json.loads(raw), None
            except json.JSONDecodeError as exc:
                return None, f"body is not valid JSON: {exc}"

        def _job(self, job_id: str) -> _LocalJob | None:
            lj = dev.jobs.get(job_id)
            if lj is None:
                self._error(404, f"job {job_id!r} not found")
            return lj

        def do_GET(self) -> None:
            segs, _ = self._route()
            if segs == ["health"]:
                return self._send(200, dev.health())
            if len(segs) == 2 and segs[0] == "status":
                lj = self._job(segs[1])
                if lj is not None:
                    self._send(200, lj.body())
                return None
            if len(segs) == 2 and segs[0] == "stream":
                lj = self._job(segs[1])
                if lj is not None:
                    self._send(200, dev.take_chunks(lj))
                return None
            if not segs:
                return self._send(200, {"routes": ["POST /run", "POST /runsync", "GET /status/{id}", "GET /stream/{id}",
                                                   "POST /cancel/{id}", "POST /retry/{id}", "POST /purge-queue", "GET /health"]})
            return self._error(404, f"no route GET {self.path}")

        def do_POST(self) -> None:
            segs, query = self._route()
            payload, problem = self._read_json()
            if problem is not None:
                return self._error(413 if "large" in problem else 400, problem)
            if segs in (["run"], ["runsync"]):
                if not isinstance(payload, dict) or "input" not in payload:
                    return self._error(400, "input: the body must be a JSON object with an 'input' key")
                if not isinstance(payload["input"], dict):
                    return self._error(400, f"input must be a JSON object, was {payload['input']!r:.200}")
                lj = dev.submit(payload)
                if segs == ["run"]:
                    return self._send(200, {"id": lj.id, "status": JobStatus.IN_QUEUE.value})
                try:
                    wait_ms = int(query.get("wait", ["90000"])[0])
                except ValueError:
                    return self._error(400, f"wait: must be milliseconds, was {query['wait'][0]!r}")
                lj.done.wait(min(max(wait_ms, 1000), 300_000) / 1000.0)
                body = lj.body()
                if not lj.status.is_terminal:
                    body = {"id": lj.id, "status": lj.status.value}
                return self._send(200, body)
            if len(segs) == 2 and segs[0] in ("status", "stream"):
                return self.do_GET()  # Runpod's local server answers POST here; accept both
            if len(segs) == 2 and segs[0] == "cancel":
                to_cancel = self._job(segs[1])
                if to_cancel is not None:
                    dev.cancel(to_cancel)
                    self._send(200, {"id": to_cancel.id, "status": to_cancel.status.value})
                return None
            if len(segs) == 2 and segs[0] == "retry":
                to_retry = self._job(segs[1])
                if to_retry is not None:
                    if dev.retry(to_retry):
                        self._send(200, {"id": to_retry.id, "status": JobStatus.IN_QUEUE.value})
                    else:
                        self._error(400, f"job {to_retry.id} is {to_retry.status.value}; only FAILED or TIMED_OUT jobs can be retried")
                return None
            if segs == ["purge-queue"]:
                return self._send(200, {"removed": dev.purge(), "status": "completed"})
            return self._error(404, f"no route POST {self.path}")

    return Handler
