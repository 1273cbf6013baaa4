"""The worker's retry loops, expressed through core.backoff: the waits each one makes."""

from __future__ import annotations

from gpuserve.worker import devserver, loop


def test_take_errors_wait_half_a_second_doubling_to_5_s() -> None:
    assert [loop.TAKE_ERROR_BACKOFF.delay_s(e) for e in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_result_posts_get_six_tries() -> None:
    assert list(loop.POST_RETRY.tries()) == [0.2, 0.5, 1.0, 2.0, 4.0, None]


def test_fast_empty_answers_wait_5_ms_times_two_to_the_streak_capped() -> None:
    for k in range(1, 12):
        assert loop.FAST_EMPTY_BACKOFF.delay_s(k) == min(0.5, 0.005 * 2**k)
        assert loop.FAST_EMPTY_STOP_BACKOFF.delay_s(k) == min(1.0, 0.005 * 2**k)


def test_the_dev_servers_webhook_gets_three_tries_1_s_then_2_s_apart() -> None:
    assert list(devserver.WEBHOOK_RETRY.tries()) == [1.0, 2.0, None]
