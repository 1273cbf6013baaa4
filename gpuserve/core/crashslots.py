"""Crash back-off per worker slot: a crashed worker's replacement waits its slot's back-off; every other start waits nothing.

An endpoint-wide streak let one poison input slow every recovery: three workers that each
crashed once on it made the fourth start wait 4 s, and later re-runs waited 10.9 s and 17.9 s
although no slot had crashed twice. Here a slot is the place a worker holds in its endpoint's
count: when a worker crashes, its slot is left empty with that worker's crashes in a row and the
earliest time a replacement may start; the next start of the endpoint fills the empty slot that
frees soonest (inheriting its streak), and a start with no empty slot begins at once. A job that
keeps killing its workers is ended by the runtime's circuit breaker after `max_retries`
(FAILED, with the reason), so it costs each slot it visits one crash, not the endpoint a growing wait.

Pure: time is an input, the caller spawns. Used by the process and Docker backends and the simulator.

    slots = CrashSlots()                       # the process backend's schedule (core.backoff.CRASH_BACKOFF)
    slots.crashed(0, lived_s=2.0, now_s=10.0)  # a worker crashed for the first time: its slot waits 1 s
    slots.claim(10.5)                          # Start(streak=1, not_before_s=11.0): the replacement waits
    slots.claim(10.5)                          # Start(streak=0, not_before_s=10.5): any other start does not
"""

from __future__ import annotations

from dataclasses import dataclass

from gpuserve.core.backoff import CRASH_BACKOFF, HEALTHY_LIFETIME_S, Backoff, crash_streak_after

__all__ = ["CrashSlots", "Start"]


@dataclass(frozen=True)
class Start:
    """Where a new worker starts: the crashes in a row of the slot it fills (0: a fresh one), and not before when."""

    streak: int
    not_before_s: float

    def wait_s(self, now_s: float) -> float:
        return max(0.0, self.not_before_s - now_s)


class CrashSlots:
    """One endpoint's empty slots left by crashed workers, each with its streak and back-off."""

    def __init__(self, policy: Backoff = CRASH_BACKOFF, healthy_lifetime_s: float = HEALTHY_LIFETIME_S) -> None:
        self.policy = policy
        self.healthy_lifetime_s = healthy_lifetime_s
        self._empty: list[Start] = []

    def __len__(self) -> int:
        return len(self._empty)

    def crashed(self, streak: int, lived_s: float, now_s: float) -> Start:
        """A worker of slot streak `streak` crashed after `lived_s`: its slot is empty until the returned time."""
        self._forget_stale(now_s)
        new_streak = crash_streak_after(streak, lived_s)
        empty = Start(new_streak, now_s + self.policy.delay_s(new_streak))
        self._empty.append(empty)
        return empty

    def claim(self, now_s: float) -> Start:
        """A new worker: it fills the empty slot that frees soonest (its back-off), or starts fresh at once."""
        self._forget_stale(now_s)
        if not self._empty:
            return Start(0, now_s)
        soonest = min(self._empty, key=lambda s: s.not_before_s)
        self._empty.remove(soonest)
        return Start(soonest.streak, max(now_s, soonest.not_before_s))

    def next_start_s(self, now_s: float) -> float:
        """When the next start of the endpoint may begin (now when no slot is empty)."""
        return min((max(now_s, s.not_before_s) for s in self._empty), default=now_s)

    def clear(self) -> None:
        """A new version: its workers deserve a fresh start."""
        self._empty.clear()

    def _forget_stale(self, now_s: float) -> None:
        # A slot nobody refilled for a healthy lifetime after its back-off ended is forgotten
        # (the endpoint scaled down meanwhile): the list stays as long as the crashed workers.
        self._empty = [s for s in self._empty if now_s - s.not_before_s < self.healthy_lifetime_s]
