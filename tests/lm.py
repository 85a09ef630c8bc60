"""The real shipped language model, loaded once per test process and memoised.

Tests use the real all-MiniLM-L6-v2 (no stand-in encoder); memoising by text keeps
the suite fast when many engines encode the same catalog.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pytest

from liverec.data import load_goodbooks
from liverec.encode import SentenceTransformerEncoder


class MemoEncoder:
    """Wraps the real encoder; identical texts are encoded once per process."""

    def __init__(self, inner: SentenceTransformerEncoder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.memo: dict[str, np.ndarray] = {}
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if todo:
            self.calls += len(todo)
            for t, v in zip(todo, self.inner.encode(todo)):
                self.memo[t] = v
        return np.stack([self.memo[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


@lru_cache(maxsize=1)
def shared_encoder() -> MemoEncoder:
    return MemoEncoder(SentenceTransformerEncoder())


@pytest.fixture(scope="session")
def encoder() -> MemoEncoder:
    return shared_encoder()


#: The first N books of the shipped catalog: includes Harry Potter and Stephen King.
BOOKS_N = 1500


@pytest.fixture(scope="session")
def books():
    return load_goodbooks(limit=BOOKS_N)
