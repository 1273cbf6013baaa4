"""gpuserve: an open-source serverless GPU platform, simulation-first."""

__version__ = "0.1.0"
