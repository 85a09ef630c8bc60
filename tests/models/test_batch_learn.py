"""Learning a run of events at once (``learn_many``) leaves the state ``learn_one`` per event leaves."""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import fitted, make_catalog, make_events
from liverec import Event
from liverec.models import ItemKNN, Transition, UserState
from liverec.models import itemknn as itemknn_module
from liverec.models.base import BatchLearner


def _stream(n: int, n_items: int, seed: int) -> list[Event]:
    """Mixed kinds and ratings over a few heavy and many light users, with repeats."""
    rng = np.random.default_rng(seed)
    kinds = ["view", "click", "like", "rating", "purchase", "skip"]
    out = []
    for k in range(n):
        heavy = rng.random() < 0.3
        user = f"h{rng.integers(3)}" if heavy else f"u{rng.integers(40)}"
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(Event(user=user, item=f"i{int(rng.zipf(1.3)) % n_items}", kind=kind,
                         value=float(rng.integers(1, 6)) if kind == "rating" else 1.0,
                         timestamp=1_800_000_000.0 + k))
    return out


def _state(m: ItemKNN) -> dict:
    nl = m._neighbours(np.arange(len(m.catalog_)))  # every row read: stale rows rebuilt
    rows = {r: tuple(a.tolist() for a in nl.row(r)) for r in range(len(m.catalog_))}
    top = m.__dict__.get("top_pop_")
    return {
        "C": m.counts_.to_csr(), "n": m.n_.copy(), "items": {u: dict(h) for u, h in m.items_.items()},
        "recent": {u: list(r) for u, r in m.recent_.items()}, "rows": rows,
        "top": None if top is None or top.idx is None else sorted(top.idx.tolist()),
    }


@pytest.mark.parametrize("weighting", ["binary", "feedback"])
@pytest.mark.parametrize("batch", [1, 37, 10_000])
def test_itemknn_learn_many_leaves_the_same_state(weighting, batch, monkeypatch):
    if batch == 10_000:  # one run in several passes, as heavy histories split it
        monkeypatch.setattr(itemknn_module, "_RUN_PAIRS", 500)
    cat = make_catalog(150, seed=2)
    base = make_events(cat, n_users=25, per_user=6, seed=3)
    run = _stream(1_500, 150, seed=4)
    one = fitted(ItemKNN(weighting=weighting, shrink=3.0), base, cat)
    many = fitted(ItemKNN(weighting=weighting, shrink=3.0), base, cat)
    many.candidate_neighbours = one.candidate_neighbours = 8  # short lists: entries get displaced
    one._build_neighbours(one.counts_.to_csr())
    many._build_neighbours(many.counts_.to_csr())
    one.top_pop_.top(one.n_, cat.alive, 5)  # a built top list follows the events too
    many.top_pop_.top(many.n_, cat.alive, 5)
    for e in run:
        one.learn_one(e)
    for a in range(0, len(run), batch):
        many.learn_many(run[a : a + batch])
    a, b = _state(one), _state(many)
    assert (a["C"] != b["C"]).nnz == 0 and a["C"].nnz == b["C"].nnz
    np.testing.assert_array_equal(a["n"], b["n"])
    for key in ("items", "recent", "rows", "top"):
        assert a[key] == b[key], key
    items = cat.from_idx(cat.alive_idx())
    for u in ("h0", "h2", "u5", "nobody"):
        np.testing.assert_array_equal(one.score(UserState(u), items), many.score(UserState(u), items))
        np.testing.assert_array_equal(one.candidates(UserState(u), 15), many.candidates(UserState(u), 15))
    one._build_neighbours(one.counts_.to_csr())  # the lists as a fit builds them
    fresh = _state(one)["rows"]
    assert {r: sorted(v) for r, (_, v) in a["rows"].items()} == {r: sorted(v) for r, (_, v) in fresh.items()}, \
        "lists rebuilt when read hold the strongest neighbours, as lists built from the counts"


def test_batch_learner_is_an_ability():
    assert isinstance(ItemKNN(), BatchLearner)


@pytest.mark.parametrize("params", [{}, {"both_ways": True, "window": 5}])
def test_transition_learn_many_leaves_the_same_state(params):
    cat = make_catalog(150, seed=2)
    base = make_events(cat, n_users=25, per_user=6, seed=3)
    run = _stream(1_500, 150, seed=5)
    one, many = fitted(Transition(**params), base, cat), fitted(Transition(**params), base, cat)
    for e in run:
        one.learn_one(e)
    for a in range(0, len(run), 100):
        many.learn_many(run[a : a + 100])
    a, b = one.T_.to_csr(), many.T_.to_csr()
    assert (a != b).nnz == 0 and a.nnz == b.nnz
    np.testing.assert_array_equal(one.mass_, many.mass_)
    assert {u: list(r) for u, r in one.recent_.items()} == {u: list(r) for u, r in many.recent_.items()}
