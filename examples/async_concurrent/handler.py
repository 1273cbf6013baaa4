"""Async concurrent: one worker runs up to 4 jobs at once (I/O-bound work, e.g. calling a model server).

Locally:  python examples/async_concurrent/handler.py --test_input '{"input": {"seconds": 0.5}}'
Served:   python examples/async_concurrent/handler.py --serve --rp_api_port 8000
"""

import asyncio
import os

from gpuserve import serverless

MAX_CONCURRENCY = int(os.environ.get("MAX_CONCURRENCY", "4"))


async def handler(job):
    seconds = float(job["input"].get("seconds", 1.0))
    await asyncio.sleep(seconds)
    return {"slept_s": seconds, "job_id": job["id"], "worker_id": serverless.worker_id()}


def concurrency_modifier(current):
    # Runs before each job-take: return how many jobs this worker may hold at once.
    return MAX_CONCURRENCY


if __name__ == "__main__":
    serverless.start({"handler": handler, "concurrency_modifier": concurrency_modifier})
