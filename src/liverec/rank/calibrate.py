"""How many candidates each source retrieves: the smallest count that serves the exact lists.

Above the index's exact threshold each source retrieves its best ``n`` items and only their
union is scored (two-stage serving). A larger ``n`` costs time on every request; a smaller
one can drop an item the exact path (every item scored) would have served. How small ``n``
can be depends on the catalog and on how the users' tastes spread over it, so the engine
measures it on its own users rather than fixing it: after each fit (and at a restore) it
takes up to :data:`USERS` users with recent events, serves each the exact list and the
two-stage lists for the counts of :data:`GRID`, and keeps the smallest count whose served
recall@k against the exact lists reaches ``Settings.candidates_recall`` (default 0.98),
less one standard error over the users (a sample of them is measured, not all); none
reaching it, the largest. ``Settings.candidates_per_source`` set to a number turns
this off.

It runs in the thread of the fit or restore that swapped the learners in (a background
fit's thread for a re-fit), after the swap: one user's comparison under the engine lock
(it reads the learners), the next after the lock was released, so requests are served in
between; an exact list costs one pass over the catalog per source (at a million items
~0.2 s on 2 cores).

Examples
--------
>>> choose({50: 0.93, 100: 0.985, 200: 1.0}, target=0.98)
100
>>> choose({50: 0.90, 100: 0.95}, target=0.98)   # none reaches it: the largest tried
100
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from ..models.base import UserState
from ..store import Store

#: Candidate counts tried, smallest first (the first reaching the target is kept).
GRID = (50, 100, 200, 300, 500)

#: The count used until a calibration has run (and below the exact threshold it does not matter).
DEFAULT = 300

#: Users a calibration serves (the most recent distinct users of the log).
USERS = 32

#: Length of the lists compared (recall@K).
K = 10

#: Pause after each list served under the lock: a request waiting for the lock takes it
#: then (a thread that releases a lock and asks for it again at once would keep it).
YIELD_S = 0.001


@dataclass(frozen=True)
class CandidateCalibration:
    """The outcome of one calibration: the count kept and what each count tried served.

    ``recall``: count -> mean recall@``k`` of the two-stage lists against the exact lists
    over ``users`` users; ``bound``: that mean less one standard error, what must reach
    ``target`` (counts past the first that reached it are not tried).
    """

    chosen: int
    recall: Mapping[int, float]
    bound: Mapping[int, float]
    users: int
    k: int
    target: float
    items: int
    seconds: float

    def to_json(self) -> dict:
        return {"chosen": self.chosen, "recall": {str(n): round(r, 4) for n, r in self.recall.items()},
                "bound": {str(n): round(r, 4) for n, r in self.bound.items()}, "users": self.users, "k": self.k,
                "target": self.target, "items": self.items, "seconds": round(self.seconds, 3)}


def choose(recall: Mapping[int, float], *, target: float) -> int:
    """The smallest count whose recall (its bound) reaches ``target``; else the largest tried."""
    ok = [n for n, r in sorted(recall.items()) if r >= target]
    return ok[0] if ok else max(recall)


def recent_users(store: Store, n: int) -> list[str]:
    """Up to ``n`` distinct users of the log's most recent events (the last ``50 n``), latest first."""
    head = store.last_event_seq()
    last: dict[str, None] = {}
    for _, e in store.iter_events(after_seq=max(0, head - 50 * n)):
        last.pop(e.user, None)
        last[e.user] = None
    return list(reversed(last))[:n]


#: Serves one user's list: (state, seen, candidates per source or None = every item) -> item rows.
ServeFn = Callable[[UserState, set, "int | None"], Sequence[int]]


def calibrate(
    views: Sequence[Callable[[], tuple[UserState, set]]], serve: ServeFn, lock: threading.RLock, *,
    target: float, k: int, items: int, grid: Sequence[int] = GRID,
) -> CandidateCalibration | None:
    """Measure served recall@``k`` per count of ``grid`` (see the module docstring).

    ``views`` give each user's (state, seen items) when called (under ``lock``); ``serve``
    returns a list of item rows. None when no user has an exact list to compare with.
    """
    t0 = time.perf_counter()
    users: list[tuple[UserState, set, set[int]]] = []
    for view in views:
        with lock:
            state, seen = view()
            exact = set(serve(state, seen, None))
        time.sleep(YIELD_S)
        if exact:
            users.append((state, seen, exact))
    if not users:
        return None
    recall: dict[int, float] = {}
    bound: dict[int, float] = {}
    for n in sorted(grid):
        per_user = []
        for state, seen, exact in users:
            with lock:
                got = serve(state, seen, n)
            time.sleep(YIELD_S)
            per_user.append(len(exact.intersection(got)) / len(exact))
        # A sample of users: what must reach the target is the mean less its standard error.
        recall[n] = float(np.mean(per_user))
        bound[n] = recall[n] - (float(np.std(per_user, ddof=1)) / len(per_user) ** 0.5 if len(per_user) > 1 else 0.0)
        if bound[n] >= target:
            break
    return CandidateCalibration(choose(bound, target=target), recall, bound, len(users), k, target, items,
                                time.perf_counter() - t0)
