"""The live twin of gpuserve.sim: worker registry, auth, wall clock, deployments, the backend protocol and the runtime."""

from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import LiveWorker, WorkerRegistry
from gpuserve.live.runtime import Endpoint, Runtime
from gpuserve.live.settings import ServerSettings

__all__ = ["Deployment", "Endpoint", "LiveWorker", "Runtime", "ServerSettings", "WorkerRegistry"]
