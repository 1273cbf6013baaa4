"""Shards: a run whose endpoints share nothing, split over processes, with records merged to equal one process's.

Endpoints interact only through what they share: declared hosts (GPUs, a registry link,
CPU cores, image caches), host failures, the account-wide worker limit, and, on the implicit
unlimited host, an image cache when a pull takes time or extra workers look at it. Without
those, each endpoint's run depends on its own streams only (the engine keys every stream by
the endpoint's position in the scenario), so any split of the endpoints gives the same
records. `shard_blockers` names what forbids a split; `shard_groups` keeps endpoints whose
images matter to each other together.

A shard runs to its own end, then on to the whole run's end (the last job of any shard) so
keep-alive expiries and ticks after its last job happen as in one process; `merge_records`
then renumbers jobs (arrival order, endpoint position on ties) and workers (creation order)
and interleaves the interval rows by time. Where two shards record something at the very
same instant, no process can tell which came first in one run: the merge refuses
(`MergeAmbiguous`) and `run_sharded` runs the scenario in one process instead. Continuous
arrival and service times make that a measure-zero event; clock-aligned scenarios can meet it.
"""

from __future__ import annotations

import copyreg
import io
import math
import multiprocessing
import pickle
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from gpuserve.core.errors import ConfigError
from gpuserve.sim.engine import RawRecords, SimConfig, Simulation

__all__ = [
    "AUTO_SHARD_MIN_JOBS",
    "MergeAmbiguous",
    "ShardPart",
    "ShardedRun",
    "auto_processes",
    "expected_jobs",
    "merge_records",
    "plan_shards",
    "run_parts",
    "run_sharded",
    "shard_blockers",
    "shard_groups",
]


class MergeAmbiguous(Exception):
    """Two shards recorded an event at the same instant: their order in one process is unknown."""


def shard_blockers(config: SimConfig) -> list[str]:
    """Why this run's endpoints cannot run in separate processes (empty: they can)."""
    reasons = []
    if len(config.endpoints) < 2:
        reasons.append("the scenario has one endpoint")
    if config.hosts:
        reasons.append(f"{len(config.hosts)} declared host(s) share GPUs, link, CPU and image caches between endpoints")
    if config.account_max_workers is not None:
        reasons.append(f"account_max_workers={config.account_max_workers} is one limit across endpoints")
    if config.host_failures:
        reasons.append("host failures take down every endpoint's workers on the host")
    return reasons


def _image_matters(config: SimConfig, i: int) -> bool:
    """Whether endpoint i's starts read or write the unlimited host's image cache in a way another endpoint sees."""
    ep = config.endpoints[i]
    prof = ep.cold_start
    return prof.pulled_gb > 0 or "image_pull_s" in prof.distributions or ep.spec.scaling.extra_workers > 0


def shard_groups(config: SimConfig) -> list[list[int]]:
    """Endpoints (positions) that must share a process: all those of an image whose cache matters, each other one alone.

    One endpoint whose pulls take time (or whose extra workers ask whether the image is
    cached) ties every endpoint of that image: its pull makes theirs wait or skip, and theirs
    cache the image for it."""
    matters = {config.endpoints[i].cold_start.image for i in range(len(config.endpoints)) if _image_matters(config, i)}
    tied: dict[str, list[int]] = {}
    alone: list[list[int]] = []
    for i, ep in enumerate(config.endpoints):
        if ep.cold_start.image in matters:
            tied.setdefault(ep.cold_start.image, []).append(i)
        else:
            alone.append([i])
    return sorted([*tied.values(), *alone], key=lambda g: g[0])


def expected_jobs(config: SimConfig, i: int) -> float:
    """Endpoint i's expected arrivals over the run (what balances the shards)."""
    workload = config.endpoints[i].workload
    times = getattr(workload, "times_s", None)
    if times is not None:
        return float(len(times))
    rate = float(getattr(workload, "mean_rate_per_s", 0.0) or 0.0)
    return rate * config.duration_s if math.isfinite(rate) else 0.0


# Below this many expected jobs a run is not split unless asked: spawning a process and
# importing the simulator costs 1-2 s, about what one process simulates 50,000 jobs in.
AUTO_SHARD_MIN_JOBS = 1_000_000


def auto_processes(config: SimConfig, cores: int) -> int:
    """How many processes to split a run over when nobody said: `cores` for a run of a million expected jobs or more, else 1."""
    total = sum(expected_jobs(config, i) for i in range(len(config.endpoints)))
    return cores if total >= AUTO_SHARD_MIN_JOBS else 1


def plan_shards(config: SimConfig, processes: int) -> list[list[int]]:
    """At most `processes` shards of whole groups, balanced by expected jobs (largest group first)."""
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ConfigError("jobs", processes, "must be an integer >= 1")
    groups = shard_groups(config)
    n = min(processes, len(groups))
    loads = [0.0] * n
    shards: list[list[int]] = [[] for _ in range(n)]
    weighted = sorted(groups, key=lambda g: (-sum(expected_jobs(config, i) for i in g), g[0]))
    for g in weighted:
        k = min(range(n), key=lambda s: (loads[s], s))
        shards[k] += g
        loads[k] += sum(expected_jobs(config, i) for i in g) + 1.0
    return [sorted(s) for s in shards if s]


@dataclass
class ShardPart:
    """One shard's records and what the merge needs to place them in the whole run."""

    endpoints: list[int]
    records: RawRecords
    own_end_s: float  # its last job's end (or the horizon, or the drain limit), before it ran on to the run's end
    stopped_by: str  # what ended its own run: "job", "horizon" or "deadline" (Simulation.stopped_by)
    initial_workers: int  # workers started by the first pass, before any event
    intervals_before_close: int  # interval rows recorded before the end closed the open ones
    at_end_events: int  # events left due at exactly the run's end (their order is unknowable)
    peak_rss_kib: int = 0  # the shard process's peak resident memory (Linux), for benchmarks
    cpu_s: float = 0.0  # the CPU time the shard process used (user + system), for benchmarks


@dataclass
class ShardedRun:
    """A run's records and how it ran: in how many processes, and why not more."""

    records: RawRecords
    shards: list[list[int]] = field(default_factory=list)  # endpoint positions per process; [] when in one
    note: str = ""


def _proxy(mapping: dict[Any, Any]) -> MappingProxyType[Any, Any]:
    return MappingProxyType(mapping)


def _dumps(obj: object) -> bytes:
    """Pickle with the frozen mappings the configs hold (MappingProxyType) as plain dicts rebuilt into proxies."""
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    table: dict[Any, Any] = dict(copyreg.dispatch_table)
    table[MappingProxyType] = lambda m: (_proxy, (dict(m),))
    pickler.dispatch_table = table
    pickler.dump(obj)
    return buf.getvalue()


def _shard_main(conn: Any, config_bytes: bytes, endpoints: list[int]) -> None:
    """A shard's process: run to its own end, report it, run on to the run's end, send the records."""
    try:
        config: SimConfig = pickle.loads(config_bytes)
        del config_bytes
        sim = Simulation(config, endpoints)
        own_end_s = sim.run_to_end()
        conn.send(("ended", own_end_s))
        end_s = conn.recv()
        raw = sim.finish(end_s)
        part = ShardPart(endpoints, raw, own_end_s, sim.stopped_by, sim.initial_workers, sim.intervals_before_close, sim.at_end_events)
        part.peak_rss_kib = _peak_rss_kib()
        part.cpu_s = time.process_time()
        del sim
        conn.send_bytes(_dumps(("records", part)))
    except BaseException:  # the parent must hear of any failure, or it waits forever
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _peak_rss_kib() -> int:
    try:
        import resource
    except ImportError:  # not on a Unix
        return 0
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _recv(conn: Any, what: str) -> Any:
    msg = pickle.loads(conn.recv_bytes())
    if msg[0] == "error":
        raise RuntimeError(f"a simulation shard failed:\n{msg[1]}")
    if msg[0] != what:
        raise RuntimeError(f"a simulation shard sent {msg[0]!r}, expected {what!r}")
    return msg[1]


def run_parts(config: SimConfig, shards: Sequence[Sequence[int]]) -> list[ShardPart]:
    """Run each shard in its own spawned process; returns their parts in shard order."""
    context = multiprocessing.get_context("spawn")  # as sweeps: a fork would copy the parent's threads' locks
    config_bytes = _dumps(config)
    conns, procs = [], []
    try:
        for endpoints in shards:
            parent, child = context.Pipe()
            proc = context.Process(target=_shard_main, args=(child, config_bytes, list(endpoints)), daemon=True)
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        del config_bytes
        ends = [float(_recv(c, "ended")) for c in conns]
        end_s = max(ends)
        for c in conns:
            c.send(end_s)
        parts: list[ShardPart] = [_recv(c, "records") for c in conns]
        for p in procs:
            p.join()
        return parts
    finally:
        for c in conns:
            c.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()


def run_sharded(config: SimConfig, processes: int) -> ShardedRun:
    """The run's records, from up to `processes` shards when its endpoints share nothing, else from one process.

    The records equal one process's (`tests/sim/test_shards.py`); `note` says why a run was
    not split, or ran again in one process because two shards met at one instant."""
    blockers = shard_blockers(config)
    shards = plan_shards(config, processes) if not blockers and processes > 1 else []
    if blockers or len(shards) < 2:
        why = "; ".join(blockers) if blockers else ("one process asked for" if processes <= 1 else "every endpoint shares an image with the others")
        return ShardedRun(Simulation(config).run(), [], f"one process: {why}")
    parts = run_parts(config, shards)
    try:
        return ShardedRun(merge_records(config, parts), shards, f"{len(shards)} processes")
    except MergeAmbiguous as exc:
        del parts
        return ShardedRun(Simulation(config).run(), [], f"one process: {exc}")


# -- the merge ------------------------------------------------------------------------------


def _ties_across(times: np.ndarray, shard: np.ndarray) -> float | None:
    """The first time at which two neighbouring rows (sorted by time) come from different shards, if any."""
    if times.size < 2:
        return None
    bad = (times[1:] == times[:-1]) & (shard[1:] != shard[:-1])
    if bad.any():
        return float(times[1:][bad][0])
    return None


def _cat(parts: Sequence[Any], dtype: Any) -> np.ndarray:
    arrays = [np.asarray(p, dtype=dtype) for p in parts]
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)


def merge_records(config: SimConfig, parts: Sequence[ShardPart]) -> RawRecords:
    """The records one process would have made, from the shards' (raises MergeAmbiguous where that is unknowable)."""
    end_s = max(p.own_end_s for p in parts)
    last = [p for p in parts if p.own_end_s == end_s]
    if len(last) > 1 and any(p.stopped_by == "job" for p in last):
        raise MergeAmbiguous(f"the last jobs of {len(last)} shards end at the same instant ({end_s} s)")
    for p in parts:
        if p.at_end_events:
            raise MergeAmbiguous(f"a shard has {p.at_end_events} event(s) at the run's last instant ({end_s} s)")
    raws = [p.records for p in parts]

    # Jobs: the whole run's order is arrival time, then endpoint position (a stable sort of the
    # endpoints' arrivals concatenated in order); within an endpoint each shard kept its order.
    sizes = [len(r.job_arrival_s) for r in raws]
    offsets = np.cumsum([0, *sizes])
    arrival = _cat([r.job_arrival_s for r in raws], float)
    job_ep = _cat([r.job_endpoint for r in raws], np.int32)
    # Each shard's rows are already in that order, so a stable sort by time merges sorted runs
    # (timsort: about linear); only arrivals at one instant in two shards need the endpoint key.
    order = np.argsort(arrival, kind="stable")
    t_sorted = arrival[order]
    if (t_sorted[1:] == t_sorted[:-1]).any():
        order = np.lexsort((job_ep, arrival))
    n = arrival.size
    new_of = np.empty(n, dtype=np.int64)
    new_of[order] = np.arange(n)
    job_map = [new_of[offsets[s] : offsets[s + 1]] for s in range(len(raws))]

    # Workers: the first pass's starts in endpoint order, then every other start by its time.
    init_keys, rest_keys = [], []
    for s, (p, r) in enumerate(zip(parts, raws, strict=True)):
        eid_pos = {config.endpoints[g].spec.endpoint_id: g for g in p.endpoints}
        for k, w in enumerate(r.workers):
            if k < p.initial_workers:
                init_keys.append((eid_pos[w["endpoint"]], s, k))
            else:
                rest_keys.append((float(w["created_s"]), s, k))
    init_keys.sort()
    rest_keys.sort()
    if rest_keys:
        created = np.array([k[0] for k in rest_keys])
        tie = _ties_across(created, np.array([k[1] for k in rest_keys]))
        if tie is not None:
            raise MergeAmbiguous(f"workers of two shards start at the same instant ({tie} s)")
    worker_map = [np.full(len(r.workers) + 1, -1, dtype=np.int64) for r in raws]  # last slot: no worker (-1)
    workers: list[dict[str, Any]] = []
    for g, (_key, s, k) in enumerate([*init_keys, *rest_keys]):
        worker_map[s][k] = g
        w = dict(raws[s].workers[k])
        w["worker"] = g
        w["worker_id"] = f"{w['endpoint']}-w{g}"
        workers.append(w)

    def per_job(name: str, dtype: Any, fill: Any) -> np.ndarray:
        out = np.full(n, fill, dtype=dtype)
        for s, r in enumerate(raws):
            values = getattr(r, name)
            if values is not None and len(values):
                out[job_map[s]] = np.asarray(values, dtype=dtype)
        return out

    job_worker = np.empty(n, dtype=np.int64)
    for s, r in enumerate(raws):
        job_worker[job_map[s]] = worker_map[s][np.asarray(r.job_worker, dtype=np.int64)]

    # Intervals: rows recorded during the run interleave by their end time (each shard's rows
    # are in time order); the rows the end closes follow, in worker order, as `_close` makes them.
    mid_t, mid_s, mid_rows, close_w, close_rows = [], [], [], [], []
    for s, (p, r) in enumerate(zip(parts, raws, strict=True)):
        cut = p.intervals_before_close
        iv_end = np.asarray(r.iv_end_s, dtype=float)
        gw = worker_map[s][np.asarray(r.iv_worker, dtype=np.int64)]
        mid_t.append(iv_end[:cut])
        mid_s.append(np.full(cut, s, dtype=np.int32))
        mid_rows.append((s, 0, cut))
        close_w.append(gw[cut:])
        close_rows.append((s, cut, iv_end.size))
    t_all = np.concatenate(mid_t) if mid_t else np.zeros(0)
    s_all = np.concatenate(mid_s) if mid_s else np.zeros(0, dtype=np.int32)
    mid_order = np.argsort(t_all, kind="stable")
    tie = _ties_across(t_all[mid_order], s_all[mid_order])
    if tie is not None:
        raise MergeAmbiguous(f"workers of two shards change state at the same instant ({tie} s)")
    close_order = np.argsort(np.concatenate(close_w) if close_w else np.zeros(0, dtype=np.int64), kind="stable")

    def iv_column(name: str, dtype: Any, worker: bool = False) -> np.ndarray:
        mids, closes = [], []
        for s, r in enumerate(raws):
            col = np.asarray(getattr(r, name), dtype=np.int64 if worker else dtype)
            if worker:
                col = worker_map[s][col]
            cut = parts[s].intervals_before_close
            mids.append(col[:cut])
            closes.append(col[cut:])
        mid = np.concatenate(mids)[mid_order] if mids else np.zeros(0, dtype=dtype)
        close = np.concatenate(closes)[close_order] if closes else np.zeros(0, dtype=dtype)
        return np.concatenate([mid, close]).astype(dtype, copy=False)

    # Flash-boot parked spans: recorded when a worker stops, so in the order of their starts.
    park_start = _cat([r.park_start_s for r in raws], float)
    park_s = _cat([np.full(len(r.park_start_s), s) for s, r in enumerate(raws)], np.int32)
    park_order = np.argsort(park_start, kind="stable")
    tie = _ties_across(park_start[park_order], park_s[park_order])
    if tie is not None:
        raise MergeAmbiguous(f"workers of two shards park at the same instant ({tie} s)")
    park_worker = _cat([worker_map[s][np.asarray(r.park_worker, dtype=np.int64)] for s, r in enumerate(raws)], np.int64)
    park_end = _cat([r.park_end_s for r in raws], float)

    def job_list(name: str) -> list[int]:
        return sorted(int(job_map[s][j]) for s, r in enumerate(raws) for j in getattr(r, name))

    low = per_job("job_low_priority", bool, False) if any(r.job_low_priority is not None for r in raws) else None
    runsync = per_job("job_runsync_wait_s", float, math.nan) if any(r.job_runsync_wait_s is not None for r in raws) else None
    return RawRecords(
        endpoint_ids=[ep.spec.endpoint_id for ep in config.endpoints],
        job_endpoint=job_ep[order],
        job_arrival_s=arrival[order],
        job_start_s=per_job("job_start_s", float, math.nan),
        job_end_s=per_job("job_end_s", float, math.nan),
        job_worker=job_worker,
        job_cold=per_job("job_cold", np.int8, 0),
        job_status=per_job("job_status", np.int8, 0),
        iv_worker=iv_column("iv_worker", np.int64, worker=True),
        iv_state=iv_column("iv_state", np.int8),
        iv_start_s=iv_column("iv_start_s", float),
        iv_end_s=iv_column("iv_end_s", float),
        iv_active=iv_column("iv_active", np.int8),
        workers=workers,
        end_s=end_s,
        config=config,
        controller_calls=sum(r.controller_calls for r in raws),
        park_worker=park_worker[park_order].tolist(),
        park_start_s=park_start[park_order].tolist(),
        park_end_s=park_end[park_order].tolist(),
        held=job_list("held"),
        rejected=job_list("rejected"),
        job_retries=per_job("job_retries", np.int64, 0),
        job_reason=per_job("job_reason", np.int64, 0),
        job_low_priority=low,
        job_runsync_wait_s=runsync,
    )
