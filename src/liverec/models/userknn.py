"""UserKNN: user-based collaborative filtering, cosine on users' item sets, per event."""

from __future__ import annotations

from typing import ClassVar, Self, Sequence

import numpy as np

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .pop import check_weighting, grow, interaction_pairs, interaction_strength, merge_strength


@register
class UserKNN(Learner):
    """What the most similar users interacted with: ``score(i) = sum_v sim(u, v) x_vi``.

    ``sim(u, v)`` is the cosine of the two users' item vectors (binary, or each pair's
    strongest positive weight with ``weighting="feedback"``); the sum runs over u's
    ``k_neighbours`` most similar users (ties at the cut included, so the result does
    not depend on storage order). State is the users' item sets and the inverted index
    item -> users, both updated per event in O(1); neighbours are found at score time
    through the inverted index (only users sharing an item with u are touched), so
    they always reflect every event seen. Cold users get popularity (number of users
    per item).

    Parameters
    ----------
    k_neighbours : int
        Neighbours whose items are summed.
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
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user="x", item="a", timestamp=0.0), Event(user="x", item="b", timestamp=1.0)]
    >>> m = UserKNN().fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="y", item="a", timestamp=2.0))
    >>> m.score(UserState("y"), cat.select(["b", "c"])).astype(float).round(3).tolist()
    [0.707, 0.0]
    """

    name: ClassVar[str] = "userknn"

    def __init__(
        self,
        *,
        k_neighbours: int = 50,
        weighting: str = "binary",
        all_events: bool = False,
        cold_popularity: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.k_neighbours = k_neighbours
        self.weighting = weighting
        self.all_events = all_events
        self.cold_popularity = cold_popularity
        self.feedback = feedback
        self.seed = seed

    # ------------------------------------------------------------------ learning
    def fit(self, log: InteractionLog) -> Self:
        check_weighting(self.weighting)
        self.catalog_ = log.catalog
        self.fitted_ = True
        users, uidx, items, x = interaction_pairs(log, self._fb, self.weighting, self.all_events)
        self.uids_: list[str] = [str(u) for u in users]
        self.uidx_: dict[str, int] = {u: j for j, u in enumerate(self.uids_)}
        self.uitems_: list[dict[int, float]] = [{} for _ in self.uids_]
        self.iusers_: dict[int, dict[int, float]] = {}
        self.norm2_ = np.zeros(max(len(users), 1), dtype=np.float64)
        np.add.at(self.norm2_, uidx, x * x)
        self.pop_ = np.zeros(max(len(log.catalog), 1), dtype=np.float64)
        np.add.at(self.pop_, items, x)
        # Array views of the dicts, rebuilt lazily for whatever an event touched.
        self.ucache_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.icache_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        bounds = np.flatnonzero(np.diff(uidx)) + 1
        for u, it, xs in zip(np.unique(uidx).tolist(), np.split(items, bounds), np.split(x, bounds)):
            self.uitems_[u] = dict(zip(it.tolist(), xs.tolist()))
            self.ucache_[u] = (it.astype(np.int64), xs.astype(np.float64))
        order = np.lexsort((uidx, items))
        it_sorted, u_sorted, x_sorted = items[order], uidx[order], x[order]
        bounds = np.flatnonzero(np.diff(it_sorted)) + 1
        for i, us, xs in zip(
            np.unique(it_sorted).tolist(), np.split(u_sorted, bounds), np.split(x_sorted, bounds)
        ):
            self.iusers_[i] = dict(zip(us.tolist(), xs.tolist()))
            self.icache_[i] = (us.astype(np.int64), xs.astype(np.float64))
        return self

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        s = interaction_strength(self._fb, event, self.weighting, self.all_events)
        if s <= 0:
            return
        u = self.uidx_.get(event.user)
        if u is None:
            u = len(self.uids_)
            self.uids_.append(event.user)
            self.uidx_[event.user] = u
            self.uitems_.append({})
            self.norm2_ = grow(self.norm2_, u + 1)
        a = self.uitems_[u].get(i, 0.0)
        b = merge_strength(a, s, self.weighting)
        if b == a:
            return
        self.uitems_[u][i] = b
        self.iusers_.setdefault(i, {})[u] = b
        self.norm2_[u] += b * b - a * a
        self.pop_ = grow(self.pop_, i + 1)
        self.pop_[i] += b - a
        self.ucache_.pop(u, None)
        self.icache_.pop(i, None)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        u = self.uidx_.get(user)
        if u is None:
            return
        for i, x in self.uitems_[u].items():
            self.iusers_.get(i, {}).pop(u, None)
            self.pop_[i] = max(0.0, self.pop_[i] - x)
            self.icache_.pop(i, None)
        self.uitems_[u] = {}
        self.norm2_[u] = 0.0
        self.ucache_.pop(u, None)

    # ------------------------------------------------------------------- scoring
    def _user(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        arr = self.ucache_.get(u)
        if arr is None:
            d = self.uitems_[u]
            it = np.fromiter(sorted(d), dtype=np.int64, count=len(d))
            arr = (it, np.fromiter((d[j] for j in it.tolist()), dtype=np.float64, count=len(d)))
            self.ucache_[u] = arr
        return arr

    def _item(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        arr = self.icache_.get(i)
        if arr is None:
            d = self.iusers_.get(i, {})
            arr = (np.fromiter(d, dtype=np.int64, count=len(d)), np.fromiter(d.values(), dtype=np.float64, count=len(d)))
            self.icache_[i] = arr
        return arr

    def neighbours(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(dense user indices, cosine similarities) of ``user``'s nearest users."""
        self._check_fitted()
        u = self.uidx_.get(user)
        empty = (np.zeros(0, dtype=np.int64), np.zeros(0))
        if u is None or not self.uitems_[u]:
            return empty
        items, x = self._user(u)
        parts = [self._item(i) for i in items.tolist()]
        us = np.concatenate([p[0] for p in parts])
        ws = np.concatenate([p[1] for p in parts]) * np.repeat(x, [len(p[0]) for p in parts])
        # Sums run in item order for every user: bit-identical however the state was built.
        overlap = np.bincount(us, weights=ws, minlength=len(self.uids_))
        overlap[u] = 0.0
        norms = np.sqrt(self.norm2_[: len(self.uids_)])
        den = norms * norms[u]
        sim = np.divide(overlap, den, out=np.zeros_like(overlap), where=den > 0)
        cand = np.flatnonzero(sim > 0)
        k = self.k_neighbours
        if len(cand) > k:
            thr = np.partition(sim[cand], len(cand) - k)[len(cand) - k]
            cand = cand[sim[cand] >= thr]  # ties at the cut stay: independent of user order
        # Order by external id so the final sums do not depend on dense user indices.
        cand = np.array(sorted(cand.tolist(), key=self.uids_.__getitem__), dtype=np.int64)
        return cand, sim[cand]

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        n_cat = max(len(self.catalog_), 1)
        self.pop_ = grow(self.pop_, n_cat)
        u = self.uidx_.get(user.user)
        if u is None or not self.uitems_[u]:
            if not self.cold_popularity:  # in a fused engine, trending covers cold users
                return np.zeros(len(items), dtype=np.float32)
            return self.pop_[items.idx].astype(np.float32)  # cold user: popularity
        nb, sim = self.neighbours(user.user)
        if len(nb) == 0 or len(items) == 0:
            return np.zeros(len(items), dtype=np.float32)
        parts = [self._user(v) for v in nb.tolist()]
        its = np.concatenate([p[0] for p in parts])
        ws = np.concatenate([p[1] for p in parts]) * np.repeat(sim, [len(p[0]) for p in parts])
        out = np.bincount(its, weights=ws, minlength=n_cat)
        return out[items.idx].astype(np.float32)

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """The user's history items the neighbours who chose ``idx`` also chose most."""
        self._check_fitted()
        u = self.uidx_.get(user.user)
        if u is None or top <= 0:
            return ()
        nb, sim = self.neighbours(user.user)
        mine = self.uitems_[u]
        support: dict[int, float] = {}
        for v, s in zip(nb.tolist(), sim.tolist()):
            if idx in self.uitems_[v]:
                for j in self.uitems_[v]:
                    if j in mine and j != idx:
                        support[j] = support.get(j, 0.0) + s
        best = sorted(support.items(), key=lambda t: (-t[1], t[0]))[:top]
        return tuple(self.catalog_.ids[j] for j, _ in best)
