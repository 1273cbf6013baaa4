"""What a results folder was made from: the resolved scenario, its seeds, the gpuserve version and the command line, and how to re-run it."""

from __future__ import annotations

import copy
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gpuserve.config.scenario import Scenario, scenario_from_dict
from gpuserve.core.errors import ConfigError

__all__ = ["PROVENANCE_FILE", "SCENARIO_FILE", "load_provenance", "rerun_scenario", "write_provenance"]

SCENARIO_FILE = "scenario.yaml"  # the scenario as run: after --set, with the seed, replications and sweep used
PROVENANCE_FILE = "provenance.yaml"


def write_provenance(
    out_dir: Path,
    scenario: Scenario,
    seeds: Sequence[int],
    sweep: dict[str, list[Any]] | None = None,
    command: Sequence[str] | None = None,
) -> list[Path]:
    """Write scenario.yaml (re-runnable as is, paths relative to `base_dir`) and provenance.yaml."""
    from gpuserve import __version__

    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = copy.deepcopy(scenario.raw)
    resolved["seed"] = scenario.config.seed
    resolved["replications"] = len(seeds)
    if sweep:
        resolved["sweep"] = {k: list(v) for k, v in sweep.items()}
    else:
        resolved.pop("sweep", None)
    scenario_path = out_dir / SCENARIO_FILE
    header = f"# The scenario as run (gpuserve {__version__}); relative paths are relative to {scenario.base_dir}\n"
    scenario_path.write_text(header + yaml.safe_dump(resolved, sort_keys=False))
    record = {
        "gpuserve_version": __version__,
        "python": platform.python_version(),
        "command": list(sys.argv if command is None else command),
        "scenario": scenario.name,
        "base_dir": str(scenario.base_dir.resolve()),
        "base_seed": scenario.config.seed,
        "seeds": [int(s) for s in seeds],
        "sweep": {k: list(v) for k, v in (sweep or {}).items()},
        "billing": scenario.config.billing.describe(),
    }
    provenance_path = out_dir / PROVENANCE_FILE
    provenance_path.write_text(yaml.safe_dump(record, sort_keys=False))
    return [scenario_path, provenance_path]


def load_provenance(out_dir: Path) -> dict[str, Any]:
    path = out_dir / PROVENANCE_FILE
    if not path.is_file():
        raise ConfigError("results folder", str(out_dir), f"has no {PROVENANCE_FILE}")
    record: dict[str, Any] = yaml.safe_load(path.read_text())
    return record


def rerun_scenario(out_dir: Path) -> Scenario:
    """The scenario a results folder was made from, ready to run again (same seeds, same settings)."""
    record = load_provenance(out_dir)
    raw = yaml.safe_load((out_dir / SCENARIO_FILE).read_text())
    return scenario_from_dict(raw, Path(record["base_dir"]))
