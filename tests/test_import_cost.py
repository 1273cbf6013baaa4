"""Importing the core or the worker SDK, each in a fresh interpreter, loads no heavy dependency and no other layer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a worker image or a policy author must not pay for at import (each costs 0.1-1 s and MBs).
HEAVY = ["simpy", "numpy", "pandas", "fastapi", "starlette", "uvicorn", "docker", "pydantic", "typer", "rich", "yaml"]

# The gpuserve packages each import may load: the core is pure, the worker SDK sits on the core only.
ALLOWED_GPUSERVE = {
    "gpuserve": ("gpuserve",),
    "gpuserve.core": ("gpuserve", "gpuserve.core"),
    "gpuserve.worker": ("gpuserve", "gpuserve.core", "gpuserve.worker", "gpuserve.serverless"),
    "gpuserve.serverless": ("gpuserve", "gpuserve.core", "gpuserve.worker", "gpuserve.serverless"),
    "gpuserve.worker.devserver": ("gpuserve", "gpuserve.core", "gpuserve.worker", "gpuserve.serverless"),
}

# Run in a fresh interpreter: optionally httpx (the SDK's one dependency) first, as the baseline
# of third-party modules, then the module under test; report what the second import added.
_PROBE = """
import json, sys
def third_party():
    return {n.split(".")[0] for n in sys.modules} - set(sys.stdlib_module_names)
baseline = third_party()  # what the interpreter starts with (site hooks, __main__)
if sys.argv[2] == "1":
    import httpx
    baseline = third_party()
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps({
    "added_third_party": sorted(third_party() - baseline - {"gpuserve"}),
    "gpuserve": sorted(n for n in sys.modules if n == "gpuserve" or n.startswith("gpuserve.")),
    "all": sorted(sys.modules),
}))
"""


def _imported(module: str, *, httpx_baseline: bool) -> dict[str, list[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, module, "1" if httpx_baseline else "0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    result: dict[str, list[str]] = json.loads(out)
    return result


@pytest.mark.parametrize("module", sorted(ALLOWED_GPUSERVE))
def test_import_loads_no_heavy_dependency(module):
    loaded = _imported(module, httpx_baseline=False)["all"]
    heavy = sorted({name.split(".")[0] for name in loaded} & set(HEAVY))
    assert not heavy, f"`import {module}` loads {heavy}; import them where they are used"


@pytest.mark.parametrize("module", sorted(ALLOWED_GPUSERVE))
def test_import_stays_in_its_layers(module):
    result = _imported(module, httpx_baseline=module != "gpuserve.core")
    allowed = ALLOWED_GPUSERVE[module]
    outside = [n for n in result["gpuserve"] if not any(n == a or n.startswith(a + ".") for a in allowed)]
    assert not outside, f"`import {module}` loads {outside}; it may load only {allowed}"
    # The core is the standard library only; the worker SDK adds nothing httpx does not bring.
    assert not result["added_third_party"], f"`import {module}` loads {result['added_third_party']} beyond httpx"
