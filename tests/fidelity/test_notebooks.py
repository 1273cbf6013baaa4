"""The notebooks are committed executed, use only the public API, and still run top to bottom (small mode: GPUSERVE_NB_SMALL=1) on a real kernel."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_policy_comparison", "02_cold_start_what_if", "03_sim_vs_live", "04_tune_an_endpoint"]


def _outputs(book: Any) -> list[Any]:
    return [o for cell in book.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]


def _check_outputs(book: Any) -> None:
    outputs = _outputs(book)
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # Each notebook shows at least one table and one figure.
    assert any("text/html" in o.get("data", {}) for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_executed_and_uses_the_public_api(name: str) -> None:
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    code = [cell for cell in book.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code), "commit the notebook executed, with its outputs"
    _check_outputs(book)
    source = "\n".join(cell.source for cell in code)
    assert "import gpuserve" in source
    assert not re.findall(r"(?:from|import) gpuserve\.\w+", source), "notebooks use only the public API (gpuserve.X)"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_small_mode(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUSERVE_NB_SMALL", "1")
    book = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            cell.outputs = []  # what the run below shows is its own
    NotebookClient(book, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    _check_outputs(book)
