"""Local test mode: run the handler once on `--test_input` or test_input.json and print the result."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import sys
from typing import Any, TextIO

from gpuserve.worker.runner import Job, run_job

__all__ = ["find_test_input", "run_test_input"]

NO_INPUT = (
    "no test input: pass --test_input '{\"input\": {...}}', put a test_input.json beside the handler, "
    "or set RUNPOD_WEBHOOK_GET_JOB to take jobs from a server"
)


class _PrintSink:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def stream(self, job: Job, body: dict[str, Any]) -> None:
        print(f"[stream] {json.dumps(body.get('output'), default=str)}", file=self.out, flush=True)

    async def progress(self, job: Job, data: Any) -> None:
        print(f"[progress] {json.dumps(data, default=str)}", file=self.out, flush=True)


def _handler_dir() -> str:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None) or (sys.argv[0] if sys.argv and sys.argv[0] else "")
    return os.path.dirname(os.path.abspath(path)) if path else os.getcwd()


def find_test_input(flag_value: str | None) -> tuple[str | None, str]:
    """The raw test input and where it came from: the flag, test_input.json beside the handler, or the cwd."""
    if flag_value is not None:
        return flag_value, "--test_input"
    for folder in dict.fromkeys([_handler_dir(), os.getcwd()]):
        candidate = os.path.join(folder, "test_input.json")
        if os.path.isfile(candidate):
            with open(candidate, encoding="utf-8") as f:
                return f.read(), candidate
    return None, ""


def run_test_input(config: dict[str, Any], flag_value: str | None, out: TextIO | None = None) -> int:
    """Run one job locally; print stream chunks and progress to stderr and the result JSON to stdout.

    Returns the exit code: 0 on success, 1 on a handler error, bad input or no input at all.
    """
    out = sys.stdout if out is None else out
    raw, source = find_test_input(flag_value)
    if raw is None:
        print(f"error: {NO_INPUT}", file=sys.stderr)
        return 1
    try:
        job = json.loads(raw)
    except json.JSONDecodeError as exc:
        print(f"error: test input from {source} is not valid JSON: {exc}", file=sys.stderr)
        return 1
    if not isinstance(job, dict) or "input" not in job:
        print(f'error: test input from {source} must be an object with an "input" key, was {raw[:200]}', file=sys.stderr)
        return 1
    job.setdefault("id", "local_test")
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="handler")
    try:
        outcome = asyncio.run(
            run_job(
                config["handler"],
                job,
                _PrintSink(sys.stderr),
                aggregate_stream=True,  # locally, show the whole stream in the result
                refresh_worker=bool(config.get("refresh_worker", False)),
                executor=executor,
            )
        )
    finally:
        executor.shutdown(wait=False)
    print(json.dumps(outcome.body, ensure_ascii=False), file=out, flush=True)
    if outcome.failed:
        _explain_error(outcome.body["error"])
        return 1
    expected = (config.get("rp_args") or {}).get("test_output")
    if expected is not None and outcome.body.get("output") != expected:
        print(f"error: output {outcome.body.get('output')!r} differs from test_output {expected!r}", file=sys.stderr)
        return 1
    return 0


def _explain_error(error: Any) -> None:
    """Print an exception's traceback readably rather than as an escaped JSON string."""
    if isinstance(error, str):
        try:
            info = json.loads(error)
        except json.JSONDecodeError:
            info = None
        if isinstance(info, dict) and "error_traceback" in info:
            print(info["error_traceback"], file=sys.stderr, end="")
            return
    print(f"error: {error}", file=sys.stderr)
