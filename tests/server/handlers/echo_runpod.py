"""Echo handler on the unmodified runpod SDK."""

import runpod


def handler(job):
    return {"echo": job["input"]}


runpod.serverless.start({"handler": handler})
