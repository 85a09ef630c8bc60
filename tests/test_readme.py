"""The README's Python blocks run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import liverec.engine

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_blocks():
    assert BLOCKS


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_readme_python_block_runs(n, tmp_path, monkeypatch, encoder, capsys):
    # The memoised shipped model instead of loading it again; everything else is real.
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    monkeypatch.chdir(tmp_path)
    exec(compile(BLOCKS[n], f"README.md python block {n + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "eng.fit(tune=True" in BLOCKS[n]:
        assert "too small" in out or "not enough history" in out
