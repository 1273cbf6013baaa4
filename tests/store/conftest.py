"""The store fixture: every test in tests/store that takes `open_store` runs on SQLite and on PostgreSQL.

PostgreSQL: one throwaway database per test module (tests/support/postgres.py), emptied before
each test; skipped without GPUSERVE_TEST_POSTGRES unless GPUSERVE_REQUIRE_POSTGRES=1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import clear, postgres_url, throwaway_database


@pytest.fixture(scope="module")
def pg_database() -> Iterator[str]:
    with throwaway_database(postgres_url()) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """`open_store(**kw)` opens (or, after a close, reopens) the test's store: same file or database each time."""
    opened: list[Any] = []
    if request.param == "postgres":
        url = request.getfixturevalue("pg_database")
        clear(url)
        from gpuserve.store.postgres import PostgresJobStore

        def make(**kw: Any) -> Any:
            opened.append(PostgresJobStore(url, **kw))
            return opened[-1]
    else:
        from gpuserve.store.sqlite import SqliteJobStore

        def make(**kw: Any) -> Any:
            opened.append(SqliteJobStore(tmp_path / "jobs.sqlite3", **kw))
            return opened[-1]

    yield make
    for store in opened:
        with contextlib.suppress(Exception):
            store.close()


@pytest.fixture
def store(open_store: Callable[..., Any]) -> Any:
    return open_store()


def committed_status(store: Any, job_id: str) -> tuple[str, str] | None:
    """(status, payload) as another connection reads them: what survives the server process."""
    from gpuserve.store.sqlite import SqliteJobStore

    if isinstance(store, SqliteJobStore):
        import sqlite3

        with contextlib.closing(sqlite3.connect(store.path)) as other:
            row = other.execute("SELECT status, payload FROM jobs WHERE id=?", (job_id,)).fetchone()
    else:
        import psycopg

        with psycopg.connect(store.url) as other:
            row = other.execute("SELECT status, payload FROM jobs WHERE id=%s", (job_id,)).fetchone()
    return (row[0], row[1]) if row else None
