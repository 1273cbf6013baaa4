"""Job fields a store may keep on disk only: `OnDisk` stands in for the value, `Spillable` loads it on read.

A job's input and output may be megabytes; a store that keeps its jobs in memory (SQLite) holds
those only within a budget (`SpillBudget`) and leaves the rest in the database row, where they are
written anyway. The Job's field then stands on an `OnDisk`, and reading the field reads the row
again (nothing is cached: the value is handed out and dropped), so every caller sees the value and
none needs to know where it lives. A store that keeps nothing in memory (PostgreSQL) never spills.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

__all__ = ["OnDisk", "SpillBudget", "Spillable", "on_disk", "spill"]

T = TypeVar("T")


class OnDisk:
    """What a Job field holds while its value is on disk only: `load()` reads it back (NotFoundError once it is deleted).

    `webhook` travels with a spilled input: a job's end (and its expiry) needs it, and it is small.
    """

    __slots__ = ("load", "webhook")

    def __init__(self, load: Callable[[], Any], webhook: str | None = None) -> None:
        self.load = load
        self.webhook = webhook


class _NoDefault:
    pass


_NO_DEFAULT = _NoDefault()


class Spillable(Generic[T]):
    """A dataclass field whose value may be on disk only; reading it then loads the value.

    A non-data descriptor, so a value in memory is a plain instance attribute (no call on read or
    write: the fast path pays nothing). `spill` removes that attribute and files the `OnDisk`
    under `_<name>`; a read then finds no instance attribute and reaches `__get__`, which loads.
    Assigning a value puts it back in memory.
    """

    def __init__(self, default: T | _NoDefault = _NO_DEFAULT) -> None:
        self.default = default
        self.name = self.slot = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj: object | None, owner: type | None = None) -> T:
        if obj is None:  # the dataclass asks the class for the field's default
            if isinstance(self.default, _NoDefault):
                raise AttributeError(self.name)
            return self.default
        value = obj.__dict__.get(self.slot)
        if type(value) is not OnDisk:
            raise AttributeError(self.name)
        loaded: T = value.load()
        return loaded

    if TYPE_CHECKING:  # for mypy only: the field takes values of T (at run time, plain instance attributes)

        def __set__(self, obj: object, value: T) -> None: ...


def spill(obj: object, name: str, where: OnDisk) -> None:
    """Put a `Spillable` field of `obj` on disk: `where` stands in for it until a value is assigned again."""
    obj.__dict__.pop(name, None)
    obj.__dict__["_" + name] = where


def on_disk(obj: object, name: str) -> OnDisk | None:
    """The `OnDisk` a `Spillable` field of `obj` stands on, or None while its value is in memory."""
    if name in obj.__dict__:
        return None
    value = obj.__dict__.get("_" + name)
    return value if type(value) is OnDisk else None


@dataclass
class SpillBudget:
    """How many bytes of job inputs and outputs (their JSON text) a store keeps in memory; the rest stays on disk.

    A value larger than `spill_bytes` is never kept; the others are kept while the total stays
    within `max_bytes`. None switches either test off. `held` is the running total. A value held in
    two forms (an input: its JSON text, for the worker, and the parsed dict) counts `copies` times.
    """

    max_bytes: int | None = 100_000_000
    spill_bytes: int | None = 100_000
    held: int = 0

    def fits(self, size: int, freed: int = 0) -> bool:
        """Whether a value of `size` bytes may be kept in memory, once `freed` bytes held now are given back."""
        return (self.spill_bytes is None or size <= self.spill_bytes) and (
            self.max_bytes is None or self.held - freed + size <= self.max_bytes
        )

    def take(self, size: int, copies: int = 1) -> bool:
        """Keep a value of `size` bytes in memory (counted `copies` times) or not (False: it stays on disk)."""
        if (self.spill_bytes is not None and size > self.spill_bytes) or (
            self.max_bytes is not None and self.held + copies * size > self.max_bytes
        ):
            return False
        self.held += copies * size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
