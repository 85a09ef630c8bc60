"""Store URLs a user gets wrong are answered with the right spelling, not a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from liverec.cli import app
from liverec.errors import StoreError
from liverec.store import Store


@pytest.mark.parametrize("url, fix", [("sqlite://books.db", "sqlite:///books.db"), ("mysql://x/y", "sqlite:///file.db")])
def test_wrong_store_urls_name_the_fix(url, fix):
    with pytest.raises(StoreError, match="sqlite:///") as err:
        Store.open(url)
    assert fix in str(err.value)


def test_cli_and_environment_give_the_same_one_line_error(monkeypatch):
    r = CliRunner().invoke(app, ["recommend", "u1", "--store", "sqlite://books.db"])
    assert r.exit_code != 0 and "sqlite:///books.db" in r.output and "Traceback" not in r.output
    monkeypatch.setenv("LIVEREC_STORE", "sqlite://books.db")
    r = CliRunner().invoke(app, ["recommend", "u1"])
    assert r.exit_code != 0 and "sqlite:///books.db" in r.output and "Traceback" not in r.output
