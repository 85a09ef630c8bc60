"""From scored candidates to a served slate: fusion, filters, explanations.

Each source's scores are min-max normalised over the items it could rank, so a
weight means the same thing for every source and a contribution reads as a share of
the fused score: ``fused = sum_s w_s * norm_s``. Below the index's exact threshold
that is every live candidate; above it (two-stage serving) the candidates are a few
hundred retrieved items, and each source's catalog-wide lowest score
(:func:`floors`) stands in for the minimum, so an item's fused score does not depend
on which other items happened to be retrieved.

(Near-)ties are broken by popularity: a :class:`~liverec.models.base.Popularity` source
always takes part with at least :data:`TIE_BREAK` weight (and offers its candidates), so
a user no source has an opinion on yet is shown what is popular, not catalog order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, TypeVar

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..models.base import (
    Explains, ExplainsMany, Learner, Popularity, PreparesRetrieval, Retriever, RetrieverWithFloor, ScoreFloor,
    UserState, UserWeight, VectorQuery,
)
from ..types import Reason, Recommendation
from .index import VectorIndex, top_k
from .reasons import SCORE_IN_TEXT, reason_text

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13


@dataclass(frozen=True)
class Scored:
    """Candidates with each source's normalised score and the fused score."""

    items: ItemIds
    fused: np.ndarray
    parts: dict[str, np.ndarray]  # weighted, normalised contribution per source
    raw: dict[str, np.ndarray]  # each source's own scores, in the dtype it returned
    #: The per-user factor a UserWeight source's weight was multiplied by (others: 1).
    scale: dict[str, float] = field(default_factory=dict)
    #: Sources that take part only to break ties (a popularity source weighted 0).
    tie_only: frozenset[str] = frozenset()


def minmax(x: np.ndarray, floor: float | None = None) -> np.ndarray:
    """Scale to [0, 1] over the candidate set; a constant source contributes 0.

    ``floor``: the lowest score over the whole catalog, used as the minimum when it is
    below the candidates' own (two-stage serving scores only retrieved items).

    Examples
    --------
    >>> minmax(np.array([2.0, 4.0])).tolist(), minmax(np.array([2.0, 4.0]), floor=0.0).tolist()
    ([0.0, 1.0], [0.5, 1.0])
    """
    x = np.asarray(x)
    if len(x) == 0:
        return x.astype(np.float64)
    lo, hi = float(x.min()), float(x.max())
    if floor is not None and np.isfinite(floor):
        lo = min(lo, float(floor))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros(len(x), dtype=np.float64)
    out = np.subtract(x, lo, dtype=np.float64)  # one new array, in float64 whatever x holds
    out /= hi - lo
    return out


@functools.lru_cache(maxsize=256)
def _offers(cls: type, protocol: type) -> bool:
    return issubclass(cls, protocol)


P = TypeVar("P")


def offers(model: object, protocol: Callable[..., P]) -> TypeIs[P]:
    """``isinstance(model, protocol)`` for a method-only protocol, cached per class (a
    runtime protocol check costs tens of microseconds, and a request makes dozens).

    ``protocol`` is a runtime-checkable Protocol class (typed as a callable that makes a
    ``P``: mypy accepts no Protocol where ``type[P]`` is expected). True narrows
    ``model`` to the protocol for the type checker.

    Examples
    --------
    >>> from liverec.models import ItemKNN
    >>> offers(ItemKNN(), Retriever), offers(ItemKNN(), VectorQuery)
    (True, False)
    """
    # A class is hashable; mypy reads object.__hash__ unbound and says type[object] is not.
    return _offers(type(model), protocol)  # type: ignore[arg-type]


#: The weight a popularity source always has at least: it orders items the other sources
#: score alike (every item, for a user nobody knows yet) and moves nothing else.
TIE_BREAK = 1e-4


def weight_of(name: str, model: Learner, weights: Mapping[str, float]) -> float:
    """``weights[name]``, raised to :data:`TIE_BREAK` for a popularity source.

    Examples
    --------
    >>> from liverec.models import ItemKNN, Trending
    >>> weight_of("trending", Trending(), {}), weight_of("itemknn", ItemKNN(), {})
    (0.0001, 0.0)
    """
    w = weights.get(name, 0.0)
    return max(w, TIE_BREAK) if offers(model, Popularity) else w


def retrieve(
    user: UserState,
    learners: Mapping[str, Learner],
    weights: Mapping[str, float],
    catalog: Catalog,
    index: VectorIndex,
    n: int,
) -> np.ndarray:
    """Candidate dense indices: everything for small catalogs, else each source's top ``n``.

    Above the index's exact threshold every weighted source contributes its own top
    ``n`` (:func:`source_candidates`). Only live items come back.
    """
    if not index.uses_ann:
        return catalog.alive_idx()
    offered = (source_candidates(model, user, catalog, index, n)
               for name, model in learners.items() if weight_of(name, model, weights) > 0)
    return _union(catalog, [f for f in offered if f is not None], n)


def prepare_retrieval(learners: Mapping[str, Learner]) -> None:
    """Build every source's retrieval structure now (:class:`~liverec.models.base.PreparesRetrieval`):
    called on new learners before they serve in two stages."""
    for model in learners.values():
        if offers(model, PreparesRetrieval):
            model.prepare_retrieval()


def _union(catalog: Catalog, found: list[np.ndarray], n: int) -> np.ndarray:
    """The live items of the sources' candidates (the first ``n`` live items when none has any)."""
    if not found:
        return catalog.alive_idx()[:n]
    idx = np.unique(np.concatenate(found))
    return idx[catalog.alive[idx]]


def source_candidates(
    model: Learner, user: UserState, catalog: Catalog, index: VectorIndex, n: int
) -> np.ndarray | None:
    """One source's (about) ``n`` best items: a :class:`~liverec.models.base.Retriever`
    from ``candidates`` (sublinear in the catalog), a
    :class:`~liverec.models.base.VectorQuery` from the vector index; a source that is
    neither scores the whole catalog (O(items); every default source is one of the two).
    None: the source has no opinion on this user (no query vector, all scores 0).
    """
    if offers(model, Retriever):
        return np.asarray(model.candidates(user, n), dtype=np.int64)
    if offers(model, VectorQuery):
        vec = model.query_vector(user)
        return index.search(vec, n)[0] if vec is not None else None
    live = catalog.alive_idx()
    s = np.asarray(model.score(user, catalog.from_idx(live)), dtype=np.float64)
    return live[top_k(s, n)] if s.any() else None


#: Items searched at the far end of the vector index for a VectorQuery source's floor.
FLOOR_PROBE = 32


def floors(
    user: UserState, learners: Mapping[str, Learner], weights: Mapping[str, float], catalog: Catalog,
    index: VectorIndex,
) -> dict[str, float]:
    """Each weighted source's lowest score over the live catalog, found without scoring it.

    A :class:`~liverec.models.base.ScoreFloor` source answers ``floor(user)`` itself;
    a :class:`~liverec.models.base.VectorQuery` source's lowest items are the nearest
    to ``-query`` in the vector index (:data:`FLOOR_PROBE` of them, scored exactly).
    Sources that can do neither are left out (their candidates' minimum is used).
    """
    out: dict[str, float] = {}
    for name, model in learners.items():
        if weight_of(name, model, weights) <= 0:
            continue
        f = source_floor(model, user, catalog, index)
        if f is not None:
            out[name] = f
    return out


def source_floor(model: Learner, user: UserState, catalog: Catalog, index: VectorIndex) -> float | None:
    """One source's part of :func:`floors` (None: it cannot tell, or has no opinion)."""
    if offers(model, ScoreFloor):
        f = model.floor(user)
        return None if f is None else float(f)
    if offers(model, VectorQuery):
        vec = model.query_vector(user)
        if vec is None:
            return None
        return _lowest(model, user, catalog, index.search(-vec, FLOOR_PROBE)[0])
    return None


def _lowest(model: Learner, user: UserState, catalog: Catalog, far: np.ndarray) -> float | None:
    return float(np.min(model.score(user, catalog.from_idx(far)))) if len(far) else None


def retrieve_with_floors(
    user: UserState,
    learners: Mapping[str, Learner],
    weights: Mapping[str, float],
    catalog: Catalog,
    index: VectorIndex,
    n: int,
) -> tuple[np.ndarray, dict[str, float]]:
    """:func:`retrieve` and, when it retrieves (above the index's exact threshold),
    :func:`floors`, with one search per source where one search can find both: a
    :class:`~liverec.models.base.RetrieverWithFloor` answers both at once, and a
    :class:`~liverec.models.base.VectorQuery` source's query is searched both ways in
    the vector index in one call. Below the threshold: every live item, no floors.
    """
    if not index.uses_ann:
        return catalog.alive_idx(), {}
    found: list[np.ndarray] = []
    low: dict[str, float] = {}
    for name, model in learners.items():
        if weight_of(name, model, weights) <= 0:
            continue
        f: float | None
        c: np.ndarray | None
        if offers(model, RetrieverWithFloor):
            c, f = model.candidates_with_floor(user, n)
            c = np.asarray(c, dtype=np.int64)
        elif offers(model, VectorQuery) and not offers(model, Retriever) and not offers(model, ScoreFloor):
            vec = model.query_vector(user)
            if vec is None:
                continue
            c, _, far = index.search_both_ways(vec, n, FLOOR_PROBE)
            f = _lowest(model, user, catalog, far)
        else:
            c, f = source_candidates(model, user, catalog, index, n), source_floor(model, user, catalog, index)
        if c is not None:
            found.append(c)
        if f is not None:
            low[name] = float(f)
    return _union(catalog, found, n), low


def fuse(
    user: UserState, items: ItemIds, learners: Mapping[str, Learner], weights: Mapping[str, float],
    floor: Mapping[str, float] | None = None,
) -> Scored:
    """Score ``items`` with every weighted source and fuse (``floor``: see :func:`floors`).

    A :class:`~liverec.models.base.UserWeight` source's weight is first multiplied by
    its ``fusion_scale(user)`` (declared interests weigh less as a history grows).
    """
    fused = np.zeros(len(items), dtype=np.float64)
    parts: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    scale: dict[str, float] = {}
    tie_only: set[str] = set()
    for name, model in learners.items():
        w = weight_of(name, model, weights)
        if w == 0:
            continue
        if w > weights.get(name, 0.0):  # raised by weight_of: here only to break ties
            tie_only.add(name)
        if offers(model, UserWeight):
            scale[name] = float(model.fusion_scale(user))
            w *= scale[name]
        raw[name] = s = np.asarray(model.score(user, items))  # the source's own dtype: read only to explain
        part = parts[name] = minmax(s, (floor or {}).get(name))
        part *= w
        fused += part
    return Scored(items, fused, parts, raw, scale, frozenset(tie_only))


def select(scored: Scored, k: int) -> np.ndarray:
    """Positions (into ``scored.items``) of the top ``k``, best first."""
    return top_k(scored.fused, k)


def explain(
    user: UserState,
    scored: Scored,
    pos: int,
    learners: Mapping[str, Learner],
    catalog: Catalog,
) -> tuple[Reason, ...]:
    """Each source's contribution to the item at ``pos``, in words and as data."""
    return explain_slate(user, scored, np.array([pos]), learners, catalog)[0]


def explain_slate(
    user: UserState,
    scored: Scored,
    order: np.ndarray,
    learners: Mapping[str, Learner],
    catalog: Catalog,
) -> list[tuple[Reason, ...]]:
    """:func:`explain` for every position of ``order``: each source's values are read
    for the whole slate at once (as Python floats), and each source names the history
    items behind all its reasons in one call."""
    pos = np.asarray(order, dtype=np.intp)
    cols = [(n, scored.parts[n][pos].tolist(), scored.raw[n][pos].tolist()) for n in scored.parts]
    idxs = scored.items.idx[pos].tolist()
    shown = [_shown([(n, part[j], raw[j]) for n, part, raw in cols], scored.tie_only) for j in range(len(idxs))]
    # History items only for the two strongest sources: they are what drove the score,
    # and ``because`` is the costly part of explaining (measured 5 ms of 7).
    asked: dict[str, list[int]] = {}
    for j, rows in enumerate(shown):
        for rank, (name, contribution, _) in rows:
            if rank < 2 and contribution > 0 and offers(learners[name], Explains):
                asked.setdefault(name, []).append(j)
    because = {
        (name, j): b for name, js in asked.items() for j, b in zip(js, _because(learners[name], user, [idxs[j] for j in js]))
    }
    texts: dict[tuple[str, tuple[str, ...]], str] = {}  # sentences without a score, shared by the slate
    return [
        tuple(_reason(name, part, raw, because.get((name, j), ()), user, catalog, texts) for _, (name, part, raw) in rows)
        for j, rows in enumerate(shown)
    ]


def _reason(name: str, contribution: float, raw: float, because: tuple[str, ...], user: UserState, catalog: Catalog,
            texts: dict[tuple[str, tuple[str, ...]], str]) -> Reason:
    """One source's reason: its contribution, in words and as data (``texts``: the slate's
    sentences so far that show no score, by source and history items)."""
    if name in SCORE_IN_TEXT:
        text = reason_text(name, raw, because, user, catalog)
    else:
        if (name, because) not in texts:
            texts[name, because] = reason_text(name, raw, because, user, catalog)
        text = texts[name, because]
    return Reason(source=name, contribution=round(contribution, 6), text=text, because=because)


def _shown(values: list[tuple[str, float, float]], tie_only: frozenset[str]) -> list[tuple[int, tuple[str, float, float]]]:
    """The (rank, (source, contribution, raw score)) pairs an item's reasons show, strongest first."""
    # At equal contributions a source that only breaks ties comes last.
    ranked = sorted(values, key=lambda v: (-v[1], v[0] in tie_only))
    # Sources that added nothing (or only broke ties) are left out; the strongest one stands
    # in if none added more.
    shown = [(r, v) for r, v in enumerate(ranked) if round(v[1], 6) > TIE_BREAK]
    if not shown and ranked:
        shown = [(0, ranked[0])]
    return shown


def _because(model: Learner, user: UserState, idx: list[int]) -> list[tuple[str, ...]]:
    """The history items behind ``model``'s score of each item ``idx``, in one call when it can."""
    if offers(model, ExplainsMany):
        return model.because_many(user, idx)
    if offers(model, Explains):
        return [model.because(user, i) for i in idx]
    return [() for _ in idx]


def to_recommendations(
    user: UserState,
    scored: Scored,
    order: np.ndarray,
    learners: Mapping[str, Learner],
    catalog: Catalog,
    *,
    with_reasons: bool = True,
) -> list[Recommendation]:
    reasons = explain_slate(user, scored, order, learners, catalog) if with_reasons else [()] * len(order)
    return [
        Recommendation(
            item=scored.items.id_at(int(p)),
            score=float(scored.fused[p]),
            reasons=why,
            propensity=1.0,
            position=rank,
        )
        for rank, (p, why) in enumerate(zip(order, reasons))
    ]
