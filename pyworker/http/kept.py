"""A small table of results kept for reuse: bounded, and started afresh when full.

The tables here keep what repeats from one message to the next (heads,
sets of header fields). Emptying a full table at once needs no bookkeeping
on each look-up, and costs one miss per entry afterwards: a table fills
only when what comes stops repeating (new shapes, or a client that sends
ever new heads), and then its old entries are worth little.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class KeptTable(Generic[K, V]):
    """Values by key, at most `max_entries` of them; a value is never None."""

    __slots__ = ("_entries", "max_entries", "hits")

    def __init__(self, max_entries: int) -> None:
        self._entries: dict[K, V] = {}
        self.max_entries = max_entries
        self.hits = 0  # look-ups answered from the table

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, key: K) -> V | None:
        """The value kept under `key`, or None."""
        found = self._entries.get(key)
        if found is not None:
            self.hits += 1
        return found

    def keep(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = value
