"""One server per data directory: a second store (or `gpuserve serve`) on it is refused, naming the directory and holder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpuserve.core.errors import InUseError
from gpuserve.store.sqlite import SqliteJobStore


def test_a_second_store_on_the_same_directory_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = SqliteJobStore(tmp_path / "jobs.sqlite3")
    with pytest.raises(InUseError, match=rf"data directory {tmp_path} is in use by another gpuserve server \(pid {os.getpid()}\)"):
        SqliteJobStore(tmp_path / "jobs.sqlite3")
    first.close()
    SqliteJobStore(tmp_path / "jobs.sqlite3").close()  # free again


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from gpuserve.store.sqlite import SqliteJobStore
            SqliteJobStore({str(tmp_path / "jobs.sqlite3")!r})
            print("locked", flush=True)
            time.sleep(120)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(InUseError, match=rf"pid {holder.pid}\)"):
            SqliteJobStore(tmp_path / "jobs.sqlite3")
    finally:
        holder.kill()  # SIGKILL: no cleanup runs
        holder.wait(10)
    SqliteJobStore(tmp_path / "jobs.sqlite3").close()


def test_gpuserve_serve_on_a_held_directory_says_so_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "handler.py").write_text("from gpuserve import serverless\nserverless.start({'handler': lambda job: 1})\n")
    (tmp_path / "endpoints.yaml").write_text("endpoints:\n  - id: ep\n    handler: handler.py\n")
    held = SqliteJobStore(tmp_path / "data" / "jobs.sqlite3")
    try:
        out = subprocess.run(
            [sys.executable, "-m", "gpuserve.cli", "serve", str(tmp_path / "endpoints.yaml"), "--port", "0",
             "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        held.close()
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use by another gpuserve server" in lines[0] and str(tmp_path / "data") in lines[0]
