"""The candidate count of two-stage serving is measured on the engine's own users."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from liverec import Engine, Event, Settings
from liverec.models.base import UserState
from liverec.rank.calibrate import DEFAULT, GRID, calibrate, choose, recent_users


def _views(n: int):
    return [lambda u=f"u{j}": (UserState(u), set()) for j in range(n)]


def test_the_smallest_count_that_serves_the_exact_lists_is_kept():
    exact = list(range(10))
    asked: list[int | None] = []

    def serve(state, seen, n):  # n // 10 of the exact top-10, then items the exact list lacks
        asked.append(n)
        if n is None:
            return exact
        hit = min(10, n // 10)
        return exact[:hit] + list(range(100, 110 - hit))

    cal = calibrate(_views(4), serve, threading.RLock(), target=0.98, k=10, items=1000, grid=(50, 100, 200, 300))
    assert cal is not None
    assert cal.chosen == 100
    assert cal.recall == {50: 0.5, 100: 1.0} == cal.bound  # every user alike: no spread
    # counts past the first that reached it are not served
    assert 200 not in asked and 300 not in asked
    assert cal.users == 4 and cal.items == 1000
    # Nothing reaches the target: the largest count tried.
    worse = calibrate(_views(2), lambda s, seen, n: exact if n is None else exact[:5] + [99] * 5,
                      threading.RLock(), target=0.98, k=10, items=1000, grid=(50, 100))
    assert worse is not None and worse.chosen == 100 and worse.recall == {50: 0.5, 100: 0.5}
    assert choose({50: 0.99, 100: 0.97}, target=0.98) == 50


def test_a_mean_that_reaches_the_target_by_less_than_its_standard_error_is_not_enough():
    exact = list(range(10))
    misses = {"u0": 0, "u1": 0, "u2": 0, "u3": 1}  # at 50: 1, 1, 1, 0.9 -> mean 0.975

    def serve(state, seen, n):
        if n is None:
            return exact
        miss = misses[state.user] if n == 50 else 0
        return exact[: 10 - miss] + [99] * miss

    cal = calibrate(_views(4), serve, threading.RLock(), target=0.97, k=10, items=1000, grid=(50, 100))
    assert cal is not None and cal.recall[50] == pytest.approx(0.975)
    assert cal.bound[50] == pytest.approx(0.975 - 0.05 / 2)  # std 0.05 over 4 users
    assert cal.chosen == 100 and cal.bound[100] == 1.0


def test_no_users_with_a_list_no_calibration():
    assert calibrate(_views(3), lambda s, seen, n: [], threading.RLock(), target=0.98, k=10, items=10) is None
    assert calibrate([], lambda s, seen, n: [1], threading.RLock(), target=0.98, k=10, items=10) is None


def _clicks(n_users: int = 40, per_user: int = 6, n_items: int = 800, seed: int = 4) -> list[Event]:
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for u in range(n_users):
        start = int(rng.integers(0, n_items - 40))
        for i in rng.choice(np.arange(start, start + 40), size=per_user, replace=False):
            t += 1.0
            out.append(Event(user=f"u{u}", item=str(int(i) + 1), timestamp=t, id=f"u{u}-{i}"))
    return out


@pytest.fixture(scope="module")
def two_stage(encoder, books):
    s = Settings(encoder_progress=False, log_impressions=False, exact_index_max_items=100)
    eng = Engine.open(settings=s, encoder=encoder)
    eng.add_items(books[:800])
    eng.record_many(_clicks())
    assert eng.index.uses_ann
    yield eng
    eng.close()


def test_a_fit_measures_the_count_and_serves_with_it(two_stage):
    eng = two_stage
    assert eng.candidate_calibration is None and eng.pipeline.per_source() == DEFAULT
    eng.fit()
    cal = eng.candidate_calibration
    assert cal is not None, eng.calibration_error
    assert cal.chosen in GRID and eng.pipeline.per_source() == cal.chosen
    assert cal.users == 32 and cal.k == 10 and cal.target == 0.98 and cal.items == 800
    assert cal.bound[cal.chosen] >= 0.98 or cal.chosen == max(cal.recall)
    assert all(cal.bound[n] <= cal.recall[n] for n in cal.recall)
    # What it measured is what recommend serves: the lists of the users it measured on, against
    # the same engine scoring every item.
    users = recent_users(eng.store, 32)
    assert len(users) == 32 and users[0] == "u39"
    got = []
    for u in users:
        served = [r.item for r in eng.recommend(u, k=10, log=False)]
        exact = _exact_list(eng, u)
        got.append(len(set(served) & set(exact)) / len(exact))
    assert float(np.mean(got)) == pytest.approx(cal.recall[cal.chosen], abs=1e-9)
    again = eng.calibrate_candidates()  # the same learners and users: the same measure
    assert again is not None and (again.chosen, dict(again.recall)) == (cal.chosen, dict(cal.recall))


def test_a_failed_calibration_keeps_the_count_and_the_fit(two_stage, monkeypatch):
    eng = two_stage
    before = eng.pipeline.per_source()

    def broken(*a, **kw):
        raise RuntimeError("store closed")

    monkeypatch.setattr("liverec.engine.calibrate", broken)
    eng.fit()
    assert eng.calibration_error == "RuntimeError: store closed"
    assert eng.pipeline.per_source() == before and eng.recommend("u1", k=5, log=False)
    monkeypatch.undo()
    eng.fit()
    assert eng.calibration_error is None


def _exact_list(eng, user):
    from liverec.rank.pipeline import Request

    state, seen = eng.state.view(user)
    req = Request(user=user, k=10, weights=eng._weights(None), exclude_seen=eng.settings.exclude_seen)
    with eng._lock:
        rows = eng.pipeline.ranked(state, seen, eng.learners, req, exact=True)
    return [eng.catalog.ids[i] for i in rows]


def test_a_set_count_or_an_exact_index_is_not_calibrated_and_graphs_are_built_before_serving(encoder, books):
    evs = _clicks(n_users=10)
    for s in (Settings(encoder_progress=False, log_impressions=False, exact_index_max_items=100, candidates_per_source=40),
              Settings(encoder_progress=False, log_impressions=False)):
        with Engine.open(settings=s, encoder=encoder) as eng:
            eng.add_items(books[:800])
            eng.record_many(evs)
            eng.fit()
            assert eng.calibrate_candidates() is None and eng.candidate_calibration is None
            assert eng.pipeline.per_source() == (40 if s.candidates_per_source else DEFAULT)
            # Two-stage: the fit built ALS's factor graph before the learners served (no request
            # waits for it); scoring every item needs none.
            built = eng.learners["als"].__dict__.get("factor_index_") is not None
            assert built == eng.index.uses_ann
