"""Endpoint changes at run time, admin key only: update settings, add, remove, reset, deploy; each one a stored version.

Every change goes the same way: validated by building the changed document with endpoints.yaml's
models (gpuserve.config.updates), accepted by the backend (a handler that is not a file is refused
before anything changes), stored as the endpoint's next version (`JobStore.record_change`), then
applied to the running endpoint (`Runtime.set_endpoint` / `remove_endpoint`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gpuserve.config.updates import EndpointBook, Proposal, describe, file_digest
from gpuserve.core.errors import ConfigError
from gpuserve.live.auth import hash_token
from gpuserve.live.runtime import Runtime
from gpuserve.server.http import (
    ApiError,
    _bearer,
    admin_auth,
    endpoint_or_404,
    json_response,
    read_body,
    runtime_of,
)
from gpuserve.store.base import EndpointChange

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["operator"])

BODY_BYTES = 1024 * 1024
_LOCK = asyncio.Lock()  # one change at a time: each is numbered from the one before


def _book(request: Request) -> EndpointBook:
    book: EndpointBook | None = getattr(request.app.state, "book", None)
    if book is None:  # an app built without a Platform: the code's endpoints are the origin
        book = request.app.state.book = EndpointBook(runtime_of(request).endpoints.values())
    return book


def actor(rt: Runtime, request: Request) -> str:
    """Who made a change, as the history records it: the admin key's name, never the key."""
    key = _bearer(request)
    if not key:
        return "local (no admin keys)"
    digest = hash_token(key)
    return rt.admin_key_names.get(digest) or f"key sha256:{digest[:8]}"


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, BODY_BYTES, "api/endpoints")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ApiError(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, f"the body must be a JSON object, was {type(body).__name__}")
    return body


async def _accept(rt: Runtime, proposal: Proposal) -> None:
    """The backend takes the new deployment (off the event loop: it may probe an interpreter), or 422."""
    if rt.backend is None:
        return
    try:
        await asyncio.to_thread(rt.backend.configure, proposal.endpoint.deployment)
    except ConfigError as exc:
        raise ApiError(422, str(exc)) from None


async def _record(
    rt: Runtime, request: Request, eid: str, action: str, fields: dict[str, Any], previous: dict[str, Any]
) -> EndpointChange:
    try:
        change = await rt.io(rt.store.record_change, eid, action, fields, previous, actor(rt, request), time.time())
    except Exception as exc:
        raise ApiError(503, f"the change could not be stored ({exc}); nothing changed") from None
    rt.own_change(change.seq)  # applied here by the caller; other servers on a shared store pick it up
    return change


def _answer(change: EndpointChange, rt: Runtime, previous_version: str | None) -> Response:
    ep = rt.endpoints.get(change.endpoint_id)
    return json_response(
        {
            "id": change.endpoint_id,
            "version": change.version,
            "action": change.action,
            "by": change.actor,
            "changed": {k: describe(v) for k, v in change.fields.items()},
            "workerVersion": ep.deployment.version if ep is not None else None,
            "previousWorkerVersion": previous_version,
            "rolling": rt.rolling(change.endpoint_id),
        }
    )


async def _update(request: Request, endpoint_id: str, fields: dict[str, Any], action: str = "update") -> Response:
    rt = runtime_of(request)
    book = _book(request)
    async with _LOCK:
        old = endpoint_or_404(rt, endpoint_id)
        if endpoint_id not in book.docs:
            raise ApiError(404, f"endpoint {endpoint_id!r} has no settings document on this server")
        handler = fields.get("handler")
        if isinstance(handler, str) and "revision" not in fields:
            # The same file edited in place is a new version too: its content names the revision.
            fields = {**fields, "revision": file_digest(str(book.base_dir / handler))}
        try:
            proposal = book.propose_update(endpoint_id, fields)
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        await _accept(rt, proposal)
        try:
            change = await _record(rt, request, endpoint_id, action, proposal.fields, proposal.previous)
        except ApiError:
            if rt.backend is not None:  # put the backend back on what still runs
                await asyncio.to_thread(rt.backend.configure, old.deployment)
            raise
        book.commit(endpoint_id, action, proposal.fields)
        rt.set_endpoint(proposal.endpoint, configured=True)
    return _answer(change, rt, old.deployment.version)


@router.patch("/endpoints/{endpoint_id}", summary="Change a running endpoint's settings: a new stored version")
async def update(request: Request, endpoint_id: str) -> Response:
    """Body `{"set": {"scaling.max_workers": 5, "env.FOO": "bar"}, "unset": ["env.OLD"]}`.

    Scaling and policy changes apply at once; a change to what the workers run (handler, image,
    env) replaces them in a rolling update. Errors name the setting and the value (422).
    """
    rt = runtime_of(request)
    admin_auth(rt, request, "updating an endpoint")
    body = await _body(request)
    sets, unset = body.get("set", {}), body.get("unset", [])
    if not isinstance(sets, dict) or not all(isinstance(k, str) for k in sets):
        raise ApiError(422, f"set must be an object of setting paths to values, was {sets!r}")
    if not isinstance(unset, list) or not all(isinstance(k, str) for k in unset):
        raise ApiError(422, f"unset must be a list of setting paths, was {unset!r}")
    fields: dict[str, Any] = dict(sets)
    for path in unset:
        if path in fields:
            raise ApiError(422, f"{path} is both set and unset")
        fields[path] = None
    return await _update(request, endpoint_id, fields)


@router.post("/endpoints/{endpoint_id}/deploy", summary="Run a new image or handler file on an endpoint: a rolling update")
async def deploy(request: Request, endpoint_id: str) -> Response:
    """Body `{"image": TAG}` or `{"handler": PATH}`; a stored version like any update (`gpuserve endpoints history`)."""
    rt = runtime_of(request)
    endpoint_or_404(rt, endpoint_id)
    admin_auth(rt, request, "deploy")
    body = await _body(request)
    image, handler = body.get("image"), body.get("handler")
    if (image is None) == (handler is None):
        raise ApiError(422, f'give image or handler (one of them), as {{"image": "TAG"}}, was {body!r}')
    value = image if image is not None else handler
    name = "image" if image is not None else "handler"
    if not isinstance(value, str) or not value.strip():
        raise ApiError(422, f"{name} must be a non-empty string, was {value!r}")
    # The image's own command runs now, not a handler file from the host (and a handler needs no image).
    fields: dict[str, Any] = {"image": value.strip(), "handler": None} if name == "image" else {"handler": value.strip()}
    return await _update(request, endpoint_id, fields, action="deploy")


@router.post("/endpoints", summary="Add an endpoint to the running server: a stored version 1")
async def add(request: Request) -> Response:
    """Body `{"endpoint": {"id": "new", "handler": "/abs/handler.py", "scaling": {...}}}`, as under `endpoints:`."""
    rt = runtime_of(request)
    admin_auth(rt, request, "adding an endpoint")
    body = await _body(request)
    doc = body.get("endpoint")
    if not isinstance(doc, dict):
        raise ApiError(422, f"endpoint must be an object (as under `endpoints:` in endpoints.yaml), was {doc!r}")
    book = _book(request)
    async with _LOCK:
        try:
            proposal = book.propose_add(doc)
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        eid = proposal.endpoint.endpoint_id
        if eid in rt.endpoints:
            raise ApiError(409, f"id is taken: endpoint {eid!r} exists, was {eid!r}")
        await _accept(rt, proposal)
        change = await _record(rt, request, eid, "add", proposal.fields, {})
        book.commit(eid, "add", proposal.fields)
        rt.set_endpoint(proposal.endpoint, configured=True)
    return _answer(change, rt, None)


@router.delete("/endpoints/{endpoint_id}", summary="Remove an endpoint: queued jobs deleted, workers drain")
async def remove(request: Request, endpoint_id: str) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "removing an endpoint")
    book = _book(request)
    async with _LOCK:
        endpoint_or_404(rt, endpoint_id)
        change = await _record(rt, request, endpoint_id, "remove", {}, {})
        book.commit(endpoint_id, "remove", {})
        purged = rt.remove_endpoint(endpoint_id)
    return json_response(
        {"id": endpoint_id, "version": change.version, "action": "remove", "by": change.actor, "queuedJobsDeleted": purged}
    )


@router.post("/endpoints/{endpoint_id}/reset", summary="Forget an endpoint's stored changes: endpoints.yaml's settings again")
async def reset(request: Request, endpoint_id: str) -> Response:
    """A stored version too. An endpoint the file declares comes back as the file says (even one removed at
    run time); one it does not declare (added at run time) is removed."""
    rt = runtime_of(request)
    admin_auth(rt, request, "resetting an endpoint")
    book = _book(request)
    async with _LOCK:
        old = rt.endpoints.get(endpoint_id)
        doc = book.file_doc(endpoint_id)
        if doc is None:
            old = endpoint_or_404(rt, endpoint_id)
            change = await _record(rt, request, endpoint_id, "reset", {}, {})
            book.commit(endpoint_id, "reset", {})
            rt.remove_endpoint(endpoint_id)
            return _answer(change, rt, old.deployment.version)
        try:
            endpoint = book.build(endpoint_id, doc)
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
        await _accept(rt, Proposal(endpoint, {}, {}, doc))
        change = await _record(rt, request, endpoint_id, "reset", {}, {})
        book.commit(endpoint_id, "reset", {})
        rt.set_endpoint(endpoint, configured=True)
    return _answer(change, rt, old.deployment.version if old is not None else None)


@router.get("/endpoints/{endpoint_id}/history", summary="An endpoint's stored changes: version, time, who, what changed")
async def history(request: Request, endpoint_id: str) -> Response:
    rt = runtime_of(request)
    admin_auth(rt, request, "reading an endpoint's history")
    changes = await rt.io(rt.store.changes, endpoint_id)
    if not changes and endpoint_id not in rt.endpoints:
        raise ApiError(404, f"endpoint {endpoint_id!r} does not exist and has no history")
    return json_response(
        {
            "id": endpoint_id,
            "versions": [
                {
                    "version": c.version,
                    "atS": c.at_s,
                    "by": c.actor,
                    "action": c.action,
                    "changes": [
                        {"setting": k, "from": describe(c.previous.get(k)), "to": describe(v)} for k, v in c.fields.items()
                    ]
                    if c.action not in ("add", "reset")
                    else [{"setting": "(endpoint)", "from": "", "to": "added" if c.action == "add" else "endpoints.yaml's settings"}],
                }
                for c in changes
            ],
        }
    )
