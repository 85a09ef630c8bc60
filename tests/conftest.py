"""Shared fixtures for the liverec test suite."""

from __future__ import annotations

import os
import uuid
from typing import Callable, Iterator

import pytest
import sqlalchemy as sa

from lm import books, encoder  # noqa: F401  (fixtures: the real shipped LM, memoised)

# ----------------------------------------------------------------- PostgreSQL
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql+psycopg://root@{PG_HOST}:{PG_PORT}/postgres"
PG_UNREACHABLE = f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT}"


class PostgresDatabases:
    """Creates fresh, uniquely named PostgreSQL databases and drops them again.

    Calling the factory creates ``liverec_test_<random hex>`` and returns its URL
    (``postgresql://root@127.0.0.1:5432/liverec_test_...``); :meth:`drop` removes one
    (``WITH (FORCE)``, so connections a failed test left open do not block it), and
    whatever is still around is dropped when the session ends.
    """

    def __init__(self, admin: sa.Engine) -> None:
        self._admin = admin
        self._live: set[str] = set()

    def __call__(self) -> str:
        name = f"liverec_test_{uuid.uuid4().hex[:16]}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        self._live.add(name)
        return f"postgresql://root@{PG_HOST}:{PG_PORT}/{name}"

    def drop(self, url: str) -> None:
        name = sa.engine.make_url(url).database
        if name not in self._live:
            return
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._live.discard(name)

    def drop_all(self) -> None:
        for name in list(self._live):
            self.drop(f"postgresql://root@{PG_HOST}:{PG_PORT}/{name}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[Callable[[], str]]:
    """A factory of fresh PostgreSQL databases: ``url = postgres_url()``.

    Skips (or, with ``LIVEREC_REQUIRE_SERVICES=1``, fails) when PostgreSQL is not
    reachable on 127.0.0.1:5432. Every database it created is dropped at the end.
    """
    admin = sa.create_engine(
        PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # connection refused, auth, missing driver, ...
        admin.dispose()
        detail = f"{PG_UNREACHABLE} ({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        if os.environ.get("LIVEREC_REQUIRE_SERVICES") == "1":
            pytest.fail(
                f"{detail}. LIVEREC_REQUIRE_SERVICES=1 requires it: start PostgreSQL "
                "(user root, no password) or unset LIVEREC_REQUIRE_SERVICES.",
                pytrace=False,
            )
        pytest.skip(detail)
    factory = PostgresDatabases(admin)
    try:
        yield factory
    finally:
        factory.drop_all()
        admin.dispose()


# ------------------------------------------------------------ vector caches
@pytest.fixture(scope="session", autouse=True)
def _session_vector_cache(tmp_path_factory) -> Iterator[None]:
    """Engines opened by module- or session-scoped fixtures share a cache of this run only,
    never the machine's (~/.cache/liverec/vectors.db)."""
    old = os.environ.get("LIVEREC_VECTOR_CACHE")
    os.environ["LIVEREC_VECTOR_CACHE"] = str(tmp_path_factory.mktemp("vector-cache") / "vectors.db")
    yield
    if old is None:
        os.environ.pop("LIVEREC_VECTOR_CACHE", None)
    else:
        os.environ["LIVEREC_VECTOR_CACHE"] = old


@pytest.fixture(autouse=True)
def _own_vector_cache(tmp_path, monkeypatch) -> None:
    """Each test its own machine vector cache: no test sees vectors another one cached."""
    monkeypatch.setenv("LIVEREC_VECTOR_CACHE", str(tmp_path / "machine-vectors.db"))
