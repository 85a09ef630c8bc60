"""A missing optional package is a clear error naming the extra, never a bare ImportError.

A package counts as missing when ``sys.modules[name]`` is ``None``: Python's import
system then raises ``ModuleNotFoundError`` exactly as if it were not installed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from liverec._extras import EXTRAS, MissingExtraError, install_hint, require
from liverec.cli import app
from liverec.errors import LiverecError

runner = CliRunner()


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``modules`` (and every liverec module that imported one) look uninstalled."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)
    # Modules that bind the package at import time must be imported afresh.
    monkeypatch.delitem(sys.modules, "liverec.service.replication", raising=False)


def assert_clean_exit(res, extra: str) -> None:
    out = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert res.exit_code == 2, out
    assert install_hint(extra) in " ".join(out.split()), out  # rich may wrap the line
    assert "Traceback" not in out
    assert isinstance(res.exception, SystemExit), res.exception


# ----------------------------------------------------------------------------- require


def test_require_returns_the_module_when_installed():
    import json

    assert require("json", "eval") is json


def test_require_names_the_extra_when_missing(monkeypatch):
    hide(monkeypatch, "redis")
    with pytest.raises(MissingExtraError) as info:
        require("redis", "redis", "the Redis state")
    exc = info.value
    assert isinstance(exc, LiverecError) and isinstance(exc, ImportError)
    assert (exc.module, exc.extra, exc.name) == ("redis", "redis", "redis")
    assert str(exc) == (
        "the Redis state needs the optional package 'redis', which is not installed. "
        "Install it with: pip install 'liverec[redis]'"
    )
    assert isinstance(exc.__cause__, ModuleNotFoundError)


def test_require_reports_a_broken_install_with_its_cause(monkeypatch):
    """An installed package whose own import fails: the message carries the real cause."""

    class Broken:
        def find_spec(self, name, path=None, target=None):
            if name == "liverec_fake_extra_pkg":
                raise ImportError("libfoo.so.1: cannot open shared object file", name="libfoo")
            return None

    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    with pytest.raises(MissingExtraError, match=r"libfoo\.so\.1.*pip install 'liverec\[onnx\]'"):
        require("liverec_fake_extra_pkg", "onnx")


def test_require_rejects_an_unknown_extra():
    with pytest.raises(ValueError, match="unknown extra 'gpu'"):
        require("json", "gpu")


# ----------------------------------------------------------------------- import sites


def test_postgresql_store_without_psycopg(monkeypatch):
    from liverec.store import Store

    hide(monkeypatch, "psycopg")
    for url in ("postgresql://u@127.0.0.1:5432/db", "postgresql+psycopg://u:secret@127.0.0.1/db"):
        with pytest.raises(MissingExtraError, match=r"pip install 'liverec\[postgres\]'") as info:
            Store.open(url)
        assert info.value.extra == "postgres"
        assert "secret" not in str(info.value)


def test_sqlite_store_needs_no_extra(monkeypatch):
    from liverec.store import Store

    hide(monkeypatch, "psycopg", "redis", "onnxruntime", "onnx", "matplotlib", "vowpalwabbit")
    Store.open("sqlite://").close()


def test_replication_without_redis(monkeypatch):
    hide(monkeypatch, "redis")
    with pytest.raises(MissingExtraError, match=r"pip install 'liverec\[redis\]'"):
        import liverec.service.replication  # noqa: F401


@pytest.mark.parametrize("missing", ["onnxruntime", "onnx"])
def test_onnx_encoder_without_onnx(monkeypatch, missing):
    from liverec.encode.onnx import OnnxEncoder

    hide(monkeypatch, missing)
    with pytest.raises(MissingExtraError, match=r"pip install 'liverec\[onnx\]'") as info:
        OnnxEncoder()
    assert info.value.module == missing


# ------------------------------------------------------------------------------- CLI


def test_cli_serve_state_redis_without_redis(monkeypatch, tmp_path):
    hide(monkeypatch, "redis")
    res = runner.invoke(app, ["serve", "--open", "--store", f"sqlite:///{tmp_path / 's.db'}",
                              "--state", "redis://127.0.0.1:6379/15", "--port", "1"])
    assert_clean_exit(res, "redis")


def test_cli_serve_postgresql_without_psycopg(monkeypatch):
    hide(monkeypatch, "psycopg")
    res = runner.invoke(app, ["serve", "--open", "--store", "postgresql://u@127.0.0.1:5432/db", "--port", "1"])
    assert_clean_exit(res, "postgres")


def test_cli_serve_onnx_backend_without_onnxruntime(monkeypatch, tmp_path):
    hide(monkeypatch, "onnxruntime")
    monkeypatch.setenv("LIVEREC_ENCODER_BACKEND", "onnx")
    res = runner.invoke(app, ["serve", "--open", "--store", f"sqlite:///{tmp_path / 's.db'}", "--port", "1"])
    assert_clean_exit(res, "onnx")


def test_cli_recommend_onnx_backend_without_onnxruntime(monkeypatch, tmp_path):
    hide(monkeypatch, "onnxruntime")
    monkeypatch.setenv("LIVEREC_ENCODER_BACKEND", "onnx")
    res = runner.invoke(app, ["recommend", "u1", "--store", f"sqlite:///{tmp_path / 's.db'}"])
    assert_clean_exit(res, "onnx")


def test_cli_simulate_vw_without_vowpalwabbit(monkeypatch):
    hide(monkeypatch, "vowpalwabbit")
    res = runner.invoke(app, ["simulate", "--agents", "static,vw", "--seeds", "1", "--steps", "1"])
    assert_clean_exit(res, "eval")


def test_cli_simulate_report_without_matplotlib(monkeypatch, tmp_path):
    hide(monkeypatch, "matplotlib")
    res = runner.invoke(app, ["simulate", "--agents", "static", "--seeds", "1", "--steps", "1",
                              "--report", str(tmp_path / "r.html")])
    assert_clean_exit(res, "eval")


def test_cli_eval_report_without_matplotlib(monkeypatch, tmp_path):
    hide(monkeypatch, "matplotlib")
    res = runner.invoke(app, ["eval", "--dataset", "generic", "--data", str(tmp_path / "none.csv"),
                              "--report", str(tmp_path / "r.html")])
    assert_clean_exit(res, "eval")


def test_cli_missing_extra_in_a_real_process(tmp_path):
    """The installed entry point: exit code 2, one error line on stderr, no traceback."""
    code = "import sys; sys.modules['redis'] = None; from liverec.cli import app; app(prog_name='liverec')"
    proc = subprocess.run(
        [sys.executable, "-c", code, "serve", "--open", "--store", f"sqlite:///{tmp_path / 's.db'}",
         "--state", "redis://127.0.0.1:6379/15", "--port", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "pip install 'liverec[redis]'" in " ".join(proc.stderr.split())
    assert proc.stdout == ""


def test_every_extra_is_named_in_the_table():
    assert set(EXTRAS) == {"postgres", "redis", "onnx", "eval", "ray"}
