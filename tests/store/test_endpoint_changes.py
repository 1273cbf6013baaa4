"""Endpoint changes in the store: numbered per endpoint, in order, durable across a reopen (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def test_changes_are_numbered_per_endpoint_kept_in_order_and_survive_a_reopen(open_store: Callable[..., Any]) -> None:
    store = open_store()
    a1 = store.record_change("a", "update", {"scaling.max_workers": 5}, {"scaling.max_workers": 3}, "ops", 10.0)
    b1 = store.record_change("b", "add", {"id": "b", "image": "img:1"}, {}, "ops", 11.0)
    a2 = store.record_change("a", "update", {"env.FOO": "bar", "image": None}, {"env.FOO": None}, "deployer", 12.0)
    assert (a1.version, b1.version, a2.version) == (1, 1, 2)
    assert a1.seq < b1.seq < a2.seq
    store.close()
    store = open_store()
    history = store.changes("a")
    assert [(c.version, c.actor, c.action, c.at_s) for c in history] == [(1, "ops", "update", 10.0), (2, "deployer", "update", 12.0)]
    assert history[1].fields == {"env.FOO": "bar", "image": None} and history[1].previous == {"env.FOO": None}
    assert [c.endpoint_id for c in store.changes()] == ["a", "b", "a"]
    assert [c.version for c in store.changes(after_seq=b1.seq)] == [2]
    assert store.record_change("a", "remove", {}, {}, "ops", 13.0).version == 3
