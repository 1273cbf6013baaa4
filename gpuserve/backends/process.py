"""The process backend (the embedded default): each worker is a local `python handler.py` subprocess.

Lifecycle, with the registry as the one table of worker states:

    apply(start)  -> spawn (or, during crash back-off, a placeholder that spawns later)
                     INITIALIZING until its first job-take (the worker API records it)
    job-takes     -> IDLE / RUNNING (the worker API)
    apply(stop)   -> SIGTERM, SIGKILL after `stop_grace_s`; hidden from the controller at once
    stopPod       -> draining: SIGTERM once its jobs end; exit -> removed (the controller replaces it)
    new version   -> new workers run it; the runtime's rolling update (live/rollout.py) marks old
                     ones OUTDATED one by one: each finishes its jobs, then SIGTERM and removal
    load_balancer -> the endpoint's `command` (the user's HTTP server) on a free local port, told
                     in PORT / PORT_HEALTH; the server's health polls (live/lb_health.py) move it
                     INITIALIZING -> IDLE; signals go to its whole process group (a shell, uvicorn)
    crash         -> UNHEALTHY (the server requeues its jobs), later removed; its replacement
                     waits its slot's exponential back-off (1 s, 2 s, 4 s, ... capped), other
                     starts wait nothing (core/crashslots.py)
    server dies   -> every worker runs under backends/supervise.py, which kills the worker's whole
                     process group the moment this server's process ends (kill -9 included);
                     pidfiles in the logs folder let the next server reap any left running
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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from gpuserve.backends import supervise
from gpuserve.backends.base import inherited_env, lb_ports, worker_capacity, worker_env
from gpuserve.backends.pidfiles import reap_leftovers, remove_pidfile, write_pidfile
from gpuserve.core.backoff import CRASH_BACKOFF
from gpuserve.core.crashslots import CrashSlots
from gpuserve.core.errors import BackendError, ConfigError, NotFoundError
from gpuserve.core.startup import ColdStartRecord, StartReport
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState, WorkerView
from gpuserve.live.clock import SteadyClock
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.settings import MIB
from gpuserve.live.worker_ops import (
    MAX_EXEC_OUTPUT_BYTES,
    ExecResult,
    FileLogReader,
    LogReader,
    offset_since,
    tail_offset,
)
from gpuserve.store.base import WorkerRecord

__all__ = ["ProcessBackend", "crash_backoff_s"]

log = logging.getLogger("gpuserve.backends.process")

# A handler that fails at import would otherwise respawn as fast as Python starts (about 20 per
# second). The schedule is core.backoff's, which the simulator's crashed workers follow too.
BACKOFF_BASE_S = CRASH_BACKOFF.base_s
BACKOFF_CAP_S = CRASH_BACKOFF.max_s
UNHEALTHY_LINGER_S = 30.0  # keep a crashed worker visible (health, `gpuserve endpoints`) this long
COLD_STARTS_KEPT = 1000
LOG_MARK_EVERY_S = 1.0
LOG_MARKS_KEPT = 4 * 3600  # an hour at one a second: `--since` further back reads from the log's start


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
    slot_streak: int = 0  # crashes in a row of the slot it fills (core/crashslots.py)
    backoff_s: float = 0.0  # how long its spawn waited for that slot's crash back-off
    group: bool = False  # signal the whole process group (a load-balancing worker's command)
    env: dict[str, str] | None = None  # what it was started with, for `gpuserve exec`
    cwd: str | None = None
    # (wall time, log size) about once a second while it runs: where `logs --since` starts reading.
    log_marks: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=LOG_MARKS_KEPT))


@dataclass
class _EndpointState:
    deployment: Deployment
    slots: CrashSlots = field(default_factory=CrashSlots)  # slots left empty by crashes, each with its back-off


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
        log_max_bytes: int = 64 * MIB,
        log_rate_bytes_s: int = MIB,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.registry = registry
        self.logs_dir = Path(logs_dir) if logs_dir is not None else Path(tempfile.mkdtemp(prefix="gpuserve-workers-"))
        try:  # owner only: a handler's log may print its inputs
            self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("logs_dir", str(self.logs_dir), f"cannot be created ({exc.strerror or exc})") from None
        self.reaped = reap_leftovers(self.logs_dir)  # workers an earlier server of this data dir left running
        self.ping_interval_ms = ping_interval_ms
        self.python = python or sys.executable
        self.stop_grace_s = stop_grace_s
        # A worker's log: past log_max_bytes it moves to <id>.log.1 (one rotation); output over
        # log_rate_bytes_s is dropped and counted (a worker spinning on an error wrote 1 MB/s).
        self.log_max_bytes, self.log_rate_bytes_s = log_max_bytes, log_rate_bytes_s
        self._now = clock.now_s if clock is not None else SteadyClock().now_s
        self._lock = threading.RLock()
        self._endpoints: dict[str, _EndpointState] = {}
        self._procs: dict[str, _Proc] = {}
        self._log_paths: dict[str, Path] = {}  # of workers it runs; a gone one's log is logs_dir/<id>.log
        self.cold_starts: deque[ColdStartRecord] = deque(maxlen=COLD_STARTS_KEPT)  # of workers that exited

    # -- LiveBackend ----------------------------------------------------------------------------

    def configure(self, deployment: Deployment) -> None:
        if deployment.spec.is_load_balancer:
            if not deployment.command:
                raise ConfigError(
                    "command", None, "is required by the process backend for a load_balancer endpoint (it starts your HTTP server)"
                )
        elif deployment.handler_path is None:
            raise ConfigError("handler", None, "is required by the process backend (a Python file calling serverless.start)")
        else:
            path = Path(deployment.handler_path)
            if not path.is_file():
                raise ConfigError("handler", deployment.handler_path, "is not a file")
            _check_sdk_importable(deployment.python or self.python, deployment.sdk)
        with self._lock:
            old = self._endpoints.get(deployment.endpoint_id)
            if old is None:
                self._endpoints[deployment.endpoint_id] = _EndpointState(deployment)
                return
            if old.deployment.version == deployment.version:
                old.deployment = deployment  # scaling numbers only: nothing to replace
                return
            old.deployment = deployment
            old.slots.clear()  # a new version deserves a fresh start
            # A placeholder (crash back-off) never started: drop it. Running workers of the old
            # version keep serving until the runtime's rolling update retires them one by one
            # (gpuserve.live.rollout: OUTDATED, then `recycle`).
            for p in list(self._procs.values()):
                if p.endpoint_id == deployment.endpoint_id and p.version != deployment.version and p.popen is None:
                    self._forget(p)

    def image_cached(self, endpoint_id: str) -> bool:
        """Always cached once configured: a process worker runs a handler file (or command) already on this host.

        There is no image to pull, so every start is what Runpod calls a start on a host with
        the image cached, and extra workers (`scaling.extra_workers`) may start on a spike.
        An endpoint opts out with `extra_workers: 0`.
        """
        with self._lock:
            return endpoint_id in self._endpoints

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
                    self._mark_log(p)
                    self._read_cold_start(p)
                    live = self.registry.get(p.worker_id)
                    if live is not None and live.state is WorkerState.UNHEALTHY and not p.stopping and not p.condemned:
                        # The server declared it dead (missed heartbeats) yet the process runs:
                        # it holds no jobs any more and gets none, so end it and count a crash.
                        log.warning("worker %s is UNHEALTHY but still running; SIGKILL", p.worker_id)
                        p.condemned = True
                        _signal(p.popen, signal.SIGKILL, p.group)
                        continue
                    if live is not None and live.draining and not live.in_flight and not p.stopping:
                        # stopPod or OUTDATED, and its jobs are done: recycle the process.
                        if live.state is not WorkerState.UNHEALTHY:
                            self._stop(p, now_s)
                    if p.kill_at_s is not None and now_s >= p.kill_at_s:
                        log.warning("worker %s ignored SIGTERM for %.0f s; SIGKILL", p.worker_id, self.stop_grace_s)
                        _signal(p.popen, signal.SIGKILL, p.group)
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
                raise NotFoundError(f"no worker {worker_id!r} on this server (no log kept for it)")  # never the data-dir path
            path = candidate
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = deque(f, maxlen=max(1, tail_lines))
        return "".join(lines)

    def open_log(self, worker_id: str, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> LogReader:
        with self._lock:
            p = self._procs.get(worker_id)
            path = p.log_path if p is not None else self.logs_dir / f"{worker_id}.log"
            marks = list(p.log_marks) if p is not None else []
        if not path.is_file():
            raise NotFoundError(f"no worker {worker_id!r} on this server (no log kept for it)")  # never the data-dir path
        offset = tail_offset(path, tail_lines) if since_wall_s is None else offset_since(path, marks, since_wall_s)
        return FileLogReader(path, offset, (lambda: not self._running(worker_id)) if follow else None)

    def exec(self, worker_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """`argv` in the worker's directory with the worker's environment (its token too: admins only)."""
        with self._lock:
            p = self._procs.get(worker_id)
            if p is None or p.popen is None or p.exited_s is not None or p.env is None:
                raise NotFoundError(f"no running worker {worker_id!r} on this server")
            env, cwd = dict(p.env), p.cwd
        try:
            done = subprocess.run(
                list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:  # run() killed it
            out = exc.output or b""
            return ExecResult(None, out[:MAX_EXEC_OUTPUT_BYTES], len(out) > MAX_EXEC_OUTPUT_BYTES)
        except OSError as exc:
            return ExecResult(127, f"cannot run {argv[0]!r}: {exc.strerror or exc}\n".encode())
        out = done.stdout or b""
        return ExecResult(done.returncode, out[:MAX_EXEC_OUTPUT_BYTES], len(out) > MAX_EXEC_OUTPUT_BYTES)

    def shutdown(self) -> None:
        with self._lock:
            procs = [p for p in self._procs.values() if p.popen is not None and p.exited_s is None]
            for p in procs:
                p.stopping = True
                assert p.popen is not None
                _signal(p.popen, signal.SIGTERM, p.group)
        deadline = time.monotonic() + self.stop_grace_s
        for p in procs:
            assert p.popen is not None
            try:
                p.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(p.popen, signal.SIGKILL, p.group)
                p.popen.wait(5)
        with self._lock:
            for p in list(self._procs.values()):
                if p.popen is not None and p.exited_s is None:
                    self._read_cold_start(p)
                self._forget(p)

    # -- extras -----------------------------------------------------------------------------------

    def adopt(self, record: WorkerRecord, now_s: float) -> bool:
        """Never: a local worker process dies with the server that started it (the launcher watches its pid)."""
        return False

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
        """When the soonest slot a crash left empty may be refilled (0.0 when none is empty)."""
        with self._lock:
            state = self._endpoints.get(endpoint_id)
            return state.slots.next_start_s(0.0) if state is not None and len(state.slots) else 0.0

    def crash_slot(self, worker_id: str) -> tuple[int, float] | None:
        """(crashes in a row of the slot a worker fills, seconds its spawn waited for them); None for an unknown worker."""
        with self._lock:
            p = self._procs.get(worker_id)
            return (p.slot_streak, p.backoff_s) if p is not None else None

    # -- internals ----------------------------------------------------------------------------------

    def _start(self, state: _EndpointState, now_s: float) -> None:
        dep = state.deployment
        worker_id = f"{dep.endpoint_id}-{uuid.uuid4().hex[:10]}"
        start = state.slots.claim(now_s)  # a crashed worker's empty slot, with its back-off, or a fresh one
        p = _Proc(
            worker_id=worker_id,
            endpoint_id=dep.endpoint_id,
            version=dep.version,
            spawn_s=now_s,
            spawn_wall_s=time.time(),
            log_path=self.logs_dir / f"{worker_id}.log",
            cold_start_path=self.logs_dir / f"{worker_id}.coldstart.json",
            spawn_at_s=start.not_before_s,
            slot_streak=start.streak,
            backoff_s=start.wait_s(now_s),
        )
        self._procs[worker_id] = p
        self._log_paths[worker_id] = p.log_path
        if p.spawn_at_s <= now_s:
            self._spawn(p, now_s)
        else:
            # Crash back-off: the worker exists (INITIALIZING, counted) but its process waits.
            self.registry.add(worker_id, dep.endpoint_id, now_s, capacity=worker_capacity(dep), spec_version=dep.version)
            log.info("worker %s waits %.1f s of crash back-off before spawning", worker_id, p.spawn_at_s - now_s)

    def _spawn(self, p: _Proc, now_s: float) -> None:
        state = self._endpoints[p.endpoint_id]
        dep = state.deployment
        self.registry.remove(p.worker_id)  # a placeholder's entry: re-added with a fresh token
        token = self.registry.add(p.worker_id, dep.endpoint_id, now_s, capacity=worker_capacity(dep), spec_version=dep.version)
        p.spawn_s, p.spawn_wall_s = now_s, time.time()
        env = {**inherited_env(os.environ), **worker_env(
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
        python = dep.python or self.python
        if dep.spec.is_load_balancer:
            assert dep.command is not None
            argv, cwd = list(dep.command), dep.workdir or os.getcwd()
            port, port_health = lb_ports(dep)
            # The interpreter's folder first on PATH: `python`, `uvicorn` in a command are the venv's.
            env.update({
                "PORT": str(port),
                "PORT_HEALTH": str(port_health),
                "PATH": os.pathsep.join([str(Path(python).parent), env.get("PATH", "")]),
            })
            self.registry.set_upstream(
                p.worker_id, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port_health}{dep.health_path}"
            )
            p.group = True
        else:
            argv, cwd = handler_command(dep, python)
        try:
            p.popen = launch_supervised(
                argv, env=env, cwd=cwd, log_path=p.log_path, parent_pid=os.getpid(), group=p.group,
                log_max_bytes=self.log_max_bytes, log_rate_bytes_s=self.log_rate_bytes_s,
            )
        except BackendError:
            self.registry.remove(p.worker_id)
            self._procs.pop(p.worker_id, None)
            raise
        write_pidfile(self.logs_dir, p.worker_id, p.popen.pid)
        p.env, p.cwd = env, cwd
        p.log_marks.append((p.spawn_wall_s, 0))
        log.info("spawned worker %s (pid %d) for %s", p.worker_id, p.popen.pid, p.endpoint_id)

    def _ping_ms(self, dep: Deployment) -> int:
        return sdk_ping_ms(dep, self.ping_interval_ms)

    def _stop(self, p: _Proc, now_s: float) -> None:
        self.registry.set_draining(p.worker_id, True)
        if p.popen is None:
            self._forget(p)  # a placeholder: nothing runs yet
            return
        if p.stopping or p.exited_s is not None:
            return
        p.stopping = True
        p.kill_at_s = now_s + self.stop_grace_s
        _signal(p.popen, signal.SIGTERM, p.group)

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
        # A crash (or an exit nobody asked for): the server requeues its jobs; its slot's replacement backs off.
        state = self._endpoints.get(p.endpoint_id)
        wait_s = 0.0
        if state is not None:
            wait_s = state.slots.crashed(p.slot_streak, now_s - p.spawn_s, now_s).wait_s(now_s)
        p.exited_s = now_s
        self.registry.set_state(p.worker_id, WorkerState.UNHEALTHY, now_s, reason=exit_reason(code))
        log.warning(
            "worker %s crashed (exit %s); its replacement in %s waits %.1f s; last log lines:\n%s",
            p.worker_id,
            code,
            p.endpoint_id,
            wait_s,
            self._tail(p, 10),
        )

    def _running(self, worker_id: str) -> bool:
        with self._lock:
            p = self._procs.get(worker_id)
            return p is not None and p.popen is not None and p.exited_s is None and p.popen.poll() is None

    def _mark_log(self, p: _Proc) -> None:
        wall_s = time.time()
        if p.log_marks and wall_s - p.log_marks[-1][0] < LOG_MARK_EVERY_S:
            return
        try:
            size = p.log_path.stat().st_size
        except OSError:
            return
        if p.log_marks and size < p.log_marks[-1][1]:
            p.log_marks.clear()  # the launcher rotated the log: older marks point into <id>.log.1
        p.log_marks.append((wall_s, size))

    def _forget(self, p: _Proc) -> None:
        self._procs.pop(p.worker_id, None)
        remove_pidfile(self.logs_dir, p.worker_id)
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
        if p.group:  # a load-balancing worker: what its health path said, and when
            return ColdStartRecord.from_health(
                p.worker_id,
                p.endpoint_id,
                p.spawn_s,
                first_initializing_s=live.first_initializing_s if live is not None else None,
                first_ready_s=live.first_take_s if live is not None else None,
            )
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


SUPERVISE_SCRIPT = str(Path(supervise.__file__).resolve())


def exit_reason(code: int) -> str:
    """A process's end in words: `exited with code 1`, or `killed by SIGKILL` (Popen's negative codes)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def sdk_ping_ms(dep: Deployment, ping_interval_ms: int) -> int:
    """The heartbeat interval a worker of `dep` is told (RUNPOD_PING_INTERVAL)."""
    # Runpod's SDK pings every int(ms) // 1000 seconds and crashes its heartbeat process on
    # a zero timeout, so it needs at least 1000 ms; gpuserve's SDK keeps milliseconds.
    if dep.sdk == "runpod":
        return max(1000, ping_interval_ms)
    return ping_interval_ms


def handler_command(dep: Deployment, python: str) -> tuple[list[str], str]:
    """(argv, cwd) of a queue worker: `python handler.py` in the handler's folder (or the endpoint's workdir)."""
    assert dep.handler_path is not None
    handler = Path(dep.handler_path).resolve()
    return [python, str(handler)], dep.workdir or str(handler.parent)


def launch_supervised(
    argv: Sequence[str],
    *,
    env: dict[str, str],
    cwd: str,
    log_path: Path,
    parent_pid: int,
    group: bool,
    log_max_bytes: int,
    log_rate_bytes_s: int,
) -> subprocess.Popen[bytes]:
    """Start `argv` under the launcher (backends/supervise.py), its output capped into `log_path`.

    The launcher ends the worker (and what it started) the moment `parent_pid` ends: the server
    for the process backend, the Ray actor that hosts the worker for the Ray backend.
    """
    command = [sys.executable, "-I", "-S", SUPERVISE_SCRIPT, str(parent_pid), "--group" if group else "--solo",
               str(log_path), str(log_max_bytes), str(log_rate_bytes_s), "--", *argv]
    # The child keeps its own descriptor; owner-only, as the logs folder.
    logfile: IO[bytes] = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    try:
        return subprocess.Popen(
            command,
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
        raise BackendError(f"could not start worker ({' '.join(command)}): {exc}") from exc
    finally:
        logfile.close()


def _signal(popen: subprocess.Popen[bytes], sig: int, group: bool = False) -> None:
    try:
        if group:  # its own session (start_new_session), so the group id is its pid
            os.killpg(popen.pid, sig)
        else:
            popen.send_signal(sig)
    except ProcessLookupError:
        pass


def _with_spec(dep: Deployment, spec: EndpointSpec) -> Deployment:
    return replace(dep, spec=spec)
