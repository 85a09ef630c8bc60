"""The durable store: items, users, events, impressions, vectors, snapshots.

One SQLAlchemy Core implementation for SQLite (embedded default, WAL) and PostgreSQL,
opened by URL like Gorse's storage layer. Events are append-only and idempotent by
event id: a repeated id is stored once, in a batch or across batches.

Examples
--------
>>> from liverec.store import Store
>>> from liverec import Event
>>> st = Store.open("sqlite://")
>>> st.append_events([Event(user="u", item="i", id="e1"), Event(user="u", item="i", id="e1")])
[0]
>>> st.count_events()
1
>>> st.close()
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from .._extras import require
from ..errors import StoreError
from ..validate import check_text
from ..types import Event, Item
from . import schema as S


def _json(value: Mapping[str, Any]) -> str:
    """A context object as JSON text for SQLite's JSON column: orjson (one C call; the hot
    write paths make one per event and per impression), the standard library for what orjson
    refuses (integers past 64 bits).

    >>> _json({"page": "home", "n": 1}), _json({"big": 2 ** 70})
    ('{"page":"home","n":1}', '{"big": 1180591620717411303424}')
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(dict(value))


_CHUNK = 500  # rows per IN (...) list; far below every backend's parameter limit
# pg_advisory_xact_lock key serialising event appends on PostgreSQL (any fixed bigint).
_APPEND_LOCK_KEY = 0x6C69766572656301
#: Rows per multi-row INSERT on SQLite: 7 parameters each, under its 32,766-parameter limit.
_SQLITE_ROWS = 4_000
#: The same for impressions: 9 parameters each.
_SQLITE_IMPRESSION_ROWS = 3_000


def require_driver(url: str | sa.engine.URL) -> None:
    """Raise :class:`~liverec._extras.MissingExtraError` if the store at ``url`` needs a
    database driver that is not installed (PostgreSQL: ``liverec[postgres]``).

    Unparseable URLs pass: :meth:`Store.open` reports those with the accepted forms.

    Examples
    --------
    >>> require_driver("sqlite:///books.db")  # SQLite is built into Python
    """
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        return
    # postgresql:// means psycopg 3 here (see Store.open); another driver named on purpose
    # (postgresql+psycopg2://) is the user's to install.
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        require("psycopg", "postgres", f"the PostgreSQL store {parsed.render_as_string(hide_password=True)!r}")


@dataclass(frozen=True, slots=True)
class StoredItem:
    """An item row as stored (``seq`` is its stable catalog position)."""

    seq: int
    id: str
    text: str
    attributes: Mapping[str, Any]
    created: float
    updated: float

    def to_item(self) -> Item:
        return Item(id=self.id, text=self.text, attributes=dict(self.attributes))


@dataclass(frozen=True, slots=True)
class Impression:
    """One served item of one request, with the propensity the policy gave it."""

    request_id: str
    user: str
    item: str
    position: int
    score: float
    propensity: float
    policy: str
    timestamp: float
    context: Mapping[str, Any] | None = None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk when record() returns ("durability on").
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=10000")
    # A 16 MiB page cache per connection (SQLite's default is 2 MiB), filled only as pages are
    # read: the events' indexes stay in it, so an appended row no longer reads index pages
    # back from the OS (a batch append 20-21 -> 15-16.5 us a row at 110k events).
    cur.execute("PRAGMA cache_size=-16384")
    # Deleted rows are overwritten with zeros, not left in free pages: an erased
    # user's id and text do not linger in the file.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()


class Store:
    """Durable storage behind an :class:`~liverec.Engine`, selected by URL scheme.

    ``sqlite://`` (in memory), ``sqlite:///path.db`` (a file, WAL) and
    ``postgresql://user@host/db`` (psycopg 3) are supported.
    """

    def __init__(self, engine: sa.Engine, url: str, *, serialize: bool = False) -> None:
        self.url = url
        self.engine = engine
        self.dialect = engine.dialect.name
        # An in-memory SQLite database is one shared connection: every use must take turns.
        self._serial = threading.RLock() if serialize else None
        # A SQLite file has one writer at a time. Writers of this process queue on a lock of
        # their own rather than poll through SQLite's busy handler, which sleeps 1, 2, 5, 10 ...
        # ms between tries (writers of other processes still meet it).
        self._writer = threading.RLock() if self.dialect == "sqlite" and not serialize else None
        self._migrate()

    def shareable_url(self) -> str | None:
        """The URL another process opens this same store with (password included), or None
        for an in-memory store, which only this process sees.

        >>> Store.open().shareable_url() is None
        True
        """
        if self._serial is not None:
            return None
        return self.engine.url.render_as_string(hide_password=False)

    @contextmanager
    def _begin(self) -> Iterator[sa.Connection]:
        """A write transaction (serialised for in-memory SQLite; one at a time per process for a SQLite file)."""
        with self._serial or self._writer or nullcontext():
            with self.engine.begin() as conn:
                yield conn

    @contextmanager
    def _telemetry_cursor(self) -> Iterator[Any]:
        """A SQLite DB-API cursor in a write transaction whose commit does not wait for the disk
        (``synchronous=NORMAL`` for this transaction only): for impressions, which are telemetry
        (the last moments of them may be lost in a power cut, never the file), not for events.

        A file store's event commits wait for the disk (``synchronous=FULL``); an impression
        commit need not hold the one write lock through an ``fdatasync`` while event commits
        wait behind it. The next event commit syncs the log with these rows in it, so events
        lose nothing. In-memory SQLite: a plain transaction.
        """
        with self._serial or self._writer or nullcontext():
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection
                assert raw is not None
                relaxed = self._writer is not None
                if relaxed:  # outside a transaction, so that it applies to the next one
                    raw.execute("PRAGMA synchronous=NORMAL")
                cur = raw.cursor()
                try:
                    yield cur
                    raw.commit()
                except BaseException:
                    raw.rollback()
                    raise
                finally:
                    cur.close()
                    if relaxed:
                        raw.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def _connect(self) -> Iterator[sa.Connection]:
        """A read connection (serialised for in-memory SQLite)."""
        with self._serial or nullcontext():
            with self.engine.connect() as conn:
                yield conn

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, url: str | None = None) -> "Store":
        """Open (and create or migrate) the store at ``url``; ``None`` = in memory."""
        url = url or "sqlite://"
        try:
            parsed = sa.engine.make_url(url)
        except Exception as exc:  # sqlalchemy raises ArgumentError with a terse text
            raise StoreError(
                f"cannot parse store URL {url!r}: {exc}. Use sqlite:///path/to/file.db, "
                "sqlite:// (in memory) or postgresql://user@host:5432/dbname."
            ) from exc
        backend = parsed.get_backend_name()
        memory = False
        if backend == "sqlite" and parsed.host:
            # sqlite://books.db reads "books.db" as a host name: the classic missing slash.
            raise StoreError(
                f"store URL {url!r} names a host ({parsed.host!r}), which SQLite has none of: a file path "
                f"needs three slashes, sqlite:///{parsed.host}{'/' + parsed.database if parsed.database else ''} "
                "(four for an absolute path: sqlite:////var/lib/liverec.db)."
            )
        if backend == "sqlite":
            memory = parsed.database in (None, "", ":memory:")
            kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
            if memory:
                # One shared connection, or every pooled connection would see its own empty DB.
                kwargs["poolclass"] = StaticPool
            engine = sa.create_engine(parsed, **kwargs)
            if not memory:
                sa.event.listen(engine, "connect", _sqlite_pragmas)
        elif backend == "postgresql":
            if parsed.drivername == "postgresql":
                parsed = parsed.set(drivername="postgresql+psycopg")
            require_driver(parsed)
            engine = sa.create_engine(parsed, pool_pre_ping=True, pool_size=8, max_overflow=8)
        else:
            raise StoreError(
                f"unsupported store backend {backend!r} in {url!r}: liverec stores data in "
                "SQLite or PostgreSQL. Use sqlite:///file.db or postgresql://user@host/db."
            )
        try:
            with engine.connect():
                pass
        except Exception as exc:
            raise StoreError(
                f"cannot connect to the store at {parsed.render_as_string(hide_password=True)}: "
                f"{exc.__class__.__name__}: {exc}. Check the URL, that the server is running "
                "and that the database exists."
            ) from exc
        try:
            return cls(engine, parsed.render_as_string(hide_password=True), serialize=backend == "sqlite" and memory)
        except Exception:
            engine.dispose()  # e.g. a newer schema: do not leak the pool
            raise

    def _migrate(self) -> None:
        with self._connect() as conn:  # the usual case, read only: the schema is current
            if sa.inspect(conn).has_table(S.meta.name) and conn.execute(
                sa.select(S.meta.c.value).where(S.meta.c.key == "schema_version")
            ).scalar_one_or_none() == str(S.SCHEMA_VERSION):
                return
        with self._begin() as conn:
            if self.dialect == "sqlite":
                # The write lock before the schema is read: processes opening one new file at
                # once migrate it one after the other (the next waits, then finds it made).
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            S.meta.create(conn, checkfirst=True)
            row = conn.execute(
                sa.select(S.meta.c.value).where(S.meta.c.key == "schema_version")
            ).scalar_one_or_none()
            version = int(row) if row is not None else 0
            if version > S.SCHEMA_VERSION:
                raise StoreError(
                    f"the store at {self.url} has schema version {version}, newer than this "
                    f"liverec understands ({S.SCHEMA_VERSION}). Upgrade liverec."
                )
            for step in S.MIGRATIONS[version:]:
                step(conn)
            if version != S.SCHEMA_VERSION:
                values = {"key": "schema_version", "value": str(S.SCHEMA_VERSION)}
                if row is None:
                    conn.execute(S.meta.insert().values(**values))
                else:
                    conn.execute(
                        S.meta.update().where(S.meta.c.key == "schema_version").values(value=values["value"])
                    )

    @property
    def schema_version(self) -> int:
        with self._connect() as conn:
            return int(
                conn.execute(
                    sa.select(S.meta.c.value).where(S.meta.c.key == "schema_version")
                ).scalar_one()
            )

    def close(self) -> None:
        self.engine.dispose()

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which carries ON CONFLICT on both SQLite and PostgreSQL."""
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(table)
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)

    # -------------------------------------------------------------------- items
    def upsert_items(self, items: Sequence[Item], now: float | None = None) -> None:
        """Insert new items and update the text/attributes of existing ones."""
        if not items:
            return
        now = time.time() if now is None else now
        rows = [
            {"id": it.id, "text": it.text, "attributes": dict(it.attributes), "created": now, "updated": now}
            for it in items
        ]
        stmt = self._insert(S.items)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"],
            set_={"text": stmt.excluded.text, "attributes": stmt.excluded.attributes, "updated": stmt.excluded.updated},
        )
        with self._begin() as conn:
            conn.execute(stmt, rows)
            self._bump(conn, "changes")  # other processes see the catalog moved (see head())

    def iter_items(self) -> Iterator[StoredItem]:
        """Every item in catalog order (``seq``)."""
        with self._connect() as conn:
            rows = conn.execute(sa.select(S.items).order_by(S.items.c.seq)).all()
        for r in rows:
            yield StoredItem(r.seq, r.id, r.text, r.attributes or {}, r.created, r.updated)

    def items_changed_since(self, ts: float) -> list[StoredItem]:
        """Items created or updated at or after ``ts`` (replicas catch up on the catalog)."""
        with self._connect() as conn:
            rows = conn.execute(sa.select(S.items).where(S.items.c.updated >= ts).order_by(S.items.c.seq)).all()
        return [StoredItem(r.seq, r.id, r.text, r.attributes or {}, r.created, r.updated) for r in rows]

    def item_versions_since(self, ts: float) -> list[tuple[str, float]]:
        """(id, updated) of items changed at or after ``ts``: cheap, no text or attributes."""
        with self._connect() as conn:
            q = sa.select(S.items.c.id, S.items.c.updated).where(S.items.c.updated >= ts)
            return [(r.id, r.updated) for r in conn.execute(q)]

    def get_items(self, ids: Sequence[str]) -> list[StoredItem]:
        """The stored rows of ``ids`` (unknown ids are left out), in catalog order."""
        out: list[StoredItem] = []
        with self._connect() as conn:
            for chunk in _chunks(_storable(ids)):
                rows = conn.execute(sa.select(S.items).where(S.items.c.id.in_(chunk))).all()
                out += [StoredItem(r.seq, r.id, r.text, r.attributes or {}, r.created, r.updated) for r in rows]
        return sorted(out, key=lambda x: x.seq)

    def item_ids(self) -> set[str]:
        with self._connect() as conn:
            return {r[0] for r in conn.execute(sa.select(S.items.c.id))}

    def get_item(self, item_id: str) -> StoredItem | None:
        if not _storable([item_id]):
            return None
        with self._connect() as conn:
            r = conn.execute(sa.select(S.items).where(S.items.c.id == item_id)).first()
        return None if r is None else StoredItem(r.seq, r.id, r.text, r.attributes or {}, r.created, r.updated)

    def delete_items(self, ids: Iterable[str]) -> int:
        """Delete items (their past events stay in the log). Returns rows deleted."""
        n = 0
        with self._begin() as conn:
            for chunk in _chunks(_storable(ids)):
                n += conn.execute(S.items.delete().where(S.items.c.id.in_(chunk))).rowcount
            if n:
                self._bump(conn, "changes")
        return n

    def count_items(self) -> int:
        return self._count(S.items)

    # -------------------------------------------------------------------- users
    def set_interests(self, user: str, interests: str | None, now: float | None = None) -> None:
        """Store (or clear, with ``None``) a user's declared interests.

        Text with NUL or lone surrogates is refused (:class:`~liverec.errors.ValidationError`)
        on every backend alike: PostgreSQL cannot store NUL, and SQLite must not accept
        what PostgreSQL refuses.
        """
        if interests is not None:
            check_text(interests, "interests")
        now = time.time() if now is None else now
        stmt = self._insert(S.users).values(id=user, interests=interests, created=now, updated=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=["id"], set_={"interests": stmt.excluded.interests, "updated": now}
        )
        with self._begin() as conn:
            conn.execute(stmt)
            self._bump(conn, "changes")

    def get_interests(self, user: str) -> str | None:
        if not _storable([user]):
            return None
        with self._connect() as conn:
            return conn.execute(
                sa.select(S.users.c.interests).where(S.users.c.id == user)
            ).scalar_one_or_none()

    def interests_changed_since(self, ts: float) -> list[tuple[str, str | None]]:
        """(user, interests or None) for users whose interests changed at or after ``ts``."""
        with self._connect() as conn:
            q = sa.select(S.users.c.id, S.users.c.interests).where(S.users.c.updated >= ts)
            return [(r.id, r.interests) for r in conn.execute(q)]

    def iter_interests(self) -> Iterator[tuple[str, str]]:
        """(user, interests) for every user who declared some."""
        with self._connect() as conn:
            q = sa.select(S.users.c.id, S.users.c.interests).where(S.users.c.interests.is_not(None))
            for r in conn.execute(q.order_by(S.users.c.id)):
                yield r.id, r.interests

    def delete_user(self, user: str) -> dict[str, int]:
        """Erase every row about ``user`` in one transaction. Returns rows deleted per table.

        Gone: the user's events, impressions, interests, and the cached vector of the
        interests text (``vectors``; another user or item with the very same text gets
        it re-encoded). The event ids go with the events: an event later sent with one
        of those ids is new data from the client and is stored again. On a SQLite file
        the write-ahead log is then checkpointed and truncated, and ``secure_delete``
        (set at connect) zeroes the freed pages, so the file keeps no copy; a reader
        holding an older snapshot open can delay the truncation until its next erasure.
        """

        counts: dict[str, int] = {}
        if not _storable([user]):  # such an id was never stored
            return {"events": 0, "impressions": 0, "users": 0, "erasure_epoch": self.counter("erasures")}
        with self._begin() as conn:
            interests = conn.execute(
                sa.select(S.users.c.interests).where(S.users.c.id == user)
            ).scalar_one_or_none()
            if interests:
                conn.execute(S.vectors.delete().where(S.vectors.c.text_hash == S.text_hash(interests)))
            counts["events"] = conn.execute(S.events.delete().where(S.events.c.user_id == user)).rowcount
            counts["impressions"] = conn.execute(
                S.impressions.delete().where(S.impressions.c.user_id == user)
            ).rowcount
            counts["users"] = conn.execute(S.users.delete().where(S.users.c.id == user)).rowcount
            # A counter, no id: replicas that missed the erasure notice see it moved and re-fit.
            counts["erasure_epoch"] = self._bump(conn, "erasures")
        self._checkpoint()
        return counts

    def _checkpoint(self) -> None:
        """Move the write-ahead log into the SQLite file and truncate it (no-op elsewhere)."""
        if self.dialect != "sqlite" or self._serial is not None:  # in memory: no file, no log
            return
        with self._connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    def spend(self, key: str, amount: float, *, limit: float) -> tuple[bool, float]:
        """Add ``amount`` to the budget counter ``key`` unless that takes it above ``limit``.

        One conditional UPDATE, so concurrent spenders (other workers, replicas) can
        never overshoot together. Returns (spent now?, total spent).
        """
        total = sa.cast(S.meta.c.value, sa.Float) + amount
        with self._begin() as conn:
            conn.execute(self._insert(S.meta).values(key=key, value="0").on_conflict_do_nothing(index_elements=["key"]))
            done = conn.execute(
                S.meta.update()
                .where(S.meta.c.key == key, total <= limit + 1e-9)
                .values(value=sa.cast(total, sa.String))
            ).rowcount
            value = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar_one()
        return done == 1, float(value)

    def _bump(self, conn: sa.Connection, key: str) -> int:
        stmt = self._insert(S.meta).values(key=key, value="1")
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"value": sa.cast(sa.cast(S.meta.c.value, sa.Integer) + 1, sa.String)},
        )
        conn.execute(stmt)
        return int(conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar_one())

    def head(self) -> tuple[int, int]:
        """(last event seq, catalog/interests change counter) in one round trip: how a
        process sharing this store tells, cheaply, whether others wrote something."""
        with self._connect() as conn:
            r = conn.execute(
                sa.select(
                    sa.select(sa.func.max(S.events.c.seq)).scalar_subquery(),
                    sa.select(S.meta.c.value).where(S.meta.c.key == "changes").scalar_subquery(),
                )
            ).one()
        return int(r[0] or 0), int(r[1] or 0)

    def counter(self, key: str) -> int:
        """A counter kept in ``liverec_meta`` (0 if never bumped)."""
        with self._connect() as conn:
            v = conn.execute(sa.select(S.meta.c.value).where(S.meta.c.key == key)).scalar_one_or_none()
        return int(v) if v is not None else 0

    # ------------------------------------------------------------------- events
    def append_events(self, events: Sequence[Event]) -> list[int]:
        """Append events; returns the positions (in ``events``) of those newly stored.

        An id already in the log, or repeated earlier in the same batch, is skipped:
        ingestion is idempotent. All rows go in one transaction.
        """
        if not events:
            return []
        first: dict[str, int] = {}
        for i, e in enumerate(events):
            first.setdefault(e.id, i)
        if self.dialect == "sqlite":
            with self._begin() as conn:
                inserted = self._append_sqlite(conn, [events[i] for i in first.values()])
            return [i for eid, i in first.items() if eid in inserted]
        rows = [
            {
                "id": events[i].id,
                "user_id": events[i].user,
                "item_id": events[i].item,
                "kind": events[i].kind,
                "value": float(events[i].value),
                "ts": float(events[i].timestamp),
                "context": dict(events[i].context),
            }
            for i in first.values()
        ]
        stmt = (
            self._insert(S.events)
            .on_conflict_do_nothing(index_elements=["id"])
            # No sort_by_parameter_order: the ids go into a set, and asking for the order
            # makes SQLAlchemy send one INSERT per row on SQLite (measured: 1.5x slower).
            .returning(S.events.c.id)
        )
        with self._begin() as conn:
            if self.dialect == "postgresql":  # (SQLite took the path above)
                # Concurrent appends of overlapping ids in different orders deadlock on the
                # unique index; one append at a time also keeps seq in commit order. SQLite
                # already serialises writers.
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_APPEND_LOCK_KEY)))
            inserted = {r.id for r in conn.execute(stmt, rows)}
        return [i for eid, i in first.items() if eid in inserted]

    @staticmethod
    def _append_sqlite(conn: sa.Connection, events: Sequence[Event]) -> set[str]:
        """Insert ``events`` (distinct ids) through the DB-API cursor, skipping ids already
        stored; the ids inserted. The same rows as the SQLAlchemy statement (``context`` as
        its JSON type writes it), without its per-statement compile and result processing:
        a single event's append takes about half the time (SQLite's own write and fsync
        are the rest)."""
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        head = f"INSERT INTO {S.events.name} (id, user_id, item_id, kind, value, ts, context) VALUES "
        tail = " ON CONFLICT (id) DO NOTHING RETURNING id"
        out: set[str] = set()
        try:
            for a in range(0, len(events), _SQLITE_ROWS):
                chunk = events[a : a + _SQLITE_ROWS]
                args = [x for e in chunk for x in (e.id, e.user, e.item, e.kind, float(e.value), float(e.timestamp),
                                                   _json(e.context))]
                cur.execute(head + ",".join(["(?,?,?,?,?,?,?)"] * len(chunk)) + tail, args)
                out.update(r[0] for r in cur.fetchall())
        finally:
            cur.close()
        return out

    def iter_events(
        self, *, after_seq: int = 0, user: str | None = None, batch_size: int = 10_000
    ) -> Iterator[tuple[int, Event]]:
        """(seq, event) in append order, starting after ``after_seq``; paged by seq."""
        if user is not None and not _storable([user]):
            return
        cursor = after_seq
        while True:
            q = sa.select(S.events).where(S.events.c.seq > cursor)
            if user is not None:
                q = q.where(S.events.c.user_id == user)
            with self._connect() as conn:
                rows = conn.execute(q.order_by(S.events.c.seq).limit(batch_size)).all()
            for r in rows:
                yield r.seq, _row_to_event(r)
            if len(rows) < batch_size:
                return
            cursor = rows[-1].seq

    def user_events(self, user: str) -> list[Event]:
        """A user's events, oldest first (by timestamp, then append order)."""
        if not _storable([user]):
            return []
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(S.events)
                .where(S.events.c.user_id == user)
                .order_by(S.events.c.ts, S.events.c.seq)
            ).all()
        return [_row_to_event(r) for r in rows]

    def has_event(self, event_id: str) -> bool:
        if not _storable([event_id]):
            return False
        with self._connect() as conn:
            return conn.execute(sa.select(S.events.c.seq).where(S.events.c.id == event_id)).first() is not None

    def count_events(self) -> int:
        return self._count(S.events)

    def last_event_seq(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(sa.func.max(S.events.c.seq))).scalar() or 0)

    # -------------------------------------------------------------- impressions
    def log_impressions(self, rows: Sequence[Impression]) -> None:
        if not rows:
            return
        if self.dialect == "sqlite":  # the DB-API cursor, as append_events: no per-statement compile
            # One multi-row INSERT per chunk, not executemany: SQLite's sqlite3 module lets go of the
            # GIL around every statement step, and a step per row behind busy request threads waits
            # for the GIL a thousand times per chunk (250 ms a chunk measured under a burst of reads).
            head = (f"INSERT INTO {S.impressions.name} (request_id, user_id, item_id, position, score, "
                    "propensity, policy, ts, context) VALUES ")
            with self._telemetry_cursor() as cur:
                for a in range(0, len(rows), _SQLITE_IMPRESSION_ROWS):
                    chunk = rows[a : a + _SQLITE_IMPRESSION_ROWS]
                    args = [x for r in chunk for x in (r.request_id, r.user, r.item, r.position, float(r.score),
                                                       float(r.propensity), r.policy, float(r.timestamp),
                                                       _json(r.context or {}))]
                    cur.execute(head + ",".join(["(?,?,?,?,?,?,?,?,?)"] * len(chunk)), args)
            return
        with self._begin() as conn:
            conn.execute(
                S.impressions.insert(),
                [
                    {
                        "request_id": r.request_id,
                        "user_id": r.user,
                        "item_id": r.item,
                        "position": r.position,
                        "score": float(r.score),
                        "propensity": float(r.propensity),
                        "policy": r.policy,
                        "ts": float(r.timestamp),
                        "context": dict(r.context or {}),
                    }
                    for r in rows
                ],
            )

    def iter_impressions(self, *, user: str | None = None) -> Iterator[Impression]:
        if user is not None and not _storable([user]):
            return
        q = sa.select(S.impressions)
        if user is not None:
            q = q.where(S.impressions.c.user_id == user)
        with self._connect() as conn:
            rows = conn.execute(q.order_by(S.impressions.c.seq)).all()
        for r in rows:
            yield Impression(
                    r.request_id, r.user_id, r.item_id, r.position, r.score, r.propensity,
                    r.policy, r.ts, r.context or {},
                )

    def count_impressions(self) -> int:
        return self._count(S.impressions)

    # ------------------------------------------------------------------ vectors
    def get_vectors(self, model_id: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Cached vectors of ``model_id`` for the given text hashes (misses are absent)."""
        out: dict[str, np.ndarray] = {}
        with self._connect() as conn:
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                q = sa.select(S.vectors.c.text_hash, S.vectors.c.vector).where(
                    S.vectors.c.model_id == model_id, S.vectors.c.text_hash.in_(chunk)
                )
                for h, blob in conn.execute(q):
                    out[h] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put_vectors(self, model_id: str, vectors: Mapping[str, np.ndarray]) -> None:
        if not vectors:
            return
        rows = [
            {"model_id": model_id, "text_hash": h, "dim": int(v.shape[0]),
             "vector": np.ascontiguousarray(v, dtype=np.float32).tobytes()}
            for h, v in vectors.items()
        ]
        stmt = self._insert(S.vectors).on_conflict_do_nothing(index_elements=["model_id", "text_hash"])
        with self._begin() as conn:
            conn.execute(stmt, rows)

    def delete_vectors(self, hashes: Sequence[str]) -> int:
        """Delete the cached vectors of these text hashes under every model; returns rows deleted."""
        n = 0
        with self._begin() as conn:
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                n += conn.execute(S.vectors.delete().where(S.vectors.c.text_hash.in_(chunk))).rowcount or 0
        return n

    def count_vectors(self, model_id: str | None = None) -> int:
        q = sa.select(sa.func.count()).select_from(S.vectors)
        if model_id is not None:
            q = q.where(S.vectors.c.model_id == model_id)
        with self._connect() as conn:
            return int(conn.execute(q).scalar_one())

    # ---------------------------------------------------------------- snapshots
    def put_snapshot(self, name: str, payload: bytes, log_seq: int) -> None:
        """Save (replace) a named model snapshot taken after event ``log_seq``."""
        stmt = self._insert(S.snapshots).values(name=name, log_seq=log_seq, created=time.time(), payload=payload)
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"log_seq": stmt.excluded.log_seq, "created": stmt.excluded.created, "payload": stmt.excluded.payload},
        )
        with self._begin() as conn:
            conn.execute(stmt)

    def get_snapshot(self, name: str) -> tuple[bytes, int] | None:
        """(payload, log_seq) of a snapshot, or None."""
        with self._connect() as conn:
            r = conn.execute(
                sa.select(S.snapshots.c.payload, S.snapshots.c.log_seq).where(S.snapshots.c.name == name)
            ).first()
        return None if r is None else (bytes(r.payload), int(r.log_seq))

    def delete_snapshots(self) -> None:
        with self._begin() as conn:
            conn.execute(S.snapshots.delete())

    # ----------------------------------------------------------------- API keys
    def add_api_key(self, name: str, role: str, key_hash: str) -> None:
        """Store a key's hash under a unique name. Raises StoreError if the name or hash exists."""
        with self._begin() as conn:
            taken = conn.execute(
                sa.select(S.api_keys.c.name).where(
                    (S.api_keys.c.name == name) | (S.api_keys.c.key_hash == key_hash)
                )
            ).first()
            if taken is not None:
                raise StoreError(f"an API key named {name!r} already exists; revoke it first or pick another name.")
            conn.execute(S.api_keys.insert().values(name=name, role=role, key_hash=key_hash, created=time.time()))

    def find_api_key(self, key_hash: str) -> tuple[str, str] | None:
        """(name, role) of the key with this hash, or None."""
        with self._connect() as conn:
            r = conn.execute(
                sa.select(S.api_keys.c.name, S.api_keys.c.role).where(S.api_keys.c.key_hash == key_hash)
            ).first()
        return None if r is None else (r.name, r.role)

    def list_api_keys(self) -> list[tuple[str, str, float]]:
        """(name, role, created) of every key, by name. Hashes are never returned."""
        with self._connect() as conn:
            rows = conn.execute(
                sa.select(S.api_keys.c.name, S.api_keys.c.role, S.api_keys.c.created).order_by(S.api_keys.c.name)
            ).all()
        return [(r.name, r.role, r.created) for r in rows]

    def delete_api_key(self, name: str) -> bool:
        with self._begin() as conn:
            return conn.execute(S.api_keys.delete().where(S.api_keys.c.name == name)).rowcount > 0

    # ------------------------------------------------------------------ helpers
    def _count(self, table: sa.Table) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _row_to_event(r: Any) -> Event:
    return Event(
        user=r.user_id, item=r.item_id, kind=r.kind, value=r.value, timestamp=r.ts,
        id=r.id, context=r.context or {},
    )


def _storable(ids: Iterable[str]) -> list[str]:
    """The ids a lookup can match: one holding NUL was never stored (ids are checked at
    write), and PostgreSQL rejects it in a query, so it is answered "not found" here on
    every backend alike."""
    return [i for i in ids if "\x00" not in i]


def _chunks(xs: list[Any], n: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(xs), n):
        yield xs[i : i + n]
