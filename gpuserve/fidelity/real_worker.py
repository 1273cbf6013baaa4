"""A real handler for fidelity studies: it owns its service time (its own random draw, or real CPU work) and its cold start.

Unlike the synthetic worker, nothing here comes from the simulator: the job input (which a
replay fills with the simulator's sample) is ignored. Its cold start is real work: the
handler's imports (numpy) and reading its model file from disk into memory, from where the
model source puts it. Run by a backend as `python real_worker.py` with the platform's worker
environment plus:
    GPUSERVE_REAL_MODEL_SOURCE  host_cache (default), network_volume or baked_image
    GPUSERVE_REAL_MODEL_PATH    the model file for host_cache (a file on this host's disk) and
                                network_volume (a file on the mounted volume); a baked image
                                reads `model.bin` beside this script (inside the image)
    GPUSERVE_REAL_SERVICE       `lognormal:MEAN_S:SIGMA` (default lognormal:1.0:0.5), a sleep the
                                handler draws itself from its own generator (OS entropy), or
                                `cpu:ROUNDS`, that many rounds of SHA-256 over 1 MiB (real CPU work)
    GPUSERVE_FIDELITY_CONCURRENCY  jobs at once (default 1)
Each job's output says what it did: the drawn or measured service seconds and this worker's
own start-up (imports and model read), so a study can check the records against it.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path
from typing import Any

_T_START = time.perf_counter()
import numpy as np  # noqa: E402  (a real import is part of the cold start measured here)

_T_IMPORTED = time.perf_counter()

CHUNK_BYTES = 8 << 20


def model_path() -> Path:
    """Where this worker's model file is, by model source."""
    source = os.environ.get("GPUSERVE_REAL_MODEL_SOURCE", "host_cache")
    if source == "baked_image":
        return Path(__file__).with_name("model.bin")
    if source not in ("host_cache", "network_volume"):
        raise SystemExit(f"GPUSERVE_REAL_MODEL_SOURCE must be host_cache, network_volume or baked_image, was {source!r}")
    path = os.environ.get("GPUSERVE_REAL_MODEL_PATH")
    if not path:
        raise SystemExit(f"GPUSERVE_REAL_MODEL_PATH must name the model file for model source {source}")
    return Path(path)


def load_model(path: Path) -> np.ndarray:
    """Read the whole file into memory as float32 weights (chunked, as a loader streams a checkpoint)."""
    size = path.stat().st_size
    buf = bytearray(size - size % 4)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        pos = 0
        while pos < len(buf):
            n = f.readinto(view[pos : pos + CHUNK_BYTES])
            if not n:
                break
            pos += n
    return np.frombuffer(buf, dtype=np.float32)


def parse_service(spec: str) -> tuple[str, float, float]:
    kind, _, rest = spec.partition(":")
    parts = [float(x) for x in rest.split(":") if x]
    if kind == "lognormal" and len(parts) == 2 and parts[0] > 0 and parts[1] >= 0:
        return kind, parts[0], parts[1]
    if kind == "cpu" and len(parts) == 1 and parts[0] >= 0:
        return kind, parts[0], 0.0
    raise SystemExit(f"GPUSERVE_REAL_SERVICE must be lognormal:MEAN_S:SIGMA or cpu:ROUNDS, was {spec!r}")


SERVICE = parse_service(os.environ.get("GPUSERVE_REAL_SERVICE", "lognormal:1.0:0.5"))
RNG = np.random.default_rng()  # its own stream: OS entropy, nothing shared with the simulator
WEIGHTS = load_model(model_path())
_T_LOADED = time.perf_counter()
START_UP = {"imports_s": round(_T_IMPORTED - _T_START, 4), "model_load_s": round(_T_LOADED - _T_IMPORTED, 4)}
_BLOCK = WEIGHTS[: 1 << 18].tobytes()  # 1 MiB of the model, hashed by cpu jobs


def handler(job: dict[str, Any]) -> dict[str, Any]:
    kind, a, b = SERVICE
    t = time.perf_counter()
    if kind == "lognormal":
        mu = math.log(a) - b * b / 2  # so the draw's mean is `a`
        time.sleep(float(RNG.lognormal(mu, b)))
    else:
        digest = b""
        for _ in range(int(a)):
            digest = hashlib.sha256(_BLOCK + digest).digest()
    return {"service_s": round(time.perf_counter() - t, 5), "start_up": START_UP, "done_wall_s": time.time()}


if __name__ == "__main__":
    from gpuserve import serverless

    concurrency = max(1, int(os.environ.get("GPUSERVE_FIDELITY_CONCURRENCY", "1")))
    serverless.start({"handler": handler, "concurrency_modifier": lambda _current: concurrency})
