"""Run the store contract against every backend: SQLite in memory, SQLite file, PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from checks.store_checks import StoreContract, StoreOpenChecks
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

    def test_file_is_wal(self, store: Store) -> None:
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


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
