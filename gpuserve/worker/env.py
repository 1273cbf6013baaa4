"""The worker's environment: Runpod's webhook variables (protocol §1.1) resolved into ready URLs."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

__all__ = ["WorkerEnv", "with_query"]


def with_query(url: str, **params: str | int) -> str:
    """Append query parameters the way the protocol expects: URLs usually already hold a `?`."""
    if not params:
        return url
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


def _float_env(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, was {raw!r}") from None


@dataclass(frozen=True)
class WorkerEnv:
    """Everything a worker reads from its environment, with placeholders substituted.

    Substitution follows Runpod's SDK: only `$ID` is replaced in the take URL (by the
    worker id); in the result and stream URLs `$RUNPOD_POD_ID` becomes the worker id now
    and `$ID` the job id per request; in the ping URL `$RUNPOD_POD_ID` is the worker id.
    """

    worker_id: str
    api_key: str
    endpoint_id: str | None
    take_url: str | None  # None: no platform to poll, so the worker runs in a local mode
    done_url: str  # still holds `$ID`
    stream_url: str  # still holds `$ID`
    ping_url: str | None
    ping_interval_s: float
    hostname: str
    spawn_wall_s: float | None  # set by a gpuserve backend: when it spawned this process
    cold_start_file: str | None  # where to write the measured start-up phases
    drain_timeout_s: float  # on SIGTERM: how long in-flight jobs may take to finish
    # A stopped (timed-out, cancelled) job's sync handler thread may run this long before the worker is replaced.
    stuck_grace_s: float = 30.0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> WorkerEnv:
        env = os.environ if environ is None else environ
        worker_id = env.get("RUNPOD_POD_ID") or env.get("GPUSERVE_WORKER_ID") or str(uuid.uuid4())
        take = env.get("RUNPOD_WEBHOOK_GET_JOB") or None
        if take is not None:
            take = take.replace("$ID", worker_id)

        def job_url(name: str, derived: str) -> str:
            raw = env.get(name) or derived
            return raw.replace("$RUNPOD_POD_ID", worker_id)

        # Derive missing URLs from the take URL so a minimal environment still works.
        derived_done = derived_stream = ""
        if take and "/job-take/" in take:
            base, _, rest = take.partition("/job-take/")
            wid_part, q, query = rest.partition("?")
            suffix = f"?{query}" if q else ""
            derived_done = f"{base}/job-done/{wid_part}/$ID{suffix}"
            derived_stream = f"{base}/job-stream/{wid_part}/$ID{suffix}"
            derived_ping = f"{base}/ping/{wid_part}{suffix}"
        else:
            derived_ping = ""
        done = job_url("RUNPOD_WEBHOOK_POST_OUTPUT", derived_done)
        stream = job_url("RUNPOD_WEBHOOK_POST_STREAM", derived_stream)
        ping = (env.get("RUNPOD_WEBHOOK_PING") or derived_ping).replace("$RUNPOD_POD_ID", worker_id) or None
        if ping == "PING_NOT_SET":
            ping = None
        ping_ms = _float_env(env, "RUNPOD_PING_INTERVAL", 10_000.0)
        spawn = env.get("GPUSERVE_SPAWN_WALL_S")
        return cls(
            worker_id=worker_id,
            api_key=env.get("RUNPOD_AI_API_KEY", ""),
            endpoint_id=env.get("RUNPOD_ENDPOINT_ID") or env.get("GPUSERVE_ENDPOINT_ID") or None,
            take_url=take,
            done_url=done,
            stream_url=stream,
            ping_url=ping,
            # Runpod floors the interval to whole seconds (500 ms becomes a busy loop);
            # keeping milliseconds and a 50-ms floor makes short intervals usable in tests.
            ping_interval_s=max(0.05, ping_ms / 1000.0),
            hostname=env.get("RUNPOD_POD_HOSTNAME") or socket.gethostname(),
            spawn_wall_s=float(spawn) if spawn else None,
            cold_start_file=env.get("GPUSERVE_COLD_START_FILE") or None,
            drain_timeout_s=_float_env(env, "GPUSERVE_DRAIN_TIMEOUT_S", 30.0),
            stuck_grace_s=_float_env(env, "GPUSERVE_STUCK_GRACE_S", 30.0),
        )

    @property
    def stop_url(self) -> str | None:
        """The per-job stop channel, derived from the take URL (Runpod >= 1.10)."""
        if not self.take_url or "/job-take/" not in self.take_url:
            return None
        return self.take_url.replace("/job-take/", "/job-stop/")

    def take_url_for(self, batch_size: int, in_progress: bool) -> str:
        assert self.take_url is not None
        flag = "1" if in_progress else "0"
        if batch_size > 1:
            url = self.take_url.replace("/job-take/", "/job-take-batch/")
            return with_query(url, batch_size=batch_size, job_in_progress=flag)
        return with_query(self.take_url, job_in_progress=flag)

    def done_url_for(self, job_id: str, is_stream: bool) -> str:
        return with_query(self.done_url.replace("$ID", quote(job_id, safe="")), isStream="true" if is_stream else "false")

    def stream_url_for(self, job_id: str) -> str:
        return with_query(self.stream_url.replace("$ID", quote(job_id, safe="")), isStream="false")
