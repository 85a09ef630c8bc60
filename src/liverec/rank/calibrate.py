"""How many candidates each source retrieves: the smallest count that serves the exact lists.

Above the index's exact threshold each source retrieves its best ``n`` items and only their
union is scored (two-stage serving). A larger ``n`` costs time on every request; a smaller
one can drop an item the exact path (every item scored) would have served. How small ``n``
can be depends on the catalog and on how the users' tastes spread over it, so the engine
measures it on its own users rather than fixing it: after each fit (and at a restore) it
takes up to :data:`USERS` users with recent events, serves each the exact list and the
two-stage lists for the counts of :data:`GRID`, and keeps the smallest count whose served
recall@k against the exact lists reaches ``Settings.candidates_recall`` (default 0.98);
none reaching it, the largest. ``Settings.candidates_per_source`` set to a number turns
this off.

One user's comparison runs under the engine lock (it reads the learners), the next after
the lock was released, so requests are served in between; an exact list costs one pass
over the catalog per source (at a million items ~0.2 s on 2 cores).

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

from ..models.base import UserState

#: Candidate counts tried, smallest first (the first reaching the target is kept).
GRID = (50, 100, 200, 300, 500)

#: The count used until a calibration has run (and below the exact threshold it does not matter).
DEFAULT = 300

#: Users a calibration serves (the most recent distinct users of the log).
USERS = 32


@dataclass(frozen=True)
class CandidateCalibration:
    """The outcome of one calibration: the count kept and what each count tried served.

    ``recall``: count -> mean recall@``k`` of the two-stage lists against the exact lists
    over ``users`` users (counts past the first that reached ``target`` are not tried).
    """

    chosen: int
    recall: Mapping[int, float]
    users: int
    k: int
    target: float
    items: int
    seconds: float

    def to_json(self) -> dict:
        return {"chosen": self.chosen, "recall": {str(n): round(r, 4) for n, r in self.recall.items()},
                "users": self.users, "k": self.k, "target": self.target, "items": self.items,
                "seconds": round(self.seconds, 3)}


def choose(recall: Mapping[int, float], *, target: float) -> int:
    """The smallest count whose recall reaches ``target``; else the largest tried."""
    ok = [n for n, r in sorted(recall.items()) if r >= target]
    return ok[0] if ok else max(recall)


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
        if exact:
            users.append((state, seen, exact))
    if not users:
        return None
    recall: dict[int, float] = {}
    for n in sorted(grid):
        hits = 0.0
        for state, seen, exact in users:
            with lock:
                got = serve(state, seen, n)
            hits += len(exact.intersection(got)) / len(exact)
        recall[n] = hits / len(users)
        if recall[n] >= target:
            break
    return CandidateCalibration(choose(recall, target=target), recall, len(users), k, target, items,
                                time.perf_counter() - t0)


class Calibrator:
    """Runs :func:`calibrate` in a thread of its own when asked; one run at a time.

    ``run()`` makes one calibration (or returns None when none is due); ``request()`` starts
    it in the background (a request while one runs makes it run once more after);
    ``wait()`` joins it.
    """

    def __init__(self, run: Callable[[], CandidateCalibration | None]) -> None:
        self._run = run
        self._thread: threading.Thread | None = None
        self._again = False
        self._guard = threading.Lock()
        #: The last failure's message (the previous count keeps serving), else None.
        self.error: str | None = None

    def request(self) -> None:
        with self._guard:
            if self._thread is not None:  # running: once more after it
                self._again = True
                return
            self._thread = threading.Thread(target=self._loop, name="liverec-calibrate", daemon=True)
            self._thread.start()

    def wait(self, timeout: float | None = None) -> None:
        t = self._thread
        if t is not None:
            t.join(timeout)

    def _loop(self) -> None:
        while True:
            try:
                self._run()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - a failed calibration keeps the previous count
                self.error = f"{type(exc).__name__}: {exc}"
            with self._guard:
                if not self._again:
                    self._thread = None
                    return
                self._again = False
