"""A sync handler on gpuserve's own worker SDK that sleeps `sleep_s` seconds, then echoes."""

import time

from gpuserve import serverless


def handler(job):
    time.sleep(job["input"].get("sleep_s", 0))
    return {"echo": job["input"]}


serverless.start({"handler": handler})
