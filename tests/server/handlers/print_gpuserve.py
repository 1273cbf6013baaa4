"""A handler that prints: "ready <worker id>" at start, and each job's input["line"] (for the log tests)."""

import os

from gpuserve import serverless

print("ready", os.environ["GPUSERVE_WORKER_ID"], flush=True)


def handler(job):
    line = job["input"].get("line")
    if line is not None:
        print(line, flush=True)
    return {"printed": line}


serverless.start({"handler": handler})
