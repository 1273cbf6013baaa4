"""Slow with progress: a long CPU-bound job that reports progress, visible on /status while it runs.

Locally:  python examples/slow_progress/handler.py --test_input '{"input": {"steps": 5}}'
Served:   python examples/slow_progress/handler.py --serve --rp_api_port 8000
"""

import hashlib

from gpuserve import serverless


def handler(job):
    steps = int(job["input"].get("steps", 10))
    work = int(job["input"].get("work", 20_000))
    digest = b"seed"
    for step in range(1, steps + 1):
        for _ in range(work):  # CPU-bound: runs in a thread, so heartbeats keep going
            digest = hashlib.sha256(digest).digest()
        serverless.progress_update(job, {"step": step, "of": steps, "pct": round(100 * step / steps)})
    return {"steps": steps, "digest": digest.hex()[:16]}


if __name__ == "__main__":
    serverless.start({"handler": handler})
