"""The node side of a Ray-backend worker: a Ray actor that runs the user's handler as a supervised process and reports on it.

The server's Ray backend (`backends/ray_backend.py`) creates one `WorkerHost` actor per worker,
inside a placement group that reserved the worker's GPUs. The actor starts the handler exactly as
the process backend does (`process.launch_supervised`: the launcher in `backends/supervise.py`,
told to watch the *actor's* pid, so the handler dies with the actor, and the actor with the server
that owns it or with its node). It then answers the backend's calls: `report` (new log bytes, the
SDK's start-up report, the exit code), `stop`, `exec`. Nothing here talks to the control plane:
the handler does that itself over HTTP, like every other worker.

A load-balancing worker (`start_server`) is the user's own HTTP server, started the same way in
its own process group, told two ports free on this node in PORT / PORT_HEALTH; the actor answers
with the node's address, so the server's proxy and health polls reach it there.

Runs in a Ray worker process on a GPU node, so it imports nothing heavier than the process backend.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpuserve.backends.base import inherited_env
from gpuserve.backends.process import launch_supervised

__all__ = ["REPORT_MAX_LOG_BYTES", "WorkerHost", "node_free_port"]

REPORT_MAX_LOG_BYTES = 1024 * 1024  # log bytes per report: one answer stays small in Ray's object store


def node_free_port() -> int:
    """A TCP port free on every address of this node (the server reaches a load-balancing worker from elsewhere)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        port: int = sock.getsockname()[1]
        return port


class WorkerHost:
    """One worker on one node: the handler process, its log and its start-up report in a node-local folder."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.folder = Path(tempfile.mkdtemp(prefix=f"gpuserve-{worker_id}-"))
        self.log_path = self.folder / "worker.log"
        self.cold_start_path = self.folder / "coldstart.json"
        self.popen: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.cwd = str(self.folder)
        self.group = False  # a load-balancing server runs in its own process group, signalled as one
        self._log_pos = 0  # how far the server has been sent the log
        self.placed: dict[str, Any] = {}  # what `start` answered: a server adopting this worker asks `where`

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log_max_bytes: int,
        log_rate_bytes_s: int,
    ) -> dict[str, Any]:
        """Launch the handler; returns where it runs (node, pid, the GPUs Ray gave this actor)."""
        return self._launch(argv, env, cwd, log_max_bytes, log_rate_bytes_s)

    def start_server(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        python: str,
        separate_health_port: bool,
        log_max_bytes: int,
        log_rate_bytes_s: int,
    ) -> dict[str, Any]:
        """Launch a load-balancing worker's HTTP server on free ports of this node; also returns its address and ports."""
        import ray

        port = node_free_port()
        port_health = node_free_port() if separate_health_port else port
        interpreter = sys.executable if python == "{python}" else python
        self.group = True  # uvicorn and what it forks go together
        answer = self._launch(
            argv, {**env, "PORT": str(port), "PORT_HEALTH": str(port_health)}, cwd, log_max_bytes, log_rate_bytes_s,
            # The interpreter's folder first on PATH: `python`, `uvicorn` in a command are its venv's.
            path_first=str(Path(interpreter).parent),
        )
        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.placed = {**answer, "address": address, "port": port, "port_health": port_health}
        return self.placed

    def _launch(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: str | None,
        log_max_bytes: int,
        log_rate_bytes_s: int,
        path_first: str | None = None,
    ) -> dict[str, Any]:
        import ray

        # This node's own environment (PATH, CUDA libraries, the CUDA_VISIBLE_DEVICES Ray set for
        # this actor's GPUs), then what the server sends (the SDK's variables), then the local paths.
        full = {**inherited_env(os.environ), **env}
        full.update({
            "GPUSERVE_COLD_START_FILE": str(self.cold_start_path),
            "GPUSERVE_PARENT_PID": str(os.getpid()),
        })
        if path_first is not None:
            full["PATH"] = os.pathsep.join([path_first, full.get("PATH", "")])
        command = [sys.executable if a == "{python}" else a for a in argv]
        self.cwd = cwd or str(self.folder)
        self.env = full
        self.popen = launch_supervised(
            command, env=full, cwd=self.cwd, log_path=self.log_path, parent_pid=os.getpid(), group=self.group,
            log_max_bytes=log_max_bytes, log_rate_bytes_s=log_rate_bytes_s,
        )
        context = ray.get_runtime_context()
        self.placed = {
            "node_id": context.get_node_id(),
            "pid": self.popen.pid,
            "gpu_ids": [int(g) for g in ray.get_gpu_ids() if str(g).isdigit()],
        }
        return self.placed

    def where(self) -> dict[str, Any]:
        """For a server adopting this worker: what `start` answered, and a report (`exit_code` None: it still runs)."""
        return {**self.placed, **self.report(), "started": bool(self.placed)}

    def report(self) -> dict[str, Any]:
        """What happened since the last report: new log bytes, the start-up report once written, the exit code."""
        code = self.popen.poll() if self.popen is not None else None
        return {"log": self._read_log(), "cold_start": self._cold_start(), "exit_code": code}

    def stop(self, grace_s: float) -> dict[str, Any]:
        """SIGTERM (the SDK finishes its job and exits), SIGKILL after `grace_s`; the last report, then the folder goes."""
        if self.popen is not None and self.popen.poll() is None:
            self._signal(signal.SIGTERM)  # the launcher passes it on to the handler
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.popen.wait(5)
        last = self.report()
        self.cleanup()
        return last

    def exec(self, argv: Sequence[str], timeout_s: float, max_output_bytes: int) -> tuple[int | None, bytes, bool]:
        """`argv` in the worker's folder with its environment: (exit code or None on timeout, output, truncated)."""
        try:
            done = subprocess.run(
                list(argv), env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, timeout=timeout_s, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output or b""
            return None, out[:max_output_bytes], len(out) > max_output_bytes
        except OSError as exc:
            return 127, f"cannot run {argv[0]!r}: {exc.strerror or exc}\n".encode(), False
        out = done.stdout or b""
        return done.returncode, out[:max_output_bytes], len(out) > max_output_bytes

    def cleanup(self) -> None:
        """Remove the node-local folder (the server keeps its own copy of the log)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- internals ------------------------------------------------------------------------------

    def _signal(self, sig: int) -> None:
        assert self.popen is not None
        try:
            if self.group:  # its own session, so the group id is the launcher's pid
                os.killpg(self.popen.pid, sig)
            else:
                self.popen.send_signal(sig)
        except ProcessLookupError:
            pass

    def _read_log(self) -> bytes:
        try:
            size = self.log_path.stat().st_size
        except OSError:
            return b""
        out = b""
        if size < self._log_pos:  # the launcher rotated it to worker.log.1: send that file's rest first
            try:
                with open(str(self.log_path) + ".1", "rb") as f:
                    f.seek(self._log_pos)
                    out = f.read(REPORT_MAX_LOG_BYTES)
            except OSError:
                pass
            self._log_pos = 0
        with open(self.log_path, "rb") as f:
            f.seek(self._log_pos)
            out += f.read(max(0, REPORT_MAX_LOG_BYTES - len(out)))
            self._log_pos = f.tell()
        return out

    def _cold_start(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.cold_start_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
