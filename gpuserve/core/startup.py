"""How a worker came up: the one cold-start record both backends keep, and the start-up report a worker writes.

    requested --pull--> --create--> --start--> --runtime init--> --first take--> ready
                 |          |            |             |                 |
    container:  image not  docker     docker start  start returned ->  start() -> the first
                present:   create     (or unpause)  the SDK's start()  job-take reaches the server
                docker pull
    process:    -          -          spawn ->      exec'd ->          start() -> the first job-take
                                      exec'd        start()

A worker running gpuserve's SDK writes its `StartReport` (wall-clock instants) to the file
named by GPUSERVE_COLD_START_FILE when it first asks for a job; a backend turns what it saw
itself, plus that report, into a `ColdStartRecord`. Pure data: the worker measures and
writes, the backends read; nothing here reads a clock or a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["PHASES", "PULL_FIELDS", "ColdStartRecord", "PullProgress", "StartKind", "StartReport"]

StartKind = Literal["cold", "flash_unpause", "flash_start"]
PHASES = ("pull_s", "create_s", "start_s", "runtime_init_s", "first_take_s")
PULL_FIELDS = ("layers_total", "layers_done", "layers_cached", "bytes_done", "bytes_total")  # of PullProgress


def _gap_s(since: float | None, until: float | None) -> float | None:
    # Rounded to 0.1 ms, the report's resolution. Clamped at 0: the instants come from time.time()
    # in two processes (spawner and worker), and /proc gives the exec instant to 10 ms only.
    return None if since is None or until is None else round(max(0.0, until - since), 4)


@dataclass(frozen=True)
class StartReport:
    """What gpuserve's worker SDK measured of its own start-up, as wall-clock instants in seconds.

    `as_json()` is the content of the cold-start file (the instants, then the `*_s`
    durations between them); `from_json` reads it back.
    """

    worker_id: str
    spawn_wall_s: float | None  # when the platform launched it (GPUSERVE_SPAWN_WALL_S)
    process_start_wall_s: float | None  # when its process was exec'd (None where /proc cannot say)
    sdk_import_wall_s: float
    start_called_wall_s: float
    first_take_wall_s: float | None = None

    def durations(self) -> dict[str, float | None]:
        return {
            "spawn_to_process_s": _gap_s(self.spawn_wall_s, self.process_start_wall_s),
            "process_to_sdk_import_s": _gap_s(self.process_start_wall_s, self.sdk_import_wall_s),
            "sdk_import_to_start_s": _gap_s(self.sdk_import_wall_s, self.start_called_wall_s),
            "start_to_first_take_s": _gap_s(self.start_called_wall_s, self.first_take_wall_s),
            "spawn_to_first_take_s": _gap_s(self.spawn_wall_s, self.first_take_wall_s),
            "process_to_first_take_s": _gap_s(self.process_start_wall_s, self.first_take_wall_s),
        }

    def as_json(self) -> dict[str, object]:
        return {**asdict(self), **self.durations()}

    @classmethod
    def from_json(cls, data: object) -> StartReport | None:
        """The report in a parsed cold-start file; None when the file holds something else."""
        if not isinstance(data, Mapping) or not isinstance(data.get("worker_id"), str):
            return None
        instants: dict[str, float | None] = {}
        for name in ("spawn_wall_s", "process_start_wall_s", "sdk_import_wall_s", "start_called_wall_s", "first_take_wall_s"):
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float | None):
                return None
            instants[name] = None if value is None else float(value)
        sdk_import, start_called = instants["sdk_import_wall_s"], instants["start_called_wall_s"]
        if sdk_import is None or start_called is None:
            return None
        return cls(
            data["worker_id"],
            instants["spawn_wall_s"],
            instants["process_start_wall_s"],
            sdk_import,
            start_called,
            instants["first_take_wall_s"],
        )


@dataclass(frozen=True)
class PullProgress:
    """How far the pull of a worker's image got: its layers, and the bytes of those it downloads.

    A layer the engine already holds counts as done and cached (nothing to download);
    `bytes_total` sums the sizes the registry announced for the layers being downloaded, so it
    grows while the pull starts its downloads.
    """

    layers_total: int = 0
    layers_done: int = 0  # downloaded and extracted, or already present
    layers_cached: int = 0  # already present: not downloaded
    bytes_done: int = 0
    bytes_total: int = 0


@dataclass(frozen=True)
class ColdStartRecord:
    """How one worker came up, cold (create + start, or spawn) or by flash boot (unpause or start).

    Phases in seconds, in the order they happen (`PHASES`); None where a phase did not
    happen (no create for a process or a revival) or could not be seen (runtime init needs
    gpuserve's SDK, whose report says when `start()` was called). A container whose image was
    not on the host first pulls it: `pull_s` when done, `pull` its layers and bytes (while the
    pull runs: so far). `total_s` runs from the
    request (`requested_wall_s`, on the backend's clock) to the first job-take; it is not
    always their sum, since a backend may wait between them (crash back-off) or see them
    only partly.
    """

    worker_id: str
    endpoint_id: str
    kind: StartKind
    requested_wall_s: float
    create_s: float | None = None  # `docker create`
    start_s: float | None = None  # `docker start` or `docker unpause`; a process: spawn -> exec'd
    runtime_init_s: float | None = None  # -> the SDK's start() called: interpreter, imports, handler module, model load
    first_take_s: float | None = None  # start() called -> the first job-take reached the server
    total_s: float | None = None  # requested -> ready (the first job-take)
    gpu_ids: tuple[int, ...] = ()
    pull_s: float | None = None  # `docker pull` of an image the host did not hold (None: it was present)
    pull: PullProgress | None = None  # that pull's layers and bytes, so far while it runs

    def as_dict(self) -> dict[str, object]:
        """Flat, for JSON and tables: the pull's progress as `pull_layers_total` ... `pull_bytes_total` (None without a pull)."""
        out = asdict(self)
        del out["pull"]
        for name in PULL_FIELDS:
            out[f"pull_{name}"] = None if self.pull is None else getattr(self.pull, name)
        return out

    def phases(self) -> dict[str, float]:
        """The phases that were measured, by name, in order (`pull_s`, `create_s`, `start_s`, `runtime_init_s`, `first_take_s`)."""
        measured = {name: getattr(self, name) for name in PHASES}
        return {name: float(value) for name, value in measured.items() if value is not None}

    @classmethod
    def from_health(
        cls,
        worker_id: str,
        endpoint_id: str,
        requested_wall_s: float,
        *,
        first_initializing_s: float | None,
        first_ready_s: float | None,
    ) -> ColdStartRecord:
        """A load-balancing worker, seen through its health path (all instants on the backend's clock).

        `runtime_init_s`: start -> the first 204 (its server is up, the model loading);
        `first_take_s`: the first 204 -> the first 200 (Runpod's cold start for these endpoints;
        None when it never answered 204); `total_s`: start -> the first 200 (ready).
        """
        init_until = first_initializing_s if first_initializing_s is not None else first_ready_s
        return cls(
            worker_id,
            endpoint_id,
            "cold",
            requested_wall_s,
            runtime_init_s=_gap_s(requested_wall_s, init_until),
            first_take_s=_gap_s(first_initializing_s, first_ready_s),
            total_s=_gap_s(requested_wall_s, first_ready_s),
        )

    @classmethod
    def from_report(
        cls,
        worker_id: str,
        endpoint_id: str,
        requested_wall_s: float,
        report: StartReport | None,
        *,
        total_s: float | None = None,
        gpu_ids: tuple[int, ...] = (),
    ) -> ColdStartRecord:
        """A worker that was spawned as its own process: spawn -> exec'd -> start() -> first job-take.

        The phases come from the worker's report (all None without one); `total_s` is what
        the backend saw itself when given, else the report's spawn -> first job-take.
        """
        if report is None:
            return cls(worker_id, endpoint_id, "cold", requested_wall_s, total_s=total_s, gpu_ids=gpu_ids)
        return cls(
            worker_id,
            endpoint_id,
            "cold",
            requested_wall_s,
            start_s=_gap_s(report.spawn_wall_s, report.process_start_wall_s),
            runtime_init_s=_gap_s(report.process_start_wall_s, report.start_called_wall_s),
            first_take_s=_gap_s(report.start_called_wall_s, report.first_take_wall_s),
            total_s=total_s if total_s is not None else _gap_s(report.spawn_wall_s, report.first_take_wall_s),
            gpu_ids=gpu_ids,
        )
