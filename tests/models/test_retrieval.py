"""Retrieval structures and the learners' sublinear candidates."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from checks.learner_checks import fitted, make_catalog, make_events
from liverec import Event
from liverec.models import ALS, InteractionLog, ItemKNN, Trending, UserState
from liverec.models.retrieval import FactorIndex, NeighbourLists, TopList, best


def test_top_list_stays_exact_under_increments():
    rng = np.random.default_rng(0)
    s = rng.random(500)
    alive = np.ones(500, dtype=bool)
    t = TopList()
    t.top(s, alive, 10)
    for _ in range(2000):
        i = int(rng.integers(0, 500))
        s[i] += rng.random()
        t.offer(i, s)
        if rng.random() < 0.01:
            s *= 0.5  # a common rescaling changes no order
    np.testing.assert_array_equal(t.top(s, alive, 10), best(np.arange(500), s, 10))
    alive[t.top(s, alive, 10)[:3]] = False
    assert not np.isin(t.top(s, alive, 10), np.flatnonzero(~alive)).any()


def test_neighbour_lists_keep_the_strongest_of_each_row():
    nl = NeighbourLists(3)
    nl.set_row(5, np.array([1, 2, 3, 4]), np.array([0.1, 0.4, 0.3, 0.2], np.float32))
    assert nl.row(5)[0].tolist() == [2, 3, 4]
    rows = sp.csr_matrix(np.array([[0, 0, 0.5, 0, 0.9, 0.2, 0.1, 0], [0, 0, 0, 0, 0, 0, 0, 1.0], [0] * 8], np.float32))
    nl.set_rows(np.array([5, 9, 2]), rows)  # a long row, a short row, an empty row
    assert nl.row(5)[0].tolist() == [4, 2, 5] and nl.row(9)[0].tolist() == [7] and nl.row(2)[0].tolist() == []
    nl.set_rows(np.array([5]), rows[1:2])  # a row rebuilt forgets what it held
    assert nl.row(5)[0].tolist() == [7]
    scale = np.array([1, 1, 1, 1, 0.1, 1, 1, 1])
    nl.set_rows(np.array([6]), rows[:1], lambda idx: scale[idx])
    assert nl.row(6)[0].tolist() == [2, 5, 6], "ranked by value x scale(neighbour)"


def test_factor_index_follows_items_and_pickles():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(300, 8)).astype(np.float32)
    alive = np.ones(300, dtype=bool)
    fi = FactorIndex(8)
    fi.sync(v, alive)
    q = rng.normal(size=8).astype(np.float32)
    exact = set(np.argsort(-(v @ q))[:10].tolist())
    assert len(exact & set(fi.search(q, 10).tolist())) >= 9
    v[7] = 100 * q  # a re-solved item
    fi.changed(np.array([7]))
    alive[3] = False  # a removed item
    fi.sync(v, alive)
    got = fi.search(q, 10)
    assert got[0] == 7 and 3 not in got.tolist()
    assert len(fi) == 299  # the live items: a re-inserted one counts once, a removed one not at all
    back = pickle.loads(pickle.dumps(fi))
    np.testing.assert_array_equal(back.search(q, 10), got)
    assert len(back) == 299 and len(FactorIndex(8)) == 0


def test_factor_index_after_most_vectors_moved_is_a_fresh_graph():
    """Re-solved factors move every item: the graph is rebuilt (no tombstones), and it
    finds what a graph built from the new vectors finds."""
    rng = np.random.default_rng(3)
    old, new = rng.normal(size=(300, 8)).astype(np.float32), rng.normal(size=(300, 8)).astype(np.float32)
    alive = np.ones(300, dtype=bool)
    fi = FactorIndex(8)
    fi.sync(old, alive)
    first = fi._index
    fi.changed(np.arange(300))
    fi.sync(new, alive)
    assert fi._index is not first and len(fi) == 300
    fresh = FactorIndex(8)
    fresh.sync(new, alive)
    for q in rng.normal(size=(20, 8)).astype(np.float32):
        np.testing.assert_array_equal(fi.search(q, 10), fresh.search(q, 10))
    few = fi._index
    fi.changed(np.arange(10))                       # a few moved: updated in place
    fi.sync(old, alive)
    assert fi._index is few and len(fi) == 300


def test_itemknn_lists_follow_events():
    cat = make_catalog(200, seed=2)
    m = fitted(ItemKNN(shrink=0.0), make_events(cat), cat)
    # Two new users link i1 and i199 (never together before): a user of i1 now gets i199.
    for u in ("p", "q"):
        for j, it in enumerate(("i1", "i199")):
            m.learn_one(Event(user=u, item=it, kind="click", timestamp=1_800_000_000.0 + j))
    m.learn_one(Event(user="r", item="i1", kind="click", timestamp=1_800_000_100.0))
    assert m.catalog_.get_idx("i199") in m.candidates(UserState("r"), 5).tolist()


def test_trending_candidates_follow_events_without_a_catalog_pass():
    cat = make_catalog(100)
    m = Trending().fit(InteractionLog.from_events(make_events(cat), cat))
    before = m.candidates(UserState("x"), 5)
    for k in range(20):
        m.learn_one(Event(user="z", item="i42", kind="purchase", timestamp=1_800_000_000.0 + k))
    after = m.candidates(UserState("x"), 5)
    assert after[0] == cat.get_idx("i42") and before.tolist() != after.tolist()


def test_als_candidates_follow_new_items():
    cat = make_catalog(200, seed=3)
    m = fitted(ALS(factors=8, iterations=5, min_interactions=0), make_events(cat, n_users=30), cat)
    st = UserState("u1")
    m.candidates(st, 10)  # builds the index
    v = cat.vectors[m.candidates(st, 1)[0]][None, :].copy()
    cat.upsert(["twin"], v, [{}], ["twin"])  # mapped from the LM vector of the user's best item
    got = m.candidates(st, 50)
    s = m.score(st, cat.from_idx(cat.alive_idx()))
    assert cat.get_idx("twin") in got.tolist() or s[cat.get_idx("twin")] < np.sort(s)[-50]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [40, 800])  # 3,600 entries (numpy's scatter-add), 72,000 (scipy's loop)
def test_the_transposed_product_is_scipys_to_the_bit(dtype, rows, monkeypatch):
    """transposed_product (ItemKNN's whole-catalog scores) == scipy's m.T @ coef, bit for bit,
    on either side of the size where it hands the product to scipy, and both ways agree."""
    from liverec.models import retrieval
    from liverec.models.retrieval import SparseRows, transposed_product

    rng = np.random.default_rng(3)
    m = sp.random(rows, 300, density=0.3, format="csr", random_state=3, dtype=dtype)
    coef = rng.random(rows).astype(dtype)
    assert (m.nnz >= retrieval.SCIPY_FROM) is (rows == 800)
    got = transposed_product(SparseRows(m.data, m.indices, m.indptr, m.shape), coef)
    assert got.dtype == dtype and np.array_equal(got, m.T @ coef)
    monkeypatch.setattr(retrieval, "SCIPY_FROM", 0 if rows == 40 else 10**9)  # the other way
    other = transposed_product(SparseRows(m.data, m.indices, m.indptr, m.shape), coef)
    assert other.dtype == dtype and np.array_equal(other, got)
