"""The service keeps its long-lived objects out of the cyclic collector's reach, fit after fit:
a full collection over millions of them holds the GIL for ~100 ms, stalling every request."""

from __future__ import annotations

import gc
import weakref

from liverec import Event


def _tracked(obj: object) -> bool:
    """Whether the cyclic collector still looks at ``obj`` (frozen objects are in none of its generations)."""
    return any(o is obj for g in range(3) for o in gc.get_objects(generation=g))


def test_the_learners_of_every_swap_are_frozen_and_the_hook_leaves_with_the_app(make_client) -> None:
    c = make_client(open_access=True)
    eng = c.engine
    users = [f"u{k}" for k in range(30)]
    ids = [b for b in eng.catalog.ids[:60]]
    eng.record_many([Event(user=u, item=ids[(k * 7 + j) % 60], kind="click", timestamp=1_700_000_000.0 + k * 10 + j)
                     for k, u in enumerate(users) for j in range(5)])
    eng.fit()  # new learners swapped in: frozen with everything else alive
    first = eng.learners["itemknn"].__dict__
    assert not _tracked(first)
    eng.record(Event(user="u1", item=ids[3], kind="like", timestamp=1_700_001_000.0))
    eng.fit()
    second = eng.learners["itemknn"].__dict__
    assert second is not first and not _tracked(second)
    hooks, catch_up = list(eng.on_swap), list(eng.on_catch_up)
    assert c.app.state.svc.heap.young in catch_up  # a fit's new learners are frozen before their catch-up too
    c.__exit__(None, None, None)  # the app stops; the engine is the caller's and goes on
    assert len(eng.on_swap) == len(hooks) - 1 and len(eng.on_catch_up) == len(catch_up) - 1
    eng.fit()
    assert _tracked(eng.learners["itemknn"].__dict__)  # nothing freezes an engine outside the service


def test_a_cached_answer_holds_nothing_the_cyclic_collector_walks(make_client) -> None:
    c = make_client(open_access=True, response_cache_size=100)
    eng, svc = c.engine, c.app.state.svc
    ids = eng.catalog.ids[:40]
    eng.record_many([Event(user=f"u{k}", item=ids[(k * 3 + j) % 40], kind="click", timestamp=1_700_000_000.0 + 10 * k + j)
                     for k in range(5) for j in range(4)])
    for k in range(5):
        first = c.get(f"/recommendations/u{k}", params={"k": 5}).json()
        again = c.get(f"/recommendations/u{k}", params={"k": 5}).json()
        assert again["cached"] and again["items"] == first["items"]
    assert eng.store.count_impressions() == 50  # the hits are logged from what the cache holds
    for _ in range(3):  # each pass untracks the tuples whose items it found untracked: inner ones first
        gc.collect()
    entries = [e for user in svc.cache._users.values() for e in user.values()]
    assert len(entries) == 5
    for version, born, payload, rows in entries:
        assert len(rows) == 5 and all(type(r) is tuple and len(r) == 4 for r in rows)
        assert not gc.is_tracked(rows) and all(not gc.is_tracked(r) for r in rows)


class _Cycle:
    """An object in a reference cycle: only the cyclic collector can free it."""

    def __init__(self) -> None:
        self.me = self


def test_a_swap_walks_only_the_young_and_frees_the_replaced_learners(make_client, monkeypatch) -> None:
    c = make_client(open_access=True)
    eng, heap = c.engine, c.app.state.svc.heap
    ids = eng.catalog.ids[:40]
    eng.record_many([Event(user=f"u{k}", item=ids[(k * 3 + j) % 40], kind="click", timestamp=1_700_000_000.0 + 10 * k + j)
                     for k in range(10) for j in range(4)])
    eng.fit()
    unfreezes = []
    real = gc.unfreeze
    monkeypatch.setattr(gc, "unfreeze", lambda: (unfreezes.append(1), real())[1])
    old = weakref.ref(eng.learners["itemknn"])
    assert not _tracked(old())  # frozen at the last swap
    eng.fit()
    assert old() is None  # frozen, yet freed by reference counting the moment it was replaced
    assert not _tracked(eng.learners["itemknn"].__dict__) and unfreezes == [] and heap.full_settles == 1


def test_a_cycle_leaked_into_the_frozen_heap_is_freed_once_the_heap_regrows(make_client) -> None:
    c = make_client(open_access=True)
    eng, heap = c.engine, c.app.state.svc.heap
    eng.record(Event(user="u0", item=eng.catalog.ids[0], kind="click", timestamp=1_700_000_000.0))
    held = _Cycle()
    gc.collect()  # now in the oldest generation, which a swap does not collect
    leaked = weakref.ref(held)
    gc.disable()  # (no automatic collection frees it before the swap freezes it)
    try:
        del held  # garbage in a cycle
        eng.fit()
    finally:
        gc.enable()
    assert leaked() is not None and heap.full_settles == 1
    gc.collect()
    assert leaked() is not None  # frozen: no collection walks it
    grown = [[k] for k in range(int(0.3 * gc.get_freeze_count()))]  # the frozen heap grows by more than a quarter
    eng.fit()
    assert heap.full_settles == 2 and leaked() is None and len(grown)


def test_what_events_and_requests_leave_is_frozen_every_so_many(make_client) -> None:
    """What posted events and ranked lists leave in the heap (users' recent events, what a
    request keeps) is frozen after every ``HeapSettler.every`` of them, with no swap: full
    collections stay short."""
    c = make_client(open_access=True)
    heap = c.app.state.svc.heap
    heap.every = 5
    ids = c.engine.catalog.ids[:10]

    def post(user: str, n: int) -> None:
        for j in range(n):
            body = {"user": user, "item": ids[j], "kind": "click", "timestamp": 1_700_000_000.0 + j}
            assert c.post("/events", json=body).status_code == 200

    post("early", 3)  # fewer than `every`: left to the collector
    kept = c.engine.user_state("early").history[-1]
    assert _tracked(kept) and heap.since_freeze == 3
    assert c.get("/recommendations/early").status_code == 200  # a ranked list counts too
    assert heap.since_freeze == 4
    post("late", 1)  # the fifth: a freeze
    assert not _tracked(kept) and not _tracked(c.engine.user_state("late").history[-1]) and heap.since_freeze == 0


def test_the_frozen_heap_is_counted_only_when_it_could_have_regrown(monkeypatch) -> None:
    """Counting the frozen heap walks every frozen object (~10 ms at 1.5 million): a freeze
    after a few events does not count it; one after growth past the bound does, and settles."""
    from liverec.service.heap import HeapSettler

    counts = []
    real = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: (counts.append(1), real())[1])
    heap = HeapSettler(every=10)
    try:
        heap.full()
        counts.clear()
        kept = [[k] for k in range(100)]  # a little growth, far under a quarter of the heap
        heap.made(10)
        assert counts == [] and heap.since_freeze == 0 and not _tracked(kept[0])
        grown = [[k] for k in range(int(0.3 * heap.frozen_after_full))]  # past the bound
        heap.made(10)
        assert counts and heap.full_settles == 2 and heap.frozen_after_full >= len(grown)
    finally:
        gc.unfreeze()
