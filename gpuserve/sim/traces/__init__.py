"""Readers for real trace formats (one module per format), each turning a file into numpy arrays.

- `azure2019`: Azure Functions 2019 per-minute counts, duration percentiles, app memory;
- `azure2021`: Azure Functions 2021 per-invocation rows with durations;
- `azure_llm`: Azure LLM inference 2023/2024 requests with prompt and output tokens;
- `arrivals_csv`: any CSV of arrival times, optionally with durations and functions.
Per-request formats share `table.InvocationTable`; windows and function selection live there.
"""

from gpuserve.sim.traces.arrivals_csv import read_arrivals_csv
from gpuserve.sim.traces.azure2019 import Invocations2019, read_durations, read_invocations, read_memory
from gpuserve.sim.traces.azure2021 import read_invocations_2021
from gpuserve.sim.traces.azure_llm import read_llm_trace
from gpuserve.sim.traces.table import FunctionRows, InvocationTable, choose_functions

__all__ = [
    "FunctionRows",
    "InvocationTable",
    "Invocations2019",
    "choose_functions",
    "read_arrivals_csv",
    "read_durations",
    "read_invocations",
    "read_invocations_2021",
    "read_llm_trace",
    "read_memory",
]
