"""`gpuserve.serverless`: the handler-facing API (start, progress_update), same shape as `runpod.serverless`."""

from gpuserve.worker.entrypoint import start, worker_id
from gpuserve.worker.runner import progress_update

__all__ = ["progress_update", "start", "worker_id"]
