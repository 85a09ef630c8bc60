"""From scored candidates to a served slate: fusion, filters, explanations.

Each source's scores are min-max normalised over the candidate set, so a weight
means the same thing for every source and a contribution reads as a share of the
fused score: ``fused = sum_s w_s * norm_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..models.base import Learner, Retriever, UserState, VectorQuery
from ..types import Reason, Recommendation
from .index import VectorIndex, top_k


@dataclass(frozen=True)
class Scored:
    """Candidates with each source's normalised score and the fused score."""

    items: ItemIds
    fused: np.ndarray
    parts: dict[str, np.ndarray]  # weighted, normalised contribution per source
    raw: dict[str, np.ndarray]


def minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] over the candidate set; a constant source contributes 0."""
    if len(x) == 0:
        return x.astype(np.float64)
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.zeros(len(x), dtype=np.float64)
    return (x.astype(np.float64) - lo) / (hi - lo)


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
    ``n``: a :class:`~liverec.models.base.Retriever` from ``candidates`` (sublinear
    in the catalog), a :class:`~liverec.models.base.VectorQuery` from the vector index.
    A source that is neither scores the whole catalog to find its top ``n`` (O(items);
    every default source is a Retriever or a VectorQuery). Only live items come back.
    """
    if not index.uses_ann:
        return catalog.alive_idx()
    found: list[np.ndarray] = []
    for name, model in learners.items():
        if weights.get(name, 0.0) <= 0:
            continue
        if isinstance(model, Retriever):
            found.append(np.asarray(model.candidates(user, n), dtype=np.int64))
        elif isinstance(model, VectorQuery):
            vec = model.query_vector(user)
            if vec is not None:
                found.append(index.search(vec, n)[0])
        else:
            live = catalog.alive_idx()
            s = np.asarray(model.score(user, catalog.from_idx(live)), dtype=np.float64)
            if s.any():
                found.append(live[top_k(s, n)])
    if not found:
        return catalog.alive_idx()[:n]
    idx = np.unique(np.concatenate(found))
    return idx[catalog.alive[idx]]


def fuse(
    user: UserState, items: ItemIds, learners: Mapping[str, Learner], weights: Mapping[str, float]
) -> Scored:
    """Score ``items`` with every weighted source and fuse."""
    fused = np.zeros(len(items), dtype=np.float64)
    parts: dict[str, np.ndarray] = {}
    raw: dict[str, np.ndarray] = {}
    for name, model in learners.items():
        w = weights.get(name, 0.0)
        if w == 0:
            continue
        s = np.asarray(model.score(user, items), dtype=np.float64)
        raw[name] = s
        parts[name] = w * minmax(s)
        fused += parts[name]
    return Scored(items, fused, parts, raw)


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
    idx = int(scored.items.idx[pos])
    reasons = []
    for rank, (name, part) in enumerate(sorted(scored.parts.items(), key=lambda kv: -kv[1][pos])):
        contribution = float(part[pos])
        raw = float(scored.raw[name][pos])
        model = learners[name]
        because: tuple[str, ...] = ()
        # History items only for the two strongest sources: they are what drove the
        # score, and ``because`` is the costly part of explaining (measured 5 ms of 7).
        if rank < 2 and contribution > 0 and hasattr(model, "because"):
            because = model.because(user, idx)
        text = _reason_text(name, raw, because, user, catalog)
        reasons.append(Reason(source=name, contribution=round(contribution, 6), text=text, because=because))
    return tuple(r for r in reasons if r.contribution > 0) or tuple(reasons[:1])


def _title(catalog: Catalog, item_id: str) -> str:
    i = catalog.index.get(item_id)
    if i is None:
        return item_id
    t = catalog.attributes[i].get("title") or catalog.texts[i].split("\n")[0] or item_id
    return str(t)


def _titles(catalog: Catalog, ids: tuple[str, ...]) -> str:
    return " and ".join(f"“{_title(catalog, b)}”" for b in ids)


#: How each source's contribution reads to a person; {because} = the history items behind it.
_PHRASES: dict[str, tuple[str, str]] = {
    # source: (with history items, without)
    "itemknn": ("people who liked {because} also liked this", "often liked together with what you liked"),
    "userknn": ("readers with tastes like yours liked this", "readers with tastes like yours liked this"),
    "ease": ("goes with {because} in what people consume together", "fits what people like you consume"),
    "als": ("matches your taste pattern (like {because})", "matches your taste pattern"),
    "bpr": ("matches your taste pattern (like {because})", "matches your taste pattern"),
    "sequence": ("usually comes next after {because}", "usually comes next after what you just did"),
    "transition": ("often chosen right after {because}", "often chosen right after what you just chose"),
    "neural": ("predicted to please you, given {because}", "predicted to please you"),
    "tfidf": ("shares words with {because}", "shares words with what you liked"),
    "pop": ("popular with everyone", "popular with everyone"),
}


def _reason_text(name: str, raw: float, because: tuple[str, ...], user: UserState, catalog: Catalog) -> str:
    if name == "content":
        if because:
            return f"similar to {_titles(catalog, because)}, which you liked (similarity {raw:.2f})"
        if user.interests_text:
            return f"matches your interests “{user.interests_text}” (similarity {raw:.2f})"
        return f"close to your taste profile (similarity {raw:.2f})"
    if name == "trending":
        return f"popular right now (trend score {np.expm1(raw):.1f})"
    with_items, without = _PHRASES.get(name, (f"{name} likes it (score {{raw:.3f}})", f"{name} score {{raw:.3f}}"))
    if because:
        return with_items.format(because=_titles(catalog, because), raw=raw)
    return without.format(raw=raw)


def to_recommendations(
    user: UserState,
    scored: Scored,
    order: np.ndarray,
    learners: Mapping[str, Learner],
    catalog: Catalog,
    *,
    with_reasons: bool = True,
) -> list[Recommendation]:
    return [
        Recommendation(
            item=scored.items.id_at(int(p)),
            score=float(scored.fused[p]),
            reasons=explain(user, scored, int(p), learners, catalog) if with_reasons else (),
            propensity=1.0,
            position=rank,
        )
        for rank, p in enumerate(order)
    ]
