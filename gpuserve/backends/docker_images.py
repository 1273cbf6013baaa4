"""Worker images, built offline: the gpuserve/worker base (SDK + httpx from host-made wheels) and user worker folders.

No registry is reachable from inside a container, so every Python package an image needs
is turned into a wheel on the host (`pip wheel` / `pip download`) and put in the build
context under `wheels/`; the Dockerfile installs with `pip install --no-index --find-links`.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "BASE_IMAGE",
    "WORKER_IMAGE",
    "BuildError",
    "build_worker_dir",
    "ensure_worker_image",
    "source_hash",
]

log = logging.getLogger("gpuserve.docker")

BASE_IMAGE = "gpuserve/base:bookworm"
WORKER_IMAGE = "gpuserve/worker:latest"
# The worker image's Python (Debian bookworm): wheels are fetched for it, not for the host's.
IMAGE_PYTHON_VERSION = "3.11"
IMAGE_PLATFORM = "manylinux2014_x86_64"

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_DOCKERFILE = REPO_ROOT / "docker" / "worker" / "Dockerfile"


class BuildError(RuntimeError):
    """An image could not be built; the message says which step and why."""


def source_hash(repo_root: Path = REPO_ROOT) -> str:
    """A digest of what goes into the worker image; scripts/docker-setup.sh computes the same one.

    Bytes of pyproject.toml, docker/worker/Dockerfile and every gpuserve/**/*.py in C-locale
    path order, concatenated, SHA-256, first 16 hex digits.
    """
    files = [repo_root / "pyproject.toml", repo_root / "docker" / "worker" / "Dockerfile"]
    files += sorted((repo_root / "gpuserve").rglob("*.py"), key=lambda p: p.relative_to(repo_root).as_posix())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-800:]}")


def write_sdk_wheels(dest: Path, extra_requirements: list[str] | None = None) -> None:
    """Wheels of gpuserve itself (no deps) and httpx with its dependencies, for the image's Python."""
    dest.mkdir(parents=True, exist_ok=True)
    _pip("wheel", "-q", "--no-deps", "-w", str(dest), str(REPO_ROOT))
    wanted = ["httpx", *(extra_requirements or [])]
    _pip(
        "download",
        "-q",
        "--only-binary=:all:",
        "--python-version",
        IMAGE_PYTHON_VERSION,
        "--implementation",
        "cp",
        "--platform",
        IMAGE_PLATFORM,
        "-d",
        str(dest),
        *wanted,
    )


@contextmanager
def _temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _build(client: Any, context: Path, tag: str, labels: dict[str, str]) -> None:
    import docker.errors

    try:
        client.images.build(path=str(context), tag=tag, labels=labels, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-1500:]
        raise BuildError(f"docker build of {tag} failed: {exc.msg}\n{tail}") from None
    except docker.errors.APIError as exc:
        raise BuildError(f"docker build of {tag} failed: {exc.explanation or exc}") from None


def _has_image(client: Any, tag: str) -> Any | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def ensure_worker_image(client: Any, tag: str = WORKER_IMAGE) -> bool:
    """Build gpuserve/worker when missing or built from other sources; True when it (re)built it."""
    if _has_image(client, BASE_IMAGE) is None:
        raise BuildError(f"base image {BASE_IMAGE} is missing; run `bash scripts/docker-setup.sh` first")
    wanted = source_hash()
    image = _has_image(client, tag)
    if image is not None and (image.labels or {}).get("gpuserve.source_hash") == wanted:
        return False
    log.info("building %s for sources %s", tag, wanted)
    with _temp_dir("gpuserve-worker-ctx-") as ctx:
        write_sdk_wheels(ctx / "wheels")
        shutil.copy(WORKER_DOCKERFILE, ctx / "Dockerfile")
        _build(client, ctx, tag, {"gpuserve.source_hash": wanted})
    return True


def _dir_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_worker_dir(client: Any, folder: Path, tag: str | None = None) -> str:
    """Build a worker folder that holds a Dockerfile; returns the tag.

    The folder is copied to a temporary build context with `wheels/` added: the gpuserve SDK,
    httpx, and the folder's requirements.txt (if any), so its Dockerfile can `pip install
    --no-index --find-links /wheels`. The default tag is content-addressed
    (`gpuserve/<folder>:<digest>`), so every change deploys as a new version.
    """
    folder = folder.resolve()
    if not folder.is_dir():
        raise BuildError(f"worker folder {str(folder)!r} does not exist")
    if not (folder / "Dockerfile").is_file():
        raise BuildError(f"worker folder {str(folder)!r} has no Dockerfile")
    ensure_worker_image(client)
    tag = tag or f"gpuserve/{folder.name.lower()}:{_dir_digest(folder)}"
    requirements: list[str] = []
    req_file = folder / "requirements.txt"
    if req_file.is_file():
        requirements = ["-r", str(req_file)]
    with _temp_dir("gpuserve-build-") as ctx:
        shutil.copytree(folder, ctx, dirs_exist_ok=True)
        write_sdk_wheels(ctx / "wheels", requirements)
        _build(client, ctx, tag, {"gpuserve.built_from": str(folder)})
    return tag
