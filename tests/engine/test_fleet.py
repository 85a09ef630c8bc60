"""Fleet mode: engines over one store keep per-user state in one Redis (Settings.state)."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest

from checks.user_state_checks import REDIS_URL, redis_client, redis_prefix
from liverec import Engine, Event
from liverec.settings import Settings
from liverec.snapshot import ModelSet
from liverec.state_redis import RedisUserState, StateUnavailableError
from liverec.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/fleet.db"
    return request.getfixturevalue("postgres_url")()


@pytest.fixture
def open_engine(store_url, prefix, encoder) -> Iterator[Callable[..., Engine]]:
    opened: list[Engine] = []

    def open_engine(**kw) -> Engine:
        s = Settings(store=store_url, state=REDIS_URL, state_prefix=prefix, encoder_progress=False, **kw)
        opened.append(Engine(Store.open(store_url), s, encoder))
        return opened[-1]

    yield open_engine
    for eng in opened:
        eng.close()


def ids(recs) -> list[str]:
    return [r.item for r in recs]


def test_an_event_on_one_engine_is_seen_by_the_other_at_once(open_engine, books) -> None:
    a = open_engine()
    a.add_items(books[:120])
    b = open_engine()
    a.replicated = b.replicated = True
    assert isinstance(a.state, RedisUserState) and a.state.complete() and b.state.complete()
    v = b.user_version("reader")
    assert a.record(Event(user="reader", item="2", kind="like", context={"device": "phone"}))
    a.set_interests("reader", "vampires and the undead")
    # No sync on b: the user's state is read from Redis, not replayed from the log.
    assert [e.item for e in b.user_state("reader").history] == ["2"]
    assert b.user_state("reader").history[0].context == {"device": "phone"}
    assert b.user_state("reader").interests_text == "vampires and the undead"
    assert b.user_version("reader") != v
    assert "2" not in ids(b.recommend("reader", k=50, log=False))  # b's seen filter has it
    b.record_many([Event(user="reader", item=i, kind="click") for i in ("18", "21")])
    assert [e.item for e in a.user_state("reader").history] == ["2", "18", "21"]
    # b learning a's event from the log writes nothing twice.
    assert b.sync()["events"] == 1 and len(b.user_state("reader").history) == 3


def test_sources_that_can_read_users_from_the_shared_state_keep_no_user(open_engine, books) -> None:
    a = open_engine(user_tables=False)
    a.add_items(books[:120])
    b = open_engine(user_tables=False)
    a.replicated = b.replicated = True
    bare = [n for n, m in a.learners.items()
            if type(m).users_from_events and not type(m).item_side_at_fits_without_tables]
    assert {"content", "tfidf"} <= set(bare)
    for i, item in enumerate(("2", "18", "21", "33")):
        a.record(Event(user="reader", item=item, kind="like", timestamp=1000.0 + i))
    a.fit()  # fitted as the fleet builds them, too
    a.record(Event(user="reader", item="40", kind="click", timestamp=1010.0))
    a.record(Event(user="late-reader", item="41", kind="like", timestamp=1011.0))
    items = a.catalog.from_idx(a.catalog.alive_idx())
    for name in bare:
        for eng in (a, b):
            assert eng.learners[name].user_tables is False
            assert b"late-reader" not in eng.learners[name].dumps()
        if not type(a.learners[name]).users_from_events_exact:
            continue  # b's was not fitted on a's log: its scores are not a's
        assert b"reader" not in a.learners[name].dumps()
        # No sync on b: the source reads the user from Redis, so both replicas score alike at once.
        sa = a.learners[name].score(a.user_state("reader"), items)
        assert np.abs(sa).max() > 0
        np.testing.assert_allclose(b.learners[name].score(b.user_state("reader"), items), sa, rtol=1e-5, atol=1e-6)


def test_with_every_source_without_tables_a_replica_keeps_no_user_it_learns_online(open_engine, books) -> None:
    """The neighbour sources' tables off too (their own setting): no learner of either replica
    names a user whose events arrived after the fit, and both replicas serve that user alike."""
    sources = {**Settings().sources, **{n: {"user_tables": False} for n in ("itemknn", "transition", "sessionknn")}}
    a = open_engine(user_tables=False, sources=sources)
    a.add_items(books[:120])
    b = open_engine(user_tables=False, sources=sources)
    a.replicated = b.replicated = True
    for i, item in enumerate(("2", "18", "21", "33", "40", "41")):
        a.record(Event(user=f"reader-{i % 3}", item=item, kind="like", timestamp=1000.0 + i))
    a.fit()
    b.fit()
    for i, item in enumerate(("18", "21", "2")):
        a.record(Event(user="late-reader", item=item, kind="like", timestamp=1100.0 + i))
    for eng in (a, b):
        for name, m in eng.learners.items():
            assert b"late-reader" not in m.dumps(), name
    assert ids(a.recommend("late-reader", k=5, log=False)) == ids(b.recommend("late-reader", k=5, log=False))


def test_erasure_removes_the_users_redis_keys(open_engine, books, prefix) -> None:
    a = open_engine()
    a.add_items(books[:60])
    b = open_engine()
    a.replicated = b.replicated = True
    for item in ("2", "18"):
        a.record(Event(user="erase-me-3", item=item, kind="like"))
    a.set_interests("erase-me-3", "ghost stories")
    r = redis_client()
    assert list(r.scan_iter(match=f"{prefix}:*erase-me-3*"))
    b.delete_user("erase-me-3")
    assert not list(r.scan_iter(match=f"{prefix}:*erase-me-3*"))
    assert a.user_state("erase-me-3").history == () and a.user_state("erase-me-3").interests is None
    a.forget_user("erase-me-3", [])  # the notice reaching the other engine: nothing left to delete
    assert "erase-me-3" not in a.state


def test_restart_serves_from_redis_and_a_lost_redis_is_refilled_from_the_log(open_engine, books, prefix) -> None:
    a = open_engine()
    a.add_items(books[:60])
    for i, item in enumerate(("2", "18", "21")):
        a.record(Event(user="reader", item=item, kind="like", timestamp=1000.0 + i))
    a.set_interests("fan", "sea voyages")
    a.fit()  # a fleet fit leaves the shared state alone and snapshots no users
    before = (a.user_state("reader").history, a.state.seen("reader"), a.recommend("reader", k=10, log=False))
    a.close()

    b = open_engine()  # restart: the state is in Redis already, nothing is refilled
    assert b.state.complete() and b.user_state("reader").history == before[0]
    assert b.user_state("fan").interests_text == "sea voyages"
    assert ids(b.recommend("reader", k=10, log=False)) == ids(before[2])

    r = redis_client()
    r.delete(*r.scan_iter(match=f"{prefix}:*"))  # Redis restarted empty
    assert b.user_state("reader").history == before[0]  # read from the store until refilled
    assert b.user_state("fan").interests_text == "sea voyages"
    r.set(f"{prefix}:users:refilling", "1")  # another replica is refilling
    assert b.sync().get("users") == 0 and "reader" not in b.state
    r.delete(f"{prefix}:users:refilling")  # it died: its claim expired
    out = b.sync()
    assert out["users"] == 3 and "reader" in b.state
    assert b.user_state("reader").history == before[0] and b.state.seen("reader") == before[1]
    assert b.user_state("fan").interests_text == "sea voyages"
    assert ids(b.recommend("reader", k=10, log=False)) == ids(before[2])
    assert "users" not in b.sync()  # complete again


def test_fleet_snapshots_are_refused_by_a_node_keeping_users_in_memory(open_engine, books, store_url,
                                                                        encoder, caplog) -> None:
    a = open_engine()
    a.add_items(books[:60])
    a.record(Event(user="reader", item="2", kind="like"))
    a.fit()
    (info,) = a.snapshots.repo.list()
    assert ModelSet.loads(a.snapshots.repo.read(info)).users == {} and info.header["user_state"] == "redis"
    caplog.set_level("INFO", logger="liverec.snapshot")
    mem = Engine(Store.open(store_url), Settings(store=store_url, encoder_progress=False), encoder)
    try:
        assert "user state 'redis', this node has 'memory'" in caplog.text
        assert [e.item for e in mem.user_state("reader").history] == ["2"]  # re-fitted from the log
    finally:
        mem.close()


def test_requests_read_redis_outside_the_engine_lock(open_engine, books) -> None:
    a = open_engine()
    a.add_items(books[:60])
    a.record(Event(user="reader", item="2", kind="like"))
    held, real = [], a.state.view

    def view(user: str):
        held.append(a._lock._is_owned())  # other requests would wait on this round trip
        return real(user)

    a.state.view = view
    assert "2" not in ids(a.recommend("reader", k=20, log=False))
    a.explain("reader", "18")
    assert held == [False, False]


def test_while_redis_is_down_users_are_read_from_the_store(tmp_path, encoder, books) -> None:
    url = f"sqlite:///{tmp_path}/down.db"
    s = Settings(store=url, state="redis://127.0.0.1:1/0", encoder_progress=False)
    eng = Engine(Store.open(url), s, encoder)
    try:
        eng.add_items(books[:60])
        eng.record(Event(user="reader", item="2", kind="like"))
        eng.set_interests("reader", "haunted houses")
        st = eng.user_state("reader")
        assert [e.item for e in st.history] == ["2"] and st.interests_text == "haunted houses"
        assert "2" not in ids(eng.recommend("reader", k=50, log=False))
        epoch = eng.erasure_epoch
        with pytest.raises(StateUnavailableError) as exc:  # its Redis keys may remain: say so
            eng.delete_user("reader")
        assert "again" in exc.value.fix
        assert eng.history("reader") == [] and eng.erasure_epoch == epoch + 1  # the rest is done
        assert eng.user_state("reader").history == ()
    finally:
        eng.close()


def test_engine_open_takes_the_state_url(tmp_path, encoder, prefix) -> None:
    url = f"sqlite:///{tmp_path}/o.db"
    eng = Engine.open(url, settings=Settings(state_prefix=prefix, encoder_progress=False), encoder=encoder,
                      state=REDIS_URL)
    try:
        assert isinstance(eng.state, RedisUserState) and eng.settings.state == REDIS_URL
    finally:
        eng.close()
