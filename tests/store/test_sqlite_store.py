"""SQLite only: WAL on disk, the synchronous setting, in-memory bookkeeping, file modes, data-dir errors."""

from __future__ import annotations

import json
import sqlite3

import pytest

from gpuserve.core.errors import NotFoundError
from gpuserve.store import DoneOutcome, SqliteJobStore
from gpuserve.store.base import SweepKind


@pytest.fixture
def store(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def submit(store, n=1, endpoint="ep", t=0.0, **kw):
    return [store.submit(endpoint, {"input": {"i": i}}, now_s=t + i, **kw) for i in range(n)]


def test_the_file_is_in_wal_mode(store):
    submit(store)
    with sqlite3.connect(store.path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_invalid_synchronous_mode_names_the_field(tmp_path):
    with pytest.raises(ValueError, match="synchronous"):
        SqliteJobStore(tmp_path / "x.db", synchronous="OFF")


def test_bookkeeping_after_many_expired_jobs_does_not_depend_on_how_many(store):
    """10,000 short jobs (24 h ttl, 10 min timeout, 1 s retention): once their results expire, the
    in-memory structures are back to their empty size, yet a deadline still pending fires on time."""
    from gpuserve.store.sqlite import _COMPACT_MIN

    (keeper,) = submit(store, t=0.0, execution_timeout_s=30.0)
    assert [j.id for j in store.take("ep", "w-long", 1, 0.5)] == [keeper.id]  # runs through it all
    n = 10_000
    for i in range(n):
        t = 1.0 + i * 0.001
        store.submit("ep", {"input": {"i": i}}, now_s=t, retention_s=1.0)
        (job,) = store.take("ep", "w1", 1, t)
        assert store.finish(job.id, "w1", {"output": i}, t)[0] is DoneOutcome.COMPLETED
        assert len(store._deadlines) <= max(_COMPACT_MIN, 4 * len(store._jobs)) + 3  # bounded all along
    expired = [e for e in store.sweep(20.0) if e.kind is SweepKind.RESULT_EXPIRED]
    assert len(expired) == n
    sizes = store.bookkeeping()
    # Before: 20,000 dead ttl and timeout entries stayed in the heap for a day.
    assert sizes["jobs"] == 1 and sizes["deadlines"] <= _COMPACT_MIN and sizes["queued_entries"] == 0
    assert [(e.kind, e.job.id) for e in store.sweep(31.0)] == [(SweepKind.TIMED_OUT, keeper.id)]
    assert store.count() == 1


def test_the_store_is_private_to_its_owner(tmp_path):
    """Payloads may carry secrets (s3Config): the folder is 0700, the database and its WAL 0600."""
    path = tmp_path / "data" / "jobs.sqlite3"
    s = SqliteJobStore(path)
    try:
        submit(s)
        modes = {p.name: p.stat().st_mode & 0o777 for p in path.parent.iterdir()}
    finally:
        s.close()
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert modes["jobs.sqlite3"] == 0o600 and modes.get("jobs.sqlite3-wal", 0o600) == 0o600, modes


def test_a_data_dir_that_cannot_hold_the_store_is_one_error_naming_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    from gpuserve.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        SqliteJobStore(blocker / "data" / "jobs.sqlite3")
    assert str(err.value).startswith("data_dir cannot hold the job store jobs.sqlite3 (")
    assert str(blocker / "data") in str(err.value) and "\n" not in str(err.value)


def test_inputs_and_outputs_are_held_in_memory_within_the_budget_and_read_from_the_row_past_it(tmp_path):
    """max_payload_bytes_in_memory caps what is held (the JSON text of inputs, counted twice: the text and
    the parsed dict, and of outputs); past it, and for any value past spill_payload_bytes, the row is
    the only copy and is read when asked for."""
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", max_payload_bytes_in_memory=2_000, spill_payload_bytes=400)
    small = [s.submit("ep", {"input": {"s": "a" * 200}}, now_s=i) for i in range(8)]  # 214 bytes each
    big = s.submit("ep", {"input": {"s": "b" * 500}}, now_s=9)
    held = [j for j in small if j.spilled("payload_json") is None]
    assert len(held) == 4 and held == small[:4] and big.spilled("payload") is not None
    assert s.bookkeeping()["payload_bytes"] == 4 * 2 * len(small[0].payload_json) <= 2_000
    assert [json.loads(j.worker_json())["input"]["s"] for j in s.take("ep", "w", 9, 10)] == ["a" * 200] * 8 + ["b" * 500]
    for i, job in enumerate(small):
        s.finish(job.id, "w", {"output": "o" * (100 * i)}, 11)  # the first outputs fit what is left, then none
    s.finish(big.id, "w", {"output": "p" * 1_000}, 11)
    assert s.bookkeeping()["payload_bytes"] <= 2_000
    assert [s.get(j.id).output for j in small] == ["o" * (100 * i) for i in range(8)]
    assert s.get(big.id).output == "p" * 1_000 and s.get(big.id).spilled("output") is not None
    # A restart holds within the same budget; expiry gives every byte back.
    s.close()
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", max_payload_bytes_in_memory=2_000, spill_payload_bytes=400)
    assert 0 < s.bookkeeping()["payload_bytes"] <= 2_000
    assert [s.get(j.id).output for j in small] == ["o" * (100 * i) for i in range(8)]
    gone = s.get(big.id)
    assert json.loads(gone.worker_json())["input"] == {"s": "b" * 500}
    assert len(s.sweep(10_000)) == 9
    assert s.bookkeeping()["payload_bytes"] == 0 and s.bookkeeping()["jobs"] == 0
    with pytest.raises(NotFoundError, match="expired"):
        gone.worker_json()  # the row is gone with the job
    s.close()


def test_an_interim_output_past_the_budget_is_written_to_the_row_and_a_requeue_drops_it(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", spill_payload_bytes=30)  # the input (19 bytes) fits
    (job,) = submit(s)
    s.take("ep", "w", 1, 1)
    s.finish(job.id, "w", {"status": "IN_PROGRESS", "output": "q" * 50}, 2)
    assert s.get(job.id).spilled("output") is not None and s.get(job.id).status_body()["output"] == "q" * 50
    s.finish(job.id, "w", {"status": "IN_PROGRESS", "output": 7}, 3)  # small: back in memory
    assert s.get(job.id).spilled("output") is None and s.get(job.id).output == 7
    s.finish(job.id, "w", {"status": "IN_PROGRESS", "output": "r" * 50}, 4)
    s.requeue("w", [job.id], "lost", 5, max_retries=3)
    assert s.get(job.id).output is None and s.get(job.id).has_output is False
    assert s.bookkeeping()["payload_bytes"] == 2 * len(job.payload_json)
    with sqlite3.connect(s.path) as other:
        assert other.execute("SELECT output, has_output FROM jobs").fetchone() == (None, 0)
    s.close()


def test_payload_limits_must_be_whole_byte_counts(tmp_path):
    with pytest.raises(ValueError, match="spill_payload_bytes"):
        SqliteJobStore(tmp_path / "x.db", spill_payload_bytes=-1)
    with pytest.raises(ValueError, match="max_payload_bytes_in_memory"):
        SqliteJobStore(tmp_path / "x.db", max_payload_bytes_in_memory=1.5)


def test_unread_stream_chunks_count_against_the_budget_and_past_it_are_read_from_their_rows(tmp_path):
    s = SqliteJobStore(tmp_path / "jobs.sqlite3", max_payload_bytes_in_memory=110, spill_payload_bytes=None)
    (job,) = submit(s)  # 19 bytes of input, held as text and dict: 38
    s.take("ep", "w", 1, 1)
    chunks = ["c" * 30, "d" * 30, "e" * 30, "g" * 30]  # 32 bytes each: two fit beside the input, then none
    for c in chunks:
        assert s.add_chunk(job.id, "w", c)
    assert [type(c).__name__ for c in s.get(job.id).chunks] == ["str", "str", "OnDisk", "OnDisk"]
    assert s.bookkeeping()["payload_bytes"] == 38 + 2 * 32
    assert s.read_stream(job.id) == (1, chunks) and s.bookkeeping()["payload_bytes"] == 38
    assert s.add_chunk(job.id, "w", "f" * 90) and s.get(job.id).chunks[0].__class__.__name__ == "OnDisk"
    s.requeue("w", [job.id], "lost", 2, max_retries=3)  # the attempt's unread chunks go, and their bytes
    assert s.get(job.id).chunks == [] and s.bookkeeping()["payload_bytes"] == 38
    s.close()
