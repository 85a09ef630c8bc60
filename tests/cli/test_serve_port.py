"""`liverec serve` on a busy port stops at once with the fix, before any import."""

from __future__ import annotations

import socket

from typer.testing import CliRunner

from liverec.cli import app


def test_busy_port_is_reported_before_the_catalog_import(tmp_path, monkeypatch):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        imported = []
        monkeypatch.setattr("liverec.data.load_goodbooks", lambda: imported.append(1) or [])
        store = f"sqlite:///{tmp_path / 'demo.db'}"
        r = CliRunner().invoke(app, ["serve", "--demo", "--open", "--store", store, "--port", str(port)])
        assert r.exit_code == 2 and "--port" in r.output and "LIVEREC_PORT" in r.output and not imported
        monkeypatch.setenv("LIVEREC_PORT", str(port))
        r = CliRunner().invoke(app, ["serve", "--open", "--store", store])
        assert r.exit_code == 2 and f":{port}" in r.output
    finally:
        holder.close()


def test_empty_imports_are_refused(tmp_path):
    items, events = tmp_path / "items.csv", tmp_path / "events.csv"
    items.write_text("id,text\n")
    events.write_text("user,item\n")
    store = f"sqlite:///{tmp_path / 'empty.db'}"
    r = CliRunner().invoke(app, ["import-items", str(items), "--store", store])
    assert r.exit_code == 2 and "no items" in r.output
    r = CliRunner().invoke(app, ["import-events", str(events), "--store", store])
    assert r.exit_code == 2 and "no events" in r.output
