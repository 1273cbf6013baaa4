"""endpoints.yaml -> validated Deployments, EndpointSpecs and hashed API keys; errors name the field path and value.

    server:                      # optional; CLI flags win
      host: 127.0.0.1
      port: 8000
      data_dir: .gpuserve        # relative to this file
      heartbeat_interval_s: 10   # workers ping this often; 3 missed pings = UNHEALTHY
      drain_timeout_s: 30        # SIGTERM: running jobs get this long, then are requeued
    api_keys: [sk-admin]         # valid for every endpoint (raw, or "sha256:<hex digest>")
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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gpuserve.config.common import EndpointFields, endpoint_spec
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSpec
from gpuserve.live.auth import hash_token
from gpuserve.live.deployment import Deployment

__all__ = ["LoadedEndpoint", "ServeConfig", "ServerSection", "hash_key", "load_endpoints", "parse_endpoints"]

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


class ServerSection(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    data_dir: str = ".gpuserve"
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 10.0
    max_retries: Annotated[int, Field(ge=0)] = 3
    poll_timeout_s: Annotated[float, Field(gt=0, le=60)] = 20.0
    drain_timeout_s: Annotated[float, Field(gt=0)] = 30.0


class FileModel(_Model):
    server: ServerSection = Field(default_factory=lambda: ServerSection())
    api_keys: list[str] = Field(default_factory=list)
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


def _raise_pydantic(exc: ValidationError, prefix: str = "") -> None:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if p not in ("list[EndpointModel]", "dict[str,dict[str,any]]"))
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "is not a known setting"
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


def _build(model: EndpointModel, where: str, base_dir: Path) -> LoadedEndpoint:
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
    )
    return LoadedEndpoint(deployment=deployment, key_hashes=frozenset(hash_key(k) for k in model.api_keys))


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
                _raise_pydantic(exc, where)
    else:
        items = [(f"endpoints[{i}]", m) for i, m in enumerate(doc.endpoints)]
    if not items:
        raise ConfigError("endpoints", raw.get("endpoints"), "must declare at least one endpoint")
    seen: set[str] = set()
    for where, model in items:
        if model.id in seen:
            raise ConfigError(f"{where}.id", model.id, "is declared twice")
        seen.add(model.id)
        loaded.append(_build(model, where, base))
    if any(not k for k in doc.api_keys):
        raise ConfigError("api_keys", doc.api_keys, "cannot contain an empty key")
    return ServeConfig(
        endpoints=tuple(loaded),
        server=doc.server,
        global_key_hashes=frozenset(hash_key(k) for k in doc.api_keys),
        base_dir=base,
    )


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
        raise ConfigError("endpoints file", str(p), f"is not valid YAML ({exc})") from None
    return parse_endpoints(raw, p.parent)
