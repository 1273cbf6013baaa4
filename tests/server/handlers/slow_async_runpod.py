"""An async handler that sleeps input['sleep_s'] (cancellable through the stop channel), on the runpod SDK."""

import asyncio
import os
from pathlib import Path

import runpod


async def handler(job):
    marker = job["input"].get("marker")
    try:
        await asyncio.sleep(float(job["input"].get("sleep_s", 30)))
    except asyncio.CancelledError:
        if marker:
            # Written aside, then renamed: the test polls for the file and must never read it half-written.
            tmp = Path(marker + ".tmp")
            tmp.write_text(f"cancelled {job['id']} on {os.environ.get('RUNPOD_POD_ID')}")
            os.replace(tmp, marker)
        raise
    return {"slept": job["input"].get("sleep_s"), "worker": os.environ.get("RUNPOD_POD_ID")}


runpod.serverless.start({"handler": handler})
