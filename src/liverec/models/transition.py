"""Session transitions: what people choose right after what this user just chose.

A directed item-to-item kNN over the order of events (the session-based kNN family:
Ludewig & Jannach 2018). Every positive event of user ``u`` on item ``b`` adds
``1/d`` to ``T[a, b]`` for each of u's previous ``window`` items ``a`` (``d`` = how
many steps back ``a`` is). A user is scored by the rows of their last ``history``
items, the most recent first, each row normalised by its mass and faded by
``recency ** r``::

    score(i) = sum_r recency**r * T[a_r, i] / (sum_j T[a_r, j] + 1)

Learning one event costs O(window); a score reads ``history`` rows. Order is the
signal the co-occurrence sources (ItemKNN, EASE, ALS) throw away: on logs where what
comes next depends on what came just before (series, sequels, sessions), it is the
strongest real-time evidence.
"""

from __future__ import annotations

from array import array
from typing import ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .itemknn import _RowStore
from .pop import grow, recent_positive
from .retrieval import SparseRows, column_sums, transposed_product


@register
class Transition(Learner):
    """Items that often come right after the user's last items.

    Parameters
    ----------
    window : int
        How many of a user's previous items each new item is linked from.
    history : int
        How many of the user's last items score the next one.
    recency : float
        Fade per step back in the user's history (1 = all last items count alike).
    both_ways : bool
        Also link ``b -> a`` when ``b`` follows ``a`` (order-free co-occurrence within
        the window: for logs whose order within a session is noise).
    feedback : FeedbackConfig, optional
        Which events are positive (weight > 0); only those enter sequences.
    seed : int
        Unused (deterministic); kept for the protocol.
    user_tables : bool
        Keep each user's last items and learn each event's links as it comes (default), or
        keep nothing per user: a request reads the user's last items from their recent
        events (``UserState.history``) and the links are the fit's until the next fit (a
        new link needs the user's earlier items when the event is learned). The fit's
        sequences are kept by user so that an erasure takes the user's links out.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user="x", item="a", timestamp=0.0), Event(user="x", item="b", timestamp=1.0)]
    >>> m = Transition().fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="y", item="a", timestamp=2.0))
    >>> m.score(UserState("y"), cat.select(["b", "c"])).round(3).tolist()
    [0.5, 0.0]
    >>> m.because(UserState("y"), cat.get_idx("b"))
    ('a',)
    """

    name: ClassVar[str] = "transition"
    users_from_events: ClassVar[bool] = True
    #: Without tables the links are the fit's until the next fit.
    users_from_events_exact: ClassVar[bool] = False
    item_side_at_fits_without_tables: ClassVar[bool] = True
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {
        "window": (1, 3, 10), "history": (1, 3, 10), "recency": (0.5, 0.8), "both_ways": (False, True)
    }

    def __init__(
        self,
        *,
        window: int = 3,
        history: int = 3,
        recency: float = 0.7,
        both_ways: bool = False,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.window = window
        self.history = history
        self.recency = recency
        self.both_ways = both_ways
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    # ------------------------------------------------------------------ learning
    def _positive(self, kinds: np.ndarray, values: np.ndarray) -> np.ndarray:
        return self._fb.weights(kinds, values) > 0

    def fit(self, log: InteractionLog) -> Self:
        self.catalog_ = log.catalog
        self.fitted_ = True
        n = max(len(log.catalog), 1)
        order = np.argsort(log.timestamps, kind="stable")
        keep = order[(log.item_idx[order] >= 0) & self._positive(log.kinds[order], log.values[order])]
        seqs: dict[str, list[int]] = {}
        for t in keep.tolist():
            seqs.setdefault(str(log.users[t]), []).append(int(log.item_idx[t]))
        rows, cols, vals = [], [], []
        for seq in seqs.values():
            s = np.asarray(seq, dtype=np.int64)
            for d in range(1, min(self.window, len(s) - 1) + 1):
                a, b = s[:-d], s[d:]
                ok = a != b
                pairs = [(a[ok], b[ok]), (b[ok], a[ok])] if self.both_ways else [(a[ok], b[ok])]
                for x, y in pairs:
                    rows.append(x)
                    cols.append(y)
                    vals.append(np.full(int(ok.sum()), 1.0 / d, dtype=np.float32))
        if rows:
            T = sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
            )
        else:
            T = sp.csr_matrix((n, n), dtype=np.float32)
        T.sum_duplicates()
        T.sort_indices()
        self.T_ = _RowStore(T)
        self.mass_ = np.asarray(T.sum(1), dtype=np.float64).ravel()
        keepn = max(self.window, self.history)
        # Per user, the last items as a packed int array: ~0.1 KB a user where a deque
        # of int objects took ~1 KB (the learner's only per-user state).
        self.recent_: dict[str, array[int]] = {}
        #: Without tables: the fit's sequences (packed, in time order), which an erasure replays.
        self.fit_seqs_: dict[str, array[int]] = {}
        if self.user_tables:
            self.recent_ = {u: array("i", s[-keepn:]) for u, s in seqs.items()}
        else:
            self.fit_seqs_ = {u: array("i", s) for u, s in seqs.items()}
        return self

    def _links(self, event: Event) -> tuple[int, list[tuple[int, int, float]]] | None:
        """Record a positive ``event`` in its user's recent items: (its item, the links
        ``(a, b, 1/d)`` it adds, in order); None for an event that adds nothing."""
        b = self.catalog_.get_idx(event.item)
        if b is None or self._fb.weight(event.kind, event.value) <= 0:
            return None
        keepn = max(self.window, self.history)
        recent = self.recent_.get(event.user)
        if recent is None:
            recent = self.recent_[event.user] = array("i")
        prev = recent[-self.window :].tolist()[::-1]  # d = 1, 2, ...
        links = []
        for d, a in enumerate(prev, start=1):
            if a != b:
                links.append((a, b, 1.0 / d))
                if self.both_ways:
                    links.append((b, a, 1.0 / d))
        recent.append(b)
        if len(recent) > keepn:
            del recent[: len(recent) - keepn]
        return b, links

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        if not self.user_tables:  # links are the fit's; the user is read from their events
            return
        step = self._links(event)
        if step is None:
            return
        self._ensure(max(len(self.catalog_), step[0] + 1))
        for a, b, v in step[1]:
            self._add(a, b, v)

    def learn_many(self, events: Sequence[Event]) -> None:
        """``learn_one`` on each event in order (:class:`~liverec.models.base.BatchLearner`):
        the run's links in one vectorised update of ``T`` and the row masses, each entry
        summed in the order (and with the rounding) event-by-event learning gives it."""
        self._check_fitted()
        if not self.user_tables:
            return
        steps = [st for st in map(self._links, events) if st is not None]
        if not steps:
            return
        self._ensure(max(len(self.catalog_), max(b for b, _ in steps) + 1))
        links = [link for _, ls in steps for link in ls]
        if links:
            rows = np.fromiter((a for a, _, _ in links), dtype=np.int64, count=len(links))
            cols = np.fromiter((b for _, b, _ in links), dtype=np.int64, count=len(links))
            v = np.fromiter((x for *_, x in links), dtype=np.float32, count=len(links)).astype(np.float64)
            self.T_.add_in_order(rows, cols, v)
            np.add.at(self.mass_, rows, v)

    def _add(self, a: int, b: int, v: float) -> None:
        T, x = self.T_, float(np.float32(v))
        p = T.position(a, b)
        if p >= 0:  # summed in float64 and rounded once, as _RowStore.add
            T.vals[p] = np.float32(float(T.vals[p]) + x)
        else:
            T.append_one(a, b, x)
        self.mass_[a] += np.float32(v)

    def _ensure(self, n: int) -> None:
        if n <= len(self.mass_) and n <= self.T_.n:
            return  # the common case: nothing to grow
        self.mass_ = grow(self.mass_, n)
        self.T_.resize(n)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        """Subtract the user's transitions (replayed from their events in time order; without
        tables, from the fit's sequence: nothing after the fit was learned)."""
        self.recent_.pop(user, None)
        fit_seq = self.fit_seqs_.pop(user, None)
        if not self.user_tables:
            seq = list(fit_seq or ())
        else:
            mine = [e for e in sorted(events, key=lambda e: e.timestamp) if self._fb.weight(e.kind, e.value) > 0]
            seq = [i for i in (self.catalog_.get_idx(e.item) for e in mine) if i is not None]
        for k, b in enumerate(seq):
            for d in range(1, min(self.window, k) + 1):
                a = seq[k - d]
                if a != b:
                    for x, y in ((a, b), (b, a)) if self.both_ways else ((a, b),):
                        pos = self.T_.find_in_row(x, np.array([y], dtype=np.int64))
                        if pos[0] >= 0:
                            self.T_.add(pos, np.array([-1.0 / d], dtype=np.float32))
                            self.mass_[x] = max(0.0, self.mass_[x] - 1.0 / d)

    # ------------------------------------------------------------------- scoring
    def _last(self, user: UserState) -> list[int]:
        """The user's last ``history`` items, most recent first (kept, or from their recent events)."""
        if not self.user_tables:
            return recent_positive(user, self.catalog_, self._fb)[-self.history :][::-1]
        return list(self.recent_.get(user.user, ()))[-self.history :][::-1]

    def _rows(self, user: UserState) -> tuple[SparseRows, np.ndarray] | None:
        """(rows of T for the user's last items, each row's weight); None without history."""
        last = self._last(user)
        if not last:
            return None
        self._ensure(max(len(self.catalog_), 1))
        rows = np.asarray(last, dtype=np.int64)
        coef = (self.recency ** np.arange(len(last))) / (self.mass_[rows] + 1.0)
        return self.T_.rows(rows), coef.astype(np.float32)

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        rc = self._rows(user)
        out = np.zeros(len(items), dtype=np.float64)
        if rc is None:
            return out
        sub, coef = rc
        n = max(len(self.catalog_), 1)
        ok = items.idx < n
        if len(items) * 4 < n:  # a few candidates (two-stage serving): no catalog-sized vector
            out[ok] = column_sums(sub, coef, items.idx[ok])
            return out
        s = np.asarray(transposed_product(sub, coef), dtype=np.float64)[:n]
        out[ok] = s[items.idx[ok]]
        return out

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """The ``n`` best-scored live items (dense indices, best first): only items that
        followed the user's last ones, read from those rows alone (no catalog-sized work)."""
        self._check_fitted()
        rc = self._rows(user)
        if rc is None or n <= 0:
            return np.zeros(0, dtype=np.int64)
        sub, coef = rc
        w = sub.data * np.repeat(coef, np.diff(sub.indptr))
        items, inv = np.unique(sub.indices.astype(np.int64), return_inverse=True)
        s = np.bincount(inv, weights=w, minlength=len(items))
        alive = self.catalog_.alive
        ok = (s > 0) & (items < len(alive))
        ok[ok] = alive[items[ok]]
        items, s = items[ok], s[ok]
        if len(items) > n:
            part = np.argpartition(-s, n - 1)[:n]
            items, s = items[part], s[part]
        return items[np.lexsort((items, -s))]

    def floor(self, user: UserState) -> float | None:
        """0: scores are never negative and, above the two-stage threshold, some live item
        shares nothing with the user's history (it scores 0)."""
        return 0.0

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """The user's last items that ``idx`` most often follows (external ids)."""
        self._check_fitted()
        last = self._last(user)
        pulls: dict[int, float] = {}  # an item seen twice among the last ones counts once, at its best
        for r, a in enumerate(last):
            if a == idx:
                continue
            p = self.T_.position(a, idx)
            v = float(self.T_.vals[p]) if p >= 0 else 0.0
            pulls[a] = max(pulls.get(a, 0.0), v * self.recency**r / (self.mass_[a] + 1.0))
        best = sorted((a for a, p in pulls.items() if p > 0), key=lambda a: (-pulls[a], a))[:top]
        return tuple(self.catalog_.ids[a] for a in best)
