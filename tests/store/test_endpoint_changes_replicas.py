"""Two servers on one PostgreSQL database: an endpoint changed, added or removed on one is changed on the other within seconds."""

from __future__ import annotations

from pathlib import Path

import httpx

from gpuserve.live.auth import hash_token
from gpuserve.live.deployment import Deployment
from gpuserve.live.runtime import Endpoint
from gpuserve.platform import Platform
from gpuserve.store.postgres import PostgresJobStore
from tests.support.live import FAST, HANDLERS, endpoint_spec, wait_until
from tests.support.postgres import clear

ADMIN = "sk-replica-admin"


def test_a_change_on_one_server_reaches_the_other(tmp_path: Path, pg_database: str) -> None:
    clear(pg_database)
    dep = Deployment(spec=endpoint_spec("ep", max_workers=1), handler_path=str(HANDLERS / "echo_gpuserve.py"), sdk="gpuserve")
    servers = [
        Platform(
            [Endpoint(dep)],
            data_dir=tmp_path / name,
            backend=None,
            settings=FAST,
            store=PostgresJobStore(pg_database, poll_fallback_s=0.5),
            admin_key_hashes=frozenset({hash_token(ADMIN)}),
        ).start()
        for name in ("a", "b")
    ]
    a, b = servers
    try:
        admin = httpx.Client(base_url=a.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert admin.patch("/api/endpoints/ep", json={"set": {"scaling.max_workers": 4}}).status_code == 200
        wait_until(lambda: b.runtime.endpoints["ep"].deployment.spec.scaling.max_workers == 4, 30, "b sees max_workers 4")
        r = admin.post("/api/endpoints", json={"endpoint": {"id": "more", "handler": str(HANDLERS / "echo_gpuserve.py")}})
        assert r.status_code == 200, r.text
        wait_until(lambda: "more" in b.runtime.endpoints, 30, "b serves the added endpoint")
        assert admin.delete("/api/endpoints/ep").status_code == 200
        wait_until(lambda: "ep" not in b.runtime.endpoints, 30, "b no longer serves the removed endpoint")
        assert a.runtime.endpoints.keys() == b.runtime.endpoints.keys() == {"more"}
    finally:
        for server in servers:
            server.stop()
