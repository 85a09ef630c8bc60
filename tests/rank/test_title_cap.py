"""A list does not collapse on one title word: after "The Red House", not nine other Houses."""

from __future__ import annotations

import numpy as np
import pytest

from liverec import Engine, Event, Item
from liverec.rank.slate import build_slate, title_words
from liverec.settings import Settings
from liverec.store import Store

HOUSES = ["House of Leaves", "The Good House", "House Rules", "Open House", "The Gate House", "A Painted House",
          "The House at Riverton", "The Kitchen House", "Bleak House", "The House of the Spirits", "House of Night",
          "Little House on the Prairie"]
OTHERS = ["Dune", "Emma", "Carrie", "Dracula", "Ulysses", "Beloved", "Rebecca", "Persuasion", "Middlemarch",
          "Frankenstein", "Jane Eyre", "Moby Dick", "The Shining", "Little Women", "Great Expectations"]


def _list(encoder, cap: int | None) -> list[str]:
    eng = Engine(Store.open("sqlite://"), Settings(encoder_progress=False, max_per_title_word=cap), encoder)
    titles = ["The Red House", *HOUSES, *OTHERS]
    eng.add_items([Item(f"b{i}", t, {"title": t}) for i, t in enumerate(titles)])
    eng.record(Event(user="buyer", item="b0", kind="purchase"))
    out = [eng.get_item(r.item).attributes["title"] for r in eng.recommend("buyer", k=10)]
    eng.close()
    return out


def test_at_most_three_titles_share_a_word_and_the_list_stays_full(encoder) -> None:
    free = _list(encoder, None)
    assert sum("House" in t for t in free) > 3  # without the cap the list collapses: the cap is what helps
    capped = _list(encoder, 3)
    assert len(capped) == 10 and sum("House" in t for t in capped) == 3, capped
    assert [t for t in capped if "House" in t] == [t for t in free if "House" in t][:3]  # the best three stay


def test_items_over_the_cap_fill_a_list_that_would_be_short() -> None:
    titles = ["Red House", "Blue House", "Green House", "Dune"]
    order = build_slate(np.array([4.0, 3.0, 2.0, 1.0]), None, 4, words=lambda i: title_words(titles[i]), max_per_word=1)
    assert order.tolist() == [0, 3, 1, 2]


def test_with_diversity_an_item_over_the_cap_waits_and_the_next_best_by_mmr_takes_its_place() -> None:
    fused = np.array([1.0, 0.9, 0.8, 0.7])
    vecs = np.array([[1, 0], [1, 0], [0, 1], [0.7071, 0.7071]], dtype=np.float32)
    titles = ["Red House", "Dune", "Open House", "The Sea"]
    free = build_slate(fused, vecs, 3, diversity=0.5)
    assert free.tolist() == [0, 2, 1]  # MMR prefers the unlike third item to the second
    capped = build_slate(fused, vecs, 3, diversity=0.5, words=lambda i: title_words(titles[i]), max_per_word=1)
    assert capped.tolist() == [0, 1, 3]  # "Open House" waits; nothing made it needed


def test_stop_words_and_short_words_do_not_tie_titles() -> None:
    assert title_words("The Lord of the Rings") == {"lord", "rings"}
    assert title_words("It (1990)") == frozenset()


@pytest.mark.parametrize("cap", [0, -1])
def test_the_cap_is_a_positive_number_or_off(cap: int) -> None:
    with pytest.raises(ValueError):
        Settings(max_per_title_word=cap)
