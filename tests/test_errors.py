"""Every error carries a fix, and what a CLI or HTTP user reads names no Python method."""

from __future__ import annotations

import re

import pytest

from liverec import Engine, Event, Item
from liverec.errors import (ConflictError, LiverecError, NotFittedError, NotFoundError, StoreError, UnknownItemError,
                            UnknownKindError, ValidationError)
from liverec.settings import Settings
from liverec.store import Store
from liverec.validate import check_event, check_event_value

PYTHON_TERMS = re.compile(r"Engine\.|Settings\(|\w+\(\[?\w+=|\.add_items|\.record")


@pytest.mark.parametrize("cls", [LiverecError, ValidationError, UnknownKindError, NotFoundError, UnknownItemError,
                                 ConflictError, StoreError, NotFittedError])
def test_every_error_has_a_fix_in_plain_words(cls) -> None:
    e = cls("something happened.")
    assert e.fix and not PYTHON_TERMS.search(e.fix)
    assert cls("x", fix="do this.").fix == "do this."


def test_validation_messages_name_settings_not_python_calls() -> None:
    for call in (lambda: check_event_value(1e9, "events[0].value", limit=1e6),
                 lambda: check_event(Event(user="u", item="i", kind="share"), "events[0]", kinds={"click": 1.0},
                                     max_value=1e6),
                 lambda: check_event(Event(user="u", item="i", kind="rating", value=9), "events[0]",
                                     kinds={"rating": 1.0}, max_value=1e6)):
        with pytest.raises(ValidationError) as info:
            call()
        assert not PYTHON_TERMS.search(str(info.value)), str(info.value)
        assert info.value.fix and not PYTHON_TERMS.search(info.value.fix)


def test_an_unknown_item_says_what_in_neutral_words(encoder) -> None:
    eng = Engine(Store.open("sqlite://"), Settings(encoder_progress=False), encoder)
    eng.add_items([Item("b1", "The Hobbit")])
    with pytest.raises(UnknownItemError) as info:
        eng.record_many([Event(user="u", item="b1"), Event(user="u", item="b7")])
    assert str(info.value).startswith("events[1].item 'b7' is not in the catalog")
    assert not PYTHON_TERMS.search(str(info.value)), str(info.value)
    assert "auto_create_items" in info.value.fix
    with pytest.raises(UnknownItemError) as info:
        eng.explain("u", "b7")
    assert not PYTHON_TERMS.search(str(info.value)) and info.value.fix
    assert eng.store.count_events() == 0
    eng.close()
