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
