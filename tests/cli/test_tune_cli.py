"""`liverec tune`: search, store, show; the budget flag in the caller's terms."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import liverec.engine
from liverec import Engine, Event, Item, Settings
from liverec.cli import _parse_budget, app

runner = CliRunner()
T0 = 1_700_000_000.0


@pytest.fixture
def store(tmp_path, monkeypatch, encoder):
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    monkeypatch.setenv("LIVEREC_SOURCES", '{"trending": {}, "transition": {}, "itemknn": {}}')
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    rng = np.random.default_rng(0)
    with Engine.open(url, settings=Settings(), encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"item {j}") for j in range(60)])
        evs = []
        for u in range(40):
            start = int(rng.integers(0, 60))
            evs += [Event(user=f"u{u}", item=f"i{(start + s) % 60}", timestamp=T0 + 100 * s + u, id=f"e{u}-{s}")
                    for s in range(10)]
        eng.record_many(evs, learn=False)
    return url


def test_tune_stores_the_configuration_and_show_prints_it(store, encoder):
    r = runner.invoke(app, ["tune", "--show", "--store", store])
    assert r.exit_code == 1 and "no tuned configuration" in r.output
    r = runner.invoke(app, ["tune", "--budget", "30s", "--store", store])
    assert r.exit_code == 0, r.output
    assert "validation score" in r.output and "transition" in r.output
    shown = runner.invoke(app, ["tune", "--show", "--store", store])
    assert shown.exit_code == 0 and "validation score" in shown.output
    with Engine.open(store, encoder=encoder) as eng:  # reused at restart
        assert eng.tuned is not None and eng._base_weights() == eng.tuned.weights


def test_a_bad_budget_names_the_flag():
    assert _parse_budget("5m") == 300 and _parse_budget("90s") == 90 and _parse_budget("2") == 2
    r = runner.invoke(app, ["tune", "--budget", "soon"])
    assert r.exit_code != 0 and "--budget" in r.output
