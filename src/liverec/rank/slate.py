"""Slate construction: MMR diversity and per-provider exposure caps over fused scores.

Greedy selection (Carbonell & Goldstein's maximal marginal relevance): each next item
maximises ``(1 - diversity) * relevance - diversity * max_sim(item, chosen)``, where
relevance is the fused score scaled to [0, 1] and similarity is the cosine of LM
vectors. An exposure cap keeps at most ``max_per_provider`` items of one provider
(an attribute such as ``authors`` or ``brand``) in a slate. With ``diversity=0`` and
no cap this is plain top-k.

Written here rather than taken from a library: no kept library does MMR over an
arbitrary score vector with an exposure constraint, and it is twenty lines of numpy.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .index import top_k

#: MMR considers only this many best-scored candidates (it is O(pool * k)).
MMR_POOL = 300


def build_slate(
    fused: np.ndarray,
    vectors: np.ndarray | None,
    k: int,
    *,
    diversity: float = 0.0,
    rows: np.ndarray | None = None,
    providers: Sequence[Any] | None = None,
    max_per_provider: int | None = None,
) -> np.ndarray:
    """Positions (into ``fused``) of the slate, in serving order.

    Parameters
    ----------
    fused : fused scores of the candidates.
    vectors : unit vectors (needed when ``diversity > 0``): one row per candidate, or
        the whole catalog's with ``rows`` giving each candidate's row.
    diversity : 0 = pure relevance, 1 = pure novelty w.r.t. the items already chosen.
    providers : provider of each candidate (None = no provider).
    max_per_provider : cap per provider in the slate.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    >>> build_slate(np.array([1.0, 0.99, 0.5]), v, 2).tolist()
    [0, 1]
    >>> build_slate(np.array([1.0, 0.99, 0.5]), v, 2, diversity=0.7).tolist()
    [0, 2]
    >>> build_slate(np.array([3.0, 2.0, 1.0]), None, 2, providers=["a", "a", "b"], max_per_provider=1).tolist()
    [0, 2]
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be in [0, 1]")
    capped = providers is not None and max_per_provider is not None
    if diversity == 0.0 and not capped:
        return top_k(fused, k)
    pool = top_k(fused, max(MMR_POOL, 4 * k) if not capped else len(fused))
    rel = fused[pool].astype(np.float64)
    span = rel.max() - rel.min() if len(rel) else 0.0
    rel = (rel - rel.min()) / span if span > 1e-12 else np.ones_like(rel)
    use_div = diversity > 0 and vectors is not None
    vecs = (vectors[pool] if rows is None else vectors[rows[pool]]) if use_div else None
    max_sim = np.full(len(pool), -1.0)
    chosen: list[int] = []
    counts: dict[Any, int] = {}
    available = np.ones(len(pool), dtype=bool)
    while len(chosen) < k and available.any():
        if use_div and chosen:
            obj = (1 - diversity) * rel - diversity * np.maximum(max_sim, 0.0)
        else:
            obj = rel.copy()
        obj[~available] = -np.inf
        j = int(np.argmax(obj))
        available[j] = False
        if capped:
            p = providers[pool[j]]
            if p is not None and counts.get(p, 0) >= max_per_provider:
                continue
            counts[p] = counts.get(p, 0) + 1
        chosen.append(j)
        if use_div:
            max_sim = np.maximum(max_sim, vecs @ vecs[j])
    return pool[np.asarray(chosen, dtype=np.int64)]
