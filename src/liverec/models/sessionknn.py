"""Session neighbours: what people chose in the sittings most like this user's latest one.

The vector session-based kNN (V-SKNN; Ludewig & Jannach 2018): every user's positive
events are cut into sittings (a new one after ``gap_minutes`` without events, or after
``max_length`` items). A user is asked about by their last ``history`` items, the most
recent weighing most (linear: the newest 1, the oldest 1/history); a sitting of another
user that holds some of them is a neighbour, as similar as the weights of the items they
share; the ``neighbours`` most similar of the ``sample`` latest sittings holding each of
the user's items vote for their items::

    sim(n) = sum_{a in last items, a in n} w(a)        score(i) = sum_{n in top, i in n} sim(n)

Learning one event costs O(1) (append to its sitting and to its item's list); a score
reads at most ``history * sample`` sitting ids and ``neighbours * max_length`` items,
whatever the catalog's size, so ``candidates`` is sublinear. Where the transition
source reads which item came right after which, this one reads which items share a
sitting, order aside, with the latest sittings first.
"""

from __future__ import annotations

from array import array
from typing import Any, ClassVar, Self, Sequence

import numpy as np

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .pop import recent_positive
from .retrieval import best


@register
class SessionKNN(Learner):
    """Items chosen in the sittings that share most with the user's latest items.

    Parameters
    ----------
    history : int
        How many of the user's last items ask for neighbours.
    neighbours : int
        How many most similar sittings vote.
    sample : int
        How many of the latest sittings holding each of the user's items are compared.
    gap_minutes : float
        A pause this long ends a user's sitting (default a day: what one person chose on
        one day; 60 is the usual web-session cut).
    max_length : int
        A sitting holds at most this many items (a longer run starts a new one).
    feedback : FeedbackConfig, optional
        Which events are positive (weight > 0); only those enter sittings.
    seed : int
        Unused (deterministic); kept for the protocol.
    user_tables : bool
        Keep each user's open sitting and last items and learn each event into the
        sittings as it comes (default), or keep nothing per user learned online: a request
        reads the user's last items from their recent events (``UserState.history``) and
        the sittings are the fit's until the next fit. The fit's users keep their code
        (their own sittings are not their neighbours, and an erasure removes them).

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user="x", item="a", timestamp=0.0), Event(user="x", item="b", timestamp=60.0)]
    >>> m = SessionKNN().fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="y", item="a", timestamp=100.0))
    >>> m.score(UserState("y"), cat.select(["b", "c"])).round(3).tolist()
    [1.0, 0.0]
    >>> m.because(UserState("y"), cat.get_idx("b"))
    ('a',)
    """

    name: ClassVar[str] = "sessionknn"
    users_from_events: ClassVar[bool] = True
    #: Without tables the sittings are the fit's until the next fit.
    users_from_events_exact: ClassVar[bool] = False
    item_side_at_fits_without_tables: ClassVar[bool] = True
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {"history": (3, 10), "neighbours": (50, 200), "gap_minutes": (60.0, 1440.0)}

    def __init__(
        self,
        *,
        history: int = 10,
        neighbours: int = 100,
        sample: int = 500,
        gap_minutes: float = 1440.0,
        max_length: int = 50,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.history = history
        self.neighbours = neighbours
        self.sample = sample
        self.gap_minutes = gap_minutes
        self.max_length = max_length
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    # ------------------------------------------------------------------ learning
    def fit(self, log: InteractionLog) -> Self:
        self.catalog_ = log.catalog
        self.fitted_ = True
        #: Per sitting: its items (in order, distinct) and its user's code (-1: forgotten).
        self.items_: list[array[int]] = []
        self.owner_: array[int] = array("i")
        #: Per item: the sittings holding it, oldest first.
        self.holders_: list[array[int]] = []
        #: Per user: their code, open sitting, its last timestamp and their last items.
        self.code_: dict[str, int] = {}
        self.open_: dict[str, tuple[int, float]] = {}
        self.recent_: dict[str, array[int]] = {}
        self.learned_ = 0  # events learned and users forgotten: what a request's answer depends on
        self._grow(len(log.catalog))
        order = np.argsort(log.timestamps, kind="stable")
        keep = order[(log.item_idx[order] >= 0) & (self._fb.weights(log.kinds[order], log.values[order]) > 0)]
        users, items, times = log.users[keep], log.item_idx[keep], log.timestamps[keep]
        for u, i, t in zip(users.tolist(), items.tolist(), times.tolist()):
            self._add(str(u), int(i), float(t))
        if not self.user_tables:  # what only learning the next event of a user needs
            self.open_, self.recent_ = {}, {}
        return self

    def _grow(self, n: int) -> None:
        while len(self.holders_) < n:
            self.holders_.append(array("i"))

    def _add(self, user: str, i: int, t: float) -> None:
        self.learned_ += 1
        code = self.code_.setdefault(user, len(self.code_))
        opened = self.open_.get(user)
        if opened is None or abs(t - opened[1]) > self.gap_minutes * 60.0 or len(self.items_[opened[0]]) >= self.max_length:
            s = len(self.items_)
            self.items_.append(array("i"))
            self.owner_.append(code)
        else:
            s = opened[0]
        self.open_[user] = (s, t)
        if i not in self.items_[s]:
            self.items_[s].append(i)
            self._grow(i + 1)
            self.holders_[i].append(s)
        recent = self.recent_.setdefault(user, array("i"))
        recent.append(i)
        if len(recent) > self.history:
            del recent[: len(recent) - self.history]

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        if not self.user_tables:  # the sittings are the fit's; the user is read from their events
            return
        i = self.catalog_.get_idx(event.item)
        if i is None or self._fb.weight(event.kind, event.value) <= 0:
            return
        self._add(event.user, i, float(event.timestamp))

    def forget(self, user: str, events: Sequence[Event]) -> None:
        """Remove the user's sittings (from every item's list) and their recent items."""
        self.recent_.pop(user, None)
        self.open_.pop(user, None)
        code = self.code_.pop(user, None)
        self.learned_ += 1
        if code is None:
            return
        for s in np.flatnonzero(np.frombuffer(self.owner_, dtype=np.int32) == code).tolist():
            for i in self.items_[s]:
                self.holders_[i].remove(s)
            self.items_[s] = array("i")
            self.owner_[s] = -1

    # ------------------------------------------------------------------- scoring
    def learned_state(self) -> dict[str, Any]:
        return {k: v for k, v in super().learned_state().items() if k != "_asked"}

    def _votes(self, user: UserState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(items, their scores) over the neighbours' items, with (the neighbours, their
        similarity); None when the user has no recent item or no neighbour. A request asks
        three times (candidates, scores, reasons): the last answer is kept until the next
        event or erasure (without tables: on the request's state)."""
        if not self.user_tables:
            key = ("sessionknn-votes", id(self), self.learned_)
            if key not in user.derived:
                user.derived[key] = (self, self._find_votes(user))  # holding the learner keeps its id its own
            return user.derived[key][1]
        asked = getattr(self, "_asked", None)
        if asked is not None and asked[0] == user.user and asked[1] == self.learned_:
            return asked[2]
        got = self._find_votes(user)
        self._asked = (user.user, self.learned_, got)
        return got

    def _last(self, user: UserState) -> list[int]:
        """The user's last ``history`` items, oldest first (kept, or from their recent events)."""
        if not self.user_tables:
            return recent_positive(user, self.catalog_, self._fb)[-self.history :]
        return list(self.recent_.get(user.user, ()))[-self.history :]

    def _find_votes(self, user: UserState) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        last = self._last(user)
        if not last:
            return None
        weight: dict[int, float] = {}
        for p, a in enumerate(last):  # oldest first: a repeated item keeps its latest weight
            weight[a] = (p + 1) / len(last)
        sids, ws = [], []
        for a, w in weight.items():
            if a < len(self.holders_):
                h = np.frombuffer(self.holders_[a], dtype=np.int32)[-self.sample :]
                sids.append(h)
                ws.append(np.full(len(h), w))
        if not sids:
            return None
        found, inv = np.unique(np.concatenate(sids), return_inverse=True)
        sim = np.bincount(inv, weights=np.concatenate(ws), minlength=len(found))
        mine = self.code_.get(user.user, -1)
        other = np.frombuffer(self.owner_, dtype=np.int32)[found] != mine
        found, sim = found[other], sim[other]
        if not len(found):
            return None
        top = np.lexsort((-found, -sim))[: self.neighbours]  # most similar, then the latest
        found, sim = found[top], sim[top]
        held = [np.frombuffer(self.items_[s], dtype=np.int32) for s in found.tolist()]
        items, inv = np.unique(np.concatenate(held), return_inverse=True)
        votes = np.bincount(inv, weights=np.repeat(sim, [len(h) for h in held]), minlength=len(items))
        return items.astype(np.int64), votes, found, sim

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        out = np.zeros(len(items), dtype=np.float64)
        got = self._votes(user)
        if got is None:
            return out
        voted, votes = got[0], got[1]
        if len(items) * 4 >= len(self.catalog_) and len(voted):  # most of the catalog: a scatter and a gather
            dense = np.zeros(max(int(voted[-1]), int(items.idx.max())) + 1, dtype=np.float64)
            dense[voted] = votes
            return dense[items.idx]
        pos = np.searchsorted(voted, items.idx)
        pos = np.minimum(pos, len(voted) - 1)
        hit = voted[pos] == items.idx
        out[hit] = votes[pos[hit]]
        return out

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """The ``n`` best-scored live items (dense indices, best first): only the
        neighbours' items are read (no catalog-sized work)."""
        self._check_fitted()
        got = self._votes(user)
        if got is None or n <= 0:
            return np.zeros(0, dtype=np.int64)
        items, s = got[0], got[1]
        alive = self.catalog_.alive
        ok = (s > 0) & (items < len(alive))
        ok[ok] = alive[items[ok]]
        return best(items[ok], s[ok], n)

    def floor(self, user: UserState) -> float | None:
        """0: scores are never negative and, above the two-stage threshold, some live item
        is in none of the user's neighbour sittings (it scores 0)."""
        return 0.0

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """The user's last items that the neighbour sittings holding ``idx`` share most (external ids)."""
        self._check_fitted()
        got = self._votes(user)
        if got is None:
            return ()
        last = set(self._last(user)) - {idx}
        pulls: dict[int, float] = {}
        for s, v in zip(got[2].tolist(), got[3].tolist()):
            held = self.items_[s]
            if idx in held:
                for a in last.intersection(held):
                    pulls[a] = pulls.get(a, 0.0) + v
        best = sorted(pulls, key=lambda a: (-pulls[a], a))[:top]
        return tuple(self.catalog_.ids[a] for a in best)
