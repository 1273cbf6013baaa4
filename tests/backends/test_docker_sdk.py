"""Without the docker extra the Docker backend module still imports, and asking for a client says what to install."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
sys.modules["docker"] = None  # what an interpreter without the docker SDK sees: ImportError
from gpuserve.backends.docker import DockerUnavailableError, docker_client
try:
    docker_client()
except DockerUnavailableError as exc:
    print(exc)
"""


def test_the_backend_imports_without_the_sdk_and_names_the_extra() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "the docker SDK is not installed: pip install 'gpuserve[docker]'"
