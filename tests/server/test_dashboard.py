"""The dashboard in a real headless Chromium against a real `gpuserve serve` with a process endpoint scaled from zero.

The distribution's chromium (scripts/chromium-setup.sh), driven by Playwright with
`executable_path`: no browser is downloaded. Without chromium or Playwright these tests skip,
unless GPUSERVE_REQUIRE_CHROMIUM=1 (CI), where they fail. GPUSERVE_CHROMIUM names another binary.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live import serve_process, stop_process, wait_until

ADMIN = "sk-dash-admin"
CLIENT = "sk-dash-client"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
UI_TIMEOUT_MS = 60_000  # a cold start on a loaded 2-core host; the waits end as soon as the page shows it


def _chromium() -> str:
    required = os.environ.get("GPUSERVE_REQUIRE_CHROMIUM") == "1"
    path = os.environ.get("GPUSERVE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    problem = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        problem = f"Playwright for Python is not installed ({exc}): pip install 'gpuserve[dev]'"
    if problem is None and path is None:
        problem = "no chromium on PATH: bash scripts/chromium-setup.sh (or set GPUSERVE_CHROMIUM)"
    if problem is not None:
        if required:
            pytest.fail(f"GPUSERVE_REQUIRE_CHROMIUM=1 but {problem}")
        pytest.skip(problem)
    assert path is not None
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`gpuserve serve` with one process endpoint (0..1 workers) whose handler prints each job's line."""
    root = tmp_path_factory.mktemp("dashboard")
    handler = root / "handler.py"
    handler.write_text(textwrap.dedent("""
        import time
        from gpuserve import serverless

        def handler(job):
            time.sleep(job["input"].get("sleep_s", 0))
            print("line:", job["input"].get("line"), flush=True)
            return {"ok": True}

        serverless.start({"handler": handler})
    """))
    broken = root / "broken.py"
    broken.write_text("raise SystemExit(3)  # dies at start-up, before taking a job\n")
    (root / "endpoints.yaml").write_text(
        f"server: {{heartbeat_interval_s: 1, admin_keys: [{ADMIN}]}}\n"
        "endpoints:\n"
        f"  echo: {{handler: {handler}, api_keys: [{CLIENT}], scaling: {{max_workers: 1, idle_timeout_s: 60, extra_workers: 0}}}}\n"
        f"  broken: {{handler: {broken}, api_keys: [{CLIENT}], scaling: {{max_workers: 1, idle_timeout_s: 60, extra_workers: 0}}}}\n"
    )
    proc, url = serve_process(root / "endpoints.yaml", root / "data")
    try:
        yield url
    finally:
        stop_process(proc, signal.SIGTERM)


class Watched:
    """A page with every console error, uncaught exception and failed request it produced."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page = self.context.new_page()
        self.page.set_default_timeout(UI_TIMEOUT_MS)
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))

    def close(self) -> None:
        self.context.close()


def test_the_dashboard_shows_a_worker_appear_when_a_job_arrives_and_its_log(browser: Any, server: str, tmp_path: Path) -> None:
    w = Watched(browser)
    page = w.page
    try:
        page.goto(f"{server}/dashboard#key={ADMIN}")
        card = page.locator('section.endpoint[data-endpoint="echo"]')
        card.locator("tr.no-workers").wait_for()  # scaled to zero: no worker yet
        assert "key=" not in page.url  # the key left the address bar for sessionStorage
        assert page.evaluate("sessionStorage.getItem('gpuserve.adminKey')") == ADMIN
        assert card.locator("tr.worker").count() == 0

        client = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {CLIENT}"}, timeout=30)
        job = client.post("/v2/echo/run", json={"input": {"line": "seen from the browser", "sleep_s": 1}}).json()["id"]

        row = card.locator("tr.worker")
        row.first.wait_for()  # the worker the job started, within a poll or two of its registration
        worker_id = row.first.get_attribute("data-worker")
        assert worker_id and worker_id.startswith("echo-")
        cells = row.first.locator("td").all_inner_texts()
        assert cells[0] == worker_id and cells[1] in {"INITIALIZING", "IDLE", "RUNNING"}
        assert cells[2] == socket.gethostname() and cells[3] == "CPU"

        wait_until(lambda: client.get(f"/v2/echo/status/{job}").json()["status"] == "COMPLETED", 60, "the job completes")
        # The start and its reason in the decisions, the cold start counted, the worker idle again.
        card.locator("li.decision", has_text="+1 start").wait_for()
        assert "job arrived at zero workers" in card.locator("li.decision").first.inner_text()
        page.wait_for_function("() => document.querySelector('[data-endpoint=echo] [data-tile=cold] .value').textContent === '1'")
        card.locator("tr.worker .state-IDLE").wait_for()
        assert card.locator("canvas").count() >= 3  # the three charts drew

        row.first.locator("a.log-link").click()
        page.locator("#log-text", has_text="line: seen from the browser").wait_for()
        assert page.locator("#log-worker").inner_text() == worker_id

        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 20_000
        assert w.problems == []
    finally:
        w.close()


def test_the_dashboard_shows_why_a_worker_is_unhealthy(browser: Any, server: str) -> None:
    w = Watched(browser)
    page = w.page
    try:
        client = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {CLIENT}"}, timeout=30)
        assert client.post("/v2/broken/run", json={"input": {}}).status_code == 200  # starts a worker, which dies
        page.goto(f"{server}/dashboard#key={ADMIN}")
        row = page.locator('section.endpoint[data-endpoint="broken"] tr.worker', has=page.locator(".state-UNHEALTHY"))
        row.first.wait_for()
        assert row.first.locator(".failure").inner_text() == "exited with code 3"
        assert w.problems == []
    finally:
        w.close()


def test_the_dashboard_refuses_without_the_admin_key(browser: Any, server: str) -> None:
    page_response = httpx.get(f"{server}/dashboard")
    assert page_response.status_code == 200 and "script-src" not in page_response.text
    csp = page_response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe" not in csp  # no inline script or style runs on the page
    assert httpx.get(f"{server}/dashboard/static/index.html").status_code == 404  # only the listed files
    r = httpx.get(f"{server}/api/dashboard")
    assert r.status_code == 401 and "server.admin_keys" in r.json()["error"]
    r = httpx.get(f"{server}/api/dashboard", headers={"Authorization": f"Bearer {CLIENT}"})
    assert r.status_code == 403 and "client key" in r.json()["error"]
    assert httpx.get(f"{server}/api/dashboard", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200

    w = Watched(browser)  # a fresh context: no key in its sessionStorage
    page = w.page
    try:
        page.goto(f"{server}/dashboard")
        page.locator("#login").wait_for()
        page.locator("#auth-error", has_text="missing or invalid admin key").wait_for()
        assert page.locator("section.endpoint").count() == 0
        page.fill("#key", CLIENT)
        page.click("#login button[type=submit]")
        page.locator("#auth-error", has_text="this key is a client key").wait_for()
        assert page.locator("section.endpoint").count() == 0
        page.fill("#key", ADMIN)
        page.click("#login button[type=submit]")
        page.locator('section.endpoint[data-endpoint="echo"]').wait_for()
        assert page.locator("#login").is_hidden()
        # What the browser logged: the two refusals it was meant to get, and nothing else.
        assert w.problems and all("401" in p or "403" in p for p in w.problems), w.problems
    finally:
        w.close()


def test_the_dashboard_data_covers_queue_and_load_balancing_endpoints(tmp_path: Path) -> None:
    """No browser: the JSON the page draws, for both kinds of endpoint, on a server whose worker the test registers."""
    from tests.lb.support import lb_deployment
    from tests.support.live import SERVER_FAST, Harness, deployment

    deps = [deployment("q", gpu_type="A100", gpus_per_worker=2), lb_deployment("lb", tmp_path / "lb")]
    with Harness(tmp_path / "srv", deps, SERVER_FAST, backend=None) as h:
        h.add_worker("w1", ep="q")
        h.submit({"input": {}}, ep="q")

        def sampled() -> dict[str, Any] | None:
            body: dict[str, Any] = h.admin.get("/api/dashboard").json()
            eps = {e["id"]: e for e in body["endpoints"]}
            return eps if all(e["series"] and len(e["series"]["tS"]) >= 2 for e in eps.values()) else None

        eps = wait_until(sampled, 30, "two samples of each endpoint")
        q, lb = eps["q"], eps["lb"]
        assert q["type"] == "queue" and lb["type"] == "load_balancer"
        assert q["queue"]["inQueue"] == 1 and q["waiting"]["code"] == "cold_start"
        assert q["series"]["inQueue"][-1] == 1 and q["series"]["workers"]["INITIALIZING"][-1] == 1
        (w,) = q["workers"]
        assert w["id"] == "w1" and w["state"] == "INITIALIZING" and w["gpu"] == "2x A100"
        assert w["host"] == socket.gethostname() and w["logUrl"] == "/api/workers/w1/logs" and w["failure"] is None
        assert lb["workers"] == [] and lb["waiting"] is None and lb["queue"] == {"inQueue": 0, "inProgress": 0, "oldestQueuedAgeS": 0.0}
        assert h.client.get("/api/dashboard").status_code == 403  # the endpoint's client key
