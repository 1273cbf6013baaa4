"""`gpuserve logs` (a worker's or an endpoint's, tail, since, follow) and `gpuserve exec` against a running server, with an admin key."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Annotated, Any

import typer

from gpuserve.cli.root import app, err_console, fail

DEFAULT_URL = "http://127.0.0.1:8000"
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

UrlOpt = Annotated[str | None, typer.Option("--url", help=f"server URL (default $GPUSERVE_URL or {DEFAULT_URL})")]
AdminKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="an admin key (default $GPUSERVE_ADMIN_KEY, else $GPUSERVE_API_KEY)")
]


def since_seconds(text: str) -> float:
    """`--since 10m` -> 600.0: a number with s, m, h or d (seconds when bare)."""
    match = _SINCE.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise fail(f"--since must be a positive duration like 30s, 10m, 2h or 1d, was {text!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _connect(url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    base = (url or os.environ.get("GPUSERVE_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("GPUSERVE_ADMIN_KEY") or os.environ.get("GPUSERVE_API_KEY")
    return base, ({"Authorization": f"Bearer {key}"} if key else {})


def _refused(status: int, raw: bytes) -> typer.Exit:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = {"error": raw.decode(errors="replace").strip()[:300]}
    message = body.get("error") if isinstance(body, dict) else None
    return fail(f"HTTP {status}: {message or body}")


@app.command()
def logs(
    worker: Annotated[str | None, typer.Argument(help="worker id (see `gpuserve endpoints`); or --endpoint")] = None,
    endpoint: Annotated[str | None, typer.Option("--endpoint", help="every worker of this endpoint, each line prefixed with its worker id")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines until Ctrl-C (or the worker ends)")] = False,
    since: Annotated[str | None, typer.Option("--since", help="lines of the last 30s, 10m, 2h ... (in place of --tail)")] = None,
    tail: Annotated[int, typer.Option("--tail", help="last N lines (per worker)")] = 200,
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Print a worker's log as it was written (never re-wrapped), or all of an endpoint's workers' logs interleaved."""
    import httpx

    if (worker is None) == (endpoint is None):
        raise fail("give a WORKER id or --endpoint ID (one of them)")
    params: dict[str, Any] = {"tail": tail, "follow": follow}
    if since is not None:
        params["since_s"] = since_seconds(since)
    base, headers = _connect(url, api_key)
    path = f"/api/endpoints/{endpoint}/logs/stream" if endpoint is not None else f"/api/workers/{worker}/logs/stream"
    out = sys.stdout.buffer  # bytes as the worker wrote them: no console, so no wrapping or markup
    try:
        # No read timeout: a followed log may be quiet for long.
        with httpx.stream("GET", base + path, params=params, headers=headers, timeout=httpx.Timeout(30, read=None)) as resp:
            if resp.status_code >= 400:
                raise _refused(resp.status_code, resp.read())
            for chunk in resp.iter_raw():
                out.write(chunk)
                out.flush()
    except httpx.ConnectError:
        raise fail(f"cannot reach the server at {base} (is `gpuserve serve` running?)") from None
    except httpx.HTTPError as exc:
        raise fail(f"reading {base}{path} failed: {exc}") from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command(name="exec")
def exec_(
    worker: Annotated[str, typer.Argument(help="worker id (see `gpuserve endpoints`)")],
    command: Annotated[list[str], typer.Argument(help="the command and its arguments, after --")],
    timeout_s: Annotated[float, typer.Option("--timeout", help="stop waiting after this many seconds (at most 600)")] = 60.0,
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Run a command inside a worker (docker exec, or a process worker's directory and environment); exits with its code."""
    import httpx

    base, headers = _connect(url, api_key)
    try:
        resp = httpx.post(
            f"{base}/api/workers/{worker}/exec",
            json={"command": command, "timeoutS": timeout_s},
            headers=headers,
            timeout=timeout_s + 30,
        )
    except httpx.ConnectError:
        raise fail(f"cannot reach the server at {base} (is `gpuserve serve` running?)") from None
    except httpx.HTTPError as exc:
        raise fail(f"exec in {worker} failed: {exc}") from None
    if resp.status_code >= 400:
        raise _refused(resp.status_code, resp.content)
    body = resp.json()
    sys.stdout.write(body["output"])
    sys.stdout.flush()
    if body.get("truncated"):
        err_console.print("(output cut at 1 MiB)", highlight=False)
    if body["exitCode"] is None:
        err_console.print(f"[red]timed out[/] after {timeout_s:g} s: the command was killed", highlight=False)
        raise typer.Exit(124)
    raise typer.Exit(int(body["exitCode"]))
