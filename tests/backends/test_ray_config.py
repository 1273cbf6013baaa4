"""The Ray backend's pure parts and its refusals: what a worker asks of Ray, flags used without it, unsupported endpoints."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpuserve.backends.ray_backend import GPU_TYPE_PREFIX, GPU_TYPE_SHARE, worker_resources
from gpuserve.cli import app
from gpuserve.core.types import EndpointKind, LoadBalancingSpec
from tests.support.live import endpoint_spec


def test_a_worker_asks_for_its_gpus_and_a_share_of_its_gpu_type_label() -> None:
    assert worker_resources(endpoint_spec("e", gpu_type="A100", gpus_per_worker=2)) == {"GPU": 2.0, GPU_TYPE_PREFIX + "A100": GPU_TYPE_SHARE}
    # No GPU type: a CPU-only worker, one CPU.
    assert worker_resources(endpoint_spec("e", gpu_type=None)) == {"CPU": 1.0}


def test_ray_address_without_the_ray_backend_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text("endpoints:\n  - {id: e, handler: h.py}\n")
    result = CliRunner().invoke(app, ["serve", str(config), "--ray-address", "127.0.0.1:6379"])
    assert result.exit_code != 0
    assert "--ray-address is for --backend ray, not --backend process" in result.output


@pytest.mark.parametrize("flag", ["--no-container-gpus", "--container-gpus"])
def test_container_gpus_without_the_ray_backend_is_refused_by_name(tmp_path: Path, flag: str) -> None:
    config = tmp_path / "endpoints.yaml"
    config.write_text("endpoints:\n  - {id: e, handler: h.py}\n")
    result = CliRunner().invoke(app, ["serve", str(config), "--backend", "docker", flag])
    assert result.exit_code != 0
    assert f"{flag} is for --backend ray, not --backend docker" in result.output


def test_the_ray_backend_names_what_it_cannot_run() -> None:
    from gpuserve.backends.ray_backend import RayBackend
    from gpuserve.core.errors import ConfigError
    from gpuserve.live.deployment import Deployment

    backend = RayBackend.__new__(RayBackend)  # configure() validates before reading any Ray state: no cluster needed
    with pytest.raises(ConfigError, match=r"handler.*or image is required by the ray backend"):
        backend.configure(Deployment(spec=endpoint_spec("e")))
    lb = replace(endpoint_spec("e"), kind=EndpointKind.LOAD_BALANCER, load_balancing=LoadBalancingSpec())
    with pytest.raises(ConfigError, match=r"command.*is required by the ray backend for a load_balancer endpoint without an image"):
        backend.configure(Deployment(spec=lb))
