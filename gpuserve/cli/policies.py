"""`gpuserve policies [NAME]`: the autoscaling policies files can name (built-in and plug-in), or one policy's parameters, defaults and doc."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gpuserve.cli.root import app, console, fail
from gpuserve.core.errors import GpuserveError


@app.command()
def policies(
    name: Annotated[
        str | None, typer.Argument(help="a policy name, module:ATTR or path/to/file.py:ATTR: print its parameters and doc")
    ] = None,
) -> None:
    """List the autoscaling policies scenario and endpoint files can name, or describe one."""
    from gpuserve.policies import base

    if name is None:
        table = Table(title="policies (name one in `policy: {name: ...}`; `gpuserve policies NAME` for its parameters)")
        table.add_column("name", no_wrap=True)
        table.add_column("from")
        table.add_column("parameters (defaults)")
        for known in base.available():
            policy = base.lookup(known)
            table.add_row(known, escape(base.source_of(known)), escape(_defaults_line(policy.params_type)))
        for broken, why in base.plugin_problems().items():
            table.add_row(broken, escape(why), "-")
        console.print(table)
        console.print("your own: `my_module:POLICY` or `path/to/file.py:POLICY` (docs/policies.md, Write your own policy)")
        return
    try:
        policy = base.lookup(base.resolve_reference(name, None))
    except GpuserveError as exc:
        raise fail(str(exc)) from None
    console.print(f"[bold]{escape(policy.name)}[/]  ({escape(base.source_of(name))})")
    if policy.doc.strip():
        console.print(escape(policy.doc.strip()), highlight=False)
    table = Table(title="parameters")
    for column in ("parameter", "type", "default"):
        table.add_column(column)
    for f in dataclasses.fields(policy.params_type):
        table.add_row(f.name, escape(str(f.type)), escape(_default(f)))
    console.print(table)
    try:
        defaults = policy.params_type()
        tick = policy.tick_interval_s(defaults)
        console.print(f"tick interval at the defaults: {'none (event-driven)' if tick is None else f'{tick:g} s'}")
    except (TypeError, GpuserveError):
        pass  # a required parameter: no defaults to evaluate the tick at
    flags = []
    for attr in ("sized_by_demand", "stateless_no_wake", "observes_on_tick"):
        value = getattr(policy, attr)
        flags.append(f"{attr}={'depends on params and endpoint' if callable(value) else value}")
    console.print("schedule attributes: " + ", ".join(flags))


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        return repr(f.default)
    if f.default_factory is not dataclasses.MISSING:
        return repr(f.default_factory())
    return "(required)"


def _defaults_line(params_type: type[Any]) -> str:
    fields = dataclasses.fields(params_type)
    return ", ".join(f"{f.name}={_default(f)}" for f in fields) or "none"
