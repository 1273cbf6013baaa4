"""GPU inventory and telemetry through NVML (nvidia-ml-py, module pynvml), and pure placement of workers on GPUs.

With no NVIDIA driver (or no nvidia-ml-py) the host has zero GPUs: `inventory()` says so
once in the log and returns an empty list, CPU-only endpoints still run, and a GPU
endpoint's workers are THROTTLED because `place` finds nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "GpuInfo",
    "GpuStats",
    "HostInventory",
    "gpu_env",
    "inventory",
    "matches_type",
    "place",
    "worker_gpu_stats",
]

log = logging.getLogger("gpuserve.gpu")

# Endpoints may name a type loosely ("H100", "a100-80gb") or exactly as NVML does
# ("NVIDIA H100 80GB HBM3"); "any" (or "*") takes whatever GPU is free.
ANY_GPU = frozenset({"any", "*"})


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as NVML reports it at one instant."""

    index: int
    uuid: str
    name: str  # NVML's product name, e.g. "NVIDIA H100 80GB HBM3"
    memory_total_mib: int
    memory_used_mib: int = 0
    utilization_pct: float = 0.0

    @property
    def gpu_type(self) -> str:
        """The product name without the vendor prefix, e.g. "H100 80GB HBM3"."""
        name = self.name.strip()
        return name[len("NVIDIA ") :] if name.upper().startswith("NVIDIA ") else name


@dataclass(frozen=True)
class GpuStats:
    """A worker's GPUs summed (memory) and averaged (utilisation): what the worker's state exports."""

    gpu_ids: tuple[int, ...]
    utilization_pct: float
    memory_used_mib: int
    memory_total_mib: int


def _tokens(text: str) -> list[str]:
    return text.upper().replace("-", " ").replace("_", " ").split()


def matches_type(gpu: GpuInfo, gpu_type: str) -> bool:
    """Does this GPU satisfy an endpoint's `gpu_type`? Every word of the type must be in the name.

    "H100" matches "NVIDIA H100 80GB HBM3"; "A100-80GB" matches "NVIDIA A100-SXM4-80GB"
    (words A100, SXM4, 80GB); "H100" does not match "NVIDIA H100 NVL"'s sibling "H200".
    """
    wanted = gpu_type.strip()
    if wanted.lower() in ANY_GPU:
        return True
    have = _tokens(gpu.name)
    return all(word in have for word in _tokens(wanted))


def place(
    gpus: Sequence[GpuInfo], taken: Iterable[int], gpu_type: str | None, count: int
) -> tuple[int, ...] | None:
    """Choose `count` free GPUs of `gpu_type`, lowest index first; None when the host cannot fit them.

    A CPU-only request (`gpu_type` None or `count` 0) always fits, with no GPUs. The choice is
    deterministic so a test (or a replay) sees the same placement every time.
    """
    if count < 0:
        raise ValueError(f"count cannot be negative, was {count}")
    if gpu_type is None or count == 0:
        return ()
    busy = set(taken)
    free = sorted(g.index for g in gpus if g.index not in busy and matches_type(g, gpu_type))
    if len(free) < count:
        return None
    return tuple(free[:count])


def gpu_env(gpu_ids: Sequence[int]) -> dict[str, str]:
    """The environment that pins a process to its placed GPUs.

    NVML numbers GPUs in PCI bus order while CUDA by default puts the fastest first, so
    the order must be fixed to PCI_BUS_ID for index 1 to mean the same card to both.
    An empty placement hides every GPU (a CPU worker must not grab GPU 0 by accident).
    """
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpu_ids), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def worker_gpu_stats(gpus: Sequence[GpuInfo], gpu_ids: Sequence[int]) -> GpuStats | None:
    """Utilisation (mean) and memory (sum) over one worker's GPUs; None for a CPU worker."""
    if not gpu_ids:
        return None
    by_index = {g.index: g for g in gpus}
    mine = [by_index[i] for i in gpu_ids if i in by_index]
    if not mine:
        return None
    return GpuStats(
        gpu_ids=tuple(gpu_ids),
        utilization_pct=sum(g.utilization_pct for g in mine) / len(mine),
        memory_used_mib=sum(g.memory_used_mib for g in mine),
        memory_total_mib=sum(g.memory_total_mib for g in mine),
    )


class HostInventory:
    """The GPUs of one host and which worker holds each; thread-safe, no I/O.

    The backend builds it from `inventory()` (or a test from constructed GpuInfo), then
    `allocate`s on worker start and `release`s on worker exit. `refresh` swaps in new
    telemetry and keeps the claims.
    """

    def __init__(self, gpus: Sequence[GpuInfo] = ()) -> None:
        self._lock = threading.Lock()
        self._gpus: dict[int, GpuInfo] = {g.index: g for g in gpus}
        self._owner: dict[int, str] = {}

    @property
    def gpus(self) -> list[GpuInfo]:
        with self._lock:
            return [self._gpus[i] for i in sorted(self._gpus)]

    def refresh(self, gpus: Sequence[GpuInfo]) -> None:
        with self._lock:
            self._gpus = {g.index: g for g in gpus}

    def allocate(self, owner: str, gpu_type: str | None, count: int) -> tuple[int, ...] | None:
        """Claim GPUs for `owner`; None (nothing claimed) when they are not free: the worker is THROTTLED."""
        with self._lock:
            got = place(list(self._gpus.values()), self._owner, gpu_type, count)
            if got:
                for i in got:
                    self._owner[i] = owner
            return got

    def claim(self, owner: str, gpu_ids: Iterable[int]) -> None:
        """Record GPUs an existing worker already holds (an adopted container)."""
        with self._lock:
            for i in gpu_ids:
                holder = self._owner.get(i)
                if holder is not None and holder != owner:
                    raise ValueError(f"gpu {i} is already held by {holder!r}, cannot give it to {owner!r}")
                self._owner[i] = owner

    def release(self, owner: str) -> tuple[int, ...]:
        with self._lock:
            freed = tuple(sorted(i for i, o in self._owner.items() if o == owner))
            for i in freed:
                del self._owner[i]
            return freed

    def held_by(self, owner: str) -> tuple[int, ...]:
        with self._lock:
            return tuple(sorted(i for i, o in self._owner.items() if o == owner))

    def owners(self) -> Mapping[int, str]:
        with self._lock:
            return dict(self._owner)

    def free(self, gpu_type: str | None = None) -> list[int]:
        with self._lock:
            return sorted(
                i
                for i, g in self._gpus.items()
                if i not in self._owner and (gpu_type is None or matches_type(g, gpu_type))
            )

    def stats(self, owner: str) -> GpuStats | None:
        return worker_gpu_stats(self.gpus, self.held_by(owner))


_no_gpu_logged = False


def _text(value: object) -> str:
    # nvidia-ml-py returns str in recent versions and bytes in old ones.
    return value.decode() if isinstance(value, bytes) else str(value)


def inventory() -> list[GpuInfo]:
    """Every GPU on this host with its memory and utilisation now; [] with no driver (logged once)."""
    global _no_gpu_logged
    try:
        import pynvml
    except ImportError:
        if not _no_gpu_logged:
            log.warning("nvidia-ml-py is not installed: 0 GPUs, only CPU-only endpoints can run")
            _no_gpu_logged = True
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        if not _no_gpu_logged:
            log.warning("no NVIDIA driver (NVML: %s): 0 GPUs, only CPU-only endpoints can run", exc)
            _no_gpu_logged = True
        return []
    try:
        found: list[GpuInfo] = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                utilization_pct = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:  # some GPUs (MIG slices) do not report utilisation
                utilization_pct = 0.0
            found.append(
                GpuInfo(
                    index=index,
                    uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                    name=_text(pynvml.nvmlDeviceGetName(handle)),
                    memory_total_mib=int(memory.total) // (1024 * 1024),
                    memory_used_mib=int(memory.used) // (1024 * 1024),
                    utilization_pct=utilization_pct,
                )
            )
        return found
    finally:
        pynvml.nvmlShutdown()
