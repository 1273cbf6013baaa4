"""An async generator yielding input['n'] chunks, with the aggregate as the final output (runpod SDK)."""

import asyncio

import runpod


async def handler(job):
    for i in range(int(job["input"].get("n", 5))):
        await asyncio.sleep(0.02)
        yield {"i": i}


runpod.serverless.start({"handler": handler, "return_aggregate_stream": True})
