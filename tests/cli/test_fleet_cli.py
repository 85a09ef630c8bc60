"""`liverec fit --state` (fleet mode) through typer's runner."""

from __future__ import annotations

from typing import Iterator

import pytest
from typer.testing import CliRunner

import liverec.engine
from checks.user_state_checks import REDIS_URL, redis_prefix
from liverec.cli import app
from liverec.store import Store
from liverec.store.snapshots import snapshot_repo

runner = CliRunner()


@pytest.fixture
def store(tmp_path, encoder, monkeypatch):
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix()


def test_fit_with_state_writes_a_fleet_snapshot(tmp_path, store, prefix, monkeypatch) -> None:
    items = tmp_path / "items.csv"
    items.write_text("id,title,authors\nh1,Harry Potter,J.K. Rowling\nk1,Carrie,Stephen King\n")
    events = tmp_path / "events.jsonl"
    events.write_text('{"user": "u1", "item": "h1", "kind": "like", "timestamp": 1700000000, "id": "e1"}\n')
    assert runner.invoke(app, ["import-items", str(items), "--store", store]).exit_code == 0
    assert runner.invoke(app, ["import-events", str(events), "--store", store]).exit_code == 0
    monkeypatch.setenv("LIVEREC_STATE_PREFIX", prefix)
    res = runner.invoke(app, ["fit", "--store", store, "--state", REDIS_URL])
    assert res.exit_code == 0, res.output
    st = Store.open(store)
    try:
        newest, *older = snapshot_repo(st, None).list()  # import-events wrote one with users in memory
        assert newest.header["user_state"] == "redis" and older[-1].header["user_state"] == "memory"
    finally:
        st.close()


def test_a_state_that_is_not_redis_is_refused_naming_the_flag(store) -> None:
    res = runner.invoke(app, ["fit", "--store", store, "--state", "postgresql://db/x"])
    assert res.exit_code == 2
    assert "state must be a Redis URL" in res.output and "--state" in res.output
