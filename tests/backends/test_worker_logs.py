"""Worker logs are rate-limited and rotated once: a worker printing as fast as it can cannot fill the disk."""

from __future__ import annotations

from pathlib import Path

from gpuserve.backends.process import ProcessBackend
from gpuserve.core.types import EndpointSpec, ScaleAction
from gpuserve.live.deployment import Deployment
from gpuserve.live.registry import WorkerRegistry
from tests.support.live import wait_until

MAX_BYTES = 40_000  # under one burst (a second of RATE_BYTES_S): the log rotates
RATE_BYTES_S = 100_000
WRITTEN_BYTES = 4_000_000  # 40 s of the allowed rate, written in well under a second


def test_a_flooding_worker_gets_a_capped_rotated_log_that_counts_what_was_dropped(tmp_path: Path) -> None:
    handler = tmp_path / "flood.py"
    handler.write_text(
        "import sys\n"
        "print('first line', flush=True)\n"
        f"for i in range({WRITTEN_BYTES // 100}):\n"
        "    sys.stdout.write('x' * 99 + '\\n')\n"
        "sys.stdout.flush()\n"
        "print('last line', flush=True)\n"
    )
    dep = Deployment(spec=EndpointSpec("flood"), handler_path=str(handler))
    logs = tmp_path / "logs"
    backend = ProcessBackend(
        "http://127.0.0.1:9/", WorkerRegistry(), logs_dir=logs, log_max_bytes=MAX_BYTES, log_rate_bytes_s=RATE_BYTES_S
    )
    backend.configure(dep)
    backend.apply(dep.spec, ScaleAction(start=1), now_s=0.0)
    [view] = backend.workers("flood")
    worker_id = view.worker_id
    try:
        popen = backend._procs[worker_id].popen
        assert popen is not None
        assert popen.wait(60) == 0  # the launcher ends as its worker did
    finally:
        backend.shutdown()
    log = logs / f"{worker_id}.log"
    rotated = logs / f"{worker_id}.log.1"
    wait_until(log.exists, what="the log")
    sizes = [p.stat().st_size for p in (log, rotated) if p.exists()]
    assert all(size <= MAX_BYTES for size in sizes), sizes
    assert rotated.exists() and len(sizes) == 2
    text = rotated.read_text() + log.read_text()
    assert "first line\n" not in text  # rotated away: one rotation only
    assert "bytes of output dropped, over 100000 bytes/s]" in text
    assert sum(sizes) < WRITTEN_BYTES // 4  # most of the flood never reached the disk
