"""The machine vector cache: shared by every store, off on request, safe across processes,
and never a place where an erased user's text survives."""

from __future__ import annotations

import dataclasses
import multiprocessing

import numpy as np
import pytest

from liverec import Engine
from liverec.encode.cache import cache_url, machine_cache_url, open_cache
from liverec.encode.text import text_hash
from liverec.errors import StoreError
from liverec.settings import Settings

N = 40


def _open(url: str, encoder, **overrides) -> Engine:
    return Engine.open(url, settings=Settings(store=url, encoder_progress=False, **overrides), encoder=encoder)


def test_a_second_store_encodes_nothing_the_first_one_encoded(tmp_path, encoder, books):
    with _open(f"sqlite:///{tmp_path / 'a.db'}", encoder) as a:
        a.add_items(books[:N])
        assert a.encoder.calls == N
        first = a.catalog.vectors.copy()
    with _open(f"sqlite:///{tmp_path / 'b.db'}", encoder) as b:
        b.add_items(books[:N])
        assert b.encoder.calls == 0  # every vector came from the machine cache
        np.testing.assert_array_equal(b.catalog.vectors, first)
        assert b.store.count_vectors() == N  # and the new store holds its own copy
    with _open(f"sqlite:///{tmp_path / 'c.db'}", encoder) as c:  # a changed text is encoded, once
        changed = dataclasses.replace(books[0], text=books[0].text + " Revised edition.")
        c.add_items([changed, *books[1:N]])
        assert c.encoder.calls == 1


def test_the_default_cache_is_one_file_per_machine_from_platformdirs(tmp_path, monkeypatch, encoder, books):
    monkeypatch.delenv("LIVEREC_VECTOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "home-cache"))
    assert machine_cache_url() == f"sqlite:///{tmp_path / 'home-cache' / 'liverec' / 'vectors.db'}"
    with _open("sqlite://", encoder) as eng:
        eng.add_items(books[:5])
    cache = open_cache(machine_cache_url())
    try:
        assert cache.count_vectors(encoder.model_id) == 5
    finally:
        cache.close()


def test_the_cache_can_be_turned_off_or_moved(tmp_path, monkeypatch, encoder, books):
    monkeypatch.setenv("LIVEREC_VECTOR_CACHE", "off")
    assert cache_url(Settings().vector_cache) is None
    with _open("sqlite://", encoder) as eng:
        assert eng.encoder.shared is None
        eng.add_items(books[:3])
        assert eng.encoder.calls == 3
    elsewhere = tmp_path / "team-cache.db"
    monkeypatch.setenv("LIVEREC_VECTOR_CACHE", str(elsewhere))
    with _open("sqlite://", encoder) as eng:
        eng.add_items(books[:3])
    assert elsewhere.exists() and open_cache(f"sqlite:///{elsewhere}").count_vectors() == 3


def test_interests_never_enter_the_machine_cache_and_erasure_leaves_no_user_vector(tmp_path, encoder, books):
    text = "slow-burning nautical adventures with lighthouse keepers"
    h = text_hash(text)
    shared_url = f"sqlite:///{tmp_path / 'shared.db'}"
    with _open(f"sqlite:///{tmp_path / 'a.db'}", encoder, vector_cache=shared_url) as eng:
        eng.add_items(books[:N])
        eng.set_interests("ana", text)
        shared = eng.encoder.shared
        assert shared is not None
        assert shared.get_vectors(encoder.model_id, [h]) == {}  # per-user text: the store only
        assert h in eng.store.get_vectors(encoder.model_id, [h])
        # A cache filled by older code (interests went through a shared cache) is cleaned too.
        shared.put_vectors(encoder.model_id, eng.store.get_vectors(encoder.model_id, [h]))
        eng.delete_user("ana")
        assert shared.get_vectors(encoder.model_id, [h]) == {}
        assert eng.store.get_vectors(encoder.model_id, [h]) == {}
        assert shared.count_vectors() == N  # the catalog's vectors stay
    with _open(f"sqlite:///{tmp_path / 'a.db'}", encoder, vector_cache=shared_url) as again:
        assert again.user_state("ana").interests_text is None


def _writer(url: str, seed: int, n: int) -> int:
    rng = np.random.default_rng(seed)
    cache = open_cache(url)
    try:
        for i in range(0, n, 10):  # many small commits, interleaved with the other writers
            cache.put_vectors("m", {f"{seed}-{j}": rng.random(8, dtype=np.float32) for j in range(i, i + 10)})
            cache.get_vectors("m", [f"{(seed + 1) % 3}-{j}" for j in range(n)])
        return cache.count_vectors("m")
    finally:
        cache.close()


@pytest.mark.slow
def test_processes_share_one_new_cache_file_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh' / 'vectors.db'}"
    (tmp_path / "fresh").mkdir()
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        counts = pool.starmap(_writer, [(url, seed, 200) for seed in range(3)])
    assert min(counts) >= 200
    cache = open_cache(url)
    try:
        assert cache.count_vectors("m") == 600
    finally:
        cache.close()


def test_an_unwritable_default_cache_is_a_warning_and_a_set_one_an_error(tmp_path, monkeypatch, encoder, books, caplog):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache folder would go")
    monkeypatch.delenv("LIVEREC_VECTOR_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    with _open("sqlite://", encoder) as eng:  # the engine runs on its store's own vectors
        assert eng.encoder.shared is None
        eng.add_items(books[:3])
        assert eng.n_items == 3
    assert "no machine vector cache" in caplog.text and "LIVEREC_VECTOR_CACHE" in caplog.text
    monkeypatch.setenv("LIVEREC_VECTOR_CACHE", str(blocked / "vectors.db"))
    with pytest.raises(StoreError, match="cannot open the vector cache") as err:
        _open("sqlite://", encoder)
    assert "'off'" in err.value.fix
