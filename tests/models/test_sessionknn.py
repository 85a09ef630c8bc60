"""Session neighbours: sittings, who votes, what an event and an erasure change."""

from __future__ import annotations

import numpy as np

from checks.learner_checks import make_catalog
from liverec import Event
from liverec.models import InteractionLog, SessionKNN, UserState

T0 = 1_700_000_000.0


def ev(user: str, item: int, minute: float, kind: str = "click") -> Event:
    return Event(user=user, item=f"i{item}", kind=kind, timestamp=T0 + 60 * minute)


def test_a_pause_or_a_full_sitting_starts_a_new_one():
    cat = make_catalog(n_items=40)
    evs = [ev("a", 1, 0), ev("a", 2, 5), ev("a", 3, 200), ev("a", 4, 201), ev("a", 5, 202), ev("a", 6, 203)]
    m = SessionKNN(gap_minutes=60, max_length=3).fit(InteractionLog.from_events(evs, cat))
    assert [list(s) for s in m.items_] == [[1, 2], [3, 4, 5], [6]]
    assert list(m.holders_[4]) == [1]


def test_the_sittings_sharing_most_with_the_latest_items_vote_and_the_users_own_do_not():
    cat = make_catalog(n_items=40)
    evs = [
        ev("a", 1, 0), ev("a", 2, 1), ev("a", 10, 2),  # shares 1 and 2 with u
        ev("b", 2, 0), ev("b", 20, 1),  # shares 2 only
        ev("c", 7, 0), ev("c", 30, 1),  # shares nothing
        ev("u", 1, 0), ev("u", 12, 1),  # u's own earlier sitting: 12 is not voted for
        ev("u", 2, 2000), ev("u", 1, 2001), ev("u", 11, 4000),
    ]
    m = SessionKNN(history=3, gap_minutes=60).fit(InteractionLog.from_events(evs[:-1], cat))
    s = m.score(UserState("u"), cat.select(["i10", "i20", "i30", "i12"]))
    assert s[0] > s[1] > 0 and s[2] == 0 and s[3] == 0
    got = m.candidates(UserState("u"), 10).tolist()
    assert got.index(cat.get_idx("i10")) < got.index(cat.get_idx("i20")) and cat.get_idx("i30") not in got
    assert m.because(UserState("u"), cat.get_idx("i10")) == ("i1", "i2")  # both shared with the best neighbour
    m.learn_one(evs[-1])  # u moves on: their latest item is now 11, shared by no one else
    assert m.score(UserState("u"), cat.select(["i10"]))[0] < s[0]


def test_skips_do_not_enter_sittings_and_forgetting_a_user_removes_their_sittings():
    cat = make_catalog(n_items=40)
    evs = [ev("a", 1, 0), ev("a", 5, 1, "skip"), ev("a", 10, 2), ev("u", 1, 0)]
    m = SessionKNN().fit(InteractionLog.from_events(evs, cat))
    assert 5 not in {i for s in m.items_ for i in s}
    assert m.score(UserState("u"), cat.select(["i10"]))[0] > 0
    m.forget("a", evs[:3])
    assert m.score(UserState("u"), cat.select(["i10"]))[0] == 0
    assert all(len(h) == 0 for i, h in enumerate(m.holders_) if i != 1) and "a" not in m.recent_


def test_a_request_costs_the_same_whatever_the_catalog_size():
    """Scores and candidates read the neighbours' items only: the same answer over a
    catalog with 10x more items nobody chose."""
    small, big = make_catalog(n_items=40), make_catalog(n_items=400)
    evs = [ev(f"x{k}", k % 7, k) for k in range(60)] + [ev("u", 3, 0)]
    a = SessionKNN().fit(InteractionLog.from_events(evs, small))
    b = SessionKNN().fit(InteractionLog.from_events(evs, big))
    np.testing.assert_array_equal(a.candidates(UserState("u"), 5), b.candidates(UserState("u"), 5))


def test_an_engine_with_the_source_serves_and_explains_from_other_peoples_sittings(encoder, books):
    from liverec import Engine, Settings

    eng = Engine.open(settings=Settings(encoder_progress=False, sources={"sessionknn": {}, "trending": {}},
                                        fusion_weights={"sessionknn": 1.0, "trending": 0.03}), encoder=encoder)
    eng.add_items(books[:100])
    ids = [b.id for b in books[:100]]
    for u in range(5):  # five readers each read 0, 1, 2 and then 50 in one sitting
        for k, i in enumerate([ids[0], ids[1], ids[2], ids[50]]):
            eng.record(Event(user=f"r{u}", item=i, kind="click", timestamp=T0 + 60 * k + u))
    eng.record(Event(user="me", item=ids[1], kind="click", timestamp=T0 + 5000))
    eng.fit()
    eng.record(Event(user="me", item=ids[2], kind="click", timestamp=T0 + 5060))
    top = eng.recommend("me", k=3)
    assert {r.item for r in top[:2]} == {ids[0], ids[50]}  # what the others read in those sittings
    why = next(r for r in top if r.item == ids[50]).reasons[0]
    assert why.source == "sessionknn" and why.text.startswith("often chosen in the same sitting as")
    assert set(why.because) <= {ids[1], ids[2]} and why.because
    eng.close()
