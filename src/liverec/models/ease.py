"""EASE (Steck 2019): a closed-form item-item linear model, scored with live histories."""

from __future__ import annotations

from typing import ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from ..encode.catalog import ItemIds
from ..errors import LiverecError
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .pop import check_weighting, grow, interaction_pairs, interaction_strength, merge_strength, recent_strengths
from .retrieval import NeighbourLists, TopList, best, lazy
from .useritems import UserItems

_BLOCK = 1024


@register
class EASE(Learner):
    """Embarrassingly Shallow Autoencoder: ``score = x_u @ B``.

    ``B = I - P diag(1/diag(P))`` with ``P = (X^T X + l2 I)^-1`` is the ridge
    regression of every item on all the others with a zero diagonal (an item may not
    predict itself). ``B`` is fitted in batch, in float32 dense over the items that
    have interactions: O(n_items^2) memory (0.4 GB at 10k items, 1.6 GB at 20k; fine
    to ~20k items) and an O(n_items^3) Cholesky inverse (~20 s at 10k items on two
    cores). Per event only the user's row ``x_u`` changes, O(1); scoring reads
    ``B[history]``, so every recommendation uses the up-to-date history: this is
    EASE's streaming variant. Items without interactions at fit time (and items added
    later) score 0 until the next fit. Cold users get popularity. With
    ``user_tables=False`` no row is kept per user: a request reads ``x_u`` from the
    user's recent events (``UserState.history``), and the popularity cold users get is
    the fit's (counting a pair once needs the user's earlier items).

    Parameters
    ----------
    l2 : float
        Ridge penalty ``lambda``.
    weighting : {"binary", "feedback"}
        An interaction counts 1, or its positive feedback weight.
    all_events : bool
        Count every event (e.g. every rating) as an interaction, not only positive ones.
    feedback : FeedbackConfig, optional
        Kind weights (default: the built-in ones).
    seed : int
        Unused (deterministic); kept for the protocol.
    user_tables : bool
        Keep each user's row ``x_u`` (default), or read it from the request's recent events.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user=u, item=i, timestamp=0.0) for u in "xyz" for i in "ab"] + [Event(user="w", item="c")]
    >>> m = EASE(l2=1.0).fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="v", item="a", timestamp=1.0))
    >>> s = m.score(UserState("v"), cat.select(["a", "b", "c"]))
    >>> bool(s[1] > s[0]), bool(s[1] > s[2])
    (True, True)
    """

    name: ClassVar[str] = "ease"
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {"l2": (50.0, 100.0, 200.0, 1000.0, 2000.0)}
    fixed_between_fits: ClassVar[tuple[str, ...]] = ("B_",)
    #: B is fitted in batch and learn_one does not change it (only the user's row
    #: x_u), so fit(log) and fit(empty) + learn_one per event differ by design; the
    #: shared batch-vs-incremental check is skipped for EASE.
    exact_incremental: ClassVar[bool] = False
    users_from_events: ClassVar[bool] = True
    #: Without tables cold users get the fit's popularity (see the class docstring).
    users_from_events_exact: ClassVar[bool] = False
    #: Neighbours kept per item, and history items read, by ``candidates`` (retrieval only).
    candidate_neighbours: ClassVar[int] = 100
    candidate_history: ClassVar[int] = 200

    def __init__(
        self,
        *,
        l2: float = 500.0,
        max_items: int | None = 10_000,
        weighting: str = "binary",
        all_events: bool = False,
        cold_popularity: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.l2 = l2
        self.max_items = max_items
        self.weighting = weighting
        self.all_events = all_events
        self.cold_popularity = cold_popularity
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    # ------------------------------------------------------------------ learning
    def fit(self, log: InteractionLog) -> Self:
        check_weighting(self.weighting)
        self.catalog_ = log.catalog
        self.fitted_ = True
        users, uidx, items, x = interaction_pairs(log, self._fb, self.weighting, self.all_events)
        n = max(len(log.catalog), 1)
        self.hist_ = UserItems.from_pairs([str(u) for u in users], uidx, items, x) if self.user_tables else UserItems()
        self.pop_ = np.zeros(n, dtype=np.float64)
        np.add.at(self.pop_, items, x)
        # The fit-time matrix is kept (sparse, small) so forget() can refit B without
        # the user: their data must not stay inside the model.
        self.fit_users_: dict[str, int] = {str(u): j for j, u in enumerate(users)}
        self.X_fit_ = sp.csr_matrix((x.astype(np.float32), (uidx, items)), shape=(len(users), n))
        self._fit_b()
        self._build_neighbours()
        return self

    def _fit_b(self) -> None:
        X = self.X_fit_
        counts = X.getnnz(axis=0)
        active = np.flatnonzero(counts > 0)
        if self.max_items is not None and len(active) > self.max_items:
            # B is dense (items x items): keep memory bounded (10k items = 400 MB) by
            # fitting on the most-interacted items; the rest score 0 from EASE.
            top = active[np.argsort(-counts[active], kind="stable")[: self.max_items]]
            active = np.sort(top)
        self.bidx_ = np.full(X.shape[1], -1, dtype=np.int64)
        self.bidx_[active] = np.arange(len(active))
        m = len(active)
        if m == 0:
            self.B_ = np.zeros((0, 0), dtype=np.float32)
            self.freeze()
            return
        Xa = X[:, active]
        G = np.asarray((Xa.T @ Xa).toarray(), dtype=np.float32)
        G[np.diag_indices(m)] += np.float32(self.l2)
        # G is symmetric positive definite: a Cholesky inverse needs half the flops of LU.
        # G.T is G in Fortran order, so LAPACK works in place instead of copying 4*m^2 bytes.
        c, info = lapack.spotrf(G.T, lower=0, overwrite_a=1, clean=0)
        if info == 0:
            P, info = lapack.spotri(c, lower=0, overwrite_c=1)
        if info != 0:
            raise LiverecError(
                f"EASE could not invert X^T X + l2*I (LAPACK info={info}); l2={self.l2} is too small. "
                "Use a larger l2 (e.g. the default 500)."
            )
        for a in range(0, m, _BLOCK):  # spotri fills the upper triangle: mirror it in place
            e = min(a + _BLOCK, m)
            P[a:e, :a] = P[:a, a:e].T
            blk = P[a:e, a:e]
            P[a:e, a:e] = np.triu(blk) + np.triu(blk, 1).T
        if not P.flags.c_contiguous:
            P = P.T  # P is symmetric: its transpose is P in C order (fast row reads)
        d = np.diagonal(P).copy()
        P /= -d[None, :]
        P[np.diag_indices(m)] = 0.0
        self.B_ = P
        self.freeze()

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        s = interaction_strength(self._fb, event, self.weighting, self.all_events)
        if s <= 0 or not self.user_tables:  # without tables x_u is read from the request's events
            return
        a = self.hist_.strength(event.user, i)
        b = merge_strength(a, s, self.weighting)
        self.hist_.set(event.user, i, b)
        self.pop_ = grow(self.pop_, i + 1)
        self.pop_[i] += b - a
        lazy(self, "top_pop_", TopList).offer(i, self.pop_)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        hist = self.hist_.pop(user)
        if hist is not None:
            self.pop_[hist[0]] = np.maximum(0.0, self.pop_[hist[0]] - hist[1])
        row = self.fit_users_.pop(user, None)
        if row is not None and not self.user_tables:  # popularity is the fit's: take the user's fit row out
            mine = self.X_fit_.getrow(row)
            self.pop_[mine.indices] = np.maximum(0.0, self.pop_[mine.indices] - mine.data)
        if row is not None:
            # O(n_items^3) like fit: deletion is rare and must leave no trace in B.
            keep = np.ones(self.X_fit_.shape[0], dtype=np.float32)
            keep[row] = 0.0
            self.X_fit_ = sp.diags(keep) @ self.X_fit_
            self.X_fit_.eliminate_zeros()
            self._fit_b()
            self._build_neighbours()
        lazy(self, "top_pop_", TopList).invalidate()

    def _row(self, user: UserState, latest_last: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """The user's ``x_u`` as (items, strengths): kept (items ascending, or in the order
        first added with ``latest_last``) or read from the request's recent events."""
        if not self.user_tables:
            return recent_strengths(user, self.catalog_, self._fb, self.weighting, self.all_events)
        return self.hist_.get(user.user) if latest_last else self.hist_.get_sorted(user.user)

    # ----------------------------------------------------------------- retrieval
    def _build_neighbours(self) -> None:
        """Each fitted item's top :attr:`candidate_neighbours` items by ``B[h, i]`` (per fit)."""
        width = self.candidate_neighbours
        nl = NeighbourLists(width)
        m = len(self.B_)
        active = np.flatnonzero(self.bidx_ >= 0)  # B's row k is item active[k]
        keep = min(width, m)
        for a in range(0, m, _BLOCK):
            blk = self.B_[a : a + _BLOCK]
            if keep < m:
                part = np.argpartition(-blk, keep - 1, axis=1)[:, :keep]
            else:
                part = np.tile(np.arange(m), (len(blk), 1))
            nbr = np.full((len(blk), width), -1, dtype=np.int32)
            val = np.zeros((len(blk), width), dtype=np.float32)
            nbr[:, :keep] = active[part]
            val[:, :keep] = np.take_along_axis(blk, part, axis=1)
            nl.set_dense(active[a : a + len(blk)], nbr, val)
        self.neighbours_ = nl
        self.top_pop_ = TopList()

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """About the ``n`` best-scored live items (dense indices, best first), sublinearly.

        The union of the top-``B`` neighbour lists of the user's items (their
        :attr:`candidate_history` most recent), ranked by ``sum_h x_h B[h, i]`` over
        the lists. Cold users get the most popular items (a top list kept per event).
        """
        self._check_fitted()
        self.pop_ = grow(self.pop_, max(len(self.catalog_), 1))
        alive = self.catalog_.alive
        hist = self._row(user, latest_last=True)
        if hist is None or n <= 0:
            if n <= 0 or not self.cold_popularity:
                return np.zeros(0, dtype=np.int64)
            return lazy(self, "top_pop_", TopList).top(self.pop_, alive, n)
        if self.__dict__.get("neighbours_") is None:  # a payload saved before the lists existed
            self._build_neighbours()
        h, x = hist[0][-self.candidate_history :], hist[1][-self.candidate_history :]  # the latest added
        items, s = self.neighbours_.accumulate(h, x)
        ok = items < len(alive)
        ok[ok] = alive[items[ok]]
        return best(items[ok], s[ok], n)

    def floor(self, user: UserState) -> float | None:
        """The lowest score over live items: ``min_i sum_h x_h B[h, i]`` over the fitted
        items (O(|history| x fitted items), bounded by ``max_items``), and 0 if any live
        item is outside ``B``."""
        self._check_fitted()
        hist = self._row(user, latest_last=True)
        if hist is None:
            return 0.0  # zeros, or popularity (never negative)
        nb, m = len(self.bidx_), len(self.B_)
        fitted_alive, outside = self._fitted_alive()
        lo = 0.0 if outside else np.inf
        h, x = hist[0], hist[1].astype(np.float32)
        hb = self.bidx_[h[h < nb]]
        x = x[h < nb][hb >= 0]
        hb = hb[hb >= 0]
        if m and len(hb) and fitted_alive.any():
            acc = x[:1] @ self.B_[hb[:1]]
            for j in range(1, len(hb)):
                acc += x[j] * self.B_[hb[j]]
            lo = min(lo, float(acc[: len(fitted_alive)][fitted_alive].min()))
        return lo if np.isfinite(lo) else None

    def _fitted_alive(self) -> tuple[np.ndarray, bool]:
        """(which of B's columns are live items, whether a live item is outside B), kept per
        fit and catalog version: a request must not pass over the whole catalog."""
        cat = self.catalog_
        key = (cat.__dict__.get("uid"), cat.version, len(cat))
        kept = self.__dict__.get("_fitted_alive_kept")
        if kept is None or kept[0] is not self.bidx_ or kept[1] != key:
            alive = cat.alive
            active = np.flatnonzero(self.bidx_ >= 0)
            fitted_alive = alive[active[active < len(alive)]]
            self._fitted_alive_kept = kept = (self.bidx_, key, fitted_alive, cat.n_alive > int(fitted_alive.sum()))
        return kept[2], kept[3]

    # ------------------------------------------------------------------- scoring
    def _b_rows(self, n: int) -> np.ndarray:
        """B's row for each of the first ``n`` catalog rows, -1 for items outside B (kept
        per fit and catalog size: a request then maps its candidates in one gather)."""
        kept = self.__dict__.get("_b_rows_kept")
        if kept is None or kept[0] is not self.bidx_ or len(kept[1]) != n:
            rows = np.full(n, -1, dtype=np.int64)
            m = min(n, len(self.bidx_))
            rows[:m] = self.bidx_[:m]
            self._b_rows_kept = kept = (self.bidx_, rows)
        return kept[1]

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        self.pop_ = grow(self.pop_, max(len(self.catalog_), 1))
        hist = self._row(user)
        if hist is None:
            if not self.cold_popularity:  # in a fused engine, trending covers cold users
                return np.zeros(len(items), dtype=np.float32)
            return self.pop_[items.idx].astype(np.float32)  # cold user: popularity
        nb = len(self.bidx_)
        h, x = hist[0], hist[1].astype(np.float32)
        hb = self.bidx_[h[h < nb]]
        x = x[h < nb][hb >= 0]
        hb = hb[hb >= 0]
        ib = self._b_rows(max(len(self.catalog_), nb))[items.idx]
        ok = ib >= 0
        if len(hb) == 0 or not ok.any():
            return np.zeros(len(items), dtype=np.float32)
        if ok.sum() * 4 > len(self.B_):
            # Many items: add whole rows of B in place. Cheaper than gathering B[hist]
            # (a |history| x n_items copy) and feeding it to a BLAS gemv.
            acc = np.zeros(len(self.B_) + 1, dtype=np.float32)  # the last entry stays 0: items outside B
            body = acc[:-1]
            for j, w in zip(hb.tolist(), x.tolist()):
                if w == 1.0:
                    body += self.B_[j]
                else:
                    body += np.float32(w) * self.B_[j]
            return acc[ib]
        out = np.zeros(len(items), dtype=np.float32)
        out[ok] = (self.B_[np.ix_(hb, ib[ok])] * x[:, None]).sum(axis=0)
        return out
