"""`gpuserve endpoints`' tables: 80 columns with ids and states whole, every column with --wide; and `--version`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from gpuserve import __version__
from gpuserve.cli import app
from gpuserve.cli.tables import endpoint_tables

STATES = ("INITIALIZING", "IDLE", "RUNNING", "THROTTLED", "OUTDATED", "UNHEALTHY")
FAILURE = "image not found (127.0.0.1:5000/team/image-classifier-large:v2-with-a-long-tag)"


def _body() -> dict[str, Any]:
    endpoints = []
    for eid, policy in (("image-classifier-large", "runpod_request_count"), ("echo", "knative_kpa")):
        workers = [
            {"id": f"{eid}-{i:02d}3f9a1c0b2e", "state": state, "inFlight": i % 2, "capacity": 1, "ageS": 1234.5,
             "idleForS": 12.0, "costUsd": 1.2345}
            for i, state in enumerate(STATES)
        ]
        workers[-1]["failure"] = FAILURE  # the UNHEALTHY one says why
        endpoints.append({
            "id": eid, "policy": policy, "minWorkers": 1, "maxWorkers": 12, "idleTimeoutS": 30.0,
            "queue": {"inQueue": 1234, "inProgress": 12, "oldestQueuedAgeS": 3.25},
            "jobs": {"completed": 123456, "failed": 1234}, "workers": workers,
            "cost": {"costUsd": 1234.5678, "gpuSeconds": 98765.4},
        })
    return {"endpoints": endpoints}


def _render(wide: bool, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    for table in endpoint_tables(_body(), "endpoints at http://127.0.0.1:8000", wide=wide):
        console.print(table)
    return console.export_text().splitlines()


def _ink(lines: list[str]) -> list[str]:
    """The characters printed, wherever a wrap put them (a crop at the edge would lose some)."""
    return sorted(c for c in "".join(lines) if not c.isspace() and c != "─")


def test_80_columns_keep_every_id_and_state_whole() -> None:
    lines = _render(wide=False, width=80)
    text = "\n".join(lines)
    assert max(len(line) for line in lines) <= 80
    assert _ink(lines) == _ink(_render(wide=False, width=300))  # wrapped, nothing cut
    for ep in _body()["endpoints"]:
        assert ep["id"] in text
        for w in ep["workers"]:
            assert w["id"] in text  # never shortened with an ellipsis
    for state in STATES:
        assert state in text
    assert "…" not in text
    assert "1,234.57" in text and "123456" in text
    # Each UNHEALTHY worker's cause under its table, wrapped at words: every word whole.
    words = text.split()
    for ep in _body()["endpoints"]:
        at = words.index(f"{ep['id']}-053f9a1c0b2e:")
        assert words[at + 1 : at + 1 + len(FAILURE.split())] == FAILURE.split()


def test_wide_shows_every_column_unwrapped() -> None:
    lines = _render(wide=True, width=300)
    text = "\n".join(lines)
    for header in ("policy", "min..max", "1..12", "idle timeout s", "oldest wait s", "GPU-s", "cost USD", "runpod_request_count", "98,765.4"):
        assert header in text
    assert "6 initializing" not in text and "1 initializing" in text  # the workers summary spelled out
    assert "failure" in text and FAILURE in text  # a column, one line


def test_version() -> None:
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"gpuserve {__version__}"
