"""The catalog's column-major copy of its vectors follows every write and is never saved."""

from __future__ import annotations

import pickle

import numpy as np

from liverec.encode import catalog as catalog_module
from liverec.encode.catalog import Catalog


def _upsert(cat: Catalog, ids: list[str], vectors: np.ndarray) -> None:
    cat.upsert(ids, vectors.astype(np.float32), [{} for _ in ids], ["" for _ in ids])


def test_the_column_copy_follows_writes_growth_and_removal():
    rng = np.random.default_rng(0)
    cat = Catalog(dim=8, capacity=4)
    _upsert(cat, [f"i{n}" for n in range(3)], rng.standard_normal((3, 8)))
    q = rng.standard_normal(8).astype(np.float32)
    first = cat.vectors_by_column()
    assert first is not None and first.strides[0] == first.itemsize and np.allclose(first @ q, cat.vectors @ q, atol=1e-5)
    _upsert(cat, ["i1"], rng.standard_normal((1, 8)))  # re-encoded in place
    _upsert(cat, [f"n{n}" for n in range(10)], rng.standard_normal((10, 8)))  # past the capacity
    cat.remove(["i0"])
    cols = cat.vectors_by_column()
    assert cols is not None and cols.shape == cat.vectors.shape
    assert np.array_equal(cols, cat.vectors)  # the same numbers, another memory order
    assert np.allclose(cols @ q, cat.vectors @ q, atol=1e-5)


def test_the_column_copy_is_not_saved_and_has_a_size_limit(monkeypatch):
    cat = Catalog(dim=4)
    _upsert(cat, ["a", "b"], np.eye(2, 4))
    assert cat.vectors_by_column() is not None
    again = pickle.loads(pickle.dumps(cat))
    assert "_by_column" not in again.__dict__
    assert np.array_equal(again.vectors_by_column(), cat.vectors)  # rebuilt on first use
    monkeypatch.setattr(catalog_module, "BY_COLUMN_MAX_ITEMS", 1)
    assert cat.vectors_by_column() is None  # above the limit, scoring reads the rows as they are
