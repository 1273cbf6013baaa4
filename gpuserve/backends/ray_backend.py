"""The Ray backend: each worker is a Ray actor on a node of a Ray cluster with the GPUs it needs, running the user's handler or container.

Life of a worker (all Ray calls on one backend thread, so `apply` and `poll`, which the server
calls on its event loop, only read and write memory):

    apply(start) -> INITIALIZING (registered; its token goes into the worker's environment)
        -> a placement group of one bundle {"GPU": gpus_per_worker, "gpu_type:<T>": 0.001}
           Ray says NO_RESOURCES / INFEASIBLE (no node has a free GPU of that type) -> THROTTLED
           (the group stays pending; Ray places it the moment a GPU frees) -> INITIALIZING again
        -> created: a `WorkerHost` actor (backends/ray_host.py) in that bundle starts the handler
           under the process backend's launcher, watching the actor's pid; for an endpoint with
           an `image`, a `ContainerHost` actor (backends/ray_container.py) runs it as a container
           on that node's Docker engine instead, built as the Docker backend builds one
           (backends/container_spec.py), removed when the actor ends
        -> the handler's first job-take over HTTP (the worker API) -> IDLE / RUNNING
    apply(stop), stopPod, OUTDATED -> draining; SIGTERM through the actor once its jobs end,
           SIGKILL after the grace; then the actor is killed and the placement group removed
    handler exits by itself -> UNHEALTHY (the server requeues its jobs), crash back-off as the
           process backend's (core/backoff.py), removed after a while
    node lost -> Ray's failure detection marks the node dead and the actor with it: every worker
           of that node goes UNHEALTHY at once, its jobs are requeued; the controller, seeing
           fewer workers, starts replacements wherever Ray finds GPUs
    server dies -> the actors and placement groups it owns die with its Ray job; each launcher
           then kills its handler (it watches the actor's pid), each container's guard removes it.
           On a store other replicas share (`adoptable`) the actors and placement groups are
           detached and named after the worker instead: they outlive the server, and the replica
           that leads the endpoint next looks them up by name and adopts them (`adopt`), jobs and all

GPU types as Ray resources (the convention): a node with N GPUs of type T starts with
`ray start --num-gpus N --resources '{"gpu_type:T": 1}'`. Ray counts the GPUs; the type is a
label, which a worker asks for 0.001 of, so a node may hold up to 1000 workers of its type. An
endpoint without `gpu_type` reserves one CPU per worker instead.

A load-balancing endpoint's worker is the user's HTTP server: the actor starts its `command` on
the node with PORT / PORT_HEALTH free there and answers with the node's address, which becomes the
worker's upstream; the server's health polls (live/lb_health.py) make it ready, and one they mark
UNHEALTHY is ended like a crashed handler.

Logs: each report the backend asks for (about twice a second per worker) carries the log bytes
written since the last, which the backend appends to `<logs_dir>/<worker id>.log`; `gpuserve
logs` reads that copy, so a worker's log outlives its node. Cold start: create_s is the
placement (request -> Ray reserved the GPUs), start_s the actor's start (-> the handler
process launched), then the SDK's own phases, and total_s the request -> first job-take.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from gpuserve.backends.base import worker_capacity, worker_env
from gpuserve.backends.container_spec import namespace_for
from gpuserve.backends.docker_supervise import WATCHDOG_INTERVALS
from gpuserve.backends.process import exit_reason, handler_command, sdk_ping_ms
from gpuserve.core.backoff import CRASH_BACKOFF, crash_streak_after
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

__all__ = ["GPU_TYPE_PREFIX", "RayBackend", "connect", "ray_backend_factory", "worker_resources"]

log = logging.getLogger("gpuserve.backends.ray")

GPU_TYPE_PREFIX = "gpu_type:"  # the custom resource a node declares for its GPU type
GPU_TYPE_SHARE = 0.001  # what one worker asks of it: a label, not a count (Ray counts the GPUs)
RAY_NAMESPACE = "gpuserve"
LOOP_INTERVAL_S = 0.1
REPORT_EVERY_S = 0.5
TABLE_EVERY_S = 0.25  # placement-group states and node liveness, one GCS call each
UNHEALTHY_LINGER_S = 30.0
COLD_STARTS_KEPT = 1000
LOG_MARKS_KEPT = 4 * 3600
THROTTLING_STATES = frozenset({"NO_RESOURCES", "INFEASIBLE"})  # Ray found no node with the bundle free

Phase = Literal["waiting", "placing", "launching", "up", "stopping", "exited", "lost"]


def worker_resources(spec: EndpointSpec) -> dict[str, float]:
    """The placement-group bundle of one worker of `spec`: its GPUs and GPU type, or one CPU."""
    if spec.gpus_needed == 0:
        return {"CPU": 1.0}
    bundle = {"GPU": float(spec.gpus_needed)}
    if spec.gpu_type:
        bundle[GPU_TYPE_PREFIX + spec.gpu_type] = GPU_TYPE_SHARE
    return bundle


def connect(address: str | None) -> None:
    """Join the Ray cluster at `address` (host:port of its head; None: $RAY_ADDRESS, else one started on this machine), once per process.

    Never starts a cluster of its own: a server without one is refused with the address it tried.
    """
    host = (address or "").rpartition(":")[0]
    loopback = host in ("127.0.0.1", "localhost")
    if loopback and "ray" not in sys.modules:
        # A cluster on the loopback (the local demo, the tests) is a one-machine cluster: in Ray's
        # one-machine mode, read when Ray is imported, the driver stays on the loopback too instead
        # of resolving 127.0.0.1 to the host's outward address, where nothing of that cluster listens.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise BackendError("the ray backend needs Ray: pip install 'gpuserve[ray]'") from None
    if ray.is_initialized():
        return
    node_ip: dict[str, Any] = {"_node_ip_address": "127.0.0.1"} if loopback else {}
    try:
        # log_to_driver off: the workers' output comes back through their logs, not the server's terminal.
        ray.init(address=address or "auto", namespace=RAY_NAMESPACE, log_to_driver=False, configure_logging=False, **node_ip)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError("ray_address", address, f"no Ray cluster answers there ({exc})") from None


@dataclass
class _Worker:
    worker_id: str
    endpoint_id: str
    version: str
    token: str
    requested_s: float  # backend clock
    log_path: Path
    phase: Phase = "waiting"
    start_at_s: float = 0.0  # crash back-off: not placed before this
    pg: Any = None
    actor: Any = None
    ref: Any = None  # the one outstanding call: start, report or stop
    ref_kind: str = ""
    placed_s: float | None = None
    launched_s: float | None = None
    last_report_s: float = 0.0
    node_id: str | None = None
    gpu_ids: tuple[int, ...] = ()
    container_id: str | None = None  # an endpoint with an image: its container on the node
    pull_s: float | None = None  # that node pulled the image first (None: it held it)
    throttled: bool = False
    hidden: bool = False  # scale-down: the controller no longer counts it
    want_stop: bool = False
    condemned: bool = False
    ended_s: float | None = None
    exit_code: int | None = None
    report: StartReport | None = None
    adopted: bool = False  # started by another server, taken over here: no start of ours to record
    log_marks: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=LOG_MARKS_KEPT))


@dataclass
class _Endpoint:
    deployment: Deployment
    crash_streak: int = 0
    next_start_s: float = 0.0


class RayBackend:
    """Implements LiveBackend with Ray actors placed by Ray's resource accounting."""

    def __init__(
        self,
        server_url: str,
        registry: WorkerRegistry,
        *,
        address: str | None = None,
        logs_dir: str | os.PathLike[str],
        ping_interval_ms: int = 10_000,
        stop_grace_s: float = 10.0,
        clock: Any = None,
        log_max_bytes: int = 64 * MIB,
        log_rate_bytes_s: int = MIB,
        namespace: str = "default",
        container_gpus: bool = True,
        watchdog_intervals: int = WATCHDOG_INTERVALS,
        adoptable: bool = False,
    ) -> None:
        connect(address)
        import importlib

        import ray

        # The module, not `ray.util.placement_group`, which ray.util rebinds to the function.
        self._ray, self._pg_api = ray, importlib.import_module("ray.util.placement_group")
        from gpuserve.backends.ray_container import ContainerHost
        from gpuserve.backends.ray_host import WorkerHost

        self._host_class = ray.remote(WorkerHost)
        self._container_class = ray.remote(ContainerHost)  # an endpoint with an image
        # Containers: labelled with this server's namespace (as the Docker backend's); the GPUs Ray
        # gave a worker passed in as NVIDIA devices unless `container_gpus` is False (GPUs declared
        # to Ray, not real, as on a test cluster); the watchdog ends one whose server is unreachable.
        self.namespace, self.container_gpus, self.watchdog_intervals = namespace, container_gpus, watchdog_intervals
        self.server_url = server_url.rstrip("/")
        self.registry = registry
        self.logs_dir = Path(logs_dir)
        try:
            self.logs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError("logs_dir", str(self.logs_dir), f"cannot be created ({exc.strerror or exc})") from None
        self.ping_interval_ms = ping_interval_ms
        self.stop_grace_s = stop_grace_s
        # Detached actors and placement groups: a worker outlives this server, for another replica to adopt.
        self.adoptable = adoptable
        self._adopting = threading.Lock()
        self.log_max_bytes, self.log_rate_bytes_s = log_max_bytes, log_rate_bytes_s
        self._now: Callable[[], float] = clock.now_s if clock is not None else SteadyClock().now_s
        self._lock = threading.RLock()
        self._endpoints: dict[str, _Endpoint] = {}
        self._workers: dict[str, _Worker] = {}
        self.cold_starts: deque[ColdStartRecord] = deque(maxlen=COLD_STARTS_KEPT)
        self._next_table_s = 0.0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpuserve-ray", daemon=True)
        self._thread.start()

    # -- LiveBackend ----------------------------------------------------------------------------

    def configure(self, deployment: Deployment) -> None:
        _validate(deployment)
        with self._lock:
            old = self._endpoints.get(deployment.endpoint_id)
            if old is None:
                self._endpoints[deployment.endpoint_id] = _Endpoint(deployment)
                return
            old.deployment = deployment
            old.crash_streak, old.next_start_s = 0, 0.0
            # Running workers of the old version keep serving until the runtime's rolling update
            # (gpuserve.live.rollout) marks them OUTDATED one by one and hands each to `recycle`.
            for w in self._workers.values():
                if w.endpoint_id == deployment.endpoint_id and w.version != deployment.version and not w.want_stop:
                    if w.phase in ("waiting", "placing"):
                        w.version = deployment.version  # nothing runs yet: it starts on the new version

    def image_cached(self, endpoint_id: str) -> bool:
        """Always cached once configured, as on the process backend: a handler needs no image, and which node
        Ray picks for a container is not known before placement (one without the image pulls it: `pull_s`)."""
        with self._lock:
            return endpoint_id in self._endpoints

    def workers(self, endpoint_id: str) -> Sequence[WorkerView]:
        with self._lock:
            hidden = {w.worker_id for w in self._workers.values() if w.hidden}
        return [v for v in self.registry.views(endpoint_id) if v.worker_id not in hidden]

    def apply(self, endpoint: EndpointSpec, action: ScaleAction, now_s: float) -> None:
        with self._lock:
            state = self._endpoints.get(endpoint.endpoint_id)
            if state is None:
                raise NotFoundError(f"endpoint {endpoint.endpoint_id!r} has no deployment; call configure() first")
            if state.deployment.spec != endpoint:
                state.deployment = replace(state.deployment, spec=endpoint)
            for worker_id in action.stop:
                w = self._workers.get(worker_id)
                if w is not None:
                    w.hidden = True
                    w.want_stop = True
                    self.registry.set_draining(worker_id, True)
            for _ in range(action.start):
                self._add(state, now_s)

    def poll(self, now_s: float) -> None:
        """Nothing to do on the event loop: the backend thread polls Ray."""
        if not self._thread.is_alive() and not self._closed.is_set():
            raise BackendError("the ray backend's thread has stopped; see the server log")

    def recycle(self, worker_id: str) -> None:
        self.registry.set_draining(worker_id, True)

    def logs(self, worker_id: str, tail_lines: int = 200) -> str:
        path = self._log_path(worker_id)
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(deque(f, maxlen=max(1, tail_lines)))

    def open_log(self, worker_id: str, *, tail_lines: int, since_wall_s: float | None, follow: bool) -> LogReader:
        path = self._log_path(worker_id)
        with self._lock:
            w = self._workers.get(worker_id)
            marks = list(w.log_marks) if w is not None else []
        offset = tail_offset(path, tail_lines) if since_wall_s is None else offset_since(path, marks, since_wall_s)
        return FileLogReader(path, offset, (lambda: not self._running(worker_id)) if follow else None)

    def exec(self, worker_id: str, argv: Sequence[str], timeout_s: float) -> ExecResult:
        with self._lock:
            w = self._workers.get(worker_id)
            actor = w.actor if w is not None and w.phase == "up" else None
        if actor is None:
            raise NotFoundError(f"no running worker {worker_id!r} on this server")
        try:
            code, out, truncated = self._ray.get(
                actor.exec.remote(list(argv), timeout_s, MAX_EXEC_OUTPUT_BYTES), timeout=timeout_s + 30
            )
        except Exception as exc:
            raise NotFoundError(f"worker {worker_id!r} cannot run commands now ({type(exc).__name__})") from None
        return ExecResult(code, out, truncated)

    def cold_start(self, worker_id: str) -> ColdStartRecord | None:
        with self._lock:
            w = self._workers.get(worker_id)
            if w is not None:
                return None if w.adopted else self._record(w)
            return next((c for c in reversed(self.cold_starts) if c.worker_id == worker_id), None)

    def adopt(self, record: WorkerRecord, now_s: float) -> bool:
        """A worker another server started: its detached actor, looked up by name, still runs the handler.

        Tracked from then on as if started here (reports, logs from now on, stops); its placement
        group, also named after it, is removed when it ends.
        """
        if not self.adoptable:
            return False
        with self._adopting:
            with self._lock:
                if record.worker_id in self._workers:
                    return True
                state = self._endpoints.get(record.endpoint_id)
            if state is None:
                return False
            try:
                actor = self._ray.get_actor(record.worker_id, namespace=RAY_NAMESPACE)
                answer: Any = self._ray.get(actor.where.remote(), timeout=10)
                where: dict[str, Any] = dict(answer)
            except Exception as exc:  # no such actor (gone), or it does not answer
                log.info("worker %s cannot be adopted: %s", record.worker_id, exc)
                return False
            if not where.get("started") or where.get("exit_code") is not None:
                return False
            try:
                pg = self._pg_api.get_placement_group(record.worker_id)
            except Exception:
                pg = None
            w = _Worker(
                record.worker_id, record.endpoint_id, record.spec_version, "", now_s,
                self.logs_dir / f"{record.worker_id}.log", phase="up", pg=pg, actor=actor,
                placed_s=now_s, launched_s=now_s, node_id=str(where.get("node_id")),
                gpu_ids=tuple(int(g) for g in where.get("gpu_ids", ())), adopted=True,
                container_id=where.get("container_id"),
            )
            w.log_marks.append((time.time(), 0))
            w.log_path.touch(mode=0o600)
            self._absorb(w, where)  # what it logged since the last report the old leader asked for
            with self._lock:
                self._workers[record.worker_id] = w
            self.registry.claim(record.worker_id, now_s)
            self.registry.set_gpus(record.worker_id, w.gpu_ids)
            if where.get("port") is not None:  # a load-balancing worker: where its server answers
                self._set_upstream(w, where)
        log.info("worker %s adopted: its actor runs on Ray node %s", record.worker_id, w.node_id)
        return True

    def shutdown(self) -> None:
        """Stop every worker (SIGTERM through its actor, SIGKILL after the grace), then free its GPUs."""
        self._closed.set()
        self._thread.join(10)
        with self._lock:
            workers = list(self._workers.values())
        refs = {}
        for w in workers:
            if w.actor is not None and w.phase in ("launching", "up", "stopping"):
                try:
                    refs[w.worker_id] = w.actor.stop.remote(self.stop_grace_s)
                except Exception:
                    pass
        if refs:
            self._ray.wait(list(refs.values()), num_returns=len(refs), timeout=self.stop_grace_s + 5)
        for w in workers:
            ref = refs.get(w.worker_id)
            if ref is not None:
                self._take(w, ref, "stop", self._now())
            with self._lock:
                if w.worker_id in self._workers:
                    self._end(w, self._now())
                    self._forget(w)

    # -- extras (tests, benchmarks) ---------------------------------------------------------------

    def placement(self, worker_id: str) -> tuple[str | None, tuple[int, ...]]:
        """(Ray node id, GPU ids) of a placed worker; (None, ()) before Ray placed it."""
        with self._lock:
            w = self._workers.get(worker_id)
            return (w.node_id, w.gpu_ids) if w is not None else (None, ())

    # -- the backend thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.wait(LOOP_INTERVAL_S):
            try:
                self._step(self._now())
            except Exception:
                log.exception("ray backend: a pass failed")

    def _step(self, now_s: float) -> None:
        with self._lock:
            workers = list(self._workers.values())
        if now_s >= self._next_table_s:
            self._next_table_s = now_s + TABLE_EVERY_S
            self._watch_placement(workers, now_s)
        for w in workers:
            self._advance(w, now_s)

    def _watch_placement(self, workers: list[_Worker], now_s: float) -> None:
        """Ray's verdicts: which placement groups it reserved or cannot place, and which nodes are dead."""
        placing = [w for w in workers if w.phase == "placing" and w.pg is not None]
        if placing:
            table = self._pg_api.placement_group_table()
            for w in placing:
                entry = table.get(w.pg.id.hex(), {})
                if entry.get("state") == "CREATED":
                    self._launch(w, now_s)
                    continue
                scheduling = (entry.get("stats") or {}).get("scheduling_state")
                if scheduling in THROTTLING_STATES and not w.throttled:
                    w.throttled = True
                    self.registry.set_state(w.worker_id, WorkerState.THROTTLED, now_s)
                    log.info("worker %s THROTTLED: Ray has no node with %s free", w.worker_id, self._bundle(w))
        placed = [w for w in workers if w.node_id is not None and w.phase in ("launching", "up", "stopping")]
        if placed:
            nodes: list[dict[str, Any]] = self._ray.nodes()  # type: ignore[no-untyped-call]
            alive = {n["NodeID"] for n in nodes if n.get("Alive")}
            for w in placed:
                if w.node_id not in alive:
                    self._lost(w, now_s, f"its Ray node {w.node_id} is dead")

    def _advance(self, w: _Worker, now_s: float) -> None:
        if w.phase == "waiting" and now_s >= w.start_at_s:
            if w.want_stop:
                self._forget(w)
                return
            self._place(w, now_s)
            return
        if w.phase == "placing" and w.want_stop:
            self._forget(w)
            return
        if w.ref is not None:
            ready, _ = self._ray.wait([w.ref], timeout=0)
            if ready:
                ref, kind = w.ref, w.ref_kind
                w.ref = None
                self._take(w, ref, kind, now_s)
        if w.phase == "up" and w.ref is None:
            live = self.registry.get(w.worker_id)
            if live is not None and live.state is WorkerState.UNHEALTHY and not w.want_stop and not w.condemned:
                # The server declared it dead (missed heartbeats) yet Ray says it runs: end it, a crash.
                log.warning("worker %s is UNHEALTHY but its actor runs; killing it", w.worker_id)
                w.condemned = True
                self._kill(w)
                self._crashed(w, now_s, None, "missed heartbeats while its actor ran; killed")
                return
            drained = live is not None and live.draining and not live.in_flight and live.state is not WorkerState.UNHEALTHY
            if w.want_stop or drained:
                w.phase = "stopping"
                w.ref, w.ref_kind = w.actor.stop.remote(self.stop_grace_s), "stop"
            elif now_s - w.last_report_s >= REPORT_EVERY_S:
                w.last_report_s = now_s
                w.ref, w.ref_kind = w.actor.report.remote(), "report"
        if w.phase in ("exited", "lost") and w.ended_s is not None and now_s - w.ended_s >= UNHEALTHY_LINGER_S:
            self._forget(w)

    def _place(self, w: _Worker, now_s: float) -> None:
        bundle = self._bundle(w)
        lifetime = "detached" if self.adoptable else None
        w.pg = self._pg_api.placement_group([bundle], strategy="PACK", name=w.worker_id, lifetime=lifetime)
        w.phase = "placing"
        log.info("worker %s: placement group %s asked of Ray", w.worker_id, bundle)

    def _launch(self, w: _Worker, now_s: float) -> None:
        """Ray reserved the bundle: start the actor in it and the handler in the actor."""
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        with self._lock:
            dep = self._endpoints[w.endpoint_id].deployment
        bundle = self._bundle(w)
        w.placed_s = now_s
        if w.throttled:
            w.throttled = False
            self.registry.set_state(w.worker_id, WorkerState.INITIALIZING, now_s)
        w.actor = (self._container_class if dep.image is not None else self._host_class).options(
            num_cpus=bundle.get("CPU", 0.0),
            num_gpus=bundle.get("GPU", 0.0),
            resources={k: v for k, v in bundle.items() if k not in ("CPU", "GPU")},
            scheduling_strategy=PlacementGroupSchedulingStrategy(w.pg, placement_group_bundle_index=0),
            max_restarts=0,
            max_concurrency=4,  # a report or exec while a stop waits out its grace
            name=w.worker_id,
            namespace=RAY_NAMESPACE,
            lifetime="detached" if self.adoptable else None,
        ).remote(w.worker_id)
        env = worker_env(
            dep, w.worker_id, w.token, self.server_url, gpu_label=dep.spec.gpu_type or "cpu",
            ping_interval_ms=sdk_ping_ms(dep, self.ping_interval_ms),
        )
        env.update({
            "GPUSERVE_SPAWN_WALL_S": repr(time.time()),
            "GPUSERVE_DRAIN_TIMEOUT_S": repr(max(0.5, self.stop_grace_s - 1.0)),
        })
        w.ref = self._start_call(w, dep, env)
        w.ref_kind = "start"
        w.phase = "launching"

    def _start_call(self, w: _Worker, dep: Deployment, env: dict[str, str]) -> Any:
        """The actor's start: the handler, or a load-balancing worker's own server on ports of its node."""
        if dep.image is not None:
            options = {
                "namespace": self.namespace,
                "server_url": self.server_url,
                "ping_interval_s": self.ping_interval_ms / 1000.0,
                "watchdog_intervals": self.watchdog_intervals,
                "gpu_devices": self.container_gpus,
                "log_max_bytes": self.log_max_bytes,
            }
            return w.actor.start_container.remote(dep, w.version, env, options)
        # "{python}": the node's own interpreter (the actor's), unless the endpoint names one.
        python = dep.python or "{python}"
        if dep.spec.is_load_balancer:
            assert dep.command is not None
            separate = dep.port_health not in (None, dep.port)
            return w.actor.start_server.remote(
                list(dep.command), env, dep.workdir, python, separate, self.log_max_bytes, self.log_rate_bytes_s
            )
        argv, cwd = handler_command(dep, python)
        return w.actor.start.remote(argv, env, cwd, self.log_max_bytes, self.log_rate_bytes_s)

    def _set_upstream(self, w: _Worker, answer: dict[str, Any]) -> None:
        """A load-balancing worker's server listens on its node: the proxy and the health polls go there."""
        with self._lock:
            dep = self._endpoints[w.endpoint_id].deployment
        host = str(answer["address"])
        host = f"[{host}]" if ":" in host else host  # an IPv6 node address
        self.registry.set_upstream(
            w.worker_id, f"http://{host}:{answer['port']}", f"http://{host}:{answer['port_health']}{dep.health_path}"
        )

    def _take(self, w: _Worker, ref: Any, kind: str, now_s: float) -> None:
        """The answer to a start, report or stop call; an actor that died on the way means a lost worker."""
        try:
            answer = self._ray.get(ref, timeout=5)
        except self._ray.exceptions.RayActorError as exc:
            self._lost(w, now_s, f"its actor died ({type(exc).__name__})")
            return
        except Exception as exc:  # the start failed (no such handler file, an image not found, ...): a crash
            log.warning("worker %s: %s failed: %s", w.worker_id, kind, exc)
            cause = getattr(exc, "cause", None) or exc  # a RayTaskError carries the node's exception
            detail = str(cause).strip().splitlines()[-1][:300] if str(cause).strip() else type(cause).__name__
            self._crashed(w, now_s, None, f"its {kind} on the Ray node failed: {detail}")
            return
        if kind == "start":
            w.launched_s = now_s
            w.node_id = str(answer["node_id"])
            w.gpu_ids = tuple(int(g) for g in answer["gpu_ids"])
            w.container_id = answer.get("container_id")
            w.pull_s = answer.get("pull_s")
            self.registry.set_gpus(w.worker_id, w.gpu_ids)
            if answer.get("port") is not None:
                self._set_upstream(w, answer)
            if w.phase == "launching":
                w.phase = "up"
            where = f"container {str(w.container_id)[:12]}" if w.container_id else f"pid {answer['pid']}"
            log.info("worker %s runs on Ray node %s (%s, GPUs %s)", w.worker_id, w.node_id, where, w.gpu_ids)
            return
        self._absorb(w, answer)
        code = answer.get("exit_code")
        if kind == "stop":
            self._end(w, now_s)
            self._forget(w)
        elif code is not None:
            with self._lock:
                live = self.registry.get(w.worker_id)
            if code == 0 and live is not None and live.draining and live.state is not WorkerState.UNHEALTHY:
                self._end(w, now_s)
                self._forget(w)  # a clean exit after stopPod
            else:
                log.warning("worker %s exited (%s) by itself; last log lines:\n%s", w.worker_id, code, self._tail(w, 10))
                self._crashed(w, now_s, code)

    def _absorb(self, w: _Worker, answer: dict[str, Any]) -> None:
        data = answer.get("log") or b""
        if data:
            if w.log_path.exists() and w.log_path.stat().st_size + len(data) > self.log_max_bytes:
                os.replace(w.log_path, str(w.log_path) + ".1")
                w.log_marks.clear()
            with open(w.log_path, "ab") as f:
                f.write(data)
                size = f.tell()
            w.log_marks.append((time.time(), size))
        if w.report is None and answer.get("cold_start") is not None:
            w.report = StartReport.from_json(answer["cold_start"])

    # -- endings ----------------------------------------------------------------------------------

    def _crashed(self, w: _Worker, now_s: float, code: int | None, why: str | None = None) -> None:
        """The handler ended unasked: UNHEALTHY (the server requeues its jobs); back off the endpoint's next start."""
        with self._lock:
            state = self._endpoints.get(w.endpoint_id)
            if state is not None:
                state.crash_streak = crash_streak_after(state.crash_streak, now_s - w.requested_s)
                state.next_start_s = now_s + CRASH_BACKOFF.delay_s(state.crash_streak)
        w.exit_code = code
        self._end(w, now_s)
        w.phase = "exited"
        reason = why or (exit_reason(code) if code is not None else "its actor was killed")
        self.registry.set_state(w.worker_id, WorkerState.UNHEALTHY, now_s, reason=reason)

    def _lost(self, w: _Worker, now_s: float, why: str) -> None:
        """Ray says the worker's node or actor is gone: UNHEALTHY at once, so its jobs are requeued."""
        if w.phase in ("lost", "exited"):
            return
        log.warning("worker %s lost: %s", w.worker_id, why)
        if w.want_stop:
            self._end(w, now_s)
            self._forget(w)
            return
        self._end(w, now_s)
        w.phase = "lost"
        self.registry.set_state(w.worker_id, WorkerState.UNHEALTHY, now_s, reason=why)

    def _end(self, w: _Worker, now_s: float) -> None:
        """Keep its start record; free its Ray resources (the actor, the placement group)."""
        if w.ended_s is None:
            w.ended_s = now_s
            if not w.adopted:
                self.cold_starts.append(self._record(w))
        w.ref = None
        self._kill(w)
        if w.pg is not None:
            try:
                self._pg_api.remove_placement_group(w.pg)
            except Exception as exc:
                log.debug("removing the placement group of %s: %s", w.worker_id, exc)
            w.pg = None

    def _kill(self, w: _Worker) -> None:
        if w.actor is not None:
            try:
                self._ray.kill(w.actor, no_restart=True)  # the launcher then kills the handler
            except Exception as exc:
                log.debug("killing the actor of %s: %s", w.worker_id, exc)
            w.actor = None

    def _forget(self, w: _Worker) -> None:
        self._end(w, self._now())
        with self._lock:
            self._workers.pop(w.worker_id, None)
        self.registry.remove(w.worker_id)  # jobs it still held become orphans the server requeues

    # -- internals --------------------------------------------------------------------------------

    def _add(self, state: _Endpoint, now_s: float) -> None:
        dep = state.deployment
        worker_id = f"{dep.endpoint_id}-{uuid.uuid4().hex[:10]}"
        token = self.registry.add(worker_id, dep.endpoint_id, now_s, capacity=worker_capacity(dep), spec_version=dep.version)
        w = _Worker(worker_id, dep.endpoint_id, dep.version, token, now_s, self.logs_dir / f"{worker_id}.log")
        w.start_at_s = max(now_s, state.next_start_s)
        w.log_marks.append((time.time(), 0))
        w.log_path.touch(mode=0o600)
        self._workers[worker_id] = w

    def _bundle(self, w: _Worker) -> dict[str, float]:
        with self._lock:
            return worker_resources(self._endpoints[w.endpoint_id].deployment.spec)

    def _record(self, w: _Worker) -> ColdStartRecord:
        live = self.registry.get(w.worker_id)
        first_take_s = live.first_take_s if live is not None else None
        rec = ColdStartRecord.from_report(w.worker_id, w.endpoint_id, w.requested_s, w.report, gpu_ids=w.gpu_ids)

        def gap(a: float | None, b: float | None) -> float | None:
            return None if a is None or b is None else round(max(0.0, b - a), 4)

        return replace(
            rec,
            pull_s=w.pull_s,
            create_s=gap(w.requested_s, w.placed_s),
            start_s=gap(w.placed_s, w.launched_s),
            total_s=gap(w.requested_s, first_take_s),
        )

    def _log_path(self, worker_id: str) -> Path:
        with self._lock:
            w = self._workers.get(worker_id)
        path = w.log_path if w is not None else self.logs_dir / f"{worker_id}.log"
        if not path.is_file():
            raise NotFoundError(f"no worker {worker_id!r} (no log in {self.logs_dir})")
        return path

    def _running(self, worker_id: str) -> bool:
        with self._lock:
            w = self._workers.get(worker_id)
            return w is not None and w.phase in ("waiting", "placing", "launching", "up", "stopping")

    def _tail(self, w: _Worker, lines: int) -> str:
        try:
            with open(w.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(deque(f, maxlen=lines))
        except OSError:
            return ""


def _validate(dep: Deployment) -> None:
    """What a worker needs to start: a handler file (queue endpoint) or a server command (load balancer)."""
    if dep.image is not None:
        return  # a container: the image's command, or the handler file mounted into it as on the Docker backend
    if dep.spec.is_load_balancer:
        if not dep.command:
            raise ConfigError(
                "command", None, "is required by the ray backend for a load_balancer endpoint without an image (it starts your HTTP server)"
            )
    elif dep.handler_path is None:
        raise ConfigError("handler", None, "or image is required by the ray backend (a Python file calling serverless.start)")


def ray_backend_factory(address: str | None = None, **options: Any) -> Callable[..., RayBackend]:
    """A BackendFactory for `gpuserve.platform.Platform`: (registry, server_url, settings, clock, data_dir) -> RayBackend.

    Worker logs are copied to data_dir/logs; `options` are RayBackend's keyword arguments.
    """

    def make(registry: WorkerRegistry, server_url: str, settings: Any, clock: Any, data_dir: Path) -> RayBackend:
        kwargs: dict[str, Any] = {
            "address": address,
            "logs_dir": Path(data_dir) / "logs",
            "ping_interval_ms": int(settings.heartbeat_interval_s * 1000),
            "stop_grace_s": settings.drain_timeout_s,
            "clock": clock,
            # Its containers' label, as a Docker backend on the same data directory would name it.
            "namespace": namespace_for(Path(data_dir)),
            "adoptable": settings.adoptable_workers,
        }
        return RayBackend(server_url, registry, **{**kwargs, **options})

    return make
