"""The Runpod worker API (protocol §1): job-take, job-take-batch, job-done, job-stream, ping, job-stop."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import Response

from gpuserve.server.http import ApiError, json_response, parse_json, read_body, runtime_of, worker_auth
from gpuserve.server.limits import MAX_JOBS_PER_TAKE, MAX_RESULT_BYTES, MAX_UNHEALTHY_REASON_CHARS

__all__ = ["router"]

router = APIRouter(prefix="/v2/{endpoint_id}", tags=["worker"])

# Tells gpuserve's worker SDK that job-done takes `gpuserve_take` (see job_done); a Runpod
# worker ignores an unknown header.
_TAKE_ON_DONE = {"x-gpuserve-take-on-done": "1"}


def _jobs_json(jobs: list[str]) -> bytes:
    return ("[" + ",".join(jobs) + "]").encode()


@router.get("/job-take/{worker_id}", summary="Long poll for one job (200 job, 204 none)")
async def job_take(request: Request, endpoint_id: str, worker_id: str) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request, slow=True)
    jobs = await rt.take(worker, 1)
    if not jobs:
        return Response(status_code=204, headers=_TAKE_ON_DONE)
    return Response(jobs[0].worker_json().encode(), media_type="application/json", headers=_TAKE_ON_DONE)


@router.get("/job-take-batch/{worker_id}", summary="Long poll for up to batch_size jobs (200 list, 204 none)")
async def job_take_batch(request: Request, endpoint_id: str, worker_id: str, batch_size: int = 1) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request, slow=True)
    if batch_size < 1:
        raise ApiError(422, f"batch_size must be at least 1, was {batch_size}")
    jobs = await rt.take(worker, min(batch_size, MAX_JOBS_PER_TAKE))
    if not jobs:
        return Response(status_code=204, headers=_TAKE_ON_DONE)
    return Response(_jobs_json([j.worker_json() for j in jobs]), media_type="application/json", headers=_TAKE_ON_DONE)


@router.post(
    "/job-done/{worker_id}/{job_id}",
    summary="A result, an error or a progress update (idempotent)",
    description=(
        "gpuserve extension: `gpuserve_take=N` (N >= 1) on a final result also hands the worker up to N "
        "jobs that are queued right now, as `next` in the answer, saving the job-take request that would "
        "follow. Without it the answer is Runpod's."
    ),
)
async def job_done(
    request: Request, endpoint_id: str, worker_id: str, job_id: str, gpuserve_take: int = 0
) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request)
    raw = await read_body(request, MAX_RESULT_BYTES, "job-done")
    # The SDK sends raw JSON under a form content type: parse the bytes whatever the header says.
    try:
        body = parse_json(raw, "job-done body", max_depth=None)
    except ApiError as exc:
        await rt.job_failed_unparsable(worker, job_id, f"the worker's result could not be read: {exc.message}")
        raise
    take = min(max(gpuserve_take, 0), MAX_JOBS_PER_TAKE)
    outcome, jobs = await rt.job_done(worker, job_id, body, take)  # the result and the next jobs: one store call
    if gpuserve_take < 1 or (isinstance(body, dict) and body.get("status") == "IN_PROGRESS"):
        return json_response({"id": job_id, "accepted": outcome})
    head = json.dumps({"id": job_id, "accepted": outcome})[:-1]  # the jobs' JSON is spliced in, not re-encoded
    body_json = head + ',"next":[' + ",".join(j.worker_json() for j in jobs) + "]}"
    return Response(body_json.encode(), media_type="application/json")


@router.post("/job-stream/{worker_id}/{job_id}", summary="One streamed chunk, {\"output\": chunk}")
async def job_stream(request: Request, endpoint_id: str, worker_id: str, job_id: str) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request)
    body = parse_json(await read_body(request, MAX_RESULT_BYTES, "job-stream"), "job-stream body", max_depth=None)
    if not isinstance(body, dict):
        raise ApiError(422, f"job-stream body must be {{\"output\": chunk}}, was {type(body).__name__}")
    accepted = await rt.stream_chunk(worker, job_id, body.get("output"))
    return json_response({"id": job_id, "accepted": accepted})


@router.get("/ping/{worker_id}", summary="Heartbeat: in-flight job ids; status=unhealthy reports a failed check")
async def ping(
    request: Request,
    endpoint_id: str,
    worker_id: str,
    job_id: str | None = None,
    status: str | None = None,
    check: str | None = None,
    reason: str | None = None,
) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request)
    job_ids = [j for j in (job_id or "").split(",") if j]
    unhealthy = None
    if status == "unhealthy":
        unhealthy = f"check {check or '?'} failed: {(reason or '')[:MAX_UNHEALTHY_REASON_CHARS]}"
    await rt.ping(worker, job_ids, unhealthy)
    return json_response({"ok": True})


@router.get("/job-stop/{worker_id}", summary="Long poll for cancelled or timed-out jobs to stop (200 or 204)")
async def job_stop(request: Request, endpoint_id: str, worker_id: str) -> Response:
    rt = runtime_of(request)
    worker = await worker_auth(rt, endpoint_id, worker_id, request, slow=True)
    job_ids = await rt.stop_signals(worker)
    if not job_ids:
        return Response(status_code=204)
    return json_response({"jobsToStop": job_ids})
