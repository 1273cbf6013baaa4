"""Endpoint settings changed at run time: documents, dotted `--set` paths, and the replay of stored versions over endpoints.yaml.

Every endpoint has a settings document, the mapping endpoints.yaml holds under `endpoints:`
(`endpoint_doc` writes one for an endpoint built in code). A change is a set of dotted paths
(`scaling.max_workers`, `env.FOO`, `policy.params.target`, `image`) with new values, None to
remove a setting (its default applies; `env.FOO`: the variable is gone). Changes are validated by building the changed document with
the same pydantic models as the file (gpuserve.config.endpoints), stored with a version number
(`JobStore.record_change`) and replayed over the file at each start (`EndpointBook.replay`):

- a setting a stored change set keeps that value, whatever the file now says (the stored
  version wins); the file's other settings, edited or not, apply as written;
- an endpoint added at run time exists with its stored document; one removed at run time stays
  removed even if the file still declares it;
- a `reset` change forgets every earlier change of its endpoint: the file's settings again.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gpuserve.config.endpoints import build_endpoint, hash_key
from gpuserve.core.errors import ConfigError
from gpuserve.live.deployment import Deployment
from gpuserve.live.runtime import Endpoint
from gpuserve.store.base import EndpointChange

__all__ = ["FIXED", "EndpointBook", "Proposal", "describe", "endpoint_doc", "file_digest", "get_path", "parse_set", "set_path"]

# Settings that cannot change on a running endpoint, and why.
FIXED: dict[str, str] = {
    "id": "is the endpoint's name: add a new endpoint and remove this one instead",
    "type": "cannot change on a running endpoint: add a new endpoint and remove this one instead",
    "api_keys": "cannot change at run time (edit endpoints.yaml and restart)",
}
# Settings whose values are strings: `--set env.FOO=5` is the string "5", not the number 5.
_TEXT = ("env", "handler", "image", "workdir", "python", "sdk", "model_path", "health_path", "revision", "gpu_type", "id")


def endpoint_doc(dep: Deployment) -> dict[str, Any]:
    """The endpoints.yaml document that builds `dep` again (paths absolute, every setting explicit)."""
    spec = dep.spec
    s = spec.scaling
    doc: dict[str, Any] = {
        "id": spec.endpoint_id,
        "type": spec.kind.value,
        "handler": dep.handler_path,
        "image": dep.image,
        "sdk": dep.sdk,
        "env": dict(dep.env),
        "workdir": dep.workdir,
        "python": dep.python,
        "cpu_limit": dep.cpu_limit,
        "memory_limit_mib": dep.memory_limit_mib,
        "model_source": dep.model_source,
        "model_path": dep.model_path,
        "revision": dep.revision,
        "gpu_type": spec.gpu_type,
        "gpus_per_worker": spec.gpus_per_worker,
        "execution_timeout_s": spec.execution_timeout_s,
        "memory_gb": spec.memory_gb,
        "dispatch": spec.dispatch.value,
        "scaling": {
            "min_workers": s.min_workers,
            "max_workers": s.max_workers,
            "idle_timeout_s": s.idle_timeout_s,
            "scaler": s.scaler.value,
            "scaler_value": s.scaler_value,
            "flash_boot": s.flash_boot,
            "scale_to_zero_grace_s": s.scale_to_zero_grace_s,
            "extra_workers": s.extra_workers,
        },
        "policy": {"name": spec.policy.name, "params": dict(spec.policy.params)},
    }
    lb = spec.load_balancing
    if lb is not None:
        doc.update(
            command=list(dep.command) if dep.command is not None else None,
            port=dep.port,
            port_health=dep.port_health,
            health_path=dep.health_path,
            concurrency_target=lb.concurrency_target,
            max_concurrency=lb.max_concurrency,
            hold_timeout_s=lb.hold_timeout_s,
            request_timeout_s=lb.request_timeout_s,
        )
    else:
        doc["concurrency_per_worker"] = spec.concurrency_per_worker
    return {k: v for k, v in doc.items() if v is not None}


def parse_set(assignment: str) -> tuple[str, Any]:
    """`scaling.max_workers=5` -> ("scaling.max_workers", 5): a YAML value, a plain string for text settings."""
    path, sep, text = assignment.partition("=")
    path = path.strip()
    if not sep or not path:
        raise ConfigError("--set", assignment, "must look like SETTING=VALUE, e.g. scaling.max_workers=5")
    if path.split(".")[0] in _TEXT:
        return path, text
    try:
        return path, yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return path, text


def _parts(path: str) -> list[str]:
    parts = path.split(".")
    if any(not p for p in parts):
        raise ConfigError(path, path, "is not a setting path (dotted names like scaling.max_workers)")
    if parts[0] in FIXED:
        raise ConfigError(parts[0], path, FIXED[parts[0]])
    return parts


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path, None when absent."""
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted path in place; None removes the setting (its default applies)."""
    parts = _parts(path)
    if value is None:
        _delete(doc, parts)
        return
    node = doc
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(".".join(parts[: i + 1]), child, f"is not a mapping, so {path} cannot be set")
        node = child
    node[parts[-1]] = copy.deepcopy(value)


def _delete(doc: dict[str, Any], parts: list[str]) -> None:
    node: Any = doc
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def file_digest(path: str) -> str | None:
    """A handler file's content digest (a new one rolls the workers); None when it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    except OSError:
        return None


@dataclass(frozen=True)
class Proposal:
    """A validated change, not yet stored: the endpoint it builds and what it sets (with the values it replaces)."""

    endpoint: Endpoint
    fields: dict[str, Any]
    previous: dict[str, Any]
    doc: dict[str, Any]


class EndpointBook:
    """Each endpoint's current document, the file's (or the code's) as its origin, and the changes replayed over them."""

    def __init__(self, endpoints: Iterable[Endpoint], base_dir: Path | str = ".") -> None:
        self.base_dir = Path(base_dir).resolve()
        self._file: dict[str, dict[str, Any]] = {}  # what endpoints.yaml (or the code) says
        self._keys: dict[str, frozenset[str]] = {}
        self.docs: dict[str, dict[str, Any]] = {}  # the current documents, in serving order
        for e in endpoints:
            doc = endpoint_doc(e.deployment)
            self._file[e.endpoint_id] = doc
            self._keys[e.endpoint_id] = e.key_hashes
            self.docs[e.endpoint_id] = copy.deepcopy(doc)
        self.shadowed: list[str] = []  # settings of the file a stored change overrides, for the start-up log
        self.touched: set[str] = set()  # endpoints a stored change added, changed or removed

    # -- replay (at start) --------------------------------------------------------------------

    def replay(self, changes: Iterable[EndpointChange]) -> None:
        """Apply stored changes in order over the file's documents (the rule in this module's docstring)."""
        for change in changes:
            self._apply(change.endpoint_id, change.action, change.fields)
        for eid, doc in self.docs.items():
            file_doc = self._file.get(eid)
            if file_doc is None:
                continue
            for path in _leaves(doc):
                if path in _leaves(file_doc) and get_path(file_doc, path) != get_path(doc, path):
                    self.shadowed.append(f"{eid}.{path}")

    def _apply(self, eid: str, action: str, fields: Mapping[str, Any]) -> None:
        self.touched.add(eid)
        if action == "remove":
            self.docs.pop(eid, None)
        elif action == "add":
            self.docs[eid] = {k: copy.deepcopy(v) for k, v in fields.items() if v is not None}
        elif action == "reset":
            if eid in self._file:
                self.docs[eid] = copy.deepcopy(self._file[eid])
            else:
                self.docs.pop(eid, None)
        elif eid in self.docs:  # update (and deploy)
            for path, value in fields.items():
                set_path(self.docs[eid], path, value)

    def apply_stored(self, changes: Iterable[EndpointChange]) -> list[tuple[str, Endpoint | None]]:
        """Changes another server stored: applied here; each endpoint they touched as it is now (None: removed)."""
        touched: list[str] = []
        for change in changes:
            self._apply(change.endpoint_id, change.action, change.fields)
            if change.endpoint_id not in touched:
                touched.append(change.endpoint_id)
        return [(eid, self._build(eid, self.docs[eid]) if eid in self.docs else None) for eid in touched]

    def endpoints(self, given: Mapping[str, Endpoint] | None = None) -> list[Endpoint]:
        """Every current endpoint: those no change touched as `given`, the others built from their documents.

        A stored document this code no longer accepts fails here, naming the setting."""
        out = []
        for eid, doc in self.docs.items():
            if given is not None and eid in given and eid not in self.touched:
                out.append(given[eid])
                continue
            try:
                out.append(self._build(eid, doc))
            except ConfigError as exc:
                raise ConfigError(f"endpoints.{eid}.{exc.field}", exc.value, f"{exc.problem} (a stored run-time change)") from None
        return out

    def file_doc(self, eid: str) -> dict[str, Any] | None:
        """What endpoints.yaml (or the code) says for an endpoint, None when it does not declare it."""
        doc = self._file.get(eid)
        return copy.deepcopy(doc) if doc is not None else None

    def build(self, eid: str, doc: dict[str, Any]) -> Endpoint:
        """A document -> the endpoint it serves (ConfigError naming the setting)."""
        return self._build(eid, doc)

    def _build(self, eid: str, doc: dict[str, Any]) -> Endpoint:
        loaded = build_endpoint(doc, self.base_dir)
        keys = self._keys.get(eid, frozenset()) | loaded.key_hashes
        return Endpoint(loaded.deployment, keys)

    # -- proposals (at run time) ------------------------------------------------------------------

    def propose_update(self, eid: str, fields: Mapping[str, Any]) -> Proposal:
        """Validate setting `fields` on endpoint `eid`; raises ConfigError naming the setting and the value."""
        if not fields:
            raise ConfigError("set", {}, "names no setting to change")
        doc = copy.deepcopy(self.docs[eid])
        previous: dict[str, Any] = {}
        for path, value in fields.items():
            _parts(path)
            previous[path] = copy.deepcopy(get_path(doc, path))
            set_path(doc, path, value)
        return Proposal(self._build(eid, doc), dict(fields), previous, doc)

    def propose_add(self, raw: Mapping[str, Any]) -> Proposal:
        """Validate a new endpoint's document (as under `endpoints:`, with an `id`); its keys are kept as digests."""
        doc = {k: copy.deepcopy(v) for k, v in raw.items()}
        eid = doc.get("id")
        if not isinstance(eid, str) or not eid:
            raise ConfigError("id", eid, "is required: the new endpoint's name")
        if eid in self.docs:
            raise ConfigError("id", eid, "is taken: that endpoint exists (update it, or remove it first)")
        keys = doc.get("api_keys")
        if isinstance(keys, list) and all(isinstance(k, str) and k for k in keys):
            doc["api_keys"] = [f"sha256:{hash_key(k)}" for k in keys]  # never a raw key in the store
        loaded = build_endpoint(doc, self.base_dir)
        # Stored fully resolved, so a restart from another folder builds the same endpoint.
        stored = endpoint_doc(loaded.deployment)
        if "api_keys" in doc:
            stored["api_keys"] = doc["api_keys"]
        return Proposal(Endpoint(loaded.deployment, loaded.key_hashes), stored, {}, stored)

    def commit(self, eid: str, action: str, fields: Mapping[str, Any]) -> None:
        """A stored change: make it the current document."""
        self._apply(eid, action, fields)


def _leaves(doc: Mapping[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out |= _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


def describe(value: Any) -> str:
    """A value as the history shows it (JSON, short)."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
