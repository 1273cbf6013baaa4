"""The process backend (the embedded default): each worker is a local `python handler.py` subprocess.

Lifecycle, with the registry as the one table of worker states:

    apply(start)  -> spawn (or, during crash back-off, a placeholder that spawns later)
                     INITIALIZING until its first job-take (the worker API records it)
    job-takes     -> IDLE / RUNNING (the worker API)
    apply(stop)   -> SIGTERM, SIGKILL after `stop_grace_s`; hidden from the controller at once
    stopPod       -> draining: SIGTERM once its jobs end; exit -> removed (the controller replaces it)
    new version   -> OUTDATED: finishes its jobs, then SIGTERM and removal; replacements start
    crash         -> UNHEALTHY (the server requeues its jobs), later removed; new spawns for
                     that endpoint wait an exponential back-off (1 s, 2 s, 4 s, ... capped)
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from gpuserve.backends.base import worker_env
from gpuserve.core.backoff import Backoff
from gpuserve.core.errors import BackendError, ConfigError, NotFoundError
from gpuserve.core.startup import ColdStartRecord, StartReport
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState, WorkerView
from gpuserve.live.clock import SteadyClock
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry

__all__ = ["ProcessBackend", "crash_backoff_s"]

log = logging.getLogger("gpuserve.backends.process")

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
# A handler that fails at import would otherwise respawn as fast as Python starts (about 20 per
# second); doubling from 1 s reaches the 60 s cap after 7 crashes in a row.
CRASH_BACKOFF = Backoff(BACKOFF_BASE_S, factor=2.0, max_s=BACKOFF_CAP_S)
HEALTHY_LIFETIME_S = 60.0  # a worker that crashes after living this long resets the back-off
UNHEALTHY_LINGER_S = 30.0  # keep a crashed worker visible (health, `gpuserve endpoints`) this long
COLD_STARTS_KEPT = 1000


def crash_backoff_s(streak: int) -> float:
    """Delay before the next spawn after `streak` consecutive crashes: 0, 1, 2, 4, ... 60 s."""
    return CRASH_BACKOFF.delay_s(streak)


@dataclass
class _Proc:
    worker_id: str
    endpoint_id: str
    version: str
    spawn_s: float  # backend clock (the `now_s` of apply/poll)
    spawn_wall_s: float
    log_path: Path
    cold_start_path: Path
    popen: subprocess.Popen[bytes] | None = None  # None: a placeholder waiting out a back-off
    spawn_at_s: float = 0.0
    stopping: bool = False  # we asked it to stop (scale-down, OUTDATED, stopPod)
    condemned: bool = False  # killed because the server declared it UNHEALTHY (counts as a crash)
    hidden: bool = False  # scale-down: the controller no longer counts it
    kill_at_s: float | None = None
    exited_s: float | None = None
    exit_code: int | None = None
    report: StartReport | None = None  # the worker's own start-up report, once it wrote one


@dataclass
class _EndpointState:
    deployment: Deployment
    crash_streak: int = 0
    next_spawn_s: float = 0.0


class ProcessBackend:
    """Implements LiveBackend (and the controller's Backend) with local subprocesses."""

    def __init__(
        self,
        server_url: str,
        registry: WorkerRegistry,
        logs_dir: str | os.PathLike[str] | None = None,
        ping_interval_ms: int = 10_000,
        python: str | None = None,
        stop_grace_s: float = 10.0,
        clock: Any = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.registry = registry
        self.logs_dir = Path(logs_dir) if logs_dir is not None else Path(tempfile.mkdtemp(prefix="gpuserve-workers-"))
        try:  # owner only: a handler's log may print its inputs
            self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("logs_dir", str(self.logs_dir), f"cannot be created ({exc.strerror or exc})") from None
        self.ping_interval_ms = ping_interval_ms
        self.python = python or sys.executable
        self.stop_grace_s = stop_grace_s
        self._now = clock.now_s if clock is not None else SteadyClock().now_s
        self._lock = threading.RLock()
        self._endpoints: dict[str, _EndpointState] = {}
        self._procs: dict[str, _Proc] = {}
        self._log_paths: dict[str, Path] = {}  # of workers it runs; a gone one's log is logs_dir/<id>.log
        self.cold_starts: deque[ColdStartRecord] = deque(maxlen=COLD_STARTS_KEPT)  # of workers that exited

    # -- LiveBackend ----------------------------------------------------------------------------

    def configure(self, deployment: Deployment) -> None:
        if deployment.handler_path is None:
            raise ConfigError("handler", None, "is required by the process backend (a Python file calling serverless.start)")
        path = Path(deployment.handler_path)
        if not path.is_file():
            raise ConfigError("handler", deployment.handler_path, "is not a file")
        _check_sdk_importable(deployment.python or self.python, deployment.sdk)
        with self._lock:
            old = self._endpoints.get(deployment.endpoint_id)
            if old is None:
                self._endpoints[deployment.endpoint_id] = _EndpointState(deployment)
                return
            old.deployment = deployment
            old.crash_streak, old.next_spawn_s = 0, 0.0  # a new version deserves a fresh start
            for p in self._procs.values():
                if p.endpoint_id == deployment.endpoint_id and p.version != deployment.version and not p.stopping:
                    if p.popen is None:  # a placeholder never started: just drop it
                        self._forget(p)
                    else:
                        self.registry.set_state(p.worker_id, WorkerState.OUTDATED, self._now())

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        with self._lock:
            hidden = {p.worker_id for p in self._procs.values() if p.hidden}
        return [v for v in self.registry.views(endpoint_id) if v.worker_id not in hidden]

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        with self._lock:
            state = self._endpoints.get(endpoint.endpoint_id)
            if state is None:
                raise NotFoundError(f"endpoint {endpoint.endpoint_id!r} has no deployment; call configure() first")
            if state.deployment.spec != endpoint:
                state.deployment = _with_spec(state.deployment, endpoint)
            for worker_id in action.stop:
                p = self._procs.get(worker_id)
                if p is not None:
                    p.hidden = True
                    self._stop(p, now_s)
            for _ in range(action.start):
                self._start(state, now_s)

    def poll(self, now_s: float) -> None:
        with self._lock:
            for p in list(self._procs.values()):
                if p.popen is None:
                    if p.exited_s is None and now_s >= p.spawn_at_s:
                        self._spawn(p, now_s)
                    continue
                if p.exited_s is None:
                    code = p.popen.poll()
                    if code is not None:
                        self._on_exit(p, code, now_s)
                        continue
                    self._read_cold_start(p)
                    live = self.registry.get(p.worker_id)
                    if live is not None and live.state is WorkerState.UNHEALTHY and not p.stopping and not p.condemned:
                        # The server declared it dead (missed heartbeats) yet the process runs:
                        # it holds no jobs any more and gets none, so end it and count a crash.
                        log.warning("worker %s is UNHEALTHY but still running; SIGKILL", p.worker_id)
                        p.condemned = True
                        _signal(p.popen, signal.SIGKILL)
                        continue
                    if live is not None and live.draining and not live.in_flight and not p.stopping:
                        # stopPod or OUTDATED, and its jobs are done: recycle the process.
                        if live.state is not WorkerState.UNHEALTHY:
                            self._stop(p, now_s)
                    if p.kill_at_s is not None and now_s >= p.kill_at_s:
                        log.warning("worker %s ignored SIGTERM for %.0f s; SIGKILL", p.worker_id, self.stop_grace_s)
                        _signal(p.popen, signal.SIGKILL)
                        p.kill_at_s = None
                elif now_s - p.exited_s >= UNHEALTHY_LINGER_S:
                    self._forget(p)

    def recycle(self, worker_id: str) -> None:
        """stopPod: the server hands it no more jobs; stop the process once its jobs end."""
        self.registry.set_draining(worker_id, True)

    def logs(self, worker_id: str, tail_lines: int = 200) -> str:
        with self._lock:
            path = self._log_paths.get(worker_id)
        if path is None:
            candidate = self.logs_dir / f"{worker_id}.log"
            if not candidate.is_file():
                raise NotFoundError(f"no worker {worker_id!r} (no log in {self.logs_dir})")
            path = candidate
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = deque(f, maxlen=max(1, tail_lines))
        return "".join(lines)

    def shutdown(self) -> None:
        with self._lock:
            procs = [p for p in self._procs.values() if p.popen is not None and p.exited_s is None]
            for p in procs:
                p.stopping = True
                assert p.popen is not None
                _signal(p.popen, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_s
        for p in procs:
            assert p.popen is not None
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(p.popen, signal.SIGKILL)
                p.popen.wait(5)
        with self._lock:
            for p in list(self._procs.values()):
                if p.popen is not None and p.exited_s is None:
                    self._read_cold_start(p)
                self._forget(p)

    # -- extras -----------------------------------------------------------------------------------

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        """Start-up phases of one worker: spawn -> process start -> start() -> first take (so far, while it starts)."""
        with self._lock:
            p = self._procs.get(worker_id)
            if p is None:
                return next((c for c in reversed(self.cold_starts) if c.worker_id == worker_id), None)
            self._read_cold_start(p)
            return self._cold_start_record(p)

    def process_id(self, worker_id: str) -> int | None:
        with self._lock:
            p = self._procs.get(worker_id)
            return p.popen.pid if p is not None and p.popen is not None else None

    def exit_code(self, worker_id: str) -> int | None:
        with self._lock:
            p = self._procs.get(worker_id)
            return p.exit_code if p is not None else None

    def backoff_until_s(self, endpoint_id: str) -> float:
        with self._lock:
            state = self._endpoints.get(endpoint_id)
            return state.next_spawn_s if state is not None else 0.0

    # -- internals ----------------------------------------------------------------------------------

    def _start(self, state: _EndpointState, now_s: float) -> None:
        dep = state.deployment
        worker_id = f"{dep.endpoint_id}-{uuid.uuid4().hex[:10]}"
        p = _Proc(
            worker_id=worker_id,
            endpoint_id=dep.endpoint_id,
            version=dep.version,
            spawn_s=now_s,
            spawn_wall_s=time.time(),
            log_path=self.logs_dir / f"{worker_id}.log",
            cold_start_path=self.logs_dir / f"{worker_id}.coldstart.json",
            spawn_at_s=max(now_s, state.next_spawn_s),
        )
        self._procs[worker_id] = p
        self._log_paths[worker_id] = p.log_path
        if p.spawn_at_s <= now_s:
            self._spawn(p, now_s)
        else:
            # Crash back-off: the worker exists (INITIALIZING, counted) but its process waits.
            self.registry.add(worker_id, dep.endpoint_id, now_s, capacity=dep.spec.concurrency_per_worker, spec_version=dep.version)
            log.info("worker %s waits %.1f s of crash back-off before spawning", worker_id, p.spawn_at_s - now_s)

    def _spawn(self, p: _Proc, now_s: float) -> None:
        state = self._endpoints[p.endpoint_id]
        dep = state.deployment
        assert dep.handler_path is not None
        self.registry.remove(p.worker_id)  # a placeholder's entry: re-added with a fresh token
        token = self.registry.add(
            p.worker_id, dep.endpoint_id, now_s, capacity=dep.spec.concurrency_per_worker, spec_version=dep.version
        )
        p.spawn_s, p.spawn_wall_s = now_s, time.time()
        env = {**os.environ, **worker_env(
            dep,
            p.worker_id,
            token,
            self.server_url,
            gpu_label=dep.spec.gpu_type or "cpu",
            ping_interval_ms=self._ping_ms(dep),
        )}
        env.update({
            "GPUSERVE_SPAWN_WALL_S": repr(p.spawn_wall_s),
            "GPUSERVE_COLD_START_FILE": str(p.cold_start_path),
            "GPUSERVE_PARENT_PID": str(os.getpid()),
            "GPUSERVE_DRAIN_TIMEOUT_S": repr(max(0.5, self.stop_grace_s - 1.0)),
        })
        handler = Path(dep.handler_path).resolve()
        cwd = dep.workdir or str(handler.parent)
        python = dep.python or self.python
        # The child keeps its own descriptor; owner-only, as the logs folder.
        logfile: IO[bytes] = os.fdopen(os.open(p.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        try:
            p.popen = subprocess.Popen(
                [python, str(handler)],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C at the server's terminal reaches the server, which then
                # stops workers in order, instead of every worker at once.
                start_new_session=True,
            )
        except OSError as exc:
            self.registry.remove(p.worker_id)
            self._procs.pop(p.worker_id, None)
            raise BackendError(f"could not start worker {p.worker_id} ({python} {handler}): {exc}") from exc
        finally:
            logfile.close()
        log.info("spawned worker %s (pid %d) for %s", p.worker_id, p.popen.pid, p.endpoint_id)

    def _ping_ms(self, dep: Deployment) -> int:
        # Runpod's SDK pings every int(ms) // 1000 seconds and crashes its heartbeat process on
        # a zero timeout, so it needs at least 1000 ms; gpuserve's SDK keeps milliseconds.
        if dep.sdk == "runpod":
            return max(1000, self.ping_interval_ms)
        return self.ping_interval_ms

    def _stop(self, p: _Proc, now_s: float) -> None:
        self.registry.set_draining(p.worker_id, True)
        if p.popen is None:
            self._forget(p)  # a placeholder: nothing runs yet
            return
        if p.stopping or p.exited_s is not None:
            return
        p.stopping = True
        p.kill_at_s = now_s + self.stop_grace_s
        _signal(p.popen, signal.SIGTERM)

    def _on_exit(self, p: _Proc, code: int, now_s: float) -> None:
        p.exit_code = code
        self._read_cold_start(p)
        self.cold_starts.append(self._cold_start_record(p))
        live = self.registry.get(p.worker_id)
        # Asked to stop (scale-down, OUTDATED, shutdown), or a clean exit after stopPod.
        if p.stopping or (code == 0 and live is not None and live.draining and live.state is not WorkerState.UNHEALTHY):
            log.info("worker %s exited (%s) as asked", p.worker_id, code)
            self._forget(p)
            return
        # A crash (or an exit nobody asked for): the server requeues its jobs; back off new spawns.
        state = self._endpoints.get(p.endpoint_id)
        if state is not None:
            if now_s - p.spawn_s >= HEALTHY_LIFETIME_S:
                state.crash_streak = 0
            state.crash_streak += 1
            state.next_spawn_s = now_s + crash_backoff_s(state.crash_streak)
        p.exited_s = now_s
        self.registry.set_state(p.worker_id, WorkerState.UNHEALTHY, now_s)
        log.warning(
            "worker %s crashed (exit %s); next spawn for %s in %.1f s; last log lines:\n%s",
            p.worker_id,
            code,
            p.endpoint_id,
            crash_backoff_s(state.crash_streak) if state else 0.0,
            self._tail(p, 10),
        )

    def _forget(self, p: _Proc) -> None:
        self._procs.pop(p.worker_id, None)
        self._log_paths.pop(p.worker_id, None)  # `logs` still finds it in logs_dir, where it lies
        self.registry.remove(p.worker_id)

    def _tail(self, p: _Proc, lines: int) -> str:
        try:
            with open(p.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except OSError:
            return ""

    def _read_cold_start(self, p: _Proc) -> None:
        if p.report is not None or not p.cold_start_path.is_file():
            return
        try:
            p.report = StartReport.from_json(json.loads(p.cold_start_path.read_text()))
        except (OSError, ValueError):
            p.report = None  # read again at the next poll

    def _cold_start_record(self, p: _Proc) -> ColdStartRecord:
        live = self.registry.get(p.worker_id)
        first_take_s = live.first_take_s if live is not None else None
        # The total is the server's view when it has one: spawn (backend clock) -> the first
        # job-take seen by the worker API; else the worker's own, from its report.
        total_s = None if first_take_s is None else round(first_take_s - p.spawn_s, 4)
        return ColdStartRecord.from_report(p.worker_id, p.endpoint_id, p.spawn_s, p.report, total_s=total_s)


def _check_sdk_importable(python: str, sdk: str) -> None:
    """Fail at configure time, not in a crash loop, when the interpreter lacks the worker SDK.

    Only looks the package up (find_spec); importing `runpod` takes seconds.
    """
    package = "runpod" if sdk == "runpod" else "gpuserve"
    probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({package!r}) is None)"
    try:
        found = subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError("python", python, f"cannot be run ({exc})") from None
    if not found:
        raise ConfigError("python", python, f"cannot import {package!r} (sdk: {sdk}); pip install {package} into it")


def _signal(popen: subprocess.Popen[bytes], sig: int) -> None:
    try:
        popen.send_signal(sig)
    except ProcessLookupError:
        pass


def _with_spec(dep: Deployment, spec: EndpointSpec) -> Deployment:
    return replace(dep, spec=spec)
