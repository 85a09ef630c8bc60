"""Every backend accepts or refuses the same input the same way (NUL, lone surrogates),
keeps the DP budget, and erases a user's interest vector."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from liverec import Event, Item
from liverec.encode import text_hash
from liverec.errors import ValidationError
from liverec.store import Store


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "postgresql"])
def store(request, tmp_path: Path, postgres_url: Callable[[], str]) -> Iterator[Store]:
    if request.param == "sqlite-memory":
        url = "sqlite://"
    elif request.param == "sqlite-file":
        url = f"sqlite:///{tmp_path / 'h.db'}"
    else:
        url = postgres_url()
    st = Store.open(url)
    yield st
    st.close()
    if request.param == "postgresql":
        postgres_url.drop(url)  # type: ignore[attr-defined]


def test_reads_by_an_id_holding_nul_find_nothing_on_every_backend(store: Store) -> None:
    store.upsert_items([Item(id="i1", text="x")])
    store.append_events([Event(user="u1", item="i1", id="e1")])
    assert store.get_item("\x00") is None and store.get_items(["i1", "a\x00"])[0].id == "i1"
    assert store.user_events("\x00") == [] and list(store.iter_events(user="\x00")) == []
    assert store.get_interests("\x00") is None and not store.has_event("\x00")
    assert list(store.iter_impressions(user="\x00")) == []
    assert store.delete_items(["\x00"]) == 0
    assert store.delete_user("\x00")["events"] == 0
    assert store.count_events() == 1


@pytest.mark.parametrize("bad", ["a\x00b", "lone \udc00 surrogate"])
def test_interests_that_a_backend_cannot_hold_are_refused_everywhere(store: Store, bad: str) -> None:
    with pytest.raises(ValidationError) as e:
        store.set_interests("u1", bad)
    assert e.value.field == "interests"
    assert store.get_interests("u1") is None


def test_privacy_budget_is_spent_atomically_and_never_overshoots(store: Store) -> None:
    assert store.spend("dp", 4, limit=10) == (True, pytest.approx(4))
    assert store.spend("dp", 4, limit=10) == (True, pytest.approx(8))
    assert store.spend("dp", 4, limit=10) == (False, pytest.approx(8))
    assert store.spend("dp", 2, limit=10) == (True, pytest.approx(10))
    assert store.spend("dp", 0.001, limit=10)[0] is False
    assert store.spend("other", 0.1, limit=10) == (True, pytest.approx(0.1))


def test_erasure_removes_the_interest_vector_and_the_event_ids(store: Store) -> None:
    interests = "sea stories"
    store.set_interests("u1", interests)
    store.put_vectors("m", {text_hash(interests): np.ones(3, np.float32), text_hash("other"): np.ones(3, np.float32)})
    store.append_events([Event(user="u1", item="i1", id="e1")])
    counts = store.delete_user("u1")
    assert counts["events"] == 1
    assert store.get_vectors("m", [text_hash(interests), text_hash("other")]).keys() == {text_hash("other")}
    assert store.append_events([Event(user="u1", item="i1", id="e1")]) == [0]  # a forgotten id is new again
