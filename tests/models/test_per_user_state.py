"""What learners keep per user: every replica holds it for every user, so it is kept small."""

from __future__ import annotations

import numpy as np

from checks.learner_checks import make_catalog, make_events
from liverec.models import ContentProfile, InteractionLog, TfidfContent, UserState


def test_content_keeps_each_users_vectors_in_single_precision_and_scores_as_in_double():
    cat = make_catalog()
    events = make_events(cat)
    batch = ContentProfile().fit(InteractionLog.from_events(events, cat))
    online = ContentProfile().fit(InteractionLog.from_events([], cat))
    for e in events:
        online.learn_one(e)
    for m in (batch, online):
        kept = [*m.profiles_.values(), *m.short_.values()]
        assert kept and all(v.dtype == np.float32 for v in kept)
    everything = cat.from_idx(cat.alive_idx())
    for u in {e.user for e in events}:
        np.testing.assert_allclose(online.score(UserState(u), everything), batch.score(UserState(u), everything),
                                   atol=1e-5)


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
