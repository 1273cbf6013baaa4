"""Both backends' crash back-offs, expressed through core.backoff, keep their schedules."""

from __future__ import annotations

from gpuserve.backends import docker, process


def test_process_crash_backoff_doubles_from_1_s_to_60_s() -> None:
    assert [process.crash_backoff_s(n) for n in range(0, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert process.crash_backoff_s(5000) == 60.0  # 2**4999 s would not even fit a float


def test_docker_crash_backoff_doubles_from_half_a_second_to_30_s() -> None:
    assert [docker.CRASH_BACKOFF.delay_s(n) for n in range(0, 9)] == [0.0, 0.5, 1, 2, 4, 8, 16, 30, 30]
