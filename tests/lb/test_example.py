"""examples/lb_fastapi served as is: a FastAPI worker held for while its model loads, then JSON and server-sent events."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from gpuserve.config.endpoints import load_endpoints
from gpuserve.platform import Platform
from tests.lb.support import LB_FAST
from tests.support.live import process_backend_for_tests

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lb_fastapi" / "endpoints.yaml"
AUTH = {"Authorization": "Bearer sk-examples"}


def test_the_fastapi_example_from_zero(tmp_path: Path) -> None:
    config = load_endpoints(EXAMPLE)
    with Platform.from_config(
        config, data_dir=tmp_path, backend=process_backend_for_tests(), port=0, settings=LB_FAST
    ) as platform:
        url = f"{platform.url}/lb/chat"
        # At zero workers: held while one starts and its /ping says 204, answered once it says 200.
        r = httpx.post(f"{url}/generate", json={"prompt": "hello world", "max_tokens": 4}, headers=AUTH, timeout=90)
        assert r.status_code == 200, r.text
        assert r.json() == {"text": "HELLO WORLD HELLO WORLD", "tokens": 4}
        worker = platform.registry.all("chat")[0]
        assert worker.first_initializing_s is not None  # it did answer 204 while loading
        with httpx.stream(
            "POST", f"{url}/generate", json={"prompt": "a b", "max_tokens": 3, "stream": True}, headers=AUTH, timeout=60
        ) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert events == ['data: {"token": "A"}', 'data: {"token": "B"}', 'data: {"token": "A"}', "data: [DONE]"]
        stats = httpx.get(f"{url}/stats", headers=AUTH).json()
        assert stats["ready"] is True and stats["requests"] == 2 and stats["worker"] == worker.worker_id
        assert json.loads(httpx.get(f"{platform.url}/v2/chat/health", headers=AUTH).text)["requests"]["in_flight"] == 0
