"""Worker images, built offline: the gpuserve/worker base (SDK + httpx from host-made wheels) and user worker folders.

No registry is reachable from inside a container, so every Python package an image needs
is turned into a wheel on the host and put in the build context under `wheels/`; the
Dockerfile installs with `pip install --no-index --find-links`. gpuserve's own wheel is
written from the package as this interpreter imports it, and the recipe of gpuserve/worker
is package data (gpuserve/backends/docker_files/Dockerfile): an installed gpuserve builds
its images exactly like a source checkout does.

    python -m gpuserve.backends.docker_images hash          # the source hash gpuserve/worker is labelled with
    python -m gpuserve.backends.docker_images context DIR   # DIR becomes gpuserve/worker's build context
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import gpuserve

if TYPE_CHECKING:
    import docker as docker_sdk
    from docker.models.images import Image

__all__ = [
    "BASE_IMAGE",
    "SDK_REQUIREMENTS",
    "WORKER_IMAGE",
    "BuildError",
    "build_worker_dir",
    "ensure_worker_image",
    "package_files",
    "source_hash",
    "worker_dockerfile",
    "write_sdk_wheel",
    "write_worker_context",
]

log = logging.getLogger("gpuserve.docker")

BASE_IMAGE = "gpuserve/base:bookworm"
WORKER_IMAGE = "gpuserve/worker:latest"
SOURCE_HASH_LABEL = "gpuserve.source_hash"
# The worker image's Python (Debian bookworm): wheels are fetched for it, not for the host's.
IMAGE_PYTHON_VERSION = "3.11"
IMAGE_PLATFORM = "manylinux2014_x86_64"
# The base install's dependencies, as in pyproject.toml's [project] dependencies (a test keeps
# the two equal): the wheel written here declares them, and the build context carries their wheels.
SDK_REQUIREMENTS = ("httpx>=0.27",)
# Every entry of the wheel gets this date, so the same sources always give the same wheel bytes
# (zip cannot store anything before 1980).
_WHEEL_DATE = (1980, 1, 1, 0, 0, 0)


class BuildError(RuntimeError):
    """An image could not be built; the message says which step and why."""


def worker_dockerfile() -> Traversable:
    """The recipe of gpuserve/worker, found with importlib.resources wherever gpuserve is installed."""
    return files("gpuserve.backends") / "docker_files" / "Dockerfile"


def _walk(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    for entry in folder.iterdir():
        if entry.is_dir():
            if entry.name != "__pycache__":
                yield from _walk(entry, f"{prefix}{entry.name}/")
        elif not entry.name.endswith((".pyc", ".pyo")):
            yield f"{prefix}{entry.name}", entry


def package_files() -> list[tuple[str, bytes]]:
    """The gpuserve package as imported: (path inside a wheel, bytes) of each module and data file.

    In C-locale path order, byte caches left out: a checkout and an install of the same
    sources give the same list (the Dockerfile is among them, as package data).
    """
    found = sorted(_walk(files("gpuserve"), "gpuserve/"), key=lambda item: item[0])
    return [(name, entry.read_bytes()) for name, entry in found]


def source_hash() -> str:
    """What decides whether gpuserve/worker must be rebuilt: a digest of everything that goes into it.

    SHA-256 over each package file's path and bytes (the recipe included) and the SDK's
    requirements, first 16 hex digits. scripts/docker-setup.sh asks this function too
    (`python -m gpuserve.backends.docker_images hash`), so both label images alike.
    """
    digest = hashlib.sha256()
    for name, data in package_files():
        digest.update(name.encode() + b"\0")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    digest.update("\n".join(SDK_REQUIREMENTS).encode())
    return digest.hexdigest()[:16]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def write_sdk_wheel(dest: Path) -> Path:
    """A pure-Python wheel of the gpuserve package as imported (no source tree or build backend needed)."""
    version = gpuserve.__version__
    dist_info = f"gpuserve-{version}.dist-info"
    metadata = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: gpuserve",
            f"Version: {version}",
            "Summary: gpuserve's worker SDK, packed from the installed gpuserve package",
            "Requires-Python: >=3.11",
            *(f"Requires-Dist: {req}" for req in SDK_REQUIREMENTS),
            "",
        ]
    )
    wheel = "Wheel-Version: 1.0\nGenerator: gpuserve\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries = [*package_files(), (f"{dist_info}/METADATA", metadata.encode()), (f"{dist_info}/WHEEL", wheel.encode())]
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    entries.append((f"{dist_info}/RECORD", (record + f"{dist_info}/RECORD,,\n").encode()))
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"gpuserve-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_WHEEL_DATE)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return path


def _pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-800:]}")


def write_sdk_wheels(dest: Path, extra_requirements: Sequence[str] = ()) -> None:
    """Wheels of gpuserve itself and of its requirements (httpx ...) and `extra_requirements`, for the image's Python."""
    write_sdk_wheel(dest)
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
        *SDK_REQUIREMENTS,
        *extra_requirements,
    )


def write_worker_context(ctx: Path) -> None:
    """Fill `ctx` with gpuserve/worker's build context: the Dockerfile and wheels/."""
    ctx.mkdir(parents=True, exist_ok=True)
    write_sdk_wheels(ctx / "wheels")
    (ctx / "Dockerfile").write_bytes(worker_dockerfile().read_bytes())


@contextmanager
def _temp_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _build(client: docker_sdk.DockerClient, context: Path, tag: str, labels: dict[str, str]) -> None:
    import docker.errors

    try:
        client.images.build(path=str(context), tag=tag, labels=labels, rm=True, forcerm=True)
    except docker.errors.BuildError as exc:
        tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-1500:]
        raise BuildError(f"docker build of {tag} failed: {exc.msg}\n{tail}") from None
    except docker.errors.APIError as exc:
        raise BuildError(f"docker build of {tag} failed: {exc.explanation or exc}") from None


def _has_image(client: docker_sdk.DockerClient, tag: str) -> Image | None:
    import docker.errors

    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def ensure_worker_image(client: docker_sdk.DockerClient, tag: str = WORKER_IMAGE) -> bool:
    """Build gpuserve/worker when missing or built from other sources; True when it (re)built it."""
    if _has_image(client, BASE_IMAGE) is None:
        raise BuildError(f"base image {BASE_IMAGE} is missing; run `bash scripts/docker-setup.sh` first")
    wanted = source_hash()
    image = _has_image(client, tag)
    if image is not None and (image.labels or {}).get(SOURCE_HASH_LABEL) == wanted:
        return False
    log.info("building %s for sources %s", tag, wanted)
    with _temp_dir("gpuserve-worker-ctx-") as ctx:
        write_worker_context(ctx)
        _build(client, ctx, tag, {SOURCE_HASH_LABEL: wanted})
    return True


def _dir_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def build_worker_dir(client: docker_sdk.DockerClient, folder: Path, tag: str | None = None) -> str:
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


def main(argv: Sequence[str] | None = None) -> int:
    """`hash`: print the source hash; `context DIR`: write gpuserve/worker's build context into DIR."""
    parser = argparse.ArgumentParser(prog="python -m gpuserve.backends.docker_images", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="print the source hash gpuserve/worker is labelled with")
    context = sub.add_parser("context", help="write gpuserve/worker's build context (Dockerfile, wheels/)")
    context.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "hash":
        print(source_hash())
        return 0
    try:
        write_worker_context(args.dir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
