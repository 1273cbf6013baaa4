"""Sweep points and replications as Ray tasks on a Ray cluster: one simulation per task, the same results as a local run.

A run depends only on its scenario and seed (replicate.py), so where it runs changes nothing:
each task builds the scenario from the raw mapping and the seed it is sent and returns the
`SimResult`; the driver writes the records itself, so the results folder is on the machine
that asked, whatever node simulated. Paths a scenario names (a trace file) must exist at the
same place on every node (a shared filesystem, or the same checkout). `--jobs` alone runs
locally and needs no Ray.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from gpuserve.experiments.replicate import RunTask, TaskProgress, run_one
from gpuserve.sim.records import SimResult

__all__ = ["run_tasks_on_ray"]

CPUS_PER_RUN = 1  # a simulation is single-threaded


def _simulate(task: RunTask) -> SimResult:
    return run_one(task)


def run_tasks_on_ray(tasks: Sequence[RunTask], address: str, progress: TaskProgress | None = None) -> list[SimResult]:
    """Run every task as a Ray task on the cluster at `address`; results in task order, records written here."""
    from gpuserve.backends.ray_backend import connect

    connect(address)
    import ray

    remote: Any = ray.remote(num_cpus=CPUS_PER_RUN, max_retries=3)(_simulate)
    # The records are written by this process, not on the node: the task only simulates.
    refs = [remote.remote(replace(task, records_dir=None)) for task in tasks]
    index = {ref: i for i, ref in enumerate(refs)}
    out: list[SimResult | None] = [None] * len(tasks)
    pending = list(refs)
    done = 0
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            i = index[ref]
            result: SimResult = ray.get(ref)
            if tasks[i].records_dir is not None:
                run_one(tasks[i], result=result)
            out[i] = result
            if progress:
                progress(done, len(tasks), 1.0, 1.0)  # a whole task finished: the bar moves in task steps
            done += 1
    return [r for r in out if r is not None]
