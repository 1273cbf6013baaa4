"""Local modes of the worker SDK: --test_input, test_input.json, and the dev server; plus pure result shaping."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import gpuserve
from gpuserve.worker.env import WorkerEnv
from gpuserve.worker.runner import handler_kind, shape_return


@pytest.fixture
def examples(pytestconfig: pytest.Config) -> Path:
    """The checkout's examples/ folder (the tests' root folder holds pyproject.toml)."""
    return pytestconfig.rootpath / "examples"


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_WEBHOOK")}
    return subprocess.run([sys.executable, *args], cwd=cwd, env={**clean, **(env or {})}, capture_output=True, text=True, timeout=60)


def test_shape_return_matches_runpod() -> None:
    assert shape_return(5) == ({"output": 5}, False)
    assert shape_return(None) == ({"output": None}, False)
    assert shape_return({}) == ({}, False)
    assert shape_return({"a": 1, "refresh_worker": True}) == ({"output": {"a": 1}}, True)
    assert shape_return({"error": {"code": 1}}) == ({"error": {"code": 1}}, False)
    assert shape_return({"error": "bad", "x": 1}) == ({"output": {"x": 1}, "error": "bad"}, False)
    assert shape_return({"error": None, "x": 1}) == ({"output": {"x": 1}}, False)  # a falsy error is no error


def test_handler_kinds() -> None:
    def s(job): return job

    async def a(job): return job

    def g(job):
        yield job

    async def ag(job):
        yield job

    class Callable:
        async def __call__(self, job): return job

    assert [handler_kind(h) for h in (s, a, g, ag, Callable())] == ["sync", "async", "generator", "async_generator", "async"]


def test_env_placeholders_and_urls() -> None:
    env = WorkerEnv.from_environ({
        "RUNPOD_POD_ID": "w1",
        "RUNPOD_WEBHOOK_GET_JOB": "http://h/v2/ep/job-take/$ID?gpu=A",
        "RUNPOD_WEBHOOK_POST_OUTPUT": "http://h/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=A",
        "RUNPOD_WEBHOOK_PING": "http://h/v2/ep/ping/$RUNPOD_POD_ID?gpu=A",
        "RUNPOD_PING_INTERVAL": "2500",
    })
    assert env.take_url_for(1, in_progress=False) == "http://h/v2/ep/job-take/w1?gpu=A&job_in_progress=0"
    assert env.take_url_for(3, in_progress=True) == "http://h/v2/ep/job-take-batch/w1?gpu=A&batch_size=3&job_in_progress=1"
    assert env.done_url_for("j 1", is_stream=True) == "http://h/v2/ep/job-done/w1/j%201?gpu=A&isStream=true"
    assert env.stream_url_for("j1") == "http://h/v2/ep/job-stream/w1/j1?gpu=A&isStream=false"  # derived
    assert env.stop_url == "http://h/v2/ep/job-stop/w1?gpu=A"
    assert env.ping_url == "http://h/v2/ep/ping/w1?gpu=A" and env.ping_interval_s == 2.5
    bare = WorkerEnv.from_environ({"RUNPOD_WEBHOOK_GET_JOB": "http://h/v2/ep/job-take/w2"})
    assert bare.take_url_for(1, in_progress=False) == "http://h/v2/ep/job-take/w2?job_in_progress=0"
    assert WorkerEnv.from_environ({}).take_url is None
    with pytest.raises(ValueError, match="RUNPOD_PING_INTERVAL"):
        WorkerEnv.from_environ({"RUNPOD_PING_INTERVAL": "often"})


def test_import_gpuserve_stays_light(pytestconfig: pytest.Config) -> None:
    code = (
        "import sys, gpuserve; from gpuserve import serverless; assert gpuserve.serverless is serverless;"
        "heavy = {m.split('.')[0] for m in sys.modules} & {'typer', 'fastapi', 'pandas', 'rich', 'pydantic', 'simpy', 'numpy', 'yaml'};"
        "print(sorted(heavy))"
    )
    out = _run(["-c", code], pytestconfig.rootpath)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("example", "flag", "expected"),
    [
        ("echo", '{"input": {"x": 1}}', {"output": {"echo": {"x": 1}}}),
        ("streaming", '{"input": {"text": "a b", "delay_s": 0}}', {"output": [{"index": 0, "token": "a"}, {"index": 1, "token": "b"}]}),
        ("async_concurrent", '{"input": {"seconds": 0.01}}', {"output": {"slept_s": 0.01, "job_id": "local_test", "worker_id": None}}),
        ("slow_progress", '{"input": {"steps": 2, "work": 10}}', None),
    ],
)
def test_examples_run_with_test_input(
    example: str, flag: str, expected: dict | None, tmp_path: Path, examples: Path
) -> None:
    out = _run([str(examples / example / "handler.py"), "--test_input", flag], tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if expected is not None:
        assert result == expected
    else:
        assert result["output"]["steps"] == 2
        assert '[progress] {"step": 1, "of": 2, "pct": 50}' in out.stderr


def test_gpu_worker_example_loads_its_model_once_and_serves_its_test_input(tmp_path: Path, examples: Path) -> None:
    out = _run([str(examples / "gpu_worker" / "handler.py")], tmp_path, {"MODEL_PATH": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])["output"]
    assert result["weights"] == "seed 0" and result["device"] in ("python", "cpu", "cuda")
    assert isinstance(result["y"], float) and out.stdout.count("model loaded on") == 1


def test_test_input_json_beside_the_handler_is_used(tmp_path: Path, examples: Path) -> None:
    # Run from another folder: the file beside the handler is found anyway.
    out = _run([str(examples / "echo" / "handler.py")], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"output": {"echo": {"message": "hello"}}}


FAILING = """
from gpuserve import serverless

def handler(job):
    if job["input"].get("dict"):
        return {"error": "bad input"}
    raise ValueError("no good")

serverless.start({"handler": handler})
"""


def test_exit_codes_for_errors_and_missing_input(tmp_path: Path) -> None:
    handler = tmp_path / "h.py"
    handler.write_text(textwrap.dedent(FAILING))
    raised = _run([str(handler), "--test_input", '{"input": {}}'], tmp_path)
    assert raised.returncode == 1
    assert json.loads(json.loads(raised.stdout)["error"])["error_message"] == "no good"
    assert "ValueError: no good" in raised.stderr  # the traceback, readable
    returned = _run([str(handler), "--test_input", '{"input": {"dict": true}}'], tmp_path)
    assert returned.returncode == 1 and json.loads(returned.stdout) == {"error": "bad input"}
    no_input_key = _run([str(handler), "--test_input", '{"x": 1}'], tmp_path)
    assert no_input_key.returncode == 1 and '"input"' in no_input_key.stderr
    bad_json = _run([str(handler), "--test_input", "{nope"], tmp_path)
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    nothing = _run([str(handler)], tmp_path)
    assert nothing.returncode == 1 and "no test input" in nothing.stderr


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[str]:
    code = """
    import asyncio, os
    from gpuserve import serverless

    async def handler(job):
        mode = job["input"].get("mode")
        if mode == "stream":
            return stream(job)
        if mode == "fail":
            raise RuntimeError("dev failure")
        if mode == "slow":
            serverless.progress_update(job, {"pct": 10})
            await asyncio.sleep(30)
        return {"echo": job["input"]}

    async def stream(job):
        for i in range(3):
            await asyncio.sleep(0.05)
            yield i

    serverless.start({"handler": handler, "return_aggregate_stream": True, "concurrency_modifier": lambda c: 2})
    """
    handler = tmp_path / "dev.py"
    handler.write_text(textwrap.dedent(code))
    proc = subprocess.Popen(
        [sys.executable, str(handler), "--rp_serve_api", "--rp_api_host", "127.0.0.1", "--rp_api_port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://[\d.]+:\d+", line)
    assert match, line
    yield match.group(0)
    proc.terminate()
    proc.wait(10)


def _wait(client: httpx.Client, job_id: str, want: set[str]) -> dict:
    deadline = time.monotonic() + 30
    while True:
        body = client.get(f"/status/{job_id}").json()
        if body["status"] in want or time.monotonic() > deadline:
            return body
        time.sleep(0.02)


def test_dev_server_behaves_like_the_platform(dev_server: str) -> None:
    with httpx.Client(base_url=dev_server, timeout=30) as c:
        r = c.post("/run", json={"input": {"a": 1}})
        assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE"
        done = _wait(c, r.json()["id"], {"COMPLETED"})
        assert done["output"] == {"echo": {"a": 1}} and "delayTime" in done and "executionTime" in done
        sync = c.post("/runsync", json={"input": {"b": 2}}).json()
        assert sync["status"] == "COMPLETED" and sync["output"] == {"echo": {"b": 2}}
        failed = c.post("/runsync", json={"input": {"mode": "fail"}}).json()
        assert failed["status"] == "FAILED" and "dev failure" in failed["error"]
        # Streams: every chunk handed out once, under /v2/{endpoint}/ too.
        sid = c.post("/v2/any/run", json={"input": {"mode": "stream"}}).json()["id"]
        chunks: list[int] = []
        while True:
            body = c.get(f"/v2/any/stream/{sid}").json()
            chunks += [x["output"] for x in body["stream"]]
            if body["status"] == "COMPLETED" and not body["stream"]:
                break
        assert chunks == [0, 1, 2]
        assert c.get(f"/status/{sid}").json()["output"] == [0, 1, 2]
        # Progress shows while running; cancel ends it.
        slow = c.post("/run", json={"input": {"mode": "slow"}}).json()["id"]
        running = _wait(c, slow, {"IN_PROGRESS"})
        deadline = time.monotonic() + 10
        while running.get("output") != {"pct": 10} and time.monotonic() < deadline:
            running = c.get(f"/status/{slow}").json()
        assert running["status"] == "IN_PROGRESS" and running["output"] == {"pct": 10}
        assert c.post(f"/cancel/{slow}").json() == {"id": slow, "status": "CANCELLED"}
        assert c.get("/health").json()["jobs"]["completed"] == 3
        # Bad input is refused with the field named; unknown ids are 404.
        bad = c.post("/run", json={"nope": 1})
        assert bad.status_code == 400 and "input" in bad.json()["error"]
        assert c.post("/run", json={"input": 3}).status_code == 400
        assert c.get("/status/missing").status_code == 404
        assert c.post("/retry/" + r.json()["id"]).status_code == 400  # only FAILED or TIMED_OUT
        assert c.post("/purge-queue").json() == {"removed": 0, "status": "completed"}


def test_lazy_serverless_attribute() -> None:
    assert gpuserve.serverless.start.__module__ == "gpuserve.worker.entrypoint"
    with pytest.raises(AttributeError):
        _ = gpuserve.no_such_thing  # type: ignore[attr-defined]
