"""OpenTelemetry job spans against a real server: real worker processes, the SDK's in-memory exporter, and a real OTLP/HTTP receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from gpuserve.live.tracing import JobTracing, from_environment
from tests.support.live import code_deployment, wait_until

ROOT = Path(__file__).resolve().parents[2]

HANDLER = """
from gpuserve import serverless


def handler(job):
    if job["input"].get("fail"):
        raise ValueError("asked to fail")
    return {"ok": True}


serverless.start({"handler": handler})
"""


def _by_job(spans: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in spans:
        out.setdefault(s.attributes["gpuserve.job.id"], []).append(s)
    return out


def test_each_job_is_one_trace_with_its_queue_and_run_spans(make_server, tmp_path: Path) -> None:
    work = code_deployment(tmp_path, "work", HANDLER, max_workers=1)
    never = code_deployment(tmp_path, "never", HANDLER, max_workers=0)  # no worker ever: its job only waits
    h = make_server([work, never], backend="process")
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    h.rt.telemetry.tracing = JobTracing(provider)

    ok = [h.submit({"input": {}}, ep="work") for _ in range(2)]
    failed = h.submit({"input": {"fail": True}}, ep="work")
    waiting = h.submit({"input": {}}, ep="never")
    bodies = {j: h.wait_status(j, {"COMPLETED", "FAILED"}, ep="work", timeout_s=60) for j in [*ok, failed]}
    assert h.client.post(f"/v2/never/cancel/{waiting}").status_code == 200
    # Three spans for each job that ran (job, queue, run), two for the one cancelled in the queue.
    wait_until(lambda: len(exporter.get_finished_spans()) == 3 * 3 + 2, 30, "11 finished spans")
    assert h.rt.telemetry.tracing.open_jobs == 0
    spans = _by_job(exporter.get_finished_spans())
    assert set(spans) == {*ok, failed, waiting}

    for job_id in [*ok, failed]:
        by_name = {s.name: s for s in spans[job_id]}
        assert sorted(by_name) == ["gpuserve.job", "gpuserve.job.queue", "gpuserve.job.run"]
        root, queue, run = by_name["gpuserve.job"], by_name["gpuserve.job.queue"], by_name["gpuserve.job.run"]
        assert root.parent is None
        for child in (queue, run):
            assert child.parent is not None and child.parent.span_id == root.context.span_id
            assert child.context.trace_id == root.context.trace_id
        body = bodies[job_id]
        assert root.attributes["gpuserve.endpoint.id"] == "work"
        assert root.attributes["gpuserve.worker.id"] == body["workerId"] == run.attributes["gpuserve.worker.id"]
        assert root.attributes["gpuserve.job.status"] == body["status"]
        assert root.attributes["gpuserve.job.attempt"] == run.attributes["gpuserve.job.attempt"] == 1
        # submit -> queue -> take -> run -> done, back to back on the store's times.
        assert root.start_time == queue.start_time <= queue.end_time == run.start_time <= run.end_time == root.end_time
        assert [e.name for e in root.events] == ["submit", "take", "done"]
    assert len({spans[j][0].context.trace_id for j in [*ok, failed]}) == 3  # a trace per job

    failed_spans = {s.name: s for s in spans[failed]}
    assert failed_spans["gpuserve.job"].status.status_code is StatusCode.ERROR
    assert failed_spans["gpuserve.job.run"].status.status_code is StatusCode.ERROR
    assert {s.name: s for s in spans[ok[0]]}["gpuserve.job"].status.status_code is StatusCode.UNSET

    cancelled = {s.name: s for s in spans[waiting]}
    assert sorted(cancelled) == ["gpuserve.job", "gpuserve.job.queue"]
    assert cancelled["gpuserve.job"].attributes["gpuserve.job.status"] == "CANCELLED"
    assert cancelled["gpuserve.job.queue"].attributes["gpuserve.job.outcome"] == "CANCELLED"
    assert cancelled["gpuserve.job.queue"].parent.span_id == cancelled["gpuserve.job"].context.span_id
    assert "gpuserve.worker.id" not in cancelled["gpuserve.job"].attributes


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver: decodes each POST /v1/traces into the server's list."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.requests.append((self.path, request))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_standard_otel_variables_send_job_spans_over_otlp(
    make_server, tmp_path: Path, receiver: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_EXPORTER=otlp and the OTLP endpoint in the environment: a job's three spans reach the receiver."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gpuserve-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    h = make_server([code_deployment(tmp_path, "traced", HANDLER, max_workers=1)], backend="process")
    tracing = h.rt.telemetry.tracing
    assert tracing is not None  # the server's own, from the environment
    try:
        job = h.client.post("/v2/traced/runsync", json={"input": {}}).json()
        assert job["status"] == "COMPLETED", job

        def spans() -> list[tuple[str, Any, Any]]:
            return [
                (path, rs.resource, span)
                for path, request in list(receiver.requests)  # type: ignore[attr-defined]
                for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
            ]

        wait_until(lambda: len(spans()) == 3, 30, "three spans at the receiver")
    finally:
        tracing.provider.shutdown()
    got = spans()
    assert {path for path, _, _ in got} == {"/v1/traces"}
    service = {a.key: a.value.string_value for a in got[0][1].attributes}["service.name"]
    assert service == "gpuserve-test"
    assert sorted(s.name for _, _, s in got) == ["gpuserve.job", "gpuserve.job.queue", "gpuserve.job.run"]
    attrs = {s.name: {a.key: a.value for a in s.attributes} for _, _, s in got}
    assert attrs["gpuserve.job"]["gpuserve.job.id"].string_value == job["id"]
    assert attrs["gpuserve.job"]["gpuserve.job.status"].string_value == "COMPLETED"
    assert attrs["gpuserve.job"]["gpuserve.worker.id"].string_value == job["workerId"]
    root = next(s for _, _, s in got if s.name == "gpuserve.job")
    assert all(s.parent_span_id == root.span_id for _, _, s in got if s is not root)


def test_off_unless_an_exporter_is_named_and_then_nothing_of_opentelemetry_is_imported() -> None:
    assert from_environment({}) is None
    assert from_environment({"OTEL_TRACES_EXPORTER": "none"}) is None
    assert from_environment({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}) is None
    on = from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert on is not None
    on.provider.shutdown()
    probe = (
        "import json, sys\n"
        "from gpuserve.live.telemetry import Telemetry\n"
        "t = Telemetry()\n"
        "print(json.dumps([t.tracing is None, sorted(m for m in sys.modules if m.startswith('opentelemetry'))]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run(
        [sys.executable, "-c", probe], env={**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    assert json.loads(out) == [True, []]


def _job(**changes: Any) -> Any:
    from dataclasses import replace as with_

    from gpuserve.core.jobs import JobStatus
    from gpuserve.store.base import Job

    base = Job(
        id="j1", endpoint_id="ep", seq=1, status=JobStatus.IN_QUEUE, payload={"input": {}}, payload_json='{"input":{}}',
        low_priority=False, execution_timeout_s=600.0, ttl_s=86400.0, retention_s=1800.0, created_s=100.0, queued_s=100.0,
    )
    return with_(base, **changes)


def test_a_requeued_job_has_a_queue_and_a_run_span_per_attempt() -> None:
    """The hooks in the order the runtime calls them for a job whose first worker was lost (times stated)."""
    from gpuserve.core.jobs import JobStatus

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = JobTracing(provider)
    tracing.job_submitted(_job())
    tracing.job_taken(_job(status=JobStatus.IN_PROGRESS, started_s=101.0, worker_id="w1", attempt=1))
    # w1 lost at 105: requeued (queued_s 105), taken by w2 at 106, done at 108.
    tracing.job_taken(_job(status=JobStatus.IN_PROGRESS, queued_s=105.0, started_s=106.0, worker_id="w2", attempt=2, retries=1))
    tracing.job_ended(_job(status=JobStatus.COMPLETED, queued_s=105.0, started_s=106.0, completed_s=108.0, worker_id="w2", attempt=2))
    spans = exporter.get_finished_spans()
    got = sorted((s.name, s.attributes.get("gpuserve.job.attempt"), s.start_time / 1e9, s.end_time / 1e9,
                  s.attributes.get("gpuserve.job.outcome")) for s in spans)
    assert got == [
        ("gpuserve.job", 2, 100.0, 108.0, None),
        ("gpuserve.job.queue", 1, 100.0, 101.0, None),
        ("gpuserve.job.queue", 2, 105.0, 106.0, None),
        ("gpuserve.job.run", 1, 101.0, 105.0, "requeued"),
        ("gpuserve.job.run", 2, 106.0, 108.0, "COMPLETED"),
    ]
    root = next(s for s in spans if s.name == "gpuserve.job")
    assert all(s.parent.span_id == root.context.span_id for s in spans if s is not root)
    assert [e.name for e in root.events] == ["submit", "take", "requeue", "take", "done"]
    assert {s.attributes.get("gpuserve.worker.id") for s in spans if s.name == "gpuserve.job.run"} == {"w1", "w2"}
    assert tracing.open_jobs == 0
