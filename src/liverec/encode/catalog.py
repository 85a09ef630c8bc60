"""The in-memory item space: external ids <-> dense indices, LM vectors, attributes.

Dense indices are internal: they never leave the engine. They are stable for the
life of a process (a removed item keeps its slot, marked dead) so learners can keep
per-item arrays indexed by them.

Examples
--------
>>> import numpy as np
>>> cat = Catalog(dim=2)
>>> cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{"year": 1}, {"year": 2}], ["A", "B"])
[0, 1]
>>> cat.select(["b"]).idx.tolist()
[1]
>>> cat.filter_mask({"year": {"gte": 2}}).nonzero()[0].tolist()
[1]
"""

from __future__ import annotations

import json
import operator
import sys
import threading
import uuid
import warnings
from collections import Counter
from types import FrameType
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

import numpy as np

from ..errors import NoMatchWarning, UnknownItemError, ValidationError
from ..validate import check_filters

_OPS: dict[str, Any] = {
    "eq": lambda col, v: col == v,
    "ne": lambda col, v: col != v,
    "gt": lambda col, v: col > v,
    "gte": lambda col, v: col >= v,
    "lt": lambda col, v: col < v,
    "lte": lambda col, v: col <= v,
}


class ItemIds:
    """A set of items to score: dense ``idx`` in the catalog and their external ``ids``.

    Learners read ``idx``; ``ids`` is resolved lazily because most requests only
    need the ids of the few items served.
    """

    __slots__ = ("idx", "_ids", "_catalog")

    def __init__(self, idx: np.ndarray, catalog: "Catalog", ids: tuple[str, ...] | None = None) -> None:
        self.idx = np.asarray(idx, dtype=np.int64)
        self._catalog = catalog
        self._ids = ids

    @property
    def ids(self) -> tuple[str, ...]:
        if self._ids is None:
            names = self._catalog.ids
            self._ids = tuple(names[i] for i in self.idx)
        return self._ids

    def id_at(self, pos: int) -> str:
        """External id of the item at position ``pos`` (without building all ids)."""
        return self._ids[pos] if self._ids is not None else self._catalog.ids[int(self.idx[pos])]

    def gather(self, matrix: np.ndarray) -> np.ndarray:
        """Rows of an (n_catalog, ...) array for these items."""
        return matrix[self.idx]

    def project(
        self, matrix: np.ndarray, q: np.ndarray, by_column: Callable[[], np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """``matrix[idx] @ q`` without copying the rows when most of the catalog is asked for;
        then from ``by_column()`` (the same matrix in column-major order, e.g.
        :meth:`Catalog.vectors_by_column`) when it gives one."""
        if len(self.idx) * 4 > matrix.shape[0]:
            whole = by_column() if by_column is not None else None
            return ((matrix if whole is None else whole) @ q)[self.idx]
        return matrix[self.idx] @ q

    def __len__(self) -> int:
        return len(self.idx)


#: Up to this many rows a catalog keeps a column-major copy of its vectors for whole-catalog
#: scoring (:meth:`Catalog.vectors_by_column`; 384-d float32: 48 MB at this size). Above it,
#: serving retrieves candidates from an index and scores a few hundred rows, row-major.
BY_COLUMN_MAX_ITEMS = 32_768


class Catalog:
    """Growable arrays of item vectors and attributes behind an id map."""

    def __init__(self, dim: int | None = None, capacity: int = 1024) -> None:
        # dim may stay None until the first upsert: an engine opened on an empty store
        # does not know its encoder's dimension without loading the model.
        self.dim = dim
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self._vectors = np.zeros((capacity if dim else 0, dim or 0), dtype=np.float32)
        self._alive = np.zeros(capacity, dtype=bool)
        self._stamps = np.zeros(capacity, dtype=np.int64)  # version that last wrote each row's vector
        self.attributes: list[Mapping[str, Any]] = []
        self.texts: list[str] = []
        self.version = 0  # bumps on every change; caches key on it
        #: Versions count from 0 in every catalog: a learner that keeps one also keeps this,
        #: so a learner restored over another catalog (a restart) does not mistake its counts.
        self.uid = uuid.uuid4().hex
        self._columns: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        """Everything but the lock (a copy for another process, e.g. a Ray task, gets its own)
        and the column-major copy of the vectors (rebuilt on first use)."""
        with self._lock:
            return {k: v for k, v in self.__dict__.items() if k not in ("_lock", "_by_column")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        i = self.index.get(item_id) if isinstance(item_id, str) else None
        return i is not None and bool(self._alive[i])

    @property
    def vectors(self) -> np.ndarray:
        """(n, dim) vectors of every slot, dead ones included (their rows are kept)."""
        return self._vectors[: len(self.ids)]

    def vectors_by_column(self) -> np.ndarray | None:
        """:attr:`vectors` in column-major order, or None above :data:`BY_COLUMN_MAX_ITEMS` rows.

        A product of the whole matrix with one vector (a content source scoring every item)
        reads column-major rows about twice as fast as row-major ones once the matrix is
        out of the CPU caches (10k x 384 float32: 1.1 -> 0.5 ms here): BLAS then sweeps each
        column once. The copy follows the catalog: rows written since the last call are
        copied again, the rest kept. The same numbers as ``vectors @ q`` up to float32
        rounding (the sum runs in another order).

        >>> cat = Catalog(dim=2)
        >>> _ = cat.upsert(["a", "b"], np.array([[1, 2], [3, 4]], dtype=np.float32), [{}, {}], ["", ""])
        >>> (cat.vectors_by_column() @ np.ones(2, dtype=np.float32)).tolist()
        [3.0, 7.0]
        """
        n = len(self.ids)
        if n > BY_COLUMN_MAX_ITEMS or not self.dim:
            return None
        with self._lock:
            kept = self.__dict__.get("_by_column")
            if kept is None or kept[1].shape[0] < n:
                cols = np.zeros(self._vectors.shape, dtype=np.float32, order="F")
                cols[:n] = self._vectors[:n]
            elif kept[0] != self.version:
                cols = kept[1]
                rows = self.written_since(kept[0])
                cols[rows] = self._vectors[rows]
            else:
                return kept[1][:n]
            self._by_column = (self.version, cols)
            return cols[:n]

    @property
    def alive(self) -> np.ndarray:
        return self._alive[: len(self.ids)]

    @property
    def n_alive(self) -> int:
        cached = getattr(self, "_n_alive", None)
        if cached is None or cached[0] != self.version:
            cached = self._n_alive = (self.version, int(self.alive.sum()))
        return cached[1]

    def alive_idx(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def idx_of(self, item_id: str, *, field: str = "item") -> int:
        """Dense index of a live item, or :class:`UnknownItemError`."""
        i = self.index.get(item_id)
        if i is None or not self._alive[i]:
            raise UnknownItemError(
                f"unknown item {item_id!r} in {field}: it is not in the catalog.",
                field=field,
            )
        return i

    def get_idx(self, item_id: str) -> int | None:
        """Dense index of a live item, or None."""
        i = self.index.get(item_id)
        return i if i is not None and self._alive[i] else None

    def live_indices(self, ids: Collection[str]) -> np.ndarray:
        """Dense indices of those of ``ids`` that are live items (others skipped), in order.

        One C-level dict lookup for all ids when every id is known (the common case).

        Examples
        --------
        >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
        >>> _ = cat.remove(["b"])
        >>> cat.live_indices(["c", "b", "zz", "a"]).tolist()
        [2, 0]
        """
        if not ids:
            return np.zeros(0, dtype=np.int64)
        try:
            idx = np.array(operator.itemgetter(*ids)(self.index), dtype=np.int64, ndmin=1)
        except KeyError:
            idx = np.fromiter((i for i in map(self.index.get, ids) if i is not None), dtype=np.int64)
        return idx[self._alive[idx]]

    def select(self, ids: Iterable[str], *, field: str = "candidates") -> ItemIds:
        """Resolve external ids (all must be live items)."""
        ids = tuple(ids)
        idx = np.fromiter((self.idx_of(i, field=field) for i in ids), dtype=np.int64, count=len(ids))
        return ItemIds(idx, self, ids)

    def from_idx(self, idx: np.ndarray) -> ItemIds:
        return ItemIds(idx, self)

    # -------------------------------------------------------------- mutation
    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        attributes: Sequence[Mapping[str, Any]],
        texts: Sequence[str],
    ) -> list[int]:
        """Insert or replace items; returns their dense indices."""
        with self._lock:
            if self.dim is None:
                self.dim = int(vectors.shape[1])
                self._vectors = np.zeros((max(1024, len(ids)), self.dim), dtype=np.float32)
                self._alive = np.zeros(self._vectors.shape[0], dtype=bool)
                self._stamps = np.zeros(self._vectors.shape[0], dtype=np.int64)
            out = []
            for item_id, vec, attrs, text in zip(ids, vectors, attributes, texts):
                i = self.index.get(item_id)
                if i is None:
                    i = len(self.ids)
                    self._grow(i + 1)
                    self.ids.append(item_id)
                    self.index[item_id] = i
                    self.attributes.append(attrs)
                    self.texts.append(text)
                else:
                    self.attributes[i] = attrs
                    self.texts[i] = text
                self._vectors[i] = vec
                self._alive[i] = True
                self._stamps[i] = self.version + 1
                out.append(i)
            self.version += 1
            return out

    def written_since(self, version: int) -> np.ndarray:
        """Indices of the items whose vector was written (added or re-encoded) after ``version``.

        >>> cat = Catalog(dim=2)
        >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
        >>> v = cat.version
        >>> _ = cat.upsert(["b", "c"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
        >>> cat.written_since(v).tolist(), cat.written_since(-1).tolist()
        ([1, 2], [0, 1, 2])
        """
        stamps = self.__dict__.get("_stamps")
        if stamps is None:  # pickled before stamps were kept: any row may have changed
            return np.arange(len(self.ids))
        return np.flatnonzero(stamps[: len(self.ids)] > version)

    def remove(self, ids: Iterable[str]) -> list[int]:
        """Mark items dead; their slots are never reused in this process."""
        with self._lock:
            gone = [self.index[i] for i in ids if i in self.index and self._alive[self.index[i]]]
            self._alive[gone] = False
            self.version += 1
            return gone

    def _grow(self, n: int) -> None:
        cap = self._vectors.shape[0]
        if n <= cap:
            return
        new_cap = max(n, cap * 2)
        v = np.zeros((new_cap, self._vectors.shape[1]), dtype=np.float32)
        v[:cap] = self._vectors
        a = np.zeros(new_cap, dtype=bool)
        a[:cap] = self._alive
        t = np.zeros(new_cap, dtype=np.int64)
        stamps = self.__dict__.get("_stamps")
        if stamps is not None:
            t[: len(stamps)] = stamps
        self._vectors, self._alive, self._stamps = v, a, t

    # --------------------------------------------------------------- filters
    def column(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, present) arrays of one attribute, rebuilt when the catalog changes.

        float64 when every present value is a number that fits one (comparisons in
        numpy); otherwise an object array compared value by value, so one odd value
        (a string year, an integer beyond float range) never breaks a filter.
        """
        cached = self._columns.get(key)
        if cached is not None and cached[0] == self.version:
            return cached[1], cached[2]
        raw = [a.get(key) for a in self.attributes]
        present = np.array([v is not None for v in raw], dtype=bool)
        values: np.ndarray | None = None
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw if v is not None):
            try:
                values = np.array([v if v is not None else np.nan for v in raw], dtype=np.float64)
            except OverflowError:  # an integer beyond float64: compare exactly, as objects
                values = None
            if values is not None and np.isinf(values).any():
                values = None
        if values is None:
            values = np.empty(len(raw), dtype=object)  # element by element: lists stay one element
            for i, v in enumerate(raw):
                values[i] = v
        self._columns[key] = (self.version, values, present)
        return values, present

    def filter_mask(self, filters: Mapping[str, Any]) -> np.ndarray:
        """Boolean mask of live items matching every filter.

        A filter value is an exact match (``{"year": 1937}``), a list of allowed values
        (``{"genre": ["Fantasy", "Horror"]}``) or a dict of operators among
        eq, ne, gt, gte, lt, lte (``{"year": {"gte": 1990, "lt": 2000}}``). Filters
        that leave no item warn (:class:`~liverec.errors.NoMatchWarning`), naming the
        filter that matches nothing, so an empty answer is never silent.
        """
        mask, unmatched = self._match(filters)
        for w in unmatched:
            warnings.warn(w, stacklevel=_caller_level())
        return mask

    def unmatched(self, filters: Mapping[str, Any]) -> list[NoMatchWarning]:
        """The :class:`~liverec.errors.NoMatchWarning` s ``filters`` earn, returned rather
        than warned (empty when some live item matches, or the catalog is empty).

        Examples
        --------
        >>> c = Catalog(dim=1); _ = c.upsert(["a"], np.ones((1, 1), np.float32), [{"year": 1997}], ["A"])
        >>> [(w.field, w.fix) for w in c.unmatched({"year": {"gt": 2000}})]
        [('filters.year', "the items' year runs from 1997 to 1997: choose a condition within that range.")]
        """
        return self._match(filters)[1]

    def _match(self, filters: Mapping[str, Any]) -> tuple[np.ndarray, list[NoMatchWarning]]:
        check_filters(filters)
        masks = {key: self._condition_mask(key, cond) for key, cond in filters.items()}
        mask = self.alive.copy()
        for m in masks.values():
            mask &= m
        if masks and not mask.any() and self.n_alive:
            return mask, self._no_match(filters, masks)
        return mask, []

    def _condition_mask(self, key: str, cond: Any) -> np.ndarray:
        """Items whose attribute ``key`` meets one filter condition."""
        values, present = self.column(key)
        if isinstance(cond, Mapping):
            mask = present.copy()
            for op, v in cond.items():
                if values.dtype == object:
                    m = np.fromiter((_compare(_OPS[op], x, v) for x in values), dtype=bool, count=len(values))
                else:
                    try:
                        with np.errstate(invalid="ignore"):
                            m = np.asarray(_OPS[op](values, v), dtype=bool)
                    except TypeError as exc:
                        raise ValidationError(
                            f"filter {key}.{op}={v!r:.40} cannot compare with {key!r}, which holds numbers: "
                            f"{exc}. Send a number, e.g. {{\"{key}\": {{\"{op}\": 1990}}}}.",
                            field=f"filters.{key}",
                        ) from exc
                mask &= m
            return mask
        if isinstance(cond, (list, tuple)):
            allowed = set(cond)
            return present & np.fromiter((_member(x, allowed) for x in values), dtype=bool, count=len(values))
        return present & np.asarray(values == cond, dtype=bool)

    def _no_match(self, filters: Mapping[str, Any], masks: Mapping[str, np.ndarray]) -> list[NoMatchWarning]:
        """One warning per filter that leaves nothing (``filter year={"gte": 3000} matches
        no item ...``), each with a fix drawn from what the items hold."""
        alive = self.alive
        out = []
        for key, m in masks.items():
            if (m & alive).any():
                continue
            shown = f"{key}={json.dumps(filters[key], ensure_ascii=False)}"
            values, present = self.column(key)
            present = present & alive
            if not present.any():
                msg = f"filter {shown} matches no item: no item in the catalog has the attribute {key!r}."
                keys = self._common_keys()
                fix = (f"filter on an attribute the items carry: {', '.join(map(repr, keys))}." if keys
                       else "the items carry no attributes: send the request without filters.")
            else:
                msg = f"filter {shown} matches no item in the catalog."
                if values.dtype == np.float64:
                    lo, hi = np.nanmin(values[present]), np.nanmax(values[present])
                    fix = (f"the items' {key} runs from {_num(lo)} to {_num(hi)}: choose a condition within "
                           "that range.")
                else:
                    seen = Counter(json.dumps(v, ensure_ascii=False, default=str)[:60] for v in values[present])
                    fix = f"use a value the items hold, e.g. {', '.join(v for v, _ in seen.most_common(3))}."
            out.append(NoMatchWarning(msg + " The answer is empty.", field=f"filters.{key}", fix=fix))
        if not out:
            shown = json.dumps(dict(filters), ensure_ascii=False)
            out.append(NoMatchWarning(
                f"the filters {shown} match no item together (each one alone matches some). The answer is empty.",
                field="filters", fix="drop or loosen one of the filters.",
            ))
        return out

    def _common_keys(self, top: int = 10, sample: int = 2_000) -> list[str]:
        """The attribute names live items carry most often (over the first ``sample`` of them)."""
        counts: Counter[str] = Counter()
        for i in self.alive_idx()[:sample]:
            counts.update(self.attributes[int(i)].keys())
        return [k for k, _ in counts.most_common(top)]


def _num(x: float) -> str:
    """A number as a filter would be written: ``1997``, not ``1997.0``."""
    return str(int(x)) if float(x).is_integer() and abs(x) < 2**63 else repr(float(x))


def _caller_level() -> int:
    """The ``stacklevel`` of the first frame outside liverec: a warning points at the caller's line."""
    package = __name__.split(".")[0]
    frame: FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] == package:
        frame, level = frame.f_back, level + 1
    return level


def _compare(op: Any, x: Any, v: Any) -> bool:
    """``op(x, v)`` for one stored value; values of another type never match (never raise)."""
    if x is None:
        return False
    try:
        return bool(op(x, v))
    except (TypeError, ValueError):
        return False


def _member(x: Any, allowed: set[Any]) -> bool:
    try:
        return x in allowed
    except TypeError:  # an unhashable stored value (a list, an object) is in no set of scalars
        return False


def centred_norms(vectors: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``|v - mean|`` per row (floored at 1e-6), in blocks: no catalog-sized float64 copy.

    Shared by the content source and the vector index, which both work on mean-centred
    unit vectors ``(v - mean) / |v - mean|``.

    Examples
    --------
    >>> centred_norms(np.eye(2, dtype=np.float32), np.array([0.5, 0.5])).round(3).tolist()
    [0.707, 0.707]
    """
    out = np.empty(len(vectors))
    for a in range(0, len(out), 65_536):
        out[a : a + 65_536] = np.linalg.norm(vectors[a : a + 65_536].astype(np.float64) - mean, axis=1)
    return np.maximum(out, 1e-6)
