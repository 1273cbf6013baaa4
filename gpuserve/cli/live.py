"""`gpuserve serve` an endpoints.yaml, and `run` against a running server (`endpoints`: cli/endpoints.py; `logs`, `exec`: cli/ops.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gpuserve.cli.root import app, console, err_console, fail
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus

if TYPE_CHECKING:
    from gpuserve.config.endpoints import ServeConfig
    from gpuserve.live.deployment import Deployment
    from gpuserve.platform import Platform

DEFAULT_URL = "http://127.0.0.1:8000"

UrlOpt = Annotated[str | None, typer.Option("--url", help=f"server URL (default $GPUSERVE_URL or {DEFAULT_URL})")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="client API key (default $GPUSERVE_API_KEY)")]


class _Client:
    """A thin httpx wrapper whose every failure becomes one readable line."""

    def __init__(self, url: str | None, api_key: str | None) -> None:
        import httpx

        self.url = (url or os.environ.get("GPUSERVE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or os.environ.get("GPUSERVE_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self._httpx = httpx

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kw)
        except self._httpx.ConnectError:
            raise fail(f"cannot reach the server at {self.url} (is `gpuserve serve` running?)") from None
        except self._httpx.HTTPError as exc:
            raise fail(f"request to {self.url}{path} failed: {exc}") from None
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text.strip()[:300]}
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise fail(f"HTTP {resp.status_code}: {message or body}")
        return body


@app.command()
def serve(
    config: Annotated[Path, typer.Argument(help="endpoints.yaml: the endpoints to serve")],
    host: Annotated[str | None, typer.Option("--host", help="bind address (default: the file's, else 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option("--port", help="port (default: the file's, else 8000; 0 picks one)")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="job store and worker logs (default: the file's)")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level")] = "info",
    backend: Annotated[str, typer.Option("--backend", help="where workers run: process (local), docker or ray (a Ray cluster)")] = "process",
    ray_address: Annotated[
        str | None, typer.Option("--ray-address", help="--backend ray: the Ray cluster's head, host:port (default $RAY_ADDRESS, else this machine's)")
    ] = None,
    container_gpus: Annotated[
        bool | None,
        typer.Option(
            "--container-gpus/--no-container-gpus",
            help="--backend ray, endpoints with an image: give each container the GPUs Ray reserved for it as NVIDIA "
            "devices (the default); --no-container-gpus gives it none, for a cluster whose GPUs are only declared to "
            "Ray (`ray start --num-gpus N` on hosts without them or without the NVIDIA container runtime, as "
            "scripts/multihost-demo.sh's), where asking Docker for them fails every container's start",
        ),
    ] = None,
    store: Annotated[
        str | None, typer.Option("--store", help="jobs in PostgreSQL: postgresql://user:pass@host/db (default: the file's, else SQLite in the data dir)")
    ] = None,
) -> None:
    """Serve the Runpod-compatible API for the endpoints in CONFIG, scaling workers (processes or containers)."""
    from gpuserve.config.endpoints import load_endpoints
    from gpuserve.core.errors import GpuserveError
    from gpuserve.platform import Platform

    if ray_address is not None and backend != "ray":
        raise fail(f"--ray-address is for --backend ray, not --backend {backend}")
    if container_gpus is not None and backend != "ray":
        flag = "--container-gpus" if container_gpus else "--no-container-gpus"
        raise fail(f"{flag} is for --backend ray, not --backend {backend}")
    try:
        cfg = load_endpoints(config)
        chosen: Any = backend
        if backend == "ray":
            from gpuserve.backends.ray_backend import ray_backend_factory

            options = {} if container_gpus is None else {"container_gpus": container_gpus}
            chosen = ray_backend_factory(ray_address, **options)
        try:
            platform = Platform.from_config(
                cfg, data_dir=data_dir, backend=chosen, host=host, port=port, log_level=log_level, store=store
            )
        except OSError as exc:
            bind_host = host or cfg.server.host
            bind_port = cfg.server.port if port is None else port
            raise fail(f"cannot listen on {bind_host}:{bind_port} ({exc.strerror})") from None
        url = platform.url
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    _preflight(platform, cfg, backend)
    serving = list(platform.runtime.endpoints.values())  # endpoints.yaml with the stored run-time changes
    open_eps = [e.endpoint_id for e in serving if not (e.key_hashes or cfg.global_key_hashes)]
    console.print(f"[bold]gpuserve[/] serving {len(serving)} endpoint(s) at {url}  (API docs: {url}/docs, dashboard: {url}/dashboard)")
    for e in serving:
        s = e.deployment.spec.scaling
        console.print(
            f"  {e.endpoint_id}: {_runs(e.deployment)}  "
            f"workers {s.min_workers}..{s.max_workers}, policy {e.deployment.spec.policy.name}"
        )
    if open_eps:
        console.print(f"[yellow]warning:[/] no API key protects {', '.join(open_eps)}; anyone who can reach {url} may use it")
    platform.serve_forever()


@app.command()
def run(
    endpoint: Annotated[str, typer.Argument(help="endpoint id")],
    payload: Annotated[str, typer.Argument(help='the request, e.g. \'{"input": {"prompt": "hi"}}\' (a bare object becomes the input)')],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="give up waiting after this many seconds")] = 600.0,
) -> None:
    """Submit a job and wait for it, printing streamed chunks and the output."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise fail(f"payload is not valid JSON ({exc.msg} at char {exc.pos}), was {payload[:80]!r}") from None
    if not isinstance(body, dict):
        raise fail(f"payload must be a JSON object, was {payload[:80]!r}")
    if "input" not in body:
        body = {"input": body}
    client = _Client(url, api_key)
    job = client.call("POST", f"/v2/{endpoint}/run", json=body)
    job_id = job["id"]
    err_console.print(f"job [bold]{job_id}[/] queued on {endpoint}", highlight=False)
    deadline = time.monotonic() + timeout_s
    status: dict[str, Any] = job
    shown = _Shown()
    try:
        with err_console.status("IN_QUEUE") as spinner:
            while True:
                chunk_body = client.call("GET", f"/v2/{endpoint}/stream/{job_id}")
                for chunk in chunk_body.get("stream", []):
                    console.print_json(json.dumps(chunk.get("output")))
                status = client.call("GET", f"/v2/{endpoint}/status/{job_id}")
                spinner.update(f"{status['status']}" + (f" on {status['workerId']}" if status.get("workerId") else ""))
                shown.progress(status)
                if waiting := shown.waiting(status):
                    spinner.update(f"IN_QUEUE: {waiting}")
                if status["status"] in TERMINAL_STATUSES:
                    break
                if time.monotonic() > deadline:
                    raise fail(f"job {job_id} still {status['status']} after {timeout_s:g} s (it keeps running)", 3)
                time.sleep(0.25)
            for chunk in client.call("GET", f"/v2/{endpoint}/stream/{job_id}").get("stream", []):
                console.print_json(json.dumps(chunk.get("output")))
    except KeyboardInterrupt:
        client.call("POST", f"/v2/{endpoint}/cancel/{job_id}")
        raise fail(f"interrupted: job {job_id} cancelled", 130) from None
    timing = f"queued {status.get('delayTime', 0)} ms, ran {status.get('executionTime', 0)} ms"
    if status["status"] == JobStatus.COMPLETED:
        if "output" in status:
            console.print_json(json.dumps(status["output"]))
        err_console.print(f"[green]COMPLETED[/] ({timing}, worker {status.get('workerId')})", highlight=False)
        return
    # Not fail(): the command worked and this is the job's outcome, so it prints the job's status (and its
    # handler's error verbatim) in place of "error:", and exits 1 where a CLI error exits 2.
    err_console.print(f"[red]{status['status']}[/] ({timing})", highlight=False)
    if status.get("error"):
        err_console.print(str(status["error"]), highlight=False, markup=False)
    raise typer.Exit(1)


class _Shown:
    """What `run` has printed of a job's progress and waiting, so each change is one stderr line (a pipe keeps them)."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._waiting_code: str | None = None

    def waiting(self, status: dict[str, Any]) -> str | None:
        """Why an IN_QUEUE job waits (the server's `waiting`), as text; a line on stderr each time the cause changes."""
        waiting = status.get("waiting")
        if status["status"] != JobStatus.IN_QUEUE or not isinstance(waiting, dict):
            return None
        text = f"{waiting.get('reason')} (position {waiting.get('position')})"
        # The cause, not its text: "3.2 s so far" changes every poll and would print a line per poll.
        if waiting.get("code") != self._waiting_code:
            self._waiting_code = waiting.get("code")
            err_console.print(f"waiting: {text}", highlight=False, markup=False, soft_wrap=True)
        return text

    def progress(self, status: dict[str, Any]) -> None:
        # IN_PROGRESS `output` is the handler's latest progress_update (Runpod's /status does the same).
        if status["status"] != JobStatus.IN_PROGRESS or "output" not in status or status["output"] == self._progress:
            return
        self._progress = status["output"]
        err_console.print(f"progress: {json.dumps(self._progress)}", highlight=False, markup=False, soft_wrap=True)


def _preflight(platform: Platform, cfg: ServeConfig, backend: str) -> None:
    """Refuse what the backend would refuse only once serving (a traceback after the banner): one line, exit 2.

    configure() again at start is a no-op for an unchanged deployment on every backend."""
    from gpuserve.core.errors import ConfigError, GpuserveError

    for e in platform.runtime.endpoints.values():  # the file's, with the stored run-time changes
        dep = e.deployment
        try:
            if backend == "process" and dep.handler_path is not None and dep.image is not None:
                # Docker runs the handler inside the image; processes would silently drop the image.
                raise ConfigError("image", dep.image, "is for the docker backend (--backend docker); set handler or image, not both")
            if backend == "process" and dep.image is not None and dep.handler_path is None and not dep.spec.is_load_balancer:
                raise ConfigError("image", dep.image, "needs --backend docker (the process backend runs a `handler:` file)")
            if platform.backend is not None:
                platform.backend.configure(dep)
        except GpuserveError as exc:
            platform.store.close()  # its lock on the data dir goes now, not at exit
            raise fail(f"endpoint {dep.endpoint_id!r}: {exc}") from None


def _runs(dep: Deployment) -> str:
    """What an endpoint's workers run, for the start-up banner."""
    if dep.spec.is_load_balancer:
        command = dep.command or ()
        what = dep.image or " ".join(command[2:] if command[:2] == ("/bin/sh", "-c") else command)
        return f"load_balancer ({what}), proxied at /lb/{dep.endpoint_id}/"
    return str(dep.handler_path or dep.image)
