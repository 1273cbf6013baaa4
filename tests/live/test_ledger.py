"""The live ledger: hand-computed bills for small worker timelines under each preset, from real registry changes."""

from __future__ import annotations

import pytest

from gpuserve.core.billing import BillingModel, bill_worker, billing_preset
from gpuserve.core.clock import ManualClock
from gpuserve.core.types import EndpointSpec, ScalingSpec, WorkerState
from gpuserve.live.ledger import LiveLedger
from gpuserve.live.registry import WorkerRegistry

PRICE = 0.001  # USD per A100-second

INIT, R, D = WorkerState.INITIALIZING, WorkerState.RUNNING, WorkerState.IDLE


def _spec(min_workers: int = 0, gpus: int = 2, memory_gb: float | None = None) -> EndpointSpec:
    return EndpointSpec(
        "ep", scaling=ScalingSpec(min_workers=min_workers, max_workers=3), gpu_type="A100", gpus_per_worker=gpus, memory_gb=memory_gb
    )


def _ledger(model: BillingModel, spec: EndpointSpec) -> tuple[LiveLedger, WorkerRegistry, ManualClock]:
    registry, clock = WorkerRegistry(), ManualClock(100.0)
    ledger = LiveLedger(model, clock, lambda eid: spec if eid == "ep" else None).attach(registry)
    return ledger, registry, clock


def _life(registry: WorkerRegistry, clock: ManualClock, wid: str = "w1", job: str = "j1") -> None:
    """Initializes 2 s, runs 3 s, idles 3.4 s, is stopped: 100 -> 102 -> 105 -> 108.4."""
    registry.add(wid, "ep", clock.now_s())
    clock.advance(2.0)
    registry.on_take(wid, [job], clock.now_s())
    clock.advance(3.0)
    registry.on_job_end(wid, job, clock.now_s())
    clock.advance(3.4)
    registry.remove(wid)  # a backend's removal carries no time: the ledger reads its clock


def test_runpod_bills_start_up_execution_and_the_idle_window_rounded_up_to_the_second() -> None:
    ledger, registry, clock = _ledger(billing_preset("runpod", prices_usd_per_gpu_s={"A100": PRICE}), _spec())
    _life(registry, clock)
    bill = ledger.endpoint_bill("ep")
    # 8.4 s billed -> 9 s, x 2 GPUs; the extra 0.6 s goes to the last billed state (IDLE).
    assert bill.billed_s == pytest.approx(9.0)
    assert bill.gpu_s == pytest.approx(18.0)
    assert bill.cost_usd == pytest.approx(18.0 * PRICE)
    assert bill.by_state[INIT].seconds == pytest.approx(2.0) and bill.by_state[INIT].gpu_s == pytest.approx(4.0)
    assert bill.by_state[R].cost_usd == pytest.approx(6.0 * PRICE)
    assert bill.by_state[D].seconds == pytest.approx(3.4) and bill.by_state[D].billed_s == pytest.approx(4.0)
    assert bill.jobs_started == 1
    # The reference rule for one worker agrees.
    ref = bill_worker(ledger.model, [(INIT, 0, 2, False, False), (R, 2, 5, False, True), (D, 5, 8.4, False, False)], "A100", 2)
    assert (bill.billed_s, bill.cost_usd) == pytest.approx(ref)
    # Nothing more accrues once the worker is gone.
    clock.advance(50.0)
    assert ledger.endpoint_bill("ep").cost_usd == pytest.approx(18.0 * PRICE)


def test_the_state_table_never_bills_idle() -> None:
    ledger, registry, clock = _ledger(billing_preset("runpod_state_table", prices_usd_per_gpu_s={"A100": PRICE}), _spec())
    _life(registry, clock)
    bill = ledger.endpoint_bill("ep")
    assert bill.billed_s == pytest.approx(5.0)  # INITIALIZING 2 + RUNNING 3
    assert bill.by_state[D].seconds == pytest.approx(3.4) and bill.by_state[D].cost_usd == 0.0
    assert bill.cost_usd == pytest.approx(10.0 * PRICE)


def test_an_alive_worker_is_billed_so_far_and_a_window_is_pro_rata() -> None:
    ledger, registry, clock = _ledger(billing_preset("runpod", prices_usd_per_gpu_s={"A100": PRICE}), _spec(gpus=1))
    registry.add("w1", "ep", clock.now_s())  # 100
    clock.advance(1.5)
    registry.on_take("w1", ["j1"], clock.now_s())  # 101.5: RUNNING
    clock.advance(2.2)  # 103.7, still running
    so_far = ledger.endpoint_bill("ep")
    assert so_far.billed_s == pytest.approx(4.0)  # 3.7 s as if it stopped now
    assert so_far.by_state[R].seconds == pytest.approx(2.2)
    last_2s = ledger.endpoint_bill("ep", window_s=2.0)  # 101.7 .. 103.7: RUNNING only, no rounding
    assert last_2s.billed_s == pytest.approx(2.0)
    assert set(s for s, b in last_2s.by_state.items() if b.seconds) == {R}
    last_3s = ledger.worker_bills("ep", window_s=3.0)["w1"]  # 100.7 .. 103.7
    assert last_3s.by_state[INIT].seconds == pytest.approx(0.8) and last_3s.by_state[R].seconds == pytest.approx(2.2)
    with pytest.raises(ValueError, match="window_s"):
        ledger.endpoint_bill("ep", window_s=0)


def test_active_workers_are_discounted_and_the_oldest_flex_worker_inherits_the_discount() -> None:
    model = billing_preset("runpod", prices_usd_per_gpu_s={"A100": PRICE}, rounding_s=0.0)
    ledger, registry, clock = _ledger(model, _spec(min_workers=1, gpus=1))
    registry.add("a", "ep", clock.now_s())  # active: the first of min_workers=1
    registry.add("b", "ep", clock.now_s())  # flex
    clock.advance(10.0)
    registry.remove("a")  # b carries the active discount from here
    clock.advance(10.0)
    bills = ledger.worker_bills("ep")
    assert bills["a"].cost_usd == pytest.approx(10 * PRICE * 0.7)
    assert bills["b"].cost_usd == pytest.approx(10 * PRICE + 10 * PRICE * 0.7)


def test_aws_lambda_bills_execution_gb_seconds_and_the_request_fee() -> None:
    model = billing_preset("aws_lambda")
    ledger, registry, clock = _ledger(model, _spec(memory_gb=2.0))
    _life(registry, clock)
    bill = ledger.endpoint_bill("ep")
    assert bill.gpu_s == 0.0
    assert bill.jobs_started == 1
    assert bill.cost_usd == pytest.approx(3.0 * 2.0 * model.price_usd_per_gb_s + model.per_request_usd)
