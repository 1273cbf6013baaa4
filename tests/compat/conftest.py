"""Compat suite fixtures: one real gpuserve server (process backend) for the whole suite, one endpoint per
(handler, worker flavour), a server-side request log, and runpod's client pointed at the server.

Worker flavours: the unmodified `runpod` SDK installed here (1.12.0), gpuserve's own worker SDK, and
older runpod lines from their own virtual environments when GPUSERVE_COMPAT_VENV_1_6_2 /
GPUSERVE_COMPAT_VENV_1_7_13 name one (e.g. `python -m venv /tmp/rp16 && /tmp/rp16/bin/pip install
runpod==1.6.2`); without them those tests skip.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpuserve.live.deployment import Deployment
from gpuserve.live.settings import ServerSettings
from tests.support.live import API_KEY, Live, code_deployment
from tests.support.request_log import RecordRequests, RequestLog

# Runpod's SDK floors RUNPOD_PING_INTERVAL to whole seconds (below 1000 ms it busy-loops), so 1 s is
# the shortest honest heartbeat; the server calls a worker unhealthy after 3 silent intervals.
PING_INTERVAL_S = 1.0
SETTINGS = ServerSettings(
    poll_timeout_s=2.0,
    heartbeat_interval_s=PING_INTERVAL_S,
    missed_heartbeats=3,
    tick_interval_s=0.2,
    maintenance_interval_s=0.05,
    webhook_retry_delay_s=0.2,
    webhook_allowed_networks=("127.0.0.0/8",),  # the tests' receivers listen on loopback
    unknown_worker_delay_s=0.2,
)
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}


@dataclass(frozen=True)
class Flavour:
    """A worker SDK: which package the handler imports, and the interpreter that runs it."""

    name: str  # test id and endpoint-id suffix
    sdk: str  # "runpod" or "gpuserve"
    version: str  # the SDK version the worker must report
    python: str | None = None  # None: this interpreter
    venv_var: str | None = None  # where an older SDK's venv is named

    @property
    def header(self) -> str:
        if self.sdk == "runpod":
            return "import runpod\nserverless = runpod.serverless\nSDK_VERSION = runpod.__version__\n"
        return "from gpuserve import serverless\nimport gpuserve\nSDK_VERSION = 'gpuserve'\n"


CURRENT = [Flavour("runpod", "runpod", "1.12.0"), Flavour("gpuserve", "gpuserve", "gpuserve")]
OLD = [
    Flavour("runpod-1.6.2", "runpod", "1.6.2", venv_var="GPUSERVE_COMPAT_VENV_1_6_2"),
    Flavour("runpod-1.7.13", "runpod", "1.7.13", venv_var="GPUSERVE_COMPAT_VENV_1_7_13"),
]


def old_python(flavour: Flavour) -> str | None:
    """The old SDK's interpreter, or None when its venv is not named or not there."""
    assert flavour.venv_var is not None
    venv = os.environ.get(flavour.venv_var)
    if not venv:
        return None
    python = Path(venv) / "bin" / "python"
    return str(python) if python.exists() else None


def available_flavours() -> list[Flavour]:
    out = list(CURRENT)
    for f in OLD:
        python = old_python(f)
        if python is not None:
            out.append(replace(f, python=python))
    return out


# -- handlers: one endpoint per (handler, flavour); `serverless` is runpod.serverless or gpuserve's ----

ECHO = """
import os
def handler(job):
    return {"echo": job["input"], "worker": os.environ["RUNPOD_POD_ID"], "sdk": SDK_VERSION}
serverless.start({"handler": handler})
"""

ERRORS = """
import os
def handler(job):
    mode = job["input"]["mode"]
    if mode == "raise":
        raise ValueError("handler refused: " + job["input"]["why"])
    if mode == "dict_error":
        return {"error": {"code": 1}}
    return {"echo": job["input"], "worker": os.environ["RUNPOD_POD_ID"]}
serverless.start({"handler": handler})
"""

STREAM = """
import asyncio
async def handler(job):
    for i in range(job["input"]["n"]):
        await asyncio.sleep(job["input"].get("gap_s", 0.1))
        yield {{"i": i}}
serverless.start({{"handler": handler, "return_aggregate_stream": {aggregate}}})
"""

PROGRESS = """
import asyncio, pathlib
async def handler(job):
    serverless.progress_update(job, {"pct": 50})
    release = pathlib.Path(job["input"]["release"])
    while not release.exists():  # hold IN_PROGRESS until the test has seen the progress
        await asyncio.sleep(0.02)
    return {"done": True}
serverless.start({"handler": handler})
"""

CONCURRENCY = """
import asyncio, os, pathlib
async def handler(job):
    await asyncio.sleep(job["input"].get("sleep_s", 2))
    release = job["input"].get("release")
    while release and not pathlib.Path(release).exists():
        await asyncio.sleep(0.02)
    return {"worker": os.environ["RUNPOD_POD_ID"], "sdk": SDK_VERSION}
serverless.start({"handler": handler, "concurrency_modifier": lambda current: 4})
"""

# Async, so the stop channel can cancel it; it leaves a marker when it sees CancelledError.
HOLD = """
import asyncio, os, pathlib
async def handler(job):
    inp = job["input"]
    if inp.get("fail_once"):
        flag = pathlib.Path(inp["fail_once"])
        if not flag.exists():
            flag.write_text("failed once")
            raise RuntimeError("first attempt fails")
    try:
        await asyncio.sleep(inp.get("sleep_s", 0))
        hold = inp.get("hold_until")
        while hold and not pathlib.Path(hold).exists():
            await asyncio.sleep(0.02)
    except asyncio.CancelledError:
        if inp.get("marker"):
            # Written aside, then renamed: the test polls for the file and must never read it half-written.
            tmp = pathlib.Path(inp["marker"] + ".tmp")
            tmp.write_text(f"cancelled {job['id']} on {os.environ['RUNPOD_POD_ID']}")
            os.replace(tmp, inp["marker"])
        raise
    return {"worker": os.environ["RUNPOD_POD_ID"], "ok": True}
serverless.start({"handler": handler})
"""

REFRESH = """
import os
def handler(job):
    return {"worker": os.environ["RUNPOD_POD_ID"]}
serverless.start({"handler": handler, "refresh_worker": True})
"""


@dataclass(frozen=True)
class HandlerSpec:
    code: str
    concurrency: int = 1
    max_workers: int = 1
    old_sdks: bool = False  # also deployed for the older runpod lines


HANDLERS: dict[str, HandlerSpec] = {
    "echo": HandlerSpec(ECHO, old_sdks=True),
    "errors": HandlerSpec(ERRORS),
    "stream": HandlerSpec(STREAM.format(aggregate=False)),
    "stream-agg": HandlerSpec(STREAM.format(aggregate=True)),
    "progress": HandlerSpec(PROGRESS),
    "concurrency": HandlerSpec(CONCURRENCY, concurrency=4, old_sdks=True),
    "concurrency-burst": HandlerSpec(CONCURRENCY, concurrency=4, old_sdks=True),
    "cancel": HandlerSpec(HOLD),
    "timeouts": HandlerSpec(HOLD, concurrency=2),
    "refresh": HandlerSpec(REFRESH),
    "control": HandlerSpec(HOLD),
}


def endpoint_id(handler: str, flavour: Flavour) -> str:
    return f"{handler}-{flavour.name}"


def _deployments(root: Path, flavours: list[Flavour]) -> list[Deployment]:
    deps = []
    for flavour in flavours:
        for name, h in HANDLERS.items():
            if flavour.python is not None and not h.old_sdks:
                continue
            dep = code_deployment(
                root / "handlers",
                endpoint_id(name, flavour),
                flavour.header + textwrap.dedent(h.code),
                sdk=flavour.sdk,
                max_workers=h.max_workers,
                concurrency=h.concurrency,
                # Long enough that a test's consecutive jobs meet the same worker, short enough
                # that finished tests do not keep many idle workers on a 2-core machine.
                idle_timeout_s=4.0,
                env={"RUNPOD_LOG_LEVEL": "INFO"},
            )
            deps.append(replace(dep, python=flavour.python))
    return deps


class Compat:
    """The shared server, its request log, and helpers that read server-side records."""

    def __init__(self, live: Any, log: RequestLog, root: Path) -> None:
        self.live = live
        self.log = log
        self.root = root
        self.url: str = live.url
        self.base_url = f"{live.url}/v2"
        self.http: httpx.Client = live.http

    @property
    def store(self) -> Any:
        return self.live.runtime.store

    @property
    def backend(self) -> Any:
        return self.live.backend

    def status(self, eid: str, job_id: str) -> dict[str, Any]:
        return dict(self.live.status(eid, job_id))

    def wait(self, eid: str, job_id: str, statuses: set[str] | None = None, timeout_s: float = 90.0) -> dict[str, Any]:
        return dict(self.live.wait(eid, job_id, statuses or TERMINAL, timeout_s=timeout_s))

    def until(self, predicate: Callable[[], Any], what: str, timeout_s: float = 90.0) -> None:
        self.live.until(predicate, what, timeout_s=timeout_s)

    def marker(self, name: str) -> Path:
        folder = self.root / "markers"
        folder.mkdir(exist_ok=True)
        return folder / f"{name}-{time.monotonic_ns()}"

    def worker(self, worker_id: str) -> Any:
        return self.live.registry.get(worker_id)

    def worker_environ(self, worker_id: str) -> dict[str, str]:
        """The environment the backend gave a live worker process (read from /proc)."""
        pid = self.backend.process_id(worker_id)
        assert pid is not None, f"worker {worker_id} has no process"
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        return {k.decode(): v.decode(errors="replace") for k, v in pairs}

    def post_as_worker(self, worker_id: str, job_id: str, body: dict[str, Any]) -> httpx.Response:
        """POST a job-done body exactly as runpod's SDK does (raw JSON under a form type), with the worker's
        own URL and token: how a late result or a late progress update reaches the server."""
        env = self.worker_environ(worker_id)
        url = env["RUNPOD_WEBHOOK_POST_OUTPUT"].replace("$ID", job_id) + "&isStream=false"
        return httpx.post(
            url,
            content=json.dumps(body).encode(),
            headers={"Authorization": env["RUNPOD_AI_API_KEY"], "Content-Type": "application/x-www-form-urlencoded"},
            timeout=30,
        )

    def logs(self) -> str:
        return str(self.live.all_logs())


@pytest.fixture(scope="session")
def compat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compat]:
    """One server for the suite; every test uses its own endpoints, so tests stay independent."""
    pytest.importorskip("runpod")
    root = tmp_path_factory.mktemp("compat")
    live = Live(root, _deployments(root, available_flavours()), settings=SETTINGS)
    log = RequestLog()
    # Wrap the outermost ASGI app uvicorn serves: hot routes bypass FastAPI (gpuserve.server.fastpath),
    # so a FastAPI middleware would miss them.
    live.platform.wrap_asgi(lambda app: RecordRequests(app, log))
    with live:
        yield Compat(live, log, root)


@pytest.fixture
def rp(compat: Compat) -> Any:
    """The runpod package with its client pointed at the server in code (runpod.endpoint_url_base)."""
    import runpod

    runpod.endpoint_url_base = compat.base_url
    runpod.api_key = API_KEY
    return runpod


def flavour_params(include_old: bool = False) -> list[Any]:
    """pytest params for the worker flavours; old runpod lines skip (with the reason) without their venv."""
    params = [pytest.param(f, id=f.name) for f in CURRENT]
    if include_old:
        for f in OLD:
            python = old_python(f)
            marks = [] if python else [
                pytest.mark.skip(reason=f"runpod {f.version} worker: set {f.venv_var} to a venv with runpod=={f.version}")
            ]
            params.append(pytest.param(replace(f, python=python), id=f.name, marks=marks))
    return params
