"""The policy contract and the registry that lets scenario files name policies, built-in or plug-in.

A policy is pure: `decide(snapshot, params, state) -> (ScaleDecision, new_state)`, with
frozen params (validated once from the scenario's dict) and a frozen state. It never reads
a clock, sleeps or does I/O; time arrives as `snapshot.now_s`.

A name is a built-in's (`knative_kpa`), a plug-in's from the `gpuserve.policies` entry-point
group, or a reference to a `Policy` object: `my_module:POLICY` (a module on the path) or
`path/to/file.py:POLICY` (loaded once per process; a relative path is resolved by the config
loader against the scenario's or endpoints file's folder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import importlib.util
import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointSnapshot, EndpointSpec, ScaleDecision

__all__ = [
    "ENTRY_POINT_GROUP",
    "Policy",
    "PolicyInstance",
    "ScheduleFlag",
    "available",
    "build_params",
    "check_number",
    "get",
    "is_reference",
    "lookup",
    "plugin_problems",
    "register",
    "resolve_reference",
    "source_of",
]

ENTRY_POINT_GROUP = "gpuserve.policies"  # [project.entry-points."gpuserve.policies"] my_policy = "my_pkg.mod:POLICY"

P = TypeVar("P")
S = TypeVar("S")


# A schedule attribute is a fixed answer or, when it depends on the params or the endpoint,
# a function of both: request_count at 1 request per worker and 4 slots per worker can ask
# for 4 workers while 4 jobs run on one, so it is sized by demand only at per_worker >= slots.
ScheduleFlag = bool | Callable[[P, EndpointSpec], bool]


def _event_driven(_params: object) -> float | None:
    return None


@dataclass(frozen=True)
class Policy(Generic[P, S]):
    """A registered policy: its params type, initial state and pure decide function.

    `tick_interval_s` is how often the controller must consult it with no events (Knative
    ticks every 2 s); None (the default) means it is event-driven (consulted on arrivals
    and at the `wake_at_s` it asks for), which lets the simulator skip idle stretches entirely.

    The schedule attributes are promises that let the loop skip controller passes that
    could change nothing (gpuserve.schedule states each argument). Each defaults to False,
    the safe answer: the controller is consulted on every arrival.
    - `sized_by_demand`: whenever no job is queued, `decide` asks for at most
      ceil(demand / concurrency_per_worker) workers, keeps its state as it was, asks for
      no wake and keeps the same `keep_alive_s`. Arrivals a free slot takes at once are
      then not shown to it.
    - `stateless_no_wake`: `decide` keeps no state that changes, never sets `wake_at_s`
      and its `keep_alive_s` depends on params only. Arrivals that queue while the
      endpoint has `max_workers` workers are then not shown to it.
    - `observes_on_tick`: with a tick, the policy is meant to see the endpoint at its
      ticks (as Knative's autoscaler does), so both kinds of arrival above are not shown
      to it, by design rather than because the pass would be a no-op.
    """

    name: str
    params_type: type[P]
    initial_state: Callable[[P, EndpointSpec], S]
    decide: Callable[[EndpointSnapshot, P, S], tuple[ScaleDecision, S]]
    tick_interval_s: Callable[[P], float | None] = _event_driven
    doc: str = ""
    sized_by_demand: ScheduleFlag[P] = False
    stateless_no_wake: ScheduleFlag[P] = False
    observes_on_tick: ScheduleFlag[P] = False


def _flag(flag: ScheduleFlag[Any], params: Any, endpoint: EndpointSpec | None) -> bool:
    if isinstance(flag, bool):
        return flag
    return endpoint is not None and bool(flag(params, endpoint))


@dataclass
class PolicyInstance:
    """A policy bound to one endpoint's params, carrying its evolving state."""

    policy: Policy[Any, Any]
    params: Any
    state: Any

    @property
    def tick_interval_s(self) -> float | None:
        return self.policy.tick_interval_s(self.params)

    # The schedule attributes for this params and `endpoint`. None: the state no longer
    # belongs to one spec (kept across a spec swap), so only a fixed True still holds.
    def sized_by_demand(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.sized_by_demand, self.params, endpoint)

    def stateless_no_wake(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.stateless_no_wake, self.params, endpoint)

    def observes_on_tick(self, endpoint: EndpointSpec | None) -> bool:
        return _flag(self.policy.observes_on_tick, self.params, endpoint)

    def decide(self, snapshot: EndpointSnapshot) -> ScaleDecision:
        decision, self.state = self.policy.decide(snapshot, self.params, self.state)
        return decision


def check_number(name: str, value: object, *, positive: bool = False) -> float:
    """Reject a non-number, NaN or a negative (or, with `positive`, a zero) parameter value."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(name, value, "must be a number")
    if positive and value <= 0:
        raise ConfigError(name, value, "must be positive")
    if value < 0:
        raise ConfigError(name, value, "cannot be negative")
    return float(value)


_REGISTRY: dict[str, Policy[Any, Any]] = {}
_SOURCES: dict[str, str] = {}  # where a non-built-in name came from: "entry point my_pkg.mod:POLICY (my-dist)"
_REFERENCES: dict[str, Policy[Any, Any]] = {}  # `module:ATTR` / `/abs/file.py:ATTR` -> the Policy it names
_PLUGIN_PROBLEMS: dict[str, str] = {}  # entry points that failed to load, and why


def register(policy: Policy[P, S]) -> Policy[P, S]:
    if policy.name in _REGISTRY:
        raise ValueError(f"policy {policy.name!r} is registered twice")
    _REGISTRY[policy.name] = policy
    return policy


def available() -> list[str]:
    """Every name a file can use: the built-ins and the installed plug-ins (entry points)."""
    _load_builtin()
    _load_entry_points()
    return sorted(_REGISTRY)


def source_of(name: str) -> str:
    """`built-in`, `entry point ...` or `reference ...`: where the policy behind `name` comes from."""
    if is_reference(name):
        return f"reference {name}"
    return _SOURCES.get(name, "built-in")


def plugin_problems() -> dict[str, str]:
    """Entry points of the `gpuserve.policies` group that could not be loaded, with the reason."""
    _load_entry_points()
    return dict(_PLUGIN_PROBLEMS)


def is_reference(name: str) -> bool:
    """`module:ATTR` or `file.py:ATTR` rather than a registered name (built-in names have no colon)."""
    return ":" in name


def resolve_reference(name: str, base_dir: Path | None) -> str:
    """A file reference with its path made absolute against `base_dir` (else the working
    directory), so the same file is meant from any process or folder; other names unchanged."""
    target, _, attr = name.rpartition(":")
    if not target.endswith(".py"):
        return name
    path = Path(target).expanduser()
    if not path.is_absolute():
        path = (base_dir if base_dir is not None else Path.cwd()) / path
    return f"{path.resolve()}:{attr}"


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _load_entry_points() -> None:
    # Scanned on each call that needs them (listing, or a name not yet known), so a package
    # installed while a process runs is found; a loaded plug-in stays registered.
    # A broken one is tried again (and reported only while it is installed).
    _PLUGIN_PROBLEMS.clear()
    for ep in _entry_points():
        if ep.name in _REGISTRY:
            continue
        where = f"entry point {ep.value}" + (f" ({ep.dist.name})" if ep.dist is not None else "")
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plug-in must not hide the others
            _PLUGIN_PROBLEMS[ep.name] = f"{where} failed to load: {type(exc).__name__}: {exc}"
            continue
        if not isinstance(obj, Policy):
            _PLUGIN_PROBLEMS[ep.name] = f"{where} is a {type(obj).__name__}, not a gpuserve Policy"
            continue
        _REGISTRY.setdefault(ep.name, obj)
        _SOURCES[ep.name] = where


def _module_of_file(path: Path, name: str) -> Any:
    # One module per file, named after its absolute path, so a file named by several endpoints
    # (or by a sweep's every point) is executed, and registers its names, once per process.
    module_name = "gpuserve_policy_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    module = sys.modules.get(module_name)
    if module is not None:
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("policy.name", name, "names a file Python cannot load as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise ConfigError("policy.name", name, f"failed to load: {type(exc).__name__}: {exc}") from None
    return module


def _load_reference(name: str) -> Policy[Any, Any]:
    known = _REFERENCES.get(name)
    if known is not None:
        return known
    target, _, attr = name.rpartition(":")
    if not target or not attr.isidentifier():
        raise ConfigError("policy.name", name, "must look like module:ATTR or path/to/file.py:ATTR")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ConfigError("policy.name", name, f"names a file that does not exist: {path}")
        module = _module_of_file(path.resolve(), name)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ConfigError("policy.name", name, f"cannot be imported: {exc}") from None
        except Exception as exc:
            raise ConfigError("policy.name", name, f"failed to load: {type(exc).__name__}: {exc}") from None
    obj = getattr(module, attr, None)
    if obj is None and attr in _REGISTRY:
        obj = _REGISTRY[attr]  # `file.py:spare_workers`: the name the file registered
    if not isinstance(obj, Policy):
        found = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise ConfigError(
            "policy.name", name, f"must name a gpuserve Policy object (found {found}); e.g. POLICY = Policy(name=..., ...)"
        )
    _REFERENCES[name] = obj
    return obj


def lookup(name: str) -> Policy[Any, Any]:
    """The Policy behind a name: built-in, plug-in or `module:ATTR` / `file.py:ATTR` reference."""
    _load_builtin()
    if is_reference(name):
        return _load_reference(name)
    if name not in _REGISTRY:
        _load_entry_points()
    if name in _PLUGIN_PROBLEMS and name not in _REGISTRY:
        raise ConfigError("policy.name", name, f"is a plug-in that cannot be used: {_PLUGIN_PROBLEMS[name]}")
    if name not in _REGISTRY:
        raise ConfigError(
            "policy.name",
            name,
            f"is not a known policy (known: {', '.join(sorted(_REGISTRY))}; "
            "or name your own: module:ATTR or path/to/file.py:ATTR)",
        )
    return _REGISTRY[name]


def build_params(params_type: type[P], raw: Mapping[str, Any], prefix: str = "policy.params") -> P:
    """Build a frozen params dataclass from a dict, naming any unknown or invalid field."""
    fields = {f.name: f for f in dataclasses.fields(params_type)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{prefix}.{key}", raw[key], f"is not a parameter (known: {', '.join(sorted(fields))})")
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        default = fields[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{prefix}.{key}", value, "must be true or false")
        elif isinstance(default, int | float) and not isinstance(value, bool):
            if not isinstance(value, int | float):
                raise ConfigError(f"{prefix}.{key}", value, "must be a number")
            if isinstance(default, float):
                value = float(value)
        kwargs[key] = value
    try:
        return params_type(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}.{exc.field}", exc.value, exc.problem) from None


def get(name: str, raw_params: Mapping[str, Any], endpoint: EndpointSpec) -> PolicyInstance:
    """Look up a policy by name and bind it to an endpoint; unknown names list the known ones."""
    policy = lookup(name)
    params = build_params(policy.params_type, raw_params)
    return PolicyInstance(policy=policy, params=params, state=policy.initial_state(params, endpoint))


def _load_builtin() -> None:
    # Importing the package registers every built-in policy module exactly once.
    import gpuserve.policies  # noqa: F401
