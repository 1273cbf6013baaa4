"""`gpuserve init` writes a starter worker folder; `gpuserve validate` checks an endpoints.yaml or scenario.yaml."""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape

from gpuserve.cli.root import app, console, err_console, fail

__all__ = ["STARTER_FILES", "file_kind", "render_starter"]

# What `init` writes, each from templates/<name>.tmpl (str.format: {endpoint_id}, {api_key}, {admin_key}).
STARTER_FILES = ("handler.py", "test_input.json", "Dockerfile", "endpoints.yaml")

# Top-level keys only a scenario has, and only an endpoints.yaml has; `validate` tells the two apart by them.
_SCENARIO_KEYS = frozenset(
    {"name", "description", "duration_s", "seed", "replications", "consult_on_arrival", "drain_limit_s",
     "hosts", "trace", "azure_trace", "sweep"}
)
_ENDPOINTS_KEYS = frozenset({"server", "api_keys"})
_WORKER_KEYS = frozenset({"handler", "image", "command"})  # what a live endpoint runs; simulated ones run nothing

Kind = Literal["endpoints", "scenario"]


def render_starter(endpoint_id: str, api_key: str, admin_key: str) -> dict[str, str]:
    """The starter files' text by file name."""
    folder = resources.files("gpuserve.cli") / "templates"
    return {
        name: (folder / f"{name}.tmpl")
        .read_text(encoding="utf-8")
        .format(endpoint_id=endpoint_id, api_key=api_key, admin_key=admin_key)
        for name in STARTER_FILES
    }


def file_kind(raw: Any) -> Kind:
    """Whether a parsed YAML document is an endpoints.yaml (it serves) or a scenario (it simulates)."""
    if not isinstance(raw, dict):
        return "endpoints"  # either loader refuses a non-mapping; this one's message says what is expected
    keys = set(raw)
    if keys & _SCENARIO_KEYS:
        return "scenario"
    if keys & _ENDPOINTS_KEYS:
        return "endpoints"
    eps = raw.get("endpoints")
    bodies = list(eps.values()) if isinstance(eps, dict) else eps if isinstance(eps, list) else []
    if any(isinstance(b, dict) and set(b) & _WORKER_KEYS for b in bodies):
        return "endpoints"
    return "scenario"


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="where to write the files (created if missing)")] = Path("."),
    endpoint_id: Annotated[str, typer.Option("--id", help="the endpoint's id (default: the folder's name)")] = "",
    force: Annotated[bool, typer.Option("--force", help="overwrite files that exist")] = False,
) -> None:
    """Write a starter worker: handler.py, test_input.json, a Dockerfile and an endpoints.yaml that serves it."""
    from gpuserve.config.endpoints import parse_endpoints
    from gpuserve.core.errors import ConfigError

    folder = folder.resolve()
    eid = endpoint_id or _slug(folder.name)
    try:  # the id's rules live in the loader: ask it, so a bad --id is refused before anything is written
        parse_endpoints({"endpoints": [{"id": eid, "image": "check"}]})
    except ConfigError as exc:
        raise fail(f"--id {exc.problem}, was {eid!r}") from None
    existing = [n for n in STARTER_FILES if (folder / n).exists()]
    if existing and not force:
        raise fail(f"{folder} already has {', '.join(existing)} (--force overwrites)")
    # Fresh keys per project: the starter endpoint is never served unprotected, and its operator
    # routes (logs, exec, updates) work from the first start (without an admin key they would refuse).
    key = f"sk-{secrets.token_hex(12)}"
    admin_key = f"sk-admin-{secrets.token_hex(12)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in render_starter(eid, key, admin_key).items():
            (folder / name).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write into {folder} ({exc.strerror})") from None
    console.print(f"wrote {', '.join(STARTER_FILES)} in {folder}", highlight=False, soft_wrap=True)
    console.print(f"  test locally:  cd {folder} && python handler.py", highlight=False, soft_wrap=True)
    console.print(f"  serve:         gpuserve serve {folder / 'endpoints.yaml'}", highlight=False, soft_wrap=True)
    console.print(f"  call it:       gpuserve run {eid} '{{\"name\": \"you\"}}' --api-key {key}", highlight=False, soft_wrap=True)
    console.print(f"  operate it:    GPUSERVE_ADMIN_KEY={admin_key} gpuserve endpoints | logs | exec | endpoints update", highlight=False, soft_wrap=True)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="an endpoints.yaml or a scenario.yaml")],
    kind: Annotated[
        str | None, typer.Option("--kind", help="endpoints or scenario (default: told apart by its keys)")
    ] = None,
) -> None:
    """Check an endpoints.yaml or scenario.yaml without running it: OK, or the one-line error naming the field."""
    import yaml

    from gpuserve.config.common import yaml_problem
    from gpuserve.config.endpoints import load_endpoints
    from gpuserve.config.scenario import load_scenario
    from gpuserve.core.errors import GpuserveError

    if kind not in (None, "endpoints", "scenario"):
        raise fail(f"--kind must be 'endpoints' or 'scenario', was {kind!r}")
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"{file} cannot be read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise fail(f"{file} {yaml_problem(exc)}") from None
    what: Kind = file_kind(raw) if kind is None else "endpoints" if kind == "endpoints" else "scenario"
    try:
        if what == "endpoints":
            cfg = load_endpoints(file)
            detail = f"{len(cfg.endpoints)} endpoint(s): {', '.join(e.spec.endpoint_id for e in cfg.endpoints)}"
        else:
            scenario = load_scenario(file)
            sweep = f", sweeping {', '.join(scenario.sweep)}" if scenario.sweep else ""
            detail = f"{scenario.name!r}, {len(scenario.config.endpoints)} endpoint(s){sweep}"
            for warning in scenario.warnings:
                err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    except GpuserveError as exc:
        raise fail(f"{file} ({what}): {exc}") from None
    console.print(f"OK {file} ({what}, {detail})", highlight=False, soft_wrap=True)


def _slug(name: str) -> str:
    """A folder name as an endpoint id: letters, digits, `_.-`; `worker` when nothing is left."""
    kept = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name).strip("-._")
    return kept[:64] or "worker"
