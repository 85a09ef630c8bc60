"""Where versioned model snapshots live: the store's own tables, or a directory.

A snapshot is a JSON header (what it was built with, and the log position it
reflects) and an opaque body. Both places write atomically: a reader lists only
complete snapshots, never half of one.

- :class:`StoreSnapshots` keeps them in the store (``model_snapshots`` header rows,
  bodies in ``model_snapshot_parts`` of a few MiB), written in one transaction: every
  replica of a store finds them with no extra configuration.
- :class:`DirSnapshots` keeps them as files in a directory (a local disk, or any
  mounted volume or bucket): the body is written to a temporary name, flushed and
  renamed, then the header the same way; a header without its body is never listed.

Examples
--------
>>> import io
>>> from liverec.store import Store
>>> repo = StoreSnapshots(Store.open("sqlite://"))
>>> info = repo.write({"log_seq": 7, "format": 1}, b"body")
>>> [(i.log_seq, i.size) for i in repo.list()], bytes(repo.read(info))
([(7, 4)], b'body')
>>> repo.delete(info); repo.list()
[]
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import sqlalchemy as sa

from ..jobs import CHUNK, blank
from . import schema as S
from .sql import Store

log = logging.getLogger("liverec.snapshot")

#: Bytes per body part in the store (well under every backend's value limit).
PART_BYTES = 8 << 20


class Parts:
    """A body given as consecutive parts, written one after another and never joined in
    memory: a snapshot refers to arrays that stay fixed between fits (hundreds of MB for
    an EASE matrix) instead of copying them under the engine lock.

    >>> body = Parts([b"ab", memoryview(b"cde"), b""])
    >>> len(body), [bytes(c) for c in chunks(body, 2)], bytes(body.join())
    (5, [b'ab', b'cd', b'e'], b'abcde')
    """

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        self.parts = [memoryview(p).cast("B") for p in parts]
        self.nbytes = sum(p.nbytes for p in self.parts)

    def __len__(self) -> int:
        return self.nbytes

    def join(self) -> memoryview:
        """The parts in one writable buffer (a copy), made in memory that is not zero-filled
        first and copied a megabyte at a time: a body of hundreds of MB is never copied in one
        call that holds the GIL."""
        out, at = blank(self.nbytes), 0
        for chunk in chunks(self, CHUNK):
            out[at : at + chunk.nbytes] = chunk
            at += chunk.nbytes
        return out


#: A snapshot body: contiguous bytes, or :class:`Parts`.
Body = bytes | bytearray | memoryview | Parts


def chunks(body: Body, size: int) -> Iterator[memoryview]:
    """``body`` in order, as views of at most ``size`` bytes (none empty; a chunk never
    spans two of a :class:`Parts` body's parts, so nothing is copied).

    >>> [bytes(c) for c in chunks(b"abcde", 2)]
    [b'ab', b'cd', b'e']
    """
    for part in body.parts if isinstance(body, Parts) else [memoryview(body).cast("B")]:
        for at in range(0, part.nbytes, size):
            yield part[at : at + size]


@dataclass(frozen=True)
class SnapshotInfo:
    """One stored snapshot: its key in its location, log position, time, body size and header."""

    key: str
    log_seq: int
    created: float
    size: int
    header: dict[str, Any]


class SnapshotRepo(Protocol):
    """A place snapshots are written to, listed from (newest first), read and deleted."""

    def write(self, header: dict[str, Any], body: Body) -> SnapshotInfo: ...

    def list(self) -> list[SnapshotInfo]: ...

    def read(self, info: SnapshotInfo) -> bytearray: ...

    def delete(self, info: SnapshotInfo) -> None: ...


def _newest_first(infos: list[SnapshotInfo]) -> list[SnapshotInfo]:
    return sorted(infos, key=lambda i: (i.log_seq, i.created, i.key), reverse=True)


class StoreSnapshots:
    """Snapshots in the store's ``model_snapshots`` / ``model_snapshot_parts`` tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, header: dict[str, Any], body: Body) -> SnapshotInfo:
        created = time.time()
        log_seq = int(header["log_seq"])
        row = {"log_seq": log_seq, "created": created, "size": len(body), "header": json.dumps(header)}
        with self.store._begin() as conn:  # header and parts commit together, or not at all
            key = conn.execute(S.model_snapshots.insert().values(**row)).inserted_primary_key
            assert key is not None  # a single-row INSERT
            version = key[0]
            for part, data in enumerate(chunks(body, PART_BYTES)):  # read back in order, whatever their sizes
                conn.execute(S.model_snapshot_parts.insert().values(version=version, part=part, data=data))
        return SnapshotInfo(str(version), log_seq, created, len(body), header)

    def list(self) -> list[SnapshotInfo]:
        t = S.model_snapshots
        with self.store._connect() as conn:
            rows = conn.execute(sa.select(t.c.version, t.c.log_seq, t.c.created, t.c.size, t.c.header)).all()
        out = []
        for r in rows:
            try:
                header = json.loads(r.header)
            except ValueError:
                log.warning("snapshot %s in the store has an unreadable header; ignored", r.version)
                continue
            out.append(SnapshotInfo(str(r.version), int(r.log_seq), float(r.created), int(r.size), header))
        return _newest_first(out)

    def read(self, info: SnapshotInfo) -> bytearray:
        """The body, its parts copied as they arrive into one buffer of the recorded size (no
        list of parts joined afterwards: one copy of the body in memory, not two)."""
        p = S.model_snapshot_parts
        body, at = bytearray(info.size), 0
        with self.store._connect() as conn:
            for part in conn.execute(
                sa.select(p.c.data).where(p.c.version == int(info.key)).order_by(p.c.part)
            ).scalars():
                body[at : at + len(part)] = part
                at += len(part)
        if at != info.size:
            raise ValueError(f"snapshot {info.key} holds {at} bytes, its header says {info.size}")
        return body

    def delete(self, info: SnapshotInfo) -> None:
        with self.store._begin() as conn:
            conn.execute(S.model_snapshots.delete().where(S.model_snapshots.c.version == int(info.key)))
            conn.execute(S.model_snapshot_parts.delete().where(S.model_snapshot_parts.c.version == int(info.key)))


class DirSnapshots:
    """Snapshots as ``<name>.body`` + ``<name>.json`` files in one directory, created if
    missing: now (``create``: a directory a user named fails at start if it cannot be
    made), or at the first snapshot (a default place stays absent while none is written)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path).expanduser()
        if create:
            self.path.mkdir(parents=True, exist_ok=True)

    def write(self, header: dict[str, Any], body: Body) -> SnapshotInfo:
        self.path.mkdir(parents=True, exist_ok=True)
        created = time.time()
        name = f"liverec-{int(header['log_seq']):015d}-{time.time_ns()}"
        _write_atomic(self.path / f"{name}.body", body)
        _write_atomic(self.path / f"{name}.json", json.dumps(header).encode())  # last: marks it complete
        return SnapshotInfo(name, int(header["log_seq"]), created, len(body), header)

    def list(self) -> list[SnapshotInfo]:
        out = []
        for head in self.path.glob("liverec-*.json"):
            body = head.with_suffix(".body")
            try:
                header = json.loads(head.read_text())
                out.append(SnapshotInfo(head.stem, int(header["log_seq"]), head.stat().st_mtime,
                                        body.stat().st_size, header))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("snapshot %s has an unreadable header or no body; ignored", head)
        return _newest_first(out)

    def read(self, info: SnapshotInfo) -> bytearray:
        path = self.path / f"{info.key}.body"
        with path.open("rb") as f:
            body = bytearray(os.fstat(f.fileno()).st_size)
            n = f.readinto(body)
        if n != len(body):
            raise ValueError(f"snapshot {info.key}: read {n} of {len(body)} bytes")
        return body

    def delete(self, info: SnapshotInfo) -> None:
        for suffix in (".json", ".body"):  # header first: a half-deleted snapshot is never listed
            (self.path / f"{info.key}{suffix}").unlink(missing_ok=True)


#: A snapshot file is written and flushed to disk this many bytes at a time.
SYNC_CHUNK = 8 << 20


def _write_atomic(path: Path, data: Body) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The data goes to disk :data:`SYNC_CHUNK` bytes at a time, each flushed before the next is
    written (RocksDB's ``bytes_per_sync``): written at once, a snapshot of hundreds of MB
    leaves that much to flush in one ``fsync``, and every commit of the event log on the
    same disk waits behind it, for seconds.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    unsynced = 0
    with open(tmp, "wb", buffering=0) as f:
        for chunk in chunks(data, SYNC_CHUNK):
            unsynced += chunk.nbytes
            while chunk.nbytes:  # an unbuffered write may take less than it is given
                chunk = chunk[f.write(chunk) or 0 :]
            if unsynced >= SYNC_CHUNK:
                os.fdatasync(f.fileno())
                unsynced = 0
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a filesystem without directory handles (e.g. some network mounts)
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def snapshot_repo(store: Store, directory: str | None) -> SnapshotRepo | None:
    """Where this store's snapshots go: ``directory`` if given; for a SQLite file, the
    directory ``<file>.snapshots`` beside it; else the store itself. None for an in-memory
    store with no directory (it dies with the process).

    SQLite has one writer at a time: a snapshot (hundreds of MB) written in the store's
    own transaction would hold every event write back for the seconds it takes (measured:
    the HTTP service's mixed-load p99 2.2 s with snapshots in the file, 0.48 s beside it).
    A server database writes the snapshot's rows beside the events without blocking them.

    >>> snapshot_repo(Store.open("sqlite://"), None) is None
    True
    >>> type(snapshot_repo(Store.open("sqlite:///shop.db"), None)).__name__  # doctest: +SKIP
    'DirSnapshots'
    """
    if directory:
        return DirSnapshots(directory)
    if store.dialect == "sqlite":
        database = sa.engine.make_url(store.url).database
        if database in (None, "", ":memory:"):
            return None
        return DirSnapshots(f"{database}.snapshots", create=False)
    return StoreSnapshots(store)
