"""Vector retrieval over item LM vectors: exact below a size threshold, HNSW above.

Exact search is a single matrix-vector product (about 1 ms at 10k x 384) and needs no
upkeep; above ``exact_max_items`` an HNSW graph from usearch (which, unlike faiss's
HNSW, can remove vectors) answers in well under a millisecond. Items added or removed
take effect on the next search.

The graph holds the vectors at a lower precision (``dtype``, int8 by default: the
centred vectors are unit, so every component is in [-1, 1], int8's range): a 384-d
search at 100k items costs about a quarter of the float32 one and finds the same
candidates (measured: 0.988 vs 0.990 of the exact top-50 among 305 found). The found
items are then scored exactly, so the inner products returned are full precision.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, cast

import numpy as np

from ..encode.catalog import Catalog, centred_norms

if TYPE_CHECKING:
    from usearch.index import BatchMatches, Index


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first (ties by index)."""
    k = min(k, len(scores))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    part = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    return part[np.lexsort((part, -scores[part]))]


class VectorIndex:
    """Inner-product search over a :class:`Catalog`'s live items.

    Parameters
    ----------
    catalog : Catalog
    exact_max_items : int
        Catalogs up to this many live items are searched exactly.
    connectivity, expansion_add, expansion_search : int
        HNSW parameters (usearch).
    threads : int
        Threads for building (0 = all cores).
    dtype : {"i8", "f16", "f32"}
        Precision of the vectors inside the graph. ``i8`` needs unit vectors (``center``);
        an uncentred index stores raw vectors of any norm and uses ``f16`` instead.
    center : bool
        Search by the cosine of mean-centred item vectors, ``(v - m)·q / |v - m|`` with
        ``m`` the catalog mean when the graph is first built: the score of a content
        source that works on centred vectors, so its ANN candidates are its true top-n.

    Examples
    --------
    >>> import numpy as np
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> VectorIndex(cat).search(np.array([0.0, 1.0], dtype=np.float32), 1)[0].tolist()
    [1]
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        exact_max_items: int = 20_000,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 128,
        threads: int = 0,
        center: bool = False,
        dtype: str = "i8",
    ) -> None:
        self.catalog = catalog
        self.center = center
        self.dtype = "f16" if dtype == "i8" and not center else dtype
        self.mean_: np.ndarray | None = None
        self.exact_max_items = exact_max_items
        self.connectivity = connectivity
        self.expansion_add = expansion_add
        self.expansion_search = expansion_search
        self._ann: Index | None = None  # built on the first search above exact_max_items
        self._in_ann = np.zeros(0, dtype=bool)
        self._synced_version = -1
        self.threads = threads
        self._lock = threading.Lock()

    @property
    def uses_ann(self) -> bool:
        return self.catalog.n_alive > self.exact_max_items

    def sync(self) -> None:
        """Build or extend the HNSW graph now (the engine calls it when items change),
        so no request pays for indexing."""
        if self.uses_ann:
            with self._lock:
                self._sync_ann()
                if self.center:
                    self._exact_norms()

    def _sync_ann(self) -> None:
        """Bring the HNSW graph in line with the catalog (adds, updates, removals)."""
        from usearch.index import Index

        cat = self.catalog
        if self._synced_version == cat.version:
            return
        n = len(cat)
        if self._ann is None:
            if self.center:  # fixed for the graph's life: every stored vector depends on it
                self.mean_ = cat.vectors[cat.alive_idx()].astype(np.float64).mean(axis=0)
            self._ann = Index(
                ndim=cat.vectors.shape[1], metric="ip", dtype=self.dtype, connectivity=self.connectivity,
                expansion_add=self.expansion_add, expansion_search=self.expansion_search,
            )
        if len(self._in_ann) < n:
            self._in_ann = np.concatenate([self._in_ann, np.zeros(n - len(self._in_ann), dtype=bool)])
        alive = cat.alive
        gone = np.flatnonzero(self._in_ann[:n] & ~alive)
        if len(gone):
            self._ann.remove(gone)
            self._in_ann[gone] = False
        new = np.flatnonzero(alive & ~self._in_ann[:n])
        if len(new):
            self._ann.add(new, self._stored(cat.vectors[new]), threads=self.threads)
            self._in_ann[new] = True
        self._synced_version = cat.version

    def _exact_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, |v - mean| per row) for centred exact search; cached per catalog version.

        With a graph its mean is fixed, so a catalog change recomputes only the rows written
        since (a request after adding an item to a large catalog does not pay for every row);
        before one, the mean is the live items' and moves with the catalog.
        """
        cat = self.catalog
        cached = getattr(self, "_norms_cache", None)
        key = (cat.version, self.mean_ is None)  # the graph's mean replaces the provisional one
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        if cached is not None and self.mean_ is not None and cached[0][1] is False:
            (old, _), m, norms = cached
            rows = cat.written_since(old)
            norms = np.concatenate([norms, np.empty(len(cat) - len(norms))]) if len(norms) < len(cat) else norms.copy()
            if len(rows):
                norms[rows] = centred_norms(cat.vectors[rows], m)
        else:
            m = self.mean_ if self.mean_ is not None else cat.vectors[cat.alive_idx()].astype(np.float64).mean(0)
            norms = centred_norms(cat.vectors, m)
        self._norms_cache = (key, m, norms)
        return m, norms

    def _stored(self, v: np.ndarray) -> np.ndarray:
        """Vectors as the graph holds them: raw, or centred and unit."""
        if self.mean_ is None:
            return v
        return ((v.astype(np.float64) - self.mean_) / centred_norms(v, self.mean_)[:, None]).astype(np.float32)

    def update(self, idx: list[int] | np.ndarray) -> None:
        """Re-index items whose vectors changed (new ones are picked up automatically)."""
        if self._ann is None:
            return
        with self._lock:
            idx = np.asarray([i for i in idx if i < len(self._in_ann) and self._in_ann[i]], dtype=np.int64)
            if len(idx):
                self._ann.remove(idx)
                self._in_ann[idx] = False
                self._synced_version = -1

    def search(self, query: np.ndarray, n: int, *, exact: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(dense indices, inner products) of the ``n`` nearest live items, best first."""
        cat = self.catalog
        if exact or (exact is None and not self.uses_ann):
            scores = self._scores(cat.vectors, query)
            scores = np.where(cat.alive, scores, -np.inf)
            top = top_k(scores, min(n, cat.n_alive))
            return top, scores[top]
        with self._lock:
            self._sync_ann()
            assert self._ann is not None  # built by _sync_ann
            found = self._ann.search(query.astype(np.float32), min(n, len(self._ann)))
        keys = np.asarray(found.keys, dtype=np.int64)
        # The graph's distances are at its own precision: score what it found exactly.
        scores = self._scores(cat.vectors[keys], query, keys)
        order = np.lexsort((keys, -scores))
        return keys[order], scores[order]

    def search_both_ways(self, query: np.ndarray, n: int, probe: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(dense indices, inner products) of :meth:`search` for ``query``, and the dense
        indices of at least ``probe`` live items with the *lowest* inner products (all live
        items when searching exactly): the far end two-stage serving takes its floors from.

        In a graph the lowest scores are the best items for ``-query``: both directions go
        to usearch in one call, one thread each, so on a machine with a spare core the far
        end costs about no extra wall time.

        >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
        >>> idx, scores, far = VectorIndex(cat).search_both_ways(np.array([0.0, 1.0], np.float32), 1)
        >>> idx.tolist(), scores.tolist(), sorted(far.tolist())
        ([1], [1.0], [0, 1])
        """
        cat = self.catalog
        if not self.uses_ann:
            top, scores = self.search(query, n, exact=True)
            return top, scores, cat.alive_idx()
        with self._lock:
            self._sync_ann()
            assert self._ann is not None  # built by _sync_ann
            q = query.astype(np.float32)
            found = cast("BatchMatches", self._ann.search(np.stack([q, -q]), min(max(n, probe), len(self._ann)), threads=2))
        near = np.asarray(found.keys[0][: min(int(found.counts[0]), n)], dtype=np.int64)
        far = np.asarray(found.keys[1][: int(found.counts[1])], dtype=np.int64)
        # The graph's distances are at its own precision: score what it found exactly.
        scores = self._scores(cat.vectors[near], query, near)
        order = np.lexsort((near, -scores))
        return near[order], scores[order], far

    def _scores(self, vectors: np.ndarray, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Inner products of ``query`` with ``vectors`` (catalog ``rows``; all when None) as
        the index defines them: raw, or with the centred and unit item vectors."""
        scores = vectors @ query
        if not self.center:
            return scores
        m, norms = self._exact_norms()
        return (scores - float(m @ query)) / (norms if rows is None else norms[rows])
