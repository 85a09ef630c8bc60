"""Retrieval structures learners keep so ``candidates(user, n)`` never reads the whole catalog.

- :class:`TopList`: the ``k`` highest entries of a score array whose entries only grow
  between rebuilds (popularity counts, trending mass), kept exact per event in O(k).
- :class:`NeighbourLists`: each item's top-``M`` neighbours with a value per pair, in
  fixed-width slots (only items that have neighbours get a slot); a user's candidates
  are the union of their history items' lists, scored by summed values.
- :class:`FactorIndex`: an inner-product HNSW graph (usearch) over item factor vectors,
  following item additions, removals and changed vectors; it pickles with its graph.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np
import scipy.sparse as sp


#: Per-item factors a neighbour's value is multiplied by to rank it (None: 1).
Scale = Callable[[np.ndarray], np.ndarray] | None


def best(idx: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` entries of ``idx`` with the highest ``scores``, best first (ties by index).

    Examples
    --------
    >>> best(np.array([7, 3, 5]), np.array([0.5, 2.0, 0.5]), 2).tolist()
    [3, 5]
    """
    n = min(n, len(idx))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    idx = np.asarray(idx, dtype=np.int64)
    if n < len(idx):
        part = np.argpartition(-scores, n - 1)[:n]
        # Ties at the cut: keep the lowest indices, so the result does not depend on order.
        cut = scores[part].min()
        tie = np.flatnonzero(scores == cut)
        if len(tie) > np.count_nonzero(scores[part] == cut):
            above = part[scores[part] > cut]
            tie = tie[np.argsort(idx[tie], kind="stable")][: n - len(above)]
            part = np.concatenate([above, tie])
        idx, scores = idx[part], scores[part]
    return idx[np.lexsort((idx, -scores))]


class TopList:
    """The ``k`` items with the highest score, for scores that only grow between rebuilds.

    ``offer(i, scores)`` after ``scores[i]`` grew keeps the list exact in O(k): an item
    can only enter the top by growing, and the list reads current values from
    ``scores`` (so a common rescaling of every score changes nothing). Anything that
    lowers a score calls ``invalidate()``; the next ``top`` rebuilds from the whole
    array, once.

    Examples
    --------
    >>> s = np.array([5.0, 1.0, 3.0, 0.0])
    >>> t = TopList()
    >>> t.top(s, np.ones(4, bool), 2).tolist()
    [0, 2]
    >>> s[3] = 9.0; t.offer(3, s)
    >>> t.top(s, np.ones(4, bool), 2).tolist()
    [3, 0]
    """

    def __init__(self) -> None:
        self.idx: np.ndarray | None = None
        self.k = 0

    def invalidate(self) -> None:
        self.idx = None

    def offer(self, i: int, scores: np.ndarray) -> None:
        """Item ``i``'s score grew (or it is new): keep the list exact."""
        idx = self.idx
        if idx is None or (idx == i).any() or scores[i] <= 0:
            return
        if len(idx) < self.k:
            self.idx = np.append(idx, np.int64(i))
            return
        j = int(np.argmin(scores[idx]))
        if scores[i] > scores[idx[j]]:
            idx[j] = i

    def top(self, scores: np.ndarray, alive: np.ndarray, n: int) -> np.ndarray:
        """The ``n`` live items with the highest positive score, best first."""
        m = min(len(scores), len(alive))
        idx = self.idx
        if idx is not None and n * 2 <= self.k:
            live = idx[alive[idx]]
            # Enough live entries, or the list holds every positive item there is.
            if len(live) >= n or len(idx) < self.k:
                return best(live, scores[live], n)
        self.k = max(2 * n, 64)
        s = np.where(alive[:m], scores[:m], 0.0)
        pos = np.flatnonzero(s > 0)
        self.idx = best(pos, s[pos], self.k)
        return self.idx[:n].copy()


class NeighbourLists:
    """Each item's top-``m`` neighbours (index, value), in fixed-width slots.

    Neighbours rank within a row by ``v * scale(j)`` for a neighbour ``j`` with value
    ``v`` (``scale`` maps item indices to factors, given at each call; ``None``: by
    ``v``). Values are what :meth:`accumulate` sums, so a learner stores the part of a
    similarity that only changes when the pair does and multiplies in per-item factors
    at query time.

    Examples
    --------
    >>> nl = NeighbourLists(2)
    >>> nl.set_row(0, np.array([1, 2, 3]), np.array([0.5, 0.9, 0.1], np.float32))
    >>> nl.row(0)[0].tolist()
    [2, 1]
    >>> import scipy.sparse as sp
    >>> nl.set_rows(np.array([0, 4]), sp.csr_matrix(np.array([[0, 0, 0, 2.0], [1.5, 0, 0, 0]], np.float32)))
    >>> items, s = nl.accumulate(np.array([0, 4]), np.array([1.0, 2.0]))
    >>> dict(zip(items.tolist(), s.round(2).tolist()))
    {0: 3.0, 3: 2.0}
    """

    def __init__(self, m: int) -> None:
        self.m = m
        self.slot = np.zeros(0, dtype=np.int64)  # item -> slot row, -1 = none
        self.nbr = np.full((0, m), -1, dtype=np.int32)
        self.val = np.zeros((0, m), dtype=np.float32)
        self.used = 0

    # ------------------------------------------------------------------ storage
    def _slots(self, rows: np.ndarray) -> np.ndarray:
        """Slot of each row, giving rows without one a fresh slot."""
        top = int(rows.max()) + 1 if len(rows) else 0
        if top > len(self.slot):
            self.slot = np.concatenate([self.slot, np.full(max(top, 2 * len(self.slot)) - len(self.slot), -1)])
        s = self.slot[rows]
        new = np.flatnonzero(s < 0)
        if len(new):
            fresh = np.unique(rows[new])
            need = self.used + len(fresh)
            if need > len(self.nbr):
                cap = max(need, 2 * len(self.nbr), 16)
                nbr = np.full((cap, self.m), -1, dtype=np.int32)
                val = np.zeros((cap, self.m), dtype=np.float32)
                nbr[: self.used], val[: self.used] = self.nbr[: self.used], self.val[: self.used]
                self.nbr, self.val = nbr, val
            self.slot[fresh] = np.arange(self.used, need)
            self.used = need
            s = self.slot[rows]
        return s

    def _keys(self, nbr: np.ndarray, val: np.ndarray, scale: Scale) -> np.ndarray:
        key = val.astype(np.float64) if scale is None else val * scale(np.maximum(nbr, 0))
        return np.where(nbr >= 0, key, -np.inf)

    def set_row(self, r: int, items: np.ndarray, values: np.ndarray, scale: Scale = None) -> None:
        """Row ``r``'s list from all its neighbours (the top ``m`` are kept)."""
        keep = best(np.arange(len(items)), self._keys(items, values, scale), self.m)
        s = int(self._slots(np.array([r]))[0])
        self.nbr[s] = -1
        self.val[s] = 0.0
        self.nbr[s, : len(keep)] = items[keep]
        self.val[s, : len(keep)] = values[keep]

    def set_dense(self, rows: np.ndarray, items: np.ndarray, values: np.ndarray) -> None:
        """Rows ``rows`` set to ``items``/``values`` (``len(rows) x m``, -1 = empty)."""
        s = self._slots(rows)
        self.nbr[s], self.val[s] = items, values

    def set_rows(self, rows: np.ndarray, csr: Any, scale: Scale = None) -> None:
        """Each row ``rows[k]``'s list from all its neighbours, row ``k`` of ``csr`` (the top
        ``m`` by ``data * scale(col)`` are kept; an empty row empties the list)."""
        if not len(rows):
            return
        s = self._slots(rows)
        self.nbr[s] = -1
        self.val[s] = 0.0
        counts = np.diff(csr.indptr)
        short = np.flatnonzero((counts > 0) & (counts <= self.m))
        if len(short):  # copied as they are, vectorised
            n = counts[short]
            src = np.repeat(csr.indptr[short] - np.cumsum(n) + n, n) + np.arange(int(n.sum()))
            col = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
            slot = np.repeat(s[short], n)
            self.nbr[slot, col] = csr.indices[src]
            self.val[slot, col] = csr.data[src]
        for k in np.flatnonzero(counts > self.m).tolist():
            a, b = csr.indptr[k], csr.indptr[k + 1]
            self.set_row(int(rows[k]), csr.indices[a:b].astype(np.int64), csr.data[a:b].astype(np.float32), scale)

    @classmethod
    def from_csr(cls, csr: Any, m: int, scale: Scale = None) -> "NeighbourLists":
        """Lists from a CSR matrix: row ``r``'s top-``m`` columns by ``data * scale(col)``."""
        out = cls(m)
        rows = np.flatnonzero(np.diff(csr.indptr) > 0)
        out.set_rows(rows, csr[rows], scale)
        return out

    def row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(neighbours, values) of row ``r``, by value (best first)."""
        if r >= len(self.slot) or self.slot[r] < 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        s = self.slot[r]
        ok = self.nbr[s] >= 0
        items, vals = self.nbr[s][ok].astype(np.int64), self.val[s][ok]
        order = np.lexsort((items, -vals))
        return items[order], vals[order]

    # ------------------------------------------------------------------ queries
    def accumulate(self, rows: np.ndarray, coef: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(items, sum over ``rows`` of ``coef[r] * value(r, item)``) over the rows' lists."""
        ok = rows < len(self.slot)
        rows, coef = rows[ok], coef[ok]
        s = self.slot[rows]
        rows, coef, s = rows[s >= 0], coef[s >= 0], s[s >= 0]
        if not len(s):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        nbr = self.nbr[s].ravel()
        val = (self.val[s].astype(np.float64) * coef[:, None]).ravel()
        ok = nbr >= 0
        items, inv = np.unique(nbr[ok], return_inverse=True)
        return items.astype(np.int64), np.bincount(inv, weights=val[ok], minlength=len(items))


#: A sync that would remove more than this share of a factor graph builds a new one.
REBUILD_SHARE = 0.25


class FactorIndex:
    """Inner-product HNSW (usearch) over item vectors that follows a learner's item table.

    ``sync(vectors, alive)`` adds live items not yet in the graph, removes dead ones and
    re-inserts items marked with :meth:`changed`; ``search(q, n)`` returns the ``n`` live
    items with the highest ``q . v`` (approximately). Built with one thread, so the
    same vectors in the same order give the same graph; pickled with its graph. The
    graph holds the vectors as float16 (factors are not unit vectors, so not int8):
    half the memory and a faster search; callers score the found items exactly.

    Examples
    --------
    >>> v = np.eye(3, dtype=np.float32)
    >>> fi = FactorIndex(3)
    >>> fi.sync(v, np.ones(3, bool))
    >>> fi.search(np.array([0, 2, 1], np.float32), 2).tolist()
    [1, 2]
    """

    #: Precision of the vectors in the graph (a graph restored from a snapshot keeps its own).
    dtype = "f16"

    def __init__(self, ndim: int, *, connectivity: int = 16, expansion_add: int = 64,
                 expansion_search: int = 64) -> None:
        self.ndim = ndim
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self._index: Any = None
        self._in = np.zeros(0, dtype=bool)
        self._dirty: set[int] = set()

    def _new(self) -> Any:
        from usearch.index import Index

        return Index(ndim=self.ndim, metric="ip", dtype=self.dtype, connectivity=self.connectivity,
                     expansion_add=self.expansion_add, expansion_search=self.expansion_search)

    def changed(self, idx: np.ndarray) -> None:
        """Items whose vectors changed: re-inserted at the next ``sync``."""
        inside = idx[idx < len(self._in)]
        self._dirty.update(inside[self._in[inside]].tolist())

    def __len__(self) -> int:
        """Items in the graph: the graph's own count (O(1); the mask's sum is 0.3 ms at 1M
        items, and every search asks)."""
        return len(self._index) if self._index is not None else 0

    @property
    def stale(self) -> bool:
        """Whether items were marked changed since the last ``sync``."""
        return bool(self._dirty)

    def sync(self, vectors: np.ndarray, alive: np.ndarray) -> None:
        """Bring the graph in line with ``vectors[:len(alive)]`` and the live mask."""
        n = len(alive)
        if self._index is None:
            self._index = self._new()
        if len(self._in) < n:
            self._in = np.concatenate([self._in, np.zeros(n - len(self._in), dtype=bool)])
        out = np.flatnonzero(self._in[:n] & ~alive)
        if self._dirty:
            d = np.fromiter(self._dirty, dtype=np.int64, count=len(self._dirty))
            out = np.union1d(out, d[self._in[d]])
            self._dirty.clear()
        if len(out) > REBUILD_SHARE * max(len(self), 1):
            # A removed node stays in the graph as a tombstone: after most of the items
            # moved (a new tower, re-solved factors) a fresh graph searches far better.
            self._index, out = self._new(), out[:0]
            self._in[:] = False
        if len(out):
            self._index.remove(out)
            self._in[out] = False
        new = np.flatnonzero(alive & ~self._in[:n])
        if len(new):
            self._index.add(new, np.ascontiguousarray(vectors[new], dtype=np.float32), threads=1)
            self._in[new] = True

    def search(self, q: np.ndarray, n: int) -> np.ndarray:
        """Keys of the (about) ``n`` items with the highest inner product, best first."""
        size = len(self)
        if self._index is None or size == 0 or n <= 0:
            return np.zeros(0, dtype=np.int64)
        m = self._index.search(np.ascontiguousarray(q, dtype=np.float32), min(n, size))
        return np.asarray(m.keys, dtype=np.int64)

    def search_both_ways(self, q: np.ndarray, n: int, probe: int) -> tuple[np.ndarray, np.ndarray]:
        """(:meth:`search` for ``q``, keys of the at least ``probe`` items with the *lowest*
        inner product): the two searches in one usearch call, a thread each.

        >>> fi = FactorIndex(3); fi.sync(np.eye(3, dtype=np.float32), np.ones(3, bool))
        >>> [k.tolist() for k in fi.search_both_ways(np.array([0, 2, -1], np.float32), 1, 1)]
        [[1], [2]]
        """
        size = len(self)
        if self._index is None or size == 0 or n <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        q = np.ascontiguousarray(q, dtype=np.float32)
        m = self._index.search(np.stack([q, -q]), min(max(n, probe), size), threads=2)
        near = np.asarray(m.keys[0][: min(int(m.counts[0]), n)], dtype=np.int64)
        return near, np.asarray(m.keys[1][: int(m.counts[1])], dtype=np.int64)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_index"] = None if self._index is None else bytes(self._index.save())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from usearch.index import Index

        self.__dict__.update(state)
        if state.get("_index") is not None:
            self._index = Index.restore(bytearray(state["_index"]))


class SparseRows(NamedTuple):
    """Rows of a sparse matrix as CSR arrays, without a scipy object: building one checks
    its arrays (tens of microseconds), and a request reads a user's rows twice."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]


#: From this many entries on, :func:`transposed_product` hands the product to scipy: building its
#: matrix costs tens of microseconds, and its compiled loop then beats numpy's scatter-add
#: (here: 0.31 vs 0.61 ms at 312k entries, a long history on ItemKNN's counts; even at ~60k).
SCIPY_FROM = 1 << 16


def transposed_product(m: Any, coef: np.ndarray) -> np.ndarray:
    """``m.T @ coef`` for a CSR ``m`` (or :class:`SparseRows`) in scipy's order and dtype:
    row by row, entry by entry, each product rounded then added, so the values are the
    same to the bit.

    >>> m = SparseRows(np.array([1.0, 2.0, 3.0, 1.0]), np.array([0, 2, 1, 2]), np.array([0, 2, 4]), (2, 3))
    >>> transposed_product(m, np.array([1.0, 10.0])).tolist()
    [1.0, 30.0, 12.0]
    """
    dtype = np.result_type(m.data, coef)
    if len(m.data) >= SCIPY_FROM:  # scipy's own compiled loop: the same sums, in the same order
        csr = m if sp.issparse(m) else sp.csr_matrix((m.data, m.indices, m.indptr), shape=m.shape)
        return np.asarray(csr.T @ np.asarray(coef, dtype=dtype), dtype=dtype)
    w = np.repeat(np.asarray(coef, dtype=dtype), np.diff(m.indptr))
    w *= m.data  # in place: one array the size of m, not three (a product is the same either way round)
    out = np.zeros(m.shape[1], dtype=dtype)
    np.add.at(out, m.indices, w)
    return out


def column_sums(m: Any, coef: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``(m.T @ coef)[cols]`` for a CSR ``m`` (or :class:`SparseRows`), without a vector as wide as ``m`` when few
    columns are asked (O(nnz log len(cols))): scoring a few hundred candidates must not
    cost O(catalog). The sums run in scipy's order and dtype, so the values are the
    same to the bit.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> m = sp.csr_matrix(np.array([[1.0, 0, 2, 0, 0, 0, 0, 0, 0], [0, 3, 1, 0, 0, 0, 0, 0, 0]]))
    >>> column_sums(m, np.array([1.0, 10.0]), np.array([2, 1])).tolist()
    [12.0, 30.0]
    """
    cols = np.asarray(cols, dtype=np.int64)
    if len(cols) * 4 >= m.shape[1]:
        return transposed_product(m, coef)[cols]
    sc = np.sort(cols)
    pos = np.minimum(np.searchsorted(sc, m.indices), max(len(sc) - 1, 0))
    hit = sc[pos] == m.indices if len(sc) else np.zeros(len(m.indices), dtype=bool)
    dtype = np.result_type(m.data, coef)
    w = m.data.astype(dtype) * np.repeat(np.asarray(coef, dtype=dtype), np.diff(m.indptr))
    sums = np.zeros(len(sc), dtype=dtype)
    np.add.at(sums, pos[hit], w[hit])  # row by row, entry by entry: scipy's order
    return sums[np.searchsorted(sc, cols)] if len(sc) else sums


def lazy(obj: Any, name: str, make: Callable[[], Any]) -> Any:
    """``obj.<name>``, created by ``make()`` the first time (or after loading an older payload)."""
    value = obj.__dict__.get(name)
    if value is None:
        value = make()
        setattr(obj, name, value)
    return value
