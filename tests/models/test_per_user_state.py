"""What learners keep per user: every replica holds it for every user, so it is kept small."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from checks.learner_checks import make_catalog, make_events
from liverec.models import ContentProfile, InteractionLog, TfidfContent, UserState

#: Items whose little-endian bytes, side by side, contain others' at an offset that is not a
#: multiple of eight: 0x500 then 0 holds 5's bytes at offset 1.
_ITEMS = [0, 1, 5, 0x500, 0x50000, 256, 2**40, 7]


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


@pytest.mark.parametrize("name", ["itemknn", "ease", "tfidf", "als"])
def test_item_strengths_per_user_are_packed_and_follow_every_event(name):
    """ItemKNN, EASE, TF-IDF (per user) and ALS (per factor row) keep each user's items and
    strengths packed (one array per user): the same items and strengths, event by event, as
    the rule each learner sums them by, and a few bytes per item."""
    import sys

    from liverec.models import ALS, EASE, ItemKNN
    from liverec.models.pop import interaction_strength, merge_strength
    from liverec.models.useritems import UserItems

    cat = make_catalog()
    events = make_events(cat, n_users=30, per_user=10)
    half = len(events) // 2
    if name == "als":
        m = ALS(factors=4, iterations=2, min_interactions=0).fit(InteractionLog.from_events(events[:half], cat))
    else:
        m = {"itemknn": ItemKNN, "ease": EASE, "tfidf": TfidfContent}[name]().fit(
            InteractionLog.from_events(events[:half], cat))
    for e in events[half:]:
        m.learn_one(e)
    table: UserItems = m.extra_ if name == "als" else getattr(m, "hist_" if name == "ease" else "items_")
    assert type(table) is UserItems
    expected: dict[str, dict[int, float]] = {}
    for k, e in enumerate(events):
        i = cat.idx_of(e.item)
        if name == "als":
            s = max(m._fb.weight(e.kind, e.value), 0.0)
            if s > 0 and (k >= half or e.user in {x.user for x in events[half:]}):
                mine = expected.setdefault(e.user, {})
                mine[i] = mine.get(i, 0.0) + s
        else:
            s = interaction_strength(m._fb, e, m.weighting, m.all_events)
            if s > 0:
                mine = expected.setdefault(e.user, {})
                mine[i] = merge_strength(mine.get(i, 0.0), s, m.weighting)
    if name == "als":  # rows of users with events since the fit: the fitted row plus what came after
        got = {m.user_ids_[r]: dict(zip(*(a.tolist() for a in m._row(r)))) for r in table}
        expected = {u: v for u, v in expected.items() if u in got}
        assert got.keys() == {e.user for e in events[half:] if m._fb.weight(e.kind, e.value) > 0}
    else:
        got = dict(table.items())
    assert got.keys() == expected.keys()
    for u, mine in expected.items():
        assert got[u].keys() == mine.keys()
        np.testing.assert_allclose([got[u][i] for i in mine], list(mine.values()), rtol=1e-6)
    # 16 bytes per item, the array's fixed part and its spare room: no object per item (a dict
    # of floats costs ≈ 100 bytes an item)
    assert all(sys.getsizeof(r) <= 128 + 24 * (len(r) // 2) for r in table._rows.values())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["set", "strength", "put", "pop", "change"]), st.sampled_from(["a", "b"]),
                          st.lists(st.sampled_from(_ITEMS), min_size=1, max_size=6, unique=True),
                          st.floats(-5, 5, allow_nan=False)), max_size=40))
def test_a_packed_row_behaves_as_a_dict_of_items(ops):
    """UserItems == a dict of dicts under any sequence of writes and reads, with items whose
    bytes, side by side, spell another item (a byte search must match on an item's boundary);
    ``change`` returns what it replaced and the row's other items, in the order first added."""
    from liverec.models.useritems import UserItems

    table, model = UserItems(), {}
    for op, user, items, value in ops:
        if op == "set":
            for i in items:
                table.set(user, i, value)
                model.setdefault(user, {})[i] = value
        elif op == "put":
            table.put(user, np.array(items), np.full(len(items), value))
            model[user] = dict.fromkeys(items, value)
        elif op == "pop":
            table.pop(user)
            model.pop(user, None)
        elif op == "change":  # the write and what a pair update reads, in one search
            for i in items:
                old = model.get(user, {}).get(i, 0.0)
                got = table.change(user, i, lambda a: value)
                if value == old:
                    assert got is None
                    continue
                assert got is not None
                others = {k: x for k, x in model.get(user, {}).items() if k != i}
                assert (got[0], got[1], got[2].tolist(), got[3].tolist()) == (
                    old, value, list(others), list(others.values()))
                model.setdefault(user, {})[i] = value
        for i in _ITEMS:
            assert table.strength(user, i) == model.get(user, {}).get(i, 0.0)
        assert dict(table.items()) == model and table.count(user) == len(model.get(user, {}))
