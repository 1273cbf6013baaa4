"""Echo handler on gpuserve's own worker SDK."""

from gpuserve import serverless


def handler(job):
    return {"echo": job["input"]}


serverless.start({"handler": handler})
