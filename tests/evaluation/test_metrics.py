"""Ranking and list-level metrics against values computed by hand."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liverec.errors import ValidationError
from liverec.evaluation import metrics as M
from liverec.evaluation.metrics import (
    METRICS,
    catalog_coverage,
    hr_at_k,
    intra_list_diversity,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)

LOG2_3 = 1.584962500721156  # log2(3); 1 / log2(3) = 0.6309297535714575

# Shared example: hits at ranks 2 ("b") and 5 ("e"); "z" is relevant but never ranked.
RANKED = ["a", "b", "c", "d", "e"]
RELEVANT = {"b", "e", "z"}


# ------------------------------------------------------------------ hand values
@pytest.mark.parametrize(
    ("k", "expected"),
    [
        # k=5: hits at 2 and 5, |rel| = 3.
        #   recall    = 2/3
        #   precision = 2/5 = 0.4
        #   DCG  = 1/log2(3) + 1/log2(6) = 0.630930 + 0.386853 = 1.017783
        #   IDCG = 1/log2(2) + 1/log2(3) + 1/log2(4) = 1 + 0.630930 + 0.5 = 2.130930
        #   ndcg = 1.017783 / 2.130930 = 0.477624
        #   AP   = (P@2 + P@5) / min(3, 5) = (1/2 + 2/5) / 3 = 0.9 / 3 = 0.3
        #   hr = 1, mrr = 1/2
        (5, dict(recall=2 / 3, precision=0.4, ndcg=0.477624, map=0.3, hr=1.0, mrr=0.5)),
        # k=3: only the hit at 2 counts.
        #   recall = 1/3, precision = 1/3
        #   ndcg = 0.630930 / 2.130930 = 0.296082   (ideal still over min(3, 3) = 3 ranks)
        #   AP   = (1/2) / min(3, 3) = 0.166667
        (3, dict(recall=1 / 3, precision=1 / 3, ndcg=0.296082, map=1 / 6, hr=1.0, mrr=0.5)),
        # k=2: hit at 2; ideal over min(3, 2) = 2 ranks: IDCG = 1 + 0.630930 = 1.630930
        #   ndcg = 0.630930 / 1.630930 = 0.386853;  AP = (1/2) / min(3, 2) = 0.25
        (2, dict(recall=1 / 3, precision=0.5, ndcg=0.386853, map=0.25, hr=1.0, mrr=0.5)),
        # k=1: "a" is not relevant: every metric is 0.
        (1, dict(recall=0.0, precision=0.0, ndcg=0.0, map=0.0, hr=0.0, mrr=0.0)),
    ],
)
def test_hand_computed_values(k: int, expected: dict[str, float]) -> None:
    got = {name: fn(RANKED, RELEVANT, k) for name, fn in METRICS.items()}
    assert got == pytest.approx(expected, abs=1e-6)


def test_metrics_registry_names_and_functions() -> None:
    assert METRICS == {
        "recall": recall_at_k,
        "precision": precision_at_k,
        "ndcg": ndcg_at_k,
        "map": map_at_k,
        "hr": hr_at_k,
        "mrr": mrr_at_k,
    }


def test_k_larger_than_list() -> None:
    ranked, rel = ["a", "b"], {"b"}
    # Only 2 slots filled, k = 10: the hit at rank 2 still counts, empty slots are misses.
    assert recall_at_k(ranked, rel, 10) == 1.0  # 1/1
    assert precision_at_k(ranked, rel, 10) == pytest.approx(0.1)  # 1/10: denominator is k
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(1 / LOG2_3)  # (1/log2 3) / 1
    assert map_at_k(ranked, rel, 10) == pytest.approx(0.5)  # (1/2) / min(1, 10)
    assert hr_at_k(ranked, rel, 10) == 1.0
    assert mrr_at_k(ranked, rel, 10) == 0.5


def test_ranked_longer_than_k_ignores_the_tail() -> None:
    # The only relevant item is at rank 4: invisible at k=3.
    ranked = ["a", "b", "c", "x"]
    for name, fn in METRICS.items():
        assert fn(ranked, {"x"}, 3) == 0.0, name
    assert mrr_at_k(ranked, {"x"}, 4) == 0.25


def test_perfect_list_with_more_relevant_than_k_scores_one_on_ndcg_and_map() -> None:
    # 4 relevant, k = 2, both slots hit: ideal is over min(4, 2) = 2 ranks.
    ranked, rel = ["a", "b", "c"], {"a", "b", "c", "d"}
    assert ndcg_at_k(ranked, rel, 2) == pytest.approx(1.0)
    assert map_at_k(ranked, rel, 2) == pytest.approx(1.0)  # (1/1 + 2/2) / 2
    assert recall_at_k(ranked, rel, 2) == 0.5  # 2/4
    assert precision_at_k(ranked, rel, 2) == 1.0


def test_duplicates_in_ranked_count_once() -> None:
    # "b" three times: one hit at rank 1, not three.
    ranked, rel = ["b", "b", "b"], {"b", "c"}
    assert recall_at_k(ranked, rel, 3) == 0.5  # 1/2, not 3/2
    assert precision_at_k(ranked, rel, 3) == pytest.approx(1 / 3)
    # DCG = 1/log2(2) = 1; IDCG = 1 + 1/log2(3) = 1.630930 -> 0.613147
    assert ndcg_at_k(ranked, rel, 3) == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert map_at_k(ranked, rel, 3) == pytest.approx(0.5)  # (1/1) / min(2, 3)
    assert mrr_at_k(ranked, rel, 3) == 1.0


def test_relevant_items_not_in_ranked_score_zero() -> None:
    for name, fn in METRICS.items():
        assert fn(["a", "b", "c"], {"x", "y"}, 3) == 0.0, name


def test_relevant_may_be_any_collection_duplicates_collapse() -> None:
    for fn in METRICS.values():
        assert fn(RANKED, ["b", "b", "e", "z"], 5) == fn(RANKED, RELEVANT, 5)
        assert fn(RANKED, frozenset(RELEVANT), 5) == fn(RANKED, RELEVANT, 5)


def test_ranked_may_be_a_tuple_or_array_of_ids() -> None:
    arr = np.array(RANKED, dtype=object)
    expected = ndcg_at_k(RANKED, RELEVANT, 5)
    assert ndcg_at_k(tuple(RANKED), RELEVANT, 5) == ndcg_at_k(arr, RELEVANT, 5) == expected


@pytest.mark.parametrize("name", sorted(METRICS))
def test_empty_relevant_raises_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="relevant is empty") as info:
        METRICS[name](["a", "b"], set(), 2)
    assert isinstance(info.value, ValidationError)


@pytest.mark.parametrize("name", sorted(METRICS))
@pytest.mark.parametrize("k", [0, -1, 2.0, True])
def test_bad_k_raises(name: str, k: object) -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        METRICS[name](["a"], {"a"}, k)  # type: ignore[arg-type]


def test_bare_strings_are_rejected() -> None:
    with pytest.raises(TypeError, match="relevant"):
        recall_at_k(["abc"], "abc", 1)
    with pytest.raises(TypeError, match="ranked"):
        recall_at_k("abc", {"a"}, 1)


# --------------------------------------------------------- properties (random)
ids = st.sampled_from([f"i{n}" for n in range(12)])


@settings(max_examples=60, deadline=None)
@given(ranked=st.lists(ids, max_size=15), relevant=st.sets(ids, min_size=1), k=st.integers(1, 15))
def test_metrics_are_bounded_and_consistent(ranked: list[str], relevant: set[str], k: int) -> None:
    vals = {name: fn(ranked, relevant, k) for name, fn in METRICS.items()}
    for name, v in vals.items():
        assert 0.0 <= v <= 1.0 + 1e-12, (name, v)
    # Every metric is zero exactly when there is no hit in the top k.
    no_hit = not (set(ranked[:k]) & relevant)
    for name, v in vals.items():
        assert (v == 0.0) == no_hit, name
    assert vals["hr"] == (0.0 if no_hit else 1.0)
    # MRR is at least 1/k whenever there is a hit.
    assert no_hit or vals["mrr"] >= 1 / k


@settings(max_examples=60, deadline=None)
@given(relevant=st.sets(ids, min_size=1), k=st.integers(1, 15), data=st.data())
def test_perfect_ranking_reaches_the_maximum(
    relevant: set[str], k: int, data: st.DataObject
) -> None:
    others = [f"o{n}" for n in range(5)]
    ranked = data.draw(st.permutations(sorted(relevant))) + others
    n_rel = len(relevant)
    assert ndcg_at_k(ranked, relevant, k) == pytest.approx(1.0)
    assert map_at_k(ranked, relevant, k) == pytest.approx(1.0)
    assert mrr_at_k(ranked, relevant, k) == 1.0
    assert recall_at_k(ranked, relevant, k) == pytest.approx(min(n_rel, k) / n_rel)
    assert precision_at_k(ranked, relevant, k) == pytest.approx(min(n_rel, k) / k)
    # Pushing a miss in front strictly lowers ndcg and mrr.
    worse = ["miss"] + ranked
    assert ndcg_at_k(worse, relevant, k) < ndcg_at_k(ranked, relevant, k)
    assert mrr_at_k(worse, relevant, k) < 1.0


# ---------------------------------------------------------- list-level metrics
def test_catalog_coverage() -> None:
    # distinct {a, b, c} over 4 items = 0.75; an empty list adds nothing.
    assert catalog_coverage([["a", "b"], ["b", "c"], []], n_items=4) == 0.75
    assert catalog_coverage(iter([("a", "a")]), n_items=2) == 0.5  # any iterable; dupes once
    assert catalog_coverage([], n_items=3) == 0.0
    with pytest.raises(ValueError, match="n_items"):
        catalog_coverage([["a"]], n_items=0)


def test_novelty_hand_computed() -> None:
    # n_users = 8. a: pop 8 -> -log2(8/8) = 0 (shown twice); b: pop 2 -> -log2(2/8) = 2;
    # c: unknown -> pop 1 -> -log2(1/8) = 3.  Mean over 4 slots: (0 + 2 + 0 + 3) / 4 = 1.25
    lists = [["a", "b"], ["a", "c"]]
    assert novelty(lists, {"a": 8, "b": 2}, n_users=8) == pytest.approx(1.25)
    # Zero popularity is treated like unknown: pop = 1.
    assert novelty(lists, {"a": 8, "b": 2, "c": 0}, n_users=8) == pytest.approx(1.25)
    # Recommending only the rarer item is more novel.
    assert novelty([["b"]], {"a": 8, "b": 2}, 8) > novelty([["a"]], {"a": 8, "b": 2}, 8)


def test_novelty_edge_cases() -> None:
    assert novelty([[], []], {"a": 1}, n_users=4) == 0.0
    with pytest.raises(ValueError, match="n_users"):
        novelty([["a"]], {"a": 1}, n_users=0)


def test_intra_list_diversity_hand_computed() -> None:
    vecs = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}
    # (a,b): 1 - 0 = 1; (a,c): 1 - 1/sqrt(2) = 0.292893; (b,c): 0.292893
    # mean = (1 + 2 * 0.292893) / 3 = 1.585786 / 3 = 0.528595
    assert intra_list_diversity(["a", "b", "c"], vecs) == pytest.approx(0.528595, abs=1e-6)
    assert intra_list_diversity(["a", "b"], vecs) == pytest.approx(1.0)


def test_intra_list_diversity_edge_cases() -> None:
    vecs = {
        "a": np.array([1.0, 0.0]),
        "a2": np.array([5.0, 0.0]),  # same direction, other length
        "neg": np.array([-1.0, 0.0]),
        "zero": np.zeros(2),
    }
    assert intra_list_diversity([], vecs) == 0.0
    assert intra_list_diversity(["a"], vecs) == 0.0
    assert intra_list_diversity(["a", "a2"], vecs) == pytest.approx(0.0)  # cosine ignores length
    assert intra_list_diversity(["a", "neg"], vecs) == pytest.approx(2.0)  # opposite: 1 - (-1)
    assert intra_list_diversity(["a", "zero"], vecs) == pytest.approx(1.0)  # no direction: cos 0
    assert math.isfinite(intra_list_diversity(["zero", "zero"], vecs))
    with pytest.raises(ValueError, match="no vector"):
        intra_list_diversity(["a", "missing"], vecs)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(M, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 9
    assert result.failed == 0
