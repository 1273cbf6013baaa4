"""`gpuserve.serverless`: the handler-facing API (start, progress_update), same shape as `runpod.serverless`."""

from gpuserve.worker.runner import progress_update
from gpuserve.worker.serverless import start, worker_id

__all__ = ["progress_update", "start", "worker_id"]
