"""Matrix factorisation: implicit-feedback ALS and BPR with per-event fold-in.

Both learners fit in batch with `implicit <https://github.com/benfred/implicit>`_'s
CPU solvers on a users x items matrix of interaction strengths, then keep learning
from every event without a refit:

- ``ALS`` re-solves the user's vector in closed form against the (fixed) item
  factors: the system implicit's ``recalculate_user`` solves (with a cached ``Y^T Y``),
  once per user between reads: an event marks the user's row, the next read of it
  solves it (a burst of events costs one solve, not one per event);
- ``BPR`` takes a few SGD steps on the user's vector with sampled negatives.

Items without interactions (added to the catalog after the fit, or never consumed)
get a CF vector mapped from their LM vector and their text (a ridge regression and the
nearest items with interactions, see ``map_vectors``), so collaborative filtering can
rank a new item from the first second.
ALS folds such an item in from its own interactions as soon as it gets some.

Users the model has never seen score 0 for every item: "no opinion". The engine fuses
several learners, and popularity/content already cover the cold start, so a fallback
here would only count popularity twice.
"""

from __future__ import annotations

import abc

from typing import Any, ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.linalg.blas import dger
from scipy.linalg.lapack import dposv

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, positive_history, register, top_because
from .pop import history_rows
from .retrieval import FactorIndex, best
from .useritems import UserItems

#: Below this many interactions in total, matrix factorisation does not score.
MIN_INTERACTIONS = 50

#: Exact Gram matrices are recomputed after this many rank-1 updates (bounds drift).
_REFRESH_GRAMS = 10_000
#: The LM->CF map's neighbour half runs while (items mapped x items with interactions) stays
#: under this many pairs per call (about 2 s of a core at 384 dims); beyond, the ridge map alone.
_MAP_PAIRS = 200_000_000
#: Entries of one (texts x items) similarity block of the words' map.
_MAP_BLOCK = 16_000_000
#: Norm of a mapped item vector when no item has interactions yet (random projection).
_PROJECTION_NORM = 0.1


def _implicit_cpu() -> Any:
    try:
        import implicit.cpu.als
        import implicit.cpu.bpr
        from threadpoolctl import threadpool_limits
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the ALS and BPR learners need the 'implicit' package ({exc}). "
            "Install it with: pip install 'implicit>=0.7.3'."
        ) from exc
    return implicit.cpu, threadpool_limits


def solve_least_squares(
    gram: np.ndarray,
    factors: np.ndarray,
    idx: np.ndarray,
    confidence: np.ndarray,
    regularization: float,
) -> np.ndarray:
    """One row of implicit ALS in closed form (Hu, Koren & Volinsky 2008, eq. 4).

    ``x = (F^T F + F_u^T (C_u - I) F_u + reg I)^-1 F_u^T C_u 1`` where ``gram = F^T F``
    is cached by the caller, so a row costs O(n_u k^2 + k^3) instead of O(n k^2). It
    is the system implicit's ``recalculate_user``/``recalculate_item`` solve.
    """
    k = gram.shape[0]
    fu = factors[idx].astype(np.float64)
    a = gram + fu.T @ (fu * (confidence - 1.0)[:, None])
    a.flat[:: k + 1] += regularization
    b = fu.T @ confidence
    # The system is symmetric positive definite (non-negative confidences, reg > 0): LAPACK's
    # Cholesky solve, called directly, costs a third of np.linalg.solve's LU with its checks
    # (a 64 x 64 system per event). LU if rounding ever leaves it not positive definite.
    _, x, info = dposv(a, b, lower=0, overwrite_a=0, overwrite_b=0)
    return x if info == 0 else np.linalg.solve(a, b)


def _rank_one_update(gram: np.ndarray, new: np.ndarray, old: np.ndarray) -> None:
    """``gram += new new^T - old old^T`` in place, as two BLAS rank-one updates (a third of the
    time of forming both outer products, on every event's fold-in).

    >>> g = np.eye(2)
    >>> _rank_one_update(g, np.array([1.0, 2.0]), np.array([1.0, 0.0]))
    >>> g.tolist()
    [[1.0, 2.0], [2.0, 5.0]]
    """
    view = gram.T if gram.flags.c_contiguous else gram  # Fortran order for BLAS; the update is symmetric
    if not view.flags.f_contiguous:
        gram += np.outer(new, new) - np.outer(old, old)
        return
    out = dger(-1.0, old, old, a=dger(1.0, new, new, a=view, overwrite_a=1), overwrite_a=1)
    if not np.shares_memory(out, view):  # BLAS made a copy after all
        view[...] = out


def _neighbour_average(sim: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's average of ``y`` over its ``k`` most similar columns of ``sim``, weighted by
    squared (positive) similarity, and the sum of those weights (0: no similar column; the
    average is then 0). The neighbour parts of the LM->CF map."""
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.square(np.maximum(np.take_along_axis(sim, top, axis=1), 0.0)).astype(np.float64)
    total = w.sum(1)
    return np.einsum("nk,nkd->nd", w, y[top]) / np.maximum(total, 1e-12)[:, None], total


def _concat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


class _MatrixFactorization(Learner, abc.ABC):
    """The data path shared by ALS and BPR: strengths, user rows, LM->CF map, forget.

    Learned state: ``user_ids_``/``users_`` (external id <-> row), ``user_factors_``
    and ``item_factors_`` (grown with spare capacity; ``n_users_``/``n_items_`` rows
    live), ``base_`` (the fitted users x items CSR of strengths), ``extra_`` (the rows of
    users who had events since the fit, packed per factor row in a
    :class:`~liverec.models.useritems.UserItems`; they replace ``base_`` rows), ``has_cf_``
    (items whose vector comes from interactions rather than the LM map) and the map
    itself (``map_w_``, ``map_x_mean_``, ``map_y_mean_``, ``map_base_``, ``map_text_``).
    """

    #: fit(log) != fit(empty) + learn_one per event, by design (see subclasses).
    exact_incremental: ClassVar[bool] = False

    # Set by subclasses' __init__.
    factors: int
    all_events: bool
    map_l2: float
    map_neighbours: int
    map_text: bool
    feedback: FeedbackConfig | None
    seed: int
    min_interactions: int

    # ------------------------------------------------------------ subclass hooks
    @property
    def _width(self) -> int:
        """Columns of a factor row."""
        return self.factors

    def _new_user_row(self) -> np.ndarray:
        return np.zeros(self._width, dtype=np.float32)

    @abc.abstractmethod
    def _batch_factors(self, csr: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        ...

    def _after_fit(self) -> None:
        """Build caches that depend on the fitted factors."""

    @abc.abstractmethod
    def _update(self, row: int, item: int) -> None:
        """Fold one new interaction (user ``row`` x ``item``) into the factors."""
        ...

    def _set_items(self, idx: np.ndarray, new: np.ndarray) -> None:
        self._factors_changed(idx, new)
        self.item_factors_[idx] = new

    # --------------------------------------------------------------- data path
    def _strengths(self, kinds: np.ndarray, values: np.ndarray) -> np.ndarray:
        # Unknown kinds must still raise, so weights are computed in both modes.
        w = self._fb.weights(kinds, values)
        return np.ones_like(w) if self.all_events else np.maximum(w, 0.0)

    def fit(self, log: InteractionLog) -> Self:
        self.catalog_ = log.catalog
        n_items = len(log.catalog)
        keep = log.item_idx >= 0
        s = self._strengths(log.kinds[keep], log.values[keep])
        pos = s > 0
        users = log.users[keep][pos].astype(str)
        uniq, uidx = np.unique(users, return_inverse=True)
        csr = sp.csr_matrix((s[pos], (uidx, log.item_idx[keep][pos])), shape=(len(uniq), n_items),
                            dtype=np.float64)
        self._fit_matrix([str(u) for u in uniq], csr)
        return self

    def _fit_matrix(self, user_ids: list[str], csr: sp.csr_matrix) -> None:
        """Reset and fit from a users x items strength matrix (rows in ``user_ids`` order)."""
        csr = sp.csr_matrix(csr, dtype=np.float32)
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
        self.fitted_ = True
        self.base_ = csr
        self.n_interactions_ = int(csr.nnz)
        self.extra_ = UserItems()  # keyed by factor row
        self.user_ids_ = list(user_ids)
        self.users_ = {u: r for r, u in enumerate(self.user_ids_)}
        self.n_users_ = len(self.user_ids_)
        self.rng_ = np.random.default_rng(self.seed)
        n_items = csr.shape[1]
        if csr.nnz:
            uf, itf = self._batch_factors(csr)
        else:
            uf = np.tile(self._new_user_row(), (self.n_users_, 1))
            itf = np.zeros((n_items, self._width), dtype=np.float32)
        self.user_factors_ = np.ascontiguousarray(uf, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(itf, dtype=np.float32)
        self.batch_items_ = np.diff(csr.tocsc().indptr) > 0  # items with batch interactions
        self.has_cf_ = self.batch_items_.copy()
        self.n_items_ = n_items
        self._fit_map()
        self.cat_version_ = -1  # force the first sync: map every item without interactions
        self.factor_index_: FactorIndex | None = None  # built by the first candidates call
        self._after_fit()
        self._sync_items()

    # ----------------------------------------------------------------- LM -> CF
    def _fit_map(self) -> None:
        """Ridge regression LM vector -> CF vector on items that have both (closed form)."""
        cat = self.catalog_
        n = min(len(cat), self.n_items_)
        self.map_w_: np.ndarray | None = None
        self.map_text_: tuple[Any, sp.csr_matrix] | None = None
        if not cat.dim or n == 0:
            return
        k, d = self._width, cat.dim
        ok = np.flatnonzero(self.has_cf_[:n] & cat.alive[:n])
        self.map_base_ = ok  # the items the neighbour half averages over
        if len(ok) >= 2:
            x = cat.vectors[ok].astype(np.float64)
            y = self.item_factors_[ok].astype(np.float64)
            self.map_x_mean_, self.map_y_mean_ = x.mean(0), y.mean(0)
            xc, yc = x - self.map_x_mean_, y - self.map_y_mean_
            a = xc.T @ xc
            a.flat[:: d + 1] += self.map_l2
            self.map_w_ = np.linalg.solve(a, xc.T @ yc)
        else:
            # No interactions at all yet: a seeded random projection keeps LM neighbours
            # neighbours in CF space, so the online path starts from content similarity
            # instead of all-zero factors (from which fold-in could never move).
            rng = np.random.default_rng(self.seed)
            self.map_x_mean_, self.map_y_mean_ = np.zeros(d), np.zeros(k)
            self.map_w_ = rng.normal(scale=_PROJECTION_NORM / np.sqrt(k), size=(d, k))
        self._fit_text_map(ok)

    def map_vectors(self, lm: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """CF vectors predicted from LM vectors ``lm`` (n, dim), and their ``texts``, by the fitted map.

        The mean of up to three predictions: the ridge regression, the average CF vector of
        the ``map_neighbours`` items with interactions whose (centred) LM vectors are
        closest, and (given ``texts``, with ``map_text``) the average CF vector of the
        ``map_neighbours`` items whose texts are closest by TF-IDF cosine; both averages
        weighted by squared cosine. The ridge map is one linear view of the whole catalog;
        the LM neighbours keep what is local to a region of it; the words keep what the LM
        blurs (names, tags, a year in a title). A text sharing no word with any item with
        interactions gets the first two alone (measured on held-out new-item samples of two
        MovieLens sets: docs/quality.md). ``map_neighbours=0`` (or more than ``_MAP_PAIRS``
        item pairs in one call) leaves the ridge map alone.
        """
        self._check_fitted()
        if self.map_w_ is None or len(lm) == 0:
            return np.zeros((len(lm), self._width), dtype=np.float32)
        out = self.map_y_mean_ + (lm.astype(np.float64) - self.map_x_mean_) @ self.map_w_
        parts = 1
        near = self._map_neighbours(lm)
        if near is not None:
            out, parts = 0.5 * out + 0.5 * near, 2
        lexical = self._text_neighbours(texts) if texts is not None else None
        if lexical is not None:
            lex, found = lexical
            out[found] = (parts * out[found] + lex[found]) / (parts + 1)
        return out.astype(np.float32)

    def _fit_text_map(self, base: np.ndarray) -> None:
        """The words' part of the map (``map_text``): a TF-IDF space (sublinear tf, words in
        at least two texts) over the texts of ``base``, the items the neighbours average over."""
        if not self.map_text or len(base) < 2:
            return
        from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: only when fitting

        vec = TfidfVectorizer(sublinear_tf=True, min_df=2, dtype=np.float32)
        try:
            rows = vec.fit_transform([self.catalog_.texts[i] for i in base])
        except ValueError:  # no word in two of the texts (or no text at all)
            return
        vec.stop_words_ = None  # the words left out (introspection only): not kept in snapshots
        self.map_text_ = (vec, sp.csr_matrix(rows.T))  # terms x base items

    def _text_neighbours(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """Each text's average CF vector over its ``map_neighbours`` nearest items with
        interactions by TF-IDF cosine (squared-cosine weights), and which texts share a
        word with any of them; None without the words' map."""
        model = self.__dict__.get("map_text_")
        k = int(self.__dict__.get("map_neighbours", 0))
        base = self.__dict__.get("map_base_")
        if model is None or k <= 0 or base is None or len(base) < k or len(texts) * len(base) > _MAP_PAIRS:
            return None
        vec, cols = model
        q = vec.transform(list(texts))
        y = self.item_factors_[base].astype(np.float64)
        out, found = np.zeros((len(texts), y.shape[1])), np.zeros(len(texts), dtype=bool)
        block = max(1, _MAP_BLOCK // len(base))  # bounded (rows x base) similarity blocks
        for a in range(0, len(texts), block):
            avg, total = _neighbour_average((q[a : a + block] @ cols).toarray(), y, k)
            out[a : a + len(avg)], found[a : a + len(avg)] = avg, total > 0
        return out, found

    def _map_neighbours(self, lm: np.ndarray) -> np.ndarray | None:
        """Each row's average CF vector over its nearest items with interactions (see ``map_vectors``)."""
        k = int(self.__dict__.get("map_neighbours", 0))
        base = self.__dict__.get("map_base_")
        if k <= 0 or base is None or len(base) < k or len(lm) * len(base) > _MAP_PAIRS:
            return None
        x = self.catalog_.vectors[base].astype(np.float32) - self.map_x_mean_.astype(np.float32)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        y = self.item_factors_[base].astype(np.float64)
        out = np.empty((len(lm), y.shape[1]))
        for a in range(0, len(lm), 1024):  # bounded (rows x base) similarity blocks
            q = lm[a : a + 1024].astype(np.float32) - self.map_x_mean_.astype(np.float32)
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
            out[a : a + len(q)] = _neighbour_average(q @ x.T, y, k)[0]
        return out

    def _sync_items(self) -> None:
        """Follow the catalog: grow item arrays and (re)map items without interactions."""
        cat = self.catalog_
        n = len(cat)
        uid = cat.__dict__.get("uid")
        same = self.__dict__.get("cat_uid_") == uid  # versions of another catalog say nothing here
        if same and cat.version == self.cat_version_ and n <= self.n_items_:
            return
        if n > len(self.item_factors_):
            cap = max(n, 2 * len(self.item_factors_))
            itf = np.zeros((cap, self._width), dtype=np.float32)
            itf[: self.n_items_] = self.item_factors_[: self.n_items_]
            self.item_factors_ = itf
        for name in ("has_cf_", "batch_items_"):
            arr = getattr(self, name)
            if n > len(arr):
                setattr(self, name, np.concatenate([arr, np.zeros(n - len(arr), dtype=bool)]))
        self.n_items_ = max(n, self.n_items_)
        # Items without interactions whose vector was written since the last sync (added
        # or re-encoded; after a fit, every one of them) get a mapped vector.
        cold = cat.written_since(self.cat_version_ if same else -1)
        cold = cold[~self.has_cf_[cold] & cat.alive[cold]]  # a removed item keeps what it had
        if len(cold):
            self._set_items(cold, self.map_vectors(cat.vectors[cold], [cat.texts[i] for i in cold]))
        self.cat_version_, self.cat_uid_ = cat.version, uid

    # -------------------------------------------------------------- user rows
    def _row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, strengths) of user row ``r``."""
        extra = self.extra_.get(r)
        if extra is not None:
            return extra
        if r < self.base_.shape[0]:
            a, b = self.base_.indptr[r], self.base_.indptr[r + 1]
            return self.base_.indices[a:b].astype(np.int64), self.base_.data[a:b].astype(np.float64)
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)

    def user_items(self, user: str) -> tuple[np.ndarray, np.ndarray]:
        """(item dense indices, interaction strengths) the model holds for ``user``."""
        self._check_fitted()
        r = self.users_.get(user)
        if r is None:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        return self._row(r)

    def _user_row(self, user: str) -> int:
        r = self.users_.get(user)
        if r is not None:
            return r
        r = self.n_users_
        if r >= len(self.user_factors_):
            uf = np.zeros((max(16, 2 * len(self.user_factors_)), self._width), dtype=np.float32)
            uf[:r] = self.user_factors_[:r]
            self.user_factors_ = uf
        self.user_factors_[r] = self._new_user_row()
        self.user_ids_.append(user)
        self.users_[user] = r
        self.n_users_ += 1
        return r

    def _add_interaction(self, r: int, i: int, strength: float) -> None:
        if r not in self.extra_:
            self.extra_.put(r, *self._row(r))  # the fitted row, then changed here
        had = self.extra_.strength(r, i)
        if had == 0.0:  # counted as the fit counts: distinct (user, item) pairs (strengths are > 0)
            self.n_interactions_ = getattr(self, "n_interactions_", 0) + 1
        self.extra_.set(r, i, had + strength)

    # ---------------------------------------------------------------- protocol
    def _interaction(self, event: Event) -> float:
        """How much ``event`` adds to its (user, item) strength (0: nothing)."""
        w = self._fb.weight(event.kind, event.value)  # unknown kinds raise, in both modes
        return 1.0 if self.all_events else max(w, 0.0)

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        strength = self._interaction(event)
        if strength <= 0:
            return
        self._sync_items()
        r = self._user_row(event.user)
        self._add_interaction(r, i, strength)
        self._update(r, i)

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        q = self._query(user)
        if q is None or len(items) == 0:
            return np.zeros(len(items), dtype=np.float32)
        self._sync_items()
        return items.project(self.item_factors_, q).astype(np.float32)

    def _query(self, user: UserState) -> np.ndarray | None:
        """The user's factor row (None: the model does not score the user). Factors learned
        from a handful of interactions are noise: None (score 0 contributes nothing after
        fusion) until there is enough data."""
        if getattr(self, "n_interactions_", 0) < self.min_interactions:
            return None
        r = self.users_.get(user.user)
        return None if r is None else self.user_factors_[r]

    # --------------------------------------------------------------- retrieval
    def _factors_changed(self, idx: np.ndarray, new: np.ndarray) -> None:
        """Item vectors about to change: the ones that really do are re-indexed."""
        fi = self.__dict__.get("factor_index_")
        if fi is not None and len(idx):
            idx = np.asarray(idx, dtype=np.int64)
            diff = (self.item_factors_[idx] != np.asarray(new, dtype=np.float32)).any(axis=1)
            fi.changed(idx[diff])

    def prepare_retrieval(self) -> None:
        """Build the factor graph ``candidates`` searches (:class:`~.base.PreparesRetrieval`)."""
        if getattr(self, "fitted_", False):
            self._factor_index()

    def _factor_index(self) -> FactorIndex:
        """The inner-product index over item factors, in line with the catalog and the factors."""
        self._sync_items()
        fi = self.__dict__.get("factor_index_")
        if fi is None:
            fi = self.factor_index_ = FactorIndex(self._width)
            self.factor_index_version_ = None
        cat = self.catalog_
        if self.__dict__.get("factor_index_version_") != cat.version or fi.stale:
            n = min(len(cat), self.n_items_)
            fi.sync(self.item_factors_[:n], cat.alive[:n])
            self.factor_index_version_ = cat.version
        return fi

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """About the ``n`` best-scored live items (dense indices, best first); none for a
        user the model does not score.

        An inner-product HNSW search (usearch) with the user's vector over the item
        factors: built by the first call after a fit, then kept in line with new, removed
        and re-solved items. The found items are ordered by their exact score.
        """
        self._check_fitted()
        q = self._query(user)
        if q is None or n <= 0:
            return np.zeros(0, dtype=np.int64)
        fi = self._factor_index()
        keys = fi.search(q, n)
        return best(keys, self.item_factors_[keys] @ q, n)

    def candidates_with_floor(self, user: UserState, n: int, probe: int = 32) -> tuple[np.ndarray, float | None]:
        """(:meth:`candidates`, :meth:`floor`) from one search of the factor index both ways."""
        self._check_fitted()
        q = self._query(user)
        if q is None:
            return np.zeros(0, dtype=np.int64), 0.0
        if n <= 0:
            return np.zeros(0, dtype=np.int64), self.floor(user, probe)
        near, far = self._factor_index().search_both_ways(q, n, probe)
        low = float((self.item_factors_[far] @ q).min()) if len(far) else None
        return best(near, self.item_factors_[near] @ q, n), low

    def floor(self, user: UserState, probe: int = 32) -> float | None:
        """The lowest score over live items: the best ``probe`` items for ``-q`` in the
        factor index, scored exactly (0 for a user the model does not score)."""
        self._check_fitted()
        q = self._query(user)
        if q is None:
            return 0.0
        keys = self._factor_index().search(-q, probe)
        return float((self.item_factors_[keys] @ q).min()) if len(keys) else None

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]:
        """History items whose CF vectors are most similar (cosine) to item ``idx``'s."""
        return self.because_many(user, [idx], top)[0]

    def because_many(self, user: UserState, idx: Sequence[int], top: int = 2) -> list[tuple[str, ...]]:
        """:meth:`because` of each item ``idx``; the history's vectors and norms are read once."""
        self._check_fitted()
        self._sync_items()
        ids, hidx, _ = positive_history(user, self.catalog_, self._fb)
        if not ids:
            return [() for _ in idx]
        h = self.item_factors_[hidx].astype(np.float64)
        norms = np.linalg.norm(h, axis=1)
        usable, safe = norms > 1e-12, np.maximum(norms, 1e-12)
        v = self.item_factors_[np.asarray(idx, dtype=np.intp)].astype(np.float64)
        nv = np.linalg.norm(v, axis=1)
        sims = np.where(usable[:, None], (h @ v.T) / safe[:, None] / np.maximum(nv, 1e-12), 0.0)
        return [
            top_because(ids, sims[:, j], i, hidx, top, 0.2) if nv[j] >= 1e-12 else ()
            for j, i in enumerate(idx)
        ]

    def forget(self, user: str, events: Sequence[Event]) -> None:
        """Drop ``user``'s interactions and refit from the rest.

        Every factor was shaped by the user's data, so only a refit removes it; the
        result equals fitting from scratch without them (users are re-sorted to the
        order ``fit`` would give). Cost: one batch fit, which deletion requests can afford.
        """
        if not getattr(self, "fitted_", False) or user not in self.users_:
            return
        n_items = max(len(self.catalog_), self.base_.shape[1])
        rows, cols, vals = [], [], []
        keep = sorted(u for u in self.user_ids_ if u != user)
        for new_r, u in enumerate(keep):
            idx, s = self._row(self.users_[u])
            rows.append(np.full(len(idx), new_r, dtype=np.int64))
            cols.append(idx)
            vals.append(s)
        coo = (_concat(vals, np.float64), (_concat(rows, np.int64), _concat(cols, np.int64)))
        csr = sp.csr_matrix(coo, shape=(len(keep), n_items))
        self._fit_matrix(keep, csr)


@register
class ALS(_MatrixFactorization):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with per-event fold-in.

    Batch: implicit's CPU ``AlternatingLeastSquares`` on users x items strengths (the
    sum of positive feedback weights per pair or, with ``all_events=True``, the number
    of events of any kind), confidence ``alpha * strength``. Online: each event updates
    the user's row, and the next read of the user's vector re-solves it against the
    fixed item factors (the same system as implicit's ``recalculate_user``, with a cached
    ``Y^T Y``; once per read, however many events came before it); a brand-new user has
    a vector from their first event. Items with no interactions
    get a vector mapped from their LM vector and text (ridge ``map_l2``, the
    ``map_neighbours`` nearest items with interactions by LM vector and, with
    ``map_text``, by words; see ``map_vectors``); once such an item is
    interacted with, its vector is re-solved from its users on every event (implicit's
    ``recalculate_item``). Unknown users score 0. With ``user_tables=False`` no row is
    kept per user: a request solves the user's vector from their recent events
    (``UserState.history``; the same system), and items first interacted with after the
    fit keep their mapped vector until the next fit. ``num_threads`` is for the batch
    fit (0 = all cores); it defaults to 1 because implicit's OpenMP workers spin-wait,
    which on small matrices or busy machines costs far more than it saves (a 60 x 120
    fit took 1.0 s with 2 threads vs 0.04 s with 1 on a shared 2-core box).

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> evs = [Event(user="u", item="a"), Event(user="v", item="b")]
    >>> log = InteractionLog.from_events(evs, cat)
    >>> m = ALS(factors=2, iterations=5, min_interactions=0).fit(log)
    >>> m.learn_one(Event(user="w", item="a"))
    >>> s = m.score(UserState("w"), cat.select(["a", "b"]))
    >>> bool(s[0] > s[1])
    True
    """

    name: ClassVar[str] = "als"
    scores_new_items: ClassVar[bool] = True
    users_from_events: ClassVar[bool] = True
    #: Without user tables an item first interacted with after the fit keeps its mapped
    #: vector until the next fit (folding it in needs its users' rows, which are not kept).
    users_from_events_exact: ClassVar[bool] = False
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {
        "factors": (32, 64, 128), "regularization": (0.01, 0.1), "alpha": (2.0, 10.0, 40.0)
    }
    # Batch ALS alternates `iterations` sweeps over users AND items from a random start;
    # fold-in re-solves only the user (and items that had no batch interactions)
    # against fixed factors. fit(log) and fit(empty) + learn_one per event therefore
    # reach different (both valid) factorisations: the shared suite skips that check.
    exact_incremental: ClassVar[bool] = False

    def __init__(
        self,
        *,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 2.0,
        iterations: int = 15,
        all_events: bool = False,
        map_l2: float = 1.0,
        map_neighbours: int = 50,
        map_text: bool = True,
        min_interactions: int = MIN_INTERACTIONS,
        num_threads: int = 1,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.all_events = all_events
        self.map_l2 = map_l2
        self.map_neighbours = map_neighbours
        self.map_text = map_text
        self.min_interactions = min_interactions
        self.num_threads = num_threads
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    def _batch_factors(self, csr: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        cpu, threadpool_limits = _implicit_cpu()
        # implicit asks for single-threaded BLAS (it parallelises over rows itself).
        with threadpool_limits(1, "blas"):
            model = cpu.als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, num_threads=self.num_threads, random_state=self.seed,
            )
            model.fit(csr, show_progress=False)
        return model.user_factors, model.item_factors

    def _after_fit(self) -> None:
        self.updates_ = 0
        # Users of each item that had no batch interactions, once it gets some online.
        self.item_users_: dict[int, dict[int, float]] = {}
        # Rows with interactions their factors have not been solved for yet (see _update).
        self.unsolved_: set[int] = set()
        self._refresh_grams()
        if not self.user_tables:
            # Rows are solved per request from the users' recent events; the fit's rows are not
            # kept (the fit's matrix and user ids are: an erasure refits without the user).
            self.user_factors_ = np.zeros((0, self._width), dtype=np.float32)

    def learn_one(self, event: Event) -> None:
        if self.user_tables:
            super().learn_one(event)
            return
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None or self._interaction(event) <= 0:
            return
        self._sync_items()
        # Counted per event (no per-user record tells a repeated pair): the gate of min_interactions.
        self.n_interactions_ = getattr(self, "n_interactions_", 0) + 1

    def _query(self, user: UserState) -> np.ndarray | None:
        if self.user_tables or getattr(self, "n_interactions_", 0) < self.min_interactions:
            r = self.users_.get(user.user)
            if r is not None:
                self._settle(r)
            return super()._query(user)
        return self._fold_in(user)

    def user_factor(self, user: str) -> np.ndarray | None:
        """``user``'s factor row as of every event learned so far (None: no row).

        Examples
        --------
        >>> from liverec.encode import Catalog
        >>> cat = Catalog(dim=2)
        >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
        >>> m = ALS(factors=2, iterations=5, min_interactions=0).fit(
        ...     InteractionLog.from_events([Event(user="u", item="a")], cat))
        >>> m.learn_one(Event(user="w", item="a"))
        >>> m.user_factor("w").shape, m.user_factor("nobody")
        ((2,), None)
        """
        self._check_fitted()
        r = self.users_.get(user)
        if r is None or not self.user_tables:
            return None
        self._settle(r)
        return self.user_factors_[r]

    def solve_all(self) -> None:
        """Solve every row marked by events since it was last read (``user_factor`` of each)."""
        for r in sorted(self._unsolved()):
            self._solve_user(r)

    def _settle(self, row: int) -> None:
        """Solve ``row`` if events marked it since it was last solved."""
        if row in self._unsolved():
            self._solve_user(row)

    def _unsolved(self) -> set[int]:
        pending = self.__dict__.get("unsolved_")  # a learner restored from an older snapshot has none
        if pending is None:
            pending = self.unsolved_ = set()
        return pending

    def _fold_in(self, user: UserState) -> np.ndarray | None:
        """The user's row solved from the request's recent events (kept on the request's state)."""
        key = ("als-fold-in", id(self))
        if key in user.derived:
            return user.derived[key][1]
        rows, w, _ = history_rows(user, self.catalog_, self._fb)
        add = np.ones_like(w) if self.all_events else np.maximum(w, 0.0)  # as _interaction
        q = None
        if (add > 0).any():
            self._sync_items()
            idx, inv = np.unique(rows[add > 0], return_inverse=True)
            s = np.zeros(len(idx))
            np.add.at(s, inv, add[add > 0])  # strengths summed per item in event order, as the kept rows sum them
            x = solve_least_squares(self.yty_, self.item_factors_, idx, self.alpha * s, self.regularization)
            q = np.asarray(x, dtype=np.float32)
        user.derived[key] = (self, q)  # holding the learner keeps its id its own while kept
        return q

    def _refresh_grams(self) -> None:
        x = self.user_factors_[: self.n_users_].astype(np.float64)
        y = self.item_factors_[: self.n_items_].astype(np.float64)
        self.xtx_ = x.T @ x
        self.yty_ = y.T @ y

    def _set_items(self, idx: np.ndarray, new: np.ndarray) -> None:
        self._factors_changed(idx, new)
        old = self.item_factors_[idx].astype(np.float64)
        new64 = new.astype(np.float32).astype(np.float64)
        self.yty_ += new64.T @ new64 - old.T @ old
        self.item_factors_[idx] = new

    def _add_interaction(self, r: int, i: int, strength: float) -> None:
        super()._add_interaction(r, i, strength)
        if not self.batch_items_[i]:
            col = self.item_users_.setdefault(i, {})
            col[r] = col.get(r, 0.0) + strength

    def _update(self, row: int, item: int) -> None:
        # The user's row is marked, not solved: the next read of it (a request, a fold-in
        # of an item it interacted with) solves it once against the item factors of that
        # moment, however many events came in between. Solving at every event gave the
        # same vector for the last event (the item factors rarely move between two events)
        # and cost a 64 x 64 solve per event, most of the ingestion time.
        self._unsolved().add(row)
        col = self.item_users_.get(item)
        if col is not None:  # an item with no batch interactions: fold it in from its users
            for r in col:  # its users' rows as of now
                self._settle(r)
            users = np.fromiter(col.keys(), dtype=np.int64, count=len(col))
            conf = self.alpha * np.fromiter(col.values(), dtype=np.float64, count=len(col))
            y = solve_least_squares(self.xtx_, self.user_factors_, users, conf, self.regularization)
            self._set_items(np.array([item]), y[None, :])
            self.has_cf_[item] = True
        self.updates_ += 1
        if self.updates_ % _REFRESH_GRAMS == 0:
            self._refresh_grams()

    def _solve_user(self, row: int) -> None:
        """Re-solve user ``row``'s factors from its interactions; keep ``X^T X`` in step."""
        idx, s = self._row(row)
        old = self.user_factors_[row].astype(np.float64)
        x = solve_least_squares(self.yty_, self.item_factors_, idx, self.alpha * s, self.regularization)
        self.user_factors_[row] = x
        x = self.user_factors_[row].astype(np.float64)  # the float32 value actually stored
        _rank_one_update(self.xtx_, x, old)
        self._unsolved().discard(row)


@register
class BPR(_MatrixFactorization):
    """Bayesian Personalised Ranking (Rendle et al. 2009), batch fit + per-event SGD.

    Batch: implicit's CPU ``BayesianPersonalizedRanking`` on the same matrix as
    :class:`ALS` (BPR reads it as binary). Vectors have ``factors + 1`` columns: the
    last is an item bias on the item side and a constant 1 on the user side. Online:
    ``online_steps`` SGD steps on the user's vector only, half with the event's item
    and half with items from the user's history as positives, each against a sampled
    item the user has not interacted with. Items with no interactions get a vector
    mapped from their LM vector and text (see ``ALS``). Unknown users score 0.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> log = InteractionLog.from_events([Event(user="u", item="a")], cat)
    >>> m = BPR(factors=2, iterations=5).fit(log)
    >>> m.learn_one(Event(user="w", item="b"))
    >>> m.score(UserState("w"), cat.select(["a", "b"])).shape
    (2,)
    """

    name: ClassVar[str] = "bpr"
    scores_new_items: ClassVar[bool] = True
    #: Searched by Engine.fit(tune=True).
    search_space: ClassVar[dict[str, tuple]] = {"factors": (32, 64, 128), "learning_rate": (0.01, 0.05)}
    # The per-event update is an approximation: a handful of SGD steps on one user's
    # vector with random negatives, while the batch fit runs `iterations` epochs over
    # all users and items. They cannot reach the same factors, so the shared suite's
    # batch == incremental check does not apply.
    exact_incremental: ClassVar[bool] = False

    def __init__(
        self,
        *,
        factors: int = 64,
        learning_rate: float = 0.01,
        regularization: float = 0.01,
        iterations: int = 100,
        all_events: bool = False,
        online_steps: int = 10,
        online_learning_rate: float = 0.05,
        online_regularization: float = 0.01,
        map_l2: float = 1.0,
        map_neighbours: int = 50,
        map_text: bool = True,
        min_interactions: int = MIN_INTERACTIONS,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.all_events = all_events
        self.online_steps = online_steps
        self.online_learning_rate = online_learning_rate
        self.online_regularization = online_regularization
        self.map_l2 = map_l2
        self.map_neighbours = map_neighbours
        self.map_text = map_text
        self.min_interactions = min_interactions
        self.feedback = feedback
        self.seed = seed

    @property
    def _width(self) -> int:
        return self.factors + 1

    def _new_user_row(self) -> np.ndarray:
        row = np.zeros(self._width, dtype=np.float32)
        row[-1] = 1.0  # multiplies the item bias
        return row

    def _batch_factors(self, csr: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        cpu, threadpool_limits = _implicit_cpu()
        with threadpool_limits(1, "blas"):
            # One thread: implicit's multi-threaded BPR is Hogwild SGD, whose result
            # depends on thread timing; one thread makes the seed determine the model.
            model = cpu.bpr.BayesianPersonalizedRanking(
                factors=self.factors, learning_rate=self.learning_rate,
                regularization=self.regularization, iterations=self.iterations,
                num_threads=1, verify_negative_samples=True, random_state=self.seed,
            )
            model.fit(csr, show_progress=False)
        uf = model.user_factors.copy()
        uf[:, -1] = 1.0  # users without interactions come back all-zero
        return uf, model.item_factors

    def _sample_negatives(self, n: int, exclude: set[int]) -> np.ndarray:
        neg = self.rng_.integers(0, self.n_items_, size=n)
        for t in range(n):
            tries = 0
            while int(neg[t]) in exclude and tries < 10:
                neg[t] = self.rng_.integers(0, self.n_items_)
                tries += 1
        return neg

    def _update(self, row: int, item: int) -> None:
        steps = self.online_steps
        if steps <= 0:
            return
        idx, _ = self._row(row)
        half = (steps + 1) // 2
        hist = self.rng_.choice(idx, size=steps - half) if len(idx) else np.full(steps - half, item)
        pos = np.concatenate([np.full(half, item, dtype=np.int64), hist.astype(np.int64)])
        neg = self._sample_negatives(steps, set(idx.tolist()))
        u = self.user_factors_[row].astype(np.float64)
        k, lr, reg = self.factors, self.online_learning_rate, self.online_regularization
        y = self.item_factors_
        for i, j in zip(pos, neg):
            d = y[i].astype(np.float64) - y[j]
            g = 1.0 / (1.0 + np.exp(u @ d))  # sigmoid(-(x_ui - x_uj))
            u[:k] += lr * (g * d[:k] - reg * u[:k])  # the bias coordinate stays 1
        self.user_factors_[row] = u
