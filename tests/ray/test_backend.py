"""The Ray backend against a real three-node Ray cluster: placement by Ray's GPU accounting, THROTTLED, a lost node's jobs requeued."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from gpuserve.backends.ray_backend import ray_backend_factory
from gpuserve.core.types import WorkerState
from tests.ray.conftest import GPU_TYPE, GPUS_PER_NODE, NODES, RayCluster
from tests.support.live import FAST, Live, code_deployment

# Holds each job until the test creates the release file, so the jobs are mid-run when a node goes.
HELD = """
import os, time
from gpuserve import serverless

print("worker", os.environ["GPUSERVE_WORKER_ID"], "GPUs", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)

def handler(job):
    release = os.environ["RELEASE"]
    for _ in range(6000):
        if os.path.exists(release):
            break
        time.sleep(0.05)
    return {"worker": os.environ["GPUSERVE_WORKER_ID"], "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}

serverless.start({"handler": handler})
"""

SETTINGS = replace(FAST, account_max_workers=None, drain_timeout_s=3.0)


def _states(live: Live) -> Counter[WorkerState]:
    return Counter(w.state for w in live.workers("gpu"))


def test_ray_places_six_workers_throttles_two_and_requeues_a_lost_nodes_jobs(tmp_path: Path, ray_cluster: RayCluster) -> None:
    release = tmp_path / "release"
    dep = code_deployment(
        tmp_path, "gpu", HELD, max_workers=8, idle_timeout_s=60.0, gpu_type=GPU_TYPE, gpus_per_worker=1,
        env={"RELEASE": str(release)},
    )
    with Live(tmp_path, [dep], SETTINGS, backend=ray_backend_factory(ray_cluster.address)) as live:
        jobs = [live.run("gpu", {"n": i}) for i in range(8)]
        # 3 nodes x 2 GPUs: six workers take a job each; Ray has no GPU for the other two.
        live.until(
            lambda: _states(live)[WorkerState.RUNNING] == NODES * GPUS_PER_NODE and _states(live)[WorkerState.THROTTLED] == 2,
            "six workers running and two THROTTLED",
            timeout_s=120,
        )
        backend = live.backend
        running = [w.worker_id for w in live.workers("gpu") if w.state is WorkerState.RUNNING]
        placement = {wid: backend.placement(wid) for wid in running}
        per_node = Counter(node for node, _ in placement.values())
        assert len(per_node) == NODES and set(per_node.values()) == {GPUS_PER_NODE}, placement
        for node in per_node:  # each node's two workers got its two distinct GPUs
            assert sorted(g for n, gpus in placement.values() if n == node for g in gpus) == [0, 1]
        assert all(backend.placement(w.worker_id) == (None, ()) for w in live.workers("gpu") if w.state is WorkerState.THROTTLED)
        # The worker's own output comes back through `gpuserve logs` (the operator route).
        some = running[0]
        live.until(lambda: f"worker {some}" in live.admin.get(f"/api/workers/{some}/logs").json().get("logs", ""), "the worker's log")

        # Lose a node that holds two running jobs (not the head: this test's driver is attached there).
        victim = ray_cluster.nodes[0]
        lost = [wid for wid, (node, _) in placement.items() if node == victim.node_id]
        held = {job for wid in lost for job in live.registry.get(wid).in_flight}
        assert len(lost) == 2 and len(held) == 2
        ray_cluster.cluster.remove_node(victim)
        ray_cluster.nodes.remove(victim)
        # Ray's node failure detection: both workers UNHEALTHY, their jobs back in the queue.
        live.until(
            lambda: all(live.registry.get(w) is None or live.registry.get(w).state is WorkerState.UNHEALTHY for w in lost),
            "the lost node's workers UNHEALTHY",
        )
        live.until(lambda: all(live.status("gpu", j)["status"] in ("IN_QUEUE", "IN_PROGRESS") for j in held), "their jobs requeued")
        release.touch()
        done = {j: live.wait("gpu", j, timeout_s=120) for j in jobs}
        assert all(body["status"] == "COMPLETED" for body in done.values()), done
        for job in held:  # finished elsewhere, after a second attempt
            assert done[job]["output"]["worker"] not in lost
        # Cold-start records as for the other backends: placement, actor start, the SDK's phases.
        # A surviving worker's: the lost node may have gone before its first report came back.
        survivor = next(wid for wid in running if wid not in lost)
        live.until(lambda: getattr(backend.cold_start(survivor), "runtime_init_s", None) is not None, "the survivor's reported phases")
        record = backend.cold_start(survivor)
        assert record is not None and record.create_s is not None and record.start_s is not None
        assert record.runtime_init_s is not None and record.first_take_s is not None and record.total_s is not None
        assert record.total_s >= record.create_s
