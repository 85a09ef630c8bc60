"""Where snapshots live: the store (SQLite, PostgreSQL) and a directory behave alike."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from liverec.store import Store
from liverec.store import snapshots as snapshots_module
from liverec.store.snapshots import DirSnapshots, Parts, SnapshotRepo, StoreSnapshots, snapshot_repo


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "dir"])
def repo(request, tmp_path: Path) -> Iterator[SnapshotRepo]:
    if request.param == "dir":
        yield DirSnapshots(tmp_path / "snaps")
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'rec.db'}"
    else:
        factory: Callable[[], str] = request.getfixturevalue("postgres_url")
        url = factory()
    store = Store.open(url)
    yield StoreSnapshots(store)
    store.close()


def test_write_list_read_delete(repo: SnapshotRepo, monkeypatch) -> None:
    monkeypatch.setattr(snapshots_module, "PART_BYTES", 1000)  # bodies in several parts
    bodies = {5: bytes(range(256)) * 9, 12: b"", 9: b"x" * 1000}
    infos = {seq: repo.write({"log_seq": seq, "format": 1}, body) for seq, body in bodies.items()}
    listed = repo.list()
    assert [i.log_seq for i in listed] == [12, 9, 5]  # newest first
    assert [i.size for i in listed] == [0, 1000, 2304]
    assert listed[0].header == {"log_seq": 12, "format": 1}
    for seq, info in infos.items():
        assert repo.read(info) == bodies[seq]
    repo.delete(infos[9])
    assert [i.log_seq for i in repo.list()] == [12, 5]
    assert repo.read(infos[5]) == bodies[5]


def test_directory_lists_only_complete_snapshots(tmp_path: Path) -> None:
    repo = DirSnapshots(tmp_path / "snaps")
    info = repo.write({"log_seq": 3}, b"body")
    (tmp_path / "snaps" / f"{info.key}.body").unlink()  # a header whose body is gone
    (tmp_path / "snaps" / "liverec-000000000000004-1.body").write_bytes(b"no header: half written")
    (tmp_path / "snaps" / "liverec-000000000000005-1.json").write_text("{not json")
    assert repo.list() == []


def test_where_snapshots_go(tmp_path: Path) -> None:
    memory = Store.open("sqlite://")
    file = Store.open(f"sqlite:///{tmp_path / 'f.db'}")
    assert snapshot_repo(memory, None) is None  # dies with the process: nothing to restart from
    assert isinstance(snapshot_repo(memory, str(tmp_path / "d")), DirSnapshots)
    beside = snapshot_repo(file, None)  # SQLite's one writer must not wait for a snapshot
    assert isinstance(beside, DirSnapshots) and beside.path == tmp_path / "f.db.snapshots"
    assert not beside.path.exists() and beside.list() == []  # made by the first snapshot, not before
    beside.write({"log_seq": 1}, b"body")
    assert [i.log_seq for i in beside.list()] == [1]
    memory.close()
    file.close()


@pytest.mark.postgres
def test_a_server_database_keeps_snapshots_in_its_own_tables(postgres_url) -> None:
    store = Store.open(postgres_url())  # every replica finds them with no extra setting
    assert isinstance(snapshot_repo(store, None), StoreSnapshots)
    store.close()


def test_a_directory_snapshot_reaches_the_disk_a_chunk_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Each SYNC_CHUNK of a body is flushed before the next is written, so a large snapshot never
    leaves hundreds of MB for one fsync that the event log's commits would wait behind."""
    monkeypatch.setattr(snapshots_module, "SYNC_CHUNK", 1000)
    synced: list[int] = []
    real = snapshots_module.os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(snapshots_module.os.fstat(fd).st_size)
        real(fd)

    monkeypatch.setattr(snapshots_module.os, "fdatasync", fdatasync)
    repo = DirSnapshots(tmp_path / "snaps")
    body = bytes(range(256)) * 10  # 2,560 bytes: three chunks, the last flushed by the closing fsync
    info = repo.write({"log_seq": 1, "format": 1}, memoryview(body))
    assert synced == [1000, 2000]
    assert repo.read(info) == body
    synced.clear()  # in parts: flushed once a chunk's worth is written, not after every small part
    info = repo.write({"log_seq": 2, "format": 1}, Parts([body[:10], body[10:1500], b"", body[1500:]]))
    assert synced == [1010, 2500]
    assert repo.read(info) == body


def test_a_body_in_parts_reads_back_whole(repo: SnapshotRepo, monkeypatch) -> None:
    monkeypatch.setattr(snapshots_module, "PART_BYTES", 1000)
    body = bytes(range(256)) * 9
    info = repo.write({"log_seq": 4, "format": 1}, Parts([body[:7], memoryview(body)[7:1800], b"", body[1800:]]))
    assert repo.list()[0].size == len(body)
    assert repo.read(info) == body
