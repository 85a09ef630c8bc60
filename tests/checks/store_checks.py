"""The store contract: one set of checks every storage backend must pass.

Like Gorse's storage tests, the same methods run against each backend. A backend's
test module subclasses :class:`StoreContract` and provides a function-scoped
``store`` fixture yielding a fresh, empty :class:`~liverec.store.Store`, and sets:

``persistent``
    ``Store.open(store.url)`` opens the same data again (False for ``sqlite://``).
``concurrent_writers``
    the store may be written from several threads at once.

:class:`StoreOpenChecks` holds the backend-independent checks of ``Store.open``.
Direct table checks go through ``store.engine`` with plain SQL text, so they do not
trust the store's own read path.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from liverec import Event, Item
from liverec.errors import StoreError
from liverec.store import Impression, Store
from liverec.store import schema as S


def ev(id: str, user: str = "u1", item: str = "i1", ts: float = 1000.0, **kw: Any) -> Event:
    return Event(user=user, item=item, id=id, timestamp=ts, **kw)


def sql(store: Store, query: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of a raw SQL query run directly on the store's database."""
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(query), params)]


def scalar(store: Store, query: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


HOSTILE = [
    "O'Brien",
    'say "hi"',
    "'; DROP TABLE events; --",
    "Robert'); DROP TABLE users; --",
    "%s %(x)s ? :param $1",
    "back\\slash\\' \\\"",
    "tab\tnew\nline",
    "ünïcødé 日本語 🎉 ‮rtl",
    "x" * 256,
    "日" * 256,
    "'" * 256,
]


class StoreContract:
    """Checks every backend must pass. Subclasses provide a ``store`` fixture."""

    persistent: bool = True
    concurrent_writers: bool = True

    # ----------------------------------------------------------- schema/migrate
    def test_schema_version_is_set(self, store: Store) -> None:
        assert S.SCHEMA_VERSION >= 1
        assert store.schema_version == S.SCHEMA_VERSION
        rows = sql(store, "SELECT key, value FROM liverec_meta WHERE key = 'schema_version'")
        assert rows == [("schema_version", str(S.SCHEMA_VERSION))]
        for table in ("items", "users", "events", "impressions", "vectors", "snapshots", "api_keys"):
            assert scalar(store, f"SELECT count(*) FROM {table}") == 0

    def test_reopen_does_not_remigrate(self, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
        calls: list[int] = []
        real = S.MIGRATIONS[0]

        def spy(conn: sa.Connection) -> None:
            calls.append(1)
            real(conn)

        monkeypatch.setattr(S, "MIGRATIONS", [spy, *S.MIGRATIONS[1:]])
        # Positive control: a brand-new database does run the (spied) migration.
        fresh = Store.open("sqlite://")
        try:
            assert calls == [1]
        finally:
            fresh.close()
        calls.clear()

        store.upsert_items([Item("b", "B"), Item("a", "A")], now=1.0)
        store.append_events([ev("e1"), ev("e2")])

        again = Store(store.engine, store.url)  # same database, migrate runs again
        assert calls == []
        assert again.schema_version == S.SCHEMA_VERSION
        assert scalar(store, "SELECT count(*) FROM liverec_meta WHERE key = 'schema_version'") == 1
        assert [i.id for i in again.iter_items()] == ["b", "a"]
        assert again.count_events() == 2

        if self.persistent:
            reopened = Store.open(store.url)
            try:
                assert calls == []
                assert reopened.schema_version == S.SCHEMA_VERSION
                assert [i.id for i in reopened.iter_items()] == ["b", "a"]
                assert reopened.has_event("e2")
            finally:
                reopened.close()

    def test_newer_schema_version_refuses_to_open(self, store: Store) -> None:
        newer = S.SCHEMA_VERSION + 1
        with store.engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE liverec_meta SET value = :v WHERE key = 'schema_version'"),
                {"v": str(newer)},
            )
        with pytest.raises(StoreError, match=rf"schema version {newer}.*Upgrade liverec"):
            Store(store.engine, store.url)
        if self.persistent:
            with pytest.raises(StoreError, match="newer than this liverec"):
                Store.open(store.url)
        # Refusing must not have "migrated" the version down.
        assert scalar(store, "SELECT value FROM liverec_meta WHERE key = 'schema_version'") == str(newer)

    # -------------------------------------------------------------------- items
    def test_items_upsert_keeps_seq_and_created(self, store: Store) -> None:
        store.upsert_items(
            [Item("c", "see", {"year": 1937}), Item("a", "ay"), Item("b", "bee", {"tags": ["x"]})],
            now=100.0,
        )
        before = {i.id: i for i in store.iter_items()}
        assert set(before) == {"a", "b", "c"}
        assert before["c"].created == before["c"].updated == 100.0

        store.upsert_items(
            [Item("a", "ay v2", {"year": 2000, "nested": {"k": [1, 2.5, None]}}), Item("d", "dee")],
            now=200.0,
        )
        a = store.get_item("a")
        assert a is not None
        assert a.text == "ay v2"
        assert dict(a.attributes) == {"year": 2000, "nested": {"k": [1, 2.5, None]}}
        assert a.seq == before["a"].seq
        assert a.created == 100.0
        assert a.updated == 200.0
        # Untouched items are untouched.
        c = store.get_item("c")
        assert c is not None and (c.text, dict(c.attributes), c.updated) == ("see", {"year": 1937}, 100.0)
        d = store.get_item("d")
        assert d is not None and d.created == d.updated == 200.0
        assert d.seq > max(i.seq for i in before.values())
        assert store.count_items() == 4
        assert a.to_item() == Item("a", "ay v2", {"year": 2000, "nested": {"k": [1, 2.5, None]}})

    def test_iter_items_in_seq_order(self, store: Store) -> None:
        ids = ["m", "z", "a", "q", "b"]
        for n, i in enumerate(ids):  # one batch per item: seq follows insertion
            store.upsert_items([Item(i, f"text {i}")], now=float(n))
        store.upsert_items([Item("k", "batch"), Item("c", "batch")], now=9.0)
        got = list(store.iter_items())
        assert [i.id for i in got] == ids + ["k", "c"]
        seqs = [i.seq for i in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        # An update does not move an item to the end.
        store.upsert_items([Item("m", "updated")], now=10.0)
        assert [i.id for i in store.iter_items()] == ids + ["k", "c"]

    def test_get_item_and_missing(self, store: Store) -> None:
        store.upsert_items([Item("x", "the x", {"genre": "sf", "n": 3})], now=5.0)
        got = store.get_item("x")
        assert got is not None
        assert (got.id, got.text, dict(got.attributes), got.created) == ("x", "the x", {"genre": "sf", "n": 3}, 5.0)
        assert store.get_item("y") is None
        assert store.get_item("X") is None  # ids are case-sensitive

    def test_delete_items(self, store: Store) -> None:
        ids = [f"it{n:05d}" for n in range(1200)]  # more than one IN (...) chunk
        store.upsert_items([Item(i, i) for i in ids], now=1.0)
        store.append_events([ev("e1", item="it00000")])
        doomed = ids[::2] + ["nope", "also-nope"]
        assert store.delete_items(doomed) == 600
        assert store.count_items() == 600
        assert [i.id for i in store.iter_items()] == ids[1::2]
        assert store.get_item("it00000") is None
        assert store.get_item("it00001") is not None
        assert store.has_event("e1")  # events stay in the log
        assert store.delete_items([]) == 0
        assert store.delete_items(["it00000"]) == 0

    # ------------------------------------------------------------------- events
    def test_append_events_idempotent_within_batch(self, store: Store) -> None:
        batch = [ev("a", ts=1.0), ev("b", ts=2.0), ev("a", ts=3.0, item="other"), ev("c"), ev("b")]
        assert store.append_events(batch) == [0, 1, 3]
        assert store.count_events() == 3
        assert scalar(store, "SELECT count(*) FROM events WHERE id = 'a'") == 1
        # The first occurrence wins.
        assert sql(store, "SELECT item_id, ts FROM events WHERE id = 'a'") == [("i1", 1.0)]
        assert store.append_events([]) == []

    def test_append_events_idempotent_across_batches(self, store: Store) -> None:
        assert store.append_events([ev("a"), ev("b")]) == [0, 1]
        assert store.append_events([ev("c"), ev("a"), ev("d"), ev("b"), ev("c")]) == [0, 2]
        assert store.append_events([ev("a"), ev("b"), ev("c"), ev("d")]) == []
        assert store.count_events() == 4
        ids = [e.id for _, e in store.iter_events()]
        assert ids == ["a", "b", "c", "d"]
        assert sql(store, "SELECT id, count(*) FROM events GROUP BY id HAVING count(*) > 1") == []

    def test_event_round_trip(self, store: Store) -> None:
        e = Event(
            user="u", item="i", kind="rating", value=4.5, timestamp=1_700_000_000.123456,
            id="rt", context={"device": "phone", "pos": 3},
        )
        store.append_events([e])
        [(seq, got)] = list(store.iter_events())
        assert got == e
        assert seq == store.last_event_seq()

    def test_iter_events_after_seq_paging(self, store: Store) -> None:
        events = [ev(f"e{n}", user=f"u{n % 3}", ts=float(100 - n)) for n in range(10)]
        store.append_events(events)
        # islice guards against a paging bug looping forever.
        got = list(itertools.islice(store.iter_events(batch_size=3), 100))
        assert [e for _, e in got] == events  # append order, not timestamp order
        seqs = [s for s, _ in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 10

        after = seqs[3]
        rest = list(itertools.islice(store.iter_events(after_seq=after, batch_size=3), 100))
        assert [e.id for _, e in rest] == [f"e{n}" for n in range(4, 10)]
        assert [s for s, _ in rest] == seqs[4:]
        # Exactly a multiple of the page size, and past the end.
        assert len(list(itertools.islice(store.iter_events(after_seq=seqs[0], batch_size=3), 100))) == 9
        assert list(store.iter_events(after_seq=seqs[-1], batch_size=3)) == []
        # Newly appended events continue after the cursor.
        store.append_events([ev("late")])
        assert [e.id for _, e in store.iter_events(after_seq=seqs[-1])] == ["late"]

    def test_iter_events_user_filter(self, store: Store) -> None:
        store.append_events([ev(f"e{n}", user="a" if n % 3 == 0 else "b") for n in range(10)])
        got = list(itertools.islice(store.iter_events(user="a", batch_size=2), 100))
        assert [e.id for _, e in got] == ["e0", "e3", "e6", "e9"]
        assert all(e.user == "a" for _, e in got)
        after = got[1][0]
        assert [e.id for _, e in store.iter_events(user="a", after_seq=after, batch_size=1)] == ["e6", "e9"]
        assert list(store.iter_events(user="nobody")) == []

    def test_user_events_ordered_by_timestamp_then_append(self, store: Store) -> None:
        store.append_events([ev("z-late", ts=50.0), ev("y-tie-1", ts=10.0), ev("other", user="u2", ts=1.0)])
        store.append_events([ev("x-first", ts=5.0), ev("b-tie-2", ts=10.0), ev("a-tie-3", ts=10.0)])
        got = store.user_events("u1")
        assert [e.id for e in got] == ["x-first", "y-tie-1", "b-tie-2", "a-tie-3", "z-late"]
        assert [e.id for e in store.user_events("u2")] == ["other"]
        assert store.user_events("ghost") == []

    def test_has_count_last_seq(self, store: Store) -> None:
        assert store.count_events() == 0
        assert store.last_event_seq() == 0
        assert not store.has_event("a")
        store.append_events([ev("a"), ev("b"), ev("c")])
        assert store.has_event("a") and store.has_event("c")
        assert not store.has_event("d") and not store.has_event("A")
        assert store.count_events() == 3
        last = store.last_event_seq()
        assert last == max(s for s, _ in store.iter_events())
        assert last == scalar(store, "SELECT max(seq) FROM events")
        store.append_events([ev("a")])  # a duplicate stores nothing
        assert store.count_events() == 3
        assert store.last_event_seq() == last
        store.append_events([ev("d")])
        assert store.last_event_seq() > last
        assert [e.id for _, e in store.iter_events(after_seq=last)] == ["d"]

    def test_context_json_round_trip(self, store: Store) -> None:
        ctx = {
            "device": {"os": "Android", "version": [14, 2], "dark": True},
            "city": "Zürich – 東京 🚀",
            "quote": "it's \"quoted\"",
            "none": None,
            "score": 0.125,
            "big": 2**53,
            "deep": {"a": {"b": {"c": [{"d": "e"}, [], {}]}}},
        }
        store.append_events([ev("ctx", context=ctx), ev("empty")])
        by_id = {e.id: e for _, e in store.iter_events()}
        assert dict(by_id["ctx"].context) == ctx
        assert dict(by_id["empty"].context) == {}
        assert dict(store.user_events("u1")[0].context) == ctx

    # -------------------------------------------------------------- impressions
    def test_impressions(self, store: Store) -> None:
        assert store.count_impressions() == 0
        rows = [
            Impression("r1", "u1", "i3", 0, 0.9, 0.5, "explore", 10.0, {"slate": ["i3", "i1"]}),
            Impression("r1", "u1", "i1", 1, 0.7, 0.25, "explore", 10.0, {"pos": "2nd ✓"}),
            Impression("r2", "u2", "i2", 0, -0.5, 1.0, "greedy", 11.5, {}),
        ]
        store.log_impressions(rows)
        store.log_impressions([])
        assert store.count_impressions() == 3
        assert list(store.iter_impressions()) == rows
        assert list(store.iter_impressions(user="u1")) == rows[:2]
        assert list(store.iter_impressions(user="u3")) == []
        # An impression without context comes back with an empty one.
        store.log_impressions([Impression("r3", "u3", "i1", 0, 1.0, 1.0, "p", 12.0)])
        [got] = list(store.iter_impressions(user="u3"))
        assert dict(got.context or {}) == {} and got.request_id == "r3"
        assert store.count_impressions() == 4

    # ------------------------------------------------------------------ vectors
    def test_vectors_round_trip(self, store: Store) -> None:
        rng = np.random.default_rng(0)
        vecs = {f"h{n}": rng.standard_normal(384).astype(np.float32) for n in range(3)}
        vecs["tiny"] = np.array([np.float32(1e-45), np.float32(-0.0), np.float32(3.4e38)], dtype=np.float32)
        store.put_vectors("m1", vecs)
        got = store.get_vectors("m1", ["h0", "h1", "h2", "tiny", "missing"])
        assert set(got) == {"h0", "h1", "h2", "tiny"}
        for h, v in vecs.items():
            assert got[h].dtype == np.float32
            assert got[h].shape == v.shape
            assert got[h].tobytes() == v.tobytes()  # bit-exact
        # float64 input is stored as float32.
        v64 = rng.standard_normal(8)
        store.put_vectors("m1", {"f64": v64})
        np.testing.assert_array_equal(store.get_vectors("m1", ["f64"])["f64"], v64.astype(np.float32))
        assert sql(store, "SELECT dim FROM vectors WHERE text_hash = 'h0'") == [(384,)]

    def test_vectors_miss_duplicates_and_models(self, store: Store) -> None:
        assert store.get_vectors("m1", ["nothing"]) == {}
        assert store.get_vectors("m1", []) == {}
        v = np.arange(4, dtype=np.float32)
        store.put_vectors("m1", {"h": v})
        store.put_vectors("m1", {"h": v})  # the same cache entry again: harmless
        store.put_vectors("m1", {})
        assert store.count_vectors("m1") == 1
        assert store.get_vectors("m1", ["h", "h"])["h"].tolist() == [0.0, 1.0, 2.0, 3.0]
        # Same hash under another model is a different entry.
        assert store.get_vectors("m2", ["h"]) == {}
        store.put_vectors("m2", {"h": v * 2, "g": v})
        assert store.count_vectors("m1") == 1
        assert store.count_vectors("m2") == 2
        assert store.count_vectors() == 3
        assert store.count_vectors("m3") == 0
        assert store.get_vectors("m2", ["h"])["h"].tolist() == [0.0, 2.0, 4.0, 6.0]
        assert store.get_vectors("m1", ["h"])["h"].tolist() == [0.0, 1.0, 2.0, 3.0]

    def test_vectors_many_hashes(self, store: Store) -> None:
        vecs = {f"{n:064x}": np.full(2, n, dtype=np.float32) for n in range(1100)}  # > one chunk
        store.put_vectors("m", vecs)
        got = store.get_vectors("m", list(vecs) + ["absent"])
        assert len(got) == 1100
        assert all(got[h][0] == v[0] for h, v in vecs.items())

    # ---------------------------------------------------------------- snapshots
    def test_snapshots(self, store: Store) -> None:
        assert store.get_snapshot("model") is None
        payload = bytes(range(256)) * 4 + b"\x00\x00end"
        store.put_snapshot("model", payload, 42)
        assert store.get_snapshot("model") == (payload, 42)
        big_seq = 2**40  # needs a 64-bit column
        store.put_snapshot("model", b"v2", big_seq)
        assert store.get_snapshot("model") == (b"v2", big_seq)
        store.put_snapshot("other", b"", 0)
        assert store.get_snapshot("other") == (b"", 0)
        assert store.get_snapshot("model") == (b"v2", big_seq)
        assert scalar(store, "SELECT count(*) FROM snapshots") == 2
        store.delete_snapshots()
        assert store.get_snapshot("model") is None and store.get_snapshot("other") is None

    # -------------------------------------------------------------------- users
    def test_interests(self, store: Store) -> None:
        assert store.get_interests("u1") is None
        assert list(store.iter_interests()) == []
        store.set_interests("u2", "jazz, vinyl", now=1.0)
        store.set_interests("u1", "rock", now=1.0)
        store.set_interests("u3", "hiking", now=1.0)
        assert store.get_interests("u1") == "rock"
        assert list(store.iter_interests()) == [("u1", "rock"), ("u2", "jazz, vinyl"), ("u3", "hiking")]
        store.set_interests("u1", "rock, folk", now=2.0)
        assert store.get_interests("u1") == "rock, folk"
        assert sql(store, "SELECT created, updated FROM users WHERE id = 'u1'") == [(1.0, 2.0)]
        store.set_interests("u2", None, now=3.0)  # clearing
        assert store.get_interests("u2") is None
        assert list(store.iter_interests()) == [("u1", "rock, folk"), ("u3", "hiking")]
        store.set_interests("u4", None)  # clearing an unknown user is fine
        assert store.get_interests("u4") is None
        assert [u for u, _ in store.iter_interests()] == ["u1", "u3"]
        store.set_interests("u2", "back again")
        assert store.get_interests("u2") == "back again"

    def test_delete_user(self, store: Store) -> None:
        store.upsert_items([Item("i1"), Item("u1", "an item whose id is a user's")])
        store.append_events(
            [ev(f"a{n}", user="u1", item="i1") for n in range(5)]
            + [ev(f"b{n}", user="u2", item="u1") for n in range(3)]  # item id == "u1"
            + [ev("c0", user="u10")]  # a prefix-sharing user
        )
        store.log_impressions(
            [Impression("r1", "u1", "i1", n, 1.0, 0.5, "p", 1.0, {}) for n in range(4)]
            + [Impression("r2", "u2", "u1", 0, 1.0, 0.5, "p", 1.0, {"u": "u1"})]
        )
        store.set_interests("u1", "secret")
        store.set_interests("u2", "public")

        assert store.counter("erasures") == 0
        counts = store.delete_user("u1")
        assert counts == {"events": 5, "impressions": 4, "users": 1, "erasure_epoch": 1}
        assert store.counter("erasures") == 1  # replicas notice erasures by this counter

        assert scalar(store, "SELECT count(*) FROM events WHERE user_id = 'u1'") == 0
        assert scalar(store, "SELECT count(*) FROM impressions WHERE user_id = 'u1'") == 0
        assert scalar(store, "SELECT count(*) FROM users WHERE id = 'u1'") == 0
        assert sorted(r[0] for r in sql(store, "SELECT id FROM events")) == ["b0", "b1", "b2", "c0"]
        assert sql(store, "SELECT user_id, item_id FROM impressions") == [("u2", "u1")]
        assert sql(store, "SELECT id, interests FROM users") == [("u2", "public")]
        assert store.get_item("u1") is not None  # items are not user data
        assert store.user_events("u1") == [] and len(store.user_events("u2")) == 3
        # Deleting again (or an unknown user) deletes nothing.
        assert store.delete_user("u1") == {"events": 0, "impressions": 0, "users": 0, "erasure_epoch": 2}
        assert store.count_events() == 4 and store.count_impressions() == 1

    def test_an_erased_users_last_seq_is_never_handed_out_again(self, store: Store) -> None:
        """A replica's cursor (or a fit) already past the erased events must read the next
        event: its seq is above every seq ever given."""
        store.append_events([ev("a0", user="u1"), ev("b0", user="u2"), ev("b1", user="u2")])
        top = store.last_event_seq()
        store.delete_user("u2")  # the log's last events
        store.append_events([ev("c0", user="u3")])
        assert [e.id for _, e in store.iter_events(after_seq=top)] == ["c0"]

    # ---------------------------------------------------------- hostile strings
    def test_hostile_strings_stored_verbatim(self, store: Store) -> None:
        for h in HOSTILE:
            assert len(h) <= 256
        store.upsert_items([Item(h, h, {h: h}) for h in HOSTILE], now=1.0)
        store.append_events([Event(user=h, item=h, id=h, timestamp=1.0, context={h: h}) for h in HOSTILE])
        store.log_impressions([Impression(h[:64], h, h, 0, 1.0, 1.0, h[:64], 1.0, {h: h}) for h in HOSTILE])
        for h in HOSTILE:
            store.set_interests(h, h)
        store.put_vectors(HOSTILE[2], {h[:64]: np.ones(2, dtype=np.float32) for h in HOSTILE})
        store.put_snapshot(HOSTILE[2][:128], HOSTILE[2].encode(), 7)

        # Nothing was dropped or executed.
        assert store.count_items() == len(HOSTILE)
        assert store.count_events() == len(HOSTILE)
        assert scalar(store, "SELECT count(*) FROM events") == len(HOSTILE)
        assert scalar(store, "SELECT count(*) FROM users") == len(HOSTILE)

        for h in HOSTILE:
            item = store.get_item(h)
            assert item is not None and item.id == h and item.text == h and dict(item.attributes) == {h: h}
            assert store.has_event(h)
            [e] = store.user_events(h)
            assert (e.id, e.user, e.item, dict(e.context)) == (h, h, h, {h: h})
            assert store.get_interests(h) == h
            [imp] = store.iter_impressions(user=h)
            assert (imp.request_id, imp.item, imp.policy) == (h[:64], h, h[:64])
        stored = {r[0]: r for r in sql(store, "SELECT id, user_id, item_id FROM events")}
        assert set(stored) == set(HOSTILE)
        assert all(stored[h] == (h, h, h) for h in HOSTILE)
        assert {r[0] for r in sql(store, "SELECT id FROM items")} == set(HOSTILE)
        assert len(store.get_vectors(HOSTILE[2], [h[:64] for h in HOSTILE])) == len({h[:64] for h in HOSTILE})
        assert store.get_snapshot(HOSTILE[2][:128]) == (HOSTILE[2].encode(), 7)
        # Deleting a hostile user removes exactly that user.
        assert store.delete_user(HOSTILE[2]) == {"events": 1, "impressions": 1, "users": 1, "erasure_epoch": 1}
        assert store.count_events() == len(HOSTILE) - 1
        assert store.delete_items([HOSTILE[3]]) == 1 and store.count_items() == len(HOSTILE) - 1

    # --------------------------------------------------------------------- bulk
    def test_bulk_append(self, store: Store) -> None:
        n = 20_000
        events = [
            Event(user=f"u{k % 97}", item=f"i{k % 1013}", id=f"bulk-{k}", timestamp=float(k), value=float(k % 5))
            for k in range(n)
        ]
        assert store.append_events(events) == list(range(n))
        assert store.count_events() == n
        assert scalar(store, "SELECT count(DISTINCT id) FROM events") == n
        got = list(store.iter_events(batch_size=7_000))
        assert len(got) == n
        assert [e.id for _, e in got] == [e.id for e in events]
        assert got[-1][0] == store.last_event_seq()
        assert got[12_345][1] == events[12_345]
        assert len(store.user_events("u5")) == len([e for e in events if e.user == "u5"])
        # Re-appending everything (plus a few new) stores only the new ones.
        more = events[::-1] + [ev("new-1"), ev("new-2")]
        assert store.append_events(more) == [n, n + 1]
        assert store.count_events() == n + 2

    def test_head_tells_other_processes_what_moved(self, store: Store) -> None:
        assert store.head() == (0, 0)
        store.append_events([ev("e1"), ev("e2")])
        seq, changes = store.head()
        assert seq == store.last_event_seq() and changes == 0
        store.upsert_items([Item("a", "A")])
        store.set_interests("u1", "cats")
        store.delete_items(["nope"])  # nothing deleted: nothing changed
        assert store.head() == (seq, 2)
        store.delete_items(["a"])
        assert store.head()[1] == 3

    def test_changed_since_feeds_replicas(self, store: Store) -> None:
        store.upsert_items([Item("a", "A"), Item("b", "B")], now=100.0)
        store.upsert_items([Item("b", "B2")], now=200.0)
        assert [i.id for i in store.items_changed_since(150.0)] == ["b"]
        assert [i.id for i in store.items_changed_since(0.0)] == ["a", "b"]
        assert store.item_ids() == {"a", "b"}
        assert store.item_versions_since(150.0) == [("b", 200.0)]
        assert [i.text for i in store.get_items(["b", "zz", "a"])] == ["A", "B2"]
        store.set_interests("u1", "cats", now=100.0)
        store.set_interests("u2", "dogs", now=200.0)
        store.set_interests("u1", None, now=300.0)
        assert sorted(store.interests_changed_since(150.0)) == [("u1", None), ("u2", "dogs")]

    # ----------------------------------------------------------------- API keys
    def test_api_keys_hashed_roundtrip(self, store: Store) -> None:
        h1, h2 = "a" * 64, "b" * 64
        store.add_api_key("ci", "write", h1)
        store.add_api_key("O'Brien", "admin", h2)
        assert store.find_api_key(h1) == ("ci", "write")
        assert store.find_api_key(h2) == ("O'Brien", "admin")
        assert store.find_api_key("c" * 64) is None
        assert [(n, r) for n, r, _ in store.list_api_keys()] == [("O'Brien", "admin"), ("ci", "write")]
        with pytest.raises(StoreError, match="already exists"):
            store.add_api_key("ci", "read", "d" * 64)
        with pytest.raises(StoreError, match="already exists"):
            store.add_api_key("other", "read", h1)  # same hash twice
        assert store.delete_api_key("ci") is True
        assert store.delete_api_key("ci") is False
        assert store.find_api_key(h1) is None
        assert sql(store, "SELECT name, role, key_hash FROM api_keys") == [("O'Brien", "admin", h2)]

    def test_migrates_a_v4_store_to_one_user_index_and_none_by_item(self, store: Store) -> None:
        """Stores before schema 5 had an index on events.user_id besides (user_id, ts), and
        before schema 6 one on events.item_id, which no query reads: both go, and a user's
        events are still read and erased through (user_id, ts)."""
        store.append_events([ev("e1"), ev("e2", user="v", ts=1001.0)])
        with store.engine.begin() as conn:
            conn.execute(sa.text("CREATE INDEX ix_events_user_id ON events (user_id)"))
            conn.execute(sa.text("CREATE INDEX ix_events_item_id ON events (item_id)"))
            conn.execute(sa.text("UPDATE liverec_meta SET value = '4' WHERE key = 'schema_version'"))
        again = Store(store.engine, store.url)
        assert again.schema_version == S.SCHEMA_VERSION
        names = {ix["name"] for ix in sa.inspect(again.engine).get_indexes("events")}
        assert not names & {"ix_events_user_id", "ix_events_item_id"} and "ix_events_user_ts" in names
        assert [e.id for _, e in again.iter_events(user="v")] == ["e2"]
        again.delete_user("v")
        assert [e.id for _, e in again.iter_events()] == ["e1"]

    def test_migrates_a_v1_store(self, store: Store) -> None:
        """A store created before API keys existed gains the table and keeps its data."""
        store.append_events([ev("e1")])
        with store.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE api_keys"))
            conn.execute(sa.text("UPDATE liverec_meta SET value = '1' WHERE key = 'schema_version'"))
        again = Store(store.engine, store.url)
        assert again.schema_version == S.SCHEMA_VERSION
        again.add_api_key("k", "read", "e" * 64)
        assert again.find_api_key("e" * 64) == ("k", "read")
        assert again.has_event("e1")

    # -------------------------------------------------------------- concurrency
    def test_concurrent_overlapping_appends(self, store: Store) -> None:
        if not self.concurrent_writers:
            pytest.skip("this backend is not meant for concurrent writers")
        rounds, size, batch = 8, 3000, 3000
        for r in range(rounds):
            ids = [f"r{r}-e{k:05d}" for k in range(size)]
            # Overlapping sets, appended in opposite orders (the deadlock-prone case).
            plans = [ids[: size * 9 // 10], list(reversed(ids[size // 10 :]))]
            newly: list[list[str]] = [[], []]
            errors: list[BaseException] = []
            barrier = threading.Barrier(2)

            def work(k: int) -> None:
                try:
                    barrier.wait(timeout=30)
                    plan = plans[k]
                    for s in range(0, len(plan), batch):
                        chunk = plan[s : s + batch]
                        pos = store.append_events([ev(x, user=f"t{k}") for x in chunk])
                        newly[k].extend(chunk[p] for p in pos)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)
            assert not any(t.is_alive() for t in threads), "an append hung"
            assert errors == [], f"round {r}: {errors[0]!r}"
            # Each id was reported new by exactly one thread ...
            assert sorted(newly[0] + newly[1]) == ids
            # ... and is stored exactly once.
            dup = sql(store, "SELECT id FROM events GROUP BY id HAVING count(*) > 1")
            assert dup == []
            assert store.count_events() == size * (r + 1)
        assert scalar(store, "SELECT count(DISTINCT id) FROM events") == rounds * size


class StoreOpenChecks:
    """Backend-independent checks of :meth:`Store.open` errors."""

    def test_unsupported_backend(self) -> None:
        with pytest.raises(StoreError) as info:
            Store.open("mysql://x")
        msg = str(info.value)
        assert "mysql" in msg and "sqlite" in msg.lower() and "postgresql" in msg.lower()

    def test_unparseable_url(self) -> None:
        with pytest.raises(StoreError) as info:
            Store.open("nonsense")
        msg = str(info.value)
        assert "nonsense" in msg and "sqlite://" in msg and "postgresql://" in msg

    def test_unreachable_postgres(self) -> None:
        with pytest.raises(StoreError, match="cannot connect") as info:
            Store.open("postgresql://nobody@127.0.0.1:1/x")
        assert "127.0.0.1:1" in str(info.value)

    def test_none_and_empty_open_in_memory(self) -> None:
        for url in (None, ""):
            st = Store.open(url)
            try:
                assert st.dialect == "sqlite" and st.schema_version == S.SCHEMA_VERSION
                assert st.count_events() == 0
            finally:
                st.close()
