"""A real PostgreSQL for tests: the server `scripts/postgres-setup.sh` starts, one throwaway database per user.

GPUSERVE_TEST_POSTGRES names the server (a role that may create databases). Unset, the tests that
need it skip, unless GPUSERVE_REQUIRE_POSTGRES=1 (CI), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def postgres_url() -> str:
    """The server's URL, or skip (fail under GPUSERVE_REQUIRE_POSTGRES=1) when there is none."""
    url = os.environ.get("GPUSERVE_TEST_POSTGRES", "")
    problem = "" if url else "GPUSERVE_TEST_POSTGRES is not set (eval \"$(bash scripts/postgres-setup.sh)\")"
    if url:
        try:
            import psycopg

            psycopg.connect(url, connect_timeout=5).close()
        except Exception as exc:  # ImportError included: the postgres extra is missing
            problem = f"PostgreSQL at GPUSERVE_TEST_POSTGRES is not usable: {exc}"
    if problem:
        if os.environ.get("GPUSERVE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"GPUSERVE_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)
    return url


def _with_database(url: str, name: str) -> str:
    base, _, query = url.partition("?")
    head = base.rsplit("/", 1)[0]
    return f"{head}/{name}" + (f"?{query}" if query else "")


@contextmanager
def throwaway_database(url: str) -> Iterator[str]:
    """A fresh database on that server for the block's life (dropped after, even if connections remain)."""
    import psycopg

    name = f"gpuserve_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clear(url: str) -> None:
    """Empty every table of a throwaway database (its schema stays), so each test starts from nothing."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        data = [t for t in tables if t != "schema_version"]
        if data:
            conn.execute(f"TRUNCATE {', '.join(data)} RESTART IDENTITY")
        if "jobs" in tables:
            conn.execute("ALTER SEQUENCE job_seq RESTART")
