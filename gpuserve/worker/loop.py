"""The worker's main loop: take jobs, run them concurrently, post results, obey stop signals and SIGTERM."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx

from gpuserve.core.backoff import Backoff
from gpuserve.core.startup import StartReport
from gpuserve.worker.coldstart import SDK_IMPORT_WALL_S, process_start_wall_s, write_report
from gpuserve.worker.env import WorkerEnv, with_query
from gpuserve.worker.heartbeat import Heartbeat
from gpuserve.worker.runner import Job, JobOutcome, run_job
from gpuserve.worker.slots import STUCK_NOTICE_KEY, JobThreads, StuckSlots
from gpuserve.worker.wire import LeanClient, LeanResponse, usable_for

__all__ = ["Worker"]

log = logging.getLogger("gpuserve.worker")

USER_AGENT = "gpuserve-worker/0.1.0"
TAKE_TIMEOUT_S = 90.0  # the server answers a long poll well inside this (protocol §1.3)
RATE_LIMITED_SLEEP_S = 5.0
# After failed takes: 0.5, 1, 2, 4 s, then every 5 s; a restarted server is polled again within 5 s.
TAKE_ERROR_BACKOFF = Backoff(0.5, factor=2.0, max_s=5.0)
# Job-done and stream posts on 5xx or no connection: 6 tries, 0.2, 0.5, 1, 2, 4 s apart, so a
# result survives a server that is away for 7.7 s in all.
POST_RETRY = Backoff(0.5, factor=2.0, max_s=4.0, first_s=0.2, attempts=6)
# A server that answers "no job" at once (no long poll) would make the loop spin; after a
# fast empty answer wait a little: 10 ms, doubling, to this cap (0.5 s after 6 in a row).
FAST_EMPTY_S = 0.05
FAST_EMPTY_CAP_S = 0.5
FAST_EMPTY_BACKOFF = Backoff(0.01, factor=2.0, max_s=FAST_EMPTY_CAP_S)
# The stop channel matters less than jobs: its fast empty answers back off to twice that cap.
FAST_EMPTY_STOP_BACKOFF = Backoff(0.01, factor=2.0, max_s=2 * FAST_EMPTY_CAP_S)
STOP_POLL_ERROR_S = 1.0  # a failed or odd job-stop answer: ask again after this
NO_STOP_ROUTE_S = 30.0  # a server without the job-stop route (404): look again this much later
TAKE_ON_DONE_HEADER = "x-gpuserve-take-on-done"  # on job-take answers: job-done accepts gpuserve_take


class _PlatformSink:
    """Stream chunks and progress go to the platform's job-stream and job-done routes."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def stream(self, job: Job, body: dict[str, Any]) -> None:
        await self.worker.post(self.worker.env.stream_url_for(str(job["id"])), body, what="stream chunk")

    async def progress(self, job: Job, data: Any) -> None:
        body = {"status": "IN_PROGRESS", "output": data}
        await self.worker.post(self.worker.env.done_url_for(str(job["id"]), False), body, what="progress")


class Worker:
    """One worker process's job loop, speaking Runpod's worker protocol (§1) over httpx."""

    def __init__(self, config: dict[str, Any], env: WorkerEnv) -> None:
        self.config = config
        self.env = env
        self.handler: Callable[[Job], Any] = config["handler"]
        self.modifier: Callable[[int], int] = config.get("concurrency_modifier") or (lambda c: c)
        self.aggregate = bool(config.get("return_aggregate_stream", False))
        self.refresh = bool(config.get("refresh_worker", False))
        self.concurrency = 1
        self.in_flight: dict[str, asyncio.Task[None]] = {}  # job id -> its whole processing task
        self._handler_tasks: dict[str, asyncio.Task[JobOutcome]] = {}  # job id -> the handler part
        self._ids: tuple[str, ...] = ()  # atomically replaced copy for the heartbeat thread
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self.stop_reason = ""
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=64, thread_name_prefix="handler")
        self.client: httpx.AsyncClient | None = None
        # job-take and job-done go over the lean client when the server is plain http (wire.py)
        self.lean: LeanClient | None = None
        self.cold_start = StartReport(
            worker_id=env.worker_id,
            spawn_wall_s=env.spawn_wall_s,
            process_start_wall_s=process_start_wall_s(),
            sdk_import_wall_s=SDK_IMPORT_WALL_S,
            start_called_wall_s=time.time(),
        )
        self.jobs_done = 0
        self._asking = 0  # slots the take loop has a job-take out for
        self._server_hands_over = False  # the server's job-take said its job-done takes gpuserve_take
        self.takes = {"single": 0, "batch": 0}
        # Stopped jobs whose sync handler thread still runs keep their slot (worker/slots.py).
        self.stuck = StuckSlots(env.stuck_grace_s, self._slot_free.set, self._replace_for)
        self.replaced_for: tuple[str, float] | None = None  # (job id, seconds its thread outlived the stop)

    # -- state ----------------------------------------------------------------------------

    def in_flight_ids(self) -> tuple[str, ...]:
        return self._ids

    def _track(self) -> None:
        self._ids = tuple(self.in_flight)
        self._slot_free.set()

    def request_stop(self, reason: str) -> None:
        """Stop taking jobs; in-flight jobs finish (bounded by drain_timeout_s), then the loop exits."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: %s", self.env.worker_id, reason)
            self.stop_reason = reason
            self._stopping.set()

    # -- HTTP -----------------------------------------------------------------------------

    async def post(self, url: str, body: dict[str, Any], what: str) -> bool:
        """POST a JSON body, retrying 5xx and connection errors (job-done is idempotent)."""
        return await self._post(url, body, what) is not None

    async def _post(
        self, url: str, body: dict[str, Any], what: str, retry_url: str | None = None
    ) -> httpx.Response | LeanResponse | None:
        """POST with retries; the accepted response, or None when it was refused or lost.

        `retry_url` replaces `url` after a failed attempt (a retry must not ask for new jobs
        again: the first attempt may have been handed some before its answer was lost).
        """
        assert self.client is not None
        data = json.dumps(body, ensure_ascii=False).encode()
        for attempt, delay in enumerate(POST_RETRY.tries()):
            try:
                if self.lean is not None and url.startswith("http://"):  # proxies: checked when it was made
                    response: httpx.Response | LeanResponse = await self.lean.post(url, data)
                else:
                    response = await self.client.post(url, content=data, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 400:
                    return response
                if response.status_code < 500:
                    log.error("%s rejected (%s): %s", what, response.status_code, response.text[:500])
                    return None
                problem = f"HTTP {response.status_code}"
            url = retry_url or url
            if delay is None:
                break
            log.warning("%s failed (%s), retry %d in %.1f s", what, problem, attempt + 1, delay)
            await asyncio.sleep(delay)
        log.error("%s lost after %d attempts", what, POST_RETRY.attempts)
        return None

    # -- taking jobs ----------------------------------------------------------------------

    def _next_concurrency(self) -> int:
        try:
            value = int(self.modifier(self.concurrency))
        except Exception as exc:
            log.error("concurrency_modifier failed, keeping %d: %s", self.concurrency, exc)
            return self.concurrency
        return max(1, value)

    async def _take(self, free: int) -> list[Job] | None:
        """One job-take (or job-take-batch) request. None: an error, the caller backs off."""
        assert self.client is not None
        url = self.env.take_url_for(free, in_progress=bool(self.in_flight))
        self.takes["batch" if free > 1 else "single"] += 1
        if self.cold_start.first_take_wall_s is None:
            self._note_first_take()
        response: httpx.Response | LeanResponse
        if self.lean is not None:
            response = await self.lean.get(url, timeout_s=TAKE_TIMEOUT_S)
        else:
            response = await self.client.get(url, timeout=httpx.Timeout(30.0, read=TAKE_TIMEOUT_S))
        status = response.status_code
        if response.headers.get(TAKE_ON_DONE_HEADER) == "1":
            self._server_hands_over = True
        if status in (204, 400) or not response.content:
            return []
        if status == 429:
            log.warning("job-take rate limited; waiting %.0f s", RATE_LIMITED_SLEEP_S)
            await asyncio.sleep(RATE_LIMITED_SLEEP_S)
            return []
        if status >= 300:
            log.error("job-take failed: HTTP %s %s", status, response.text[:200])
            return None
        try:
            payload = response.json()
        except ValueError:
            log.warning("job-take answered non-JSON; treating as no job")
            return []
        jobs = [payload] if isinstance(payload, dict) else payload if isinstance(payload, list) else []
        log.debug("%s asked %d, got %d job(s)", "job-take-batch" if free > 1 else "job-take", free, len(jobs))
        valid = []
        for job in jobs:
            if isinstance(job, dict) and "id" in job:
                valid.append(job)
            else:
                log.error("dropping a job with no 'id': %r", job)
        return valid

    def _note_first_take(self) -> None:
        self.cold_start = replace(self.cold_start, first_take_wall_s=time.time())
        d = self.cold_start.durations()
        log.info(
            "worker %s ready: first job-take %.3f s after start() (process start -> first take %s s, "
            "spawn -> first take %s s)",
            self.env.worker_id,
            d["start_to_first_take_s"] or 0.0,
            d["process_to_first_take_s"],
            d["spawn_to_first_take_s"],
        )
        if self.env.cold_start_file:
            try:
                write_report(self.cold_start, self.env.cold_start_file)
            except OSError as exc:
                log.warning("could not write %s: %s", self.env.cold_start_file, exc)

    async def take_loop(self) -> None:
        errors = 0
        fast_empties = 0
        while not self._stopping.is_set():
            self.concurrency = self._next_concurrency()
            free = self.concurrency - len(self.in_flight) - len(self.stuck)
            if free <= 0:
                self._slot_free.clear()
                await self._slot_free.wait()
                continue
            asked_s = time.monotonic()
            self._asking = free
            try:
                jobs = await self._take(free)
            except httpx.HTTPError as exc:
                log.warning("job-take failed: %s: %s", type(exc).__name__, exc)
                jobs = None
            finally:
                self._asking = 0
            if jobs is None:
                errors += 1
                await asyncio.sleep(TAKE_ERROR_BACKOFF.delay_s(errors))
                continue
            errors = 0
            if not jobs:
                if time.monotonic() - asked_s < FAST_EMPTY_S:
                    fast_empties += 1
                    await asyncio.sleep(FAST_EMPTY_BACKOFF.delay_s(fast_empties))
                else:
                    fast_empties = 0
                continue
            fast_empties = 0
            for job in jobs:
                self._start_job(job)

    @staticmethod
    def _handed_over(response: httpx.Response | LeanResponse) -> list[Job]:
        try:
            body = response.json()
        except ValueError:
            return []
        jobs = body.get("next") if isinstance(body, dict) else None
        if not isinstance(jobs, list):
            return []  # not a gpuserve server: the take loop asks as usual
        return [j for j in jobs if isinstance(j, dict) and "id" in j]

    def _start_job(self, job: Job) -> None:
        job_id = str(job["id"])
        if job_id in self.in_flight:
            log.warning("job %s handed out twice; already running", job_id)
            return
        self.in_flight[job_id] = asyncio.get_running_loop().create_task(self._process(job), name=f"job-{job_id}")
        self._track()

    async def _process(self, job: Job) -> None:
        job_id = str(job["id"])
        started = time.monotonic()
        threads = JobThreads(self.executor)
        handler_task = asyncio.get_running_loop().create_task(
            run_job(
                self.handler,
                job,
                _PlatformSink(self),
                aggregate_stream=self.aggregate,
                refresh_worker=self.refresh,
                executor=threads,
                worker_id=self.env.worker_id,
            )
        )
        self._handler_tasks[job_id] = handler_task
        try:
            try:
                outcome = await handler_task
            except asyncio.CancelledError:
                if handler_task.cancelled():
                    # A stop signal: the server already set CANCELLED or TIMED_OUT; post nothing.
                    # A sync handler's thread cannot be stopped: it keeps the slot until it returns.
                    log.info("job %s stopped by the server", job_id)
                    self.stuck.hold(job_id, threads)
                    return
                raise
            finally:
                self._handler_tasks.pop(job_id, None)
            url = self.env.done_url_for(job_id, outcome.is_stream)
            # gpuserve's job-done can hand over the next queued job in its answer (gpuserve_take),
            # saving a job-take round trip per job under load; asked only of a server whose
            # job-take announced it, so a Runpod server sees the protocol unchanged. Only for
            # one job at a time: with more slots the take loop's batch takes already share a
            # request between jobs, and slots are filled the way Runpod's SDK fills them.
            want = 0
            if (
                self._server_hands_over
                and self.concurrency == 1
                and len(self.in_flight) == 1
                and not self._asking
                and not outcome.stop_pod
                and not self._stopping.is_set()
            ):
                want = 1
            asked_url = with_query(url, gpuserve_take=want) if want else url
            response = await self._post(asked_url, outcome.body, what=f"result of {job_id}", retry_url=url)
            self.jobs_done += 1
            if want and response is not None:
                for next_job in self._handed_over(response):
                    self._start_job(next_job)
            log.info(
                "job %s %s in %.3f s",
                job_id,
                "failed" if outcome.failed else "done",
                time.monotonic() - started,
            )
            if outcome.stop_pod:
                self.request_stop("refresh_worker: the platform starts a fresh worker")
        finally:
            self.in_flight.pop(job_id, None)
            self._track()

    def _replace_for(self, job_id: str, waited_s: float) -> None:
        """A stopped job's thread outlived the grace: only a new process frees its slot, so this one goes."""
        if self.replaced_for is None:
            self.replaced_for = (job_id, waited_s)
        self.request_stop(
            f"the handler of stopped job {job_id} still runs {waited_s:.0f} s later; "
            "a Python thread cannot be stopped, so this worker is replaced"
        )

    async def _report_replaced(self) -> None:
        """Tell the server why this worker goes (the job's status records it) and ask for a fresh worker (stopPod)."""
        if self.replaced_for is None:
            return
        job_id, waited_s = self.replaced_for
        error = (
            f"its handler was still running {waited_s:.0f} s after the job was stopped "
            f"(a sync handler cannot be interrupted), so worker {self.env.worker_id} was replaced"
        )
        body = {"error": error, "stopPod": True, STUCK_NOTICE_KEY: True}
        await self.post(self.env.done_url_for(job_id, False), body, what=f"replacement notice for {job_id}")

    # -- stop channel -----------------------------------------------------------------------

    async def stop_loop(self) -> None:
        url = self.env.stop_url
        if url is None:
            log.warning("the take URL has no /job-take/; per-job stop signals are disabled")
            return
        assert self.client is not None
        fast_empties = 0
        while not self._stopping.is_set():
            asked_s = time.monotonic()
            try:
                response = await self.client.get(url, timeout=httpx.Timeout(30.0, read=TAKE_TIMEOUT_S))
            except httpx.HTTPError as exc:
                log.warning("job-stop poll failed: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(STOP_POLL_ERROR_S)
                continue
            status = response.status_code
            if status == 204:
                if time.monotonic() - asked_s < FAST_EMPTY_S:
                    fast_empties += 1
                    await asyncio.sleep(FAST_EMPTY_STOP_BACKOFF.delay_s(fast_empties))
                else:
                    fast_empties = 0
                continue
            fast_empties = 0
            if status == 429:
                await asyncio.sleep(RATE_LIMITED_SLEEP_S)
                continue
            if status == 404:
                log.warning("the server has no job-stop route; checking again in %.0f s", NO_STOP_ROUTE_S)
                await asyncio.sleep(NO_STOP_ROUTE_S)
                continue
            if status >= 300:
                log.warning("job-stop poll answered %s", status)
                await asyncio.sleep(STOP_POLL_ERROR_S)
                continue
            try:
                ids = response.json().get("jobsToStop", [])
            except (ValueError, AttributeError):
                ids = []
            if not ids:
                await asyncio.sleep(STOP_POLL_ERROR_S)
                continue
            for job_id in ids:
                self.cancel_job(str(job_id))

    def cancel_job(self, job_id: str) -> bool:
        task = self._handler_tasks.get(job_id)
        if task is None or task.done():
            return False
        log.info("stop signal for job %s: cancelling its handler", job_id)
        task.cancel()
        return True

    # -- lifecycle --------------------------------------------------------------------------

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop, sig.name)
            except (NotImplementedError, RuntimeError, ValueError):
                log.debug("cannot handle %s outside the main thread", sig.name)

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT or a refresh; returns the process exit code (0)."""
        self._install_signals()
        headers = {"Authorization": self.env.api_key, "User-Agent": USER_AGENT}
        heartbeat = None
        if self.env.ping_url:
            heartbeat = Heartbeat(self.env.ping_url, self.env.api_key, self.env.ping_interval_s, self.in_flight_ids, USER_AGENT)
            heartbeat.start()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(headers=headers, timeout=30.0, limits=limits) as client:
            self.client = client
            if self.env.take_url and usable_for(self.env.take_url):
                self.lean = LeanClient(headers, timeout_s=30.0)
            log.info("worker %s polling %s", self.env.worker_id, self.env.take_url)
            take = asyncio.create_task(self.take_loop(), name="take-loop")
            stop = asyncio.create_task(self.stop_loop(), name="stop-loop")
            await self._stopping.wait()
            # Stop asking for work at once; a take answered in the meantime would be lost here,
            # and the server requeues jobs of a worker that stops pinging.
            take.cancel()
            if self.in_flight:
                log.info("waiting up to %.0f s for %d in-flight job(s)", self.env.drain_timeout_s, len(self.in_flight))
            drain_deadline = time.monotonic() + self.env.drain_timeout_s
            # Loop: a job-done answer may still hand over jobs that started after the stop.
            while self.in_flight:
                _, late = await asyncio.wait(
                    list(self.in_flight.values()), timeout=max(0.0, drain_deadline - time.monotonic())
                )
                if late and time.monotonic() >= drain_deadline:
                    for task in late:
                        task.cancel()
                    break
            stop.cancel()
            await asyncio.gather(take, stop, return_exceptions=True)
            await self._report_replaced()
            if self.lean is not None:
                await self.lean.aclose()
        if heartbeat is not None:
            heartbeat.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s exits after %d job(s) (%s)", self.env.worker_id, self.jobs_done, self.stop_reason)
        return 0


def run_worker(config: dict[str, Any], env: WorkerEnv) -> int:
    """Run the loop to its end; returns the exit code."""
    os.environ.setdefault("GPUSERVE_WORKER_ID", env.worker_id)
    return asyncio.run(Worker(config, env).run())


def exit_now_if_stuck(code: int) -> None:
    """A sync handler thread that outlived the drain would block interpreter exit: leave anyway."""
    if any(t.name.startswith("handler") and t.is_alive() for t in threading.enumerate()):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
