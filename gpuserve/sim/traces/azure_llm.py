"""Azure LLM inference traces 2023 and 2024: one row per request (`TIMESTAMP, ContextTokens, GeneratedTokens`).

The datasets (https://github.com/Azure/AzurePublicDataset, AzureLLMInferenceDataset2023.md
and AzureLLMInferenceDataset2024.md): AzureLLMInferenceTrace_{code,conv}.csv (2023, one hour)
and AzureLLMInferenceTrace_{code,conv}_1week.csv (2024, a week). TIMESTAMP is a wall-clock
time such as `2023-11-16 18:15:46.6805900`; ContextTokens are the prompt's tokens (prefill)
and GeneratedTokens the output's (decode).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gpuserve.core.errors import ConfigError
from gpuserve.sim.traces.table import InvocationTable

__all__ = ["COLUMNS", "parse_times_s", "read_llm_trace", "write_synthetic_llm"]

COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]


def parse_times_s(values: pd.Series, field: str) -> np.ndarray:
    """ISO-8601 timestamps (with or without a zone, any fraction of a second) as seconds since the first."""
    try:
        stamps = pd.to_datetime(values, format="ISO8601", utc=True)
    except (ValueError, TypeError) as exc:
        raise ConfigError(field, str(values.iloc[0]) if len(values) else "", f"is not an ISO-8601 time ({str(exc).splitlines()[0]})") from None
    if stamps.isna().any():
        row = int(np.flatnonzero(stamps.isna().to_numpy())[0])
        raise ConfigError(f"{field} line {row + 2}", "", "has an empty time")
    if not len(stamps):
        return np.empty(0)
    # Differences, not raw integers: pandas picks the unit (ns, us, ms) from the text.
    out: np.ndarray = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    return out


def read_llm_trace(path: Path, field: str = "trace.path") -> InvocationTable:
    """Every request as (arrival, context_tokens, generated_tokens), sorted, the first at 0; one function."""
    if not path.is_file():
        raise ConfigError(field, str(path), "is not a file")
    try:
        frame = pd.read_csv(path, dtype={"TIMESTAMP": str})
    except (ValueError, pd.errors.ParserError) as exc:
        raise ConfigError(field, str(path), f"could not be read ({str(exc).splitlines()[0]})") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(field, str(path), f"has no column {missing[0]} (header TIMESTAMP,ContextTokens,GeneratedTokens)")
    times = parse_times_s(frame["TIMESTAMP"], f"{field} TIMESTAMP")
    tokens = {}
    for column, name in (("ContextTokens", "context_tokens"), ("GeneratedTokens", "generated_tokens")):
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
        bad = ~(np.isfinite(values) & (values >= 0))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ConfigError(f"{field} line {row + 2}", frame[column].iloc[row], f"{column} must be a token count >= 0")
        tokens[name] = values
    order = np.argsort(times, kind="stable")
    return InvocationTable(
        times[order],
        np.zeros(times.size, dtype=np.int32),
        (path.stem,),
        ("",),
        {k: v[order] for k, v in tokens.items()},
    )


def write_synthetic_llm(path: Path, requests: int = 200, rate_per_s: float = 2.0, seed: int = 0) -> Path:
    """A small file in the LLM-trace format: Poisson arrivals, lognormal prompt and output lengths."""
    rng = np.random.default_rng(seed)
    gaps_s = rng.exponential(1 / rate_per_s, requests)
    start = pd.Timestamp("2023-11-16 18:15:46")
    stamps = start + pd.to_timedelta(np.cumsum(gaps_s), unit="s")
    frame = pd.DataFrame(
        {
            # The real files carry 7 fractional digits (100-ns ticks).
            "TIMESTAMP": [s.strftime("%Y-%m-%d %H:%M:%S.%f") + "0" for s in stamps],
            "ContextTokens": np.maximum(1, rng.lognormal(np.log(1000), 0.8, requests)).astype(int),
            "GeneratedTokens": np.maximum(1, rng.lognormal(np.log(100), 0.8, requests)).astype(int),
        }
    )
    frame.to_csv(path, index=False)
    return path
