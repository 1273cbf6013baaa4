"""gpuserve/worker's recipe and sources as package data: found through importlib.resources in a built wheel, hashed in one place."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from gpuserve.backends import docker_images
from gpuserve.backends.docker_images import (
    SDK_REQUIREMENTS,
    package_files,
    source_hash,
    worker_dockerfile,
    write_sdk_wheel,
)

DOCKERFILE_IN_WHEEL = "gpuserve/backends/docker_files/Dockerfile"

# Run in a fresh interpreter that sees only the standard library and one folder of packages
# (-I -S: no PYTHONPATH, no site-packages, no editable install of a checkout).
PROBE = """
import json, sys, zipfile
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import gpuserve
from gpuserve.backends import docker_images as d
packed = d.write_sdk_wheel(Path(sys.argv[2]))
print(json.dumps({
    "package": gpuserve.__file__,
    "dockerfile": str(d.worker_dockerfile()),
    "dockerfile_bytes": len(d.worker_dockerfile().read_bytes()),
    "hash": d.source_hash(),
    "files": [name for name, _ in d.package_files()],
    "packed": sorted(zipfile.ZipFile(packed).namelist()),
}))
"""


def _probe(site: Path) -> dict[str, object]:
    wheels = site.parent / "packed"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", PROBE, str(site), str(wheels)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture(scope="module")
def built_wheel(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps .` of this checkout's sources, the way a user's install gets gpuserve.

    Built from a copy: setuptools reuses a checkout's build/ folder, where modules removed
    since an earlier build would still be packed.
    """
    root, src = pytestconfig.rootpath, tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, src / name)
    shutil.copytree(root / "gpuserve", src / "gpuserve", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = dist.glob("gpuserve-*.whl")
    return wheel


def test_the_built_wheel_carries_the_worker_dockerfile(built_wheel: Path) -> None:
    with zipfile.ZipFile(built_wheel) as zf:
        assert zf.read(DOCKERFILE_IN_WHEEL) == worker_dockerfile().read_bytes()
        assert not [n for n in zf.namelist() if n.startswith("docker/")]  # no top-level docker/ folder any more


def test_an_installed_wheel_finds_its_recipe_and_hashes_like_the_checkout(built_wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with zipfile.ZipFile(built_wheel) as zf:
        zf.extractall(site)  # a pure-Python wheel installs by unpacking
    found = _probe(site)
    assert str(found["package"]).startswith(str(site))
    assert found["dockerfile"] == str(site / DOCKERFILE_IN_WHEEL)
    assert found["dockerfile_bytes"] == len(worker_dockerfile().read_bytes())
    # The same sources, installed or checked out, label gpuserve/worker alike: nothing repo-relative is hashed.
    assert found["files"] == [name for name, _ in package_files()]
    assert found["hash"] == source_hash()
    # The image's wheel, packed from the install alone, holds every file pip put in the install.
    with zipfile.ZipFile(built_wheel) as zf:
        pip_files = sorted(n for n in zf.namelist() if n.startswith("gpuserve/"))
    assert [n for n in found["packed"] if n.startswith("gpuserve/")] == pip_files  # type: ignore[attr-defined]


def test_the_image_wheel_packed_from_an_install_holds_what_pip_built(built_wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(built_wheel) as zf:
        pip_files = {n: zf.read(n) for n in zf.namelist() if n.startswith("gpuserve/")}
    packed = write_sdk_wheel(tmp_path / "wheels")
    assert packed.name == f"gpuserve-{docker_images.gpuserve.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(packed) as zf:
        names = zf.namelist()
        ours = {n: zf.read(n) for n in names if n.startswith("gpuserve/")}
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert ours == pip_files
    assert [f"Requires-Dist: {r}" for r in SDK_REQUIREMENTS] == [
        line for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    assert write_sdk_wheel(tmp_path / "again").read_bytes() == packed.read_bytes()  # reproducible


def test_pip_installs_the_packed_wheel_offline(tmp_path: Path) -> None:
    packed = write_sdk_wheel(tmp_path / "wheels")
    target = tmp_path / "target"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(packed)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found = _probe(target)
    assert found["dockerfile"] == str(target / DOCKERFILE_IN_WHEEL) and found["hash"] == source_hash()


def test_sdk_requirements_are_the_base_install_of_pyproject(pytestconfig: pytest.Config) -> None:
    project = tomllib.loads((pytestconfig.rootpath / "pyproject.toml").read_text())["project"]
    assert list(SDK_REQUIREMENTS) == project["dependencies"]


def test_the_command_line_prints_the_same_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert docker_images.main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == source_hash()
    assert len(source_hash()) == 16 and int(source_hash(), 16) >= 0
