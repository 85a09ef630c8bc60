"""ItemKNN for evaluation: the scores of :class:`liverec.models.ItemKNN`, top-k rows read from candidates.

With ``k_neighbours`` set, :class:`~liverec.models.ItemKNN` keeps only each history
item's k most similar items, so a score call computes the similarity of every entry of
every history row (a heavy MovieLens user's 2,000 rows hold ~10M co-occurrences) and
partitions each long row: ~12 ms per request on average over a stream replay, which
made ItemKNN the costliest baseline of ``liverec eval -p stream`` (its 12-point grid
and the final replay took ~1,300 of 1,508 s).

:class:`StreamItemKNN` computes the same similarities (the same float32 operations)
from a small part of each row. For every row ``h`` it keeps the ``2k + 16`` entries
with the highest ``v = c'_hi / sqrt(n_i)`` (``c'`` the shrunk count; the row's own
``1/sqrt(n_h)`` does not change the order within the row), cut where the next value
is strictly lower, and ``b_h``, the highest ``v`` of the entries left out. In a
stream counts and ``n`` only grow, so a left-out entry's ``v`` can only rise through
its own count; a count change that lifts a left-out entry to the bound adds it to the
row's candidates (a row with no room left is rebuilt when next read). A row's top k
read from its candidates is its true top k whenever their k-th similarity is above
``b_h / sqrt(n_h)`` (with a 1e-5 margin for rounding); a row failing that check is
rebuilt from all its entries. Ties at the cut are kept, as in the model: a row whose
tie crosses the last candidate moves to a wide tier (``k + 1000`` candidates), and
past that is read whole. The kept similarities are summed block by block, so scores
equal the model's up to the order of float32 additions (relative differences ~1e-7;
they reorder only items whose scores tie exactly).

:meth:`StreamItemKNN.view` scores one set of counts with several k and shrinkages
at once (the validation grid: neither ``k_neighbours`` nor ``shrink`` changes the
counts; each shrinkage keeps its own candidates, updated at every event); scores without
``k_neighbours``, for a few candidates, for cold users, and after ``forget`` (counts
may fall) come from :class:`~liverec.models.ItemKNN` itself.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Self, Sequence

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import ItemIds
from ..models.base import InteractionLog, Learner, UserState
from ..models.itemknn import ItemKNN
from ..models.retrieval import TopList
from ..types import Event

#: Entries a row may gain (count changes of left-out items) before it is rebuilt.
_DIRTY = 48
#: Candidates kept beyond k per row of the wide tier: rows where a tie crosses the narrow
#: tier's last candidate (MovieLens rows of rarely rated items hold hundreds of entries
#: with the same count and the same n_i) go there; past it, a row is read whole.
_WIDE = 1000
#: Rows are scored in blocks by candidate count (lo, hi]: less padding than one block.
_BUCKETS = ((-1, 32), (32, 128), (128, 512), (512, 1 << 40))
#: Relative margin between a row's k-th candidate similarity and its left-out bound.
_MARGIN = 1e-5


class StreamItemKNN(ItemKNN):
    """:class:`~liverec.models.ItemKNN` whose top-k scoring reads per-row candidates (same scores).

    Examples
    --------
    >>> import numpy as np
    >>> from liverec import Event
    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2); _ = cat.upsert(list("abcd"), np.ones((4, 2), np.float32), [{}] * 4, [""] * 4)
    >>> evs = [Event(user=u, item=i, timestamp=float(t)) for t, (u, i) in enumerate(
    ...     [("x", "a"), ("x", "b"), ("y", "a"), ("y", "c"), ("z", "b"), ("z", "c")])]
    >>> log = InteractionLog.from_events(evs, cat)
    >>> fast = StreamItemKNN(k_neighbours=1, shrink=0.0, max_history=None, all_events=True).fit(log)
    >>> ref = ItemKNN(k_neighbours=1, shrink=0.0, max_history=None, all_events=True).fit(log)
    >>> for m in (fast, ref):
    ...     m.learn_one(Event(user="w", item="a", timestamp=9.0))
    >>> items = cat.select(list("abcd"))
    >>> bool(np.allclose(fast.score(UserState("w"), items), ref.score(UserState("w"), items), rtol=1e-6))
    True
    """

    name: ClassVar[str] = "itemknn"

    def fit(self, log: InteractionLog) -> Self:
        super().fit(log)
        self.cand_: list[dict[str, Any]] | None = None
        # Candidates for the other shrinkages views score with (built lazily, like cand_).
        self.alt_: dict[float, list[dict[str, Any]] | None] = dict.fromkeys(self.__dict__.get("alt_", {}))
        self.exact_ = True  # False after forget: counts may have fallen, candidates are not kept
        return self

    @contextmanager
    def _shrunk(self, shrink: float) -> Iterator[None]:
        """This model scoring and keeping candidates with ``shrink`` for the duration.

        Shrinkage changes similarities, not counts: each shrinkage keeps its own
        candidate tiers (``alt_``), swapped in with the shrinkage itself.
        """
        if shrink == self.shrink:
            yield
            return
        alt = self.__dict__.setdefault("alt_", {})
        mine = (self.shrink, getattr(self, "cand_", None))
        self.shrink, self.cand_ = shrink, alt.get(shrink)
        try:
            yield
        finally:
            alt[shrink] = self.cand_
            self.shrink, self.cand_ = mine

    # ------------------------------------------------------------------ candidates
    def _tiers(self) -> list[dict[str, Any]]:
        """The candidate arrays: a narrow tier for every row, a wide one for rows with long ties.

        Allocated on first use with zeros (pages the OS maps only when written); rows
        are built lazily. A row's candidates are ``cols[r, :n[r]]`` with their counts.
        """
        n = self.counts_.n
        tiers = getattr(self, "cand_", None)
        if tiers is None or tiers[0]["valid"].shape[0] < n:
            assert self.k_neighbours is not None
            k = int(self.k_neighbours)
            tiers = []
            for keep in (2 * k + 16, k + max(k + 16, _WIDE)):
                width = keep + _DIRTY
                tiers.append({
                    "keep": keep,
                    "cols": np.zeros((n, width), dtype=np.int32),
                    "cnt": np.zeros((n, width), dtype=np.float32),
                    "n": np.zeros(n, dtype=np.int64),
                    "bound": np.full(n, -np.inf, dtype=np.float64),
                    "valid": np.zeros(n, dtype=bool),
                    "full": np.zeros(n, dtype=bool),  # a tie crosses the last candidate
                })
            self.cand_ = tiers
        return tiers

    def _build(self, tier: dict[str, Any], rows: np.ndarray, isq: np.ndarray) -> None:
        """(Re)build the candidates of ``rows`` in ``tier`` from all their entries, with the current ``n``."""
        keep = tier["keep"]
        k = int(self.k_neighbours or 0)
        C = self.counts_
        for r in rows.tolist():
            s, size = int(C.start[r]), int(C.size[r])
            cols = C.cols[s : s + size]
            cnt = C.vals[s : s + size]
            tier["full"][r] = False
            tier["bound"][r] = -np.inf
            if size > keep:
                # The highest v, best first, cut where the next value is strictly lower
                # (ties stay together): the bound is then below every candidate's v.
                v = self._shrink_inplace(cnt.copy()) * isq[cols]
                top = np.argpartition(v, size - keep - 1)[size - keep - 1 :]
                top = top[np.argsort(-v[top], kind="stable")]
                tv = v[top]
                gap = np.flatnonzero(tv[:-1] > tv[1:])
                if not len(gap) or gap[-1] + 1 < k:  # a tie across the cut
                    tier["full"][r] = True
                    gap = np.array([keep - 1])
                j = int(gap[-1]) + 1
                tier["bound"][r] = float(tv[j])  # the (j+1)-th highest: every entry left out is below
                cols, cnt = cols[top[:j]], cnt[top[:j]]
            m = len(cols)
            tier["cols"][r, :m] = cols
            tier["cnt"][r, :m] = cnt
            tier["n"][r] = m
            tier["valid"][r] = True

    def _update(self, tier: dict[str, Any], js: np.ndarray, i: int, now: np.ndarray, v: np.ndarray) -> None:
        """``C[j, i]`` is now ``now[j]`` (``v`` its shrunk count over ``sqrt(n_i)``) for rows ``js``."""
        sel = tier["valid"][js]
        js, now, v = js[sel], now[sel], v[sel]
        if not len(js):
            return
        cols = tier["cols"][js]
        eq = (cols == i) & (np.arange(cols.shape[1]) < tier["n"][js][:, None])
        has = eq.any(axis=1)
        slot = np.argmax(eq, axis=1)
        tier["cnt"][js[has], slot[has]] = now[has]
        # A left-out entry whose v stays below its row's bound stays left out.
        up = ~has & (v.astype(np.float64) * (1.0 + _MARGIN) >= tier["bound"][js])
        add, now = js[up], now[up]
        room = tier["n"][add] < tier["cols"].shape[1]
        tier["valid"][add[~room]] = False  # no room left: rebuilt when next read
        rows = add[room]
        at = tier["n"][rows]
        tier["cols"][rows, at] = i
        tier["cnt"][rows, at] = now[room]
        tier["n"][rows] = at + 1

    def learn_many(self, events: Sequence[Event]) -> None:
        """Event by event: :meth:`_offer_neighbours` reads the counts as each event leaves
        them, which the model's batch pass (counts for the whole run first) does not keep."""
        for e in events:
            self.learn_one(e)

    def _offer_neighbours(self, i: int, js: np.ndarray) -> None:
        """Called by the model's ``learn_one`` once ``C[i, j]`` and ``C[j, i]`` changed for ``js``.

        The model's neighbour lists (its candidate retrieval, which evaluation never
        asks for) are dropped instead of updated, and rebuilt from the counts if
        ``candidates`` is called; the rows' candidates are updated here, those of
        every shrinkage a view scores with.
        """
        self.__dict__.pop("neighbours_", None)
        self._offer_candidates(i, js)
        for shrink in list(self.__dict__.get("alt_", {})):
            with self._shrunk(shrink):
                self._offer_candidates(i, js)

    def _offer_candidates(self, i: int, js: np.ndarray) -> None:
        """The candidate tiers of the current shrinkage after ``C[i, js]`` and ``C[js, i]`` changed."""
        tiers = getattr(self, "cand_", None)
        if tiers is None:
            return
        for tier in tiers:
            if i < len(tier["valid"]):
                tier["valid"][i] = False  # row i changed in many columns: rebuilt when next read
        js = js[js < len(tiers[0]["valid"])]
        js = js[tiers[0]["valid"][js] | tiers[1]["valid"][js]]
        if not len(js):
            return
        now = self.counts_.vals[self.counts_.find(js, i)]  # C[j, i] from here on
        v = self._shrink_inplace(now.copy()) * self._inv_sqrt_n(np.array([i]))
        for tier in tiers:
            self._update(tier, js, i, now, v)

    def _build_neighbours(self, C: sp.csr_matrix) -> None:
        self.__dict__.pop("neighbours_", None)  # built from the counts when candidates() asks (never in evaluation)
        self.top_pop_ = TopList()

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        ItemKNN._build_neighbours(self, self.counts_.to_csr())
        return super().candidates(user, n)

    def forget(self, user: str, events: Any) -> None:
        super().forget(user, events)
        self.cand_ = None
        self.alt_ = dict.fromkeys(self.__dict__.get("alt_", {}))
        self.exact_ = False

    # ------------------------------------------------------------------ scoring
    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        return self.score_ks(user, items, (self.k_neighbours,))[0]

    def _model_score(self, user: UserState, items: ItemIds, k: int | None) -> np.ndarray:
        """The model's own score with ``k`` neighbours per history item."""
        mine = self.k_neighbours
        self.k_neighbours = k
        try:
            return super().score(user, items)
        finally:
            self.k_neighbours = mine

    def score_ks(self, user: UserState, items: ItemIds, ks: Sequence[int | None]) -> list[np.ndarray]:
        """The scores with each of ``ks`` neighbours per history item (none above ``k_neighbours``).

        The history rows' candidates (kept for ``k_neighbours``) and similarities are
        computed once; each k then takes its own top k of every row.
        """
        self._check_fitted()
        n_cat = max(len(self.catalog_), 1)
        self._ensure(n_cat)
        hx = self._history(user)
        kmax = self.k_neighbours
        if (kmax is None or hx is None or len(items) == 0 or len(items) * 4 < n_cat
                or not getattr(self, "exact_", False) or any(k is None or k > kmax for k in ks)):
            return [self._model_score(user, items, k) for k in ks]
        h, x = hx
        sizes = self.counts_.size[h]
        # With no row cut the model sums every entry in another order: its own path.
        outs = {k: self._model_score(user, items, k) for k in ks if k is not None and not (sizes > k).any()}
        todo_ks = sorted({k for k in ks if k is not None and k not in outs})
        if todo_ks:
            got = self._sums(h, x, sizes, todo_ks)
            nh = self.n_[h].astype(np.float32)
            den = nh + np.float32(self.shrink)
            own = x * np.divide(nh, den, out=np.zeros_like(nh), where=den > 0)  # sim(h, h)
            for k, out in zip(todo_ks, got):
                out[h] += own
                outs[k] = out[items.idx].astype(np.float32)
        return [outs[k] for k in ks]  # type: ignore[index]

    def _sums(self, h: np.ndarray, x: np.ndarray, sizes: np.ndarray, ks: list[int]) -> list[np.ndarray]:
        """``sum_h x_h sim_k(h, .)`` for each k of ``ks`` (ascending), from the candidates."""
        kmax = int(self.k_neighbours or 0)
        isq = self._inv_sqrt_n()
        parts: list[list[np.ndarray]] = [[] for _ in ks]  # per k, each block's sum
        todo = np.ones(len(h), dtype=bool)
        for tier in self._tiers():
            rows = np.flatnonzero(todo)
            stale = h[rows][~tier["valid"][h[rows]]]
            if len(stale):
                self._build(tier, stale, isq)
            rows = rows[~tier["full"][h[rows]]]
            # Rows of similar length together: a block is as wide as its longest row.
            n_r = tier["n"][h[rows]]
            for lo, hi in _BUCKETS:
                part = rows[(n_r > lo) & (n_r <= hi)]
                if not len(part):
                    continue
                got = self._top(tier, h, part, sizes, ks, kmax, isq)
                if got[4].any():  # left-out entries may have reached the top k: rebuild those rows
                    self._build(tier, h[part[got[4]]], isq)
                    part = part[~tier["full"][h[part]]]
                    got = self._top(tier, h, part, sizes, ks, kmax, isq)
                for j, thr in enumerate(got[3]):
                    parts[j].append(self._kept(got[0], got[1], got[2], thr, ~got[4], x))
                todo[part[~got[4]]] = False
        if todo.any():  # rows whose top k no tier certifies: read whole, as the model does
            w = np.flatnonzero(todo)
            sub = self.counts_.gather(h[w])
            self._shrink_inplace(sub.data)
            counts = np.diff(sub.indptr)
            sub.data *= np.repeat(isq[h[w]], counts)
            sub.data *= isq[sub.indices.astype(np.intp)]
            for j, k in enumerate(ks):
                data = sub.data.copy()
                for row in np.flatnonzero(counts > k).tolist():
                    seg = data[sub.indptr[row] : sub.indptr[row + 1]]
                    seg[seg < np.partition(seg, len(seg) - k)[len(seg) - k]] = 0.0
                one = sp.csr_matrix((data, sub.indices, sub.indptr), shape=sub.shape)
                parts[j].append(np.asarray(one.T @ x[w]))
        # Blocks summed one after the other: the model's sum up to the order of float32 additions.
        outs = []
        for blocks in parts:
            out = blocks[0] if blocks else np.zeros(self.counts_.n, dtype=np.float32)
            for b in blocks[1:]:
                out += b
            outs.append(out)
        return outs

    def _top(
        self, tier: dict[str, Any], h: np.ndarray, rows: np.ndarray, sizes: np.ndarray, ks: list[int],
        kmax: int, isq: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
        """Candidates of rows ``h[rows]`` in ``tier``: positions in h, columns, similarities,
        each row's k-th largest for each k of ``ks``, and the rows they do not certify.

        Similarities are the model's float32 ``(c' / sqrt(n_h)) / sqrt(n_i)``; a row not
        cut (k entries or fewer) keeps every entry (threshold -1). The candidates are
        kept for ``kmax``: a row certified for kmax is certified for every smaller k.
        """
        hr = h[rows]
        width = max(int(tier["n"][hr].max()) if len(hr) else 0, 1)  # >= k + 1 if a row is cut
        cols = tier["cols"][hr, :width]
        ok = np.arange(width) < tier["n"][hr][:, None]
        sims = self._shrink_inplace(tier["cnt"][hr, :width])
        isq_h = isq[hr]
        sims *= isq_h[:, None]
        sims *= isq[cols]
        sims[~ok] = -np.inf
        size = sizes[rows]
        need = sorted({k for k in (*ks, kmax) if k < width and (size > k).any()})
        thr = {k: np.full(len(hr), -1.0, dtype=np.float32) for k in (*ks, kmax)}
        if need:
            first = size > need[0]  # rows cut for the smallest k: every other cut row among them
            srt = np.partition(sims[first], [width - k for k in need], axis=1)
            for k in need:
                thr[k][size > k] = srt[(size > k)[first], width - k]
        bound = tier["bound"][hr] * isq_h.astype(np.float64) * (1.0 + _MARGIN)
        bad = (size > kmax) & (thr[kmax].astype(np.float64) <= bound)
        return rows, cols, sims, [thr[k] for k in ks], bad

    def _kept(
        self, rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, thr: np.ndarray, sel: np.ndarray, x: np.ndarray
    ) -> np.ndarray:
        """``sum_h x_h sim(h, .)`` over the selected rows' entries at or above their threshold.

        The block is summed as it is padded (a padding entry adds 0 to column 0): no
        gather of the kept entries.
        """
        m, width = sims.shape
        keep = (sims >= thr[:, None]) & sel[:, None]  # the model zeroes the rest: they add nothing
        data = np.where(keep, sims, np.float32(0.0)).ravel()
        indptr = np.arange(0, m * width + 1, width, dtype=np.int64)
        sub = sp.csr_matrix((data, cols.ravel(), indptr), shape=(m, self.counts_.n))
        return np.asarray(sub.T @ x[rows])

    # ------------------------------------------------------------------ grid
    #: Hyperparameters that change scoring, not the counts: grid points differing only in
    #: these are scored from one state (:class:`~liverec.evaluation.tuning.SharesGrid`).
    scoring_params: ClassVar[tuple[str, ...]] = ("k_neighbours", "shrink")

    @classmethod
    def grid_state(cls, points: Sequence[dict[str, Any]]) -> tuple[StreamItemKNN, list[KView]]:
        """One model for grid ``points`` (full parameters, equal but for :attr:`scoring_params`)
        and a view per point: it keeps the counts, every point is scored from them.

        The model keeps candidates for the largest ``k_neighbours`` (None, "every
        neighbour", if a point has it), with the first point's shrinkage.
        """
        ks = [p.get("k_neighbours") for p in points]
        kmax = None if any(k is None for k in ks) else max(int(k) for k in ks if k is not None)
        model = cls(**{**points[0], "k_neighbours": kmax})
        return model, [model.view(k, float(p.get("shrink", model.shrink))) for k, p in zip(ks, points)]

    def learn_one(self, event: Event) -> None:
        super().learn_one(event)
        self.revealed_ = getattr(self, "revealed_", 0) + 1

    def view(self, k: int | None, shrink: float | None = None) -> KView:
        """The model with ``k`` neighbours (at most ``k_neighbours``) and ``shrink`` (default
        the model's), on this model's counts.

        Views of one model share its state: a stream replay fits and teaches the model
        once, and every view's request for the same user at the same point of the
        stream is answered from one :meth:`score_ks` call per shrinkage over all the
        views' k.
        """
        shrink = self.shrink if shrink is None else float(shrink)
        if shrink != self.shrink:
            self.__dict__.setdefault("alt_", {}).setdefault(shrink, None)
        views = self.__dict__.setdefault("views_", [])
        views.append((k, shrink))
        return KView(self, k, shrink)

    def score_view(self, user: UserState, items: ItemIds, k: int | None, shrink: float | None = None) -> np.ndarray:
        shrink = self.shrink if shrink is None else shrink
        key = (user.user, getattr(self, "revealed_", 0))
        memo = self.__dict__.get("memo_")
        if memo is None or memo[0] != key or not np.array_equal(memo[1], items.idx):
            by_shrink: dict[float, set[int | None]] = {}
            for vk, vs in self.__dict__.get("views_", [(k, shrink)]):
                by_shrink.setdefault(vs, set()).add(vk)
            scores: dict[tuple[int | None, float], np.ndarray] = {}
            for s, kset in by_shrink.items():
                ks = sorted(kset, key=lambda v: (v is None, v or 0))
                with self._shrunk(s):
                    scores.update({(vk, s): out for vk, out in zip(ks, self.score_ks(user, items, ks))})
            memo = (key, items.idx.copy(), scores)
            self.memo_ = memo
        return memo[2][(k, shrink)]


class KView(Learner):
    """One (k, shrinkage) of a :class:`StreamItemKNN` that scores several (its :meth:`~StreamItemKNN.view`).

    Fitted and taught through the model it views: its own ``fit`` and ``learn_one``
    do nothing.
    """

    name: ClassVar[str] = "itemknn-view"

    def __init__(self, model: StreamItemKNN | None = None, k: int | None = 20, shrink: float | None = None) -> None:
        self.model = model
        self.k = k
        self.shrink = shrink

    def fit(self, log: InteractionLog) -> Self:
        return self

    def learn_one(self, event: Event) -> None:
        pass

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        assert self.model is not None, "a view is made by StreamItemKNN.view"
        return self.model.score_view(user, items, self.k, self.shrink)
