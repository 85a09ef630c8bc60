"""Trending: time-decayed popularity of items, updated per event."""

from __future__ import annotations

import math
from typing import ClassVar, Self, Sequence

import numpy as np

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .retrieval import TopList, best, lazy

_HOUR = 3600.0
_RESCALE = 512.0  # half-lives; rescale before 2**x overflows float64 (limit ~1024)


@register
class Trending(Learner):
    """Item popularity with exponential decay: ``sum_e w_e * 2^(-(now - t_e)/half_life)``.

    Only positive feedback counts. ``prior_attribute`` names a numeric item attribute
    (e.g. a catalog's historical ``ratings_count``) that seeds popularity with up to
    ``prior_weight`` pseudo-events, so a fresh engine has a sensible cold start. Stored as ``raw_i = sum_e w_e 2^((t_e - t0)/h)`` so
    an event is O(1) and "now" is a single common factor; ``t0`` moves (O(items))
    only every few hundred half-lives. Scores are ``log1p(decayed count)``.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> m = Trending().fit(InteractionLog.from_events([], cat))
    >>> m.learn_one(Event(user="u", item="b", timestamp=0.0))
    >>> m.candidates(UserState("u"), 1).tolist()
    [1]
    """

    name: ClassVar[str] = "trending"
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {"half_life_hours": (24.0, 168.0, 720.0)}

    def __init__(
        self,
        *,
        half_life_hours: float = 168.0,
        prior_attribute: str | None = None,
        prior_weight: float = 1.0,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.half_life_hours = half_life_hours
        self.prior_attribute = prior_attribute
        self.prior_weight = prior_weight
        self.feedback = feedback
        self.seed = seed

    @property
    def _h(self) -> float:
        return self.half_life_hours * _HOUR

    def fit(self, log: InteractionLog) -> Self:
        self.catalog_ = log.catalog
        self.fitted_ = True
        self.raw_ = np.zeros(max(len(log.catalog), 1), dtype=np.float64)
        self.count_ = np.zeros_like(self.raw_)  # undecayed positive events, for explanations
        keep = log.item_idx >= 0
        self.t0_ = float(log.timestamps[keep].max()) if keep.any() else 0.0
        self.now_ = self.t0_
        if keep.any():
            w = (self.feedback or FeedbackConfig()).weights(log.kinds[keep], log.values[keep])
            pos = w > 0
            contrib = w[pos] * np.exp2((log.timestamps[keep][pos] - self.t0_) / self._h)
            np.add.at(self.raw_, log.item_idx[keep][pos], contrib)
            np.add.at(self.count_, log.item_idx[keep][pos], 1.0)
        self.top_ = TopList()
        self.__dict__.pop("_scores_kept", None)
        return self

    def _ensure(self, n: int) -> None:
        if n > len(self.raw_):
            grow = max(n, 2 * len(self.raw_)) - len(self.raw_)
            self.raw_ = np.concatenate([self.raw_, np.zeros(grow)])
            self.count_ = np.concatenate([self.count_, np.zeros(grow)])

    def _add(self, idx: int, w: float, t: float, sign: float) -> None:
        if (t - self.t0_) / self._h > _RESCALE:
            self.raw_ *= math.exp2(-(t - self.t0_) / self._h)
            self.t0_ = t
        self.raw_[idx] = max(0.0, self.raw_[idx] + sign * w * math.exp2((t - self.t0_) / self._h))
        self.count_[idx] = max(0.0, self.count_[idx] + sign)
        self.changes_ = self.__dict__.get("changes_", 0) + 1

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        w = (self.feedback or FeedbackConfig()).weight(event.kind, event.value)
        self.now_ = max(self.now_, event.timestamp)
        if w > 0:
            self._ensure(i + 1)
            self._add(i, w, event.timestamp, +1.0)
            lazy(self, "top_", TopList).offer(i, self.raw_)

    def _prior(self) -> np.ndarray | None:
        """Pseudo-counts in [0, prior_weight] from the prior attribute (log-scaled).

        Cached per catalog version: it only changes when items do.
        """
        if not self.prior_attribute:
            return None
        cached = self.__dict__.get("_prior_cache")
        if cached is not None and cached[0] == self.catalog_.version:
            return cached[1]
        values, present = self.catalog_.column(self.prior_attribute)
        out = None
        if values.dtype != object:
            v = np.log1p(np.where(present, np.maximum(values, 0.0), 0.0))
            top = float(v.max()) if len(v) else 0.0
            out = self.prior_weight * v / top if top > 0 else None
        self._prior_cache = (self.catalog_.version, out)
        return out

    def events_on(self, idx: np.ndarray) -> np.ndarray:
        """Positive events learned per item (undecayed; no prior): :class:`~liverec.models.base.EventCounts`."""
        self._check_fitted()
        idx = np.asarray(idx, dtype=np.int64)
        out = np.zeros(len(idx), dtype=np.float64)
        ok = idx < len(self.count_)
        out[ok] = self.count_[idx[ok]]
        return out

    def decayed(self, idx: np.ndarray) -> np.ndarray:
        """Decayed positive-feedback count (plus prior pseudo-counts) of items ``idx``."""
        self._ensure(len(self.catalog_))
        out = self.raw_[idx] * math.exp2(-(self.now_ - self.t0_) / self._h)
        prior = self._prior()
        return out if prior is None else out + prior[idx]

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        n = len(self.catalog_)
        if len(items) * 4 > n:  # most of the catalog: every user's request reads the same scores
            return self._catalog_scores(n)[items.idx]
        return np.log1p(self.decayed(items.idx)).astype(np.float32)

    def _catalog_scores(self, n: int) -> np.ndarray:
        """The score of each of the ``n`` catalog rows, kept until an event, the clock or the
        catalog changes them."""
        self._ensure(n)
        key = (self.catalog_.version, n, len(self.raw_), self.now_, self.t0_, self.__dict__.get("changes_", 0))
        kept = self.__dict__.get("_scores_kept")
        if kept is None or kept[0] != key:
            kept = self._scores_kept = (key, np.log1p(self.decayed(np.arange(n))).astype(np.float32))
        return kept[1]

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """The ``n`` most popular live items right now (dense indices, best first).

        Decay is a factor common to every item, so the order is that of the stored
        mass, which events only raise: a top list kept exact per event in O(n) answers
        without reading the catalog. With a prior, the best of that list and of the
        top prior items (listed once per catalog version) are ranked by the full score.
        """
        self._check_fitted()
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        self._ensure(len(self.catalog_))
        alive = self.catalog_.alive
        top = lazy(self, "top_", TopList).top(self.raw_, alive, n)
        prior = self._prior()
        if prior is None:
            return top
        cached = self.__dict__.get("_prior_top")
        if cached is None or cached[0] != (self.catalog_.version, n):
            self._prior_top = cached = ((self.catalog_.version, n), TopList().top(prior, alive, n))
        pool = np.union1d(top, cached[1])
        return best(pool, self.decayed(pool), n)

    def floor(self, user: UserState) -> float | None:
        """0 without a prior (some live item has had no event yet); unknown with one."""
        return 0.0 if self._prior() is None else None

    def forget(self, user: str, events: Sequence[Event]) -> None:
        lazy(self, "top_", TopList).invalidate()
        fb = self.feedback or FeedbackConfig()
        for e in events:
            i = self.catalog_.get_idx(e.item)
            w = fb.weight(e.kind, e.value)
            if i is not None and w > 0:
                self._add(i, w, e.timestamp, -1.0)
