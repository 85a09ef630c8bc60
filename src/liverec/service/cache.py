"""Per-user response cache: answers that die with the user's next change.

An entry is stored with the user's version (the engine's ``user_version``, which
moves with every event learned, interests change, erasure and re-fit) and is served
only while that version is unchanged and the entry is younger than ``ttl`` seconds.
Users are evicted least recently used once more than ``size`` entries are held.

Examples
--------
>>> versions = {"u1": (1,)}
>>> cache = ResponseCache(size=100, ttl=60.0, version_of=versions.__getitem__)
>>> v = versions["u1"]
>>> cache.put("u1", ("k", 10), v, b"[]", [])
>>> cache.get("u1", ("k", 10))
(b'[]', [])
>>> versions["u1"] = (2,)  # the user clicked something: the entry is stale
>>> cache.get("u1", ("k", 10)) is None
True
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Sequence

Version = tuple[int, ...]


class ResponseCache:
    """Thread-safe LRU of ``(payload bytes, served rows)`` per (user, request key).

    The rows (:func:`~liverec.types.served_rows`) are what a hit logs as impressions; they
    are plain tuples, not Recommendation objects, so a full cache adds nothing the cyclic
    garbage collector walks (≈ 50 objects per cached list otherwise: full collections of
    70–110 ms every few seconds under load, measured)."""

    def __init__(self, *, size: int, ttl: float, version_of: Callable[[str], Version]) -> None:
        self.size, self.ttl, self.version_of = size, ttl, version_of
        self._users: OrderedDict[str, dict[Hashable, tuple[Version, float, bytes, Sequence[Any]]]] = OrderedDict()
        self._n = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    def get(self, user: str, key: Hashable) -> tuple[bytes, Sequence[Any]] | None:
        """The cached (payload, rows), or None when absent, stale or expired."""
        if self.size == 0:
            return None
        with self._lock:
            entries = self._users.get(user)
            hit = entries.get(key) if entries else None
            if hit is None:
                return None
            version, born, payload, rows = hit
            if version != self.version_of(user) or time.monotonic() - born > self.ttl:
                del entries[key]  # type: ignore[union-attr]
                self._n -= 1
                return None
            self._users.move_to_end(user)
            return payload, rows

    def put(self, user: str, key: Hashable, version: Version, payload: bytes, rows: Sequence[Any]) -> None:
        """Keep an answer computed at ``version``; dropped if the user has moved on since."""
        if self.size == 0 or version != self.version_of(user):
            return
        with self._lock:
            entries = self._users.setdefault(user, {})
            if key not in entries:
                self._n += 1
            entries[key] = (version, time.monotonic(), payload, rows)
            self._users.move_to_end(user)
            while self._n > self.size and self._users:
                _, dropped = self._users.popitem(last=False)
                self._n -= len(dropped)

    def forget(self, user: str) -> int:
        """Drop every entry of ``user``; returns how many there were."""
        with self._lock:
            entries = self._users.pop(user, None) or {}
            self._n -= len(entries)
        return len(entries)

    def __contains__(self, user: str) -> bool:
        with self._lock:
            return user in self._users
