"""Comparing what two engines serve when one learned event by event and the other in batch."""

from __future__ import annotations

from typing import Any


class Served(dict):
    """User -> [(item, score), ...]. Equal to another when every user gets the same items in the
    same order with scores within ``TOL``: learners keep per-user vectors in single precision,
    so learning event by event and a batch fit agree to ~1e-7, not bit for bit.

    >>> Served(u=[("a", 0.5)]) == {"u": [("a", 0.5 + 1e-7)]}, Served(u=[("a", 0.5)]) == {"u": [("b", 0.5)]}
    (True, False)
    """

    TOL = 1e-4

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, dict) or self.keys() != other.keys():
            return False
        return all(
            [i for i, _ in self[u]] == [i for i, _ in other[u]]
            and all(abs(a - b) <= self.TOL for (_, a), (_, b) in zip(self[u], other[u]))
            for u in self
        )

    __hash__ = None  # type: ignore[assignment]
