"""Two-stage serving: scoring a few candidates matches scoring the catalog."""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import make_catalog, make_events
from liverec.models import REGISTRY, InteractionLog, UserState
from liverec.rank import ranker
from liverec.rank.index import VectorIndex

SOURCES = ["content", "trending", "ease", "als", "itemknn", "transition", "tfidf", "sequence"]


@pytest.fixture(scope="module")
def setup():
    cat = make_catalog(600, seed=3)
    events = make_events(cat, n_users=30, per_user=10)
    log = InteractionLog.from_events(events, cat)
    learners = {n: REGISTRY[n]().fit(log) for n in SOURCES}
    users = sorted({e.user for e in events})
    return cat, learners, users


@pytest.mark.parametrize("name", SOURCES)
def test_scores_of_a_few_items_are_those_of_the_whole_catalog(setup, name):
    cat, learners, users = setup
    live = cat.from_idx(cat.alive_idx())
    few = np.array([5, 77, 3, 400, 77, 123])
    for u in users[:8]:
        full = np.asarray(learners[name].score(UserState(u), live), dtype=np.float64)
        part = np.asarray(learners[name].score(UserState(u), cat.from_idx(few)), dtype=np.float64)
        if name in ("itemknn", "transition"):  # a few candidates take another path: the same values
            np.testing.assert_array_equal(part, full[few])
        np.testing.assert_allclose(part, full[few], rtol=1e-5, atol=1e-6)


def test_floors_are_the_catalog_minimum(setup):
    cat, learners, users = setup
    index = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    live = cat.from_idx(cat.alive_idx())
    weights = dict.fromkeys(SOURCES, 1.0)
    for u in users[:10]:
        floor = ranker.floors(UserState(u), learners, weights, cat, index)
        assert set(floor) == set(SOURCES)
        for name, f in floor.items():
            s = np.asarray(learners[name].score(UserState(u), live), dtype=np.float64)
            lo, hi = float(s.min()), float(s.max())
            if name in ("content", "als", "sequence"):  # the far end of an HNSW graph: a live item's score, near the minimum
                assert lo - 1e-5 <= f <= lo + 0.05 * (hi - lo), (name, f, lo, hi)
            elif name == "tfidf":  # every text has the word "item": a lower bound from its smallest weight
                assert lo - 0.05 * (hi - lo) <= f <= lo + 1e-5 and f > 0, (name, f, lo, hi)
            else:
                assert f == pytest.approx(lo, abs=1e-5), (name, f, lo)


def test_two_stage_fused_scores_do_not_depend_on_the_other_candidates(setup):
    cat, learners, users = setup
    index = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    weights = dict.fromkeys(SOURCES, 1.0)
    u = UserState(users[0])
    n = 40
    union = ranker.retrieve(u, learners, weights, cat, index, n)
    floor = ranker.floors(u, learners, weights, cat, index)
    a = ranker.fuse(u, cat.from_idx(union), learners, weights, floor)
    # The same items plus a hundred more that none of the sources ranks at its top.
    others = np.setdiff1d(cat.alive_idx(), union)[:100]
    b = ranker.fuse(u, cat.from_idx(np.concatenate([union, others])), learners, weights, floor)
    # Sources score in float32, and a BLAS product's rounding depends on the batch size.
    np.testing.assert_allclose(b.fused[: len(union)], a.fused, rtol=1e-6)
    # Without floors the minimum moves with the candidate set, and with it every score.
    c = ranker.fuse(u, cat.from_idx(union), learners, weights)
    d = ranker.fuse(u, cat.from_idx(np.concatenate([union, others])), learners, weights)
    assert not np.allclose(d.fused[: len(union)], c.fused)


def test_two_stage_serves_the_exact_top_ten(setup):
    cat, learners, users = setup
    two_stage = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    exact = VectorIndex(cat, exact_max_items=10_000, center=True)
    weights = dict.fromkeys(SOURCES, 1.0)
    hits = []
    for u in map(UserState, users):
        want = ranker.fuse(u, cat.from_idx(ranker.retrieve(u, learners, weights, cat, exact, 60)), learners, weights)
        idx = ranker.retrieve(u, learners, weights, cat, two_stage, 60)
        got = ranker.fuse(u, cat.from_idx(idx), learners, weights, ranker.floors(u, learners, weights, cat, two_stage))
        top_want = set(want.items.idx[ranker.select(want, 10)].tolist())
        top_got = set(got.items.idx[ranker.select(got, 10)].tolist())
        hits.append(len(top_want & top_got) / 10)
    assert np.mean(hits) >= 0.95


def test_itemknn_top_k_scores_of_a_few_items_are_those_of_the_whole_catalog(setup):
    cat, _, users = setup
    events = make_events(cat, n_users=30, per_user=10)
    m = REGISTRY["itemknn"](k_neighbours=3).fit(InteractionLog.from_events(events, cat))
    live = cat.from_idx(cat.alive_idx())
    few = np.array([5, 77, 3, 400, 123])
    for u in users[:8]:
        full = m.score(UserState(u), live)
        np.testing.assert_array_equal(m.score(UserState(u), cat.from_idx(few)), full[few])


def test_declared_interests_two_stage_serve_the_exact_top_ten(setup):
    # Candidates from the vector index and a floor from its far end, as for content.
    cat, learners, users = setup
    m = REGISTRY["interests"]().fit(InteractionLog.from_events([], cat))
    two_stage = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    rng = np.random.default_rng(0)
    weights = {"interests": 1.0}
    source = {"interests": m}
    live = cat.from_idx(cat.alive_idx())
    for j in (3, 150, 420):
        iv = (cat.vectors[j] + 0.1 * rng.normal(size=cat.dim)).astype(np.float32)
        u = UserState(users[0], interests=iv)
        full = np.asarray(m.score(u, live), dtype=np.float64)
        floor = ranker.floors(u, source, weights, cat, two_stage)
        assert full.min() - 1e-5 <= floor["interests"] <= full.min() + 0.05 * (full.max() - full.min())
        idx = ranker.retrieve(u, source, weights, cat, two_stage, 40)
        got = ranker.fuse(u, cat.from_idx(idx), source, weights, floor)
        want = ranker.fuse(u, live, source, weights)
        assert set(got.items.idx[ranker.select(got, 10)]) == set(want.items.idx[ranker.select(want, 10)])


def test_retrieve_with_floors_is_retrieve_and_floors_in_one_pass(setup):
    # One search per source finds both ends: retrieve's candidates, and for the same sources
    # as floors() a floor at the catalog's minimum.
    cat, learners, users = setup
    index = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    live = cat.from_idx(cat.alive_idx())
    weights = dict.fromkeys(SOURCES, 1.0)
    for u in map(UserState, users[:10]):
        idx, low = ranker.retrieve_with_floors(u, learners, weights, cat, index, 40)
        want = ranker.retrieve(u, learners, weights, cat, index, 40)
        assert len(np.intersect1d(idx, want)) >= 0.95 * len(want)
        alone = ranker.floors(u, learners, weights, cat, index)
        assert set(low) == set(alone)
        for name, f in low.items():
            s = np.asarray(learners[name].score(u, live), dtype=np.float64)
            lo, hi = float(s.min()), float(s.max())
            assert lo - 1e-5 <= f <= lo + 0.05 * (hi - lo) + 1e-5, (name, f, lo, hi)
    # Below the threshold: every live item, no floors.
    exact = VectorIndex(cat, exact_max_items=10_000, center=True)
    idx, low = ranker.retrieve_with_floors(UserState(users[0]), learners, weights, cat, exact, 40)
    np.testing.assert_array_equal(idx, cat.alive_idx())
    assert low == {}
