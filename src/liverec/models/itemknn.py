"""ItemKNN: item-based collaborative filtering, cosine on the user x item matrix, per event."""

from __future__ import annotations

from array import array
from typing import ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .pop import (
    check_weighting, grow, history_rows, interaction_pairs, interaction_strength, merge_strength, recent_strengths,
)
from .retrieval import NeighbourLists, SparseRows, TopList, best, column_sums, lazy, transposed_product
from .useritems import UserItems

#: A row's unsorted tail (columns added since the row was last sorted) is sorted into it
#: beyond this many entries: short enough that searching every tail an event touches
#: stays one small vectorised gather, long enough that re-sorting rows stays rare.
_TAIL = 32
#: Up to this many rows, :meth:`_RowStore.find` searches row by row (per-call numpy
#: overhead dominates tiny vectorised rounds).
_FEW = 24
#: Free entries each row gets when the arrays are laid out (besides a quarter of its size).
_SLACK = 8
#: Rows averaging at least this many entries are laid out by one slice copy each.
_ROW_COPY = 64
#: Pairs of (event item, history item) ``learn_many`` updates the counts for in one pass.
_RUN_PAIRS = 1 << 20


def stable_order(keys: np.ndarray, bound: int) -> tuple[np.ndarray, np.ndarray]:
    """``(order, keys[order])`` with ``order = np.argsort(keys, kind="stable")``, for
    non-negative integer keys below ``bound``.

    Sorts ``key * len + position`` instead (unique, so any sort is stable): numpy's SIMD
    sort of int64 is several times faster than the merge sort a stable argsort of random
    keys runs (0.4 vs 6.8 ms for 115k keys). Falls back to the stable argsort where the
    combined key could overflow.

    >>> stable_order(np.array([3, 1, 3, 0]), 4)
    (array([3, 1, 0, 2]), array([0, 1, 3, 3]))
    """
    m = len(keys)
    if m == 0 or bound * m >= 1 << 62:
        order = np.argsort(keys, kind="stable")
        return order, keys[order]
    comp = keys.astype(np.int64) * m + np.arange(m, dtype=np.int64)
    comp.sort()
    return comp % m, comp // m


def _by_pair(rows: np.ndarray, cols: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Increments ``(rows[k], cols[k])`` (entries of an ``n``-column matrix) grouped by pair:
    ``(order, head, pair_rows, pair_cols)``, ``order`` sorting them by pair and then in
    increment order, ``head`` marking each pair's first increment in that order."""
    order, ks = stable_order(rows.astype(np.int64) * n + cols, n * n)
    head = np.concatenate(([True], ks[1:] != ks[:-1]))
    return order, head, ks[head] // n, ks[head] % n


def _running_values(cur: np.ndarray, v: np.ndarray, order: np.ndarray, head: np.ndarray,
                    after: np.ndarray | None = None) -> None:
    """Add to each pair's value ``cur[p]`` its increments ``v`` in increment order, in place
    (``order``/``head`` as :func:`_by_pair` gives them), each sum in float64 rounded to
    float32 once, as :meth:`_RowStore.add`; ``after[k]``, if given, is the value right after
    increment ``k``."""
    first = np.flatnonzero(head)
    grp = np.cumsum(head) - 1
    rank = np.arange(len(head)) - first[grp]  # 0 for a pair's first increment, 1 for its second, ...
    by_rank = np.argsort(rank, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(np.bincount(rank))))
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # each round touches distinct pairs
        sel = order[by_rank[a:b]]
        g = grp[by_rank[a:b]]
        cur[g] = (cur[g].astype(np.float64) + v[sel]).astype(np.float32)
        if after is not None:
            after[sel] = cur[g]


class _RowStore:
    """The co-occurrence counts ``C`` as growable rows: in-place increments, no merge to score.

    Row ``r`` lives in ``cols[start[r] : start[r] + size[r]]`` (and ``vals`` alike),
    inside a slot of ``cap[r]`` entries: its first ``nsorted[r]`` columns are sorted,
    the rest is a short unsorted tail of columns added since (at most ``_TAIL`` entries
    before the row is re-sorted). An increment of an existing entry is applied in place
    (found by a binary search, vectorised over rows); a new entry is appended to the
    tail, the row moving to the end of the arrays with room to grow when its slot is
    full. Reading rows for scoring is then a plain gather, in the order asked: no
    sparse addition or sorting per request. The arrays are compacted (slots laid out
    again in row order with fresh slack) when they fill up.
    """

    def __init__(self, csr: sp.csr_matrix) -> None:
        self._layout(csr.indices, csr.data, csr.indptr[:-1], np.diff(csr.indptr), np.diff(csr.indptr))

    # ------------------------------------------------------------------ layout
    def _layout(self, cols: np.ndarray, vals: np.ndarray, start: np.ndarray, size: np.ndarray,
                nsorted: np.ndarray) -> None:
        """Copy the rows described by ``start``/``size`` into fresh arrays, with slack per row."""
        size = size.astype(np.int64)
        cap = size + size // 4 + _SLACK
        new_start = np.zeros(len(size), dtype=np.int64)
        np.cumsum(cap[:-1], out=new_start[1:])
        total = int(cap.sum())
        live = int(size.sum())
        self.cols = np.zeros(total + total // 2 + 16, dtype=np.int32)  # room for rows to move
        self.vals = np.zeros(len(self.cols), dtype=np.float32)
        if live and live >= _ROW_COPY * len(size):
            # Long rows: a slice copy per row (memcpy) beats gathering through index arrays
            # (0.02 vs 0.43 s for 11.6M entries in 10k rows).
            for a, b, k in zip(start.tolist(), new_start.tolist(), size.tolist()):
                self.cols[b : b + k] = cols[a : a + k]
                self.vals[b : b + k] = vals[a : a + k]
        elif live:
            src = np.repeat(start.astype(np.int64) - np.cumsum(size) + size, size) + np.arange(live)
            dst = np.repeat(new_start - np.cumsum(size) + size, size) + np.arange(live)
            self.cols[dst] = cols[src]
            self.vals[dst] = vals[src]
        self.start, self.size, self.cap = new_start, size, cap
        self.nsorted = nsorted.astype(np.int64)
        self.fill = total

    def _compact(self) -> None:
        self._layout(self.cols, self.vals, self.start, self.size, self.nsorted)

    @property
    def n(self) -> int:
        return len(self.start)

    @property
    def nnz(self) -> int:
        return int(self.size.sum())

    def resize(self, n: int) -> None:
        """Add empty rows up to ``n``."""
        k = n - self.n
        if k > 0:
            self.start = np.concatenate([self.start, np.full(k, self.fill, dtype=np.int64)])
            self.size, self.cap, self.nsorted = (
                np.concatenate([a, np.zeros(k, dtype=np.int64)]) for a in (self.size, self.cap, self.nsorted)
            )

    def _reserve(self, rows: np.ndarray, need: np.ndarray) -> None:
        """Room for ``need[k]`` entries in each row ``rows[k]`` (moving rows to the end).

        The arrays are compacted (or grown) at most once, before any row moves, so every
        row asked for has its room on return.
        """
        short = need > self.cap[rows]
        if not short.any():
            return
        caps = need + need // 2 + 8
        if self.fill + int(caps[short].sum()) > len(self.cols):
            self._compact()
            short = need > self.cap[rows]
            end = self.fill + int(caps[short].sum())
            if end > len(self.cols):
                self.cols, self.vals = grow(self.cols, end), grow(self.vals, end)
        for r, cap in zip(rows[short].tolist(), caps[short].tolist()):
            self._move(r, cap)

    def _move(self, r: int, cap: int) -> None:
        """Row ``r`` to a new slot of ``cap`` entries at the end (its old slot is garbage)."""
        s, n, to = int(self.start[r]), int(self.size[r]), self.fill
        self.cols[to : to + n] = self.cols[s : s + n]
        self.vals[to : to + n] = self.vals[s : s + n]
        self.start[r], self.cap[r] = to, cap
        self.fill += cap

    def _sort_row(self, r: int) -> None:
        s, n = int(self.start[r]), int(self.size[r])
        order = np.argsort(self.cols[s : s + n], kind="stable")  # two sorted runs: a merge
        self.cols[s : s + n] = self.cols[s : s + n][order]
        self.vals[s : s + n] = self.vals[s : s + n][order]
        self.nsorted[r] = n

    # ------------------------------------------------------------------ access
    def find(self, rows: np.ndarray, col: int | np.ndarray) -> np.ndarray:
        """Position of entry ``(rows[k], col)`` (or ``(rows[k], col[k])``) for each k, -1 where absent."""
        if len(rows) <= _FEW:  # a short history: one search per row beats the vectorised rounds
            return self._find_each(rows, col)
        want = np.broadcast_to(np.asarray(col, dtype=np.int64), rows.shape)
        s = self.start[rows]
        m = self.nsorted[rows]
        end = s + m
        cols = self.cols
        last = len(cols) - 1
        lo, left = s.copy(), m.copy()
        for _ in range(int(m.max()).bit_length() if len(m) else 0):
            # One round of a lower-bound search in every row's sorted part at once, on whole
            # arrays (a search that has ended has nothing left and stays put).
            half = left >> 1
            go = (cols[np.minimum(lo + half, last)] < want) & (left > 0)
            lo += np.where(go, half + 1, 0)
            left = np.where(go, left - half - 1, half)
        pos = np.where((lo < end) & (cols[np.minimum(lo, last)] == want), lo, -1)
        tail = np.flatnonzero((pos < 0) & (self.size[rows] > self.nsorted[rows]))
        if len(tail):  # the short unsorted tails, gathered in one go
            a = end[tail]
            n = s[tail] + self.size[rows[tail]] - a
            at = np.repeat(a - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
            hit = np.flatnonzero(cols[at] == np.repeat(want[tail], n))
            pos[tail[np.searchsorted(np.cumsum(n), hit, side="right")]] = at[hit]
        return pos

    def _find_each(self, rows: np.ndarray, col: int | np.ndarray) -> np.ndarray:
        """:meth:`find` row by row (for a few rows)."""
        want = np.broadcast_to(np.asarray(col, dtype=np.int64), rows.shape).tolist()
        st, ns, sz = self.start[rows].tolist(), self.nsorted[rows].tolist(), self.size[rows].tolist()
        return np.array([self._position(*row) for row in zip(st, ns, sz, want)], dtype=np.int64)

    def _position(self, a: int, m: int, n: int, c: int) -> int:
        """Position of column ``c`` in the row at ``a`` (``m`` sorted entries of ``n``), or -1."""
        cols = self.cols
        if m:
            p = int(cols[a : a + m].searchsorted(c))
            if p < m and cols[a + p] == c:
                return a + p
        if n > m:
            hit = (cols[a + m : a + n] == c).nonzero()[0]
            if len(hit):
                return a + m + int(hit[0])
        return -1

    def position(self, r: int, c: int) -> int:
        """Position of entry ``(r, c)``, -1 where absent."""
        return self._position(int(self.start[r]), int(self.nsorted[r]), int(self.size[r]), c)

    def find_in_row(self, r: int, cols: np.ndarray) -> np.ndarray:
        """Position of entry ``(r, c)`` for each ``c`` in ``cols``, -1 where absent."""
        s, m, n = int(self.start[r]), int(self.nsorted[r]), int(self.size[r])
        if m:
            head = self.cols[s : s + m]
            p = head.searchsorted(cols)
            np.minimum(p, m - 1, out=p)
            pos = np.where(head[p] == cols, p + s, -1)
        else:
            pos = np.full(len(cols), -1, dtype=np.int64)
        if n > m and len(cols) * (n - m) <= _FEW * _TAIL:  # a short tail: compare all pairs
            eq = self.cols[s + m : s + n][None, :] == cols[:, None]
            hit = eq.any(axis=1)
            pos[hit] = s + m + eq[hit].argmax(axis=1)
        elif n > m:
            tail = self.cols[s + m : s + n]
            order = np.argsort(tail, kind="stable")
            p = np.minimum(np.searchsorted(tail[order], cols), n - m - 1)
            hit = tail[order][p] == cols
            pos[hit] = s + m + order[p[hit]]
        return pos

    def add(self, pos: np.ndarray, v: np.ndarray) -> None:
        """``C += v`` at existing positions (distinct): summed in float64, rounded once."""
        self.vals[pos] = (self.vals[pos].astype(np.float64) + v).astype(np.float32)

    def append_to_row(self, r: int, cols: np.ndarray, v: np.ndarray) -> None:
        """New entries ``(r, c)`` (absent until now), in order."""
        k = len(cols)
        if not k:
            return
        at = int(self.size[r])
        if at + k > self.cap[r]:
            self._reserve(np.array([r], dtype=np.int64), np.array([at + k], dtype=np.int64))
        at += int(self.start[r])
        self.cols[at : at + k] = cols
        self.vals[at : at + k] = v
        self.size[r] += k
        if self.size[r] - self.nsorted[r] > _TAIL:
            self._sort_row(r)

    def append_one(self, r: int, c: int, v: float) -> None:
        """A new entry ``(r, c)`` (absent until now): :meth:`append_to_row` of one entry,
        without making arrays of it."""
        at = int(self.size[r])
        if at + 1 > self.cap[r]:
            self._reserve(np.array([r], dtype=np.int64), np.array([at + 1], dtype=np.int64))
        at += int(self.start[r])
        self.cols[at] = c
        self.vals[at] = v
        self.size[r] += 1
        if self.size[r] - self.nsorted[r] > _TAIL:
            self._sort_row(r)

    def append_to_rows(self, rows: np.ndarray, col: int, v: np.ndarray) -> None:
        """New entries ``(r, col)`` for each (distinct) ``r`` in ``rows``."""
        if not len(rows):
            return
        self._reserve(rows, self.size[rows] + 1)
        at = self.start[rows] + self.size[rows]
        self.cols[at] = col
        self.vals[at] = v
        self.size[rows] += 1
        for r in rows[self.size[rows] - self.nsorted[rows] > _TAIL].tolist():
            self._sort_row(r)

    def append(self, rows: np.ndarray, cols: np.ndarray, v: np.ndarray) -> None:
        """New entries ``(rows[k], cols[k])`` (distinct pairs, absent until now), in order per row."""
        if not len(rows):
            return
        order = np.argsort(rows, kind="stable")
        rs = rows[order]
        head = np.concatenate(([True], rs[1:] != rs[:-1]))
        ur = rs[head]
        first = np.flatnonzero(head)
        count = np.diff(first, append=len(rs))
        self._reserve(ur, self.size[ur] + count)
        at = np.repeat(self.start[ur] + self.size[ur] - first, count) + np.arange(len(rs))
        self.cols[at] = cols[order]
        self.vals[at] = v[order].astype(np.float32)
        self.size[ur] += count
        for r in ur[self.size[ur] - self.nsorted[ur] > _TAIL].tolist():
            self._sort_row(r)

    def add_in_order(self, rows: np.ndarray, cols: np.ndarray, v: np.ndarray) -> np.ndarray:
        """``C[rows[k], cols[k]] += v[k]`` for k = 0, 1, ... in order, to the same values as
        one ``add``/``append`` per increment (each sum in float64, rounded to float32 once);
        returns every entry's value right after its increment."""
        order, head, pair_r, pair_c = _by_pair(rows, cols, max(self.n, 1))
        pos = self.find(pair_r, pair_c)
        old = pos >= 0
        # Each pair's running value, from its stored one (0 for a new entry), is worked out
        # first; the store is written once at the end (appending may move rows, so positions
        # found before it would not hold across it).
        cur = np.zeros(len(pos), dtype=np.float32)
        cur[old] = self.vals[pos[old]]
        after = np.empty(len(v), dtype=np.float32)
        _running_values(cur, v, order, head, after)
        self.vals[pos[old]] = cur[old]
        self.append(pair_r[~old], pair_c[~old], cur[~old])
        return after

    def add_symmetric(self, a: np.ndarray, b: np.ndarray, v: np.ndarray) -> None:
        """``C[a[k], b[k]] += v[k]`` and ``C[b[k], a[k]] += v[k]`` for k = 0, 1, ... in order
        (``a[k] != b[k]``), for a symmetric ``C`` (``(r, c)`` stored, with its value, exactly
        when ``(c, r)`` is): the same values as :meth:`add_in_order` on both increments of
        each k, with each pair's running value worked out once and the mirrored entry
        searched only where the pair exists."""
        order, head, pair_lo, pair_hi = _by_pair(np.minimum(a, b), np.maximum(a, b), max(self.n, 1))
        pos = self.find(pair_lo, pair_hi)
        old = pos >= 0
        mirror = self.find(pair_hi[old], pair_lo[old])
        cur = np.zeros(len(pos), dtype=np.float32)
        cur[old] = self.vals[pos[old]]
        _running_values(cur, v, order, head)
        self.vals[pos[old]] = cur[old]
        self.vals[mirror] = cur[old]
        new = ~old
        self.append(np.concatenate([pair_lo[new], pair_hi[new]]), np.concatenate([pair_hi[new], pair_lo[new]]),
                    np.concatenate([cur[new], cur[new]]))

    def rows(self, rows: np.ndarray) -> SparseRows:
        """Rows ``rows`` (in that order) as fresh float32 CSR arrays; columns unsorted within a row."""
        s, n = self.start[rows].tolist(), self.size[rows]
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(n, out=indptr[1:])
        cols = np.concatenate([self.cols[a : a + k] for a, k in zip(s, n.tolist())]) if len(rows) else np.zeros(0, np.int32)
        vals = np.concatenate([self.vals[a : a + k] for a, k in zip(s, n.tolist())]) if len(rows) else np.zeros(0, np.float32)
        return SparseRows(vals, cols, indptr, (len(rows), self.n))

    def gather(self, rows: np.ndarray) -> sp.csr_matrix:
        """:meth:`rows` as a scipy CSR."""
        r = self.rows(rows)
        return sp.csr_matrix((r.data, r.indices, r.indptr), shape=r.shape)

    def to_csr(self) -> sp.csr_matrix:
        """The whole matrix, canonical (sorted, no explicit zeros)."""
        m = self.gather(np.arange(self.n))
        m.sort_indices()
        m.eliminate_zeros()
        return m


@register
class ItemKNN(Learner):
    """Items similar to the user's history: ``score(i) = sum_h x_uh * sim(h, i)``.

    ``sim(h, i) = C_hi / sqrt(n_h * n_i) * C_hi / (C_hi + shrink)``: cosine on the
    user x item matrix ``X`` (binary, or each pair's strongest positive weight with
    ``weighting="feedback"``), ``C = X^T X`` (how many users interacted with both
    items), ``n_i = C_ii``, damped by significance shrinkage (Koren 2008) when few
    users support it. With ``k_neighbours`` only each history item's k most similar
    items count (ties at the cut included, so results do not depend on storage order).
    The history item itself counts with ``sim(h, h) = n_h/(n_h+shrink)``; the engine's
    seen-filter removes it from lists. One event of user ``u`` on item ``i`` updates
    ``C_ij`` for every ``j`` in u's history: O(|history|); scores are then exactly
    those of a batch fit on the same events. The history is the learner's own
    per-user item set, never truncated. Cold users get popularity (``n_i``).

    Speed: a score call reads the history's rows of C, so it costs sum_h nnz(C_h)
    (MovieLens-small: 1.3M entries for a 200-item history, ~10M for 2,000 items). The
    full sum (default) is then one sparse matrix-vector product: ~5 ms at 200 items,
    ~40 ms at 2,000 (two shared cores); ``k_neighbours`` needs every similarity plus a
    partition per history row, ~3-4x slower. Shrinking the numerator (not adding
    ``shrink`` to the denominator) keeps the full sum factorised; both variants and
    top-k reach about the same recall on MovieLens-small (recall@20 0.136-0.141).

    Storage: ``C`` for MovieLens-small already has 26M non-zeros, far too many for a
    dict of dicts (~100 bytes per entry, and slow to turn into arrays) but fine as
    float32 arrays (~8 bytes). ``fit`` builds it in one sparse product ``X^T X``; it is
    then kept as rows with slack (:class:`_RowStore`), so a per-event increment is made
    in place (vectorised over the O(|history|) entries an event touches) and a score
    call only gathers the history's rows. (Earlier designs: a dict-of-dicts delta cost
    ~100 ms per score to turn into arrays; a COO delta log merged into a CSR base cost a
    sparse addition over all the history's rows per score, ~3 ms of the ~5 ms.)

    Parameters
    ----------
    k_neighbours : int or None
        Neighbours kept per history item at score time (None: all, the fast path).
    shrink : float
        Significance shrinkage: similarities resting on few common users are damped.
    weighting : {"binary", "feedback"}
        An interaction counts 1, or its positive feedback weight.
    all_events : bool
        Count every event (e.g. every rating) as an interaction, not only positive ones.
    feedback : FeedbackConfig, optional
        Kind weights (default: the built-in ones).
    seed : int
        Unused (deterministic); kept for the protocol.
    user_tables : bool
        Keep each user's item set and update ``C`` per event (default), or keep nothing per
        user learned online: a request reads the user's items from their recent events
        (``UserState.history``) and ``C`` is the fit's until the next fit (an event's
        update needs the user's earlier items). The fit's item sets are kept so that an
        erasure takes the user out of ``C``.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user="x", item="a", timestamp=0.0), Event(user="x", item="b", timestamp=1.0)]
    >>> m = ItemKNN(shrink=0.0).fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="y", item="a", timestamp=2.0))
    >>> m.score(UserState("y"), cat.select(["b", "c"])).astype(float).round(3).tolist()
    [0.707, 0.0]
    >>> m.because(UserState("x"), cat.get_idx("b"))
    ('a',)
    """

    name: ClassVar[str] = "itemknn"
    users_from_events: ClassVar[bool] = True
    #: Without tables the co-occurrence counts are the fit's until the next fit.
    users_from_events_exact: ClassVar[bool] = False
    item_side_at_fits_without_tables: ClassVar[bool] = True
    #: Neighbours kept per item for ``candidates`` (retrieval only; scores use all of C).
    candidate_neighbours: ClassVar[int] = 100
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {
        "k_neighbours": (None, 20, 100), "shrink": (0.0, 10.0, 100.0), "weighting": ("binary", "feedback"),
    }

    def __init__(
        self,
        *,
        k_neighbours: int | None = None,
        shrink: float = 10.0,
        max_history: int | None = 200,
        weighting: str = "binary",
        all_events: bool = False,
        cold_popularity: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.k_neighbours = k_neighbours
        self.shrink = shrink
        self.max_history = max_history
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
        self.n_ = np.zeros(n, dtype=np.float64)
        np.add.at(self.n_, items, x * x)
        X = sp.csr_matrix((x.astype(np.float32), (uidx, items)), shape=(len(users), n))
        C = (X.T @ X).tocsr()
        rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(C.indptr))
        C.data[rows == C.indices] = 0.0  # the diagonal lives in n_ (it changes per event)
        del rows
        C.eliminate_zeros()
        C.sort_indices()
        self.counts_ = _RowStore(C)
        self._build_neighbours(C)
        ids = [str(u) for u in users]
        # Without tables only the fit's users are kept, for an erasure; requests read their events.
        self.items_ = UserItems.from_pairs(ids, uidx, items, x)
        self.recent_: dict[str, array] = {}
        if not self.user_tables:
            return self
        # Recency of each (user, item): the time order learn_one would have seen.
        mine: dict[str, set[int]] = {}
        for u, i in zip(uidx.tolist(), items.tolist()):
            mine.setdefault(ids[u], set()).add(i)
        recent: dict[str, dict[int, None]] = {}
        keep = log.item_idx >= 0
        for t in np.argsort(log.timestamps, kind="stable")[keep[np.argsort(log.timestamps, kind="stable")]]:
            u, i = str(log.users[t]), int(log.item_idx[t])
            if i in mine.get(u, ()):
                r = recent.setdefault(u, {})
                r.pop(i, None)
                r[i] = None
        # Kept packed (oldest first): a dict per user cost several times more.
        self.recent_ = {u: array("i", r) for u, r in recent.items()}
        return self

    def _remember(self, event: Event) -> tuple[int, float, float, np.ndarray, np.ndarray] | None:
        """Record ``event`` in its user's history and recency; when the pair's strength
        changed: (item, old strength, new strength, the user's other items, the change to
        their co-occurrence with the item), else None."""
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return None
        s = interaction_strength(self._fb, event, self.weighting, self.all_events)
        if s <= 0:
            return None
        r = self.recent_.get(event.user)
        if r is None:
            self.recent_[event.user] = array("i", (i,))
        else:
            try:
                r.remove(i)
            except ValueError:
                pass
            r.append(i)
        weighting = self.weighting
        got = self.items_.change(event.user, i, lambda a: merge_strength(a, s, weighting))
        if got is None:
            return None
        a, b, js, x = got
        return i, a, b, js, (b - a) * x

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        if not self.user_tables:  # C is the fit's; the user is read from their events
            return
        step = self._remember(event)
        if step is None:
            return
        i, a, b, js, v = step
        self._ensure(max(len(self.catalog_), i + 1))
        if len(js):
            C = self.counts_
            # C_ij += d x_j and C_ji alike: existing entries in place first (appending
            # may move rows), then the new ones. C is symmetric in its entries too, so
            # (j, i) is stored exactly where (i, j) is: only those rows are searched.
            pi = C.find_in_row(i, js)
            had = pi >= 0
            if had.all():  # the common cases need no masks: every pair known, or every pair new
                C.add(pi, v)
                C.add(C.find(js, i), v)
            elif not had.any():
                C.append_to_row(i, js, v)
                C.append_to_rows(js, i, v)
            else:
                new = ~had
                C.add(pi[had], v[had])
                C.add(C.find(js[had], i), v[had])
                C.append_to_row(i, js[new], v[new])
                C.append_to_rows(js[new], i, v[new])
        self.n_[i] += b * b - a * a
        if len(js):
            self._offer_neighbours(i, js)
        lazy(self, "top_pop_", TopList).offer(i, self.n_)

    def learn_many(self, events: Sequence[Event]) -> None:
        """``learn_one`` on each event in order (:class:`~liverec.models.base.BatchLearner`):
        the histories first, then the co-occurrence counts of the run in one vectorised
        pass (per :data:`_RUN_PAIRS` pairs), then the popularity top list event by event
        (what it keeps depends on the order of offers); the changed rows' neighbour lists
        are marked stale.
        """
        self._check_fitted()
        if not self.user_tables:
            return
        steps: list[tuple[int, float, float, np.ndarray, np.ndarray]] = []
        pairs = 0
        for e in events:
            st = self._remember(e)
            if st is not None:
                steps.append(st)
                pairs += len(st[3])
                if pairs >= _RUN_PAIRS:  # heavy histories: bound the run's arrays
                    self._learn_steps(steps)
                    steps, pairs = [], 0
        if steps:
            self._learn_steps(steps)

    def _learn_steps(self, steps: Sequence[tuple[int, float, float, np.ndarray, np.ndarray]]) -> None:
        """The counts, stale lists and top list after ``steps`` (from :meth:`_remember`, in order)."""
        self._ensure(max(len(self.catalog_), max(st[0] for st in steps) + 1))
        if any(len(st[3]) for st in steps):
            # C_ij += d x_j and C_ji alike, for every step, in step order.
            sizes = [len(st[3]) for st in steps]
            it = np.repeat(np.array([st[0] for st in steps], dtype=np.int64), sizes)
            jt = np.concatenate([st[3] for st in steps])
            self.counts_.add_symmetric(it, jt, np.concatenate([st[4] for st in steps]))
            self._stale(it, jt)
        top = lazy(self, "top_pop_", TopList)
        for i, a, b, _, _ in steps:
            self.n_[i] += b * b - a * a
            top.offer(i, self.n_)

    def _ensure(self, n: int) -> None:
        st = self.__dict__.get("stale_")
        if n <= len(self.n_) and n <= self.counts_.n and (st is None or n <= len(st)):
            return  # the common case: nothing to grow
        self.n_ = grow(self.n_, n)
        self.counts_.resize(n)
        if st is not None:
            self.stale_ = grow(st, n)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        hist = self.items_.pop(user)
        self.recent_.pop(user, None)
        if hist is None:
            return
        # Vectorised: subtract the user's outer product x x^T (off-diagonal) from the
        # base; a Python loop over |history|^2 pairs would take seconds for heavy users.
        h, x = hist
        n = self.counts_.n
        xs = sp.csr_matrix((x, (np.zeros(len(h), dtype=np.int64), h)), shape=(1, n))
        outer = (xs.T @ xs).tocsr()
        outer.setdiag(0.0)
        C = (self.counts_.to_csr() - outer.astype(np.float32)).tocsr()
        C.eliminate_zeros()
        C.sort_indices()
        self.counts_ = _RowStore(C)
        self.n_[h] = np.maximum(self.n_[h] - x * x, 0.0)
        self.n_[h[self.n_[h] < 1e-12]] = 0.0
        self._build_neighbours(C)

    # ----------------------------------------------------------------- retrieval
    def _isq(self, idx: np.ndarray) -> np.ndarray:
        """``1/sqrt(n_i)`` for items ``idx`` (0 for items nobody interacted with)."""
        n = self.n_[idx]
        return np.divide(1.0, np.sqrt(n), out=np.zeros_like(n), where=n > 1e-12)

    def _build_neighbours(self, C: sp.csr_matrix) -> None:
        """Each item's top neighbours by similarity, from the co-occurrence rows ``C``.

        A list holds the shrunk count ``c' = C_hi^2/(C_hi + shrink)`` of each pair, the
        part of ``sim(h, i) = c' / sqrt(n_h n_i)`` that only changes when the pair does;
        ``1/sqrt(n)`` is multiplied in at query time, so the values read are current.
        """
        shrunk = sp.csr_matrix((self._shrink_inplace(C.data.astype(np.float32)), C.indices, C.indptr),
                               shape=C.shape)
        self.neighbours_ = NeighbourLists.from_csr(shrunk, self.candidate_neighbours, self._isq)
        self.stale_ = np.zeros(C.shape[0], dtype=bool)  # rows whose counts changed since
        self.top_pop_ = TopList()

    def _neighbours(self, rows: np.ndarray) -> NeighbourLists:
        """The neighbour lists, rows ``rows`` current: a row whose counts changed since it
        was built is rebuilt from them here, when read, not per event. Below the two-stage
        threshold nothing reads the lists, so learning never pays for them; above it a
        request rebuilds at most its history's changed rows (the rows ``score`` gathers too).
        """
        if self.__dict__.get("neighbours_") is None:  # a payload saved before the lists existed
            self._build_neighbours(self.counts_.to_csr())
        st = self.__dict__.get("stale_")
        if st is not None:
            rows = rows[rows < len(st)]
            rows = np.unique(rows[st[rows]])
            if len(rows):
                sub = self.counts_.gather(rows)
                sub.sort_indices()  # ties keep the lowest index, however the counts were reached
                self._shrink_inplace(sub.data)
                self.neighbours_.set_rows(rows, sub, self._isq)
                st[rows] = False
        return self.neighbours_

    def _offer_neighbours(self, i: int, js: np.ndarray) -> None:
        """Pairs ``(i, j)`` for ``j`` in ``js`` changed: rows ``i`` and ``js`` are stale."""
        self._stale(js, i)

    def _stale(self, *rows: np.ndarray | int) -> None:
        """Mark ``rows`` (arrays or single rows) stale, in place unless the marks must grow."""
        st = self.__dict__.get("stale_")
        if st is None:  # a payload saved before lists were rebuilt when read: they were current
            st = np.zeros(self.counts_.n, dtype=bool)
        if len(st) < self.counts_.n:
            st = grow(st, self.counts_.n)
        self.stale_ = st
        for r in rows:
            st[r] = True

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """About the ``n`` best-scored live items (dense indices, best first), sublinearly.

        The union of the neighbour lists (top :attr:`candidate_neighbours` per item,
        rows rebuilt when read once their counts changed) of the user's scored history, ranked by the summed
        similarity; the history items themselves with their own term. Cold users get
        the most popular items (a top list kept per event), as ``score`` gives them.
        """
        self._check_fitted()
        n_cat = max(len(self.catalog_), 1)
        self._ensure(n_cat)
        alive = self.catalog_.alive
        hx = self._history(user)
        if hx is None or n <= 0:
            if n <= 0 or not self.cold_popularity:
                return np.zeros(0, dtype=np.int64)
            return lazy(self, "top_pop_", TopList).top(self.n_, alive, n)
        h, x = hx
        near, s = self._neighbours(h).accumulate(h, x * self._isq(h))
        nh = self.n_[h]
        den = nh + self.shrink
        own = x * np.divide(nh, den, out=np.zeros_like(nh), where=den > 0)  # sim(h, h)
        items, inv = np.unique(np.concatenate([near, h]), return_inverse=True)
        s = np.bincount(inv, weights=np.concatenate([s * self._isq(near), own]))
        ok = (items < len(alive)) & (s > 0)
        ok[ok] = alive[items[ok]]
        return best(items[ok], s[ok], n)

    def floor(self, user: UserState) -> float | None:
        """0: scores are never negative and, above the two-stage threshold, some live item
        shares nothing with the user's history (it scores 0)."""
        return 0.0

    # ------------------------------------------------------------------- scoring
    def _history(self, user: UserState) -> tuple[np.ndarray, np.ndarray] | None:
        """The user's scored items (ascending) and strengths: kept, or from their recent events."""
        if not self.user_tables:
            return self._history_from_events(user)
        # Sorted: the sums then run in the same order however the state was reached,
        # so per-event learning gives bit-identical scores to a batch fit.
        hist = self.items_.get_sorted(user.user)
        if hist is None:
            return None
        items, strengths = hist
        if self.max_history is not None and len(items) > self.max_history:
            # Score from the most recent items only: a heavy user's whole history costs
            # O(history x neighbours) per request (42 ms at ~2k items) and their old
            # items say little about what they want next.
            recent = np.frombuffer(self.recent_.get(user.user, array("i")), dtype=np.int32)[-self.max_history :]
            keep = np.isin(items, recent)
            items, strengths = items[keep], strengths[keep]
        return items, strengths.astype(np.float32)

    def _history_from_events(self, user: UserState) -> tuple[np.ndarray, np.ndarray] | None:
        got = recent_strengths(user, self.catalog_, self._fb, self.weighting, self.all_events)
        if got is None:
            return None
        items, strengths = got
        if self.max_history is not None and len(items) > self.max_history:
            rows = history_rows(user, self.catalog_, self._fb)[0]
            rows = rows[np.isin(rows, items)][::-1]  # the scored items' events, latest first
            _, first = np.unique(rows, return_index=True)  # each item's latest event
            keep = np.isin(items, rows[np.sort(first)][: self.max_history])
            items, strengths = items[keep], strengths[keep]
        return items, strengths.astype(np.float32)

    def _inv_sqrt_n(self, idx: np.ndarray | None = None) -> np.ndarray:
        """``1/sqrt(n_i)`` in float32, for every item or for ``idx``."""
        n = (self.n_ if idx is None else self.n_[idx]).astype(np.float32)
        return np.divide(1.0, np.sqrt(n), out=np.zeros_like(n), where=n > 1e-12)

    def _shrink_inplace(self, c: np.ndarray) -> np.ndarray:
        """``c * c/(c + shrink)`` in place (``c`` is a fresh copy gathered from C)."""
        if self.shrink:
            tmp = c + np.float32(self.shrink)  # > 0: counts are positive, shrink >= 0
            np.divide(c, tmp, out=tmp)
            c *= tmp
        return c

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        n_cat = max(len(self.catalog_), 1)
        self._ensure(n_cat)
        hx = self._history(user)
        if hx is None:
            if not self.cold_popularity:  # in a fused engine, trending covers cold users
                return np.zeros(len(items), dtype=np.float32)
            return self.n_[items.idx].astype(np.float32)  # cold user: popularity
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        h, x = hx
        sub = self.counts_.rows(h)
        # A few candidates (two-stage serving): nothing as long as the catalog is built.
        few = len(items) * 4 < n_cat
        isq = None if few else self._inv_sqrt_n()

        def inv(idx: np.ndarray) -> np.ndarray:
            return self._inv_sqrt_n(idx) if isq is None else isq[idx]

        self._shrink_inplace(sub.data)
        k = self.k_neighbours
        counts = np.diff(sub.indptr)
        top_k = k is not None and bool((counts > k).any())
        if top_k and k is not None:
            # Top-k needs every entry's similarity (one gather of 1/sqrt(n_j)) and a
            # partition per long row: ~3x slower than the full sum below.
            data = sub.data  # scaled in place
            data *= np.repeat(inv(h), counts)
            data *= inv(sub.indices.astype(np.intp))
            for row in np.flatnonzero(counts > k).tolist():
                seg = data[sub.indptr[row] : sub.indptr[row + 1]]
                thr = np.partition(seg, len(seg) - k)[len(seg) - k]
                seg[seg < thr] = 0.0  # ties at the cut stay: independent of storage order
        # Full cosine factorises: sum_h x_h c'_hi / sqrt(n_h n_i) is one sparse
        # matrix-vector product scaled by 1/sqrt(n_i).
        coef = x if top_k else x * inv(h)
        nh = self.n_[h].astype(np.float32)
        den = nh + np.float32(self.shrink)
        own = x * np.divide(nh, den, out=np.zeros_like(nh), where=den > 0)  # sim(h, h)
        if few:
            out = column_sums(sub, coef, items.idx) * (1.0 if top_k else inv(items.idx))
            at = np.minimum(np.searchsorted(h, items.idx), len(h) - 1)
            mine = h[at] == items.idx
            out[mine] += own[at[mine]]
            return out.astype(np.float32)
        out = transposed_product(sub, coef)
        if not top_k:
            assert isq is not None  # computed whenever not few
            out = out * isq[:n_cat]
        out[h] += own
        return out[items.idx].astype(np.float32)

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """History items most similar to item ``idx`` (external ids, best first)."""
        return self.because_many(user, [idx], top)[0]

    def because_many(self, user: UserState, idx: Sequence[int], top: int = 2) -> list[tuple[str, ...]]:
        """:meth:`because` of each item ``idx``; the history and its norms are read once."""
        self._check_fitted()
        hx = self._history(user)
        if hx is None or top <= 0 or not len(idx):
            return [() for _ in idx]
        self._ensure(max(len(self.catalog_), max(idx) + 1))
        h, _ = hx
        n_h = self.n_[h].astype(np.float64)
        inv_h = np.divide(1.0, np.sqrt(n_h), out=np.zeros_like(n_h), where=n_h > 1e-12)
        return [self._because_one(h, inv_h, i, top) for i in idx]

    def _because_one(self, h: np.ndarray, inv_h: np.ndarray, idx: int, top: int) -> tuple[str, ...]:
        """The ``top`` history items ``h`` (with ``1/sqrt(n_h)``) most similar to item ``idx``."""
        # C[idx, h] read straight from the row: no scipy objects or catalog-sized arrays
        # here (this runs for every explained item of every request).
        c_h = np.zeros(len(h), dtype=np.float64)
        pos = self.counts_.find_in_row(idx, h)
        c_h[pos >= 0] = self.counts_.vals[pos[pos >= 0]]
        c_h = self._shrink_inplace(c_h)
        n_i = float(self.n_[idx])
        sim = c_h * inv_h * (1.0 / np.sqrt(n_i) if n_i > 1e-12 else 0.0)
        sim[h == idx] = 0.0
        order = np.lexsort((h, -sim))[:top]
        return tuple(self.catalog_.ids[int(h[o])] for o in order.tolist() if sim[o] > 0)

