"""Run the store contract against every backend: SQLite in memory, SQLite file, PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from checks.store_checks import StoreContract, StoreOpenChecks
from liverec import Event
from liverec.store import Store
from liverec.store import schema as S


class TestSqliteMemory(StoreContract):
    persistent = False  # sqlite:// opens a new, empty database every time

    @pytest.fixture
    def store(self) -> Iterator[Store]:
        st = Store.open("sqlite://")
        assert st.dialect == "sqlite"
        yield st
        st.close()


class TestSqliteFile(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Store]:
        st = Store.open(f"sqlite:///{tmp_path / 'liverec.db'}")
        assert st.dialect == "sqlite"
        yield st
        st.close()

    def test_a_store_whose_event_seq_could_be_reused_is_rebuilt_with_its_rows(self, store: Store) -> None:
        store.append_events([Event(user=u, item="i1", id=f"e{n}", timestamp=float(n)) for n, u in enumerate("aabb")])
        with store.engine.begin() as conn:  # the events table as stores before schema 4 made it
            old = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'events'").scalar()
            conn.exec_driver_sql("ALTER TABLE events RENAME TO events_old")
            for ix in S.events.indexes:
                conn.exec_driver_sql(f'DROP INDEX "{ix.name}"')
            conn.exec_driver_sql(old.replace("AUTOINCREMENT", ""))
            conn.exec_driver_sql("INSERT INTO events SELECT * FROM events_old")
            conn.exec_driver_sql("DROP TABLE events_old")
            conn.exec_driver_sql("UPDATE liverec_meta SET value = '3' WHERE key = 'schema_version'")
        before = [(q, e.id) for q, e in store.iter_events()]
        again = Store(store.engine, store.url)
        assert again.schema_version == S.SCHEMA_VERSION
        assert [(q, e.id) for q, e in again.iter_events()] == before and len(before) == 4
        with again.engine.connect() as conn:
            assert "AUTOINCREMENT" in conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'events'").scalar()
            names = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {ix.name for ix in S.events.indexes} <= names
        top = again.last_event_seq()
        again.delete_user("b")
        again.append_events([Event(user="c", item="i1", id="e9", timestamp=9.0)])
        assert [e.id for _, e in again.iter_events(after_seq=top)] == ["e9"]

    def test_file_is_wal(self, store: Store) -> None:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"

    def test_every_connection_has_a_16_mib_page_cache(self, store: Store) -> None:
        with store.engine.connect() as a, store.engine.connect() as b:
            for conn in (a, b):
                assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -16384


@pytest.fixture(scope="module")
def pg_module_url(postgres_url: Callable[[], str]) -> Iterator[str]:
    """A fresh PostgreSQL database for this module, dropped (WITH (FORCE)) afterwards."""
    url = postgres_url()
    yield url
    postgres_url.drop(url)  # type: ignore[attr-defined]


def _drop_liverec_tables(url: str) -> None:
    engine = sa.create_engine(sa.engine.make_url(url).set(drivername="postgresql+psycopg"))
    try:
        S.metadata.drop_all(engine)  # every liverec table, liverec_meta included
    finally:
        engine.dispose()


@pytest.mark.postgres
class TestPostgres(StoreContract):
    @pytest.fixture
    def store(self, pg_module_url: str) -> Iterator[Store]:
        # Tests share the module's database: every one starts from an empty schema.
        _drop_liverec_tables(pg_module_url)
        st = Store.open(pg_module_url)
        assert st.dialect == "postgresql"
        yield st
        st.close()
        _drop_liverec_tables(pg_module_url)


class TestStoreOpen(StoreOpenChecks):
    pass
