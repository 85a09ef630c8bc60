"""The vector index: centred search matches the content source's score."""

from __future__ import annotations

import numpy as np

from checks.learner_checks import make_catalog
from liverec import Event
from liverec.models import UserState
from liverec.models.base import InteractionLog
from liverec.models.content import ContentProfile
from liverec.rank.index import VectorIndex


def test_centred_ann_retrieves_the_content_sources_top_items():
    cat = make_catalog(400, seed=5)
    content = ContentProfile().fit(InteractionLog.from_events([], cat))
    for j, item in enumerate(["i3", "i77", "i150"]):
        content.learn_one(Event(user="u", item=item, kind="click", timestamp=float(j)))
    q = content.query_vector(UserState("u"))
    live = cat.from_idx(cat.alive_idx())
    want = set(np.argsort(-content.score(UserState("u"), live))[:20].tolist())
    ann = VectorIndex(cat, exact_max_items=0, center=True, threads=1)   # HNSW even for 400 items
    got, _ = ann.search(q, 20)
    assert len(want & set(got.tolist())) >= 18
    exact, _ = ann.search(q, 20, exact=True)
    assert set(exact.tolist()) == want
    # The raw inner product ranks differently: the reason the index centres.
    raw, _ = VectorIndex(cat, exact_max_items=0, threads=1).search(q, 20, exact=True)
    assert set(raw.tolist()) != want


def test_retrieve_asks_retrievers_and_never_scores_the_catalog():
    from liverec.models import REGISTRY
    from liverec.models.base import Retriever
    from liverec.rank import ranker
    from checks.learner_checks import make_events

    cat = make_catalog(400, seed=6)
    log = InteractionLog.from_events(make_events(cat, n_users=30), cat)
    names = ["content", "trending", "ease", "als", "itemknn", "transition", "tfidf"]
    learners = {n: REGISTRY[n]().fit(log) for n in names}
    assert all(isinstance(learners[n], Retriever) for n in names if n != "content")
    sizes: list[int] = []
    for n in names:
        model, orig = learners[n], learners[n].score
        model.score = lambda user, items, orig=orig: (sizes.append(len(items)), orig(user, items))[1]
    index = VectorIndex(cat, exact_max_items=100, center=True, threads=1)
    idx = ranker.retrieve(UserState("u1"), learners, {n: 1.0 for n in names}, cat, index, 20)
    assert 0 < len(idx) <= 20 * len(names) and cat.alive[idx].all()
    assert all(s < 100 for s in sizes), "a Retriever scored the whole catalog while retrieving"


def test_every_graph_precision_finds_the_same_items_and_returns_exact_scores():
    """The graph may hold int8 or float16 vectors; what it returns is scored at full precision."""
    cat = make_catalog(600, seed=9)
    rng = np.random.default_rng(9)
    queries = [rng.normal(size=cat.vectors.shape[1]).astype(np.float32) for _ in range(20)]
    for center, dtype in [(True, "i8"), (True, "f16"), (False, "i8"), (True, "f32")]:
        ann = VectorIndex(cat, exact_max_items=0, center=center, threads=1, dtype=dtype)
        assert ann.dtype == ("f16" if dtype == "i8" and not center else dtype)  # int8 needs unit vectors
        overlap = []
        for q in queries:
            got, scores = ann.search(q, 20)
            _, exact_scores = ann.search(q, len(cat), exact=True)
            exact_top = set(ann.search(q, 20, exact=True)[0].tolist())
            overlap.append(len(exact_top & set(got.tolist())) / 20)
            by_item = dict(zip(ann.search(q, len(cat), exact=True)[0].tolist(), exact_scores.tolist()))
            np.testing.assert_allclose(scores, [by_item[i] for i in got.tolist()], rtol=1e-5, atol=1e-6)
            assert (np.diff(scores) <= 1e-9).all(), "best first"
        assert np.mean(overlap) >= 0.9, (center, dtype, np.mean(overlap))


def test_searching_both_ways_finds_the_top_and_the_bottom_of_the_catalog():
    # One usearch call for a query and its opposite: the near side is search()'s answer, the
    # far side holds the catalog's lowest-scored items (two-stage serving's floors), and dead
    # items are on neither side.
    cat = make_catalog(400, seed=7)
    cat.remove(["i4", "i9"])
    rng = np.random.default_rng(0)
    ann = VectorIndex(cat, exact_max_items=0, center=True, threads=1)
    exact = VectorIndex(cat, exact_max_items=10_000, center=True)
    for _ in range(5):
        q = rng.normal(size=cat.dim).astype(np.float32)
        q /= np.linalg.norm(q)
        near, scores, far = ann.search_both_ways(q, 20, probe=8)
        want, want_scores = ann.search(q, 20)
        np.testing.assert_array_equal(near, want)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
        assert len(far) >= 8 and cat.alive[far].all() and cat.alive[near].all()
        idx, all_scores = ann.search(q, cat.n_alive, exact=True)
        score_of = dict(zip(idx.tolist(), all_scores.tolist()))
        lowest, highest = float(all_scores.min()), float(all_scores.max())
        assert min(score_of[i] for i in far.tolist()) <= lowest + 0.05 * (highest - lowest)
        # Below the threshold: exact search, and the far side is every live item.
        e_near, _, e_far = exact.search_both_ways(q, 20)
        np.testing.assert_array_equal(e_near, exact.search(q, 20)[0])
        np.testing.assert_array_equal(np.sort(e_far), cat.alive_idx())


def test_a_catalog_change_recomputes_only_the_rows_it_wrote(monkeypatch):
    """Exact scores need |v - mean| per row; after an item is added or re-encoded only those
    rows are computed again (the graph's mean is fixed), by the index and by the content source."""
    import liverec.models.content as content_mod
    import liverec.rank.index as index_mod
    from liverec.encode.catalog import centred_norms

    cat = make_catalog(300, seed=7)
    content = ContentProfile().fit(InteractionLog.from_events([], cat))
    index = VectorIndex(cat, exact_max_items=0, center=True, threads=1)
    index.sync()
    q = np.random.default_rng(0).standard_normal(cat.dim).astype(np.float32)
    index.search(q, 5)
    content._norms()  # made for every row
    rows = []
    counting = lambda v, m: (rows.append(len(v)), centred_norms(v, m))[1]  # noqa: E731
    monkeypatch.setattr(index_mod, "centred_norms", counting)
    monkeypatch.setattr(content_mod, "centred_norms", counting)
    rng = np.random.default_rng(1)
    new = rng.standard_normal((2, cat.dim)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    cat.upsert(["i5", "fresh"], new, [{}, {}], ["re-encoded", "new"])  # one re-encoded, one added
    index.update([cat.index["i5"]])  # as the engine does for a re-encoded item
    index.sync()
    index.search(q, 5)
    assert rows == [2, 2], "the index centred the two written rows for its graph, then their norms: no other row"
    m, norms = index._exact_norms()
    np.testing.assert_allclose(norms, centred_norms(cat.vectors, m))
    rows.clear()
    norms = content._norms()
    assert rows == [1, 1], "the content source: the added row, then the re-encoded one"
    np.testing.assert_allclose(norms, centred_norms(cat.vectors, content.mean_))
