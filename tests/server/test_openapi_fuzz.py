"""Schemathesis over /openapi.json against a real `gpuserve serve` on 127.0.0.1: no 5xx, no answer the schema does not
describe (status, content type, body), within a bounded number of examples; plus what the schema must say.

CI sets GPUSERVE_REQUIRE_SCHEMATHESIS=1 (schemathesis is in the dev extra), so a missing install fails there.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.live import serve_process, stop_process

KEY = "sk-fuzz"
ECHO = Path(__file__).parent / "handlers" / "echo_gpuserve.py"
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def _require_schemathesis() -> None:
    if importlib.util.find_spec("schemathesis") is None:
        if os.environ.get("GPUSERVE_REQUIRE_SCHEMATHESIS") == "1":
            pytest.fail("schemathesis is not installed (pip install -e '.[dev]')")
        pytest.skip("schemathesis is not installed")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("fuzz")
    config = {
        "api_keys": [KEY],
        "server": {"admin_keys": ["sk-fuzz-admin"]},  # the fuzzer sends the client key: operator routes answer 403
        "endpoints": [{"id": "echo", "handler": str(ECHO), "scaling": {"min_workers": 1, "max_workers": 1}}],
    }
    (tmp / "endpoints.yaml").write_text(json.dumps(config))
    proc, url = serve_process(tmp / "endpoints.yaml", tmp / "data")
    try:
        yield tmp, url
    finally:
        stop_process(proc, signal.SIGTERM)


def test_schemathesis_finds_no_5xx_and_no_schema_violation(served) -> None:
    _require_schemathesis()
    tmp, url = served
    # The endpoint's real id, so the client routes reach their logic instead of a 404; the worker
    # long polls (an unknown worker's answer waits unknown_worker_delay_s, 1 s) get fewer examples.
    (tmp / "schemathesis.toml").write_text(
        'generation.max-examples = 5\n\n[parameters]\n"path.endpoint_id" = "echo"\n\n'
        '[[operations]]\ninclude-tag = "worker"\ninclude-method = "GET"\ngeneration.max-examples = 1\n'
    )
    cmd = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(tmp / "schemathesis.toml"), "run",
        f"{url}/openapi.json", "-H", f"Authorization: Bearer {KEY}", "--checks", CHECKS,
        "--phases", "examples,fuzzing", "--seed", "20261201", "--workers", "2",
        "--request-timeout", "30", "--wait-for-schema", "30",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    assert " passed" in out and "failures" not in out.split("SUMMARY")[-1], out[-3000:]


def test_the_schema_lists_every_error_a_route_answers(served) -> None:
    _, url = served
    schema = httpx.get(f"{url}/openapi.json").json()
    paths = schema["paths"]
    run = paths["/v2/{endpoint_id}/run"]["post"]["responses"]
    assert {"200", "400", "401", "404", "413", "422", "429", "503"} <= set(run)
    assert "Retry-After" in run["429"]["headers"]
    assert run["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    assert {"401", "404", "429"} <= set(paths["/v2/{endpoint_id}/status/{job_id}"]["get"]["responses"])
    assert "204" in paths["/v2/{endpoint_id}/job-take/{worker_id}"]["get"]["responses"]
    assert "403" in paths["/api/endpoints"]["get"]["responses"]
    webhook = paths["/v2/{endpoint_id}/run"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["webhook"]
    assert webhook["format"] == "uri" and webhook["pattern"] == "^https?://"
    for path, item in paths.items():
        for method, op in item.items():
            if path.startswith(("/v2/", "/api/")):
                assert "401" in op["responses"], (method, path)
