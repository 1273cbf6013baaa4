"""Core types, the job state machine, windows, guardrails and the controller loop, at explicit times."""

from __future__ import annotations

import pytest

import gpuserve.core as core
from gpuserve.backends.fake import FakeBackend, FakeQueue
from gpuserve.controller import Controller
from gpuserve.core import (
    BILLING_PRESETS,
    BillingModel,
    ConfigError,
    EndpointSnapshot,
    EndpointSpec,
    IllegalTransitionError,
    JobStatus,
    ManualClock,
    PolicySpec,
    QueueStats,
    ScaleDecision,
    ScalingSpec,
    WorkerState,
    WorkerView,
    apply_guardrails,
    billing_preset,
    transition,
)
from gpuserve.core.windows import prune, window_average


def test_exported_members_exist() -> None:
    for name in core.__all__:
        assert hasattr(core, name), name


@pytest.mark.parametrize(
    ("source", "target", "ok"),
    [
        (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS, True),
        (JobStatus.IN_QUEUE, JobStatus.CANCELLED, True),
        (JobStatus.IN_PROGRESS, JobStatus.COMPLETED, True),
        (JobStatus.IN_PROGRESS, JobStatus.IN_QUEUE, True),
        (JobStatus.FAILED, JobStatus.IN_QUEUE, True),
        (JobStatus.TIMED_OUT, JobStatus.IN_QUEUE, True),
        (JobStatus.COMPLETED, JobStatus.IN_PROGRESS, False),
        (JobStatus.CANCELLED, JobStatus.IN_QUEUE, False),
        (JobStatus.COMPLETED, JobStatus.IN_QUEUE, False),
        (JobStatus.IN_QUEUE, JobStatus.COMPLETED, False),
    ],
)
def test_job_transitions(source: JobStatus, target: JobStatus, ok: bool) -> None:
    if ok:
        assert transition(source, target) is target
    else:
        with pytest.raises(IllegalTransitionError, match=f"{source.value} -> {target.value}"):
            transition(source, target)


# Runpod's worker-state table (seeds/004), row for row, and the pricing page's rule, which
# differs only in billing IDLE (the idle-timeout window; a stopped, parked worker is no state).
@pytest.mark.parametrize(
    ("state", "processing", "state_table", "pricing_page"),
    [
        (WorkerState.INITIALIZING, False, True, True),
        (WorkerState.IDLE, False, False, True),
        (WorkerState.RUNNING, True, True, True),
        (WorkerState.THROTTLED, False, False, False),
        (WorkerState.OUTDATED, True, True, True),
        (WorkerState.OUTDATED, False, False, False),
        (WorkerState.UNHEALTHY, False, False, False),
    ],
)
def test_runpod_billing_rules(state: WorkerState, processing: bool, state_table: bool, pricing_page: bool) -> None:
    assert BILLING_PRESETS["runpod_state_table"].billed(state, processing) is state_table
    assert BILLING_PRESETS["runpod"].billed(state, processing) is pricing_page
    assert BILLING_PRESETS["always_on"].billed(state, processing) is True
    assert BILLING_PRESETS["aws_lambda"].billed(state, processing) is False
    assert BILLING_PRESETS["runpod_state_table"].billed(state, processing, active=True) is True


def test_billing_presets_take_overrides_and_name_bad_fields() -> None:
    model = billing_preset("runpod_state_table", states={"idle": True}, rounding_s=0.0)
    assert model.billed(WorkerState.IDLE, False) and model.rounding_s == 0.0
    assert model.preset == "runpod_state_table"
    assert BillingModel() == BILLING_PRESETS["runpod"]
    with pytest.raises(ConfigError, match=r"billing\.preset .*known: runpod, runpod_state_table, always_on, aws_lambda"):
        billing_preset("modal")
    with pytest.raises(ConfigError, match=r"billing\.states\.PAUSED"):
        billing_preset("runpod", states={"PAUSED": True})
    with pytest.raises(ConfigError, match=r"billing\.states\.IDLE must be true, false or 'while_processing', was 'sometimes'"):
        billing_preset("runpod", states={"IDLE": "sometimes"})
    with pytest.raises(ConfigError, match=r"billing\.idle_billed is not a billing field"):
        billing_preset("runpod", idle_billed=True)
    with pytest.raises(ConfigError, match=r"billing\.active_discount"):
        BillingModel(active_discount=2.0)
    with pytest.raises(ConfigError, match=r"billing\.rounding_s must be a number >= 0, was -1"):
        BillingModel(rounding_s=-1)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"idle_timeout_s": -3}, "idle_timeout_s"),
        ({"min_workers": 4, "max_workers": 2}, "max_workers"),
        ({"scaler_value": 0}, "scaler_value"),
        ({"scaler": "fastest"}, "scaler"),
        ({"min_workers": -1}, "min_workers"),
    ],
)
def test_scaling_spec_errors_name_field_and_value(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as err:
        ScalingSpec(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field
    assert field in str(err.value) and "was" in str(err.value)


def test_idle_timeout_message_is_exact() -> None:
    with pytest.raises(ConfigError, match=r"idle_timeout_s cannot be negative, was -3"):
        ScalingSpec(idle_timeout_s=-3)


def test_manual_clock() -> None:
    clock = ManualClock(10.0)
    assert clock.advance(300) == 310.0
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.set(5.0)


def test_window_average_partial_and_empty() -> None:
    samples = [(1.0, 10.0), (2.0, 20.0), (61.0, 30.0)]
    assert window_average(samples, 61.0, 60.0) == pytest.approx(25.0)  # (2, 61] holds 20 and 30
    assert window_average(samples, 61.0, 6.0) == pytest.approx(30.0)
    assert window_average([], 5.0, 6.0) is None
    assert prune(samples, 61.0, 60.0) == ((2.0, 20.0), (61.0, 30.0))


def _snap(now_s: float, workers: list[WorkerView], scaling: ScalingSpec, queue: QueueStats | None = None) -> EndpointSnapshot:
    return EndpointSnapshot(now_s, EndpointSpec("ep", scaling=scaling), tuple(workers), queue or QueueStats())


def test_guardrails_clamp_and_hold() -> None:
    scaling = ScalingSpec(min_workers=1, max_workers=3)
    snap = _snap(0.0, [], scaling)
    assert apply_guardrails(snap, ScaleDecision(10, "big")).start == 3
    assert apply_guardrails(snap, ScaleDecision.hold("no data")).start == 1  # hold still honours min
    assert apply_guardrails(snap, ScaleDecision(10, "big"), max_step=2).start == 2


def test_guardrails_stop_only_long_idle_and_never_busy() -> None:
    scaling = ScalingSpec(max_workers=5, idle_timeout_s=5.0)
    workers = [
        WorkerView("busy", WorkerState.RUNNING, 0.0, in_flight=1),
        WorkerView("fresh", WorkerState.IDLE, 0.0, idle_since_s=98.0),
        WorkerView("old", WorkerState.IDLE, 0.0, idle_since_s=90.0),
        WorkerView("older", WorkerState.IDLE, 0.0, idle_since_s=80.0),
    ]
    action = apply_guardrails(_snap(100.0, workers, scaling), ScaleDecision(0, "no demand"))
    assert action.stop == ("older", "old")  # longest idle first; 'fresh' idle 2 s < 5 s; busy kept


def test_guardrails_scale_to_zero_grace() -> None:
    scaling = ScalingSpec(idle_timeout_s=5.0, scale_to_zero_grace_s=30.0)
    worker = [WorkerView("w", WorkerState.IDLE, 0.0, idle_since_s=0.0)]
    assert apply_guardrails(_snap(10.0, worker, scaling), ScaleDecision(0, "")).stop == ()
    assert apply_guardrails(_snap(35.0, worker, scaling), ScaleDecision(0, "")).stop == ("w",)


def test_guardrails_policy_keep_alive_overrides_idle_timeout() -> None:
    scaling = ScalingSpec(idle_timeout_s=5.0)
    worker = [WorkerView("w", WorkerState.IDLE, 0.0, idle_since_s=0.0)]
    decision = ScaleDecision(0, "keep-alive 600 s", keep_alive_s=600.0)
    assert apply_guardrails(_snap(10.0, worker, scaling), decision).stop == ()
    assert apply_guardrails(_snap(600.0, worker, scaling), decision).stop == ("w",)


def _controller(scaling: ScalingSpec, policy: str = "runpod_request_count") -> tuple[Controller, FakeBackend, FakeQueue, ManualClock]:
    backend, queue, clock = FakeBackend(), FakeQueue(), ManualClock()
    spec = EndpointSpec("ep", scaling=scaling, policy=PolicySpec(policy))
    return Controller([spec], backend, queue, clock), backend, queue, clock


def test_controller_scales_up_on_arrival_at_once_and_down_after_idle_timeout() -> None:
    scaling = ScalingSpec(max_workers=3, idle_timeout_s=5.0, scaler="request_count", scaler_value=4)
    ctl, backend, queue, clock = _controller(scaling)
    queue.by_endpoint["ep"] = QueueStats(in_queue=9)
    step = ctl.on_job_arrival("ep", 0.0)
    assert step is not None and step.action.start == 3  # ceil(9/4)
    assert len(backend.workers("ep")) == 3
    for w in backend.workers("ep"):
        backend.set_state("ep", w.worker_id, WorkerState.IDLE, idle_since_s=10.0)
    queue.by_endpoint["ep"] = QueueStats()
    clock.set(12.0)
    step = ctl.tick_endpoint("ep")
    assert step.action.is_noop and step.next_wake_s == pytest.approx(15.0)
    step = ctl.tick_endpoint("ep", 15.0)
    assert len(step.action.stop) == 3 and backend.workers("ep") == []


def test_controller_low_priority_arrival_never_scales() -> None:
    ctl, backend, queue, _ = _controller(ScalingSpec())
    queue.by_endpoint["ep"] = QueueStats(in_queue=1)
    assert ctl.on_job_arrival("ep", 0.0, low_priority=True) is None
    assert backend.workers("ep") == []


def test_controller_unknown_policy_names_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"policy.name .*runpod_request_count"):
        _controller(ScalingSpec(), policy="nope")


def test_controller_wake_comes_from_workers_left_after_a_stop() -> None:
    # Two idle workers, idle since 0 and 3; at t=5 the first is due and stopped. The wake
    # must then name t=8 for the second, not vanish with the stopped one.
    scaling = ScalingSpec(max_workers=3, idle_timeout_s=5.0, scaler="request_count", scaler_value=1)
    ctl, backend, queue, _ = _controller(scaling)
    queue.by_endpoint["ep"] = QueueStats(in_queue=2)
    ctl.on_job_arrival("ep", 0.0)
    first, second = (w.worker_id for w in backend.workers("ep"))
    backend.set_state("ep", first, WorkerState.IDLE, idle_since_s=0.0)
    backend.set_state("ep", second, WorkerState.IDLE, idle_since_s=3.0)
    queue.by_endpoint["ep"] = QueueStats()
    step = ctl.tick_endpoint("ep", 5.0)
    assert step.action.stop == (first,)
    assert step.next_wake_s == pytest.approx(8.0)


def test_due_time_is_never_one_ulp_early() -> None:
    from gpuserve.core.guardrails import due_time_s

    since = 1019.3122553967629
    t = due_time_s(since, 10.0)
    assert t - since >= 10.0
    assert due_time_s(22.0, 30.0) == 52.0
