"""The impression writer: buffered rows reach the store in transactions of bounded size."""

from __future__ import annotations

from liverec.store import Store
from liverec.store import impressions as impressions_module
from liverec.store.impressions import ImpressionWriter
from liverec.store.sql import Impression


def rows(n: int) -> list[Impression]:
    return [Impression(f"r{j // 10}", f"u{j % 7}", f"b{j}", j % 10, 1.0, 1.0, "greedy", float(j)) for j in range(n)]


def test_a_backlog_is_written_a_chunk_per_transaction(tmp_path, monkeypatch) -> None:
    """A busy second's backlog goes to the store WRITE_CHUNK rows at a time, so the event log's
    commits (one writer at a time) never wait for the whole backlog; nothing is lost."""
    monkeypatch.setattr(impressions_module, "WRITE_CHUNK", 100)
    store = Store.open(f"sqlite:///{tmp_path / 'rec.db'}")
    sizes: list[int] = []
    real = store.log_impressions

    def log(batch):
        sizes.append(len(batch))
        real(batch)

    monkeypatch.setattr(store, "log_impressions", log)
    writer = ImpressionWriter(store, every=3600.0)  # buffered; flushed here, not by its thread
    writer.write(rows(250))
    writer.flush()
    assert sizes == [100, 100, 50] and store.count_impressions() == 250
    writer.flush()
    assert sizes == [100, 100, 50]  # nothing buffered: no empty transaction
    writer.close()
    store.close()


def test_impressions_commit_without_waiting_for_the_disk_and_events_still_do(tmp_path, monkeypatch) -> None:
    """A SQLite file's impression transaction runs at synchronous=NORMAL (telemetry: no fsync per
    chunk), split in multi-row INSERTs of at most _SQLITE_IMPRESSION_ROWS rows; every connection
    goes back to the pool at FULL, so the event commits that follow still wait for the disk."""
    from liverec.store import sql

    monkeypatch.setattr(sql, "_SQLITE_IMPRESSION_ROWS", 40)
    store = Store.open(f"sqlite:///{tmp_path / 'rec.db'}")
    seen: list[int] = []
    real = store._telemetry_cursor

    def spy():
        ctx = real()
        cur = ctx.__enter__()
        seen.append(cur.connection.execute("PRAGMA synchronous").fetchone()[0])
        return _Exit(ctx, cur)

    monkeypatch.setattr(store, "_telemetry_cursor", spy)
    store.log_impressions(rows(130))  # 40 + 40 + 40 + 10 rows
    assert seen == [1]  # NORMAL inside the impression transaction
    got = sorted(store.iter_impressions(), key=lambda r: r.item)
    assert len(got) == 130 and {r.item for r in got} == {f"b{j}" for j in range(130)}
    with store.engine.connect() as a, store.engine.connect() as b:  # the pool's connections, back at FULL
        assert [c.exec_driver_sql("PRAGMA synchronous").scalar() for c in (a, b)] == [2, 2]
    store.close()


def test_a_failed_impression_transaction_stores_nothing_and_leaves_the_connection_at_full(tmp_path, monkeypatch) -> None:
    """The first INSERT of the transaction went through; the second chunk fails: neither is kept."""
    from liverec.store import sql

    monkeypatch.setattr(sql, "_SQLITE_IMPRESSION_ROWS", 3)
    store = Store.open(f"sqlite:///{tmp_path / 'rec.db'}")
    bad = rows(5) + [Impression("r", "u", "b", 0, 1.0, 1.0, "greedy", 0.0, {"x": object()})]
    try:
        store.log_impressions(bad)
    except TypeError:
        pass
    else:
        raise AssertionError("an unencodable context must raise")
    assert store.count_impressions() == 0
    with store.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    store.close()


class _Exit:
    """The context manager ``spy`` hands back: the cursor already entered, then the real exit."""

    def __init__(self, ctx, cur) -> None:
        self.ctx, self.cur = ctx, cur

    def __enter__(self):
        return self.cur

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)
