"""endpoints.yaml -> validated Deployments, EndpointSpecs and hashed API keys; errors name the field path and value.

    server:                      # optional; CLI flags win
      host: 127.0.0.1
      port: 8000
      data_dir: .gpuserve        # relative to this file
      heartbeat_interval_s: 10   # workers ping this often; 3 missed pings = UNHEALTHY
      drain_timeout_s: 30        # SIGTERM: running jobs get this long, then are requeued
      webhook_allowed_networks: []  # CIDRs webhooks may reach besides public addresses (e.g. 10.0.0.0/8)
      webhook_attempts: 3        # tries per webhook (Runpod: one POST and two retries) ...
      webhook_retry_delay_s: 10  # ... this far apart; pending retries survive a restart
      admin_keys: [sk-ops]       # operator routes only: deploy, update, logs, exec, dashboard (raw, "sha256:<hex digest>", or {name: alice, key: sk-...})
      metrics_auth: none         # or admin: /metrics takes an admin key
      limits:                    # what a client can hold (README "Limits"); null switches one off
        max_run_bytes: 10000000  # /run body (10 MB, decimal, as Runpod documents it); /runsync: 20000000
        max_header_bytes: 65536  # request line + headers (431); max_headers: 100
        header_timeout_s: 10     # headers must arrive within this (408); body_timeout_s: 30 (a pause in a body)
        max_connections_per_client: 512   # per client address (429); max_connections: 4096 in all (503)
        max_queued_jobs: null    # per endpoint (429); null: Runpod's rule, max(50, 500 x max_workers)
        max_body_bytes_in_flight: 200000000  # /run and /runsync bodies being received at once (503)
        max_payload_bytes_in_memory: 100000000  # job inputs, outputs and stream chunks held in memory; the rest read from disk
        spill_payload_bytes: 100000  # an input or output larger than this is always left on disk
      rate_limits:               # per API key and endpoint (429 + Retry-After); defaults: Runpod's table
        runsync: {per_10s: 2000, concurrent: 400}   # also run, status (with stream), cancel, purge-queue
    api_keys: [sk-all]           # client keys valid for every endpoint (raw, or "sha256:<hex digest>")
    billing:                     # optional; what `gpuserve endpoints` and /api/endpoints/{id}/cost report
      preset: runpod             # as in a scenario: runpod, runpod_state_table, always_on, aws_lambda
      prices_usd_per_gpu_s: {A100: 0.00076, cpu: 0.00002}
    endpoints:
      - id: echo
        handler: examples/echo/handler.py   # or image: my-worker:latest
        sdk: gpuserve                       # or runpod (the handler does `import runpod`)
        python: .venv/bin/python            # optional: the worker's interpreter (process backend)
        env: {MODEL: tiny}
        concurrency_per_worker: 1
        execution_timeout_s: 600
        scaling: {min_workers: 0, max_workers: 3, idle_timeout_s: 5, scaler: request_count, scaler_value: 1}
        policy: {name: runpod_request_count, params: {}}
        api_keys: [sk-echo]
      - id: chat                            # a load-balancing endpoint: HTTP straight to the worker's server
        type: load_balancer
        command: uvicorn app:app --host 127.0.0.1 --port $PORT   # or a list of strings; or image: my-server
        workdir: examples/lb_fastapi
        port: 80                            # in a container (the process backend picks a free local port)
        port_health: 80                     # default: port
        health_path: /ping                  # 200 ready, 204 initializing, anything else unhealthy
        concurrency_target: 1               # in-flight requests per worker the autoscaler aims for
        max_concurrency: 4                  # a worker never gets more in flight than this
        hold_timeout_s: 120                 # no worker has room: hold this long, then 503
        request_timeout_s: 330              # a request running longer gets 504
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpuserve.config.common import (
    BillingConfig,
    EndpointFields,
    billing_model,
    endpoint_spec,
    known_fields,
    yaml_problem,
)
from gpuserve.core.billing import BillingModel
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointKind, EndpointSpec
from gpuserve.live.auth import hash_token
from gpuserve.live.deployment import Deployment

__all__ = [
    "EndpointModel",
    "LimitsSection",
    "LoadedEndpoint",
    "RouteLimitModel",
    "ServeConfig",
    "ServerSection",
    "build_endpoint",
    "hash_key",
    "load_endpoints",
    "parse_endpoints",
]

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HASHED = re.compile(r"^sha256:[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """API keys are kept as SHA-256 digests; `sha256:<hex>` entries are taken as already hashed."""
    return key[len("sha256:") :] if _HASHED.match(key) else hash_token(key)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EndpointModel(EndpointFields):
    id: str
    handler: str | None = None
    image: str | None = None
    sdk: Literal["gpuserve", "runpod"] = "gpuserve"
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    python: str | None = None  # process backend: the worker's interpreter (a path, or a command on PATH)
    api_keys: list[str] = Field(default_factory=list)
    cpu_limit: Annotated[float | None, Field(gt=0)] = None
    memory_limit_mib: Annotated[int | None, Field(gt=0)] = None
    model_source: Literal["none", "host_cache", "baked", "volume"] = "none"
    model_path: str | None = None
    # Load-balancing endpoints only (`type: load_balancer`).
    command: list[str] | str | None = None
    port: Annotated[int | None, Field(ge=1, le=65535)] = None
    port_health: Annotated[int | None, Field(ge=1, le=65535)] = None
    health_path: str | None = None
    revision: str | None = None  # any label: a new one replaces the workers (a rolling update)

    @field_validator("command")
    @classmethod
    def _command_nonempty(cls, v: list[str] | str | None) -> list[str] | str | None:
        if v is not None and (not v or (isinstance(v, list) and any(not part for part in v)) or not str(v).strip()):
            raise ValueError("cannot be empty (the command that starts your HTTP server)")
        return v

    @field_validator("health_path")
    @classmethod
    def _health_path_shape(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("must start with '/'")
        return v

    @field_validator("id")
    @classmethod
    def _id_shape(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
        return v

    @field_validator("api_keys")
    @classmethod
    def _keys_nonempty(cls, v: list[str]) -> list[str]:
        if any(not k for k in v):
            raise ValueError("cannot contain an empty key")
        return v


class AdminKeyModel(_Model):
    """An admin key with the name the endpoint history records for its changes (never the key)."""

    name: Annotated[str, Field(min_length=1)]
    key: Annotated[str, Field(min_length=1)]


_Count = Annotated[int, Field(ge=1)]
_Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class LimitsSection(_Model):
    """`server.limits`: the defaults are gpuserve.server.limits.HttpLimits's (a test holds them equal)."""

    max_run_bytes: _Count = 10_000_000
    max_runsync_bytes: _Count = 20_000_000
    max_header_bytes: _Count | None = 64 * 1024
    max_headers: _Count | None = 100
    header_timeout_s: _Seconds | None = 10.0
    body_timeout_s: _Seconds | None = 30.0
    max_connections_per_client: _Count | None = 512
    max_connections: _Count | None = 4096
    max_queued_jobs: _Count | None = None
    max_body_bytes_in_flight: _Count | None = 200_000_000
    max_payload_bytes_in_memory: Annotated[int, Field(ge=0)] | None = 100_000_000
    spill_payload_bytes: Annotated[int, Field(ge=0)] | None = 100_000


class RouteLimitModel(_Model):
    """One entry of `server.rate_limits`: requests per 10 s and in flight at once, per API key."""

    per_10s: _Count | None = None
    concurrent: _Count | None = None


class ServerSection(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    data_dir: str = ".gpuserve"
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 10.0
    max_retries: Annotated[int, Field(ge=0)] = 3
    # Runpod's account-wide worker limit across endpoints (5 at the default balance); null: none.
    account_max_workers: Annotated[int, Field(ge=0)] | None = 5
    poll_timeout_s: Annotated[float, Field(gt=0, le=60)] = 20.0
    drain_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    webhook_allowed_networks: list[str] = Field(default_factory=list)  # CIDRs webhooks may reach besides public addresses
    webhook_attempts: Annotated[int, Field(ge=1)] = 3
    webhook_retry_delay_s: Annotated[float, Field(ge=0)] = 10.0
    store: str | None = None  # a postgresql:// URL; absent: SQLite in data_dir
    worker_url: str | None = None  # what workers call (a proxy any replica answers behind); absent: this server
    # The operator routes' keys (raw, "sha256:<hex>", or {name, key}); see README "Keys and roles".
    admin_keys: list[str | AdminKeyModel] = Field(default_factory=list)
    metrics_auth: Literal["admin", "none"] = "none"  # admin: /metrics takes an admin key
    limits: LimitsSection = Field(default_factory=lambda: LimitsSection())
    # A route group's entry replaces Runpod's for it; null: that group unlimited.
    rate_limits: dict[Literal["run", "runsync", "status", "cancel", "purge-queue"], RouteLimitModel | None] = Field(
        default_factory=dict
    )

    @field_validator("admin_keys")
    @classmethod
    def _admin_keys_nonempty(cls, v: list[str | AdminKeyModel]) -> list[str | AdminKeyModel]:
        if any(not k for k in v if isinstance(k, str)):
            raise ValueError("cannot contain an empty key")
        return v

    @field_validator("worker_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (leave it out for this server's own address)")
        return value

    @field_validator("store")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a postgresql:// URL (leave it out for SQLite in the data directory)")
        return value


class FileModel(_Model):
    server: ServerSection = Field(default_factory=lambda: ServerSection())
    api_keys: list[str] = Field(default_factory=list)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    endpoints: list[EndpointModel] | dict[str, dict[str, Any]]


@dataclass(frozen=True)
class LoadedEndpoint:
    deployment: Deployment
    key_hashes: frozenset[str]

    @property
    def spec(self) -> EndpointSpec:
        return self.deployment.spec


@dataclass(frozen=True)
class ServeConfig:
    endpoints: tuple[LoadedEndpoint, ...]
    server: ServerSection
    global_key_hashes: frozenset[str]
    base_dir: Path
    billing: BillingModel = field(default_factory=BillingModel)
    admin_key_hashes: frozenset[str] = frozenset()  # server.admin_keys
    # digest -> the name the endpoint history records: {name, key} entries' names, else "admin_keys[i]"
    admin_key_names: dict[str, str] = field(default_factory=dict)

    def endpoint(self, endpoint_id: str) -> LoadedEndpoint | None:
        return next((e for e in self.endpoints if e.spec.endpoint_id == endpoint_id), None)

    def data_dir(self) -> Path:
        path = Path(self.server.data_dir)
        return path if path.is_absolute() else self.base_dir / path


def _loc(parts: tuple[int | str, ...], prefix: str = "") -> str:
    out = prefix
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _raise_pydantic(exc: ValidationError, prefix: str = "", root: type[BaseModel] | None = None) -> None:
    errors = exc.errors()
    # A misspelt setting is reported as unknown (listing the valid names) before the one it was meant to be as missing.
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if p not in ("list[EndpointModel]", "dict[str,dict[str,any]]"))
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = f"is not a known setting (known: {', '.join(known_fields(root or FileModel, loc))})"
    raise ConfigError(_loc(loc, prefix) or "endpoints file", err.get("input"), msg) from None


def _resolve(path: str | None, base_dir: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base_dir / p).resolve())


def _interpreter(python: str | None, base_dir: Path) -> str | None:
    """A path is taken relative to the file but not resolved: a venv's python is a symlink that must stay one."""
    if python is None or "/" not in python:
        return python  # None, or a command looked up on PATH
    p = Path(python).expanduser()
    return str(p if p.is_absolute() else base_dir / p)


_LB_ONLY = ("command", "port", "port_health", "health_path")


def _command(command: list[str] | str | None) -> tuple[str, ...] | None:
    """A list is the argv; a string is run by /bin/sh, so `$PORT` expands."""
    if command is None:
        return None
    return tuple(command) if isinstance(command, list) else ("/bin/sh", "-c", command)


def _build_lb(model: EndpointModel, where: str, base_dir: Path) -> LoadedEndpoint:
    if model.handler is not None:
        raise ConfigError(
            f"{where}.handler", model.handler, "is for queue endpoints; a load_balancer endpoint runs `command` or `image`"
        )
    if model.command is None and model.image is None:
        raise ConfigError(f"{where}.command", None, "or image is required for a load_balancer endpoint")
    spec = endpoint_spec(model.id, model, where, base_dir)
    port = 80 if model.port is None else model.port
    deployment = Deployment(
        spec=spec,
        image=model.image,
        env=model.env,
        workdir=_resolve(model.workdir, base_dir) if model.workdir is not None else str(base_dir),
        python=_interpreter(model.python, base_dir),
        cpu_limit=model.cpu_limit,
        memory_limit_mib=model.memory_limit_mib,
        model_source=model.model_source,
        model_path=model.model_path,
        command=_command(model.command),
        port=port,
        port_health=model.port_health,
        health_path=model.health_path or "/ping",
        revision=model.revision,
    )
    return LoadedEndpoint(deployment=deployment, key_hashes=frozenset(hash_key(k) for k in model.api_keys))


def _build(model: EndpointModel, where: str, base_dir: Path) -> LoadedEndpoint:
    if model.type is EndpointKind.LOAD_BALANCER:
        return _build_lb(model, where, base_dir)
    for name in _LB_ONLY:
        if getattr(model, name) is not None:
            raise ConfigError(f"{where}.{name}", getattr(model, name), "applies only to `type: load_balancer` endpoints")
    if model.handler is None and model.image is None:
        raise ConfigError(f"{where}.handler", None, "or image is required")
    if model.handler is not None and model.image is None:
        handler = _resolve(model.handler, base_dir)
        assert handler is not None
        if not Path(handler).is_file():
            raise ConfigError(f"{where}.handler", model.handler, f"is not a file (looked at {handler})")
    else:
        handler = _resolve(model.handler, base_dir)
    spec = endpoint_spec(model.id, model, where, base_dir)
    deployment = Deployment(
        spec=spec,
        handler_path=handler,
        image=model.image,
        env=model.env,
        sdk=model.sdk,
        workdir=_resolve(model.workdir, base_dir),
        python=_interpreter(model.python, base_dir),
        cpu_limit=model.cpu_limit,
        memory_limit_mib=model.memory_limit_mib,
        model_source=model.model_source,
        model_path=model.model_path,
        revision=model.revision,
    )
    return LoadedEndpoint(deployment=deployment, key_hashes=frozenset(hash_key(k) for k in model.api_keys))


def build_endpoint(raw: dict[str, Any], base_dir: Path | str = ".") -> LoadedEndpoint:
    """One endpoint's document (as under `endpoints:`, with its `id`) -> a LoadedEndpoint; errors name the setting as written."""
    try:
        model = EndpointModel.model_validate(raw)
    except ValidationError as exc:
        _raise_pydantic(exc, "", EndpointModel)
        raise  # unreachable
    try:
        return _build(model, "", Path(base_dir).resolve())
    except ConfigError as exc:
        raise ConfigError(exc.field.lstrip("."), exc.value, exc.problem) from None


def parse_endpoints(raw: Any, base_dir: Path | str = ".") -> ServeConfig:
    """Validate a parsed endpoints document (a dict) into a ServeConfig."""
    base = Path(base_dir).resolve()
    if not isinstance(raw, dict):
        raise ConfigError("endpoints file", raw, "must be a mapping with an `endpoints` key")
    try:
        doc = FileModel.model_validate(raw)
    except ValidationError as exc:
        _raise_pydantic(exc)
        raise  # unreachable
    loaded: list[LoadedEndpoint] = []
    if isinstance(doc.endpoints, dict):
        items: list[tuple[str, EndpointModel]] = []
        for name, body in doc.endpoints.items():
            where = f"endpoints.{name}"
            if not isinstance(body, dict):
                raise ConfigError(where, body, "must be a mapping")
            try:
                items.append((where, EndpointModel.model_validate({"id": name, **body})))
            except ValidationError as exc:
                _raise_pydantic(exc, where, EndpointModel)
    else:
        items = [(f"endpoints[{i}]", m) for i, m in enumerate(doc.endpoints)]
    if not items:
        raise ConfigError("endpoints", raw.get("endpoints"), "must declare at least one endpoint")
    seen: set[str] = set()
    wheres: list[str] = []
    for where, model in items:
        if model.id in seen:
            raise ConfigError(f"{where}.id", model.id, "is declared twice")
        seen.add(model.id)
        loaded.append(_build(model, where, base))
        wheres.append(where)
    billing = billing_model(doc.billing, [(w, e.spec) for w, e in zip(wheres, loaded, strict=True)])
    if any(not k for k in doc.api_keys):
        raise ConfigError("api_keys", doc.api_keys, "cannot contain an empty key")
    return ServeConfig(
        endpoints=tuple(loaded),
        server=doc.server,
        global_key_hashes=frozenset(hash_key(k) for k in doc.api_keys),
        admin_key_hashes=frozenset(hash_key(_key_of(k)) for k in doc.server.admin_keys),
        admin_key_names=_key_names(doc),
        base_dir=base,
        billing=billing,
    )


def _key_of(entry: str | AdminKeyModel) -> str:
    return entry if isinstance(entry, str) else entry.key


def _key_names(doc: FileModel) -> dict[str, str]:
    """What the history calls each admin key: its name, else its place in the file (never the key)."""
    names = {hash_key(k): f"api_keys[{i}]" for i, k in enumerate(doc.api_keys)}  # admins when admin_keys is empty
    for i, entry in enumerate(doc.server.admin_keys):
        names[hash_key(_key_of(entry))] = entry.name if isinstance(entry, AdminKeyModel) else f"admin_keys[{i}]"
    return names


def load_endpoints(path: str | Path) -> ServeConfig:
    """Read and validate an endpoints.yaml file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError("endpoints file", str(p), f"cannot be read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("endpoints file", str(p), yaml_problem(exc)) from None
    return parse_endpoints(raw, p.parent)
