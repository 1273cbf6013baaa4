"""The shared worker directory: this server's workers written to a store other servers read, so any replica recognises them.

On a store several servers share (`JobStore.poll_fallback_s` set), every worker this server's
backend registers (or adopts) is recorded with its token digest (`JobStore.put_worker`) and
forgotten when it goes (`drop_worker`); heartbeats any server hears are stamped on the record
(`saw_workers`). Another replica then admits the worker's calls (`Runtime.authenticate_worker`,
a guest in its registry), and a new leader finds the workers that outlived the old one
(`Runtime._adopt`). On a store only this server writes, nothing is written.

Writes follow the registry's announcements, which come under its lock: they are queued and made
in order by one thread (an add is never overtaken by its own removal), retried while the store
cannot write, so a restart of the database loses none. Heartbeats are batched, once a second.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from gpuserve.live.registry import Change, LiveWorker, WorkerRegistry
from gpuserve.store.base import JobStore, WorkerRecord

__all__ = ["WorkerDirectory"]

log = logging.getLogger("gpuserve.server")

FLUSH_EVERY_S = 1.0  # heartbeats stamped on the records this often
RETRY_EVERY_S = 1.0  # a write the store refused is tried again after this


class WorkerDirectory:
    """Keeps the store's `workers` rows in step with this server's registry (a no-op on an unshared store)."""

    def __init__(self, store: JobStore, registry: WorkerRegistry) -> None:
        self.store = store
        self.shared = store.poll_fallback_s is not None
        self._lock = threading.Lock()
        # In order: a record to write, a worker id to drop, or a flush's mark to set.
        self._ops: deque[WorkerRecord | str | Callable[[], None]] = deque()
        self._seen: dict[str, float] = {}  # worker id -> newest heartbeat not yet written
        self._listing: set[str] = set()  # workers whose heartbeats listed a job, not yet written
        self._told_listing: set[str] = set()  # ... and written (once per worker is enough)
        self._hashes: dict[str, str] = {}  # worker id -> the token digest last written (a revival changes it)
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        if self.shared:
            registry.subscribe(self._changed)
            self._thread = threading.Thread(target=self._run, name="gpuserve-worker-directory", daemon=True)
            self._thread.start()

    def saw(self, worker_id: str, now_s: float, listed: bool) -> None:
        """A heartbeat from `worker_id` reached this server (stamped on its record within a second); `listed`: it listed a job."""
        if self.shared:
            with self._lock:
                self._seen[worker_id] = now_s
                if listed and worker_id not in self._told_listing:
                    self._listing.add(worker_id)

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until what was queued so far is written (tests, shutdown); False if it was not in time."""
        done = threading.Event()
        with self._lock:
            self._ops.append(done.set)
        self._wake.set()
        return done.wait(timeout_s) if self._thread is not None else True

    def close(self) -> None:
        if self._thread is not None:
            self.flush(5.0)
            self._closed.set()
            self._wake.set()
            self._thread.join(5)

    # -- the registry's side ----------------------------------------------------------------------

    def _changed(self, w: LiveWorker, change: Change, now_s: float | None, _jobs: tuple[str, ...]) -> None:
        # Under the registry's lock: only queue.
        if change is Change.ADDED or (change is Change.STATE and self._hashes.get(w.worker_id) != w.token_hash):
            record = WorkerRecord(
                w.worker_id, w.endpoint_id, w.token_hash, w.capacity, w.spec_version,
                w.created_s, w.last_seen_s, w.lists_jobs,
            )
            with self._lock:
                self._hashes[w.worker_id] = w.token_hash
                self._ops.append(record)
        elif change is Change.REMOVED:
            with self._lock:
                self._hashes.pop(w.worker_id, None)
                self._seen.pop(w.worker_id, None)
                self._told_listing.discard(w.worker_id)
                self._ops.append(w.worker_id)
        else:
            return
        self._wake.set()

    # -- the writer thread ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(FLUSH_EVERY_S)
            self._wake.clear()
            if not self._write_ops():
                self._closed.wait(RETRY_EVERY_S)
                continue
            self._write_seen()

    def _write_seen(self) -> None:
        with self._lock:
            seen, self._seen = self._seen, {}
            listing, self._listing = self._listing, set()
        if seen:
            try:
                self.store.saw_workers(list(seen), max(seen.values()), listing)
                with self._lock:
                    self._told_listing |= listing
            except Exception as exc:  # a heartbeat's stamp is news, not a record: the next one will do
                log.debug("could not stamp heartbeats on worker records: %s", exc)

    def _write_ops(self) -> bool:
        """Write the queued adds and drops in order; False (the rest kept) when the store refused one."""
        while True:
            with self._lock:
                if not self._ops:
                    return True
                op = self._ops[0]
            try:
                if isinstance(op, WorkerRecord):
                    self.store.put_worker(op)
                elif isinstance(op, str):
                    self.store.drop_worker(op)
                else:
                    self._write_seen()  # a flush waits for the heartbeats heard before it too
                    op()
            except Exception as exc:
                log.warning("could not update the shared store's worker records (%s); trying again", exc)
                return False
            with self._lock:
                self._ops.popleft()
