"""Large payloads spill to disk on a real server: queued inputs and kept outputs past
server.limits.max_payload_bytes_in_memory (or each past spill_payload_bytes) live in the store's rows
only, and every job still gets its exact input and every /status its exact output, over HTTP."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from tests.support.live import SERVER_FAST, Harness

BUDGET = 1_000_000
SIZES = [50_000] * 40 + [400_000] * 4  # 2 MB under spill_payload_bytes (100 kB), 1.6 MB past it


def _input(i: int) -> dict[str, object]:
    seed = hashlib.sha256(str(i).encode()).hexdigest()
    return {"i": i, "blob": (seed * (SIZES[i] // len(seed) + 1))[: SIZES[i]]}


def test_queued_inputs_and_kept_outputs_past_the_budget_stay_on_disk_and_come_back_exact(make_server) -> None:
    h: Harness = make_server(settings=replace(SERVER_FAST, max_payload_bytes_in_memory=BUDGET))
    ids = [h.submit({"input": _input(i)}) for i in range(len(SIZES))]
    on_disk = [h.store.get(j).spilled("payload_json") is not None for j in ids]
    # The first 50 kB inputs (counted twice: the text and the parsed dict) fill the budget; the rest of
    # them, and every 400 kB one, stay on disk.
    assert on_disk == [False] * 9 + [True] * 35, on_disk
    assert 9 * 100_000 < h.store.bookkeeping()["payload_bytes"] <= BUDGET
    w = h.add_worker("w1", capacity=len(SIZES))
    got = w.get("/job-take-batch/w1", params={"batch_size": len(SIZES)}).json()
    assert [j["id"] for j in got] == ids
    assert [job["input"] == _input(i) for i, job in enumerate(got)] == [True] * len(SIZES)
    for job in got:
        assert w.post(f"/job-done/w1/{job['id']}", json={"output": job["input"]}).json()["accepted"] == "COMPLETED"
    assert h.store.bookkeeping()["payload_bytes"] <= BUDGET  # inputs and outputs of finished jobs together
    lost = [i for i, job_id in enumerate(ids) if h.job_status(job_id).get("output") != _input(i)]
    assert lost == []
