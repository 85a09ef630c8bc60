"""Fixtures for the HTTP service: a real app over a real engine (real MiniLM, real books)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from apihelp import KEYS
from liverec import Engine
from liverec.service import create_app
from liverec.service.auth import hash_key
from liverec.settings import Settings
from liverec.store import Store

#: Books used by the API tests (the first of the shipped catalog: Harry Potter included).
N_BOOKS = 300


@pytest.fixture
def make_client(encoder, books) -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(**settings)`` -> a started TestClient; ``client.engine`` is the engine.

    Keys ``KEYS[role]`` exist in the store (hashed), so auth is on unless open_access=True.
    """
    made: list[tuple[TestClient, Engine]] = []

    def make(url: str = "sqlite://", fast_path: bool | None = None, **overrides: Any) -> TestClient:
        settings = Settings(**{"encoder_progress": False, **overrides, "store": url})
        eng = Engine(Store.open(url), settings, encoder)
        eng.add_items(books[:N_BOOKS])
        for role, key in KEYS.items():
            eng.store.add_api_key(f"test-{role}", role, hash_key(key))
        client = TestClient(create_app(settings, engine=eng, fast_path=fast_path), raise_server_exceptions=False)
        client.__enter__()
        client.engine = eng  # type: ignore[attr-defined]
        made.append((client, eng))
        return client

    yield make
    for client, eng in made:
        client.__exit__(None, None, None)
        eng.close()
