"""One real local Ray cluster for the tests of this folder: three raylets on 127.0.0.1, each declaring 2 GPUs of type A100.

Ray's own test utility (`ray.cluster_utils.Cluster`) starts a real GCS and a real raylet per node,
each with its own resources, so placement, resource accounting and node failure are Ray's, not
a model of them. No GPU needs to exist: Ray counts what a node declares. Without Ray the tests
skip, unless GPUSERVE_REQUIRE_RAY=1 (CI), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Before Ray is imported: every address Ray picks is the loopback one (nothing listens beyond
# this machine), which is also what lets a driver join a cluster on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

NODES = 3
GPUS_PER_NODE = 2
GPU_TYPE = "A100"
NODE_ARGS: dict[str, Any] = {
    "num_cpus": 1,
    "num_gpus": GPUS_PER_NODE,
    "resources": {f"gpu_type:{GPU_TYPE}": 1},
    "object_store_memory": 80 * 1024 * 1024,  # Ray's floor is 75 MiB; three nodes on a 24 GiB machine
    "node_ip_address": "127.0.0.1",
}
# A lost node is declared dead within about a second instead of Ray's default 15 s.
SYSTEM_CONFIG = {"health_check_period_ms": 300, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}


@dataclass
class RayCluster:
    cluster: Any
    head: Any
    nodes: list[Any]  # the non-head nodes (a test may remove one: the driver is on the head)

    @property
    def address(self) -> str:
        return str(self.cluster.address)


def _require_ray() -> None:
    try:
        import ray  # noqa: F401
        from ray.cluster_utils import Cluster  # noqa: F401
    except ImportError as exc:
        if os.environ.get("GPUSERVE_REQUIRE_RAY") == "1":
            pytest.fail(f"GPUSERVE_REQUIRE_RAY=1 but Ray is not installed ({exc}); pip install 'gpuserve[ray]'")
        pytest.skip(f"Ray is not installed ({exc}); pip install 'gpuserve[ray]'")


# Package scope: the cluster goes when the last test here ends, not idling through the rest of the suite.
@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[RayCluster]:
    _require_ray()
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        # No dashboard and no log monitor (the workers' output comes back through gpuserve, not the driver).
        head_node_args={**NODE_ARGS, "include_dashboard": False, "include_log_monitor": False, "_system_config": SYSTEM_CONFIG},
    )
    try:
        nodes = [cluster.add_node(**NODE_ARGS) for _ in range(NODES - 1)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="gpuserve", log_to_driver=False, _node_ip_address="127.0.0.1")
        yield RayCluster(cluster, cluster.head_node, nodes)
    finally:
        ray.shutdown()
        cluster.shutdown()


def actor_gone(worker_id: str) -> bool:
    """No Ray actor runs for this worker any more (the backend names each worker's actor after it)."""
    import ray

    try:
        ray.get_actor(worker_id, namespace="gpuserve")
    except ValueError:
        return True
    return False
