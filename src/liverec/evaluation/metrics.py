"""Offline metrics: pure functions of a ranked list and the held-out relevant items.

Per-user ranking metrics take ``(ranked, relevant, k)``:

- ``ranked`` — item ids, best first; it may be longer than ``k`` (only the top ``k``
  count) or shorter (missing positions count as misses).
- ``relevant`` — the user's held-out items (any collection; used as a set).
- ``k`` — the cut-off, a positive integer.

Relevance is binary. An item repeated in ``ranked`` counts once, at its first
position, so a list that repeats a hit cannot score above a perfect list. A user with
no relevant items has no defined score: every ranking metric raises ``ValueError``
(a :class:`liverec.errors.ValidationError`) and callers skip such users.

List-level metrics (:func:`catalog_coverage`, :func:`novelty`,
:func:`intra_list_diversity`) describe what is recommended, not whether it is right.

:data:`METRICS` maps a short name to each ranking metric so a harness can report
``f"{name}@{k}"`` columns.

Examples
--------
>>> row = {f"{name}@2": fn(["a", "b", "c"], {"b"}, 2) for name, fn in METRICS.items()}
>>> row["recall@2"], row["hr@2"], row["mrr@2"], row["precision@2"]
(1.0, 1.0, 0.5, 0.5)
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np

from ..errors import ValidationError

#: A per-user ranking metric: ``(ranked, relevant, k) -> float``.
RankingMetric = Callable[[Sequence[str], Collection[str], int], float]

__all__ = [
    "METRICS",
    "RankingMetric",
    "catalog_coverage",
    "hr_at_k",
    "intra_list_diversity",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
]


# ----------------------------------------------------------------------- helpers
def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValidationError(
            f"k must be a positive integer, got {k!r}: pass the cut-off, e.g. k=10.",
            field="k",
        )
    return int(k)


def _relevant_set(relevant: Collection[str]) -> set[str]:
    # A bare string is a Collection of characters: almost certainly a caller bug.
    if isinstance(relevant, (str, bytes)):
        raise TypeError(
            f"relevant must be a collection of item ids, got the string {relevant!r}: "
            f"wrap it, e.g. {{{relevant!r}}}."
        )
    rel = set(relevant)
    if not rel:
        raise ValidationError(
            "relevant is empty: a ranking metric is undefined for a user with no "
            "held-out relevant items. Skip such users before calling the metric.",
            field="relevant",
        )
    return rel


def _hit_ranks(ranked: Sequence[str], relevant: Collection[str], k: int) -> tuple[list[int], int]:
    """1-based ranks of the relevant items in the top ``k`` (first occurrence only),
    and the number of relevant items."""
    if isinstance(ranked, (str, bytes)):
        raise TypeError(
            f"ranked must be a sequence of item ids, got the string {ranked!r}: "
            f"wrap it, e.g. [{ranked!r}]."
        )
    k = _check_k(k)
    rel = _relevant_set(relevant)
    seen: set[str] = set()
    ranks: list[int] = []
    for pos, item in enumerate(ranked[:k], start=1):
        if item in rel and item not in seen:
            ranks.append(pos)
        seen.add(item)
    return ranks, len(rel)


# -------------------------------------------------------------- ranking metrics
def recall_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the relevant items that appear in the top ``k``.

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        ``|top_k ∩ relevant| / |relevant|``, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    Top 2 is ``a, b``; ``b`` is one of the two relevant items: 1 / 2.

    >>> recall_at_k(["a", "b", "c", "d"], {"b", "d"}, k=2)
    0.5
    """
    ranks, n_rel = _hit_ranks(ranked, relevant, k)
    return len(ranks) / n_rel


def precision_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Share of the top ``k`` slots that hold a relevant item.

    The denominator is always ``k``: a list shorter than ``k`` is penalised for its
    empty slots, so a recommender cannot raise precision by returning fewer items.

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        ``|top_k ∩ relevant| / k``, in ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    Two hits (``b``, ``d``) among four slots: 2 / 4.

    >>> precision_at_k(["a", "b", "c", "d"], {"b", "d"}, k=4)
    0.5
    """
    ranks, _ = _hit_ranks(ranked, relevant, k)
    return len(ranks) / k


def ndcg_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Normalised discounted cumulative gain with binary relevance.

    ``DCG = sum over hits at rank r of 1 / log2(r + 1)``; it is divided by the ideal
    DCG, where the first ``min(|relevant|, k)`` ranks all hold relevant items.

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        In ``[0, 1]``; 1 when every top slot that could hold a relevant item does.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    Hits at ranks 1 and 3: DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5.
    Ideal (2 relevant): 1/log2(2) + 1/log2(3) = 1 + 0.63093 = 1.63093.
    1.5 / 1.63093 = 0.91972.

    >>> round(ndcg_at_k(["a", "b", "c"], {"a", "c"}, k=3), 4)
    0.9197
    """
    ranks, n_rel = _hit_ranks(ranked, relevant, k)
    dcg = sum(1.0 / math.log2(r + 1) for r in ranks)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(n_rel, k) + 1))
    return dcg / idcg


def map_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Average precision at ``k`` (the per-user term of MAP@k).

    ``AP@k = sum over hits at rank r of precision@r / min(|relevant|, k)``; the
    normaliser is what a perfect list could reach within ``k`` slots, so a perfect
    list scores 1 even when the user has more than ``k`` relevant items.

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        In ``[0, 1]``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    Hits at ranks 1 and 3: precision@1 = 1/1, precision@3 = 2/3;
    AP = (1 + 2/3) / min(2, 3) = (5/3) / 2 = 0.83333.

    >>> round(map_at_k(["a", "b", "c"], {"a", "c"}, k=3), 4)
    0.8333
    """
    ranks, n_rel = _hit_ranks(ranked, relevant, k)
    # The i-th hit (1-based) at rank r contributes precision@r = i / r.
    total = sum(i / r for i, r in enumerate(ranks, start=1))
    return total / min(n_rel, k)


def hr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Hit rate: 1.0 if any relevant item is in the top ``k``, else 0.0.

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        ``1.0`` or ``0.0``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    ``c`` is at rank 3: outside the top 2, inside the top 3.

    >>> hr_at_k(["a", "b", "c"], {"c"}, k=2), hr_at_k(["a", "b", "c"], {"c"}, k=3)
    (0.0, 1.0)
    """
    ranks, _ = _hit_ranks(ranked, relevant, k)
    return 1.0 if ranks else 0.0


def mrr_at_k(ranked: Sequence[str], relevant: Collection[str], k: int) -> float:
    """Reciprocal rank of the first relevant item within the top ``k`` (0.0 if none).

    Parameters
    ----------
    ranked : Sequence[str]
        Recommended item ids, best first.
    relevant : Collection[str]
        The user's held-out relevant item ids (non-empty).
    k : int
        Cut-off (positive).

    Returns
    -------
    float
        ``1 / rank`` of the first hit, or ``0.0``.

    Raises
    ------
    ValueError
        If ``relevant`` is empty or ``k < 1``.

    Examples
    --------
    The first hit, ``b``, is at rank 2: 1 / 2.

    >>> mrr_at_k(["a", "b", "c"], {"b", "c"}, k=3)
    0.5
    """
    ranks, _ = _hit_ranks(ranked, relevant, k)
    return 1.0 / ranks[0] if ranks else 0.0


#: Per-user ranking metrics by short name, for ``f"{name}@{k}"`` report columns.
METRICS: dict[str, RankingMetric] = {
    "recall": recall_at_k,
    "precision": precision_at_k,
    "ndcg": ndcg_at_k,
    "map": map_at_k,
    "hr": hr_at_k,
    "mrr": mrr_at_k,
}


# ----------------------------------------------------------- list-level metrics
def catalog_coverage(rec_lists: Iterable[Sequence[str]], n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list.

    Parameters
    ----------
    rec_lists : Iterable[Sequence[str]]
        One recommendation list per user (already cut to ``k``).
    n_items : int
        Catalog size (positive).

    Returns
    -------
    float
        ``|distinct recommended items| / n_items``.

    Raises
    ------
    ValueError
        If ``n_items < 1``.

    Examples
    --------
    Distinct items ``a, b, c`` out of a catalog of 10: 3 / 10.

    >>> catalog_coverage([["a", "b"], ["b", "c"]], n_items=10)
    0.3
    """
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValidationError(
            f"n_items must be the catalog size (a positive integer), got {n_items!r}.",
            field="n_items",
        )
    distinct: set[str] = set()
    for lst in rec_lists:
        distinct.update(lst)
    return len(distinct) / int(n_items)


def novelty(
    rec_lists: Iterable[Sequence[str]],
    item_popularity: Mapping[str, int],
    n_users: int,
) -> float:
    """Mean self-information of the recommended items: ``-log2(pop_i / n_users)``.

    The mean runs over every recommended slot of every list, so popular items that
    are recommended often weigh in as often as they are shown. An item with zero
    (or unknown) popularity gets ``pop = 1``: the rarest an observed item can be,
    and it keeps the logarithm finite.

    Parameters
    ----------
    rec_lists : Iterable[Sequence[str]]
        One recommendation list per user.
    item_popularity : Mapping[str, int]
        How many (training) users interacted with each item.
    n_users : int
        Number of (training) users; the probability base.

    Returns
    -------
    float
        Bits; higher means less popular (more novel) recommendations; 0.0 when
        ``rec_lists`` holds no items.

    Raises
    ------
    ValueError
        If ``n_users < 1``.

    Examples
    --------
    ``a`` is known to 50 of 100 users: -log2(0.5) = 1 bit; ``b`` to 25: -log2(0.25)
    = 2 bits. Mean (1 + 2) / 2 = 1.5.

    >>> novelty([["a", "b"]], {"a": 50, "b": 25}, n_users=100)
    1.5
    """
    if isinstance(n_users, bool) or not isinstance(n_users, (int, np.integer)) or n_users < 1:
        raise ValidationError(
            f"n_users must be a positive integer, got {n_users!r}.", field="n_users"
        )
    log_n = math.log2(n_users)
    total = 0.0
    count = 0
    for lst in rec_lists:
        for item in lst:
            pop = item_popularity.get(item, 0)
            total += log_n - math.log2(pop if pop > 0 else 1)
            count += 1
    # No recommended items: 0.0, like coverage and diversity of empty lists, so a
    # report over a run with no servable users does not crash.
    return total / count if count else 0.0


def intra_list_diversity(rec_list: Sequence[str], vectors: Mapping[str, np.ndarray]) -> float:
    """Mean pairwise cosine distance ``1 - cos(u, v)`` over all pairs in one list.

    A zero vector has no direction; its cosine with anything is taken as 0
    (distance 1). Lists with fewer than two items have no pairs and score 0.0.

    Parameters
    ----------
    rec_list : Sequence[str]
        One recommendation list.
    vectors : Mapping[str, np.ndarray]
        An embedding for every item of the list.

    Returns
    -------
    float
        In ``[0, 2]``; 0 when all items point the same way.

    Raises
    ------
    ValueError
        If an item of the list has no vector.

    Examples
    --------
    Pairs (a, b): 1 - 0 = 1; (a, c): 1 - 1 = 0; (b, c): 1 - 0 = 1. Mean 2 / 3.

    >>> import numpy as np
    >>> vecs = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([2.0, 0.0])}
    >>> round(intra_list_diversity(["a", "b", "c"], vecs), 4)
    0.6667
    """
    n = len(rec_list)
    if n < 2:
        return 0.0
    missing = [item for item in rec_list if item not in vectors]
    if missing:
        raise ValidationError(
            f"no vector for {len(missing)} recommended item(s), e.g. {missing[:5]}: "
            "pass a vector for every item of the list.",
            field="vectors",
        )
    mat = np.stack([np.asarray(vectors[item], dtype=np.float64).ravel() for item in rec_list])
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    unit = np.divide(mat, norms, out=np.zeros_like(mat), where=norms > 0)
    sims = unit @ unit.T
    iu = np.triu_indices(n, k=1)
    return float(np.mean(1.0 - sims[iu]))
