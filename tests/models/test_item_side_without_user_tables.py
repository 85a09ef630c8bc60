"""Neighbour sources without user tables: the item side is the fit's, the user is their recent events.

ItemKNN (co-occurrence counts), transition (links) and session neighbours (sittings) built with
``user_tables=False`` keep nothing per user learned online. Their item-side statistics move at
the next fit; a user's list follows the user's own events at once (read from
``UserState.history``); an erasure takes the user's fitted part out.
"""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import make_catalog, make_events
from liverec.models import InteractionLog, ItemKNN, SessionKNN, Transition, UserState
from liverec.types import Event

LEARNERS = [
    pytest.param(lambda **kw: ItemKNN(shrink=1.0, **kw), id="itemknn"),
    pytest.param(lambda **kw: ItemKNN(shrink=1.0, max_history=3, **kw), id="itemknn-max-history"),
    pytest.param(lambda **kw: Transition(window=2, history=3, **kw), id="transition"),
    pytest.param(lambda **kw: Transition(both_ways=True, **kw), id="transition-both-ways"),
    pytest.param(lambda **kw: SessionKNN(history=4, **kw), id="sessionknn"),
]


def _state(user: str, events: list[Event]) -> UserState:
    return UserState(user, tuple(e for e in events if e.user == user))


def _fitted_on_half(make):
    """(catalog, events, the cut, the learner without tables fitted on the events before it)."""
    cat = make_catalog()
    events = make_events(cat)
    cut = len(events) // 2
    return cat, events, cut, make(user_tables=False).fit(InteractionLog.from_events(events[:cut], cat))


@pytest.mark.parametrize("make", LEARNERS)
def test_a_fitted_user_gets_what_the_kept_tables_give(make):
    """Fitted on the same log, both forms score, retrieve and explain a user alike when the
    user's events are the request's recent events."""
    cat = make_catalog()
    events = make_events(cat)
    log = InteractionLog.from_events(events, cat)
    kept, bare = make().fit(log), make(user_tables=False).fit(log)
    items = cat.from_idx(cat.alive_idx())
    scored = 0
    for u in sorted({e.user for e in events}):
        st = _state(u, events)
        s = kept.score(st, items)
        scored += bool(s.any())
        np.testing.assert_array_equal(bare.score(st, items), s)
        np.testing.assert_array_equal(bare.candidates(st, 10), kept.candidates(st, 10))
        best = np.argsort(-s, kind="stable")[:3]
        assert [bare.because(st, int(i)) for i in best] == [kept.because(st, int(i)) for i in best]
    assert scored >= 6


@pytest.mark.parametrize("make", LEARNERS)
def test_events_after_the_fit_move_the_user_at_once_and_the_item_side_at_the_next_fit(make):
    cat, events, cut, bare = _fitted_on_half(make)
    before = bare.dumps()
    for e in events[cut:] + [Event(user="late-user", item="i4", kind="like", timestamp=events[-1].timestamp + 1)]:
        bare.learn_one(e)
    if hasattr(bare, "learn_many"):
        bare.learn_many(events[cut:])
    assert bare.dumps() == before  # nothing learned per event: no user, no count
    items = cat.from_idx(cat.alive_idx())
    # The request's events are the user: an event after the fit changes their list now.
    first = events[0]
    assert first.kind in ("like", "click") and first.timestamp < events[cut].timestamp
    newcomer = Event(user="newcomer", item=first.item, kind="click", timestamp=events[-1].timestamp + 2)
    cold, one = bare.score(UserState("newcomer"), items), bare.score(UserState("newcomer", (newcomer,)), items)
    assert not np.array_equal(one, cold)
    assert len(bare.candidates(UserState("newcomer", (newcomer,)), 5))
    changed = [u for u in {e.user for e in events}
               if not np.array_equal(bare.score(_state(u, events), items), bare.score(_state(u, events[:cut]), items))]
    assert len(changed) >= 4
    refit = make(user_tables=False).fit(InteractionLog.from_events(events, cat))
    assert refit.dumps() != before  # the item side learns them at the next fit


@pytest.mark.parametrize("make", LEARNERS)
def test_an_erasure_takes_the_users_fitted_part_out(make):
    cat, events, cut, bare = _fitted_on_half(make)
    for e in events[cut:]:
        bare.learn_one(e)
    bare.forget("u2", [e for e in events if e.user == "u2"])  # all their events: only the fitted part was learned
    ref = make(user_tables=False).fit(InteractionLog.from_events([e for e in events[:cut] if e.user != "u2"], cat))
    assert b"u2" not in bare.dumps()
    items = cat.from_idx(cat.alive_idx())
    for u in ("u0", "u2", "u8"):
        st = _state(u, events)
        np.testing.assert_allclose(bare.score(st, items), ref.score(st, items), rtol=1e-5, atol=1e-6)
