"""OpenTelemetry traces of jobs: one span per job (submit -> done) with a child span per wait in the queue and per run.

Optional twice over. The `otel` extra (opentelemetry-api, -sdk and the OTLP exporter) must be
installed, and the standard variable OTEL_TRACES_EXPORTER must name an exporter (`otlp`,
`console`, or both, comma-separated; `none` or unset: off); OTEL_SDK_DISABLED=true turns it off
too. Everything else is the SDK's own OTEL_* configuration: OTEL_SERVICE_NAME (default here
`gpuserve`), OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_ENDPOINT and _HEADERS, OTEL_TRACES_SAMPLER,
OTEL_BSP_*. When a tracer provider is already installed globally (`opentelemetry-instrument`, or
the application's own), spans go there instead. Off, nothing of OpenTelemetry is imported and
each job hook costs one `is None` test (`Telemetry.tracing`).

The shape of one job's trace (times are the store's, so spans line up with /status's delayTime
and executionTime):

    gpuserve.job            submit (created_s) ............................... terminal status
      gpuserve.job.queue    queued_s -> taken (started_s)       one per attempt
      gpuserve.job.run      started_s -> result or requeue      one per attempt

A job requeued (its worker lost, its lease expired) ends its run span at the requeue with
`gpuserve.job.outcome = requeued`; the next take opens attempt 2's queue and run spans. A job that
ends without running (cancelled or timed out in the queue, ttl expired) has a last queue span and
no run span for that wait. Spans of jobs still open when the server stops are not exported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpuserve.core.jobs import JobStatus
from gpuserve.store.base import Job

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["MAX_OPEN_JOBS", "JobTracing", "from_environment"]

log = logging.getLogger("gpuserve.tracing")

# Jobs with an open span; past this, new jobs are not traced (and counted), so a queue of
# millions cannot hold millions of live span objects (about 2 KB each).
MAX_OPEN_JOBS = 100_000
_ERROR_STATUSES = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT})

# Attribute names: the gpuserve namespace, as OpenTelemetry's naming rules ask of non-standard ones.
ENDPOINT_ID = "gpuserve.endpoint.id"
JOB_ID = "gpuserve.job.id"
WORKER_ID = "gpuserve.worker.id"
ATTEMPT = "gpuserve.job.attempt"
STATUS = "gpuserve.job.status"
OUTCOME = "gpuserve.job.outcome"


def _ns(seconds: float) -> int:
    """A store time (Unix seconds) as OpenTelemetry's nanoseconds."""
    return int(seconds * 1e9)


@dataclass
class _Open:
    root: Span
    run: Span | None = None  # the current attempt's run span, while it runs


class JobTracing:
    """Turns the runtime's job hooks (submitted, taken, ended, expired) into spans; event-loop only, like the hooks."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace

        self._trace = trace
        self.provider = provider
        self.tracer: Tracer = provider.get_tracer("gpuserve.live")
        self._open: dict[str, _Open] = {}
        self.dropped = 0  # jobs not traced because MAX_OPEN_JOBS were open

    @property
    def open_jobs(self) -> int:
        return len(self._open)

    def _root(self, job: Job) -> _Open | None:
        entry = self._open.get(job.id)
        if entry is not None:
            return entry
        if len(self._open) >= MAX_OPEN_JOBS:
            self.dropped += 1
            return None
        # A job this server did not see submitted (another server's, on a shared store) starts at its creation too.
        root = self.tracer.start_span(
            "gpuserve.job",
            start_time=_ns(job.created_s),
            attributes={ENDPOINT_ID: job.endpoint_id, JOB_ID: job.id},
        )
        root.add_event("submit", timestamp=_ns(job.created_s))
        entry = self._open[job.id] = _Open(root)
        return entry

    def _child(self, entry: _Open, name: str, start_s: float, job: Job) -> Span:
        context = self._trace.set_span_in_context(entry.root)
        return self.tracer.start_span(
            name,
            context=context,
            start_time=_ns(start_s),
            attributes={ENDPOINT_ID: job.endpoint_id, JOB_ID: job.id, ATTEMPT: job.attempt},
        )

    # -- the hooks ----------------------------------------------------------------------------------

    def job_submitted(self, job: Job) -> None:
        self._root(job)

    def job_taken(self, job: Job) -> None:
        entry = self._root(job)
        if entry is None or job.started_s is None:
            return
        if entry.run is not None:  # the last attempt never reported: it was requeued at queued_s
            entry.run.set_attribute(OUTCOME, "requeued")
            entry.run.end(end_time=_ns(job.queued_s))
            entry.root.add_event("requeue", timestamp=_ns(job.queued_s))
        queue = self._child(entry, "gpuserve.job.queue", min(job.queued_s, job.started_s), job)
        queue.end(end_time=_ns(job.started_s))
        entry.run = self._child(entry, "gpuserve.job.run", job.started_s, job)
        if job.worker_id is not None:
            entry.run.set_attribute(WORKER_ID, job.worker_id)
        entry.root.add_event(
            "take", timestamp=_ns(job.started_s), attributes={WORKER_ID: job.worker_id or "", ATTEMPT: job.attempt}
        )

    def job_ended(self, job: Job) -> None:
        if not job.status.is_terminal:
            return
        self._end(job, job.status.value, job.completed_s)

    def job_expired(self, job: Job) -> None:
        """Its ttl ran out (counted from submission, as Runpod's is)."""
        self._end(job, "TTL_EXPIRED", job.created_s + job.ttl_s)

    def _end(self, job: Job, status: str, at_s: float | None) -> None:
        entry = self._open.pop(job.id, None)
        if entry is None:
            entry = self._root(job)  # submitted elsewhere and never taken here
            self._open.pop(job.id, None)
            if entry is None:
                return
        end_s = at_s if at_s is not None else max(job.created_s, job.started_s or 0.0, job.queued_s)
        error = job.status in _ERROR_STATUSES
        if entry.run is not None:
            entry.run.set_attribute(OUTCOME, status)
            if error:
                entry.run.set_status(self._trace.StatusCode.ERROR, job.error or status)
            entry.run.end(end_time=_ns(end_s))
        elif status != "COMPLETED":  # ended while waiting: that last wait is a queue span
            queue = self._child(entry, "gpuserve.job.queue", min(job.queued_s, end_s), job)
            queue.set_attribute(OUTCOME, status)
            queue.end(end_time=_ns(end_s))
        root = entry.root
        root.set_attributes({STATUS: status, ATTEMPT: job.attempt})
        if job.worker_id is not None:
            root.set_attribute(WORKER_ID, job.worker_id)
        if error:
            root.set_status(self._trace.StatusCode.ERROR, job.error or status)
        root.add_event("done", timestamp=_ns(end_s), attributes={STATUS: status})
        root.end(end_time=_ns(end_s))


def from_environment(environ: Mapping[str, str] | None = None) -> JobTracing | None:
    """Job tracing as the standard OTEL_* variables configure it, or None when they leave it off (nothing imported)."""
    env = os.environ if environ is None else environ
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names or names == ["none"] or env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    try:
        provider = _provider(names)
    except ImportError as exc:
        log.warning("OTEL_TRACES_EXPORTER=%s but OpenTelemetry is missing (%s): pip install 'gpuserve[otel]'",
                    ",".join(names), exc.name or exc)
        return None
    return JobTracing(provider)


def _provider(exporters: list[str]) -> TracerProvider:
    """The global provider when one is installed, else an SDK provider with the named exporters."""
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return current
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "gpuserve"}))
    provider = SdkProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER, read by the SDK
    for name in exporters:
        exporter: SpanExporter
        if name == "otlp":
            # OTLP over HTTP/protobuf; endpoint, headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        elif name == "console":
            exporter = ConsoleSpanExporter()
        elif name == "none":
            continue
        else:
            log.warning("OTEL_TRACES_EXPORTER names %r, which gpuserve does not know (otlp, console, none): skipped", name)
            continue
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* sizes and delays
    return provider
