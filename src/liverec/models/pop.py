"""MostPopular: the classic Pop baseline, undecayed interaction counts updated per event.

Also home of the small helpers every interaction-based learner (pop, itemknn, userknn,
ease, tfidf) shares: which events count as interactions and with what strength.
"""

from __future__ import annotations

from typing import ClassVar, Self, Sequence

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..errors import ValidationError
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, history_rows, register

WEIGHTINGS = ("binary", "feedback")


def check_weighting(weighting: str) -> None:
    if weighting not in WEIGHTINGS:
        raise ValidationError(
            f"unknown weighting {weighting!r}: use one of {list(WEIGHTINGS)} "
            '("binary": every interaction counts 1, "feedback": its positive feedback weight).',
            field="weighting",
        )


def interaction_strength(fb: FeedbackConfig, event: Event, weighting: str, all_events: bool) -> float:
    """How strongly one event counts as an interaction; 0.0 means it does not count.

    By default an event is an interaction when its feedback weight is positive.
    ``all_events`` makes every event one (the "all ratings are interactions"
    protocol). ``"binary"`` gives strength 1; ``"feedback"`` the positive weight, so
    under feedback weighting a non-positive event adds nothing even with all_events.
    """
    w = fb.weight(event.kind, event.value)
    if weighting == "binary":
        return 1.0 if (all_events or w > 0) else 0.0
    return w if w > 0 else 0.0


def interaction_strengths(
    fb: FeedbackConfig, kinds: np.ndarray, values: np.ndarray, weighting: str, all_events: bool
) -> np.ndarray:
    """Vectorised :func:`interaction_strength` over a log's columns."""
    return strengths_of_weights(fb.weights(kinds, values), weighting, all_events)


def strengths_of_weights(w: np.ndarray, weighting: str, all_events: bool) -> np.ndarray:
    """:func:`interaction_strength` of events with feedback weights ``w``."""
    if weighting == "binary":
        return np.ones_like(w) if all_events else (w > 0).astype(np.float64)
    return np.where(w > 0, w, 0.0)


def merge_strength(old: float, new: float, weighting: str) -> float:
    """A (user, item) pair's strength after another event: 1 (binary) or the max weight.

    Order-independent, so learning event by event reaches exactly what a batch fit
    computes, and repeated clicks do not inflate an item.
    """
    return 1.0 if weighting == "binary" else max(old, new)


def interaction_pairs(
    log: InteractionLog, fb: FeedbackConfig, weighting: str, all_events: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The log as unique (user, item) pairs: (user ids, user index, item index, strength).

    Pairs are sorted by (user index, item index); user ids are sorted (``np.unique``).
    """
    check_weighting(weighting)
    keep = log.item_idx >= 0
    if keep.any():
        s = interaction_strengths(fb, log.kinds[keep], log.values[keep], weighting, all_events)
        keep[keep] = s > 0
        s = s[s > 0]
    if not keep.any():
        e = np.zeros(0, dtype=np.int64)
        return np.zeros(0, dtype=object), e, e, np.zeros(0)
    uniq, uidx = np.unique(log.users[keep].astype(str), return_inverse=True)
    items = log.item_idx[keep]
    order = np.lexsort((items, uidx))
    uidx, items, s = uidx[order], items[order], s[order]
    first = np.ones(len(uidx), dtype=bool)
    first[1:] = (uidx[1:] != uidx[:-1]) | (items[1:] != items[:-1])
    starts = np.flatnonzero(first)
    strength = np.ones(len(starts)) if weighting == "binary" else np.maximum.reduceat(s, starts)
    return uniq.astype(object), uidx[starts].astype(np.int64), items[starts].astype(np.int64), strength


def recent_strengths(
    user: UserState, catalog: Catalog, fb: FeedbackConfig, weighting: str, all_events: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """(catalog rows ascending, strength) of the items in ``user``'s recent events: what a
    learner's per-user item table holds for a user whose events are all among them (the
    strengths merge order-independently: 1, or the largest). None without any.

    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["", ""])
    >>> u = UserState("u", history=(Event(user="u", item="b"), Event(user="u", item="a", kind="skip"),
    ...                             Event(user="u", item="b", kind="purchase")))
    >>> idx, x = recent_strengths(u, cat, FeedbackConfig(), "feedback", False)
    >>> idx.tolist(), x.tolist()
    ([1], [3.0])
    """
    rows, w, _ = history_rows(user, catalog, fb)
    s = strengths_of_weights(w, weighting, all_events)
    keep = s > 0
    if not keep.any():
        return None
    idx, inv = np.unique(rows[keep], return_inverse=True)
    x = np.zeros(len(idx))
    np.maximum.at(x, inv, s[keep])  # binary strengths are all 1
    return idx, x


def recent_positive(user: UserState, catalog: Catalog, fb: FeedbackConfig) -> list[int]:
    """Catalog rows of the items of ``user``'s recent positive events, oldest first (repeats
    kept): what a learner's per-user list of last items holds for a user whose events are
    all among them.

    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["", ""])
    >>> u = UserState("u", history=(Event(user="u", item="b"), Event(user="u", item="a", kind="skip"),
    ...                             Event(user="u", item="x"), Event(user="u", item="b", kind="purchase")))
    >>> recent_positive(u, cat, FeedbackConfig())
    [1, 1]
    """
    rows, w, _ = history_rows(user, catalog, fb)
    return rows[w > 0].tolist()


def grow(a: np.ndarray, n: int) -> np.ndarray:
    """``a`` with at least ``n`` entries (zero-padded, doubling to amortise)."""
    if n <= len(a):
        return a
    out = np.zeros(max(n, 2 * len(a)), dtype=a.dtype)
    out[: len(a)] = a
    return out


@register
class MostPopular(Learner):
    """Items ranked by how many interactions they received, never decayed (Pop).

    Every event that counts as an interaction (see ``weighting`` and ``all_events``)
    adds its strength to the item's count: O(1) per event. The score is the same for
    every user, cold ones included.

    Parameters
    ----------
    weighting : {"binary", "feedback"}
        An interaction counts 1, or its positive feedback weight.
    all_events : bool
        Count every event (e.g. every rating) as an interaction, not only positive ones.
    feedback : FeedbackConfig, optional
        Kind weights (default: the built-in ones).
    seed : int
        Unused (deterministic); kept for the protocol.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> m = MostPopular().fit(InteractionLog.from_events([], cat))
    >>> m.learn_one(Event(user="u", item="b", timestamp=0.0))
    >>> m.score(UserState("v"), cat.select(["a", "b"])).tolist()
    [0.0, 1.0]
    >>> m.candidates(UserState("v"), 5).tolist()
    [1]
    """

    name: ClassVar[str] = "pop"

    def __init__(
        self,
        *,
        weighting: str = "binary",
        all_events: bool = False,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.weighting = weighting
        self.all_events = all_events
        self.feedback = feedback
        self.seed = seed

    def fit(self, log: InteractionLog) -> Self:
        check_weighting(self.weighting)
        self.catalog_ = log.catalog
        self.fitted_ = True
        self.counts_ = np.zeros(max(len(log.catalog), 1), dtype=np.float64)
        keep = log.item_idx >= 0
        if keep.any():
            s = interaction_strengths(self._fb, log.kinds[keep], log.values[keep], self.weighting, self.all_events)
            np.add.at(self.counts_, log.item_idx[keep], s)
        return self

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        s = interaction_strength(self._fb, event, self.weighting, self.all_events)
        if s > 0:
            self.counts_ = grow(self.counts_, i + 1)
            self.counts_[i] += s

    def counts(self, idx: np.ndarray) -> np.ndarray:
        """Interaction counts of items ``idx`` (items added after fit count from 0)."""
        self.counts_ = grow(self.counts_, len(self.catalog_))
        return self.counts_[idx]

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        return self.counts(items.idx).astype(np.float32)

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """The ``n`` most popular live items (dense indices), best first."""
        self._check_fitted()
        raw = np.where(self.catalog_.alive, self.counts(np.arange(len(self.catalog_))), -1.0)
        n = min(n, len(raw))
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        top = np.argpartition(-raw, n - 1)[:n]
        top = top[raw[top] > 0]
        return top[np.lexsort((top, -raw[top]))]

    def forget(self, user: str, events: Sequence[Event]) -> None:
        for e in events:
            if e.user != user:
                continue
            i = self.catalog_.get_idx(e.item)
            s = interaction_strength(self._fb, e, self.weighting, self.all_events)
            if i is not None and s > 0 and i < len(self.counts_):
                self.counts_[i] = max(0.0, self.counts_[i] - s)
