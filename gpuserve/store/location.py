"""Where a server's jobs live: SQLite in its data directory (the default) or a PostgreSQL database named by URL."""

from __future__ import annotations

import re
from pathlib import Path

from gpuserve.core.errors import ConfigError
from gpuserve.store.base import JobStore

__all__ = ["check_url", "open_store", "redact"]


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def check_url(url: str) -> str:
    """A store URL must name PostgreSQL; anything else is one error naming the field."""
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("store", redact(url), "must be a postgresql:// URL (leave it out for SQLite in the data directory)")
    return url


def open_store(
    url: str | None,
    data_dir: Path,
    *,
    now_s: float,
    lease_s: float,
    max_retries: int,
    max_payload_bytes_in_memory: int | None = 100_000_000,
    spill_payload_bytes: int | None = 100_000,
) -> JobStore:
    """The store a server runs on; either way the data directory is locked (one server per folder of logs).

    `lease_s` and `max_retries` apply to leases that expire: only on PostgreSQL, where other
    servers may hold jobs; one SQLite server's registry knows every holder. The payload limits
    are SQLite's (store/spill.py): PostgreSQL keeps no job in memory past the call that read it.
    """
    if url is None:
        from gpuserve.store.sqlite import SqliteJobStore

        return SqliteJobStore(
            data_dir / "jobs.sqlite3",
            now_s=now_s,
            max_payload_bytes_in_memory=max_payload_bytes_in_memory,
            spill_payload_bytes=spill_payload_bytes,
        )
    check_url(url)
    try:
        from gpuserve.store.postgres import PostgresJobStore
    except ImportError as exc:
        raise ConfigError("store", redact(url), str(exc)) from None
    return PostgresJobStore(url, now_s=now_s, lease_s=lease_s, max_retries=max_retries, data_dir=data_dir)
