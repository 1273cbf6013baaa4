"""The fixed limits of the HTTP API, stated once for the FastAPI routes, the fast path and the OpenAPI schema.

The /run and /runsync body limits are not here: operators may change them, so they are
ServerSettings fields in gpuserve/live/settings.py (`max_run_bytes` 10 MiB and
`max_runsync_bytes` 20 MiB, Runpod's values).
"""

from __future__ import annotations

from gpuserve.live.settings import MIB

__all__ = [
    "DEFAULT_RUNSYNC_WAIT_MS",
    "EXECUTION_TIMEOUT_MS",
    "MAX_JOBS_PER_TAKE",
    "MAX_JSON_DEPTH",
    "MAX_RESULT_BYTES",
    "MAX_UNHEALTHY_REASON_CHARS",
    "POLICY_RANGES_MS",
    "RUNSYNC_WAIT_MS",
    "TTL_MS",
    "WEEK_MS",
]

WEEK_MS = 7 * 24 * 3600 * 1000

# Runpod's job policy ranges (protocol §4), inclusive, in ms: executionTimeout 5 s..7 d, ttl 10 s..7 d.
EXECUTION_TIMEOUT_MS = (5_000, WEEK_MS)
TTL_MS = (10_000, WEEK_MS)
POLICY_RANGES_MS: dict[str, tuple[int, int]] = {"executionTimeout": EXECUTION_TIMEOUT_MS, "ttl": TTL_MS}

# /runsync?wait=: Runpod accepts 1 s..5 min and waits 90 s without it.
RUNSYNC_WAIT_MS = (1_000, 300_000)
DEFAULT_RUNSYNC_WAIT_MS = 90_000

# Results may be large (a model's output); the worker SDK does not retry a 4xx, so a refused
# result is a lost one. Accept far more than the client-side limits (job-done, job-stream).
MAX_RESULT_BYTES = 256 * MIB

# One take (job-take-batch's batch_size, job-done's gpuserve_take) hands out at most this many
# jobs: a worker asking for 10**9 gets 1024, and the answer stays a bounded JSON list.
MAX_JOBS_PER_TAKE = 1024

# Nesting of a JSON body (objects and arrays). Python's parser and encoder recurse once per level
# and fail near 1,000 (a 970-deep body answered 500, and its job could never be encoded again);
# real payloads (chat messages, tool calls) stay well under 20.
MAX_JSON_DEPTH = 100

# The SDK truncates a failed fitness check's reason to 256 characters; a hand-made ping is cut the same.
MAX_UNHEALTHY_REASON_CHARS = 256
