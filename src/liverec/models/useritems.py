"""Each user's items and their strengths, packed: the per-user table several learners keep.

ItemKNN, EASE and TF-IDF keep, per user, the items the user interacted with and how
strongly (ALS the same per factor row); every replica holds it for every user. As a dict
of dicts it cost ≈ 0.3–0.6 KB a user at five items (a dict per user, a float object per
strength); here a user is one ``bytearray`` holding the items (int64), in the order they
were first added (what the dicts iterated in), then their strengths (float64): ≈ 0.15 KB
at five items. A ``bytearray`` (not numpy) because a user's row is small and changes one
item at a time: an item is found by ``bytearray.find`` of its eight bytes (a byte search
in C, 3x faster than ``array.index``, which makes a Python float of every entry it
compares: 1.3 vs 3.8 µs at 130 items), and numpy reads it without a copy
(``np.frombuffer``).

Examples
--------
>>> ui = UserItems()
>>> ui.set("u", 7, 1.0); ui.set("u", 2, 0.5); ui.set("u", 7, 2.0)
>>> idx, x = ui.get("u")
>>> idx.tolist(), x.tolist(), ui.strength("u", 2), ui.strength("u", 3), len(ui), "u" in ui
([7, 2], [2.0, 0.5], 0.5, 0.0, 1, True)
"""

from __future__ import annotations

import struct
from typing import Callable, Hashable, Iterator, Sequence

import numpy as np

_ITEM, _VALUE = struct.Struct("<q"), struct.Struct("<d")


def _find(row: bytearray, item: int) -> int:
    """Byte offset of ``item`` among ``row``'s items, -1 when absent (a match must start on
    an item's boundary: the bytes of two neighbours can look like a third)."""
    key, end = _ITEM.pack(item), len(row) >> 1
    at = row.find(key, 0, end)
    while at > 0 and at & 7:
        at = row.find(key, at + 1, end)
    return at


class UserItems:
    """``user -> {item: strength}``, one packed row per user, items in the order first added.

    Keys are any hashable (user ids; ALS uses factor rows). :meth:`get` gives numpy arrays
    in that order, :meth:`get_sorted` with the items ascending.
    """

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[Hashable, bytearray] = {}

    @classmethod
    def from_pairs(cls, users: Sequence[Hashable], uidx: np.ndarray, items: np.ndarray, x: np.ndarray) -> "UserItems":
        """From unique (user, item) pairs grouped by user index (``interaction_pairs`` sorts them by
        user, then item): pair ``p`` is user ``users[uidx[p]]``'s item ``items[p]`` with strength ``x[p]``.

        >>> ui = UserItems.from_pairs(["a", "b"], np.array([0, 0, 1]), np.array([3, 5, 1]), np.array([1.0, 2.0, 1.0]))
        >>> [(u, ui.get(u)[0].tolist()) for u in ui]
        [('a', [3, 5]), ('b', [1])]
        """
        out = cls()
        if len(items):
            bounds = np.flatnonzero(np.diff(uidx)) + 1
            for a, b in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [len(items)]]).tolist()):
                out.put(users[int(uidx[a])], items[a:b], x[a:b])
        return out

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, user: Hashable) -> bool:
        return user in self._rows

    def __iter__(self) -> Iterator[Hashable]:
        return iter(self._rows)

    def count(self, user: Hashable) -> int:
        """How many items ``user`` has (0 for an unknown user)."""
        row = self._rows.get(user)
        return 0 if row is None else len(row) >> 4

    def get(self, user: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        """(items as int64, strengths as float64), in the order first added; None for a user with none.
        Both are new arrays (the caller may keep or change them)."""
        row = self._rows.get(user)
        if not row:
            return None
        n = len(row) >> 4
        return (np.frombuffer(row, dtype=np.int64, count=n).copy(),
                np.frombuffer(row, dtype=np.float64, count=n, offset=n << 3).copy())

    def get_sorted(self, user: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`get` with the items ascending: sums over them then run in the same order
        however the row was reached (event by event or from a fit).

        >>> ui = UserItems(); ui.set("u", 7, 1.0); ui.set("u", 2, 0.5)
        >>> [a.tolist() for a in ui.get_sorted("u")]
        [[2, 7], [0.5, 1.0]]
        """
        got = self.get(user)
        if got is None:
            return None
        order = np.argsort(got[0], kind="stable")
        return got[0][order], got[1][order]

    def strength(self, user: Hashable, item: int) -> float:
        """``user``'s strength on ``item`` (0.0 when they have none)."""
        row = self._rows.get(user)
        if row is None:
            return 0.0
        at = _find(row, item)
        return 0.0 if at < 0 else _VALUE.unpack_from(row, (len(row) >> 1) + at)[0]

    def change(self, user: Hashable, item: int, to: Callable[[float], float]
               ) -> tuple[float, float, np.ndarray, np.ndarray] | None:
        """Set ``user``'s strength on ``item`` to ``to(old)`` (``old`` 0.0 when the item is
        new) and return what an update of the user's pairs needs: (old, new, the user's
        other items, their strengths), read in the same search of the row as the write;
        None, with nothing written, when the strength stays the same.

        >>> ui = UserItems(); ui.set("u", 7, 1.0); ui.set("u", 2, 0.5)
        >>> a, b, others, x = ui.change("u", 7, lambda old: old + 2.0)
        >>> a, b, others.tolist(), x.tolist(), ui.get("u")[1].tolist()
        (1.0, 3.0, [2], [0.5], [3.0, 0.5])
        >>> ui.change("u", 2, lambda old: old) is None, ui.change("new", 1, lambda old: 1.0)[:2]
        (True, (0.0, 1.0))
        """
        row = self._rows.get(user)
        if row is None:
            new = to(0.0)
            if new == 0.0:
                return None
            self._rows[user] = bytearray(_ITEM.pack(item) + _VALUE.pack(new))
            return 0.0, new, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        half = len(row) >> 1
        n = half >> 3
        at = _find(row, item)
        old = 0.0 if at < 0 else _VALUE.unpack_from(row, half + at)[0]
        new = to(old)
        if new == old:
            return None
        if at < 0:
            others = np.frombuffer(row, dtype=np.int64, count=n).copy()
            x = np.frombuffer(row, dtype=np.float64, count=n, offset=half).copy()
            row[half:half] = _ITEM.pack(item)
            row += _VALUE.pack(new)
            return old, new, others, x
        k = at >> 3
        items = np.frombuffer(row, dtype=np.int64, count=n)
        strengths = np.frombuffer(row, dtype=np.float64, count=n, offset=half)
        others = np.concatenate((items[:k], items[k + 1 :]))
        x = np.concatenate((strengths[:k], strengths[k + 1 :]))
        del items, strengths  # views of the row: released before it is written
        _VALUE.pack_into(row, half + at, new)
        return old, new, others, x

    def set(self, user: Hashable, item: int, value: float) -> None:
        """Set ``user``'s strength on ``item`` (adding the item when new)."""
        row = self._rows.get(user)
        if row is None:
            self._rows[user] = bytearray(_ITEM.pack(item) + _VALUE.pack(value))
            return
        at = _find(row, item)
        if at >= 0:
            _VALUE.pack_into(row, (len(row) >> 1) + at, value)
            return
        half = len(row) >> 1
        row[half:half] = _ITEM.pack(item)
        row += _VALUE.pack(value)

    def put(self, user: Hashable, items: np.ndarray, strengths: np.ndarray) -> None:
        """Replace ``user``'s row with ``items`` (distinct) and their ``strengths``, in that order
        (none: the user is removed).

        >>> ui = UserItems(); ui.put("u", np.array([4, 1]), np.array([1.0, 3.0])); ui.get("u")[0].tolist()
        [4, 1]
        """
        if len(items) == 0:
            self._rows.pop(user, None)
            return
        self._rows[user] = bytearray(np.asarray(items, dtype=np.int64).tobytes()
                                     + np.asarray(strengths, dtype=np.float64).tobytes())

    def pop(self, user: Hashable) -> tuple[np.ndarray, np.ndarray] | None:
        """Remove ``user``; what they had (as :meth:`get`), or None."""
        got = self.get(user)
        self._rows.pop(user, None)
        return got

    def items(self) -> Iterator[tuple[Hashable, dict[int, float]]]:
        """``(user, {item: strength})`` for every user, as plain dicts (to inspect; learners read :meth:`get`).

        >>> ui = UserItems(); ui.set("u", 7, 1.0)
        >>> dict(ui.items())
        {'u': {7: 1.0}}
        """
        for user in self._rows:
            got = self.get(user)
            assert got is not None  # a kept row is never empty
            yield user, dict(zip(got[0].tolist(), got[1].tolist()))

