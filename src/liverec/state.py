"""Per-user online state: what the learners see of a user at request time.

Each user's recent events (oldest first), the items they interacted with (the seen
filter) and the interests they declared, plus a version per user that changes whenever
something ``recommend(user)`` depends on changes because of that user (response caches
key on it).

Two backends follow one protocol, :class:`UserStateStore`: :class:`OnlineState` keeps
every user in process memory and is rebuilt from the durable log on open and on every
fit; :class:`liverec.state_redis.RedisUserState` (fleet mode, ``Settings.state``) keeps
them in Redis, shared by every replica, so a replica's memory does not grow with the
number of users.

Examples
--------
>>> from liverec import Event
>>> st = OnlineState(history_length=2)
>>> for item, idx in (("a", 0), ("b", 1), ("c", 2)):
...     st.apply(Event(user="u", item=item, timestamp=0.0), idx)
>>> [e.item for e in st.state("u").history], sorted(st.seen("u"))
(['b', 'c'], [0, 1, 2])
>>> st.version("u") > st.version("nobody")
True
"""

from __future__ import annotations

from collections import deque
from contextlib import AbstractContextManager, contextmanager
from itertools import islice
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .models.base import UserState
from .types import Event

if TYPE_CHECKING:
    from .settings import Settings
    from .store import Store


#: One event of a user's history without the user: (item, kind, value, timestamp, id, context or None).
Row = tuple[str, str, float, float, str, "dict | None"]


class UserRecord:
    """One user's online state.

    A record restored from a snapshot keeps its history as plain rows until first
    used: building a million events costs seconds, and most users are not asked for
    right after a restart.

    >>> rec = UserRecord.from_rows("u", [("b1", "click", 1.0, 5.0, "e1", None)], [3], history_length=10)
    >>> [e.item for e in rec.history], rec.seen, rec.rows("u")
    (['b1'], {3}, (('b1', 'click', 1.0, 5.0, 'e1', None),))
    """

    __slots__ = ("_history", "_rows", "_user", "seen", "interests", "interests_text")

    def __init__(self, history: deque[Event], seen: set[int] | None = None,
                 interests: np.ndarray | None = None, interests_text: str | None = None) -> None:
        self._history, self._user = history, ""
        self._rows: tuple[Row, ...] | None = None  # a restored history not built yet
        self.seen = set() if seen is None else seen
        self.interests, self.interests_text = interests, interests_text

    @classmethod
    def from_rows(cls, user: str, rows: Sequence[Row], seen: Iterable[int], *, history_length: int) -> "UserRecord":
        rec = cls(deque(maxlen=history_length), set(seen))
        rec._rows, rec._user = tuple(rows), user
        return rec

    @property
    def history(self) -> deque[Event]:
        """Recent events, oldest first."""
        if self._rows is not None:
            u = self._user
            self._history.extend(Event(u, i, k, v, t, x, c or {}) for i, k, v, t, x, c in self._rows)
            self._rows = None
        return self._history

    @property
    def has_history(self) -> bool:
        return bool(self._rows) or bool(self._history)

    def rows(self, user: str) -> tuple[Row, ...]:
        """The history as plain rows (what a snapshot stores)."""
        if self._rows is not None:
            return self._rows
        return tuple((e.item, e.kind, e.value, e.timestamp, e.id, dict(e.context) or None) for e in self._history)


class UserStateStore(Protocol):
    """Where per-user online state lives (see the module docstring).

    ``shared`` stores outlive the process and are shared by replicas: they are not
    rebuilt by a fit (:meth:`fresh` gives a rebuild target that keeps nothing), and when
    one reports ``complete() is False`` (it lost its data, or never had it) the engine
    refills it from the durable log if :meth:`claim_refill` (one replica at a time), then
    calls :meth:`mark_complete`.
    """

    history_length: int
    shared: bool

    def __contains__(self, user: str) -> bool: ...
    def apply(self, e: Event, item: int | None) -> None: ...
    def set_interests(self, user: str, vector: np.ndarray | None, text: str | None) -> None: ...
    def forget(self, user: str) -> None: ...
    def version(self, user: str) -> int: ...
    def view(self, user: str) -> tuple[UserState, set[int]]: ...
    def state(self, user: str) -> UserState: ...
    def seen(self, user: str) -> set[int]: ...
    def interests_text(self, user: str) -> str | None: ...
    def batch(self) -> AbstractContextManager[None]: ...
    def fresh(self) -> "OnlineState": ...
    def adopt(self, rebuilt: "OnlineState", *, touch: bool = True) -> None: ...
    def records(self) -> Iterator[tuple[str, tuple[Row, ...], list[int]]]: ...
    def count(self) -> int | None: ...
    def complete(self) -> bool: ...
    def claim_refill(self) -> bool: ...
    def mark_complete(self) -> None: ...
    def close(self) -> None: ...


class OnlineState:
    """Every user's :class:`UserRecord`, and per-user versions, in process memory."""

    #: Lives and dies with the process: rebuilt by every fit.
    shared = False

    def __init__(self, history_length: int) -> None:
        self.history_length = history_length
        self.users: dict[str, UserRecord] = {}
        self._version: dict[str, int] = {}
        self._clock = 0

    def __contains__(self, user: str) -> bool:
        return user in self.users

    def get(self, user: str) -> UserRecord | None:
        return self.users.get(user)

    def ensure(self, user: str) -> UserRecord:
        u = self.users.get(user)
        if u is None:
            u = self.users[user] = UserRecord(deque(maxlen=self.history_length))
        return u

    def touch(self, user: str) -> None:
        """Mark that what ``recommend(user)`` sees changed."""
        self._clock += 1
        self._version[user] = self._clock

    def version(self, user: str) -> int:
        return self._version.get(user, 0)

    def apply(self, e: Event, item: int | None) -> None:
        """One event of ``e.user`` on dense item ``item`` (None: not in the catalog)."""
        self.touch(e.user)
        u = self.ensure(e.user)
        u.history.append(e)
        if item is not None:
            u.seen.add(item)

    def set_interests(self, user: str, vector: np.ndarray | None, text: str | None) -> None:
        self.touch(user)
        u = self.ensure(user)
        u.interests, u.interests_text = vector, text

    def seen(self, user: str) -> set[int]:
        u = self.users.get(user)
        return u.seen if u is not None else set()

    def view(self, user: str) -> tuple[UserState, set[int]]:
        """(what the learners see, the seen filter) in one read."""
        return self.state(user), self.seen(user)

    def interests_text(self, user: str) -> str | None:
        u = self.users.get(user)
        return u.interests_text if u is not None else None

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Writes inside are applied at once here (a shared store sends them together)."""
        yield

    def fresh(self) -> "OnlineState":
        """An empty state of the same shape: what a rebuild from the log fills, then :meth:`adopt`."""
        return OnlineState(self.history_length)

    def records(self) -> Iterator[tuple[str, tuple[Row, ...], list[int]]]:
        """(user, recent events as rows, seen dense indices) of every user with events: what a snapshot holds."""
        for name, r in self.users.items():
            if r.has_history:
                yield name, r.rows(name), sorted(r.seen)

    def count(self) -> int | None:
        return len(self.users)

    def complete(self) -> bool:
        """Always: the engine rebuilds this state itself on open and on every fit."""
        return True

    def claim_refill(self) -> bool:
        return True

    def mark_complete(self) -> None:
        pass

    def close(self) -> None:
        """Nothing to release: the state is this process's memory."""

    def state(self, user: str) -> UserState:
        """What the learners see of ``user`` right now."""
        u = self.users.get(user)
        if u is None:
            return UserState(user)
        return UserState(user, tuple(u.history), u.interests, u.interests_text)

    def forget(self, user: str) -> None:
        self.users.pop(user, None)
        self._version.pop(user, None)

    def adopt(self, rebuilt: "OnlineState", *, touch: bool = True) -> None:
        """Take the users of a state rebuilt from the log, keeping declared interests
        (they live outside the event log) and moving every version forward (``touch``;
        else each user keeps theirs: the rebuilt state holds the same events)."""
        for name, u in self.users.items():
            if u.interests is not None:
                nu = rebuilt.ensure(name)
                nu.interests, nu.interests_text = u.interests, u.interests_text
        self.users = rebuilt.users
        if touch:
            for name in rebuilt._version:
                self.touch(name)


def user_from_events(user: str, events: Iterable[Event], idx_of: Callable[[str], int | None], *,
                     history_length: int, interests: tuple[np.ndarray | None, str | None] = (None, None),
                     ) -> tuple[UserState, set[int]]:
    """One user's (state, seen dense indices) rebuilt from their events, oldest first.

    >>> st, seen = user_from_events("u", [Event("u", "a", timestamp=1.0), Event("u", "zz", timestamp=2.0)],
    ...                             {"a": 0}.get, history_length=5)
    >>> [e.item for e in st.history], seen
    (['a', 'zz'], {0})
    """
    one = OnlineState(history_length)
    for e in events:
        one.apply(e, idx_of(e.item))
    if interests[1]:
        one.set_interests(user, *interests)
    return one.view(user)


def open_user_state(settings: "Settings", idx_of: Callable[[str], int | None], *,
                    fallback: Callable[[str], tuple[UserState, set[int]]] | None = None) -> UserStateStore:
    """The user state the settings ask for: in Redis when ``settings.state`` is set (fleet
    mode), else in process memory. ``idx_of`` maps item ids to dense indices; ``fallback``
    rebuilds a user from the store while Redis cannot be reached.

    >>> from liverec.settings import Settings
    >>> type(open_user_state(Settings(), {}.get)).__name__
    'OnlineState'
    """
    if not settings.state:
        return OnlineState(settings.history_length)
    from .state_redis import RedisUserState

    return RedisUserState.open(settings.state, prefix=settings.state_prefix,
                               history_length=settings.history_length, idx_of=idx_of, fallback=fallback)


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def refill_from_log(state: UserStateStore, store: "Store", idx_of: Callable[[str], int | None],
                    encode: Callable[[list[str]], np.ndarray], *, chunk: int = 1000) -> int:
    """Write every user of ``store``'s log (events, then declared interests encoded with
    ``encode``) into a shared ``state``; returns the events written.

    Writes are idempotent, so replicas recording meanwhile are safe. A user erased by another
    replica while a chunk was between read and write would come back: once the store's
    erasure counter has moved, each chunk's users without events or interests in the store
    are forgotten again after it is written.
    """
    erasures, n = store.counter("erasures"), 0

    def written(users: set[str]) -> None:
        if store.counter("erasures") != erasures:
            for u in users:
                if store.get_interests(u) is None and not store.user_events(u):
                    state.forget(u)

    for part in _chunks((e for _, e in store.iter_events()), chunk):
        with state.batch():
            for e in part:
                state.apply(e, idx_of(e.item))
        written({e.user for e in part})
        n += len(part)
    for part in _chunks(store.iter_interests(), 256):
        vecs = encode([t for _, t in part])
        with state.batch():
            for (user, text), v in zip(part, vecs):
                state.set_interests(user, v, text)
        written({u for u, _ in part})
    return n
