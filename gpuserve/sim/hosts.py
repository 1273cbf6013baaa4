"""Hosts: GPUs per type, image caches, the workers waiting (THROTTLED) for a GPU, and what concurrent starts share.

On a declared host, concurrent starts share what they really share (processor sharing: n
tasks on a resource each progress at min(1, capacity / n) of their solo speed):
- image pulls share the host's registry link (capacity 1): two pulls at once each take
  twice as long as one alone; a start whose image is already being pulled waits for it;
- network-volume model loads share the host's volume bandwidth (capacity 1);
- with `cpu_cores` set, the CPU-bound stages (platform start-up, container start, runtime
  init) share that many cores (with `cpu_background` other runnable processes on them).
Local-disk loads (host cache, baked image) and flash resumes are not shared. The implicit
unlimited host stands for as many hosts as needed, so nothing on it is shared.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np

from gpuserve.core.errors import ConfigError
from gpuserve.sim.coldstart import ColdStartProfile, ModelSource, StageTimes

__all__ = ["HostSpec", "HostState", "SharedPool"]

# The engine's timer: after(delay_s, callback, value) calls callback(event) `delay_s` later,
# with the value on the event (simpy's Timeout). Pools use it to wake at their next completion.
After = Callable[[float, Callable[[Any], None], Any], None]
Now = Callable[[], float]
_DONE_EPS_S = 1e-9


class Starting(Protocol):
    """What a start needs of the engine's worker: its stage record and whether it still lives."""

    stages: StageTimes
    alive: bool


class SharedPool:
    """Processor sharing of one resource: with n tasks each runs at min(1, capacity / n) of its solo speed.

    A task is its solo time (seconds of work when it is alone on the host); `done(now_s)` is
    called when it has received all of it. Every add or finish re-plans the next completion.
    `background` counts other users that always compete (a CPU's other runnable processes):
    each task's share is then min(1, capacity / (n + background)), relative to a lone task's
    share, since a solo time measured on that host already paid for the background.
    """

    __slots__ = ("_tokens", "after", "background", "capacity", "now", "tasks", "updated_s", "version")

    def __init__(self, capacity: float, after: After, now: Now, background: float = 0.0) -> None:
        if not capacity > 0:
            raise ConfigError("capacity", capacity, "must be positive")
        if not background >= 0:
            raise ConfigError("background", background, "cannot be negative")
        self.capacity = float(capacity)
        self.background = float(background)
        self.after = after
        self.now = now
        self.tasks: dict[int, list[Any]] = {}  # token -> [solo seconds left, done]
        self.updated_s = now()
        self.version = 0
        self._tokens = itertools.count()

    def _share(self, n: int) -> float:
        return min(1.0, self.capacity / (n + self.background))

    def rate(self) -> float:
        n = len(self.tasks)
        return 1.0 if n <= 1 else self._share(n) / self._share(1)

    def add(self, work_s: float, done: Callable[[float], None]) -> int:
        self._advance(self.now())
        token = next(self._tokens)
        self.tasks[token] = [max(0.0, work_s), done]
        self._arm()
        return token

    def cancel(self, token: int) -> None:
        if token in self.tasks:
            self._advance(self.now())
            del self.tasks[token]
            self._arm()

    def _advance(self, now_s: float) -> None:
        if self.tasks and now_s > self.updated_s:
            progress = (now_s - self.updated_s) * self.rate()
            for task in self.tasks.values():
                task[0] -= progress
        self.updated_s = now_s

    def _arm(self) -> None:
        self.version += 1  # a wake planned before this change is stale
        if self.tasks:
            soonest = min(task[0] for task in self.tasks.values())
            self.after(max(0.0, soonest / self.rate()), self._on_wake, self.version)

    def _on_wake(self, ev: Any) -> None:
        if ev.value != self.version:
            return
        now_s = self.now()
        self._advance(now_s)
        finished = [t for t, task in self.tasks.items() if task[0] <= _DONE_EPS_S]
        callbacks = [self.tasks.pop(t)[1] for t in finished]
        self._arm()
        for done in callbacks:
            done(now_s)


@dataclass(frozen=True)
class HostSpec:
    """One host: GPUs per type. `unlimited` hosts have as many GPUs of every type as asked for."""

    name: str
    gpus: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    unlimited: bool = False
    cpu_cores: int | None = None  # None: start-up CPU work is not shared (each start runs at full speed)
    cpu_background: float = 0.0  # other runnable processes on those cores (other tenants' load), with cpu_cores

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpus", MappingProxyType(dict(self.gpus)))
        if self.cpu_cores is not None and (isinstance(self.cpu_cores, bool) or not isinstance(self.cpu_cores, int) or self.cpu_cores < 1):
            raise ConfigError("cpu_cores", self.cpu_cores, "must be a positive integer")
        if not (isinstance(self.cpu_background, int | float) and self.cpu_background >= 0):
            raise ConfigError("cpu_background", self.cpu_background, "must be a non-negative number")
        for gpu_type, count in self.gpus.items():
            if not isinstance(count, int) or count < 0:
                raise ConfigError(f"gpus.{gpu_type}", count, "must be a non-negative integer")

    def has_type(self, gpu_type: str | None) -> bool:
        return self.unlimited or gpu_type is None or gpu_type in self.gpus


class HostState:
    """A host during a run: free GPUs, FIFO of THROTTLED workers per type, images and when they land."""

    __slots__ = ("free", "images", "name", "pools", "pull_waiters", "shares", "spec", "starting", "waiters")

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.free: dict[str, float] = {t: float(n) for t, n in spec.gpus.items()}
        self.waiters: dict[str, deque[Any]] = {}
        # image name -> time its pull completes (<= now: cached on this host; inf: a shared
        # pull under way, whose end depends on what else pulls)
        self.images: dict[str, float] = {}
        self.shares = not spec.unlimited
        self.pools: dict[str, SharedPool] = {}
        self.pull_waiters: dict[str, list[Callable[[float], None]]] = {}
        self.starting: dict[int, tuple[SharedPool, int]] = {}  # id(worker) -> its task in a pool

    def free_gpus(self, gpu_type: str | None) -> float:
        if gpu_type is None or self.spec.unlimited:
            return math.inf
        return self.free.get(gpu_type, 0.0)

    def try_acquire(self, gpu_type: str | None, count: int) -> bool:
        if count == 0 or gpu_type is None or self.spec.unlimited:
            return True
        if self.free.get(gpu_type, 0.0) >= count:
            self.free[gpu_type] -= count
            return True
        return False

    def release(self, gpu_type: str | None, count: int) -> None:
        if count and gpu_type is not None and not self.spec.unlimited:
            self.free[gpu_type] += count

    def waiting(self, gpu_type: str | None) -> deque[Any]:
        return self.waiters.setdefault(gpu_type or "", deque())

    # -- starts: the stages of one worker's cold start, on this host ------------------------

    def _pool(self, kind: str, capacity: float, after: After, now: Now, background: float = 0.0) -> SharedPool:
        pool = self.pools.get(kind)
        if pool is None:
            pool = self.pools[kind] = SharedPool(capacity, after, now, background)
        return pool

    def begin_start(
        self,
        w: Starting,
        profile: ColdStartProfile,
        now_s: float,
        *,
        flash: bool,
        rng: np.random.Generator | None,
        after: After,
        now: Now,
        on_up: Callable[[Any], None],
    ) -> None:
        """Draw the worker's stages, run those before the GPU (pull, container, runtime init), then
        `after(0, on_up, w)`. `w.stages` ends up holding what each stage really took."""
        image = profile.image
        landed = None if flash else self.images.get(image)
        if flash or landed is None:
            stages = profile.stages(image_wait_s=None, flash=flash, rng=rng)
        else:
            stages = profile.stages(image_wait_s=max(0.0, landed - now_s) if math.isfinite(landed) else 0.0, flash=False, rng=rng)
        w.stages = stages
        cpu_s = stages.platform_start_s + stages.container_start_s + stages.runtime_init_s
        shared_cpu = self.shares and self.spec.cpu_cores is not None and cpu_s > 0
        joins = landed is not None and not math.isfinite(landed)
        owns_pull = not flash and landed is None and stages.image_pull_s > 0
        if not flash and landed is None:
            self.images[image] = now_s + stages.image_pull_s if not (self.shares and owns_pull) else math.inf
        if not (shared_cpu or joins or (self.shares and owns_pull)):
            after(stages.before_gpu_s, on_up, w)  # nothing shared: one timer, as a lone start
            return

        def cpu_stage(start_s: float) -> None:
            if not w.alive:
                return
            w.stages = replace(w.stages, image_pull_s=start_s - now_s) if (joins or owns_pull) else w.stages
            if not shared_cpu:
                after(cpu_s, on_up, w)
                return

            def cpu_done(end_s: float) -> None:
                self.starting.pop(id(w), None)
                stretch = (end_s - start_s) / cpu_s
                st = w.stages
                w.stages = replace(
                    st,
                    platform_start_s=st.platform_start_s * stretch,
                    container_start_s=st.container_start_s * stretch,
                    runtime_init_s=st.runtime_init_s * stretch,
                )
                after(0.0, on_up, w)

            pool = self._pool("cpu", float(self.spec.cpu_cores or 1), after, now, self.spec.cpu_background)
            self.starting[id(w)] = (pool, pool.add(cpu_s, cpu_done))

        if joins:
            self.pull_waiters.setdefault(image, []).append(cpu_stage)
        elif owns_pull and self.shares:

            def pulled(end_s: float) -> None:
                self.images[image] = end_s
                for waiter in self.pull_waiters.pop(image, []):
                    waiter(end_s)
                cpu_stage(end_s)

            self._pool("pull", 1.0, after, now).add(stages.image_pull_s, pulled)
        else:
            # The image is cached or lands at a known time (no shared pull): wait for it, then the CPU.
            wait_s = stages.image_pull_s
            if wait_s > 0:
                after(wait_s, lambda _ev: cpu_stage(now_s + wait_s), None)
            else:
                cpu_stage(now_s)

    def load_on_gpu(self, w: Starting, profile: ColdStartProfile, *, after: After, now: Now, on_ready: Callable[[Any], None]) -> None:
        """The stages on the GPU (model load or flash resume), then `after(0, on_ready, w)`.
        Network-volume loads share the host's volume bandwidth."""
        load_s = w.stages.model_load_s
        if not (self.shares and profile.model_source is ModelSource.NETWORK_VOLUME and load_s > 0):
            after(load_s + w.stages.flash_resume_s, on_ready, w)
            return
        start_s = now()

        def loaded(end_s: float) -> None:
            self.starting.pop(id(w), None)
            w.stages = replace(w.stages, model_load_s=end_s - start_s)
            after(w.stages.flash_resume_s, on_ready, w)

        pool = self._pool("volume", 1.0, after, now)
        self.starting[id(w)] = (pool, pool.add(load_s, loaded))

    def cancel_start(self, w: Starting) -> None:
        """A worker stopped while starting gives back its share of the CPU or the volume (a pull
        it started goes on: the image still lands in the cache)."""
        task = self.starting.pop(id(w), None)
        if task is not None:
            task[0].cancel(task[1])
