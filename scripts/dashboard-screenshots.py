"""Regenerates docs/dashboard.png and docs/dashboard-log.png: a real `gpuserve serve` under a minute of traffic, in headless chromium.

    python scripts/dashboard-screenshots.py [--out docs] [--seconds 45]

Two process endpoints (a slow "generate" that scales 0..3 on request count, a fast "embed"),
priced per CPU-second so the cost shows; traffic in three phases (steady, a burst, a lull),
then a full-page screenshot and one of a worker's log opened from its table row. Needs the
distribution's chromium (scripts/chromium-setup.sh) and Playwright for Python (the dev extra).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ADMIN, CLIENT = "sk-ops", "sk-app"

HANDLER = """
    import os, random, time
    from gpuserve import serverless

    print("loading model for", os.environ["GPUSERVE_WORKER_ID"], flush=True)
    time.sleep(float(os.environ.get("LOAD_S", "0")))

    def handler(job):
        time.sleep(job["input"]["work_s"])
        print("job", job["id"], "done in", job["input"]["work_s"], "s", flush=True)
        return {"tokens": random.randint(10, 500)}

    serverless.start({"handler": handler})
"""


def serve(config: Path, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpuserve.cli", "serve", str(config), "--port", "0", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"},
    )
    assert proc.stdout is not None
    for _ in range(50):
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", proc.stdout.readline())
        if match:
            return proc, match.group(1)
    proc.kill()
    raise SystemExit("gpuserve serve printed no address")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--seconds", type=float, default=45.0, help="how long the traffic runs before the screenshot")
    args = parser.parse_args()
    chromium = os.environ.get("GPUSERVE_CHROMIUM") or shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium: bash scripts/chromium-setup.sh")
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="gpuserve-shots-") as tmp:
        root = Path(tmp)
        (root / "handler.py").write_text(textwrap.dedent(HANDLER))
        (root / "endpoints.yaml").write_text(textwrap.dedent(f"""
            server: {{heartbeat_interval_s: 1, admin_keys: [{ADMIN}]}}
            billing: {{prices_usd_per_gpu_s: {{cpu: 0.00019}}}}
            endpoints:
              generate:
                handler: {root / "handler.py"}
                env: {{LOAD_S: "1.5"}}
                api_keys: [{CLIENT}]
                scaling: {{max_workers: 3, idle_timeout_s: 8, scaler: request_count, scaler_value: 2}}
              embed:
                handler: {root / "handler.py"}
                api_keys: [{CLIENT}]
                scaling: {{max_workers: 1, idle_timeout_s: 30}}
        """))
        proc, url = serve(root / "endpoints.yaml", root / "data")
        try:
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {CLIENT}"}, timeout=30)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, headless=True)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(f"{url}/dashboard#key={ADMIN}")
                page.locator("section.endpoint").first.wait_for()
                start = time.monotonic()
                while (elapsed := time.monotonic() - start) < args.seconds:
                    # steady, a burst, a lull: the generate endpoint scales up and back
                    rate = 1.0 if elapsed < args.seconds / 3 else 4.0 if elapsed < 2 * args.seconds / 3 else 0.3
                    if rng.random() < rate / 5:
                        client.post("/v2/generate/run", json={"input": {"work_s": round(rng.uniform(0.4, 1.8), 2)}})
                    client.post("/v2/embed/run", json={"input": {"work_s": round(rng.uniform(0.02, 0.08), 3)}})
                    time.sleep(0.2)
                time.sleep(4)  # two more polls
                args.out.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out / "dashboard.png"), full_page=True)
                card = page.locator('section.endpoint[data-endpoint="generate"]')
                card.locator("a.log-link").first.click()
                page.locator("#log-text", has_text="done in").wait_for()
                page.set_viewport_size({"width": 1440, "height": 1300})
                page.locator("#log").scroll_into_view_if_needed()
                page.screenshot(path=str(args.out / "dashboard-log.png"))
                browser.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    print(f"wrote {args.out / 'dashboard.png'} and {args.out / 'dashboard-log.png'}")


if __name__ == "__main__":
    main()
