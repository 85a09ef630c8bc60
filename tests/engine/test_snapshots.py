"""Model snapshots: a restart loads the newest compatible one and replays only the log after it."""

from __future__ import annotations

import logging
import pickle
import time
from typing import Callable, Iterator

import numpy as np
import pytest

from liverec import Engine, Event, Settings
from liverec import snapshot as snapshot_module
from liverec.lifecycle import Lifecycle
from liverec.store.snapshots import DirSnapshots

T0 = 1_700_000_000.0
#: No scheduled snapshots unless a test asks: only fits and explicit snapshot() calls write.
QUIET = dict(encoder_progress=False, snapshot_every_events=0, snapshot_interval_s=0)


def events(n: int, items: list[str], *, seed: int, t: float = 0.0, users: int = 25) -> list[Event]:
    rng = np.random.default_rng(seed)
    kinds = ["click", "like", "view", "rating", "purchase"]
    out = []
    for j in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(Event(
            user=f"u{int(rng.integers(users))}", item=items[int(rng.integers(len(items)))], kind=kind,
            value=float(rng.integers(1, 6)) if kind == "rating" else 1.0, timestamp=T0 + t + j, id=f"s{seed}-{j}",
        ))
    return out


def served(eng: Engine, users: list[str]) -> dict[str, object]:
    """Every source's score of every live item, and the fused top 10, per user."""
    items = eng.catalog.from_idx(eng.catalog.alive_idx())
    out: dict[str, object] = {"ids": items.ids}
    for u in users:
        st = eng.user_state(u)
        for name, m in eng.learners.items():
            out[f"{u}/{name}"] = m.score(st, items).tolist()
        out[u] = [(r.item, r.score) for r in eng.recommend(u, k=10, log=False, explain=False)]
    return out


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'rec.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("postgres_url")
        yield factory()


def in_a_directory(tmp_path, books, n_items: int) -> tuple[Settings, str, list[str]]:
    """(settings with snapshots in tmp_path/snaps, a SQLite file URL, the first n_items book ids)."""
    s = Settings(**QUIET, snapshot_dir=str(tmp_path / "snaps"))
    return s, f"sqlite:///{tmp_path / 'rec.db'}", [b.id for b in books[:n_items]]


def no_refit(monkeypatch) -> None:
    def refit(self):  # a restart from a snapshot must not re-fit
        raise AssertionError("re-fitted from the whole log instead of loading the snapshot")

    monkeypatch.setattr(Lifecycle, "rebuild", refit)


def test_restart_from_snapshot_serves_what_the_writer_served(url, encoder, books, monkeypatch):
    s = Settings(**QUIET)
    ids = [b.id for b in books[:300]]
    users = ["u0", "u3", "u7", "nobody"]
    with Engine.open(url, settings=s, encoder=encoder) as e:
        assert sorted(e.learners) == sorted(Settings().sources)  # every default source
        e.add_items(books[:300])
        e.set_interests("u3", "space opera and starships")
        e.remove_items([ids.pop(7)])  # a dead slot before the snapshot
        e.record_many(events(600, ids, seed=1), learn=False)
        e.fit()
        at = e.store.last_event_seq()
        assert e.snapshots.log_seq == at and e.snapshots.last_write["bytes"] > 0
        e.record_many(events(150, ids, seed=2, t=1000))  # learned live after the snapshot
        expected = served(e, users)
        last = e.store.last_event_seq()
    no_refit(monkeypatch)
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.snapshots.log_seq == at < last
        assert again.replica.cursor == last  # the 150 events after it were replayed
        assert served(again, users) == expected
        # New items after the snapshot, and events on them.
        again.add_items(books[300:320])
        again.record_many(events(40, [b.id for b in books[300:320]], seed=3, t=2000))
        expected = served(again, users)
    with Engine.open(url, settings=s, encoder=encoder) as third:
        got = served(third, users)
    # The replay learns the tail against today's catalog (like a re-fit would): als maps
    # items without interactions from their LM vectors whenever the catalog changes, so
    # seeing the new items before the tail's first event moves its scores (and, through
    # fusion, the lists) slightly. Exact again once a snapshot is written after the change.
    # The 20 new items are folded in from their first one or two users against X^T X, where
    # users not read since their last events count with the row of their last read: the
    # writer read u0, u3 and u7 before the new items came, the replay did not, so those
    # items move more (of scores up to ~1.2).
    als = [k for k in expected if k.endswith("/als")]
    new = np.isin(got["ids"], [b.id for b in books[300:320]])
    assert list(got["ids"]) == list(expected["ids"])
    for k in als:
        np.testing.assert_allclose(np.array(got[k])[~new], np.array(expected[k])[~new], atol=0.05)
        np.testing.assert_allclose(np.array(got[k])[new], np.array(expected[k])[new], atol=0.2)
    same = [k for k in expected if k not in als and k not in users]
    assert {k: got[k] for k in same} == {k: expected[k] for k in same}
    for u in users:
        assert len({i for i, _ in got[u]} & {i for i, _ in expected[u]}) >= 8


def test_snapshot_in_a_directory(tmp_path, encoder, books, monkeypatch):
    s, url, ids = in_a_directory(tmp_path, books, 200)
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:200])
        e.record_many(events(300, ids, seed=4))
        info = e.snapshot()
        e.record_many(events(30, ids, seed=5, t=500))
        expected = served(e, ["u1", "u2"])
    assert info is not None and info.log_seq == 300
    assert sorted(p.suffix for p in (tmp_path / "snaps").iterdir()) == [".body", ".json"]
    assert e.store.url.endswith("rec.db")
    no_refit(monkeypatch)
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.snapshots.log_seq == 300 and served(again, ["u1", "u2"]) == expected


def test_a_snapshot_holds_the_model_set_as_captured_while_learning_goes_on(tmp_path, encoder, books, monkeypatch):
    """The capture under the lock copies what learning changes and refers to what only a fit
    sets (EASE's matrix); events learned between the capture and the write stay out of it."""
    s, url, ids = in_a_directory(tmp_path, books, 200)
    captured: list[bytes] = []
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:200])
        e.record_many(events(300, ids, seed=4))
        e.fit()
        capture, write = Lifecycle.capture, Lifecycle.write_snapshot

        def capture_(self, *args):
            body = capture(self, *args)
            captured.append(bytes(body.join()))
            fixed, live = e.learners["ease"].B_, e.learners["itemknn"].counts_.vals
            parts = [np.frombuffer(p, np.uint8) for p in body.parts]
            assert any(np.shares_memory(p, fixed) for p in parts)
            assert not any(np.shares_memory(p, live) for p in parts)
            return body

        def write_(self, body, *args):
            e.record_many(events(200, ids, seed=5, t=500))  # learned after the capture, before the write
            return write(self, body, *args)

        monkeypatch.setattr(Lifecycle, "capture", capture_)
        monkeypatch.setattr(Lifecycle, "write_snapshot", write_)
        info = e.snapshot()
        assert info is not None and info.log_seq == 300
        assert e.snapshots.repo.read(info) == captured[0]
        assert bytes(capture(e.lifecycle, e.learners, e.state, 300, 0).join()) != captured[0]  # learning went on


def test_a_node_restarted_with_another_refit_policy_or_filters_loads_the_snapshot(tmp_path, encoder, books,
                                                                                monkeypatch):
    """When fits run, what input is accepted and how lists are filtered do not shape what a
    snapshot holds: a restart with other values loads it, and serves with the new ones."""
    s, url, ids = in_a_directory(tmp_path, books, 200)
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:200])
        e.record_many(events(300, ids, seed=4))
        assert e.snapshot() is not None
        first = [r.item for r in e.recommend("u1", k=5, log=False)]
    no_refit(monkeypatch)
    other = s.model_copy(update={"refit_growth": 0.0, "bulk_fit_events": 10, "max_event_value": 10.0,
                                 "diversity": 0.5, "blocklist": first[:1]})
    with Engine.open(url, settings=other, encoder=encoder) as again:
        assert again.snapshots.log_seq == 300
        assert first[0] not in [r.item for r in again.recommend("u1", k=5, log=False)]


def test_incompatible_snapshots_are_refused_and_the_node_refits(tmp_path, encoder, books, monkeypatch, caplog):
    url = f"sqlite:///{tmp_path / 'rec.db'}"
    ids = [b.id for b in books[:200]]
    with Engine.open(url, settings=Settings(**QUIET), encoder=encoder) as e:
        e.add_items(books[:200])
        e.record_many(events(200, ids, seed=6))
        assert e.snapshot() is not None
    fits = []
    rebuild = Lifecycle.rebuild
    monkeypatch.setattr(Lifecycle, "rebuild", lambda self: (fits.append(1), rebuild(self))[1])
    caplog.set_level(logging.INFO, logger="liverec.snapshot")

    # Other model settings: refused, re-fitted, and the re-fit writes a snapshot for them.
    other = Settings(**QUIET, history_length=20)
    with Engine.open(url, settings=other, encoder=encoder) as e:
        assert fits == [1] and len(e.user_state("u1").history) <= 20
    assert "refused: written with model settings" in caplog.text
    assert "re-fitting from the whole event log" in caplog.text
    caplog.clear()
    with Engine.open(url, settings=other, encoder=encoder):
        assert fits == [1]  # the snapshot the re-fit wrote is loaded
    assert "loaded the snapshot at log position 200" in caplog.text

    # Another liverec code version: refused.
    monkeypatch.setattr(snapshot_module, "code_digest", lambda: "other-code")
    caplog.clear()
    with Engine.open(url, settings=other, encoder=encoder):
        assert fits == [1, 1]
    assert "refused: written with liverec code" in caplog.text


def test_unreadable_snapshot_is_refused(tmp_path, encoder, books, caplog):
    s, url, ids = in_a_directory(tmp_path, books, 100)
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:100])
        e.record_many(events(100, ids, seed=7), learn=False)
        e.fit()  # the state a re-fit from the log rebuilds exactly
        (info,) = e.snapshots.repo.list()
        expected = served(e, ["u1"])
    body = tmp_path / "snaps" / f"{info.key}.body"
    body.write_bytes(body.read_bytes()[:1000])  # truncated
    caplog.set_level(logging.WARNING, logger="liverec.snapshot")
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert served(again, ["u1"]) == expected  # from the log instead
    assert "refused: unreadable" in caplog.text


def test_old_snapshots_are_pruned(tmp_path, encoder, books):
    s = Settings(**QUIET, snapshot_keep=2)
    ids = [b.id for b in books[:100]]
    with Engine.open(f"sqlite:///{tmp_path / 'rec.db'}", settings=s, encoder=encoder) as e:
        e.add_items(books[:100])
        for n in range(4):
            e.record_many(events(10, ids, seed=10 + n, t=100 * n))
            e.snapshot()
        assert [i.log_seq for i in e.snapshots.repo.list()] == [40, 30]


def test_scheduled_snapshots(tmp_path, encoder, books):
    s = Settings(encoder_progress=False, snapshot_every_events=20, snapshot_interval_s=0)
    ids = [b.id for b in books[:100]]
    with Engine.open(f"sqlite:///{tmp_path / 'rec.db'}", settings=s, encoder=encoder) as e:
        e.add_items(books[:100])
        e.record_many(events(10, ids, seed=20))
        time.sleep(1.5)
        assert e.snapshots.repo.list() == []  # 10 new events: not yet
        e.record_many(events(15, ids, seed=21, t=100))
        assert _wait(lambda: [i.log_seq for i in e.snapshots.repo.list()] == [25])


def test_erasure_drops_snapshots_and_the_next_holds_nothing_of_the_user(tmp_path, encoder, books, monkeypatch):
    s = Settings(encoder_progress=False, snapshot_every_events=0, snapshot_interval_s=3600)
    url = f"sqlite:///{tmp_path / 'rec.db'}"
    ids = [b.id for b in books[:150]]
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:150])
        e.set_interests("erased-reader", "gothic horror")
        e.record_many(events(200, ids, seed=30) + [
            Event(user="erased-reader", item=ids[n], kind="like", timestamp=T0 + n, id=f"x{n}") for n in range(12)
        ])
        e.fit()
        (before,) = e.snapshots.repo.list()
        assert b"erased-reader" in e.snapshots.repo.read(before)
        e.delete_user("erased-reader")
        # Every older snapshot is gone at once; the scheduler writes a new one at its next poll.
        assert _wait(lambda: [i.header["erasures"] for i in e.snapshots.repo.list()] == [1])
        (after,) = e.snapshots.repo.list()
        assert after.log_seq == e.store.last_event_seq() and after.header["erasures"] == 1
        assert b"erased-reader" not in e.snapshots.repo.read(after)
        expected = served(e, ["u1", "erased-reader"])
    no_refit(monkeypatch)
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.user_state("erased-reader").is_cold
        assert served(again, ["u1", "erased-reader"]) == expected


def test_a_snapshot_taken_before_an_erasure_is_refused(tmp_path, encoder, books, caplog):
    """A replica that wrote a snapshot before another one erased a user: that snapshot is not loaded."""
    s, url, ids = in_a_directory(tmp_path, books, 100)
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:100])
        e.record_many(events(100, ids, seed=40) + [Event(user="gone", item=ids[0], id="g1", timestamp=T0)])
        e.snapshot()
        keep = [(p.name, p.read_bytes()) for p in (tmp_path / "snaps").iterdir()]
        e.delete_user("gone")
    for name, data in keep:  # as if written by a replica that had not heard of the erasure yet
        (tmp_path / "snaps" / name).write_bytes(data)
    caplog.set_level(logging.WARNING, logger="liverec.snapshot")
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.user_state("gone").is_cold and "gone" not in again.learners["als"].__dict__.get("users_", {})
    assert "refused: taken before a user was erased" in caplog.text
    assert all(i.header["erasures"] == 1 for i in DirSnapshots(tmp_path / "snaps").list())  # pruned


def test_in_memory_store_writes_no_snapshots(encoder, books):
    with Engine.open(settings=Settings(encoder_progress=False), encoder=encoder) as e:
        e.add_items(books[:50])
        e.record_many(events(20, [b.id for b in books[:50]], seed=50))
        e.fit()
        assert not e.snapshots.enabled and e.snapshot() is None


def _wait(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_a_replica_snapshots_what_the_log_holds(tmp_path, encoder, books, monkeypatch):
    """A replica first learns what other engines appended, so its snapshot's position is the log's end."""
    s = Settings(**QUIET)
    url = f"sqlite:///{tmp_path / 'rec.db'}"
    ids = [b.id for b in books[:100]]
    with Engine.open(url, settings=s, encoder=encoder) as writer:
        writer.add_items(books[:100])
        replica = Engine.open(url, settings=s, encoder=encoder)
        replica.replicated = True
        writer.record_many(events(80, ids, seed=60))
        replica.record_many(events(20, ids, seed=61, t=500))  # its own, learned at record time
        info = replica.snapshot()
        assert info is not None and info.log_seq == replica.store.last_event_seq() == 100
        expected = served(replica, ["u1", "u2"])
        replica.close()
    no_refit(monkeypatch)
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert served(again, ["u1", "u2"]) == expected


def test_the_scheduler_writes_by_time_only_when_the_log_grew():
    taken = []
    sch = snapshot_module.Scheduler(lambda: taken.append(1), lambda: 10, every_events=0, interval_s=0.2)
    sch.wrote(10)
    time.sleep(0.25)
    assert not sch.due(10)  # nothing new since the last snapshot
    assert sch.due(11)
    sch.request()
    assert sch.due(10)  # asked for (after an erasure), whatever the counts


def test_the_scheduler_spaces_snapshots_by_count_to_a_share_of_the_time():
    now, position, taken = [100.0], [0], []

    def take():  # a snapshot that takes 2 s and is written at the log's end
        now[0] += 2.0
        taken.append(position[0])
        sch.wrote(position[0])
        return object()

    sch = snapshot_module.Scheduler(take, lambda: position[0], every_events=1000, interval_s=0,
                                    clock=lambda: now[0])
    position[0] = 1000
    sch.poll()
    assert taken == [1000]  # the first by count alone
    wait = 2.0 / snapshot_module.MAX_DUTY  # 40 s from the start of one 2-s snapshot to the next
    position[0] = 5000  # heavy ingestion: five times the count, soon after
    for t in (110.0, 100.0 + wait - 0.1):
        now[0] = t
        sch.poll()
    assert taken == [1000]
    now[0] = 100.0 + wait
    sch.poll()
    assert taken == [1000, 5000]
    position[0] = 5500
    now[0] += 1000.0
    sch.poll()
    assert taken == [1000, 5000]  # the count still has to be reached
    sch.request()  # asked for (after an erasure): at once
    sch.poll()
    assert taken == [1000, 5000, 5500]


def test_a_snapshot_of_an_older_format_is_refused_and_the_node_refits(tmp_path, encoder, books, monkeypatch, caplog):
    s, url, ids = in_a_directory(tmp_path, books, 100)
    monkeypatch.setattr(snapshot_module, "FORMAT_VERSION", snapshot_module.FORMAT_VERSION - 1)
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:100])
        e.record_many(events(100, ids, seed=9))
        assert e.snapshot() is not None
    monkeypatch.undo()
    caplog.set_level(logging.INFO, logger="liverec.snapshot")
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.snapshots.log_seq == 100  # the re-fit wrote one in today's format
    old, new = snapshot_module.FORMAT_VERSION - 1, snapshot_module.FORMAT_VERSION
    assert f"refused: written with snapshot format {old}, this node has {new}" in caplog.text
    assert "re-fitting from the whole event log" in caplog.text


def test_per_user_tables_are_packed_and_come_back_equal():
    rng = np.random.default_rng(0)
    profiles = {f"u{j}": rng.random(8) for j in range(100)}
    nested = {f"u{j}": {int(i): float(rng.random()) for i in rng.integers(0, 50, size=j % 7)} for j in range(100)}
    recent = {f"u{j}": dict.fromkeys([j, j + 1]) for j in range(100)}
    ms = snapshot_module.ModelSet(
        5, 0, ["a"], {"x": (object, {"profiles_": profiles, "hist_": nested, "recent_": recent, "small_": {"u": {1: 1.0}},
                                     "mixed_": {f"u{j}": np.zeros(j % 3 + 1) for j in range(100)}})},
        {}, None,
    )
    state = snapshot_module.ModelSet.loads(ms.dumps()).learners["x"][1]
    assert list(state["profiles_"]) == list(profiles)
    assert all(np.array_equal(state["profiles_"][u], profiles[u]) for u in profiles)
    assert all(a.flags.writeable and a.dtype == np.float64 for a in state["profiles_"].values())
    assert type(state["small_"]) is dict and state["small_"] == {"u": {1: 1.0}}  # small: as it was
    assert all(np.array_equal(state["mixed_"][u], np.zeros(int(u[1:]) % 3 + 1)) for u in state["mixed_"])
    hist = state["hist_"]
    assert isinstance(hist, snapshot_module.LazyTable) and hist == nested and list(hist) == list(nested)
    assert state["recent_"] == recent and list(state["recent_"]["u3"]) == [3, 4]


def test_a_lazy_table_decodes_on_read_and_keeps_changes():
    table = snapshot_module.LazyTable.of({f"u{j}": {j: float(j)} for j in range(5)})
    table.setdefault("u1", {})[7] = 1.0  # a learner's in-place update of a decoded dict
    table.setdefault("new", {})[3] = 2.0
    assert table["u1"] == {1: 1.0, 7: 1.0} and table.get("new") == {3: 2.0} and table.get("none") is None
    assert table.pop("u2") == {2: 2.0} and table.pop("u2", None) is None and "u2" not in table
    again = pickle.loads(pickle.dumps(table))  # undecoded values stay encoded, changes are kept
    expected = {"u0": {0: 0.0}, "u1": {1: 1.0, 7: 1.0}, "u3": {3: 3.0}, "u4": {4: 4.0}, "new": {3: 2.0}}
    assert again == expected and dict(again) == expected and {**again} == expected
    assert [(k, v) for k, v in again.items()] == list(expected.items()) and len(again) == 5


def test_users_restored_from_a_snapshot_are_built_when_first_read():
    users = {f"u{j}": (tuple((f"b{j}", "click", 1.0, float(t), f"e{j}-{t}", {"p": t} if t else None)
                             for t in range(j % 4)), list(range(j % 4))) for j in range(100)}
    ms = snapshot_module.ModelSet.loads(snapshot_module.ModelSet(5, 0, [], {}, users, None).dumps())
    state = ms.build_users(history_length=2)
    assert len(state.users) == 100 and state.version("u7") > 0
    assert [e.timestamp for e in state.state("u7").history] == [1.0, 2.0] and state.seen("u7") == {0, 1, 2}
    assert state.state("u7").history[0].context == {"p": 1} and state.seen("u4") == set()
    records = {u: (rows, seen) for u, rows, seen in state.records()}
    assert records == {u: (rows, seen) for u, (rows, seen) in users.items() if rows} | {"u7": (users["u7"][0][-2:], [0, 1, 2])}


def test_a_lazy_table_read_by_many_threads_decodes_each_value_once():
    from concurrent.futures import ThreadPoolExecutor

    table = snapshot_module.LazyTable.of({f"u{j}": {j: 1.0} for j in range(200)})
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: table.setdefault(f"u{k % 200}", {}), range(2000)))
    assert all(g is table[f"u{k % 200}"] for k, g in enumerate(got))  # one object per user
