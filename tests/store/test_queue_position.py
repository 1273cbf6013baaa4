"""JobStore.queue_position on every store: the take order (FIFO, lowPriority last), after takes, cancels and requeues."""

from __future__ import annotations

from tests.store.test_store import submit


def test_queue_position_follows_the_take_order(store):
    low1, low2 = submit(store, 2, low_priority=True)
    a, b, c = submit(store, 3, t=10)
    pos = {j.id: store.queue_position(store.get(j.id)) for j in (a, b, c, low1, low2)}
    assert [pos[j.id] for j in (a, b, c, low1, low2)] == [1, 2, 3, 4, 5]
    (taken,) = store.take("ep", "w", 1, 20)
    assert taken.id == a.id
    store.cancel(b.id, 21)
    assert store.queue_position(store.get(c.id)) == 1
    assert store.queue_position(store.get(low2.id)) == 3
    # A requeued job keeps its place: it goes first again.
    assert store.requeue("w", [a.id], "worker w lost", 22, max_retries=3)
    assert store.queue_position(store.get(a.id)) == 1
    assert store.queue_position(store.get(c.id)) == 2
    # Another endpoint's queue is not counted.
    (other,) = submit(store, 1, endpoint="other", t=30)
    assert store.queue_position(store.get(other.id)) == 1
