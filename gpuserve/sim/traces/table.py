"""Per-request trace rows in one shape for every format: arrival times, the function of each, and demand columns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from gpuserve.core.errors import ConfigError

__all__ = ["FunctionRows", "InvocationTable", "choose_functions"]


@dataclass(frozen=True)
class FunctionRows:
    """One function's requests, cut from an InvocationTable."""

    name: str
    app: str
    times_s: np.ndarray
    demand: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class InvocationTable:
    """Trace requests sorted by arrival: `times_s` (the first at 0), `function` (an index into
    `functions`), and `demand` columns with one value per request (`duration_s`, tokens)."""

    times_s: np.ndarray
    function: np.ndarray
    functions: tuple[str, ...]
    apps: tuple[str, ...]
    demand: Mapping[str, np.ndarray] = field(default_factory=dict)

    def window(self, start_s: float = 0.0, length_s: float | None = None, field_name: str = "trace") -> InvocationTable:
        """The requests in [start_s, start_s + length_s), shifted so the window opens at 0."""
        if not start_s >= 0:
            raise ConfigError(f"{field_name}.start_s", start_s, "cannot be negative")
        if length_s is not None and not length_s > 0:
            raise ConfigError(f"{field_name}.window_s", length_s, "must be positive")
        lo = int(np.searchsorted(self.times_s, start_s, side="left"))
        hi = self.times_s.size if length_s is None else int(np.searchsorted(self.times_s, start_s + length_s, side="left"))
        return InvocationTable(
            self.times_s[lo:hi] - start_s,
            self.function[lo:hi],
            self.functions,
            self.apps,
            {k: v[lo:hi] for k, v in self.demand.items()},
        )

    def counts(self) -> np.ndarray:
        """Requests per function (indexed like `functions`)."""
        return np.bincount(self.function, minlength=len(self.functions))

    def split(self, chosen: np.ndarray) -> list[FunctionRows]:
        """The requests of each chosen function, in the order given; one stable sort, no loop over rows."""
        order = np.argsort(self.function, kind="stable")  # arrival order kept within each function
        bounds = np.searchsorted(self.function[order], np.arange(len(self.functions) + 1))
        out = []
        for f in chosen.tolist():
            rows = order[bounds[f] : bounds[f + 1]]
            out.append(FunctionRows(self.functions[f], self.apps[f], self.times_s[rows], {k: v[rows] for k, v in self.demand.items()}))
        return out


def choose_functions(
    totals: np.ndarray,
    min_invocations: int = 1,
    max_functions: int | None = None,
    select: Literal["busiest", "random"] = "busiest",
    rng: np.random.Generator | None = None,
    field_name: str = "trace",
) -> np.ndarray:
    """Indices of the functions to simulate: at least `min_invocations` each, then the busiest
    `max_functions` (or a random sample of them, drawn from `rng`), busiest first."""
    eligible = np.flatnonzero(totals >= max(1, min_invocations))
    if eligible.size == 0:
        raise ConfigError(f"{field_name}.min_invocations", min_invocations, "leaves no function to simulate")
    if max_functions is not None and max_functions < eligible.size:
        if select == "random":
            eligible = np.sort((rng or np.random.default_rng(0)).choice(eligible, max_functions, replace=False))
        else:
            eligible = eligible[np.argsort(-totals[eligible], kind="stable")[:max_functions]]
    # Busiest first (ties in file order), so endpoint order is stable across selections.
    chosen: np.ndarray = eligible[np.argsort(-totals[eligible], kind="stable")]
    return chosen
