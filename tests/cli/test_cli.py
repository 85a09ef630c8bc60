"""The CLI end to end through typer's runner, on a SQLite file."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import liverec.engine
from liverec.cli import app

runner = CliRunner()


@pytest.fixture
def store(tmp_path, encoder, monkeypatch):
    # Share the process's memoised real encoder instead of loading the model per command.
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    return f"sqlite:///{tmp_path / 'cli.db'}"


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res


def test_import_recommend_explain_flow(tmp_path, store):
    items = tmp_path / "items.csv"
    items.write_text(
        "id,title,authors,year\n"
        "h1,Harry Potter and the Sorcerer's Stone,J.K. Rowling,1997\n"
        "h2,Harry Potter and the Chamber of Secrets,J.K. Rowling,1998\n"
        "k1,Carrie,Stephen King,1974\n"
        "k2,The Shining,Stephen King,1977\n"
        "c1,Pride and Prejudice,Jane Austen,1813\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text('{"user": "u1", "item": "h1", "kind": "like", "timestamp": 1700000000, "id": "e1"}\n')
    r = run("import-items", items, "--store", store)
    assert r.exit_code == 0, r.output
    assert "5 new or changed" in r.output
    assert "0 new or changed" in run("import-items", items, "--store", store).output
    r = run("import-events", events, "--store", store)
    assert r.exit_code == 0 and "1 new" in r.output
    assert "0 new (1 already" in run("import-events", events, "--store", store).output
    r = run("recommend", "u1", "--k", "2", "--json", "--store", store)
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)
    assert recs[0]["item"] == "h2" and recs[0]["reasons"][0]["because"] == ["h1"]
    r = run("recommend", "u1", "--k", "3", "--filter", 'year={"lt": 1900}', "--json", "--store", store)
    assert [x["item"] for x in json.loads(r.output)] == ["c1"]
    r = run("explain", "u1", "h2", "--store", store)
    out = words(r.output)
    assert r.exit_code == 0 and "Harry Potter" in out and "which you liked" in out, out
    assert "content" not in out  # the source's internal name stays out of what people read
    assert run("fit", "--store", store).exit_code == 0
    r = run("interests", "u2", "horror novels", "--store", store)
    assert r.exit_code == 0
    r = run("recommend", "u2", "--k", "2", "--json", "--store", store)
    assert {x["item"] for x in json.loads(r.output)} == {"k1", "k2"}


def words(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def test_errors_are_clear_and_exit_2(tmp_path, store):
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,kind\nu1,1,click\n\nu1,nope,click\n")
    run("import-items", "goodbooks", "--limit", "5", "--store", store)
    r = run("import-events", bad, "--store", store)
    out = words(r.output)
    assert r.exit_code == 2 and "bad.csv line 4, item: 'nope' is not in the catalog" in out, out
    assert "liverec import-items" in out and "LIVEREC_AUTO_CREATE_ITEMS=true" in out
    assert "Engine." not in out and "Settings(" not in out and "events[" not in out
    bad.write_text("user,item,kind\nu1,1,click\nu2,2,share\n")
    out = words(run("import-events", bad, "--store", store).output)
    assert "bad.csv line 3, kind: 'share' is not a known event kind" in out and "LIVEREC_KIND_WEIGHTS" in out, out
    items = tmp_path / "items.csv"
    items.write_text("id,text\nok,fine\na/b,a slash\n")
    out = words(run("import-items", items, "--store", store).output)
    assert "items.csv line 3, id: 'a/b' contains '/'" in out and "items[" not in out, out
    r = run("explain", "u1", "missing", "--store", store)
    assert r.exit_code == 2 and "unknown item" in r.output
    r = run("recommend", "u1", "--store", "mysql://nope")
    assert r.exit_code == 2 and "SQLite or PostgreSQL" in r.output


def test_an_empty_list_says_why(tmp_path, store):
    items = tmp_path / "items.csv"
    items.write_text("id,title,year\nh1,Harry Potter,1997\nk1,Carrie,1974\n")
    assert run("import-items", items, "--store", store).exit_code == 0
    r = run("recommend", "u1", "--filter", 'year={"lt": 1900}', "--store", store)
    assert r.exit_code == 0 and 'filter year={"lt": 1900} matches no item' in words(r.output)
    assert "fix: the items' year runs from 1974 to 1997" in words(r.output)
    r = run("recommend", "u1", "--filter", "genre=Horror", "--filter", "year=1997", "--store", store)
    out = words(r.output)
    assert 'filter genre="Horror" matches no item: no item in the catalog has the attribute' in out, out
    assert "year=" not in out.split("warning:")[1].split(".")[0]  # the filter that matches is not blamed
    r = run("recommend", "u1", "--filter", "year=1997", "--filter", "title=Carrie", "--store", store)
    assert "match no item together" in words(r.output)
