"""Operator routes for the CLI: endpoints with worker states, queue depth and cost, an endpoint's bill (deploy and updates: endpoints_api.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gpuserve.live.runtime import Runtime
from gpuserve.server.http import ApiError, admin_auth, client_auth, endpoint_or_404, json_response, runtime_of

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["operator"])


def _visible(rt: Runtime, request: Request) -> list[str]:
    """Endpoints the caller's key opens (every endpoint with no keys is open); an admin key sees them all."""
    try:  # the operator runs `gpuserve endpoints` with the key that then opens logs, exec and updates
        admin_auth(rt, request, "listing endpoints")
        return list(rt.endpoints)
    except ApiError:
        pass
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
        if eid in rt.lb:  # held requests queued, in-flight ones in progress
            stats, counts = rt.queue_stats(eid, now), rt.store.health(eid)
        else:
            stats, counts = await rt.io(lambda e=eid: (rt.store.stats(e, now), rt.store.health(e)))
        last = rt.controller.last_step(eid) if rt.controller is not None else None
        bills = rt.ledger.worker_bills(eid, now)
        out.append(
            {
                "id": eid,
                "type": spec.kind.value,
                "policy": spec.policy.name,
                "minWorkers": spec.scaling.min_workers,
                "maxWorkers": spec.scaling.max_workers,
                "idleTimeoutS": spec.scaling.idle_timeout_s,
                "queue": {
                    "inQueue": stats.in_queue,
                    "inProgress": stats.in_progress,
                    "oldestQueuedAgeS": round(stats.oldest_queued_age_s, 3),
                },
                "jobs": counts,
                "workers": [
                    {
                        "id": w.worker_id,
                        "state": w.state.value,
                        "inFlight": w.in_flight,
                        "capacity": w.capacity,
                        "ageS": round(max(0.0, now - w.created_s), 1),
                        "idleForS": round(w.idle_for_s(now), 1),
                        "costUsd": bills[w.worker_id].cost_usd if w.worker_id in bills else 0.0,
                        "failure": w.failure,  # UNHEALTHY: why (an exit code, an image that cannot be pulled)
                    }
                    for w in rt.worker_views(eid)
                ],
                "lastDecision": last.decision.reason if last is not None else None,
                "cost": _cost_summary(rt, eid, now),
            }
        )
    return json_response({"endpoints": out})


def _cost_summary(rt: Runtime, endpoint_id: str, now_s: float) -> dict[str, float]:
    bill = rt.ledger.endpoint_bill(endpoint_id, now_s)
    return {"costUsd": bill.cost_usd, "gpuSeconds": bill.gpu_s}


@router.get("/endpoints/{endpoint_id}/cost", summary="What an endpoint cost: by worker state and per worker, since start or over a window")
async def endpoint_cost(request: Request, endpoint_id: str, window_s: float | None = None) -> Response:
    """`window_s`: only the last this many seconds, pro rata (per-second rounding applies to whole lives, since start)."""
    rt = runtime_of(request)
    ep = endpoint_or_404(rt, endpoint_id)
    client_auth(rt, ep, request)
    ledger = rt.ledger
    if window_s is not None and not (0 < window_s <= ledger.retention_s):
        raise ApiError(422, f"window_s must be more than 0 and at most {ledger.retention_s:g}, was {window_s:g}")
    now = rt.clock.now_s()
    total = ledger.endpoint_bill(endpoint_id, now, window_s)
    workers = ledger.worker_bills(endpoint_id, now, window_s)
    return json_response(
        {
            "id": endpoint_id,
            "windowS": window_s,
            "billing": ledger.model.describe(),
            **total.to_json(),
            "workers": {wid: bill.to_json() for wid, bill in sorted(workers.items())},
        }
    )
