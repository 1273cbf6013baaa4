"""The Runpod client API under /v2/{endpoint_id}/: run, runsync, status, stream, cancel, retry, purge-queue, health."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from gpuserve.core.errors import IllegalTransitionError, NotFoundError
from gpuserve.core.jobs import JobStatus
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.server.admission import Admission
from gpuserve.server.http import (
    ApiError,
    client_auth,
    endpoint_or_404,
    json_response,
    parse_json,
    read_body,
    runtime_of,
)
from gpuserve.server.limits import (
    DEFAULT_RUNSYNC_WAIT_MS,
    EXECUTION_TIMEOUT_MS,
    POLICY_RANGES_MS,
    RUNSYNC_WAIT_MS,
    STORE_RETRY_AFTER_S,
    TTL_MS,
)
from gpuserve.store.base import Job

__all__ = ["JobRequest", "parse_job_request", "router"]

router = APIRouter(prefix="/v2/{endpoint_id}", tags=["client"])


class StatusBody(BaseModel):
    id: str
    status: str = Field(description="IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED or TIMED_OUT")
    delayTime: int | None = Field(None, description="ms from submission to the start of the last attempt")
    executionTime: int | None = Field(None, description="ms the last attempt ran")
    workerId: str | None = None
    output: Any = None
    error: str | None = Field(None, description="set when FAILED or TIMED_OUT")
    waiting: dict[str, Any] | None = Field(
        None, description="IN_QUEUE only (gpuserve's own; the runpod SDK ignores it): {code, reason, position}"
    )


class StreamBody(BaseModel):
    id: str
    status: str
    stream: list[dict[str, Any]] = Field(description='chunks not handed out before, each {"output": chunk}')
    attempt: int | None = Field(
        None,
        description="gpuserve's own: the run the chunks come from; when it grows, the job re-ran and its stream restarted",
    )


class PurgeBody(BaseModel):
    removed: int
    status: str = "completed"


class HealthBody(BaseModel):
    jobs: dict[str, int] | None = Field(None, description="queue endpoints: jobs by status")
    workers: dict[str, int]
    requests: dict[str, int] | None = Field(
        None, description="load-balancing endpoints: requests in_flight, held, total, rejected"
    )
    waiting: dict[str, Any] | None = Field(None, description="jobs queued: why the next one waits {code, reason, inQueue}")


_JOB_REQUEST_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["input"],
                    "properties": {
                        "input": {"type": "object", "description": "handed to the handler as job['input']"},
                        "webhook": {
                            "type": "string",
                            "format": "uri",
                            "pattern": "^https?://",
                            "description": "an http(s) URL, POSTed the /status body on a terminal state (loopback and "
                            "private targets are refused unless server.webhook_allowed_networks names them)",
                        },
                        "policy": {
                            "type": "object",
                            "properties": {
                                "executionTimeout": {
                                    "type": "integer",
                                    "minimum": EXECUTION_TIMEOUT_MS[0],
                                    "maximum": EXECUTION_TIMEOUT_MS[1],
                                },
                                "ttl": {"type": "integer", "minimum": TTL_MS[0], "maximum": TTL_MS[1]},
                                "lowPriority": {"type": "boolean"},
                            },
                        },
                        "s3Config": {"type": "object", "description": "passed through to the worker"},
                    },
                    "additionalProperties": True,
                },
                "example": {"input": {"prompt": "hello"}, "policy": {"executionTimeout": 60000}},
            }
        },
    }
}


@dataclass(frozen=True)
class JobRequest:
    payload: dict[str, Any]
    low_priority: bool
    execution_timeout_s: float
    ttl_s: float


def parse_job_request(data: Any, ep: Endpoint, default_ttl_s: float) -> JobRequest:
    """Validate a /run or /runsync body; an error names the field and its value (422)."""
    if not isinstance(data, dict):
        raise ApiError(400, f"body must be a JSON object with an `input` key, was {type(data).__name__}")
    if "input" not in data:
        raise ApiError(422, "input is required (body must be {\"input\": {...}})")
    if not isinstance(data["input"], dict):
        raise ApiError(422, f"input must be a JSON object, was {data['input']!r:.100}")
    payload = dict(data)
    payload.pop("id", None)  # the server names jobs; a client id would shadow it in the worker's dict
    webhook = payload.get("webhook")
    if webhook is not None and not (isinstance(webhook, str) and webhook.startswith(("http://", "https://"))):
        raise ApiError(422, f"webhook must be an http(s) URL, was {webhook!r:.100}")
    policy = payload.get("policy")
    execution_timeout_s = ep.deployment.spec.execution_timeout_s
    ttl_s = default_ttl_s
    low_priority = False
    if policy is not None:
        if not isinstance(policy, dict):
            raise ApiError(422, f"policy must be a JSON object, was {policy!r:.100}")
        for key, value in policy.items():
            if key in POLICY_RANGES_MS:
                lo, hi = POLICY_RANGES_MS[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
                    raise ApiError(422, f"policy.{key} must be a number of ms in [{lo}, {hi}], was {value!r}")
            elif key == "lowPriority":
                if not isinstance(value, bool):
                    raise ApiError(422, f"policy.lowPriority must be true or false, was {value!r}")
            else:
                raise ApiError(422, f"policy.{key} is not a known policy field (executionTimeout, ttl, lowPriority), was {value!r}")
        if "executionTimeout" in policy:
            execution_timeout_s = policy["executionTimeout"] / 1000.0
        if "ttl" in policy:
            ttl_s = policy["ttl"] / 1000.0
        low_priority = bool(policy.get("lowPriority", False))
    return JobRequest(payload=payload, low_priority=low_priority, execution_timeout_s=execution_timeout_s, ttl_s=ttl_s)


async def _submit(request: Request, endpoint_id: str, *, sync: bool) -> tuple[Runtime, Job]:
    rt = runtime_of(request)
    ep = endpoint_or_404(rt, endpoint_id)
    client_auth(rt, ep, request)
    if endpoint_id in rt.lb:
        raise ApiError(
            400, f"endpoint {endpoint_id!r} is a load_balancer endpoint with no job queue: send requests to /lb/{endpoint_id}/<path>"
        )
    if rt.closing:
        retry_after_s = math.ceil(rt.drain_left_s()) + 1
        raise ApiError(
            503,
            f"the server is shutting down and accepts no new jobs; retry after {retry_after_s} s",
            {"Retry-After": str(retry_after_s)},
        )
    if rt.read_only is not None:
        raise ApiError(
            503,
            f"the server is read-only: its job store cannot write ({rt.read_only}); no new jobs until it can,"
            f" retry after {STORE_RETRY_AFTER_S} s",
            {"Retry-After": str(STORE_RETRY_AFTER_S)},
        )
    admission: Admission | None = getattr(request.app.state, "admission", None)
    if admission is not None:
        await _admit_queued(rt, ep, admission)
    limit = rt.settings.max_runsync_bytes if sync else rt.settings.max_run_bytes
    raw = await read_body(request, limit, "runsync" if sync else "run", admission.bodies if admission else None)
    req = parse_job_request(parse_json(raw), ep, rt.settings.default_ttl_s)
    webhook = req.payload.get("webhook")
    if webhook is not None and (reason := await rt.webhooks.refusal(webhook)) is not None:
        raise ApiError(400, f"webhook {webhook!r:.200} is refused: it {reason}")
    retention_s = rt.settings.runsync_retention_s if sync else rt.settings.run_retention_s
    job = await rt.submit(
        endpoint_id,
        req.payload,
        low_priority=req.low_priority,
        execution_timeout_s=req.execution_timeout_s,
        ttl_s=req.ttl_s,
        retention_s=retention_s,
    )
    return rt, job


async def _admit_queued(rt: Runtime, ep: Endpoint, admission: Admission) -> None:
    """429 when the endpoint already holds its cap of queued jobs (Runpod: more than 50 and 500 per max worker)."""
    endpoint_id = ep.endpoint_id
    cap = admission.queue_cap(ep.deployment.spec.scaling.max_workers)
    now_s = rt.clock.now_s()
    if cap is not None and admission.queues.stale(endpoint_id, now_s):
        stats = await rt.io(rt.store.stats, endpoint_id, now_s)  # off the event loop for a blocking store
        admission.queues.observe(endpoint_id, stats.in_queue, now_s)
    queued = admission.queues.admit(endpoint_id, cap)
    if queued is not None:
        raise ApiError(
            429,
            f"endpoint {endpoint_id!r} has {queued} jobs queued, its limit is {cap} (server.limits.max_queued_jobs); "
            "retry after 1 s",
            {"Retry-After": "1"},
        )


async def _job_or_404(rt: Runtime, endpoint_id: str, job_id: str) -> Job:
    job = await rt.io(rt.store.get, job_id)
    if job is None or job.endpoint_id != endpoint_id:
        raise ApiError(404, f"job {job_id!r} does not exist on endpoint {endpoint_id!r} (or its result expired)")
    return job


def _authorized(request: Request, endpoint_id: str) -> Runtime:
    rt = runtime_of(request)
    client_auth(rt, endpoint_or_404(rt, endpoint_id), request)
    return rt


@router.post("/run", openapi_extra=_JOB_REQUEST_SCHEMA, summary="Queue a job; answers at once with its id")
async def run(request: Request, endpoint_id: str) -> Response:
    _, job = await _submit(request, endpoint_id, sync=False)
    return json_response({"id": job.id, "status": "IN_QUEUE"})


@router.post(
    "/runsync",
    openapi_extra=_JOB_REQUEST_SCHEMA,
    response_model=StatusBody,
    summary="Queue a job and wait up to ?wait ms for its result; always returns the id",
)
async def runsync(request: Request, endpoint_id: str, wait: int | None = None) -> Response:
    if wait is not None and not RUNSYNC_WAIT_MS[0] <= wait <= RUNSYNC_WAIT_MS[1]:
        raise ApiError(422, f"wait must be in [{RUNSYNC_WAIT_MS[0]}, {RUNSYNC_WAIT_MS[1]}] ms, was {wait}")
    rt, job = await _submit(request, endpoint_id, sync=True)
    current = await rt.wait_done(job.id, (wait or DEFAULT_RUNSYNC_WAIT_MS) / 1000.0, submitted=job)
    if current is None:
        raise ApiError(404, f"job {job.id!r} was deleted before it ended (ttl expired or queue purged)")
    if current.status.is_terminal:
        return json_response(current.status_body())
    return json_response({"id": current.id, "status": current.status.value})


@router.get("/status/{job_id}", response_model=StatusBody, summary="A job's status", operation_id="status")
@router.post("/status/{job_id}", response_model=StatusBody, summary="A job's status (POST)", operation_id="status_post")
async def status(request: Request, endpoint_id: str, job_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    job = await _job_or_404(rt, endpoint_id, job_id)
    body = job.status_body()
    if job.status is JobStatus.IN_QUEUE:  # only a queued job pays for the explanation
        waiting = await rt.waiting(job)
        if waiting is not None:
            body["waiting"] = waiting.as_json()
    return json_response(body)


@router.get(
    "/stream/{job_id}",
    response_model=StreamBody,
    summary="Stream chunks produced since the last call (each chunk is returned once)",
    operation_id="stream",
)
@router.post("/stream/{job_id}", response_model=StreamBody, summary="Stream (POST)", operation_id="stream_post")
async def stream(request: Request, endpoint_id: str, job_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    job = await _job_or_404(rt, endpoint_id, job_id)
    status_value = job.status.value  # read before the chunks: a final status never precedes its last chunk
    read = await rt.io(rt.store.read_stream, job_id)
    attempt, chunks = read if read is not None else (job.attempt, [])
    if job.status is JobStatus.CANCELLED and not chunks:
        # runpod's stream() polls until COMPLETED, FAILED or TIMED_OUT, so a CANCELLED answer would
        # keep it polling forever; an error ends it (no `status` key: the asyncio client reads it).
        raise ApiError(410, f"job {job_id!r} was cancelled; its stream has ended")
    # One reply holds one attempt's chunks; a client that collects them starts over when `attempt` grows.
    body: dict[str, Any] = {"id": job.id, "status": status_value, "stream": [{"output": c} for c in chunks], "attempt": attempt}
    if job.error is not None and job.status.is_terminal:
        body["error"] = job.error
    return json_response(body)


@router.post("/cancel/{job_id}", summary="Cancel a queued or running job", operation_id="cancel")
@router.get("/cancel/{job_id}", summary="Cancel (GET)", operation_id="cancel_get")
async def cancel(request: Request, endpoint_id: str, job_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    await _job_or_404(rt, endpoint_id, job_id)
    job = await rt.cancel(job_id)
    if job is None:
        raise ApiError(404, f"job {job_id!r} does not exist on endpoint {endpoint_id!r} (or its result expired)")
    return json_response({"id": job.id, "status": job.status.value})


@router.post("/retry/{job_id}", summary="Requeue a FAILED or TIMED_OUT job under the same id")
async def retry(request: Request, endpoint_id: str, job_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    job = await _job_or_404(rt, endpoint_id, job_id)
    try:
        job = await rt.retry(job_id)
    except IllegalTransitionError:
        raise ApiError(
            409, f"job {job_id!r} is {job.status.value}; only FAILED or TIMED_OUT jobs can be retried"
        ) from None
    except NotFoundError as exc:
        raise ApiError(404, str(exc)) from None
    return json_response({"id": job.id, "status": JobStatus.IN_QUEUE.value})


@router.post("/purge-queue", response_model=PurgeBody, summary="Delete every queued job of the endpoint")
async def purge_queue(request: Request, endpoint_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    return json_response({"removed": await rt.io(rt.store.purge, endpoint_id), "status": "completed"})


@router.get("/health", response_model=HealthBody, summary="Job counts and worker states")
async def health(request: Request, endpoint_id: str) -> Response:
    rt = _authorized(request, endpoint_id)
    return json_response(await rt.health(endpoint_id))
