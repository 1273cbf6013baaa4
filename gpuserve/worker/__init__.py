"""The worker SDK that runs inside a worker: standard library and httpx only, so it installs anywhere.

    from gpuserve import serverless

    def handler(job):
        return {"echo": job["input"]}

    serverless.start({"handler": handler})
"""

from gpuserve.worker.runner import progress_update
from gpuserve.worker.serverless import start, worker_id

__all__ = ["progress_update", "start", "worker_id"]
