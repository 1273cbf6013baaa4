"""endpoints.yaml for load-balancing endpoints: the fields, their defaults, and errors that name the field and the value."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpuserve import policies
from gpuserve.backends.process import ProcessBackend
from gpuserve.config.endpoints import parse_endpoints
from gpuserve.core.errors import ConfigError
from gpuserve.core.types import EndpointKind, LoadBalancingSpec, WorkerState
from gpuserve.experiments import load_scenario, run_scenario
from gpuserve.live.registry import WorkerRegistry
from gpuserve.platform import Platform
from tests.lb.support import APP, LB_FAST
from tests.policies.test_plugins import SPARE
from tests.support.live import process_backend_for_tests, wait_until


def _doc(**endpoint: Any) -> dict[str, Any]:
    return {"endpoints": [{"id": "chat", **endpoint}]}


def test_a_load_balancer_endpoint_with_its_defaults(tmp_path: Path) -> None:
    config = parse_endpoints(_doc(type="load_balancer", command="uvicorn app:app --port $PORT"), tmp_path)
    dep = config.endpoints[0].deployment
    assert dep.spec.kind is EndpointKind.LOAD_BALANCER
    assert dep.spec.load_balancing == LoadBalancingSpec()  # Runpod's 2 min hold, 5.5 min request
    assert dep.command == ("/bin/sh", "-c", "uvicorn app:app --port $PORT")
    assert (dep.port, dep.port_health, dep.health_path) == (80, None, "/ping")
    assert dep.workdir == str(tmp_path.resolve())


def test_every_field_set(tmp_path: Path) -> None:
    config = parse_endpoints(
        _doc(
            type="load_balancer",
            command=["python", "server.py"],
            port=8080,
            port_health=8081,
            health_path="/healthz",
            concurrency_target=2,
            max_concurrency=8,
            hold_timeout_s=10,
            request_timeout_s=30,
            scaling={"min_workers": 0, "max_workers": 5, "idle_timeout_s": 2},
            api_keys=["sk-chat"],
        ),
        tmp_path,
    )
    dep = config.endpoints[0].deployment
    assert dep.command == ("python", "server.py")
    assert (dep.port, dep.port_health, dep.health_path) == (8080, 8081, "/healthz")
    assert dep.spec.load_balancing == LoadBalancingSpec(2, 8, 10.0, 30.0)
    assert dep.spec.scaling.max_workers == 5


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ({"type": "load_balancer"}, r"endpoints\[0\]\.command or image is required for a load_balancer endpoint"),
        (
            {"type": "load_balancer", "command": "x", "handler": "h.py"},
            r"endpoints\[0\]\.handler is for queue endpoints.*was 'h.py'",
        ),
        ({"type": "load_balancer", "command": ""}, r"endpoints\[0\]\.command cannot be empty"),
        ({"type": "load_balancer", "command": "x", "port": 0}, r"endpoints\[0\]\.port .*greater than or equal to 1.*was 0"),
        ({"type": "load_balancer", "command": "x", "health_path": "ping"}, r"health_path must start with '/', was 'ping'"),
        (
            {"type": "load_balancer", "command": "x", "concurrency_target": 4, "max_concurrency": 2},
            r"endpoints\[0\]\.max_concurrency cannot be below concurrency_target \(4\), was 2",
        ),
        ({"type": "balancer", "command": "x"}, r"endpoints\[0\]\.type .*was 'balancer'"),
        ({"handler": "h.py", "command": "x"}, r"endpoints\[0\]\.command applies only to `type: load_balancer`"),
        ({"handler": "h.py", "port": 80}, r"endpoints\[0\]\.port applies only to `type: load_balancer`"),
    ],
)
def test_errors_name_the_field_and_the_value(tmp_path: Path, endpoint: dict[str, Any], message: str) -> None:
    (tmp_path / "h.py").write_text("")
    with pytest.raises(ConfigError, match=message):
        parse_endpoints(_doc(**endpoint), tmp_path)


def test_the_process_backend_needs_a_command(tmp_path: Path) -> None:
    config = parse_endpoints(_doc(type="load_balancer", image="my-server:1"), tmp_path)
    backend = ProcessBackend("http://127.0.0.1:1", WorkerRegistry(), logs_dir=tmp_path / "logs")
    with pytest.raises(ConfigError, match="command is required by the process backend for a load_balancer endpoint"):
        backend.configure(config.endpoints[0].deployment)


def _sim_lb(folder: Path, spare_workers: int) -> Any:
    """The spare policy file on a load-balancing endpoint in a simulated scenario: its summary row."""
    doc = {
        "name": "spare-lb",
        "duration_s": 600,
        "seed": 3,
        "endpoints": [
            {
                "id": "chat",
                "type": "load_balancer",
                "max_concurrency": 2,
                "scaling": {"max_workers": 4, "idle_timeout_s": 10},
                "policy": {"name": "spare_lb.py:POLICY", "params": {"spare_workers": spare_workers}},
                "workload": {"kind": "poisson", "rate_per_s": 0.2},
                "service": {"kind": "lognormal", "mean_s": 4.0, "sigma": 0.6},
                "cold_start": {"container_start_s": 5},
            }
        ],
    }
    path = folder / f"spare_lb_{spare_workers}.yaml"
    path.write_text(yaml.safe_dump(doc))
    scenario = load_scenario(path)
    return scenario, run_scenario(scenario).summary.iloc[0]


def test_one_policy_file_sizes_a_load_balancer_endpoint_in_the_simulator_and_live(tmp_path: Path) -> None:
    """The same Policy object (a user's file, as in tests/policies/test_plugins.py) in both worlds."""
    (tmp_path / "spare_lb.py").write_text(SPARE.replace('"NAME"', repr("spare_lb")))
    scenario, spare = _sim_lb(tmp_path, 1)
    _, none = _sim_lb(tmp_path, 0)
    # Simulated: a warm spare means fewer held requests, more idle workers.
    assert spare["held"] < none["held"]
    assert spare["mean_idle"] > none["mean_idle"]
    config = parse_endpoints(
        _doc(
            type="load_balancer",
            command=[sys.executable, str(APP)],
            env={"LB_TEST_DIR": str(tmp_path)},
            policy={"name": "spare_lb.py:POLICY", "params": {"spare_workers": 1}},
            scaling={"max_workers": 2, "idle_timeout_s": 60},
        ),
        tmp_path,
    )
    with Platform.from_config(
        config, data_dir=tmp_path / "data", backend=process_backend_for_tests(), port=0, settings=LB_FAST
    ) as platform:
        sim_spec, live_spec = scenario.config.endpoints[0].spec, platform.runtime.endpoints["chat"].deployment.spec
        assert sim_spec.policy == live_spec.policy  # one resolved file, one set of params
        assert policies.get(sim_spec.policy.name, sim_spec.policy.params, sim_spec).policy is policies.get(
            live_spec.policy.name, live_spec.policy.params, live_spec
        ).policy
        # No request yet: the policy's warm spare is the only reason a worker starts.
        wait_until(
            lambda: [w for w in platform.registry.all("chat") if w.state is WorkerState.IDLE], 60, "the policy's spare"
        )
        r = httpx.get(f"{platform.url}/lb/chat/echo", timeout=60)
        assert r.status_code == 200, r.text
        assert httpx.post(f"{platform.url}/v2/chat/run", json={"input": {}}).status_code == 400
