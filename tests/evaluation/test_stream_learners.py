"""The evaluation's ItemKNN and EASE score as the engine's learners do, event after event."""

from __future__ import annotations

import numpy as np
import pytest

from liverec import Event
from liverec.encode.catalog import Catalog
from liverec.evaluation import itemknn as fast_knn
from liverec.evaluation.adapters import make_learner
from liverec.evaluation.ease import StreamEASE
from liverec.evaluation.itemknn import StreamItemKNN
from liverec.models.base import InteractionLog, UserState
from liverec.models.ease import EASE
from liverec.models.itemknn import ItemKNN


def _stream(n_items: int = 120, users: int = 25, events: int = 900, seed: int = 0) -> tuple[Catalog, list[Event]]:
    """Heavy-tailed items and users: long co-occurrence rows, many tied counts, a few heavy users."""
    rng = np.random.default_rng(seed)
    ids = [f"i{j}" for j in range(n_items)]
    cat = Catalog(dim=2)
    cat.upsert(ids, np.ones((n_items, 2), np.float32), [{}] * n_items, [""] * n_items)
    p_item = 1.0 / np.arange(1, n_items + 1) ** 0.8
    p_user = 1.0 / np.arange(1, users + 1) ** 1.1
    u = rng.choice(users, events, p=p_user / p_user.sum())
    i = rng.choice(n_items, events, p=p_item / p_item.sum())
    evs = [Event(user=f"u{a}", item=ids[b], timestamp=float(t), id=f"e{t}") for t, (a, b) in enumerate(zip(u, i))]
    return cat, evs


def _replay(fast: object, ref: object, cat: Catalog, evs: list[Event]) -> int:
    """Score every event's user with both models before revealing it; the number of scored events."""
    items = cat.select([f"i{j}" for j in range(len(cat))])
    half = len(evs) // 2
    log = InteractionLog.from_events(evs[:half], cat)
    fast.fit(log)  # type: ignore[attr-defined]
    ref.fit(log)  # type: ignore[attr-defined]
    scored = 0
    for e in evs[half:]:
        a = fast.score(UserState(e.user), items)  # type: ignore[attr-defined]
        b = ref.score(UserState(e.user), items)  # type: ignore[attr-defined]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        scored += 1
        fast.learn_one(e)  # type: ignore[attr-defined]
        ref.learn_one(e)  # type: ignore[attr-defined]
    return scored


@pytest.mark.parametrize("k,shrink", [(2, 0.0), (3, 10.0), (8, 100.0), (1000, 0.0)])
def test_itemknn_scores_as_the_model_through_a_stream(k: int, shrink: float, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small tiers, so rows are cut, rebuilt, moved to the wide tier and read whole.
    monkeypatch.setattr(fast_knn, "_WIDE", 12)
    monkeypatch.setattr(fast_knn, "_DIRTY", 3)
    cat, evs = _stream()
    params = {"k_neighbours": k, "shrink": shrink, "max_history": None, "all_events": True}
    fast, ref = StreamItemKNN(**params), ItemKNN(**params)
    assert _replay(fast, ref, cat, evs) == len(evs) - len(evs) // 2
    if k < 1000:
        assert fast.cand_ is not None and fast.cand_[0]["valid"].any()


def test_itemknn_ties_across_the_cut_are_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # One user rated 60 items nobody else rated: every row holds 59 entries tied at
    # count 1 (n = 1), longer than both tiers, so the rows are read whole.
    monkeypatch.setattr(fast_knn, "_WIDE", 4)
    ids = [f"i{j}" for j in range(80)]
    cat = Catalog(dim=2)
    cat.upsert(ids, np.ones((80, 2), np.float32), [{}] * 80, [""] * 80)
    evs = [Event(user="heavy", item=f"i{j}", timestamp=float(j), id=f"h{j}") for j in range(60)]
    rng = np.random.default_rng(2)
    evs += [Event(user=f"u{t % 5}", item=f"i{int(rng.integers(55, 80))}", timestamp=100.0 + t, id=f"e{t}")
            for t in range(60)]
    params = {"k_neighbours": 2, "shrink": 0.0, "max_history": None, "all_events": True}
    fast = StreamItemKNN(**params)
    _replay(fast, ItemKNN(**params), cat, evs)
    assert fast.cand_ is not None and fast.cand_[0]["full"].any() and fast.cand_[1]["full"].any()


def test_itemknn_forget_falls_back_to_the_model() -> None:
    cat, evs = _stream(events=300)
    params = {"k_neighbours": 3, "shrink": 10.0, "max_history": None, "all_events": True}
    fast, ref = StreamItemKNN(**params), ItemKNN(**params)
    _replay(fast, ref, cat, evs)
    for m in (fast, ref):
        m.forget("u0", [])
    items = cat.select([f"i{j}" for j in range(len(cat))])
    np.testing.assert_array_equal(fast.score(UserState("u1"), items), ref.score(UserState("u1"), items))


def test_ease_keeps_each_users_sum_as_the_model_computes_it() -> None:
    cat, evs = _stream()
    assert _replay(StreamEASE(l2=20.0, all_events=True), EASE(l2=20.0, all_events=True), cat, evs) > 0


def test_candidates_still_come_from_current_counts() -> None:
    cat, evs = _stream(events=300)
    params = {"k_neighbours": 3, "shrink": 10.0, "max_history": None, "all_events": True}
    fast, ref = StreamItemKNN(**params), ItemKNN(**params)
    _replay(fast, ref, cat, evs)
    assert fast.candidates(UserState("u0"), 10).tolist() == ref.candidates(UserState("u0"), 10).tolist()
    e1, e2 = StreamEASE(l2=20.0), EASE(l2=20.0)
    _replay(e1, e2, cat, evs)
    assert e1.candidates(UserState("u0"), 10).tolist() == e2.candidates(UserState("u0"), 10).tolist()


def test_evaluation_names_build_the_replay_learners() -> None:
    assert isinstance(make_learner("itemknn", {}), StreamItemKNN)
    assert isinstance(make_learner("ease", {}), StreamEASE)


def test_itemknn_views_score_as_models_with_their_own_k_and_shrink(monkeypatch: pytest.MonkeyPatch) -> None:
    # One set of counts, views at every (k, shrink) of a grid, taught once, event by
    # event: each view scores as a StreamItemKNN built with its own k and shrink.
    monkeypatch.setattr(fast_knn, "_WIDE", 12)
    monkeypatch.setattr(fast_knn, "_DIRTY", 3)
    cat, evs = _stream(events=700, seed=5)
    base = {"max_history": None, "all_events": True}
    points = [{**base, "k_neighbours": k, "shrink": s} for s in (0.0, 10.0, 100.0) for k in (2, 8, 40)]
    state, views = StreamItemKNN.grid_state(points)
    alone = [StreamItemKNN(**p) for p in points]
    items = cat.select([f"i{j}" for j in range(len(cat))])
    half = len(evs) // 2
    log = InteractionLog.from_events(evs[:half], cat)
    for m in (state, *alone):
        m.fit(log)
    for e in evs[half:]:
        for view, ref in zip(views, alone):
            np.testing.assert_allclose(view.score(UserState(e.user), items), ref.score(UserState(e.user), items),
                                       rtol=1e-5, atol=1e-7)
        for m in (state, *alone):
            m.learn_one(e)
    assert set(state.alt_) == {10.0, 100.0} and all(t is not None for t in state.alt_.values())


def _tuned_itemknn(cat: Catalog, grid: list[dict], share: bool) -> object:
    from liverec.evaluation.adapters import LearnerModel, learner_class, parse_model
    from liverec.evaluation.run import shared_views
    from liverec.evaluation.tuning import TunedModel, state_keys

    spec = parse_model("itemknn")

    def make(point: dict) -> LearnerModel:
        return LearnerModel("itemknn", make_learner("itemknn", {**spec.params, **point}), cat)

    if not share:
        return TunedModel("itemknn", make, grid, "stream", k=5)
    cls = learner_class("itemknn")
    return TunedModel("itemknn", make, grid, "stream", k=5,
                      shared=lambda pts: shared_views(cls, spec, pts, cat), state_keys=state_keys(cls, grid))


def test_itemknn_grid_is_scored_in_one_validation_pass() -> None:
    # A tiny stream: the one shared pass and a pass per point give the same scores.
    from liverec.evaluation.tuning import SharesGrid

    assert isinstance(StreamItemKNN, SharesGrid) and not isinstance(StreamEASE, SharesGrid)
    cat, evs = _stream(events=1200, seed=3)
    grid = [{"k_neighbours": k, "shrink": s} for k in (2, 5, 40) for s in (0.0, 10.0, 100.0)]
    alone, shared = _tuned_itemknn(cat, grid, False), _tuned_itemknn(cat, grid, True)
    alone.fit(evs)  # type: ignore[attr-defined]
    shared.fit(evs)  # type: ignore[attr-defined]
    a, b = alone.tuning, shared.tuning  # type: ignore[attr-defined]
    assert b["validation_passes"] == 1 and a["validation_passes"] == 9
    assert b["scores"] == a["scores"] and len(set(a["scores"])) > 1
    assert b["chosen"] == a["chosen"]


def test_itemknn_grid_with_a_fixed_shrink_or_every_neighbour_still_shares() -> None:
    from liverec.evaluation.tuning import state_keys

    cat, evs = _stream(events=800, seed=4)
    grid = [{"k_neighbours": k} for k in (3, None)]
    assert state_keys(StreamItemKNN, grid) == ()
    alone, shared = _tuned_itemknn(cat, grid, False), _tuned_itemknn(cat, grid, True)
    alone.fit(evs)  # type: ignore[attr-defined]
    shared.fit(evs)  # type: ignore[attr-defined]
    assert shared.tuning["scores"] == alone.tuning["scores"]  # type: ignore[attr-defined]
