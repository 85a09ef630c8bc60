"""What learners keep per user: every replica holds it for every user, so it is kept small."""

from __future__ import annotations

import numpy as np

from checks.learner_checks import make_catalog, make_events
from liverec.models import ContentProfile, InteractionLog, TfidfContent, UserState


def test_content_keeps_one_single_precision_vector_per_user_and_reads_intent_from_the_request():
    cat = make_catalog()
    events = make_events(cat)
    batch = ContentProfile().fit(InteractionLog.from_events(events, cat))
    online = ContentProfile().fit(InteractionLog.from_events([], cat))
    for e in events:
        online.learn_one(e)
    for m in (batch, online):
        assert not hasattr(m, "short_") and m.profiles_
        assert all(v.dtype == np.float32 for v in m.profiles_.values())
    everything = cat.from_idx(cat.alive_idx())
    for u in {e.user for e in events}:
        recent = tuple(e for e in events if e.user == u)
        state = UserState(u, recent)
        np.testing.assert_allclose(online.score(state, everything), batch.score(state, everything), atol=1e-5)
        # The session's intent is the request's recent events, the last one weighing most:
        # the same user with only their last event is pulled toward that event's item.
        last = cat.idx_of(recent[-1].item)
        if online._fb.weight(recent[-1].kind, recent[-1].value) > 0:
            with_last = online.score(UserState(u, recent[-1:]), everything)
            without = online.score(UserState(u), everything)
            assert with_last[last] > without[last]


def test_tfidf_keeps_item_strengths_per_user_and_makes_the_profile_when_read():
    cat = make_catalog()
    events = make_events(cat)
    m = TfidfContent().fit(InteractionLog.from_events(events[:-5], cat))
    for e in events[-5:]:
        m.learn_one(e)
    assert set(m.learned_state()) & {"profiles_", "_by_column"} == set()
    for u, mine in m.items_.items():
        idx = sorted(mine)
        expected = sum(mine[i] * m.rows_[i].toarray().ravel() for i in idx)
        terms, weights = m.profile(u)
        dense = np.zeros(m.rows_.shape[1])
        dense[terms] = weights
        np.testing.assert_allclose(dense, expected, atol=1e-12)
        assert list(terms) == sorted(np.flatnonzero(expected))
    assert m.profile("nobody") is None


def test_transition_keeps_each_users_last_items_as_a_packed_array_bounded_by_its_window():
    from array import array

    from liverec.models import Transition

    cat = make_catalog()
    events = make_events(cat)
    batch = Transition(window=2, history=3).fit(InteractionLog.from_events(events, cat))
    online = Transition(window=2, history=3).fit(InteractionLog.from_events([], cat))
    for e in events:
        online.learn_one(e)
    assert online.recent_.keys() == batch.recent_.keys()
    for u, last in online.recent_.items():
        assert type(last) is array and last.typecode == "i" and len(last) <= 3
        assert last == batch.recent_[u]  # the same items in the same order as a batch fit
    everything = cat.from_idx(cat.alive_idx())
    for u in online.recent_:
        np.testing.assert_allclose(online.score(UserState(u), everything), batch.score(UserState(u), everything),
                                   atol=1e-6)
