"""`gpuserve serve` an endpoints.yaml, and `endpoints`, `run`, `logs` against a running server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gpuserve.cli.root import app, console, err_console, fail
from gpuserve.core.jobs import TERMINAL_STATUSES, JobStatus

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
    backend: Annotated[str, typer.Option("--backend", help="where workers run: process (local) or docker")] = "process",
) -> None:
    """Serve the Runpod-compatible API for the endpoints in CONFIG, scaling workers (processes or containers)."""
    from gpuserve.config.endpoints import load_endpoints
    from gpuserve.core.errors import GpuserveError
    from gpuserve.platform import Platform

    try:
        cfg = load_endpoints(config)
        try:
            platform = Platform.from_config(cfg, data_dir=data_dir, backend=backend, host=host, port=port, log_level=log_level)
        except OSError as exc:
            bind_host = host or cfg.server.host
            bind_port = cfg.server.port if port is None else port
            raise fail(f"cannot listen on {bind_host}:{bind_port} ({exc.strerror})") from None
        url = platform.url
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    open_eps = [e.spec.endpoint_id for e in cfg.endpoints if not (e.key_hashes or cfg.global_key_hashes)]
    console.print(f"[bold]gpuserve[/] serving {len(cfg.endpoints)} endpoint(s) at {url}  (API docs: {url}/docs)")
    for e in cfg.endpoints:
        s = e.spec.scaling
        console.print(
            f"  {e.spec.endpoint_id}: {e.deployment.handler_path or e.deployment.image}  "
            f"workers {s.min_workers}..{s.max_workers}, policy {e.spec.policy.name}"
        )
    if open_eps:
        console.print(f"[yellow]warning:[/] no API key protects {', '.join(open_eps)}; anyone who can reach {url} may use it")
    platform.serve_forever()


@app.command()
def endpoints(url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    """Show every endpoint of a running server: queue depth, job counts and worker states."""
    client = _Client(url, api_key)
    body = client.call("GET", "/api/endpoints")
    table = Table(title=f"endpoints at {client.url}")
    for col in ("endpoint", "policy", "workers min..max", "in queue", "in progress", "oldest wait s", "completed", "failed", "workers"):
        table.add_column(col, justify="right" if col not in ("endpoint", "policy", "workers") else "left")
    workers = Table(title="workers")
    for col in ("worker", "endpoint", "state", "jobs", "age s", "idle s"):
        workers.add_column(col)
    for ep in body["endpoints"]:
        states: dict[str, int] = {}
        for w in ep["workers"]:
            states[w["state"]] = states.get(w["state"], 0) + 1
            workers.add_row(w["id"], ep["id"], w["state"], f"{w['inFlight']}/{w['capacity']}", str(w["ageS"]), str(w["idleForS"]))
        table.add_row(
            ep["id"],
            ep["policy"],
            f"{ep['minWorkers']}..{ep['maxWorkers']}",
            str(ep["queue"]["inQueue"]),
            str(ep["queue"]["inProgress"]),
            f"{ep['queue']['oldestQueuedAgeS']:.1f}",
            str(ep["jobs"]["completed"]),
            str(ep["jobs"]["failed"]),
            ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "none",
        )
    console.print(table)
    if workers.row_count:
        console.print(workers)


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
    try:
        with err_console.status("IN_QUEUE") as spinner:
            while True:
                chunk_body = client.call("GET", f"/v2/{endpoint}/stream/{job_id}")
                for chunk in chunk_body.get("stream", []):
                    console.print_json(json.dumps(chunk.get("output")))
                status = client.call("GET", f"/v2/{endpoint}/status/{job_id}")
                spinner.update(f"{status['status']}" + (f" on {status['workerId']}" if status.get("workerId") else ""))
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


@app.command()
def logs(
    worker: Annotated[str, typer.Argument(help="worker id (see `gpuserve endpoints`)")],
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    tail: Annotated[int, typer.Option("--tail", help="last N lines")] = 200,
) -> None:
    """Print the last lines a worker wrote."""
    body = _Client(url, api_key).call("GET", f"/api/workers/{worker}/logs", params={"tail": tail})
    console.print(body["logs"], end="", markup=False, highlight=False)

