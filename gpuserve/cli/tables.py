"""The tables the CLI prints: a run's or a sweep's summary, simulated against measured, a server's endpoints and workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
from rich import box
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from gpuserve.fidelity.compare import Comparison

__all__ = ["comparison_table", "endpoint_tables", "summary_table"]

_CI = "_ci95"  # a replicated summary's 95% CI half-width column beside each metric
# Rows shown only when some endpoint is a load-balancing one (summary column lb_requests > 0).
_LB_ONLY = {"held", "rejected", "hold_p50_s", "hold_p99_s"}

# (summary column, header, format): the metrics a summary table shows, in order.
_COLUMNS = [
    ("jobs", "jobs", "{:.0f}"),
    ("latency_p50_s", "latency p50 s", "{:.2f}"),
    ("latency_p95_s", "latency p95 s", "{:.2f}"),
    ("latency_p99_s", "latency p99 s", "{:.2f}"),
    ("delay_p50_s", "queue delay p50 s", "{:.2f}"),
    ("delay_p99_s", "queue delay p99 s", "{:.2f}"),
    ("held", "held (load balancer)", "{:.0f}"),
    ("rejected", "rejected", "{:.0f}"),
    ("hold_p50_s", "hold p50 s", "{:.2f}"),
    ("hold_p99_s", "hold p99 s", "{:.2f}"),
    ("cold_start_fraction", "jobs that waited for a start", "{:.2%}"),
    ("workers_started_per_job", "workers started per job", "{:.3f}"),
    ("mean_running", "workers running", "{:.2f}"),
    ("mean_idle", "workers idle", "{:.2f}"),
    ("mean_initializing", "workers initializing", "{:.2f}"),
    ("mean_throttled", "workers throttled", "{:.2f}"),
    ("failed", "jobs failed", "{:.0f}"),
    ("worker_crashes", "worker crashes", "{:.0f}"),
    ("gpu_s_billed", "GPU-s billed", "{:,.0f}"),
    ("cost_usd", "cost USD", "{:,.4f}"),
]


def summary_table(summary: pd.DataFrame, title: str, first: str = "endpoint", max_rows: int = 25) -> Table:
    """Few rows: one column per endpoint (or setting), metrics down the side; many: a compact row each."""
    table = Table(title=title)
    has_lb = "lb_requests" in summary and bool((summary["lb_requests"] > 0).any())
    columns = [c for c in _COLUMNS if has_lb or c[0] not in _LB_ONLY]
    if len(summary) <= 5:
        table.add_column("metric")
        for _, row in summary.iterrows():
            table.add_column(str(row[first]), justify="right")
        for key, header, fmt in columns:
            table.add_row(header, *(_cell(row.get(key), fmt, row.get(key + _CI)) for _, row in summary.iterrows()))
        return table
    compact = [c for c in columns if c[0] in {"jobs", "latency_p50_s", "latency_p99_s", "rejected", "cold_start_fraction", "cost_usd"}]
    table.add_column(first, no_wrap=True)
    for _, header, _fmt in compact:
        table.add_column(header, justify="right")
    frame = summary if len(summary) <= max_rows else pd.concat([summary.head(max_rows - 1), summary.tail(1)])
    for _, row in frame.iterrows():
        table.add_row(str(row[first]), *(_cell(row.get(key), fmt, row.get(key + _CI)) for key, _h, fmt in compact))
    return table


def comparison_table(comp: Comparison, title: str) -> Table:
    """One row per metric: simulated, measured, relative error and its target, then the worker-count check."""
    from gpuserve.fidelity.compare import WITHIN_ONE_TARGET

    table = Table(title=title)
    for name, justify in (("metric", "left"), ("simulated", "right"), ("measured", "right"), ("rel. error", "right"), ("target", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for _, r in comp.table.iterrows():
        err = r["relative_error"]
        target = ""
        if r["target"] == r["target"]:
            target = f"±{r['target']:.0%} " + ("[green]met[/]" if r["ok"] else "[red]missed[/]")
        table.add_row(
            str(r["label"]),
            "-" if r["simulated"] != r["simulated"] else f"{r['simulated']:,.4g}",
            "-" if r["measured"] != r["measured"] else f"{r['measured']:,.4g}",
            "-" if err != err else f"{err:+.1%}",
            target,
        )
    ok = comp.within_one >= WITHIN_ONE_TARGET
    table.add_row(
        "live workers within 1 of simulated",
        "",
        f"{comp.within_one:.1%} of {comp.seconds} s",
        "",
        f"≥{WITHIN_ONE_TARGET:.0%} " + ("[green]met[/]" if ok else "[red]missed[/]"),
    )
    return table


def _cell(value: object, fmt: str, ci: object = None) -> str:
    # NaN is the one value unequal to itself: a metric with no data (no jobs finished) prints as "-".
    if value is None or value != value:
        return "-"
    if ci is None or ci != ci:
        return fmt.format(value)
    return f"{fmt.format(value)} ± {fmt.format(ci)}"


# Worker states as the endpoints table counts them: short enough for 80 columns, still words.
_STATE_SHORT = {"INITIALIZING": "init", "IDLE": "idle", "RUNNING": "run", "THROTTLED": "throttled", "OUTDATED": "outdated", "UNHEALTHY": "unhealthy"}
_ID_MIN_WIDTH_MAX = 40  # ids longer than this fold onto a second line rather than squeeze every column


def _table(title: str, wide: bool, caption: str | None = None) -> Table:
    if wide:
        return Table(title=title, box=box.HEAVY_HEAD, caption=caption)
    # No edges, one space of padding and one of rule between columns: 80 columns hold a lot.
    return Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0), caption=caption,
        title_justify="left", caption_justify="left",
    )


def endpoint_tables(body: dict[str, Any], title: str, wide: bool = False) -> list[Table | Text]:
    """`gpuserve endpoints`: one row per endpoint, then a table of each endpoint's workers.

    The default fits 80 columns with ids and states whole: ids get the width they need (up to
    30 characters here, 40 for workers; longer ones fold onto a second line, never cut), numbers
    never wrap, and the workers summary has one state a line; `wide` adds the scaling range,
    policy, idle timeout, oldest wait and GPU-seconds and spells every header out."""
    eps = body["endpoints"]
    id_width = min(30, max((len(e["id"]) for e in eps), default=8))
    caption = None if wide else "queue: jobs waiting  busy: jobs in progress  (--wide: every column)"
    table = _table(title, wide, caption)
    table.add_column("endpoint", overflow="fold", min_width=id_width)
    headers = (
        ["policy", "min..max", "idle timeout s", "in queue", "in progress", "oldest wait s", "completed", "failed", "GPU-s", "cost USD"]
        if wide
        else ["queue", "busy", "done", "fail", "USD"]
    )
    for header in headers:
        table.add_column(header, justify="left" if header == "policy" else "right", no_wrap=header != "policy")
    table.add_column("workers", overflow="fold")  # a state a line (default) or a list that wraps (wide)
    tables: list[Table | Text] = [table]
    for ep in eps:
        states: dict[str, int] = {}
        for w in ep["workers"]:
            states[w["state"]] = states.get(w["state"], 0) + 1
        cost = ep.get("cost", {})
        q, jobs = ep["queue"], ep["jobs"]
        scale = f"{ep['minWorkers']}..{ep['maxWorkers']}"
        usd = _usd(cost.get("costUsd", 0.0))
        if wide:
            cells = [ep["policy"], scale, f"{ep['idleTimeoutS']:g}", str(q["inQueue"]), str(q["inProgress"]),
                     f"{q['oldestQueuedAgeS']:.1f}", str(jobs["completed"]), str(jobs["failed"]),
                     f"{cost.get('gpuSeconds', 0.0):,.1f}", usd]
        else:
            cells = [str(q["inQueue"]), str(q["inProgress"]), str(jobs["completed"]), str(jobs["failed"]), usd]
        names = {s: s.lower() for s in states} if wide else _STATE_SHORT
        summary = (", " if wide else "\n").join(f"{n} {names.get(s, s.lower())}" for s, n in sorted(states.items(), key=_state_order)) or "none"
        table.add_row(ep["id"], *cells, summary)
        if ep["workers"]:
            tables.append(_worker_table(ep, wide))
            if not wide and (failures := _failures(ep)) is not None:
                tables.append(failures)
    return tables


def _worker_table(ep: dict[str, Any], wide: bool) -> Table:
    # UNHEALTHY's cause (an exit code, an image that cannot be pulled): a column with --wide; at 80
    # columns, lines under the table (`_failures`), so a long cause wraps at words, never cut.
    failing = any(w.get("failure") for w in ep["workers"])
    table = _table(f"workers of {ep['id']}", wide)
    table.add_column("worker", overflow="fold", min_width=min(_ID_MIN_WIDTH_MAX, max(len(w["id"]) for w in ep["workers"])))
    table.add_column("state", no_wrap=True, min_width=len("INITIALIZING"))
    for header in ("jobs", "age s", "idle s", "cost USD" if wide else "USD"):
        table.add_column(header, justify="right", no_wrap=True)
    if failing and wide:
        table.add_column("failure", no_wrap=True)
    for w in ep["workers"]:
        cells = [
            w["id"], w["state"], f"{w['inFlight']}/{w['capacity']}", f"{w['ageS']:.1f}", f"{w['idleForS']:.1f}",
            _usd(w.get("costUsd", 0.0)),
        ]
        table.add_row(*cells, *([w.get("failure") or ""] if failing and wide else []))
    return table


def _failures(ep: dict[str, Any]) -> Text | None:
    """A line per UNHEALTHY worker with its cause, at the console's width (a Text: no markup is read in it)."""
    lines = [f"{w['id']}: {w['failure']}" for w in ep["workers"] if w.get("failure")]
    return Text("\n".join(lines), style="red") if lines else None


def _state_order(item: tuple[str, int]) -> int:
    """A worker's life order (INITIALIZING, IDLE, RUNNING, ...), unknown states last."""
    order = list(_STATE_SHORT)
    return order.index(item[0]) if item[0] in order else len(order)


def _usd(value: float) -> str:
    """Four decimals for small bills (0.0180), cents past 100 USD (1,234.57): narrow either way."""
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.2f}"
