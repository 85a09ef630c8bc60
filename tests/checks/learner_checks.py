"""The shared conformance suite every registered learner must pass (DESIGN.md).

Like River's estimator checks: each check is a plain function taking a fresh,
unfitted learner; ``tests/models/test_learner_checks.py`` runs every check on every
learner in ``liverec.models.REGISTRY``.
"""

from __future__ import annotations

import copy
import gc
import types

import numpy as np
import pytest

from liverec import Event
from liverec.encode import Catalog
from liverec.errors import NotFittedError
from liverec.models import InteractionLog, Learner, UserState
from liverec.models.base import (
    BatchLearner, EventCounts, Explains, PreparesRetrieval, Retriever, RetrieverWithFloor, ScoreFloor, VectorQuery,
)


def make_catalog(n_items: int = 60, dim: int = 16, clusters: int = 6, seed: int = 0) -> Catalog:
    """Clustered unit vectors so that 'neighbours' mean something."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dim))
    v = centers[np.arange(n_items) % clusters] + 0.3 * rng.normal(size=(n_items, dim))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    cat = Catalog(dim)
    cat.upsert([f"i{j}" for j in range(n_items)], v, [{"cluster": j % clusters} for j in range(n_items)],
               [f"item {j}" for j in range(n_items)])
    return cat


def make_events(cat: Catalog, n_users: int = 12, per_user: int = 8, seed: int = 1) -> list[Event]:
    """Users who each like one cluster, with a few skips, in time order."""
    rng = np.random.default_rng(seed)
    clusters = 6
    out = []
    t = 1_700_000_000.0
    for step in range(per_user):
        for u in range(n_users):
            fav = u % clusters
            j = int(rng.integers(0, len(cat) // clusters)) * clusters + fav
            kind = "skip" if step % 4 == 3 else ("like" if step % 3 == 0 else "click")
            if kind == "skip":
                j = int(rng.integers(0, len(cat) // clusters)) * clusters + (fav + 1) % clusters
            t += float(rng.integers(60, 3600))
            out.append(Event(user=f"u{u}", item=f"i{j}", kind=kind, timestamp=t, id=f"e{step}-{u}",
                             context={"device": "web", "tags": ["a"]}))
    return out


def fitted(learner: Learner, events: list[Event] | None = None, cat: Catalog | None = None) -> Learner:
    cat = cat or make_catalog()
    events = make_events(cat) if events is None else events
    return learner.fit(InteractionLog.from_events(events, cat))


def all_items(cat: Catalog):
    return cat.from_idx(cat.alive_idx())


# ----------------------------------------------------------------------------- checks
def check_scores_shape_and_finite(learner: Learner) -> None:
    m = fitted(learner)
    items = all_items(m.catalog_)
    s = m.score(UserState("u0", ()), items)
    assert s.shape == (len(items),)
    assert np.all(np.isfinite(s))
    assert m.score(UserState("u0"), m.catalog_.from_idx(np.zeros(0, dtype=np.int64))).shape == (0,)


def check_a_few_items_score_as_in_the_whole_catalog(learner: Learner) -> None:
    """A few candidates (two-stage serving) get the scores the same items get when the whole
    catalog is scored (learners take another path for most of the catalog): to the bit for
    sums of counts, up to float32 rounding for dot products (their sums run in another order)."""
    cat = make_catalog(200, seed=8)
    events = make_events(cat, n_users=20, per_user=12, seed=9)
    m = fitted(learner, events, cat)
    m.learn_one(Event(user="u1", item="i7", kind="click", timestamp=1_800_000_000.0))
    m.learn_one(Event(user="late", item="i3", kind="like", timestamp=1_800_000_001.0))
    whole = all_items(cat)
    few = cat.from_idx(np.array([150, 3, 7, 0, 42, 199, 11], dtype=np.int64))  # unsorted, fewer than a quarter
    for u in ("u0", "u1", "u5", "late", "nobody"):
        history = tuple(e for e in events if e.user == u)
        st = UserState(u, history)
        np.testing.assert_allclose(m.score(UserState(u, history), whole)[few.idx], m.score(st, few),
                                   rtol=1e-5, atol=1e-6, err_msg=u)


def check_unknown_user_cold_start(learner: Learner) -> None:
    m = fitted(learner)
    s = m.score(UserState("never-seen"), all_items(m.catalog_))
    assert s.shape == (len(m.catalog_),) and np.all(np.isfinite(s))


def check_not_fitted_error(learner: Learner) -> None:
    cat = make_catalog()
    with pytest.raises(NotFittedError, match="fit"):
        learner.learn_one(Event(user="u", item="i0", timestamp=1.0))
    with pytest.raises(NotFittedError):
        learner.score(UserState("u"), all_items(cat))


def check_same_seed_same_output(learner: Learner) -> None:
    a, b = fitted(learner.clone()), fitted(learner.clone())
    st = UserState("u3")
    np.testing.assert_array_equal(a.score(st, all_items(a.catalog_)), b.score(st, all_items(b.catalog_)))


def check_learn_one_does_not_mutate_input(learner: Learner) -> None:
    m = fitted(learner)
    e = Event(user="u1", item="i5", kind="click", timestamp=1_800_000_000.0, context={"k": [1, 2], "d": {"x": 1}})
    before = copy.deepcopy(e)
    m.learn_one(e)
    assert e == before


def check_save_load_round_trip(learner: Learner) -> None:
    m = fitted(learner)
    m2 = Learner.loads(m.dumps(), m.catalog_)
    items = all_items(m.catalog_)
    for u in ("u0", "u5", "nobody"):
        np.testing.assert_allclose(m.score(UserState(u), items), m2.score(UserState(u), items), rtol=1e-6)
    e = Event(user="u0", item="i7", kind="like", timestamp=1_800_000_000.0)
    m.learn_one(e)
    m2.learn_one(e)
    np.testing.assert_allclose(m.score(UserState("u0"), items), m2.score(UserState("u0"), items), rtol=1e-6)


def check_fixed_arrays_stay_fixed(learner: Learner) -> None:
    """What a learner declares fixed between fits is read-only after a fit and after a
    restore, and learning leaves it as it is (a snapshot refers to it, uncopied)."""
    m = fitted(learner)
    restored = Learner.loads(m.dumps(), m.catalog_)
    for model in (m, restored):
        kept = {name: getattr(model, name).copy() for name in model.fixed_between_fits}
        for name in model.fixed_between_fits:
            assert not getattr(model, name).flags.writeable, f"{name} is writable"
        model.learn_one(Event(user="u0", item="i7", kind="like", timestamp=1_800_000_000.0))
        model.learn_one(Event(user="new", item="i3", kind="click", timestamp=1_800_000_001.0))
        for name, before in kept.items():
            np.testing.assert_array_equal(getattr(model, name), before)


def check_positive_event_raises_item_or_neighbours(learner: Learner) -> None:
    if not learner.learns_from_events:
        pytest.skip(f"{type(learner).__name__} scores what users declare, not what they do")
    cat = make_catalog()
    m = fitted(learner, cat=cat)
    items = all_items(cat)
    target = 13
    nbr = int(np.argsort(-(cat.vectors @ cat.vectors[target]))[1])  # nearest other item
    # Behavioural neighbours too: items that followed the target in someone's history.
    events = make_events(cat)
    after_target = set()
    for u in {e.user for e in events}:
        seq = [cat.index[e.item] for e in sorted(events, key=lambda e: e.timestamp) if e.user == u]
        after_target |= {b for a, b in zip(seq, seq[1:]) if a == target}
    st = UserState("fresh-user")
    before = m.score(st, items)
    m.learn_one(Event(user="fresh-user", item=f"i{target}", kind="purchase", timestamp=1_800_000_000.0))
    after = m.score(st, items)
    gain = (after - before) - np.median(after - before)
    raised = gain[target] > 0 or gain[nbr] > 0 or any(gain[b] > 0 for b in after_target)
    assert raised, "a purchase must raise the item's or its neighbours' score"


def check_new_items_are_scorable(learner: Learner) -> None:
    cat = make_catalog()
    m = fitted(learner, cat=cat)
    v = cat.vectors[3:4].copy()
    cat.upsert(["brand-new"], v, [{}], ["new"])
    s = m.score(UserState("u3"), cat.select(["brand-new", "i3"]))
    assert s.shape == (2,) and np.all(np.isfinite(s))
    m.learn_one(Event(user="u3", item="brand-new", kind="click", timestamp=1_800_000_000.0))


def check_batch_equals_incremental(learner: Learner) -> None:
    """fit(log) and fit(empty) + learn_one per event reach the same scores."""
    if not getattr(learner, "exact_incremental", True):
        pytest.skip(f"{type(learner).__name__} is approximate online by design")
    cat = make_catalog()
    events = make_events(cat)
    batch = fitted(learner.clone(), events, cat)
    online = fitted(learner.clone(), [], cat)
    for e in events:
        online.learn_one(e)
    items = all_items(cat)
    for u in ("u0", "u4", "nobody"):
        np.testing.assert_allclose(batch.score(UserState(u), items), online.score(UserState(u), items), rtol=1e-4, atol=1e-5)


def check_forget_removes_user(learner: Learner) -> None:
    cat = make_catalog()
    events = make_events(cat)
    m = fitted(learner.clone(), events, cat)
    mine = [e for e in events if e.user == "u2"]
    m.forget("u2", mine)
    ref = fitted(learner.clone(), [e for e in events if e.user != "u2"], cat)
    items = all_items(cat)
    for u in ("u2", "u0"):
        np.testing.assert_allclose(m.score(UserState(u), items), ref.score(UserState(u), items), rtol=1e-4, atol=1e-5)


def _recall_at_10(m: Learner, user: UserState, cand: np.ndarray) -> float | None:
    """Share of the learner's exact top-10 (positive scores, live items) among ``cand``.

    An item tied with the 10th exact score counts as a hit wherever ties fall.
    """
    cat = m.catalog_
    live = cat.alive_idx()
    s = np.asarray(m.score(user, cat.from_idx(live)), dtype=np.float64)
    ref = np.sort(s[s > 0])[::-1][:10]
    if not len(ref):
        return None
    got = np.asarray(m.score(user, cat.from_idx(cand)), dtype=np.float64) if len(cand) else np.zeros(0)
    return min(int((got >= ref[-1] - 1e-9 * abs(ref[-1])).sum()), len(ref)) / len(ref)


def check_retriever_candidates(learner: Learner) -> None:
    """A Retriever's candidates: at most n, distinct, live, deterministic, and recall@10 >= 0.9.

    Recall is against the learner's own exact top-10 over a 400-item catalog, asking
    for n = 20 (5% of it), for fitted users, a user learned online and a cold user.
    """
    if not isinstance(learner, Retriever):
        pytest.skip(f"{type(learner).__name__} is not a Retriever")
    cat = make_catalog(400, seed=3)
    events = make_events(cat, n_users=40, per_user=12, seed=4)
    m = fitted(learner.clone(), events, cat)
    online = [Event(user="fresh", item=f"i{j}", kind="click", timestamp=1_800_000_000.0 + j) for j in (6, 12, 18)]
    for e in online:
        m.learn_one(e)
    cat.remove(["i0", "i2"])  # dead items are never candidates
    users = [UserState(f"u{u}") for u in range(40)] + [UserState("fresh"), UserState("nobody")]
    n = 20
    recalls = []
    first = {}
    for st in users:
        c = np.asarray(m.candidates(st, n))
        assert c.dtype.kind == "i" and c.ndim == 1
        assert len(c) <= n and len(np.unique(c)) == len(c), "at most n distinct items"
        assert cat.alive[c].all(), "only live items"
        np.testing.assert_array_equal(c, m.candidates(st, n), err_msg="the same call gives the same items")
        assert len(m.candidates(st, 5)) <= 5
        first[st.user] = c
        r = _recall_at_10(m, st, c)
        if r is not None:
            recalls.append(r)
    assert recalls, "the learner scores someone"
    assert np.mean(recalls) >= 0.9, f"recall@10 of candidates(n={n}) vs exact: {np.mean(recalls):.3f}"
    m2 = Learner.loads(m.dumps(), cat)
    for st in users:
        np.testing.assert_array_equal(first[st.user], m2.candidates(st, n), err_msg="same after dumps/loads")
    m.forget("u3", [e for e in events if e.user == "u3"])
    for st in users:
        c = np.asarray(m.candidates(st, n))
        assert len(c) <= n and len(np.unique(c)) == len(c) and cat.alive[c].all()
    r = [_recall_at_10(m, st, m.candidates(st, n)) for st in users]
    assert np.mean([x for x in r if x is not None]) >= 0.9, "recall holds after forget"


def check_candidates_with_floor(learner: Learner) -> None:
    """A RetrieverWithFloor's one search gives what its two calls give: candidates with
    recall@10 >= 0.9 of ``candidates(user, n)`` and a floor at the catalog's minimum score
    (within 5% of the score range, never below it), for fitted, online and cold users."""
    if not isinstance(learner, RetrieverWithFloor):
        pytest.skip(f"{type(learner).__name__} does not retrieve with a floor")
    assert isinstance(learner, Retriever) and isinstance(learner, ScoreFloor)
    cat = make_catalog(400, seed=3)
    m = fitted(learner.clone(), make_events(cat, n_users=40, per_user=12, seed=4), cat)
    m.learn_one(Event(user="fresh", item="i6", kind="click", timestamp=1_800_000_000.0))
    cat.remove(["i0", "i2"])
    live = cat.from_idx(cat.alive_idx())
    for st in [UserState(f"u{u}") for u in range(0, 40, 4)] + [UserState("fresh"), UserState("nobody")]:
        c, f = m.candidates_with_floor(st, 20)
        c = np.asarray(c)
        assert len(c) <= 20 and len(np.unique(c)) == len(c) and cat.alive[c].all()
        alone = np.asarray(m.candidates(st, 20))
        assert len(np.intersect1d(c[:10], alone[:10])) >= 0.9 * min(10, len(alone))
        s = np.asarray(m.score(st, live), dtype=np.float64)
        lo, hi = float(s.min()), float(s.max())
        assert f is not None and lo - 1e-5 <= f <= lo + 0.05 * (hi - lo) + 1e-9, (st.user, f, lo, hi)


def check_prepared_retrieval_finds_the_same(learner: Learner) -> None:
    """``prepare_retrieval`` builds ahead what ``candidates`` would build on first use: the
    candidates of a prepared learner are those of an unprepared copy, before and after an
    online event and a removed item; on an unfitted learner it does nothing."""
    if not isinstance(learner, PreparesRetrieval):
        pytest.skip(f"{type(learner).__name__} prepares no retrieval")
    learner.clone().prepare_retrieval()  # unfitted: nothing to build, no error
    cat = make_catalog(400, seed=3)
    events = make_events(cat, n_users=40, per_user=12, seed=4)
    a, b = fitted(learner.clone(), events, cat), fitted(learner.clone(), events, cat)
    a.prepare_retrieval()
    users = [UserState(f"u{u}") for u in range(0, 40, 5)] + [UserState("fresh")]
    for step in range(2):
        for st in users:
            np.testing.assert_array_equal(a.candidates(st, 20), b.candidates(st, 20), err_msg=f"{st.user}, {step}")
        for m in (a, b):
            m.learn_one(Event(user="fresh", item="i6", kind="click", timestamp=1_800_000_000.0))
        cat.remove(["i1"])


def check_learn_many_equals_learn_one(learner: Learner) -> None:
    """A BatchLearner's ``learn_many`` over a run leaves what ``learn_one`` per event leaves:
    the same scores and (for a Retriever) the same candidates, for users old, new and cold,
    and the same after more events learned one by one."""
    if not isinstance(learner, BatchLearner):
        pytest.skip(f"{type(learner).__name__} learns event by event only")
    cat = make_catalog(200, seed=5)
    events = make_events(cat, n_users=30, per_user=10, seed=6)
    half = len(events) // 2
    rng = np.random.default_rng(7)
    fresh = [Event(user=f"new{k % 7}", item=f"i{int(j)}", kind=["click", "like", "skip", "rating"][k % 4],
                   value=float(1 + k % 5) if k % 4 == 3 else 1.0, timestamp=1_800_000_000.0 + k)
             for k, j in enumerate(rng.integers(0, 200, size=120))]
    run = events[half:] + fresh + events[half:][:20]  # repeats: strengths that do not change
    one, many = fitted(learner.clone(), events[:half], cat), fitted(learner.clone(), events[:half], cat)
    for e in run:
        one.learn_one(e)
    many.learn_many(run[:50])
    many.learn_many(run[50:])
    many.learn_many([])
    later = Event(user="u3", item="i11", kind="purchase", timestamp=1_900_000_000.0)
    items = all_items(cat)
    users = [UserState(u) for u in ("u0", "u3", "u17", "new2", "new5", "nobody")]
    for step in range(2):
        for st in users:
            np.testing.assert_array_equal(one.score(st, items), many.score(st, items), err_msg=st.user)
            if isinstance(learner, Retriever):
                np.testing.assert_array_equal(one.candidates(st, 20), many.candidates(st, 20), err_msg=st.user)
        one.learn_one(later)
        many.learn_one(later)


def check_explains_with_the_users_own_items(learner: Learner) -> None:
    """An Explains learner names, for a user's best-scored items, at most ``top`` distinct
    items of that user's own history (never the item explained), the same on every call;
    and it names some for at least one user."""
    if not isinstance(learner, Explains):
        pytest.skip(f"{type(learner).__name__} does not name history items")
    cat = make_catalog()
    events = make_events(cat)
    m = fitted(learner.clone(), events, cat)
    items = all_items(cat)
    named = 0
    for u in ("u0", "u1", "u5"):
        mine = [e for e in events if e.user == u]
        st = UserState(u, history=tuple(mine))
        best = items.idx[np.argsort(-m.score(st, items), kind="stable")[:5]]
        for idx in best.tolist():
            for top in (1, 2):
                got = m.because(st, idx, top)
                assert len(got) <= top and len(set(got)) == len(got)
                assert set(got) <= {e.item for e in mine}, f"{got} are not all {u}'s items"
                assert cat.ids[idx] not in got and got == m.because(st, idx, top)
                named += bool(got)
    assert named, "some best-scored item is explained by history items"


def check_counts_events_per_item(learner: Learner) -> None:
    """An EventCounts learner counts each item's positive events: the fit's, then each
    learned one; an item nobody acted on counts 0, and so does an index beyond the catalog."""
    if not isinstance(learner, EventCounts):
        pytest.skip(f"{type(learner).__name__} does not count events per item")
    cat = make_catalog()
    events = make_events(cat)
    m = fitted(learner.clone(), events, cat)
    acted = sorted({cat.get_idx(e.item) for e in events if e.kind == "click"})
    never = np.setdiff1d(np.arange(len(cat)), [cat.get_idx(e.item) for e in events])
    assert (m.events_on(np.array(acted)) > 0).all()
    assert not m.events_on(never).any()
    before = m.events_on(never[:1])[0]
    m.learn_one(Event(user="u0", item=cat.ids[int(never[0])], timestamp=events[-1].timestamp + 1))
    assert m.events_on(never[:1])[0] == before + 1
    assert m.events_on(np.array([len(cat) + 5])).tolist() == [0.0]  # beyond the catalog: none


def check_users_from_events(learner: Learner) -> None:
    """A learner declaring ``users_from_events`` built with ``user_tables=False`` keeps
    nothing per user it learns online (no such user id in its learned state) and,
    for users whose events are all in the request's recent events, gives what the learner
    with tables gives: scores, query vectors, candidates, floors and explanations (a learner
    declaring ``users_from_events_exact = False`` tests where it differs on its own)."""
    if not type(learner).users_from_events:
        pytest.skip(f"{type(learner).__name__} does not offer user_tables=False")
    cat = make_catalog()
    events = make_events(cat)
    cut = len(events) // 2
    kept = fitted(type(learner)(**learner.get_params()), events[:cut], cat)
    bare = fitted(type(learner)(**{**learner.get_params(), "user_tables": False}), events[:cut], cat)
    for e in events[cut:]:
        kept.learn_one(e)
        bare.learn_one(e)
    later = [Event(user=f"later-user-{j}", item=f"i{j}", kind="click", timestamp=1_800_000_000.0 + j) for j in range(5)]
    for e in later:
        bare.learn_one(e)
    state = bare.dumps()  # a fit's own data may name its users (kept to erase them); nothing learned after
    assert not any(e.user.encode() in state for e in later)
    items = all_items(cat)
    for u in ("u0", "u3", "u7", "nobody"):
        st = UserState(u, tuple(e for e in events if e.user == u))
        if not type(learner).users_from_events_exact:  # where it differs is its own test's business
            assert np.isfinite(bare.score(st, items)).all()
            continue
        np.testing.assert_allclose(bare.score(st, items), kept.score(st, items), rtol=1e-4, atol=1e-5)
        if isinstance(kept, VectorQuery):
            qa, qb = kept.query_vector(st), bare.query_vector(st)
            assert (qa is None) == (qb is None)
            if qa is not None:
                np.testing.assert_allclose(qb, qa, rtol=1e-4, atol=1e-5)
        if isinstance(kept, Retriever):
            np.testing.assert_array_equal(bare.candidates(st, 10), kept.candidates(st, 10))
        if isinstance(kept, ScoreFloor):
            fa, fb = kept.floor(st), bare.floor(st)
            assert fa is None and fb is None or abs(fa - fb) < 1e-5
        if isinstance(kept, Explains):
            best = np.argsort(-kept.score(st, items))[:3]
            assert [bare.because(st, int(i)) for i in best] == [kept.because(st, int(i)) for i in best]


def _reachable_tracked(root: object) -> set[int]:
    """ids of the objects the cyclic collector tracks that ``root`` reaches, short of
    modules, classes and functions (shared with the rest of the process)."""
    shared = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
    seen: set[int] = set()
    todo = [root]
    while todo:
        o = todo.pop()
        if id(o) in seen or isinstance(o, shared) or not gc.is_tracked(o):
            continue
        seen.add(id(o))
        todo.extend(gc.get_referents(o))
    return seen


def check_freed_without_the_cycle_collector(learner: Learner) -> None:
    """A fitted learner, used, saved and loaded back (what a re-fit swaps in), holds no
    reference cycle: when it is replaced, reference counting alone frees all of it. The
    service freezes the heap after each swap (``service/heap.py``); a cycle would stay
    there until the next full settle."""
    gc.collect()
    gc.disable()
    try:
        cat = make_catalog()
        m = Learner.loads(fitted(learner, cat=cat).dumps(), cat)
        st = UserState("u1", (Event(user="u1", item="i2", kind="click", timestamp=1_800_000_000.0),))
        m.learn_one(Event(user="u1", item="i3", kind="like", timestamp=1_800_000_001.0))
        m.score(st, all_items(cat))
        if isinstance(m, Retriever):
            m.candidates(st, 5)
        reach = _reachable_tracked(m)
        del m
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        leaked = [o for o in gc.garbage if id(o) in reach]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert not leaked, f"{type(learner).__name__} keeps reference cycles: {[type(o).__name__ for o in leaked][:10]}"


ALL_CHECKS = [
    check_scores_shape_and_finite,
    check_a_few_items_score_as_in_the_whole_catalog,
    check_unknown_user_cold_start,
    check_not_fitted_error,
    check_same_seed_same_output,
    check_learn_one_does_not_mutate_input,
    check_save_load_round_trip,
    check_fixed_arrays_stay_fixed,
    check_positive_event_raises_item_or_neighbours,
    check_new_items_are_scorable,
    check_batch_equals_incremental,
    check_forget_removes_user,
    check_retriever_candidates,
    check_candidates_with_floor,
    check_prepared_retrieval_finds_the_same,
    check_learn_many_equals_learn_one,
    check_explains_with_the_users_own_items,
    check_counts_events_per_item,
    check_users_from_events,
    check_freed_without_the_cycle_collector,
]
