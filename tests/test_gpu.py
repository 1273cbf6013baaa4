"""GPU placement against constructed inventories, and NVML inventory on a host with no driver."""

from __future__ import annotations

import logging

import pytest

from gpuserve import gpu
from gpuserve.gpu import GpuInfo, HostInventory, gpu_env, matches_type, place, worker_gpu_stats


def _host() -> list[GpuInfo]:
    """Two H100s, two A100s and one L4, with some telemetry."""
    return [
        GpuInfo(0, "GPU-a", "NVIDIA H100 80GB HBM3", 81559, 1000, 10.0),
        GpuInfo(1, "GPU-b", "NVIDIA H100 80GB HBM3", 81559, 3000, 30.0),
        GpuInfo(2, "GPU-c", "NVIDIA A100-SXM4-80GB", 81920, 0, 0.0),
        GpuInfo(3, "GPU-d", "NVIDIA A100-SXM4-80GB", 81920, 0, 0.0),
        GpuInfo(4, "GPU-e", "NVIDIA L4", 23034, 500, 50.0),
    ]


def test_type_matching_is_word_based_and_case_blind() -> None:
    h100, a100, l4 = _host()[0], _host()[2], _host()[4]
    assert matches_type(h100, "H100") and matches_type(h100, "nvidia h100 80gb hbm3")
    assert matches_type(a100, "A100-80GB") and matches_type(a100, "a100")
    assert not matches_type(a100, "H100") and not matches_type(l4, "L40")
    assert matches_type(l4, "any") and matches_type(h100, "*")
    assert h100.gpu_type == "H100 80GB HBM3"


def test_place_picks_lowest_free_indices_of_the_type() -> None:
    gpus = _host()
    assert place(gpus, set(), "A100", 2) == (2, 3)
    assert place(gpus, {2}, "A100", 1) == (3,)
    assert place(gpus, set(), "L4", 1) == (4,)


def test_cpu_only_request_always_fits_with_no_gpus() -> None:
    assert place([], set(), None, 1) == ()
    assert place(_host(), {0, 1, 2, 3, 4}, "H100", 0) == ()


def test_full_host_or_missing_type_gives_none() -> None:
    gpus = _host()
    assert place(gpus, {0, 1}, "H100", 1) is None  # both H100s taken
    assert place(gpus, set(), "H100", 3) is None  # only two exist
    assert place(gpus, set(), "B200", 1) is None  # type not on this host
    assert place([], set(), "H100", 1) is None  # no driver: zero GPUs
    with pytest.raises(ValueError, match="count cannot be negative, was -1"):
        place(gpus, set(), "H100", -1)


def test_host_inventory_allocates_releases_and_reuses() -> None:
    host = HostInventory(_host())
    assert host.allocate("w1", "H100", 1) == (0,)
    assert host.allocate("w2", "H100", 1) == (1,)
    assert host.allocate("w3", "H100", 1) is None  # full for this type -> THROTTLED
    assert host.held_by("w3") == ()  # a failed allocation claims nothing
    assert host.allocate("w4", "A100", 2) == (2, 3)
    assert host.free() == [4]
    assert host.release("w1") == (0,)
    assert host.allocate("w3", "H100", 1) == (0,)  # the freed GPU is reused
    assert host.owners() == {0: "w3", 1: "w2", 2: "w4", 3: "w4"}
    assert host.release("nobody") == ()


def test_claim_records_adopted_workers_and_refuses_double_ownership() -> None:
    host = HostInventory(_host())
    host.claim("adopted", (2,))
    assert host.allocate("w", "A100", 1) == (3,)
    with pytest.raises(ValueError, match="gpu 3 is already held by 'w'"):
        host.claim("other", (3,))


def test_refresh_keeps_claims_and_updates_telemetry() -> None:
    host = HostInventory(_host())
    host.allocate("w", "H100", 2)
    busy = [GpuInfo(g.index, g.uuid, g.name, g.memory_total_mib, 40000, 90.0) for g in _host()]
    host.refresh(busy)
    stats = host.stats("w")
    assert stats is not None
    assert stats.gpu_ids == (0, 1)
    assert stats.utilization_pct == 90.0
    assert stats.memory_used_mib == 80000 and stats.memory_total_mib == 2 * 81559


def test_worker_stats_average_utilisation_and_sum_memory() -> None:
    stats = worker_gpu_stats(_host(), (0, 1))
    assert stats is not None
    assert stats.utilization_pct == 20.0
    assert stats.memory_used_mib == 4000
    assert worker_gpu_stats(_host(), ()) is None
    assert worker_gpu_stats([], (0,)) is None


def test_gpu_env_pins_by_pci_order_and_hides_all_for_cpu() -> None:
    assert gpu_env((1, 3)) == {"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpu_env(())["CUDA_VISIBLE_DEVICES"] == ""


def test_inventory_without_a_driver_is_empty_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this host has an NVIDIA driver; the no-driver path cannot be observed here")
    gpu._no_gpu_logged = False
    with caplog.at_level(logging.WARNING, logger="gpuserve.gpu"):
        assert gpu.inventory() == []
        assert gpu.inventory() == []
    lines = [r.getMessage() for r in caplog.records if r.name == "gpuserve.gpu"]
    assert len(lines) == 1 and "0 GPUs" in lines[0]
