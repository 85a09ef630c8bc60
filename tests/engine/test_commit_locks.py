"""Requests do not wait for a commit's disk write; whatever must match the log waits for it.

A writer holds the engine's write lock from its append to its learning; requests take only
the engine lock, which the append does not hold. A swap, an erasure and a snapshot take the
write lock, so a committed event is learned exactly once, by the old learners or the new.
"""

from __future__ import annotations

import threading

import pytest

from liverec import Engine, Event, Settings

T0 = 1_700_000_000.0
SOURCES = {"content": {}, "itemknn": {}, "trending": {}}


def _engine(encoder, books, tmp_path) -> Engine:
    """An engine over a SQLite file (snapshots on), 100 books, 60 clicks by 5 users."""
    eng = Engine.open(f"sqlite:///{tmp_path / 'log.db'}", encoder=encoder,
                      settings=Settings(encoder_progress=False, sources=SOURCES, snapshot_every_events=0))
    eng.add_items(books[:100])
    eng.record_many([Event(user=f"u{j % 5}", item=books[2 + j % 40].id, kind="click", timestamp=T0 + j)
                     for j in range(60)])
    return eng


@pytest.fixture
def slow_commit(encoder, books, monkeypatch, tmp_path):
    """:func:`_engine` whose next append blocks inside the store until released."""
    eng = _engine(encoder, books, tmp_path)
    inside, release = threading.Event(), threading.Event()
    real = eng.store.append_events

    def append(events):
        inside.set()
        assert release.wait(10)
        return real(events)

    monkeypatch.setattr(eng.store, "append_events", append)
    yield eng, inside, release
    release.set()
    for t in _THREADS:
        t.join(60)
    _THREADS.clear()
    eng.close()


_THREADS: list[threading.Thread] = []


def _in_thread(fn) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    _THREADS.append(t)
    return t, out


def test_a_request_is_served_while_a_commit_waits_for_the_disk(slow_commit, books) -> None:
    eng, inside, release = slow_commit
    item = eng.recommend("u1", k=1)[0].item
    writer, _ = _in_thread(lambda: eng.record(Event(user="u1", item=item, kind="click", timestamp=T0 + 100)))
    assert inside.wait(10)
    reader, got = _in_thread(lambda: eng.recommend("u1", k=1))
    reader.join(5)
    assert got and got[0][0].item == item  # served at once, from the state before the event
    release.set()
    writer.join(10)
    assert eng.recommend("u1", k=1)[0].item != item  # learned once committed: the item is seen now


@pytest.mark.parametrize("waiter", ["fit", "delete_user", "snapshot"])
def test_what_must_match_the_log_waits_for_the_commit_to_be_learned(slow_commit, books, waiter) -> None:
    eng, inside, release = slow_commit
    assert eng.snapshots.enabled
    e = Event(user="u9", item=books[3].id, kind="click", timestamp=T0 + 100, id="late-event")
    writer, _ = _in_thread(lambda: eng.record(e))
    assert inside.wait(10)
    act = {"fit": eng.fit, "delete_user": lambda: eng.delete_user("u9"), "snapshot": eng.snapshot}[waiter]
    other, _ = _in_thread(act)
    other.join(0.5)
    assert other.is_alive()  # waits for the write lock, held from the append to the learning
    release.set()
    writer.join(10)
    other.join(60)
    assert not other.is_alive()
    history = [x.id for x in eng.user_state("u9").history]
    recent = list(eng.learners["itemknn"].recent_.get("u9", []))
    if waiter == "delete_user":
        assert history == [] and recent == []
    else:  # learned once: by the old learners before the swap (replayed into the new), or by the new
        assert history == ["late-event"] and recent == [eng.catalog.get_idx(books[3].id)]


def test_a_request_is_served_while_a_swap_learns_the_last_events_and_a_write_waits(encoder, books, monkeypatch,
                                                                                 tmp_path) -> None:
    from liverec.lifecycle import Lifecycle

    eng = _engine(encoder, books, tmp_path)
    inside, release = threading.Event(), threading.Event()
    real = Lifecycle.replay

    def replay(self, learners, users, cursor, until=None, pace=0.0):
        if until is None:  # the swap's last catch-up, under the write lock
            inside.set()
            assert release.wait(10)
        return real(self, learners, users, cursor, until, pace)

    monkeypatch.setattr(Lifecycle, "replay", replay)
    try:
        version = eng.model_version
        fit, _ = _in_thread(eng.fit)
        assert inside.wait(30)
        reader, got = _in_thread(lambda: eng.recommend("u1", k=3))
        reader.join(5)
        assert got and len(got[0]) == 3  # served by the old learners meanwhile
        e = Event(user="u7", item=books[5].id, kind="click", timestamp=T0 + 100, id="during-swap")
        writer, _ = _in_thread(lambda: eng.record(e))
        writer.join(0.5)
        assert writer.is_alive() and eng.model_version == version  # the write waits for the swap
        release.set()
        fit.join(60)
        writer.join(10)
        assert not fit.is_alive() and not writer.is_alive() and eng.model_version == version + 1
        assert [x.id for x in eng.user_state("u7").history] == ["during-swap"]  # learned once, by the new learners
        assert list(eng.learners["itemknn"].recent_["u7"]) == [eng.catalog.get_idx(books[5].id)]
    finally:
        release.set()
        for t in _THREADS:
            t.join(60)
        _THREADS.clear()
        eng.close()
