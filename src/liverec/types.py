"""The value objects that cross liverec's public API: items, events, recommendations.

Frozen dataclasses: cheap, hashable where it matters, never mutated by the engine.

Examples
--------
>>> from liverec import Item, Event
>>> Item(id="b1", text="The Hobbit by J.R.R. Tolkien", attributes={"year": 1937}).id
'b1'
>>> Event(user="u1", item="b1", kind="click").value
1.0
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

#: Built-in event kinds and their default feedback weights. Negative kinds push the
#: user's profile away from the item. ``rating`` is special: its weight is derived
#: from ``value`` (stars) around a neutral point (see ``FeedbackConfig``).
DEFAULT_KIND_WEIGHTS: dict[str, float] = {
    "view": 0.3,
    "click": 1.0,
    "like": 2.0,
    "add_to_cart": 2.0,
    "purchase": 3.0,
    "rating": 1.0,
    "skip": -0.3,
    "dislike": -2.0,
}


def new_id() -> str:
    """A new unique id, 32 hex digits, that sorts by creation time: a UUID version 7
    (RFC 9562: 48 bits of Unix milliseconds, then 74 random bits).

    Event ids and request ids are indexed in the store; ids that grow with time are
    appended at the end of those indexes, where random ones (UUID 4) land on a random page
    of a large index every time, which on a store of millions of rows costs a page read
    and write per row.

    >>> a, b = new_id(), new_id()
    >>> len(a), a != b, a[12], int(a[16], 16) >> 2
    (32, True, '7', 2)
    """
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")  # 80 bits: 74 used
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (rand >> 68) << 64 | 0b10 << 62 | rand & (2**62 - 1)
    return f"{value:032x}"


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item: an id, the text a language model will read, and attributes.

    ``attributes`` are free JSON-able key/values usable in filters
    (``recommend(..., filters={"year": 1937})``) and in the text template.
    """

    id: str
    text: str = ""
    attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One piece of feedback: ``user`` did ``kind`` to ``item`` at ``timestamp``.

    ``id`` makes ingestion idempotent (a repeated id is stored once); a new one
    is assigned when omitted (time-ordered: :func:`new_id`). ``timestamp`` is Unix seconds (defaults to now).
    ``value`` is the stars for ``rating`` and a multiplier for other kinds.
    """

    user: str
    item: str
    kind: str = "click"
    value: float = 1.0
    timestamp: float = field(default_factory=time.time)
    id: str = field(default_factory=new_id)
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an item was recommended.

    ``source`` is the learner (``"content"``, ``"trending"``, ...), ``contribution``
    its share of the fused score, ``because`` the history items that drove it and
    ``text`` a sentence a person can read.
    """

    source: str
    contribution: float
    text: str
    because: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One recommended item with its fused score, propensity and reasons."""

    item: str
    score: float
    reasons: tuple[Reason, ...] = ()
    propensity: float = 1.0
    position: int = 0

    @property
    def explanation(self) -> str:
        """All reasons as one readable sentence."""
        return "; ".join(r.text for r in self.reasons if r.text)


#: What logging a served item as an impression needs: (item, position, score, propensity).
#: Plain tuples of numbers and strings: a response cache holds one per cached item, and
#: Python's cyclic collector stops tracking such tuples (Recommendation objects it would
#: walk on every full collection, stalling requests; 20,000 cached lists are ~10^6 objects).
ServedRow = tuple[str, int, float, float]


def served_rows(recs: Sequence[Recommendation]) -> tuple[ServedRow, ...]:
    """The :data:`ServedRow` of each recommendation.

    >>> served_rows([Recommendation(item="b1", score=0.5, propensity=1.0, position=0)])
    (('b1', 0, 0.5, 1.0),)
    """
    return tuple((r.item, r.position, r.score, r.propensity) for r in recs)


def is_finite_number(x: Any) -> bool:
    """True for real, finite numbers (bools excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
