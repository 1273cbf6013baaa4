"""The worker SDK that runs inside a worker: standard library and httpx only, so it installs anywhere.

    from gpuserve import serverless

    def handler(job):
        return {"echo": job["input"]}

    serverless.start({"handler": handler})
"""

from gpuserve.worker.entrypoint import start, worker_id
from gpuserve.worker.runner import progress_update

__all__ = ["progress_update", "start", "worker_id"]
