"""The Docker backend: workers are containers on this host, placed on free GPUs, cold-started or revived by flash boot.

Life of a worker (Docker calls run on a small thread pool, so `apply` and `poll`, which the
server calls on its event loop, never block it):

    apply(start) --(GPUs free?)-- no --> THROTTLED (no container; placement retried every poll)
        | yes: a retained container of this version?  yes --> unpause (or start) = flash boot
        | no
        v
    [pull the image unless present] -- fails --> UNHEALTHY with the reason (kept visible a while)
        |                                        and the endpoint's next start backs off
        v
    create -> start -> [runtime init: interpreter, SDK, handler module, model load] -> first job-take
    apply(stop) -> draining -> (no job in flight) -> pause (or stop), kept `retention_s` -> removed
    configure(new version) -> new workers on the new image; the runtime's rolling update marks
                              running ones OUTDATED one by one (recycle) -> (its job done) -> removed

A load-balancing worker (the user's HTTP server) runs the same way on the host network, told a
free host port in PORT / PORT_HEALTH; the server's health polls (live/lb_health.py) make it ready.

A retained worker stays in the registry (draining, so the server hands it nothing) but is
hidden from `workers()`; a revival clears the drain. That matters for pause: the frozen
process may hold a parked job-take at the server, and that same parked take hands it the
next job the moment the drain is cleared, even before `docker unpause` returns.

Every container carries labels (gpuserve.managed, .namespace, .endpoint, .worker, .version,
.gpus), so a restarted server adopts its running containers of the current version and
removes everything else in its namespace: nothing leaks, nothing runs twice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

try:  # the docker extra; without it the module still imports, and docker_client() says what is missing
    import docker as docker_sdk
    from docker.errors import NotFound
    from docker.models.containers import Container
    from docker.models.volumes import Volume
except ImportError:
    _SDK_MISSING: str | None = "the docker SDK is not installed: pip install 'gpuserve[docker]'"
else:
    _SDK_MISSING = None

from gpuserve.backends.base import lb_ports, worker_capacity, worker_env
from gpuserve.backends.container_spec import MANAGED, NAMESPACE, container_kwargs, namespace_for
from gpuserve.backends.docker_logs import ContainerLogReader, TextLogReader
from gpuserve.backends.docker_supervise import WATCHDOG_INTERVALS, reap_stopped, with_watchdog
from gpuserve.backends.images import ImageError, ensure_image
from gpuserve.core.backoff import Backoff
from gpuserve.core.crashslots import CrashSlots
from gpuserve.core.errors import ConfigError, NotFoundError
from gpuserve.core.startup import ColdStartRecord, PullProgress, StartKind, StartReport
from gpuserve.core.types import EndpointSpec, ScaleAction, WorkerState, WorkerView
from gpuserve.gpu import GpuStats, HostInventory, inventory
from gpuserve.live.clock import SteadyClock
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from gpuserve.live.worker_ops import MAX_EXEC_OUTPUT_BYTES, ExecResult, LogReader
from gpuserve.store.base import WorkerRecord

__all__ = [
    "DEFAULT_IMAGE",
    "ColdStartRecord",
    "DockerBackend",
    "DockerUnavailableError",
    "docker_backend_factory",
    "docker_client",
    "managed_containers",
    "managed_volumes",
    "namespace_for",
]

log = logging.getLogger("gpuserve.docker")
COLD_STARTS_KEPT = 1000  # start records kept for calibrate and the benchmarks, newest last

DEFAULT_IMAGE = "gpuserve/worker:latest"

FlashMode = Literal["pause", "stop"]
Phase = Literal["pending", "throttled", "up", "retiring", "outdated", "retained", "failed", "gone"]
# A worker that failed to start or crashed stays listed UNHEALTHY, with its reason, this long:
# `gpuserve endpoints`, /health and the waiting jobs see why (as the process backend keeps its crashed ones).
FAILED_LINGER_S = 30.0
HIDDEN: frozenset[str] = frozenset({"retiring", "retained", "gone"})
# How often the watch thread looks up which endpoint images the engine holds (`image_cached`):
# an image removed by hand (docker rmi) stops counting as cached within this many seconds.
IMAGE_CHECK_S = 2.0


class DockerUnavailableError(RuntimeError):
    """No Docker engine answers (not installed, not started, or no permission on its socket)."""


def docker_client(timeout_s: float = 60.0) -> docker_sdk.DockerClient:
    """A connected docker SDK client, or DockerUnavailableError saying why not."""
    if _SDK_MISSING is not None:
        raise DockerUnavailableError(_SDK_MISSING)
    try:
        client = docker_sdk.from_env(timeout=int(timeout_s))
        client.ping()
    except Exception as exc:
        raise DockerUnavailableError(
            f"no Docker engine answers ({type(exc).__name__}: {exc}); run `bash scripts/docker-setup.sh`"
        ) from None
    return client


def _label_filter(namespace: str | None) -> dict[str, str | list[str] | bool]:
    labels = [f"{MANAGED}=true"]
    if namespace is not None:
        labels.append(f"{NAMESPACE}={namespace}")
    return {"label": labels}


def managed_containers(client: docker_sdk.DockerClient, namespace: str | None = None) -> list[Container]:
    """Every container (any state) carrying gpuserve's labels, optionally of one namespace."""
    # ignore_removed: a container removed between the listing and its inspection is simply gone.
    return list(client.containers.list(all=True, filters=_label_filter(namespace), ignore_removed=True))


def managed_volumes(client: docker_sdk.DockerClient, namespace: str | None = None) -> list[Volume]:
    return list(client.volumes.list(filters=_label_filter(namespace)))


@dataclass
class _Worker:
    worker_id: str
    endpoint_id: str
    version: str
    token: str
    phase: Phase
    gpu_ids: tuple[int, ...] = ()
    container_id: str | None = None
    started_wall_s: float | None = None  # when the last start/unpause returned
    retained_since_s: float | None = None
    paused: bool = False
    record: ColdStartRecord | None = None
    busy: bool = False  # a Docker call for it is on the pool
    op_id: int = 0  # which pool call owns `busy` (a call may hand the worker over before it returns)
    last_logs: str = ""
    port: int | None = None  # a load-balancing worker: its server's PORT and PORT_HEALTH on the host network
    port_health: int | None = None
    failed_s: float | None = None  # when it became UNHEALTHY (phase "failed")
    slot_streak: int = 0  # crashes in a row of the slot it fills, 0 once it took a job (core/crashslots.py)


@dataclass
class _Endpoint:
    deployment: Deployment
    slots: CrashSlots = field(default_factory=lambda: CrashSlots(CRASH_BACKOFF))  # empty slots of crashed workers


# A worker that dies on start must not spin the host: its slot's replacement waits 0.5, 1, 2,
# 4 ... s after 1, 2, 3, 4 ... crashes in a row, capped at 30 s (reached after 7); other starts wait nothing.
CRASH_BACKOFF: Backoff = Backoff(0.5, factor=2.0, max_s=30.0)


class DockerBackend:
    """LiveBackend on the docker SDK. One instance per host and namespace."""

    def __init__(
        self,
        server_url: str,
        registry: WorkerRegistry,
        *,
        client: docker_sdk.DockerClient | None = None,
        namespace: str = "default",
        flash_mode: FlashMode = "pause",
        retention_s: float = 60.0,
        state_dir: str | Path | None = None,
        ping_interval_ms: int = 10_000,
        gpus: HostInventory | None = None,
        stop_timeout_s: int = 10,
        orphan_grace_s: float = 30.0,
        keep_workers_on_shutdown: bool = False,
        default_image: str = DEFAULT_IMAGE,
        now: Callable[[], float] | None = None,
        watchdog_intervals: int = WATCHDOG_INTERVALS,
    ) -> None:
        if flash_mode not in ("pause", "stop"):
            raise ValueError(f"flash_mode must be 'pause' or 'stop', was {flash_mode!r}")
        if retention_s < 0:
            raise ValueError(f"retention_s cannot be negative, was {retention_s}")
        self.client = client if client is not None else docker_client()
        self.registry = registry
        self.server_url = server_url
        self.namespace = namespace
        self.flash_mode: FlashMode = flash_mode
        self.retention_s = retention_s
        self.ping_interval_ms = ping_interval_ms
        self.stop_timeout_s = stop_timeout_s
        self.keep_workers_on_shutdown = keep_workers_on_shutdown
        self.default_image = default_image
        # A worker whose server is unreachable this many ping intervals in a row ends (0: never; docker_supervise.py).
        self.watchdog_intervals = watchdog_intervals
        self._now = now or SteadyClock().now_s  # the platform passes its clock; standalone, a steady one
        self.gpus = gpus if gpus is not None else HostInventory(inventory())
        if not self.gpus.gpus:
            log.info("docker backend: this host reports 0 GPUs; CPU-only endpoints run, GPU workers stay THROTTLED")
        self.state_dir = Path(state_dir) if state_dir else Path("/tmp") / f"gpuserve-docker-{namespace}"
        (self.state_dir / "coldstart").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="gpuserve-docker")
        self._watch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpuserve-docker-watch")
        self._watching: Future[None] | None = None
        self._states: dict[str, str] = {}  # container id -> status, as last listed
        self._states_at_s = 0.0
        self._futures: set[Future[None]] = set()
        self._endpoints: dict[str, _Endpoint] = {}
        self._workers: dict[str, _Worker] = {}
        self._created_volumes: set[str] = set()
        self._gone_logs: dict[str, str] = {}
        # Bounded like the process backend's: a long-lived server starts workers without end.
        self.cold_starts: deque[ColdStartRecord] = deque(maxlen=COLD_STARTS_KEPT)
        self._seq = 0
        self._closed = False
        self._last_telemetry_s = 0.0
        # Image ref -> the engine held it at the last look. `image_cached` answers from here (the
        # Controller asks on the event loop); the watch thread and every finished pull update it.
        self._images_held: dict[str, bool] = {}
        self._images_checked_s = -IMAGE_CHECK_S
        reap_stopped(self.client, namespace)  # what a server that is gone left stopped: never adoptable
        # Containers left by an earlier server in this namespace: adopted when their endpoint is
        # configured with the same version, removed otherwise (or after the grace period).
        self._orphans: dict[str, Container] = {c.id: c for c in managed_containers(self.client, namespace) if c.id}
        self._orphan_deadline_s = self._now() + orphan_grace_s
        if self._orphans:
            log.info("found %d container(s) of an earlier run in namespace %r", len(self._orphans), namespace)

    # -- LiveBackend ------------------------------------------------------------------------

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        """The registry's view, minus workers on their way out (retiring, retained, gone)."""
        with self._lock:
            hidden = {w.worker_id for w in self._workers.values() if w.phase in HIDDEN}
        return [v for v in self.registry.views(endpoint_id) if v.worker_id not in hidden]

    def image_cached(self, endpoint_id: str) -> bool:
        """The engine holds the endpoint's image (`docker images`), so a start needs no pull: extra workers may start."""
        with self._lock:
            entry = self._endpoints.get(endpoint_id)
            return entry is not None and self._images_held.get(self._image_of(entry.deployment), False)

    def configure(self, deployment: Deployment) -> None:
        _validate(deployment)
        # Looked up off the loop; until the answer comes the image counts as not cached (no extras).
        if not self._closed:
            self._watch.submit(self._check_images, [self._image_of(deployment)])
        eid = deployment.endpoint_id
        with self._lock:
            current = self._endpoints.get(eid)
            if current is not None and current.deployment.version == deployment.version:
                current.deployment = deployment  # scaling numbers only
                return
            self._endpoints[eid] = _Endpoint(deployment=deployment)
            if current is None:
                self._adopt(deployment)
                return
            log.info("endpoint %s: version %s -> %s, rolling update", eid, current.deployment.version, deployment.version)
            for w in list(self._workers.values()):
                if w.endpoint_id != eid or w.version == deployment.version:
                    continue
                if w.phase == "throttled":
                    w.version = deployment.version  # it has no container yet: it starts on the new one
                elif w.phase == "pending":  # not serving yet: replaced at once
                    w.phase = "outdated"
                    self.registry.set_state(w.worker_id, WorkerState.OUTDATED, self._now())
                # "up" ones keep serving until the runtime's rolling update retires them (recycle)
                elif w.phase == "retained":
                    self._submit(w, self._remove_container, "outdated while retained")

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        for worker_id in action.stop:
            self._retire(worker_id)
        for _ in range(action.start):
            self._start_one(endpoint)

    def poll(self, now_s: float) -> None:
        """Reap dead containers, place throttled workers, park or remove drained ones, expire retention."""
        if self._closed:
            return
        now = self._now()
        self._reap_orphans(now)
        self._refresh_in_background(now)
        with self._lock:
            workers = list(self._workers.values())
            states, states_at_s = dict(self._states), self._states_at_s
        for w in workers:
            if w.busy:
                continue
            if w.phase in ("up", "retiring", "outdated") and w.container_id is not None:
                status = states.get(w.container_id)
                # Only a listing taken after the container started can say it is gone.
                fresh = w.started_wall_s is not None and states_at_s > w.started_wall_s
                if fresh and (status is None or status in ("exited", "dead")):
                    self._submit(w, functools.partial(self._crashed, why=f"container {status or 'vanished'}"), "reap")
                    continue
            if w.phase == "up":
                self._note_first_take(w)
            elif w.phase == "throttled":
                self._try_unthrottle(w)
            elif w.phase in ("retiring", "outdated"):
                if w.phase == "retiring" and w.record is not None and w.record.first_take_s is None:
                    self._note_first_take(w)
                live = self.registry.get(w.worker_id)
                if live is None or not live.in_flight:
                    if w.phase == "retiring" and self._keeps(w):
                        self._submit(w, self._park, "retire")
                    else:
                        self._submit(w, self._remove_container, w.phase)
            elif w.phase == "retained":
                assert w.retained_since_s is not None
                if now - w.retained_since_s >= self.retention_s:
                    self._submit(w, self._remove_container, "retention window over")
            elif w.phase == "failed" and w.failed_s is not None and now - w.failed_s >= FAILED_LINGER_S:
                self._forget(w)

    def recycle(self, worker_id: str) -> None:
        """stopPod / refresh_worker: replace this worker (no flash boot) once its jobs end."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None and w.phase in ("up", "pending"):
                w.phase = "outdated"
                self.registry.set_draining(worker_id, True)

    def adopt(self, record: WorkerRecord, now_s: float) -> bool:
        """Not yet: a container another server started keeps running while its server URL answers, but
        this backend only manages the containers of its own namespace (README, "Past one machine")."""
        return False

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        """The newest start record of a worker, or None: its start in progress (phases so far), else its last one."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None and w.record is not None:
                return w.record
            return next((c for c in reversed(self.cold_starts) if c.worker_id == worker_id), None)

    def logs(self, worker_id: str, tail_lines: int = 200) -> str:
        with self._lock:
            w = self._workers.get(worker_id)
            gone = self._gone_logs.get(worker_id)
        if w is None:
            if gone is not None:
                return gone
            raise NotFoundError(f"worker {worker_id!r} is not known to the docker backend")
        if w.container_id is None:
            return w.last_logs or f"worker {worker_id} has no container ({w.phase})\n"
        try:
            raw = self.client.containers.get(w.container_id).logs(tail=tail_lines)
        except Exception:
            return w.last_logs
        text: str = raw.decode(errors="replace")
        return text

    def open_log(self, worker_id: str, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> LogReader:
        with self._lock:
            w = self._workers.get(worker_id)
            gone = self._gone_logs.get(worker_id)
        if w is None or w.container_id is None:
            if w is None and gone is None:
                raise NotFoundError(f"worker {worker_id!r} is not known to the docker backend")
            return TextLogReader((gone if w is None else w.last_logs) or "")
        try:
            container = self.client.containers.get(w.container_id)
            return ContainerLogReader(container, tail_lines=tail_lines, since_wall_s=since_wall_s, follow=follow)
        except NotFound:
            return TextLogReader(w.last_logs)

    def exec(self, worker_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        """`docker exec` in the worker's container (no timeout of its own: the engine API has none)."""
        with self._lock:
            w = self._workers.get(worker_id)
            container_id = w.container_id if w is not None and w.phase in ("up", "outdated", "retiring") else None
        if container_id is None:
            raise NotFoundError(f"no running container for worker {worker_id!r}")
        try:
            code, out = self.client.containers.get(container_id).exec_run(list(argv), stdout=True, stderr=True)
        except NotFound:
            raise NotFoundError(f"the container of worker {worker_id!r} is gone") from None
        output = out if isinstance(out, bytes) else b""  # not a stream: exec_run(stream=False)
        return ExecResult(code, output[:MAX_EXEC_OUTPUT_BYTES], len(output) > MAX_EXEC_OUTPUT_BYTES)

    def shutdown(self) -> None:
        """Remove every container of this namespace and the volumes this backend created.

        With `keep_workers_on_shutdown` the running containers stay (a server restart or
        upgrade), and the next backend of the namespace adopts them.
        """
        self._closed = True
        self._drain_pool()
        self._pool.shutdown(wait=True)
        self._watch.shutdown(wait=True)
        with self._lock:
            workers = list(self._workers.values())
        if self.keep_workers_on_shutdown:
            for w in workers:
                if w.phase in ("retained", "retiring", "outdated", "throttled") and w.container_id:
                    self._remove_container(w)
            log.info("docker backend: leaving running containers of namespace %r for the next server", self.namespace)
            return
        for c in managed_containers(self.client, self.namespace):
            _force_remove(c)
        with self._lock:
            for w in workers:
                if w.phase != "gone":
                    self._forget(w)
        for name in sorted(self._created_volumes):
            try:
                self.client.volumes.get(name).remove(force=True)
            except Exception as exc:
                log.warning("could not remove volume %s: %s", name, exc)
        self._created_volumes.clear()

    # -- extras for the server, tests and the bench ----------------------------------------

    def worker_gpu_stats(self, worker_id: str) -> GpuStats | None:
        """Utilisation and memory of a worker's GPUs (refreshed every few seconds); None for CPU workers."""
        return self.gpus.stats(worker_id)

    def worker_info(self, worker_id: str) -> dict[str, Any] | None:
        """What the worker's state exports beyond the registry: container, GPUs with telemetry, cold start."""
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None:
                return None
            info: dict[str, Any] = {
                "worker_id": w.worker_id,
                "endpoint_id": w.endpoint_id,
                "version": w.version,
                "phase": w.phase,
                "container_id": w.container_id,
                "gpu_ids": list(w.gpu_ids),
                "cold_start": w.record.as_dict() if w.record else None,
            }
        stats = self.gpus.stats(worker_id)
        info["gpu"] = asdict(stats) if stats else None
        return info

    def retained(self, endpoint_id: str | None = None) -> list[str]:
        """Worker ids kept for flash boot."""
        with self._lock:
            return [
                w.worker_id
                for w in self._workers.values()
                if w.phase == "retained" and (endpoint_id is None or w.endpoint_id == endpoint_id)
            ]

    def container_id(self, worker_id: str) -> str | None:
        with self._lock:
            w = self._workers.get(worker_id)
            return w.container_id if w else None

    def idle(self) -> bool:
        """No Docker call in flight."""
        with self._lock:
            return all(f.done() for f in self._futures)

    def ensure_volume(self, name: str) -> None:
        """Create a Docker volume (a network volume's stand-in) unless it exists; shutdown removes it."""
        try:
            self.client.volumes.get(name)
        except NotFound:
            self.client.volumes.create(name=name, labels={MANAGED: "true", NAMESPACE: self.namespace})
            with self._lock:
                self._created_volumes.add(name)

    # -- starting ----------------------------------------------------------------------------

    def _deployment(self, endpoint_id: str) -> Deployment:
        entry = self._endpoints.get(endpoint_id)
        if entry is None:
            raise NotFoundError(f"endpoint {endpoint_id!r} has no deployment; call configure() first")
        return entry.deployment

    def _start_one(self, spec: EndpointSpec) -> None:
        now = self._now()
        with self._lock:
            dep = self._deployment(spec.endpoint_id)
            if spec.scaling.flash_boot:
                revived = self._pick_retained(spec.endpoint_id, dep.version)
                if revived is not None and self._revive(revived, dep, now):
                    return
            self._seq += 1
            worker_id = f"{spec.endpoint_id}-{os.urandom(3).hex()}{self._seq}"
            gpu_ids = self._allocate(worker_id, dep)
            token = self.registry.add(worker_id, spec.endpoint_id, now, worker_capacity(dep), dep.version, gpu_ids or ())
            w = _Worker(worker_id, spec.endpoint_id, dep.version, token, "pending", gpu_ids or ())
            self._workers[worker_id] = w
            if dep.spec.is_load_balancer:  # host networking: each worker's server on its own free port
                w.port, w.port_health = lb_ports(dep)
                self._set_upstream(w, dep)
            if gpu_ids is None:
                w.phase = "throttled"
                self.registry.set_state(worker_id, WorkerState.THROTTLED, now)
                log.info("worker %s THROTTLED: no free %s x%d", worker_id, dep.spec.gpu_type, dep.spec.gpus_needed)
                return
            w.record = ColdStartRecord(worker_id, spec.endpoint_id, "cold", now, gpu_ids=w.gpu_ids)
            slot = self._endpoints[spec.endpoint_id].slots.claim(now)
            w.slot_streak, delay_s = slot.streak, slot.wait_s(now)
        self._submit(w, lambda w: self._cold_start(w, delay_s), "cold start")

    def _allocate(self, worker_id: str, dep: Deployment) -> tuple[int, ...] | None:
        need = dep.spec.gpus_needed
        got = self.gpus.allocate(worker_id, dep.spec.gpu_type, need)
        if got is None and need:
            # GPUs parked under retained containers are the first to be given back.
            for w in self._workers.values():
                if w.phase == "retained" and w.gpu_ids and not w.busy:
                    self.gpus.release(w.worker_id)
                    self._submit(w, self._remove_container, "its GPUs are needed by a new worker")
            got = self.gpus.allocate(worker_id, dep.spec.gpu_type, need)
        return got

    def _try_unthrottle(self, w: _Worker) -> None:
        with self._lock:
            if w.phase != "throttled":
                return
            dep = self._deployment(w.endpoint_id)
            got = self._allocate(w.worker_id, dep)
            if got is None:
                return
            now = self._now()
            w.gpu_ids, w.version, w.phase = got, dep.version, "pending"
            self.registry.set_gpus(w.worker_id, got)
            self.registry.set_state(w.worker_id, WorkerState.INITIALIZING, now)
            w.record = ColdStartRecord(w.worker_id, w.endpoint_id, "cold", now, gpu_ids=got)
        self._submit(w, lambda w: self._cold_start(w, 0.0), "cold start after throttling")

    def _set_upstream(self, w: _Worker, dep: Deployment) -> None:
        self.registry.set_upstream(
            w.worker_id, f"http://127.0.0.1:{w.port}", f"http://127.0.0.1:{w.port_health}{dep.health_path}"
        )

    def _container_kwargs(self, w: _Worker, dep: Deployment) -> dict[str, Any]:
        gpu_label = "cpu"
        if w.gpu_ids:
            names = {g.index: g.gpu_type for g in self.gpus.gpus}
            gpu_label = names.get(w.gpu_ids[0], dep.spec.gpu_type or "gpu")
        env = worker_env(dep, w.worker_id, w.token, self.server_url, gpu_label, self.ping_interval_ms)
        env["GPUSERVE_SPAWN_WALL_S"] = repr(self._now())
        return container_kwargs(
            dep, w.worker_id, w.version, env, image=self._image_of(dep), namespace=self.namespace,
            cold_start_dir=self.state_dir / "coldstart", ensure_volume=self.ensure_volume, gpu_ids=w.gpu_ids,
            port=w.port, port_health=w.port_health,
        )

    def _cold_start(self, w: _Worker, delay_s: float) -> None:
        if delay_s > 0:
            time.sleep(delay_s)  # crash back-off
        with self._lock:
            if w.phase != "pending" or self._closed:
                self._forget(w)  # stopped (or outdated) before its container was made
                return
            kwargs = self._container_kwargs(w, self._deployment(w.endpoint_id))
        assert w.record is not None
        try:
            self._pull(w, str(kwargs["image"]))
        except ImageError as exc:
            w.last_logs = f"{exc}\n"
            self._crashed(w, exc.reason)
            return
        # Under the watchdog that ends it once this server is gone (the image's command is read: pulled by now).
        kwargs = with_watchdog(kwargs, self.client, self.server_url, self.ping_interval_ms / 1000.0, self.watchdog_intervals)
        t0 = self._now()
        try:
            container = self.client.containers.create(**kwargs)
        except Exception as exc:
            w.last_logs = f"create failed: {exc}\n"
            self._crashed(w, f"create failed: {exc}")
            return
        t1 = self._now()
        w.container_id = container.id
        try:
            container.start()
        except Exception as exc:
            w.last_logs = f"start failed: {exc}\n"
            self._crashed(w, f"start failed: {exc}")
            return
        t2 = self._now()
        with self._lock:
            w.record = replace(w.record, create_s=t1 - t0, start_s=t2 - t1)
            w.started_wall_s = t2
            if w.phase == "pending":
                w.phase = "up"
            # retiring or outdated meanwhile: poll() parks or removes it once it has no job

    def _pull(self, w: _Worker, image: str) -> None:
        """Pull the worker's image unless the engine holds it; its layers and bytes go into the start record as they come."""

        def progress(p: PullProgress) -> None:
            with self._lock:
                if w.record is not None:
                    w.record = replace(w.record, pull=p)

        t0 = self._now()
        done = ensure_image(self.client, image, progress)
        with self._lock:
            self._images_held[image] = True  # present or pulled: the next starts need no pull
        if done is not None:
            pull_s = self._now() - t0
            log.info("worker %s: pulled %s in %.3f s (%d of %d layers downloaded, %d bytes)",
                     w.worker_id, image, pull_s, done.layers_total - done.layers_cached, done.layers_total, done.bytes_done)
            with self._lock:
                if w.record is not None:
                    w.record = replace(w.record, pull=done, pull_s=pull_s)

    # -- stopping ------------------------------------------------------------------------------

    def _keeps(self, w: _Worker) -> bool:
        """Is a retiring worker parked for flash boot (True) or removed?"""
        entry = self._endpoints.get(w.endpoint_id)
        if entry is None or self.retention_s <= 0 or not entry.deployment.spec.scaling.flash_boot:
            return False
        return entry.deployment.version == w.version and w.container_id is not None

    def _retire(self, worker_id: str) -> None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is None or w.phase in ("retiring", "retained", "gone"):
                return
            if w.phase in ("throttled", "failed"):
                self._forget(w)
                return
            if w.phase == "pending" and w.container_id is None and not w.busy:
                self._forget(w)
                return
            w.phase = "retiring"
            self.registry.set_draining(worker_id, True)

    def _park(self, w: _Worker) -> None:
        """Pause (or stop) a drained worker's container and keep it for flash boot."""
        assert w.container_id is not None
        container = self.client.containers.get(w.container_id)
        if self.flash_mode == "pause":
            container.pause()
        else:
            container.stop(timeout=self.stop_timeout_s)
        with self._lock:
            live = self.registry.get(w.worker_id)
            if live is not None and live.in_flight:
                # A job was handed out between the check and the pause: serve it first.
                if self.flash_mode == "pause":
                    container.unpause()
                    return
            w.phase = "retained"
            w.paused = self.flash_mode == "pause"
            w.retained_since_s = self._now()
            if not w.paused:
                self.gpus.release(w.worker_id)  # a stopped container holds no GPU memory
                # The exited process may leave a parked take at the server, bound to this registry
                # entry; dropping the entry (still draining) keeps that dead take from ever getting a job.
                self.registry.remove(w.worker_id)
            # Revivable from this instant: a job that arrives now must not miss it and start cold.
            w.busy = False
        log.info("worker %s retained (%s) for %.0f s", w.worker_id, self.flash_mode, self.retention_s)

    def _pick_retained(self, endpoint_id: str, version: str) -> _Worker | None:
        candidates = [
            w
            for w in self._workers.values()
            if w.phase == "retained" and not w.busy and w.endpoint_id == endpoint_id and w.version == version
        ]
        # The most recently parked one: its memory and page cache are the warmest.
        return max(candidates, key=lambda w: w.retained_since_s or 0.0) if candidates else None

    def _revive(self, w: _Worker, dep: Deployment, now: float) -> bool:
        """Flash boot (called with the lock): clear the drain, then unpause or start off the loop."""
        if not w.paused and w.gpu_ids:
            try:
                self.gpus.claim(w.worker_id, w.gpu_ids)
            except ValueError:
                self._submit(w, self._remove_container, "its GPUs went to another worker")
                return False
        if not w.paused:  # a fresh process: a fresh registry entry (see _park)
            self.registry.add(w.worker_id, w.endpoint_id, now, worker_capacity(dep), w.version, w.gpu_ids, token=w.token)
            if w.port is not None:
                self._set_upstream(w, dep)
        # Back to a fresh start in the registry: INITIALIZING until its next job-take, heard from now
        # (a paused process misses heartbeats), and no longer draining.
        if not self.registry.revive(w.worker_id, now, worker_capacity(dep), w.token, restarted=not w.paused):
            # removed by someone else: cannot be revived under its token
            self._submit(w, self._remove_container, "no longer registered")
            return False
        kind: StartKind = "flash_unpause" if w.paused else "flash_start"
        w.record = ColdStartRecord(w.worker_id, w.endpoint_id, kind, now, gpu_ids=w.gpu_ids)
        w.phase = "pending"
        w.retained_since_s = None
        w.started_wall_s = None
        self._submit(w, self._wake, "flash boot")
        return True

    def _wake(self, w: _Worker) -> None:
        assert w.container_id is not None and w.record is not None
        container = self.client.containers.get(w.container_id)
        t0 = self._now()
        if w.paused:
            container.unpause()
        else:
            container.start()
        t1 = self._now()
        with self._lock:
            w.record = replace(w.record, start_s=t1 - t0)
            w.paused = False
            w.started_wall_s = t1
            if w.phase == "pending":
                w.phase = "up"

    def _remove_container(self, w: _Worker) -> None:
        """Stop (SIGTERM: the SDK finishes and exits) and remove a worker's container; forget the worker."""
        if w.container_id is not None:
            try:
                container = self.client.containers.get(w.container_id)
                if w.paused:
                    container.unpause()  # a frozen process cannot act on SIGTERM
                container.stop(timeout=self.stop_timeout_s)
                w.last_logs = container.logs(tail=200).decode(errors="replace")
                container.remove(force=True)
            except Exception as exc:
                log.debug("removing the container of %s: %s", w.worker_id, exc)
        self._forget(w)

    def _forget(self, w: _Worker) -> None:
        with self._lock:
            w.phase = "gone"
            w.paused = False
            self.gpus.release(w.worker_id)
            # Out of the registry: the server requeues whatever jobs it still held.
            self.registry.remove(w.worker_id)
            try:
                (self.state_dir / "coldstart" / f"{w.worker_id}.json").unlink()
            except OSError:
                pass
            self._workers.pop(w.worker_id, None)
            # `gpuserve logs` still works for a worker that just died: its last lines are kept.
            self._gone_logs[w.worker_id] = w.last_logs
            while len(self._gone_logs) > 200:
                self._gone_logs.pop(next(iter(self._gone_logs)))

    def _crashed(self, w: _Worker, why: str) -> None:
        """A container failed or died: keep its logs, remove it, back off its slot's replacement.

        A worker that was starting or serving stays listed UNHEALTHY with the reason (an exit code,
        an image that cannot be pulled) for FAILED_LINGER_S; one on its way out is simply forgotten.
        """
        log.warning("worker %s lost: %s", w.worker_id, why)
        with self._lock:
            entry = self._endpoints.get(w.endpoint_id)
            crashed = w.phase in ("pending", "up")
            if entry is not None and crashed:
                entry.slots.crashed(w.slot_streak, 0.0, self._now())
        if w.container_id is not None:
            try:
                container = self.client.containers.get(w.container_id)
                w.last_logs = container.logs(tail=200).decode(errors="replace")
                code = container.attrs.get("State", {}).get("ExitCode")
                if why.startswith("container ") and isinstance(code, int) and container.status in ("exited", "dead"):
                    why = f"exited with code {code}"
                container.remove(force=True)
            except Exception:
                pass
        if not crashed:
            self._forget(w)
            return
        with self._lock:
            if w.phase == "gone":
                return
            w.phase = "failed"
            w.failed_s = self._now()
            w.container_id = None
            self.gpus.release(w.worker_id)
            # Jobs it still held are requeued by the runtime's next pass (UNHEALTHY and holding jobs).
            self.registry.set_state(w.worker_id, WorkerState.UNHEALTHY, w.failed_s, reason=why)

    # -- observation -------------------------------------------------------------------------

    def _refresh_in_background(self, now: float) -> None:
        """List this namespace's containers off the loop; poll() reads the last listing."""
        with self._lock:
            if self._watching is not None and not self._watching.done():
                return
            self._watching = self._watch.submit(self._refresh_states)
        if now - self._last_telemetry_s >= 5.0 and self.gpus.gpus:
            self._last_telemetry_s = now
            self._watch.submit(lambda: self.gpus.refresh(inventory()))

    def _refresh_states(self) -> None:
        t0 = self._now()
        try:
            listing = self.client.containers.list(all=True, sparse=True, filters=_label_filter(self.namespace))
        except Exception as exc:
            log.warning("docker: listing containers failed: %s", exc)
            return
        states = {c.id: str(c.attrs.get("State", "")) for c in listing if c.id}
        with self._lock:
            self._states, self._states_at_s = states, t0
            refs = {self._image_of(e.deployment) for e in self._endpoints.values()}
            due = t0 - self._images_checked_s >= IMAGE_CHECK_S
        if due:
            self._images_checked_s = t0
            self._check_images(refs)

    def _image_of(self, dep: Deployment) -> str:
        """The image an endpoint's containers run: its own, else the worker image its handler is mounted into."""
        return dep.image or self.default_image

    def _check_images(self, refs: Iterable[str]) -> None:
        """Which of these images the engine holds now (the watch thread's job; one local lookup each)."""
        held: dict[str, bool] = {}
        for ref in refs:
            try:
                self.client.images.get(ref)
            except NotFound:
                held[ref] = False
            except Exception as exc:  # the engine did not answer: claim nothing
                log.debug("docker: looking up image %s failed: %s", ref, exc)
                held[ref] = False
            else:
                held[ref] = True
        with self._lock:
            self._images_held.update(held)

    def _note_first_take(self, w: _Worker) -> None:
        rec = w.record
        if rec is None or rec.first_take_s is not None or w.started_wall_s is None:
            return
        live = self.registry.get(w.worker_id)
        if live is None or live.first_take_s is None:
            return
        w.slot_streak = 0  # it took a job: its slot is healthy again
        ready_s = max(live.first_take_s, w.started_wall_s)
        # A paused process does not start again, so it writes no new report.
        report = self._read_report(w.worker_id) if rec.kind != "flash_unpause" else None
        # A report older than this start (a revived stopped container left its first one) says nothing.
        if live.upstream_url is not None:  # load-balancing: start -> first 204 -> first 200 (Runpod's cold start)
            first_204 = live.first_initializing_s
            rec = replace(
                rec,
                runtime_init_s=None if first_204 is None else max(0.0, first_204 - w.started_wall_s),
                first_take_s=None if first_204 is None else max(0.0, live.first_take_s - first_204),
            )
        elif report is not None and report.start_called_wall_s >= w.started_wall_s - 0.05:
            start_called = report.start_called_wall_s
            rec = replace(
                rec,
                runtime_init_s=max(0.0, start_called - w.started_wall_s),
                first_take_s=max(0.0, live.first_take_s - start_called),
            )
        else:
            rec = replace(rec, first_take_s=max(0.0, live.first_take_s - w.started_wall_s))
        rec = replace(rec, total_s=ready_s - rec.requested_wall_s)
        with self._lock:
            w.record = rec
            self.cold_starts.append(rec)
        log.info(
            "worker %s ready (%s): create %s start %s init %s first-take %s total %.3f s",
            w.worker_id,
            rec.kind,
            _fmt(rec.create_s),
            _fmt(rec.start_s),
            _fmt(rec.runtime_init_s),
            _fmt(rec.first_take_s),
            rec.total_s,
        )

    def _read_report(self, worker_id: str) -> StartReport | None:
        """The start-up report the worker's SDK wrote into the state folder mounted at COLD_START_DIR."""
        try:
            return StartReport.from_json(json.loads((self.state_dir / "coldstart" / f"{worker_id}.json").read_text()))
        except (OSError, ValueError):
            return None

    # -- adoption after a restart ----------------------------------------------------------------

    def _adopt(self, dep: Deployment) -> None:
        """Take over this endpoint's running containers of the same version; remove its others."""
        mine = {cid: c for cid, c in self._orphans.items() if c.labels.get("gpuserve.endpoint") == dep.endpoint_id}
        for cid, c in mine.items():
            del self._orphans[cid]
            worker_id = c.labels.get("gpuserve.worker", "")
            env = dict(item.split("=", 1) for item in c.attrs.get("Config", {}).get("Env") or [] if "=" in item)
            token = env.get("RUNPOD_AI_API_KEY", "")
            same = c.labels.get("gpuserve.version") == dep.version
            if not (same and c.status == "running" and worker_id and token and worker_id not in self._workers):
                log.info("removing leftover container %s (%s, %s version)", c.name, c.status, "same" if same else "other")
                self._track(self._pool.submit(_force_remove, c))
                continue
            gpu_ids = tuple(int(i) for i in c.labels.get("gpuserve.gpus", "").split(",") if i)
            try:
                self.gpus.claim(worker_id, gpu_ids)
            except ValueError as exc:
                log.warning("removing leftover container %s: %s", c.name, exc)
                self._track(self._pool.submit(_force_remove, c))
                continue
            now = self._now()
            # The container keeps polling with the token it was given.
            self.registry.add(worker_id, dep.endpoint_id, now, worker_capacity(dep), dep.version, gpu_ids, token=token)
            w = _Worker(worker_id, dep.endpoint_id, dep.version, token, "up", gpu_ids, c.id)
            w.started_wall_s = now
            self._workers[worker_id] = w
            if dep.spec.is_load_balancer and env.get("PORT", "").isdigit():  # its server keeps its port
                w.port = int(env["PORT"])
                w.port_health = int(env.get("PORT_HEALTH") or w.port)
                self._set_upstream(w, dep)
            log.info("adopted running container %s as worker %s", c.name, worker_id)

    def _reap_orphans(self, now: float) -> None:
        with self._lock:
            if not self._orphans or now < self._orphan_deadline_s:
                return
            leftovers = list(self._orphans.values())
            self._orphans.clear()
        for c in leftovers:
            log.info("removing container %s of an endpoint that was not configured again", c.name)
            self._track(self._pool.submit(_force_remove, c))

    # -- the pool --------------------------------------------------------------------------------

    def _submit(self, w: _Worker, fn: Callable[[_Worker], None], what: str) -> None:
        with self._lock:
            if w.busy or self._closed:
                return
            w.busy = True
            w.op_id += 1
            op_id = w.op_id

        def run() -> None:
            try:
                fn(w)
            except Exception:
                log.exception("docker backend: %s of worker %s failed", what, w.worker_id)
                try:
                    self._crashed(w, f"{what} failed")
                except Exception:
                    log.exception("docker backend: cleaning up %s failed", w.worker_id)
            finally:
                with self._lock:
                    if w.op_id == op_id:
                        w.busy = False

        self._track(self._pool.submit(run))

    def _track(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures = {f for f in self._futures if not f.done()}
            self._futures.add(future)

    def _drain_pool(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                pending = [f for f in self._futures if not f.done()]
            if not pending:
                return
            for f in pending:
                try:
                    f.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception:
                    pass


def _validate(dep: Deployment) -> None:
    """Reject what could only fail later, on the pool, where nobody sees the error."""
    if dep.image is None and dep.handler_path is None and not dep.spec.is_load_balancer:
        raise ConfigError("image", None, f"or handler is required for endpoint {dep.endpoint_id!r}")
    if dep.model_source == "host_cache":
        if not dep.model_path or not Path(dep.model_path).is_dir():
            raise ConfigError("model_path", dep.model_path, "must name an existing host folder for model_source 'host_cache'")
    elif dep.model_source == "volume" and not dep.model_path:
        raise ConfigError("model_path", dep.model_path, "must name a Docker volume for model_source 'volume'")


def _force_remove(container: Container) -> None:
    try:
        container.remove(force=True)
    except Exception as exc:
        log.debug("remove %s: %s", getattr(container, "id", "?"), exc)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def docker_backend_factory(**options: Any) -> Callable[..., DockerBackend]:
    """A BackendFactory for `gpuserve.platform.Platform`.

    (registry, server_url, settings, clock, data_dir) -> DockerBackend; `options` are
    DockerBackend's keyword arguments (namespace, flash_mode, retention_s, ...). Without a
    `namespace`, the server's data directory names it (`namespace_for`): two servers on one
    host never touch each other's containers, and a restart on the same directory adopts its own.
    """

    def make(registry: WorkerRegistry, server_url: str, settings: Any, clock: Any, data_dir: Path | None = None) -> DockerBackend:
        kwargs: dict[str, Any] = {
            "ping_interval_ms": int(settings.heartbeat_interval_s * 1000),
            "now": clock.now_s,
            # docker stop's SIGTERM-to-SIGKILL window: the server's drain (30 s unless configured)
            "stop_timeout_s": max(1, round(settings.drain_timeout_s)),
        }
        if data_dir is not None:
            kwargs["state_dir"] = Path(data_dir) / "docker"
            kwargs["namespace"] = namespace_for(Path(data_dir))
        return DockerBackend(server_url, registry, **{**kwargs, **options})

    return make
