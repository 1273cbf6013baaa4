"""Server test fixtures: `make_server` starts real servers (tests/support/live.py) and stops them at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpuserve.live.deployment import Deployment
from gpuserve.live.settings import ServerSettings
from tests.support.live import KEY, SERVER_FAST, Harness, deployment


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """Start servers; every one is stopped (and its worker processes killed) at teardown."""
    started: list[Harness] = []

    def start(
        deployments: list[Deployment] | None = None,
        *,
        settings: ServerSettings = SERVER_FAST,
        backend: str | None = None,
        keys: tuple[str, ...] = (KEY,),
        data_dir: Path | None = None,
        fast_path: bool = True,
    ) -> Harness:
        h = Harness(
            tmp_path,
            deployments or [deployment()],
            settings,
            backend=backend,
            keys=keys,
            data_dir=data_dir,
            fast_path=fast_path,
        ).start()
        started.append(h)
        return h

    yield start
    for h in reversed(started):
        h.stop()
