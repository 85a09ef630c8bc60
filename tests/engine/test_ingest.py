"""The ingestor on its own: a bad group is refused whole, good groups land in one append,
new events are learned once and in order, replicated ingestors remember their own ids."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from liverec.encode import Catalog
from liverec.errors import UnknownItemError, ValidationError
from liverec.ingest import Ingestor
from liverec.models.base import FeedbackConfig
from liverec.settings import Settings
from liverec.store import Store
from liverec.types import Event


@pytest.fixture
def parts():
    cat = Catalog(dim=2)
    cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["", ""])
    store = Store.open()
    learned: list[Event] = []
    seen: list[Event] = []
    created: list[list[str]] = []

    def make(**settings) -> Ingestor:
        return Ingestor(store, cat, Settings(**settings), threading.RLock(), FeedbackConfig, write_lock=threading.RLock(),
                        learn=learned.extend, seen=seen.append, create_items=created.append)

    return make, store, learned, seen, created


def test_a_bad_group_is_refused_whole_and_the_others_land(parts):
    make, store, learned, _, _ = parts
    ing = make()
    good = [Event(user="u", item="a", id="1"), Event(user="u", item="b", id="2")]
    bad_value = [Event(user="v", item="a", id="3"), Event(user="v", item="a", kind="click", value=float("nan"), id="4")]
    unknown = [Event(user="w", item="a", id="5"), Event(user="w", item="zz", id="6")]
    out = ing.record_groups([good, bad_value, unknown])
    assert out[0] == 2
    assert isinstance(out[1], ValidationError) and out[1].field == "events[1].value"
    assert isinstance(out[2], UnknownItemError) and out[2].field == "events[1].item"
    assert "not in the catalog" in str(out[2]) and out[2].fix
    assert [e.id for e in learned] == ["1", "2"]
    assert [e.id for _, e in store.iter_events()] == ["1", "2"]


def test_a_repeated_id_is_stored_and_learned_once(parts):
    make, store, learned, _, _ = parts
    ing = make()
    e = Event(user="u", item="a", id="same")
    assert ing.record_groups([[e]]) == [1]
    assert ing.record_groups([[e]]) == [0]
    assert [x.id for x in learned] == ["same"]
    assert len(list(store.iter_events())) == 1


def test_learn_false_only_records_the_user_state(parts):
    make, _, learned, seen, _ = parts
    make().record_groups([[Event(user="u", item="a", id="1")]], learn=False)
    assert learned == [] and [e.id for e in seen] == ["1"]


def test_unknown_items_are_created_when_the_setting_says_so(parts):
    make, _, learned, _, created = parts
    out = make(auto_create_items=True).record_groups([[Event(user="u", item="new", id="1")]])
    assert out == [1] and created == [["new"]] and [e.item for e in learned] == ["new"]


def test_a_replicated_ingestor_remembers_what_it_learned(parts):
    make, _, _, _, _ = parts
    ing = make()
    ing.record_groups([[Event(user="u", item="a", id="1")]])
    assert ing.own == set()
    ing.replicated = True
    ing.record_groups([[Event(user="u", item="b", id="2")]])
    assert ing.own == {"2"}
