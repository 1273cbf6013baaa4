"""Hold a local multi-node Ray cluster on 127.0.0.1 until SIGTERM or SIGINT: what scripts/ray-setup.sh starts.

Ray's own `ray.cluster_utils.Cluster`: a real GCS and one real raylet per node, each declaring
`--gpus` GPUs of `--gpu-type` (the Ray backend's convention: `num_gpus` plus the label resource
`gpu_type:<T>`). `ray start` would bind every interface; this keeps all of it on the loopback.
The head's address (host:port) is written to `--address-file` once every node is up.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray loads: loopback addresses only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--gpu-type", default="A100")
    parser.add_argument("--object-store-bytes", type=int, default=100_000_000)
    parser.add_argument("--address-file", type=Path, required=True)
    args = parser.parse_args()
    if args.nodes < 1:
        parser.error(f"--nodes must be at least 1, was {args.nodes}")
    from ray.cluster_utils import Cluster

    node: dict[str, Any] = {
        "num_cpus": 1,
        "num_gpus": args.gpus,
        "resources": {f"gpu_type:{args.gpu_type}": 1},
        "object_store_memory": args.object_store_bytes,
        "node_ip_address": "127.0.0.1",
    }
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})

    def stop(_signum: int, _frame: object) -> None:
        cluster.shutdown()
        args.address_file.unlink(missing_ok=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(args.nodes - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    partial = args.address_file.with_suffix(".tmp")
    partial.write_text(str(cluster.address))
    partial.replace(args.address_file)
    print(f"ray cluster up at {cluster.address}: {args.nodes} node(s), {args.gpus} x {args.gpu_type} each", flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
