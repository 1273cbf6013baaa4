"""Operator routes for the CLI: endpoints with worker states and queue depth, a worker's logs, deploying an image."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gpuserve.core.errors import ConfigError
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.server.http import ApiError, client_auth, endpoint_or_404, json_response, runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["operator"])


def _visible(rt: Runtime, request: Request) -> list[str]:
    """Endpoints the caller's key opens (every endpoint with no keys is open)."""
    visible = []
    for eid, ep in rt.endpoints.items():
        try:
            client_auth(rt, ep, request)
        except ApiError:
            continue
        visible.append(eid)
    if not visible:
        raise ApiError(401, "missing or invalid API key (it opens no endpoint)")
    return visible


@router.get("/endpoints", summary="Every endpoint the key opens: scaling, queue depth and worker states")
async def endpoints(request: Request) -> Response:
    rt = runtime_of(request)
    now = rt.clock.now_s()
    out: list[dict[str, Any]] = []
    for eid in _visible(rt, request):
        spec = rt.endpoints[eid].deployment.spec
        stats = rt.store.stats(eid, now)
        last = rt.controller.last_step(eid) if rt.controller is not None else None
        out.append(
            {
                "id": eid,
                "policy": spec.policy.name,
                "minWorkers": spec.scaling.min_workers,
                "maxWorkers": spec.scaling.max_workers,
                "idleTimeoutS": spec.scaling.idle_timeout_s,
                "queue": {
                    "inQueue": stats.in_queue,
                    "inProgress": stats.in_progress,
                    "oldestQueuedAgeS": round(stats.oldest_queued_age_s, 3),
                },
                "jobs": rt.store.health(eid),
                "workers": [
                    {
                        "id": w.worker_id,
                        "state": w.state.value,
                        "inFlight": w.in_flight,
                        "capacity": w.capacity,
                        "ageS": round(max(0.0, now - w.created_s), 1),
                        "idleForS": round(w.idle_for_s(now), 1),
                    }
                    for w in rt.worker_views(eid)
                ],
                "lastDecision": last.decision.reason if last is not None else None,
            }
        )
    return json_response({"endpoints": out})


@router.get("/workers/{worker_id}/logs", summary="The last lines a worker wrote (stdout and stderr)")
async def worker_logs(request: Request, worker_id: str, tail: int = 200) -> Response:
    rt = runtime_of(request)
    if tail < 1:
        raise ApiError(422, f"tail must be at least 1, was {tail}")
    visible = _visible(rt, request)
    worker = rt.registry.get(worker_id)
    if worker is not None and worker.endpoint_id not in visible:
        raise ApiError(401, f"the API key does not open endpoint {worker.endpoint_id!r} of worker {worker_id!r}")
    if rt.backend is None:
        raise ApiError(404, "this server runs no backend, so it keeps no worker logs")
    try:
        text = rt.backend.logs(worker_id, tail)
    except LookupError as exc:
        raise ApiError(404, f"worker {worker_id!r} is unknown ({exc})") from None
    return json_response({"workerId": worker_id, "logs": text})


@router.post("/endpoints/{endpoint_id}/deploy", summary="Run a new image on an endpoint: a rolling update")
async def deploy(request: Request, endpoint_id: str) -> Response:
    """Body `{"image": TAG}`. Running workers turn OUTDATED, finish their job and are replaced on TAG."""
    rt = runtime_of(request)
    ep = endpoint_or_404(rt, endpoint_id)
    client_auth(rt, ep, request)
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ApiError(400, "the body must be JSON like {\"image\": \"TAG\"}") from None
    image = body.get("image") if isinstance(body, dict) else None
    if not isinstance(image, str) or not image.strip():
        raise ApiError(422, f"image must be a non-empty string, was {image!r}")
    # The image's own command runs now, not a handler file from the host.
    new = dataclasses.replace(ep.deployment, image=image.strip(), handler_path=None)
    if rt.backend is not None:
        try:
            rt.backend.configure(new)
        except ConfigError as exc:
            raise ApiError(422, str(exc)) from None
    rt.endpoints[endpoint_id] = Endpoint(new, ep.key_hashes)
    return json_response(
        {"id": endpoint_id, "image": new.image, "version": new.version, "previousVersion": ep.deployment.version}
    )
