"""The ONNX Runtime path gives the PyTorch path's vectors, and the engine can use it."""

from __future__ import annotations

import numpy as np
import pytest

from liverec import Engine, Event
from liverec.encode.onnx import OnnxEncoder
from liverec.encode.text import render_text
from liverec.errors import LiverecError
from liverec.settings import DEFAULT_TEXT_TEMPLATE, Settings

pytestmark = pytest.mark.slow


def test_onnx_matches_torch_and_shares_the_cache_key(encoder, books, tmp_path) -> None:
    texts = [render_text(b.text, b.attributes, DEFAULT_TEXT_TEMPLATE) for b in books[:64]]
    texts += ["", "x" * 5000]  # empty and longer than the 256-token limit (truncated like torch)
    onnx = OnnxEncoder(cache_dir=str(tmp_path / "onnx"), batch_size=16)
    got, want = onnx.encode(texts), encoder.inner.encode(texts)
    assert got.shape == want.shape == (len(texts), 384) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert onnx.model_id == encoder.model_id  # same vectors, same cache entries
    assert list((tmp_path / "onnx").glob("*.onnx"))  # exported once, reused by the next instance
    again = OnnxEncoder(cache_dir=str(tmp_path / "onnx"))
    assert np.abs(again.encode(texts[:3]) - got[:3]).max() < 1e-6
    assert onnx.encode([]).shape == (0, 384)


def test_engine_with_onnx_backend(tmp_path, books, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # the export lands in this test's ~/.cache
    eng = Engine.open(settings=Settings(encoder_backend="onnx", encoder_progress=False))
    try:
        assert isinstance(eng.encoder.encoder, OnnxEncoder)
        eng.add_items(books[:50])
        eng.record(Event(user="u", item=books[1].id, kind="like"))
        assert len(eng.recommend("u", k=5)) == 5
    finally:
        eng.close()


def test_onnx_refuses_what_it_cannot_run(tmp_path) -> None:
    with pytest.raises(LiverecError, match="local model folder"):
        OnnxEncoder("sentence-transformers/some-hub-name")
