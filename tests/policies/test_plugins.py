"""Your own policy without a wrapper: a file outside the package, a module on the path and an entry point, named in scenarios and endpoints files."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gpuserve import policies
from gpuserve.cli import app
from gpuserve.config.endpoints import parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.experiments import load_scenario, run_scenario, run_sweep

# The docs' example policy (docs/policies.md), under a name of its own per file so that
# files loaded by different tests never register the same name twice in one process.
SPARE = '''
"""spare workers: one worker per concurrency_per_worker jobs in the system, plus N warm spares."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpuserve.core import ConfigError, EndpointSnapshot, EndpointSpec, ScaleDecision
from gpuserve.policies import Policy


@dataclass(frozen=True)
class SpareParams:
    spare_workers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.spare_workers, bool) or not isinstance(self.spare_workers, int) or self.spare_workers < 0:
            raise ConfigError("spare_workers", self.spare_workers, "must be an integer >= 0")


@dataclass(frozen=True)
class SpareState:
    """Stateless."""


def initial_state(_params: SpareParams, _endpoint: EndpointSpec) -> SpareState:
    return SpareState()


def decide(snapshot: EndpointSnapshot, params: SpareParams, state: SpareState) -> tuple[ScaleDecision, SpareState]:
    needed = math.ceil(snapshot.demand / snapshot.endpoint.concurrency_per_worker)
    return ScaleDecision(needed + params.spare_workers, f"{needed} + {params.spare_workers} spare"), state


POLICY = Policy(name="NAME", params_type=SpareParams, initial_state=initial_state, decide=decide, doc=__doc__ or "")
'''


def _policy_file(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(SPARE.replace('"NAME"', repr(name)))
    return path


def _scenario(folder: Path, policy: str, params: dict[str, object] | None = None) -> Path:
    doc = {
        "name": "spare-demo",
        "duration_s": 600,
        "seed": 3,
        "endpoints": [
            {
                "id": "chat",
                "gpu_type": "A100",
                "scaling": {"max_workers": 4, "idle_timeout_s": 10},
                "policy": {"name": policy, "params": params or {}},
                "workload": {"kind": "poisson", "rate_per_s": 0.2},
                "service": {"kind": "lognormal", "mean_s": 4.0, "sigma": 0.6},
                "cold_start": {"container_start_s": 5},
            }
        ],
    }
    path = folder / "spare.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_policy_file_outside_the_package_runs_in_the_simulator(tmp_path: Path) -> None:
    _policy_file(tmp_path / "policies", "spare_file")
    # Relative to the scenario's folder, and the path is resolved once, at load.
    scenario = load_scenario(_scenario(tmp_path, "policies/spare_file.py:POLICY", {"spare_workers": 1}))
    spec = scenario.config.endpoints[0].spec
    assert spec.policy.name == f"{(tmp_path / 'policies' / 'spare_file.py').resolve()}:POLICY"
    spare = run_scenario(scenario).summary.iloc[0]
    none = run_scenario(load_scenario(_scenario(tmp_path, "policies/spare_file.py:POLICY", {"spare_workers": 0}))).summary.iloc[0]
    # A warm spare waits for the next burst: fewer cold starts, more idle workers, more cost.
    assert spare["mean_idle"] > none["mean_idle"]
    assert spare["cold_start_fraction"] < none["cold_start_fraction"]
    assert spare["cost_usd"] >= none["cost_usd"]


def test_a_file_policy_in_a_parallel_sweep_against_a_built_in(tmp_path: Path) -> None:
    _policy_file(tmp_path, "spare_sweep")
    scenario = load_scenario(_scenario(tmp_path, "spare_sweep.py:POLICY", {"spare_workers": 1}))
    sweep = {"endpoints.0.policy.name": ["spare_sweep.py:POLICY", "fixed_keepalive"], "endpoints.0.policy.params": [{}]}
    serial = run_sweep(scenario, sweep, replications=2, jobs=1)
    parallel = run_sweep(scenario, sweep, replications=2, jobs=2)  # spawned processes load the file themselves
    assert serial.table["cost_usd"].tolist() == parallel.table["cost_usd"].tolist()
    assert serial.table["endpoints.0.policy.name"].tolist() == ["spare_sweep.py:POLICY", "fixed_keepalive"]
    assert serial.table["endpoints.0.policy.params"].tolist() == [{}, {}]  # a mapping value, one column


def test_its_parameters_are_validated_like_a_built_ins(tmp_path: Path) -> None:
    _policy_file(tmp_path, "spare_checked")
    with pytest.raises(ConfigError, match=r"endpoints\[0\]\.policy\.params\.spare_workers must be an integer >= 0, was -1"):
        load_scenario(_scenario(tmp_path, "spare_checked.py:POLICY", {"spare_workers": -1}))
    with pytest.raises(ConfigError, match=r"policy\.params\.spares is not a parameter \(known: spare_workers\)"):
        load_scenario(_scenario(tmp_path, "spare_checked.py:POLICY", {"spares": 1}))
    with pytest.raises(ConfigError, match=r"policy\.params\.spare_workers must be a number"):
        load_scenario(_scenario(tmp_path, "spare_checked.py:POLICY", {"spare_workers": "one"}))


def test_a_module_on_the_path_and_a_registered_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As in docs/policies.md: the module registers its name when imported.
    text = SPARE.replace('"NAME"', repr("spare_module")).replace("import Policy", "import Policy, register")
    text = text.replace("POLICY = Policy(", "POLICY = register(Policy(").rstrip() + ")\n"
    (tmp_path / "spare_module_demo.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    scenario = load_scenario(_scenario(tmp_path, "spare_module_demo:POLICY"))
    assert run_scenario(scenario).summary.iloc[0]["jobs"] > 0
    # Importing it registered its name too, which any later file may use.
    assert "spare_module" in policies.available()
    assert policies.source_of("spare_module_demo:POLICY") == "reference spare_module_demo:POLICY"


def test_an_entry_point_plug_in_is_listed_and_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "spare_plugin_pkg.py").write_text(SPARE.replace('"NAME"', repr("spare_plugin")))
    dist = tmp_path / "spare_plugin_dist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: spare-plugin-dist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gpuserve.policies]\nspare_plugin = spare_plugin_pkg:POLICY\nbroken_plugin = no_such_module_xyz:POLICY\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    assert "spare_plugin" in policies.available()
    assert policies.source_of("spare_plugin") == "entry point spare_plugin_pkg:POLICY (spare-plugin-dist)"
    assert "No module named 'no_such_module_xyz'" in policies.base.plugin_problems()["broken_plugin"]
    scenario = load_scenario(_scenario(tmp_path, "spare_plugin", {"spare_workers": 2}))
    assert run_scenario(scenario).summary.iloc[0]["jobs"] > 0
    with pytest.raises(ConfigError, match=r"policy\.name is a plug-in that cannot be used: entry point no_such_module_xyz:POLICY"):
        load_scenario(_scenario(tmp_path, "broken_plugin"))
    listing = CliRunner().invoke(app, ["policies"])
    assert listing.exit_code == 0, listing.output
    assert "spare_plugin" in listing.output and "spare-plugin-dist" in listing.output and "knative_kpa" in listing.output


def test_an_endpoints_file_names_a_policy_file_beside_it(tmp_path: Path) -> None:
    _policy_file(tmp_path, "spare_serve")
    (tmp_path / "h.py").write_text("")
    cfg = parse_endpoints(
        {"endpoints": [{"id": "echo", "handler": "h.py", "policy": {"name": "spare_serve.py:POLICY", "params": {"spare_workers": 1}}}]},
        tmp_path,
    )
    name = cfg.endpoints[0].spec.policy.name
    assert name == f"{(tmp_path / 'spare_serve.py').resolve()}:POLICY"
    instance = policies.get(name, {"spare_workers": 1}, cfg.endpoints[0].spec)
    assert instance.policy.name == "spare_serve"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "policy.name is not a known policy (known: fixed_keepalive"),
        ("missing.py:POLICY", "policy.name names a file that does not exist"),
        ("bad.py:POLICY", "policy.name failed to load: SyntaxError"),
        ("notpolicy.py:decide", "policy.name must name a gpuserve Policy object (found a function)"),
        ("no_such_module_abc:POLICY", "policy.name cannot be imported: No module named 'no_such_module_abc'"),
    ],
)
def test_a_bad_reference_says_what_is_wrong(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "bad.py").write_text("def (:\n")
    (tmp_path / "notpolicy.py").write_text("def decide():\n    pass\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(_scenario(tmp_path, name))
    assert message in str(info.value)
    if name == "nope":
        assert "module:ATTR or path/to/file.py:ATTR" in str(info.value)


def test_gpuserve_policies_name_prints_parameters_defaults_and_doc(tmp_path: Path) -> None:
    runner = CliRunner()
    kpa = runner.invoke(app, ["policies", "knative_kpa"])
    assert kpa.exit_code == 0, kpa.output
    assert "stable_window_s" in kpa.output and "60.0" in kpa.output and "tick interval at the defaults: 2 s" in kpa.output
    path = _policy_file(tmp_path, "spare_cli")
    own = runner.invoke(app, ["policies", f"{path}:POLICY"])
    assert own.exit_code == 0, own.output
    assert "spare_workers" in own.output and "spare workers: one worker per" in own.output
    unknown = runner.invoke(app, ["policies", "nope"])
    assert unknown.exit_code == 2 and "is not a known policy" in unknown.output



def test_a_policy_file_drives_a_live_server(tmp_path: Path) -> None:
    # endpoints.yaml -> the same config code `gpuserve serve` uses -> a real Platform with
    # worker processes. With one spare, the policy wants a worker before any job arrives.
    from tests.support.live import Live

    _policy_file(tmp_path, "spare_live")
    (tmp_path / "h.py").write_text("from gpuserve import serverless\n\ndef handler(job):\n    return {'x': job['input']['x']}\n\nserverless.start({'handler': handler})\n")
    cfg = parse_endpoints(
        {
            "endpoints": [
                {
                    "id": "ep",
                    "handler": "h.py",
                    "scaling": {"max_workers": 2, "idle_timeout_s": 30, "scaler": "request_count", "scaler_value": 1},
                    "policy": {"name": "spare_live.py:POLICY", "params": {"spare_workers": 1}},
                }
            ]
        },
        tmp_path,
    )
    with Live(tmp_path, [cfg.endpoints[0].deployment]) as live:
        live.until(lambda: len(live.workers("ep")) >= 1, "the spare worker to start with no job queued")
        job_id = live.run("ep", {"x": 7})
        assert live.wait("ep", job_id)["output"] == {"x": 7}
        # One job in the system plus one spare: two workers (max_workers 2).
        live.until(lambda: len(live.workers("ep")) == 2, "a second worker beside the busy one")
