"""The worker's start-up report (its cold-start file, unchanged on the wire) and the one cold-start record both backends keep."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpuserve.core.startup import PHASES, PULL_FIELDS, ColdStartRecord, PullProgress, StartReport

# Spawned at 100 s, exec'd 0.25 s later, the SDK imported at 100.5 s, start() at 101.5 s, the first take at 102 s.
REPORT = StartReport("w1", 100.0, 100.25, 100.5, 101.5, 102.0)
WIRE_KEYS = [
    "worker_id",
    "spawn_wall_s",
    "process_start_wall_s",
    "sdk_import_wall_s",
    "start_called_wall_s",
    "first_take_wall_s",
    "spawn_to_process_s",
    "process_to_sdk_import_s",
    "sdk_import_to_start_s",
    "start_to_first_take_s",
    "spawn_to_first_take_s",
    "process_to_first_take_s",
]


def test_the_cold_start_file_keeps_its_keys_and_values() -> None:
    data = REPORT.as_json()
    assert list(data) == WIRE_KEYS
    assert data["spawn_to_process_s"] == 0.25 and data["process_to_sdk_import_s"] == 0.25
    assert data["sdk_import_to_start_s"] == 1.0 and data["start_to_first_take_s"] == 0.5
    assert data["spawn_to_first_take_s"] == 2.0 and data["process_to_first_take_s"] == 1.75
    assert StartReport.from_json(json.loads(json.dumps(data))) == REPORT


def test_gaps_are_rounded_to_a_tenth_of_a_millisecond_and_never_negative() -> None:
    d = StartReport("w", 10.0, 9.0, 10.000012345, 10.5).durations()
    assert d["spawn_to_process_s"] == 0.0  # the exec instant is known to 10 ms only
    assert d["process_to_sdk_import_s"] == 1.0 and d["sdk_import_to_start_s"] == 0.5
    assert d["start_to_first_take_s"] is None and d["spawn_to_first_take_s"] is None


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"spawn_wall_s": 1.0},
        {**REPORT.as_json(), "worker_id": 7},
        {**REPORT.as_json(), "start_called_wall_s": None},
        {**REPORT.as_json(), "sdk_import_wall_s": "soon"},
        {**REPORT.as_json(), "first_take_wall_s": True},
    ],
)
def test_a_file_holding_something_else_reads_as_no_report(data: object) -> None:
    assert StartReport.from_json(data) is None


def test_integer_instants_read_as_seconds() -> None:
    report = StartReport.from_json({**REPORT.as_json(), "spawn_wall_s": 100})
    assert report == REPORT and isinstance(report.spawn_wall_s, float)


def test_a_spawned_worker_is_recorded_from_its_report() -> None:
    rec = ColdStartRecord.from_report("w1", "ep", 99.9, REPORT)
    assert (rec.kind, rec.requested_wall_s, rec.create_s) == ("cold", 99.9, None)
    assert (rec.start_s, rec.runtime_init_s, rec.first_take_s, rec.total_s) == (0.25, 1.25, 0.5, 2.0)
    assert rec.phases() == {"start_s": 0.25, "runtime_init_s": 1.25, "first_take_s": 0.5}
    # The backend's own view of the total (spawn to the take the server saw) wins over the worker's.
    assert ColdStartRecord.from_report("w1", "ep", 99.9, REPORT, total_s=2.1).total_s == 2.1


def test_a_worker_without_a_report_has_only_what_the_backend_saw() -> None:
    rec = ColdStartRecord.from_report("w2", "ep", 5.0, None, total_s=1.5, gpu_ids=(0, 1))
    assert rec.phases() == {} and rec.total_s == 1.5 and rec.gpu_ids == (0, 1)
    assert ColdStartRecord.from_report("w3", "ep", 5.0, None).total_s is None


def test_the_record_is_frozen_and_flat() -> None:
    rec = ColdStartRecord("w1", "ep", "flash_unpause", 3.0, start_s=0.02, total_s=0.05, gpu_ids=(2,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.total_s = 1.0  # type: ignore[misc]
    assert rec.as_dict() == {
        "worker_id": "w1",
        "endpoint_id": "ep",
        "kind": "flash_unpause",
        "requested_wall_s": 3.0,
        "create_s": None,
        "start_s": 0.02,
        "runtime_init_s": None,
        "first_take_s": None,
        "total_s": 0.05,
        "gpu_ids": (2,),
        "pull_s": None,
        **{f"pull_{name}": None for name in PULL_FIELDS},
    }
    pulled = dataclasses.replace(rec, pull_s=1.5, pull=PullProgress(3, 3, 1, 2048, 2048))
    assert pulled.as_dict()["pull_layers_cached"] == 1 and pulled.as_dict()["pull_bytes_done"] == 2048
    assert pulled.phases() == {"pull_s": 1.5, "start_s": 0.02}
    assert list(dataclasses.replace(ColdStartRecord("w", "e", "cold", 0.0, 1.0, 2.0, 3.0, 4.0), pull_s=0.5).phases()) == list(PHASES)
