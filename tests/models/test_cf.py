"""Behaviour of the classic recommenders beyond the shared suite: pop, itemknn, userknn, ease, tfidf."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import pytest

import liverec.models.itemknn as itemknn_module
from checks.learner_checks import make_catalog, make_events
from liverec import Event
from liverec.encode import Catalog
from liverec.errors import ValidationError
from liverec.models import EASE, FeedbackConfig, InteractionLog, ItemKNN, MostPopular, TfidfContent, UserKNN, UserState

#: Stars read as signed (low ratings push away): the setting under which a 1-star rating is not an interaction.
SIGNED = FeedbackConfig(rating_engagement=0.0, rating_valence=1.0)

T0 = 1_700_000_000.0


def catalog(n: int, texts: list[str] | None = None) -> Catalog:
    cat = Catalog(dim=4)
    ids = [f"i{j}" for j in range(n)]
    vecs = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    cat.upsert(ids, vecs, [{} for _ in ids], texts or [f"item {chr(97 + j) * 3}" for j in range(n)])
    return cat


def interactions(pairs: list[tuple[str, str]], kind: str = "click") -> list[Event]:
    return [Event(user=u, item=i, kind=kind, timestamp=T0 + t, id=f"e{t}") for t, (u, i) in enumerate(pairs)]


def fit(model, events, cat):
    return model.fit(InteractionLog.from_events(events, cat))


def everything(cat: Catalog):
    return cat.from_idx(cat.alive_idx())


def co_consumption() -> tuple[Catalog, list[Event]]:
    """i0 and i1 go together (5 users), i2 and i3 go together (5 other users), i4 is alone."""
    cat = catalog(6)
    pairs = [(f"a{u}", it) for u in range(5) for it in ("i0", "i1")]
    pairs += [(f"b{u}", it) for u in range(5) for it in ("i2", "i3")]
    pairs += [("c0", "i4"), ("c1", "i4"), ("c2", "i2")]
    return cat, interactions(pairs)


# ------------------------------------------------------------------------ ItemKNN
@pytest.mark.parametrize("params", [{}, {"shrink": 0.0}, {"k_neighbours": 3}, {"weighting": "feedback", "all_events": True}])
def test_itemknn_per_event_equals_batch_refit_exactly(params, monkeypatch):
    # A tiny tail and no slack make rows re-sort, move and the arrays compact mid-stream
    # (and scores also read unsorted tails).
    monkeypatch.setattr(itemknn_module, "_TAIL", 2)
    monkeypatch.setattr(itemknn_module, "_SLACK", 0)
    calls = {"_move": 0, "_compact": 0, "_sort_row": 0}
    for name in calls:
        def spy(self, *a, _name=name, _f=getattr(itemknn_module._RowStore, name)):
            calls[_name] += 1
            return _f(self, *a)
        monkeypatch.setattr(itemknn_module._RowStore, name, spy)
    cat = make_catalog()
    events = make_events(cat)
    half = len(events) // 2
    batch = fit(ItemKNN(**params), events, cat)
    streamed = fit(ItemKNN(**params), events[:half], cat)
    online = fit(ItemKNN(**params), [], cat)
    for e in events[half:]:
        streamed.learn_one(e)
    for e in events:
        online.learn_one(e)
    assert all(calls.values()), calls
    for m in (streamed, online):
        assert (m.counts_.size > m.counts_.nsorted).any(), "scoring must also read rows' unsorted tails"
    items = everything(cat)
    for u in ("u0", "u3", "u7", "u11", "nobody"):
        expected = batch.score(UserState(u), items)
        if params.get("weighting") == "feedback":  # float weights: sums in another order
            np.testing.assert_allclose(streamed.score(UserState(u), items), expected, rtol=1e-5)
            np.testing.assert_allclose(online.score(UserState(u), items), expected, rtol=1e-5)
        else:
            np.testing.assert_array_equal(streamed.score(UserState(u), items), expected)
            np.testing.assert_array_equal(online.score(UserState(u), items), expected)


@pytest.mark.parametrize("n_lookups", [5, 400])  # one search per row, and the vectorised rounds
def test_itemknn_row_store_finds_every_entry_and_no_other(n_lookups, monkeypatch):
    monkeypatch.setattr(itemknn_module, "_TAIL", 32)  # the appended entries stay unsorted tails
    rng = np.random.default_rng(n_lookups)
    n = 60
    dense = (rng.random((n, n)) < 0.2) * rng.integers(1, 5, (n, n))
    dense[7] = 0  # an empty row
    store = itemknn_module._RowStore(sp.csr_matrix(dense.astype(np.float32)))
    ref = {(r, c): float(dense[r, c]) for r, c in zip(*np.nonzero(dense))}
    for _ in range(3):  # unsorted tails (rows moved to grow)
        r = int(rng.integers(n))
        cols = np.array([c for c in rng.permutation(n)[:6].tolist() if (r, c) not in ref], dtype=np.int64)
        store.append_to_row(r, cols, np.ones(len(cols)))
        ref.update({(r, int(c)): 1.0 for c in cols})
    rows = rng.integers(n, size=n_lookups)
    cols = rng.integers(n, size=n_lookups)
    pos = store.find(rows, cols)
    for r, c, p in zip(rows.tolist(), cols.tolist(), pos.tolist()):
        if (r, c) in ref:
            assert p >= 0 and store.cols[p] == c and store.vals[p] == ref[(r, c)]
            assert store.start[r] <= p < store.start[r] + store.size[r]
        else:
            assert p == -1
    assert (store.size > store.nsorted).any()  # the tails were searched too


@pytest.mark.parametrize("row_copy", [1, 10**9])  # one slice copy per row, and the gather through index arrays
def test_itemknn_row_store_compaction_keeps_every_entry(row_copy, monkeypatch):
    monkeypatch.setattr(itemknn_module, "_ROW_COPY", row_copy)
    monkeypatch.setattr(itemknn_module, "_SLACK", 0)
    rng = np.random.default_rng(1)
    dense = ((rng.random((40, 40)) < 0.3) * rng.integers(1, 5, (40, 40))).astype(np.float32)
    store = itemknn_module._RowStore(sp.csr_matrix(dense))
    for r in (3, 3, 17):  # moved rows leave garbage behind them; tails stay unsorted
        free = np.flatnonzero(dense[r] == 0)[:4]
        store.append_to_row(r, free, np.full(len(free), 9.0))
        dense[r, free] = 9.0
    assert (np.diff(store.start) < 0).any()  # a moved row lies past the rows after it
    store._compact()
    assert (np.diff(store.start) > 0).all()  # laid out again in row order
    np.testing.assert_array_equal(store.to_csr().toarray(), dense)


def test_itemknn_row_store_symmetric_add_equals_both_increments_in_order():
    rng = np.random.default_rng(2)
    upper = np.triu((rng.random((30, 30)) < 0.2) * rng.integers(1, 4, (30, 30)), 1).astype(np.float32)
    dense = upper + upper.T
    a, b = rng.integers(30, size=400), rng.integers(30, size=400)
    keep = a != b  # repeated pairs, both orientations, new and existing entries
    a, b, v = a[keep], b[keep], rng.random(int(keep.sum()))
    sym, ref = (itemknn_module._RowStore(sp.csr_matrix(dense)) for _ in range(2))
    sym.add_symmetric(a, b, v)
    ref.add_in_order(np.stack([a, b], 1).ravel(), np.stack([b, a], 1).ravel(), np.repeat(v, 2))
    assert (sym.to_csr() != ref.to_csr()).nnz == 0 and sym.nnz == ref.nnz


def test_itemknn_co_consumed_items_score_higher_and_explain():
    cat, events = co_consumption()
    m = fit(ItemKNN(), events, cat)
    m.learn_one(Event(user="new", item="i0", timestamp=T0 + 100))
    s = m.score(UserState("new"), cat.select(["i1", "i2", "i3", "i4", "i5"]))
    assert s[0] > 0 and np.all(s[0] > s[1:])
    np.testing.assert_array_equal(s[1:], 0.0)
    assert m.because(UserState("new"), cat.get_idx("i1")) == ("i0",)
    assert m.because(UserState("new"), cat.get_idx("i4")) == ()


def test_itemknn_cosine_values():
    cat = catalog(3)
    # i0: users x, y; i1: users x, y, z -> C_01 = 2, cos = 2 / sqrt(2 * 3)
    m = fit(ItemKNN(shrink=0.0), interactions([("x", "i0"), ("x", "i1"), ("y", "i0"), ("y", "i1"), ("z", "i1")]), cat)
    m.learn_one(Event(user="new", item="i0", timestamp=T0 + 10))  # n_0 becomes 3
    s = m.score(UserState("new"), cat.select(["i1", "i2"]))
    np.testing.assert_allclose(s, [2 / np.sqrt(3 * 3), 0.0], rtol=1e-6)
    # The user's history is the learner's own, not the (truncated) UserState.history.
    assert m.score(UserState("new", history=()), cat.select(["i1"]))[0] > 0


def test_itemknn_new_items_score_zero_until_they_get_interactions():
    cat, events = co_consumption()
    m = fit(ItemKNN(), events, cat)
    cat.upsert(["late"], np.ones((1, 4), np.float32), [{}], ["late"])
    m.learn_one(Event(user="a0", item="i2", timestamp=T0 + 100))  # any event: state grows
    assert m.score(UserState("a0"), cat.select(["late"]))[0] == 0.0
    m.learn_one(Event(user="a1", item="late", timestamp=T0 + 101))
    m.learn_one(Event(user="q", item="i0", timestamp=T0 + 102))
    assert m.score(UserState("q"), cat.select(["late"]))[0] > 0  # co-consumed with i0 by a1


def test_itemknn_forget_equals_refit_without_the_user():
    cat, events = co_consumption()
    m = fit(ItemKNN(), events, cat)
    m.learn_one(Event(user="a0", item="i4", timestamp=T0 + 100))
    mine = [e for e in events if e.user == "a0"] + [Event(user="a0", item="i4", timestamp=T0 + 100)]
    m.forget("a0", mine)
    ref = fit(ItemKNN(), [e for e in events if e.user != "a0"], cat)
    for u in ("a1", "b0", "c0"):
        np.testing.assert_array_equal(m.score(UserState(u), everything(cat)), ref.score(UserState(u), everything(cat)))


# ------------------------------------------------------------------------ UserKNN
def test_userknn_recommends_what_similar_users_liked():
    cat = catalog(8)
    pairs = [("me", "i0"), ("me", "i1"), ("me", "i2")]
    pairs += [("twin", "i0"), ("twin", "i1"), ("twin", "i2"), ("twin", "i5")]  # very similar, liked i5
    pairs += [("near", "i0"), ("near", "i6")]  # a bit similar, liked i6
    pairs += [(f"other{u}", it) for u in range(5) for it in ("i3", "i4", "i7")]  # popular, unrelated
    m = fit(UserKNN(), interactions(pairs), cat)
    s = m.score(UserState("me"), cat.select(["i5", "i6", "i7"]))
    assert s[0] > s[1] > 0 and s[2] == 0.0
    nb, sim = m.neighbours("me")
    assert [m.uids_[v] for v in nb] == ["near", "twin"]
    np.testing.assert_allclose(sim, [1 / np.sqrt(3 * 2), 3 / np.sqrt(3 * 4)])
    assert m.because(UserState("me"), cat.get_idx("i5"), top=1) == ("i0",)
    # Cold users get popularity: the unrelated but popular items first.
    cold = m.score(UserState("nobody"), everything(cat))
    assert set(np.argsort(-cold)[:3].tolist()) == {3, 4, 7}


def test_userknn_keeps_only_k_neighbours_and_learns_per_event():
    cat = catalog(6)
    pairs = [("me", "i0"), ("close", "i0"), ("close", "i1"), ("far", "i0"), ("far", "i2"), ("far", "i3"), ("far", "i4")]
    m = fit(UserKNN(k_neighbours=1), interactions(pairs), cat)
    s = m.score(UserState("me"), cat.select(["i1", "i2"]))
    assert s[0] > 0 and s[1] == 0.0  # only the closest neighbour counts
    m.learn_one(Event(user="me", item="i2", timestamp=T0 + 50))  # now "far" is closer
    s = m.score(UserState("me"), cat.select(["i1", "i3"]))
    assert s[0] == 0.0 and s[1] > 0


def test_userknn_per_event_equals_batch_exactly():
    cat = make_catalog()
    events = make_events(cat)
    batch = fit(UserKNN(k_neighbours=3), events, cat)
    online = fit(UserKNN(k_neighbours=3), [], cat)
    for e in events:
        online.learn_one(e)
    for u in ("u0", "u5", "nobody"):
        np.testing.assert_array_equal(online.score(UserState(u), everything(cat)), batch.score(UserState(u), everything(cat)))


# --------------------------------------------------------------------------- EASE
def ease_reference(X: np.ndarray, l2: float) -> np.ndarray:
    """Steck (2019), straight from the paper, in float64 over every item."""
    P = np.linalg.inv(X.T @ X + l2 * np.eye(X.shape[1]))
    B = np.eye(X.shape[1]) - P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def test_ease_ranks_the_co_consumed_item_first():
    cat, events = co_consumption()
    m = fit(EASE(l2=1.0), events, cat)
    m.learn_one(Event(user="new", item="i0", timestamp=T0 + 100))
    s = m.score(UserState("new"), everything(cat))
    others = [j for j in range(len(cat)) if j not in (0, 1)]
    assert s[1] > 0 and np.all(s[1] > s[others])
    assert s[0] == 0.0  # zero diagonal: an item never recommends itself
    assert s[5] == 0.0  # no interactions at fit time


def test_ease_learn_one_equals_batch_scoring_of_the_updated_user_vector():
    cat, events = co_consumption()
    l2 = 2.0
    m = fit(EASE(l2=l2), events, cat)
    X = np.zeros((13, len(cat)))
    users = sorted({e.user for e in events})
    for e in events:
        X[users.index(e.user), cat.get_idx(e.item)] = 1.0
    B = ease_reference(X, l2)
    # i5 never had an interaction: its row and column of B are zero in the reference too.
    np.testing.assert_allclose(B[5], 0.0, atol=1e-12)
    np.testing.assert_allclose(B[:, 5], 0.0, atol=1e-12)
    for t, item in enumerate(["i2", "i0", "i5", "i1"]):
        m.learn_one(Event(user="c0", item=item, timestamp=T0 + 100 + t))
        x = X[users.index("c0")].copy()
        x[cat.get_idx(item)] = 1.0
        X[users.index("c0")] = x
        np.testing.assert_allclose(m.score(UserState("c0"), everything(cat)), x @ B, rtol=1e-4, atol=1e-6)
        for few in (["i3", "i1"], ["i1"]):  # whole rows of B, or only the candidates' columns
            sub = cat.select(few)
            np.testing.assert_allclose(m.score(UserState("c0"), sub), (x @ B)[sub.idx], rtol=1e-4, atol=1e-6)


def test_ease_forget_refits_without_the_user():
    cat, events = co_consumption()
    m = fit(EASE(l2=1.0), events, cat)
    m.forget("a0", [e for e in events if e.user == "a0"])
    ref = fit(EASE(l2=1.0), [e for e in events if e.user != "a0"], cat)
    np.testing.assert_allclose(m.B_, ref.B_, rtol=1e-5, atol=1e-7)
    assert "a0" not in m.hist_


# ------------------------------------------------------------------------- TF-IDF
BOOKS = [
    "Dune: a desert planet, spice and a galactic empire in space",
    "Foundation: the fall of a galactic empire, psychohistory among the stars",
    "The Joy of Cooking: recipes for soups, breads and roasts",
    "Salt Fat Acid Heat: the elements of good cooking and recipes",
    "A Brief History of Time: black holes and the big bang",
]


def test_tfidf_ranks_text_similar_items_first():
    cat = catalog(len(BOOKS), BOOKS)
    m = fit(TfidfContent(), interactions([("reader", "i0")], kind="like"), cat)
    s = m.score(UserState("reader"), everything(cat))
    assert int(np.argmax(np.where(np.arange(len(s)) == 0, -1, s))) == 1  # Foundation
    assert s[1] > s[2] and s[1] > s[3] and s[2] == 0.0
    np.testing.assert_allclose(s[0], 1.0, rtol=1e-6)  # cosine with itself
    m.learn_one(Event(user="cook", item="i2", timestamp=T0 + 5))
    s = m.score(UserState("cook"), cat.select(["i3", "i1"]))
    assert s[0] > s[1] == 0.0
    assert not m.score(UserState("nobody"), everything(cat)).any()


def test_tfidf_scores_most_of_the_catalog_by_the_profiles_columns_alone():
    # Most of the catalog is scored from the columns of the profile's terms (a cached copy
    # of the rows by column, made again when the rows change and never part of the state).
    cat = catalog(len(BOOKS), BOOKS)
    m = fit(TfidfContent(), interactions([("reader", "i0"), ("reader", "i2")], kind="like"), cat)
    whole = m.score(UserState("reader"), everything(cat))
    one_by_one = [m.score(UserState("reader"), cat.select([f"i{j}"]))[0] for j in range(len(BOOKS))]
    np.testing.assert_allclose(whole, one_by_one, rtol=1e-6)
    assert "_by_column" not in m.learned_state()
    cat.upsert(["dune2"], np.ones((1, 4), np.float32), [{}], ["Dune Messiah: the desert planet and its galactic empire"])
    grown = m.score(UserState("reader"), everything(cat))
    assert grown[-1] > 0.2 and np.allclose(grown[:-1], whole)


def test_tfidf_new_items_are_transformed_on_first_score():
    cat = catalog(len(BOOKS), BOOKS)
    m = fit(TfidfContent(), interactions([("reader", "i0")]), cat)
    cat.upsert(["dune2"], np.ones((1, 4), np.float32), [{}], ["Dune Messiah: the desert planet and its galactic empire"])
    s = m.score(UserState("reader"), cat.select(["dune2", "i2"]))
    assert s[0] > 0.2 and s[1] == 0.0
    m.learn_one(Event(user="other", item="dune2", timestamp=T0 + 9))
    assert m.score(UserState("other"), cat.select(["i0"]))[0] > 0


def test_tfidf_scores_a_known_user_after_the_catalog_outgrows_its_vocabulary():
    # A catalog added chunk by chunk while users are served (serve --demo): the first score
    # after the growth re-learns the vocabulary, and the profile must be read in the new one.
    cat = catalog(2, BOOKS[:2])
    events = interactions([("reader", "i0")], kind="like")
    m = fit(TfidfContent(), events, cat)
    for grow, ask in ((BOOKS[2:], m.score), (["Dune Messiah: the desert planet"] * 6, lambda u, it: m.candidates(u, 3))):
        n = len(cat)  # more than refit_growth (1.5) times the items the vocabulary knows
        cat.upsert([f"i{j}" for j in range(n, n + len(grow))], np.ones((len(grow), 4), np.float32), [{}] * len(grow), grow)
        ask(UserState("reader"), everything(cat))
        fresh = fit(TfidfContent(), events, cat)
        np.testing.assert_allclose(m.score(UserState("reader"), everything(cat)),
                                   fresh.score(UserState("reader"), everything(cat)), rtol=1e-6)


def test_tfidf_profile_per_event_equals_batch():
    cat = catalog(len(BOOKS), BOOKS)
    events = interactions([("r", "i0"), ("r", "i4"), ("r", "i0"), ("s", "i2")])
    batch = fit(TfidfContent(), events, cat)
    online = fit(TfidfContent(), [], cat)
    for e in events:
        online.learn_one(e)
    for u in ("r", "s"):
        np.testing.assert_allclose(online.score(UserState(u), everything(cat)), batch.score(UserState(u), everything(cat)), rtol=1e-6)


# --------------------------------------------------------------------- MostPopular
def test_most_popular_counts_interactions():
    cat = catalog(4)
    events = interactions([("a", "i1"), ("b", "i1"), ("c", "i1"), ("a", "i2")])
    events.append(Event(user="d", item="i3", kind="skip", timestamp=T0 + 50))
    events.append(Event(user="d", item="i2", kind="rating", value=5.0, timestamp=T0 + 51))
    m = fit(MostPopular(), events, cat)
    np.testing.assert_array_equal(m.score(UserState("x"), everything(cat)), [0, 3, 2, 0])
    assert m.candidates(UserState("x"), 10).tolist() == [1, 2]
    m.learn_one(Event(user="e", item="i3", kind="purchase", timestamp=T0 + 60))
    m.learn_one(Event(user="e", item="i0", kind="dislike", timestamp=T0 + 61))  # not an interaction
    np.testing.assert_array_equal(m.score(UserState("x"), everything(cat)), [0, 3, 2, 1])
    m.forget("a", [e for e in events if e.user == "a"])
    np.testing.assert_array_equal(m.score(UserState("x"), everything(cat)), [0, 2, 1, 1])


def test_most_popular_all_events_and_feedback_weighting():
    cat = catalog(3)
    events = [
        Event(user="a", item="i0", kind="skip", timestamp=T0),
        Event(user="a", item="i1", kind="rating", value=1.0, timestamp=T0 + 1),
        Event(user="b", item="i1", kind="like", timestamp=T0 + 2),
        Event(user="c", item="i2", kind="purchase", timestamp=T0 + 3),
    ]
    every = fit(MostPopular(all_events=True), events, cat)
    np.testing.assert_array_equal(every.score(UserState("x"), everything(cat)), [1, 2, 1])
    weighted = fit(MostPopular(weighting="feedback"), events, cat)
    # A 1-star rating is engagement with half the weight of a 5-star one (1 * (1 + 0.5 * -1)).
    np.testing.assert_array_equal(weighted.score(UserState("x"), everything(cat)), [0, 2.5, 3])
    signed = fit(MostPopular(weighting="feedback", feedback=SIGNED), events, cat)
    np.testing.assert_array_equal(signed.score(UserState("x"), everything(cat)), [0, 2, 3])
    cat.upsert(["late"], np.ones((1, 4), np.float32), [{}], ["late"])
    assert every.score(UserState("x"), cat.select(["late"]))[0] == 0.0


@pytest.mark.parametrize("cls", [MostPopular, ItemKNN, UserKNN, EASE, TfidfContent])
def test_all_events_counts_every_rating(cls):
    cat, events = co_consumption()
    low = [Event(user="low", item="i2", kind="rating", value=1.0, timestamp=T0 + 200)]
    default = fit(cls(feedback=SIGNED), events + low, cat)
    every = fit(cls(all_events=True, feedback=SIGNED), events + low, cat)
    probe = Event(user="low", item="i0", kind="click", timestamp=T0 + 201)
    # With all_events the 1-star rating is an interaction too: "low"'s history holds i2 besides i0.
    default.learn_one(probe)
    every.learn_one(probe)
    a = default.score(UserState("low"), everything(cat))
    b = every.score(UserState("low"), everything(cat))
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("cls", [MostPopular, ItemKNN, UserKNN, EASE, TfidfContent])
def test_unknown_weighting_is_a_validation_error(cls):
    with pytest.raises(ValidationError, match="weighting"):
        fit(cls(weighting="stars"), [], catalog(2))


def test_transition_follows_order_and_both_ways_ignores_it():
    from liverec.models import Transition

    cat = catalog(4)
    evs = [Event(user=f"u{n}", item=f"i{j}", timestamp=T0 + 10 * n + j) for n in range(5) for j in (0, 1, 2)]
    fwd = fit(Transition(window=1, history=1), evs, cat)
    fwd.learn_one(Event(user="new", item="i1", timestamp=T0 + 500))
    s = fwd.score(UserState("new"), everything(cat))
    assert s[2] > 0 and s[0] == 0 and s[3] == 0  # i2 follows i1; i0 only precedes it
    assert fwd.because(UserState("new"), 2) == ("i1",)
    both = fit(Transition(window=1, history=1, both_ways=True), evs, cat)
    both.learn_one(Event(user="new", item="i1", timestamp=T0 + 500))
    s = both.score(UserState("new"), everything(cat))
    assert s[0] > 0 and s[2] > 0 and s[0] == pytest.approx(s[2])
    assert set(fwd.candidates(UserState("new"), 5).tolist()) == {2}
    # forgetting a user removes exactly their transitions, both ways
    mine = [e for e in evs if e.user == "u0"]
    both.forget("u0", mine)
    ref = fit(Transition(window=1, history=1, both_ways=True), [e for e in evs if e.user != "u0"], cat)
    ref.learn_one(Event(user="new", item="i1", timestamp=T0 + 500))
    np.testing.assert_allclose(both.score(UserState("new"), everything(cat)), ref.score(UserState("new"), everything(cat)))


def test_tfidf_vocabulary_follows_a_growing_catalog():
    texts = ["space opera starships", "starships and space battles", "a cookbook of soups", "soups and stews"]
    cat = Catalog(dim=4)
    m = TfidfContent().fit(InteractionLog.from_events([], cat))  # fitted on an empty catalog
    cat.upsert(["a", "b", "c", "d"], np.ones((4, 4), np.float32), [{}] * 4, texts)
    m.learn_one(Event(user="u", item="c", timestamp=T0))
    grown = m.score(UserState("u"), everything(cat))
    fresh_cat = Catalog(dim=4)
    fresh_cat.upsert(["a", "b", "c", "d"], np.ones((4, 4), np.float32), [{}] * 4, texts)
    fresh = TfidfContent().fit(InteractionLog.from_events([Event(user="u", item="c", timestamp=T0)], fresh_cat))
    np.testing.assert_allclose(grown, fresh.score(UserState("u"), everything(fresh_cat)))
    assert grown[3] > 0 and grown[0] == 0  # soups find soups


def test_ease_without_user_tables_reads_the_row_from_the_recent_events():
    """EASE(user_tables=False) keeps no x_u: a user's scores, candidates and floor are the kept
    form's for a user whose events are all recent; cold users get the fit's popularity; an
    erasure takes the user's fit row out of it and of B."""
    cat = make_catalog()
    events = make_events(cat)
    cut = len(events) // 2
    kept = EASE(l2=10.0).fit(InteractionLog.from_events(events[:cut], cat))
    bare = EASE(l2=10.0, user_tables=False).fit(InteractionLog.from_events(events[:cut], cat))
    fit_pop = bare.pop_.copy()
    later = events[cut:] + [Event(user="late-user", item="i3", kind="like", timestamp=events[-1].timestamp + 1)]
    for e in later:
        kept.learn_one(e)
        bare.learn_one(e)
    assert b"late-user" not in bare.dumps() and b"late-user" in kept.dumps()
    items = cat.from_idx(cat.alive_idx())
    for u in ("u0", "u5", "late-user"):
        st = UserState(u, tuple(e for e in later + events[:cut] if e.user == u))
        np.testing.assert_allclose(bare.score(st, items), kept.score(st, items), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(bare.candidates(st, 10), kept.candidates(st, 10))
        assert bare.floor(st) == pytest.approx(kept.floor(st), rel=1e-5, abs=1e-6)
    np.testing.assert_array_equal(bare.pop_[: len(fit_pop)], fit_pop)  # cold users: the fit's popularity
    bare.forget("u2", [e for e in events if e.user == "u2"])
    ref = EASE(l2=10.0, user_tables=False).fit(InteractionLog.from_events([e for e in events[:cut] if e.user != "u2"], cat))
    np.testing.assert_allclose(bare.pop_[: len(ref.pop_)], ref.pop_, atol=1e-9)
    np.testing.assert_allclose(bare.B_, ref.B_, rtol=1e-4, atol=1e-6)
