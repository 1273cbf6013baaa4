"""`gpuserve endpoints` (the table) and its commands against a running server: update, add, remove, reset, history (admin key)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from gpuserve.cli.live import KeyOpt, UrlOpt, _Client
from gpuserve.cli.root import app, console, fail

endpoints_app = typer.Typer(help="Endpoints of a running server: the table, and changes without a restart.", no_args_is_help=False)
app.add_typer(endpoints_app, name="endpoints")

AdminKeyOpt = Annotated[
    str | None, typer.Option("--api-key", help="an admin key (default $GPUSERVE_ADMIN_KEY, else $GPUSERVE_API_KEY)")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="SETTING=VALUE, e.g. scaling.max_workers=5, env.FOO=bar, policy.params.target=2 (repeatable)"),
]
UnsetOpt = Annotated[list[str] | None, typer.Option("--unset", help="remove a setting (its default applies), e.g. env.FOO (repeatable)")]
# Settings naming files: a relative path is taken from where the command runs (or the added file's folder).
_PATHS = ("handler", "workdir", "python")


def _admin(url: str | None, api_key: str | None) -> _Client:
    return _Client(url, api_key or os.environ.get("GPUSERVE_ADMIN_KEY"))


def _sets(assignments: list[str] | None, base: Path) -> dict[str, Any]:
    from gpuserve.config.updates import parse_set
    from gpuserve.core.errors import ConfigError

    out: dict[str, Any] = {}
    for assignment in assignments or []:
        try:
            path, value = parse_set(assignment)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        out[path] = _local_path(path, value, base)
    return out


def _local_path(setting: str, value: Any, base: Path) -> Any:
    """A handler (workdir, python) given relative to here, sent absolute: the server may run elsewhere."""
    if setting not in _PATHS or not isinstance(value, str) or not value or Path(value).is_absolute():
        return value
    if setting == "python" and "/" not in value:
        return value  # a command looked up on PATH
    return str((base / value).resolve())


@endpoints_app.callback(invoke_without_command=True)
def endpoints(
    ctx: typer.Context,
    url: UrlOpt = None,
    api_key: KeyOpt = None,
    wide: Annotated[bool, typer.Option("--wide", help="every column (policy, idle timeout, oldest wait, GPU-seconds), at any width")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="the server's answer as JSON, for scripts")] = False,
) -> None:
    """Show every endpoint of a running server: queue depth, job counts, cost so far and worker states."""
    if ctx.invoked_subcommand is not None:
        return
    from gpuserve.cli.tables import endpoint_tables

    # A client key shows its endpoints; the operator's admin key (next in line) shows every one.
    client = _Client(url, api_key or os.environ.get("GPUSERVE_API_KEY") or os.environ.get("GPUSERVE_ADMIN_KEY"))
    body = client.call("GET", "/api/endpoints")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    tables = endpoint_tables(body, f"endpoints at {client.url}", wide=wide)
    out = console
    if wide:  # no terminal width to fit: as wide as the widest table, so nothing wraps
        from rich.console import Console
        from rich.measure import Measurement

        widest = max(Measurement.get(console, console.options.update(width=10_000), t).maximum for t in tables)
        out = Console(width=max(widest, console.width), highlight=False)
    for table in tables:
        out.print(table)


def _print_change(body: dict[str, Any]) -> None:
    changed = ", ".join(f"{k}={v}" for k, v in body.get("changed", {}).items()) or "-"
    line = f"{body['id']}: version {body['version']} ({body['action']} by {body['by']}): {changed}"
    if body.get("previousWorkerVersion") and body.get("workerVersion") != body.get("previousWorkerVersion"):
        line += f"; workers {body['previousWorkerVersion']} -> {body['workerVersion']}, rolling update"
    elif body.get("action") == "update":
        line += "; applied, no worker replaced"
    console.print(line, highlight=False, markup=False, soft_wrap=True)


@endpoints_app.command()
def update(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint to change")],
    sets: SetOpt = None,
    unsets: UnsetOpt = None,
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Change a running endpoint (scaling, policy, env, image, handler): stored as a new version, no restart.

    Scaling and policy apply at once; a change to what workers run replaces them in a rolling update."""
    fields = _sets(sets, Path.cwd())
    if not fields and not unsets:
        raise fail("give at least one --set SETTING=VALUE or --unset SETTING")
    body = _admin(url, api_key).call("PATCH", f"/api/endpoints/{endpoint_id}", json={"set": fields, "unset": unsets or []})
    _print_change(body)


@endpoints_app.command()
def add(
    file: Annotated[Path | None, typer.Argument(help="YAML: one endpoint (as under `endpoints:`, with its id), or an endpoints file")] = None,
    sets: SetOpt = None,
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Add endpoints to a running server, from FILE and/or --set id=NAME --set handler=PATH ...; stored, so a restart keeps them."""
    docs: list[dict[str, Any]] = []
    if file is not None:
        docs = _read_docs(file)
    extra = _sets(sets, Path.cwd())
    if not docs:
        if not extra:
            raise fail("give a FILE or --set id=NAME --set handler=PATH (or image=TAG)")
        docs = [{}]
    from gpuserve.config.updates import set_path
    from gpuserve.core.errors import ConfigError

    client = _admin(url, api_key)
    for doc in docs:
        try:
            for path, value in extra.items():
                if path == "id":  # fixed on an existing endpoint, chosen for a new one
                    doc["id"] = value
                else:
                    set_path(doc, path, value)
        except ConfigError as exc:
            raise fail(str(exc)) from None
        _print_change(client.call("POST", "/api/endpoints", json={"endpoint": doc}))


def _read_docs(file: Path) -> list[dict[str, Any]]:
    import yaml

    from gpuserve.config.common import yaml_problem

    try:
        raw = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise fail(f"{file} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise fail(f"{file} {yaml_problem(exc)}") from None
    if isinstance(raw, dict) and "endpoints" in raw:
        items = raw["endpoints"]
        if isinstance(items, dict):
            items = [{"id": k, **(v or {})} for k, v in items.items()]
    else:
        items = [raw]
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise fail(f"{file} must hold one endpoint (a mapping with an id) or an `endpoints:` list, was {raw!r:.80}")
    base = file.resolve().parent
    return [{k: _local_path(k, v, base) for k, v in d.items()} for d in items]


@endpoints_app.command()
def remove(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint to remove")],
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Remove an endpoint from a running server: its queued jobs are deleted, its workers finish their jobs and stop."""
    body = _admin(url, api_key).call("DELETE", f"/api/endpoints/{endpoint_id}")
    console.print(
        f"{endpoint_id}: removed (version {body['version']}, by {body['by']}); "
        f"{body['queuedJobsDeleted']} queued job(s) deleted, its workers drain",
        highlight=False,
        markup=False,
    )


@endpoints_app.command()
def reset(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint to reset")],
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
) -> None:
    """Forget an endpoint's run-time changes: endpoints.yaml's settings again (one added at run time is removed)."""
    _print_change(_admin(url, api_key).call("POST", f"/api/endpoints/{endpoint_id}/reset"))


@endpoints_app.command()
def history(
    endpoint_id: Annotated[str, typer.Argument(help="endpoint")],
    url: UrlOpt = None,
    api_key: AdminKeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="the server's answer as JSON")] = False,
) -> None:
    """List an endpoint's stored changes: version, time, who (the admin key's name), what changed."""
    body = _admin(url, api_key).call("GET", f"/api/endpoints/{endpoint_id}/history")
    if as_json:
        typer.echo(json.dumps(body, indent=2))
        return
    versions = body["versions"]
    if not versions:
        console.print(f"{endpoint_id}: no changes since endpoints.yaml (version 0)", highlight=False)
        return
    for v in versions:
        when = datetime.fromtimestamp(v["atS"]).astimezone().isoformat(timespec="seconds")
        what = "; ".join(f"{c['setting']}: {c['from']} -> {c['to']}" for c in v["changes"]) or "-"
        console.print(f"v{v['version']}  {when}  {v['by']}  {v['action']}  {what}", highlight=False, markup=False, soft_wrap=True)
