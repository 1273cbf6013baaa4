"""Reports progress, then holds the job until the file named by input.gate exists (at most 60 s)."""

import os
import time

from gpuserve import serverless


def handler(job):
    gate = job["input"]["gate"]
    serverless.progress_update(job, {"step": "at the gate"})
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"through": os.path.exists(gate)}


if __name__ == "__main__":
    serverless.start({"handler": handler})
