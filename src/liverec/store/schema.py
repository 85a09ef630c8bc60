"""The durable schema (SQLAlchemy Core) and its migrations.

Portable SQL only: the same tables run on SQLite and PostgreSQL. Times are Unix
seconds as doubles; vectors are float32 bytes.

Why hand-rolled migrations instead of Alembic: the store is created programmatically
by ``Engine.open(url)`` (often an embedded SQLite file or ``:memory:``) with no
``alembic.ini`` or migration folder on disk; an ordered list of small functions keyed
by a version number in ``liverec_meta`` is all that needs.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import sqlalchemy as sa


def text_hash(text: str) -> str:
    """Stable key of a text in the vector cache (the ``vectors`` table).

    >>> len(text_hash("The Hobbit"))
    40
    """
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]

metadata = sa.MetaData()

meta = sa.Table(
    "liverec_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

items = sa.Table(
    "items",
    metadata,
    # seq gives a stable catalog order across reopenings (dense indices follow it).
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(256), nullable=False, unique=True),
    sa.Column("text", sa.Text, nullable=False, default=""),
    sa.Column("attributes", sa.JSON, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(256), primary_key=True),
    sa.Column("interests", sa.Text, nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    # seq is the append order: the replay cursor for snapshots and replicas.
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("id", sa.String(256), nullable=False, unique=True),
    # A user's events are found by ix_events_user_ts (user_id first); no index of its own.
    sa.Column("user_id", sa.String(256), nullable=False),
    # No index by item: no query reads events by item, and each one cost every append a
    # B-tree insert at a random place (an operator's own queries can add one).
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
    # An erased user's events at the end of the log must not hand their seq to the next
    # event: a replica or a fit already past it would never read that event (SQLite reuses
    # the largest rowid without AUTOINCREMENT; PostgreSQL sequences never go back).
    sqlite_autoincrement=True,
)

impressions = sa.Table(
    "impressions",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(256), nullable=False, index=True),
    sa.Column("item_id", sa.String(256), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("policy", sa.String(64), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
)

vectors = sa.Table(
    "vectors",
    metadata,
    sa.Column("model_id", sa.String(256), primary_key=True),
    sa.Column("text_hash", sa.String(64), primary_key=True),
    sa.Column("dim", sa.Integer, nullable=False),
    sa.Column("vector", sa.LargeBinary, nullable=False),
)

snapshots = sa.Table(
    "snapshots",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("log_seq", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    # Only a SHA-256 of each key is stored: keys are 32 random bytes, so a fast hash is
    # enough (no dictionary to attack), and a leaked table does not leak usable keys.
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created", sa.Float, nullable=False),
)

model_snapshots = sa.Table(
    "model_snapshots",
    metadata,
    # One row per versioned snapshot of the whole model set; its body is in model_snapshot_parts.
    sa.Column("version", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("log_seq", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("header", sa.Text, nullable=False),
    sqlite_autoincrement=True,  # a deleted snapshot's version is never reused
)

model_snapshot_parts = sa.Table(
    "model_snapshot_parts",
    metadata,
    # Bodies in parts of a few MiB: no single value near a backend's size limit.
    sa.Column("version", sa.BigInteger, primary_key=True),
    sa.Column("part", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

sa.Index("ix_events_user_ts", events.c.user_id, events.c.ts)


_V1_TABLES = [meta, items, users, events, impressions, vectors, snapshots]


def _v1_create(conn: sa.Connection) -> None:
    metadata.create_all(conn, tables=_V1_TABLES)


def _v2_api_keys(conn: sa.Connection) -> None:
    """Hashed API keys with roles, for the HTTP service."""
    api_keys.create(conn, checkfirst=True)


def _v3_model_snapshots(conn: sa.Connection) -> None:
    """Versioned model-set snapshots (header row + body parts): restarts replay only the log tail."""
    metadata.create_all(conn, tables=[model_snapshots, model_snapshot_parts])


def _v4_event_seq_never_reused(conn: sa.Connection) -> None:
    """SQLite: rebuild ``events`` with AUTOINCREMENT (rows, seq values and indexes kept), so
    the seq of erased events at the end of the log is never handed out again."""
    if conn.dialect.name != "sqlite":
        return
    sql = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'").scalar()
    if sql is None or "AUTOINCREMENT" in sql.upper():
        return
    conn.exec_driver_sql("ALTER TABLE events RENAME TO events_before_v4")
    for index in events.indexes:  # they moved with the renamed table; the new one creates them again
        conn.exec_driver_sql(f'DROP INDEX IF EXISTS "{index.name}"')
    events.create(conn)
    cols = ", ".join(f'"{c.name}"' for c in events.columns)
    conn.exec_driver_sql(f"INSERT INTO events ({cols}) SELECT {cols} FROM events_before_v4 ORDER BY seq")
    conn.exec_driver_sql("DROP TABLE events_before_v4")


def _v5_no_redundant_user_index(conn: sa.Connection) -> None:
    """Drop ``ix_events_user_id``: ``ix_events_user_ts`` (user_id, ts) finds a user's events
    as well, and every appended event paid for both (about 40% of a batch append on SQLite)."""
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_events_user_id"))


def _v6_no_item_index(conn: sa.Connection) -> None:
    """Drop ``ix_events_item_id``: no query of the store reads events by item, and every
    appended event paid for a B-tree insert at a random place in it."""
    conn.execute(sa.text("DROP INDEX IF EXISTS ix_events_item_id"))


#: Ordered migrations: MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS: list[Callable[[sa.Connection], None]] = [
    _v1_create, _v2_api_keys, _v3_model_snapshots, _v4_event_seq_never_reused, _v5_no_redundant_user_index,
    _v6_no_item_index,
]
SCHEMA_VERSION = len(MIGRATIONS)
