"""gpuserve: an open-source serverless GPU platform, simulation-first."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    # `gpuserve.serverless` loads on first use, so `import gpuserve` stays light inside a
    # worker image (no typer, fastapi or pandas behind it).
    if name == "serverless":
        import importlib

        return importlib.import_module("gpuserve.serverless")
    raise AttributeError(f"module 'gpuserve' has no attribute {name!r}")
