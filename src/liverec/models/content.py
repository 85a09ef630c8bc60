"""Content profile: the user as a decayed, feedback-weighted sum of item LM vectors."""

from __future__ import annotations

import math
from typing import ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import Catalog, ItemIds, centred_norms
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, positive_history, register, top_because
from .pop import history_rows

_DAY = 86_400.0


class CentredSpace:
    """Item LM vectors as a content source compares them: mean-centred and unit.

    ``(v - mean) / |v - mean|`` with the mean over the live catalog at ``fit`` (the
    first items that arrive, for a catalog empty then); with ``center=False`` the raw
    vectors. Shared by :class:`ContentProfile` and the declared-interests source.
    """

    center: bool
    catalog_: Catalog
    fitted_: bool
    mean_: np.ndarray
    norms_: np.ndarray

    def _fit_space(self, catalog: Catalog) -> None:
        """Attach ``catalog`` and take its mean: the start of every ``fit``."""
        self.catalog_ = catalog
        self.fitted_ = True
        alive = catalog.alive_idx()
        d = catalog.dim or 0
        self.mean_ = catalog.vectors[alive].astype(np.float64).mean(axis=0) if self.center and len(alive) else np.zeros(d)
        self.norms_ = np.zeros(0)
        self.norms_version_: tuple[str | None, int] | None = None

    def _norms(self) -> np.ndarray:
        """|v - mean| per catalog row (rows added or re-encoded since ``fit`` get theirs on first use)."""
        cat = self.catalog_
        n = len(cat)
        if self.center and self.mean_.shape[0] != (cat.dim or 0):
            # Fitted on an empty catalog: take the mean of the first items that arrive.
            alive = cat.alive_idx()
            self.mean_ = cat.vectors[alive].astype(np.float64).mean(axis=0)
            self.norms_ = np.zeros(0)
        # (catalog, version) the norms follow: versions of another catalog (a restore) say nothing.
        key = (cat.__dict__.get("uid"), cat.version)
        seen = self.__dict__.get("norms_version_")
        if seen == key and len(self.norms_) == n:
            return self.norms_
        known = len(self.norms_)
        if known < n:
            new = centred_norms(cat.vectors[known:n], self.mean_)
            self.norms_ = np.concatenate([self.norms_, new])
        # Rows re-encoded since (all of them when the versions say nothing).
        rows = cat.written_since(seen[1] if seen is not None and seen[0] == key[0] else -1)
        rows = rows[rows < known]
        if len(rows):
            self.norms_ = self.norms_.copy()
            self.norms_[rows] = centred_norms(cat.vectors[rows], self.mean_)
        self.norms_version_ = key
        return self.norms_

    def _vec(self, i: int) -> np.ndarray:
        """Item ``i``'s vector as the profile adds it (centred and unit, or raw)."""
        v = self.catalog_.vectors[i].astype(np.float64)
        if not self.center:
            return v
        norms = self._norms()  # first: it may set the mean
        return (v - self.mean_) / norms[i]

    def item_vectors(self, idx: np.ndarray) -> np.ndarray:
        """The vectors the profile is made of, for catalog rows ``idx`` (centred and unit when ``center``)."""
        v = self.catalog_.vectors[idx].astype(np.float64)
        if not self.center:
            return v
        norms = self._norms()
        return (v - self.mean_) / norms[idx][:, None]

    def _centred(self, v: np.ndarray) -> np.ndarray | None:
        """A vector of the LM space (declared interests) in this space: centred and unit."""
        v = v.astype(np.float64)
        if not self.center:
            return v
        self._norms()  # the mean exists
        return _unit(v - self.mean_)

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        """Each item's cosine with ``query_vector(user)`` in this space; zeros when it is None
        (the learner defines ``query_vector``; ``Learner`` the fitted check)."""
        self._check_fitted()  # type: ignore[attr-defined]
        q = self.query_vector(user)  # type: ignore[attr-defined]
        if q is None or len(items) == 0:
            return np.zeros(len(items), dtype=np.float32)
        return self._project(q, items)

    def _project(self, q: np.ndarray, items: ItemIds) -> np.ndarray:
        """Each item's score for query ``q``: its cosine with ``q`` in this space, up to ``|q|``."""
        raw = items.project(self.catalog_.vectors, q, by_column=self.catalog_.vectors_by_column)
        if not self.center:
            return raw
        norms = self._norms()
        # cos(q, (v - m)/|v - m|) up to |q|: (v.q - m.q) / |v - m|.
        return ((raw - float(self.mean_ @ q)) / norms[items.idx]).astype(np.float32)


@register
class ContentProfile(CentredSpace, Learner):
    """The user as two directions in the LM space: long-term taste and current intent.

    Long-term: ``sum_e w(kind_e) * 2^(-(t_last - t_e)/half_life - n_e/half_life_events) * v(item_e)``
    (``n_e``: how many of the user's events came after ``e``), plus
    ``interest_weight`` times the declared-interests vector; with ``user_tables=False``
    (fleet mode) the sum runs over the request's recent events instead of a kept vector,
    so nothing is kept per user (the same vector while a user's events all fit in the
    recent ones). Short-term (the session's
    intent): ``sum_e w(kind_e) * short_decay^(events since e) * v(item_e)`` over the
    request's recent events (``UserState.history``: the last 50 by default, so what is
    left out weighs at most ``short_decay^50``), so the last few events dominate and the
    list follows what the user does now. It is made per request, not kept: per user the
    learner keeps one vector (in fleet mode the recent events live in Redis). Positive kinds
    pull toward an item, skips and dislikes push away. Score =
    ``(1 - short_weight) * cos(long, v) + short_weight * cos(short, v)``; one event
    costs O(d).

    ``center=True`` (default) works with mean-centred item vectors ``(v - mean) /
    |v - mean|``, the mean taken over the catalog at ``fit``. Sentence-embedding
    vectors share one large common direction (book vectors' raw cosines bunch around
    0.3), which drowns the differences a taste is made of; removing the mean is the
    standard fix for that anisotropy (Mu & Viswanath 2018, "all-but-the-top"). It
    costs one extra dot product per request and a norm per item.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> m = ContentProfile().fit(InteractionLog.from_events([], cat))
    >>> m.learn_one(Event(user="u", item="a", kind="click", timestamp=0.0))
    >>> m.score(UserState("u"), cat.select(["a", "b"])).round(3).tolist()  # centred: b is a's opposite
    [1.0, -1.0]
    """

    name: ClassVar[str] = "content"
    scores_new_items: ClassVar[bool] = True
    users_from_events: ClassVar[bool] = True
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {"half_life_events": (30.0, 100.0, 300.0), "short_weight": (0.3, 0.5, 0.7)}

    def __init__(
        self,
        *,
        half_life_days: float = 30.0,
        half_life_events: float | None = 100.0,
        interest_weight: float = 2.0,
        short_decay: float = 0.7,
        short_weight: float = 0.5,
        center: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.half_life_days = half_life_days
        self.half_life_events = half_life_events
        self.interest_weight = interest_weight
        self.short_decay = short_decay
        self.short_weight = short_weight
        self.center = center
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    def fit(self, log: InteractionLog) -> Self:
        self._fit_space(log.catalog)
        self.profiles_: dict[str, np.ndarray] = {}
        self.last_t_: dict[str, float] = {}
        keep = log.item_idx >= 0
        if keep.any() and self.user_tables:
            users = log.users[keep]
            items = log.item_idx[keep]
            ts = log.timestamps[keep]
            w = self._fb.weights(log.kinds[keep], log.values[keep])
            uniq, uidx = np.unique(users.astype(str), return_inverse=True)
            last = np.full(len(uniq), -np.inf)
            np.maximum.at(last, uidx, ts)
            # Decay relative to each user's latest event: the same closed form learn_one keeps.
            coef = w * np.exp2(-(last[uidx] - ts) / (self.half_life_days * _DAY))
            if self.half_life_events:
                # Weight by how many of the user's events came after (time order).
                order = np.lexsort((np.arange(len(ts)), ts, uidx))
                counts = np.bincount(uidx, minlength=len(uniq))
                starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
                pos = np.empty(len(ts), dtype=np.int64)
                pos[order] = np.arange(len(ts)) - starts[uidx[order]]
                after = counts[uidx] - 1 - pos
                coef = coef * np.exp2(-after / float(self.half_life_events))
            vecs = log.catalog.vectors
            shape = (len(uniq), len(log.catalog))
            if self.center:  # sum w (v - m)/|v - m| without a centred copy of the catalog
                coef = coef / self._norms()[items]
            C = sp.csr_matrix((coef, (uidx, items)), shape=shape)
            prof = np.asarray(C @ vecs, dtype=np.float64)
            if self.center:
                prof -= np.outer(np.asarray(C.sum(axis=1)).ravel(), self.mean_)
            prof = prof.astype(KEPT)
            for j, u in enumerate(uniq):
                self.profiles_[str(u)] = prof[j]
                self.last_t_[str(u)] = float(last[j])
        return self

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None or not self.user_tables:  # without tables a user is read from their events
            return
        w = self._fb.weight(event.kind, event.value)
        v = self._vec(i)
        p = self.profiles_.get(event.user)
        t0 = self.last_t_.get(event.user)
        h = self.half_life_days * _DAY
        if p is None or t0 is None:  # a new user (profiles_ and last_t_ are set together)
            self.profiles_[event.user] = (w * v).astype(KEPT)
            self.last_t_[event.user] = event.timestamp
        elif event.timestamp >= t0:
            # Fade the old profile to the new event's time (and by one event), then add it: O(d).
            fade = -(event.timestamp - t0) / h - (1.0 / self.half_life_events if self.half_life_events else 0.0)
            self.profiles_[event.user] = (p * math.exp2(fade) + w * v).astype(KEPT)
            self.last_t_[event.user] = event.timestamp
        else:  # a late event: add it already faded
            self.profiles_[event.user] = (p + w * math.exp2(-(t0 - event.timestamp) / h) * v).astype(KEPT)

    def learn_many(self, events: Sequence[Event]) -> None:
        """``learn_one`` on each event in order (:class:`~liverec.models.base.BatchLearner`),
        to the same profiles: in rounds of at most one event per user (a user's first event
        of the run, then the second, ...), each round's profiles updated as one array.
        """
        self._check_fitted()
        if not self.user_tables:
            return
        rounds: list[list[tuple[Event, int]]] = []
        nth: dict[str, int] = {}
        for e in events:
            i = self.catalog_.get_idx(e.item)
            if i is None:
                continue
            k = nth.get(e.user, 0)
            nth[e.user] = k + 1
            if k == len(rounds):
                rounds.append([])
            rounds[k].append((e, i))
        for run in rounds:
            self._learn_round(run)

    def _learn_round(self, run: Sequence[tuple[Event, int]]) -> None:
        """``learn_one`` on events of distinct users, as arrays: a profile is
        ``(p * fade + c * v)`` in float32 times Python floats, exactly as one by one."""
        h = self.half_life_days * _DAY
        per = 1.0 / self.half_life_events if self.half_life_events else 0.0
        n = len(run)
        fade = np.ones(n, dtype=np.float32)
        coef = np.empty(n, dtype=np.float64)
        old = np.zeros((n, int(self.catalog_.dim or 0)), dtype=KEPT)
        fresh = np.zeros(n, dtype=bool)
        for j, (e, _) in enumerate(run):
            w = self._fb.weight(e.kind, e.value)
            p = self.profiles_.get(e.user)
            t0 = self.last_t_.get(e.user)
            if p is None or t0 is None:
                fresh[j], coef[j] = True, w
                self.last_t_[e.user] = e.timestamp
            elif e.timestamp >= t0:
                old[j], fade[j], coef[j] = p, math.exp2(-(e.timestamp - t0) / h - per), w
                self.last_t_[e.user] = e.timestamp
            else:
                old[j], coef[j] = p, w * math.exp2(-(t0 - e.timestamp) / h)
        v = self.item_vectors(np.fromiter((i for _, i in run), dtype=np.int64, count=n))
        add = coef[:, None] * v
        new = np.where(fresh[:, None], add, old * fade[:, None] + add).astype(KEPT)
        for j, (e, _) in enumerate(run):
            self.profiles_[e.user] = new[j].copy()  # its own array: a row would keep the round's alive

    def query_vector(self, user: UserState) -> np.ndarray | None:
        """The vector whose inner product with an item is its score; None for a cold user."""
        long = self._long(user)
        short = _unit(self._short(user)) if self.short_weight > 0 else None
        if long is None:
            return None if short is None else short.astype(np.float32)
        if short is None or self.short_weight <= 0:
            return long.astype(np.float32)
        return ((1 - self.short_weight) * long + self.short_weight * short).astype(np.float32)

    def _short(self, user: UserState) -> np.ndarray | None:
        """The session's intent from the request's recent events (oldest first): each event's
        weight times ``short_decay`` per later event, on items the catalog holds (as learning
        them one by one would sum them); None without any. Kept on the request's state."""
        key = ("content-intent", id(self))
        if key in user.derived:
            return user.derived[key][1]
        rows, w, _ = history_rows(user, self.catalog_, self._fb)
        out = None
        if len(rows):
            out = self._sum(rows, w * self.short_decay ** np.arange(len(rows) - 1, -1, -1, dtype=np.float64))
        user.derived[key] = (self, out)  # holding the learner keeps its id its own while kept
        return out

    def _sum(self, rows: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """``sum_e coef_e * v(item_e)`` over catalog ``rows``, in this space."""
        vecs = self.catalog_.vectors
        if not self.center:
            return np.asarray(coef @ vecs[rows], dtype=np.float64)
        coef = coef / self._norms()[rows]  # sum c (v - m)/|v - m| without centring the rows
        return np.asarray(coef @ vecs[rows] - coef.sum() * self.mean_, dtype=np.float64)

    def _taste(self, user: UserState) -> np.ndarray | None:
        """The long-term sum: the kept vector, or (``user_tables=False``) the same closed form
        ``fit`` uses, over the request's recent events in time order; None without events."""
        if self.user_tables:
            return self.profiles_.get(user.user)
        key = ("content-taste", id(self))
        if key in user.derived:
            return user.derived[key][1]
        rows, w, ts = history_rows(user, self.catalog_, self._fb)
        out = None
        if len(rows):
            coef = w * np.exp2(-(ts.max() - ts) / (self.half_life_days * _DAY))
            if self.half_life_events:  # by how many of the user's events came after (time order)
                after = np.empty(len(ts))
                after[np.argsort(ts, kind="stable")] = np.arange(len(ts) - 1, -1, -1)
                coef = coef * np.exp2(-after / float(self.half_life_events))
            out = self._sum(rows, coef)
        user.derived[key] = (self, out)
        return out

    def _long(self, user: UserState) -> np.ndarray | None:
        q = self._taste(user)
        if user.interests is not None and self.interest_weight > 0:
            iv = self._centred(user.interests)
            iv = self.interest_weight * iv if iv is not None else None
            if iv is None:
                return _unit(q)
            if q is None:
                q = iv
            else:
                # Behaviour is measured in clicks' worth of unit vectors; interests weigh
                # like `interest_weight` clicks at the behaviour's current scale.
                q = q + iv
        return _unit(q)

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """History items whose vectors pull hardest toward item ``idx``."""
        ids, hidx, w = positive_history(user, self.catalog_, self._fb)
        if not ids:
            return ()
        pulls = w * (self.catalog_.vectors[hidx] @ self.catalog_.vectors[idx])
        return top_because(ids, pulls, idx, hidx, top, 0.2)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        self.profiles_.pop(user, None)
        self.last_t_.pop(user, None)


#: The dtype of the kept per-user vector: single precision halves what every user costs in
#: memory (and snapshots), and scoring already runs in it; sums are formed in double.
KEPT = np.float32


def _unit(q: np.ndarray | None) -> np.ndarray | None:
    if q is None:
        return None
    n = float(np.linalg.norm(q))
    return None if n < 1e-12 else q / n
