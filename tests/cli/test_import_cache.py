"""`liverec import-items` into a second store encodes nothing: the machine cache serves it."""

from __future__ import annotations

from typer.testing import CliRunner

import liverec.engine
from liverec.cli import app


def test_a_second_store_imports_the_books_without_encoding(tmp_path, encoder, monkeypatch):
    # The process's memoised real encoder instead of loading the model per command.
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    runner = CliRunner()
    first = runner.invoke(app, ["import-items", "goodbooks", "--limit", "25", "--store", f"sqlite:///{tmp_path}/a.db"])
    assert first.exit_code == 0, first.output
    assert "25 new or changed" in first.output and "(25 texts encoded" in first.output
    second = runner.invoke(app, ["import-items", "goodbooks", "--limit", "25", "--store", f"sqlite:///{tmp_path}/b.db"])
    assert second.exit_code == 0, second.output
    assert "25 new or changed" in second.output and "(0 texts encoded" in second.output
    monkeypatch.setenv("LIVEREC_VECTOR_CACHE", "off")  # without the machine cache, the third store encodes
    third = runner.invoke(app, ["import-items", "goodbooks", "--limit", "25", "--store", f"sqlite:///{tmp_path}/c.db"])
    assert "(25 texts encoded" in third.output
