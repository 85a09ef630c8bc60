"""A filter that matches nothing warns, naming that filter; filters that match stay silent."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from liverec import Engine, Item
from liverec.encode import Catalog
from liverec.errors import NoMatchWarning
from liverec.settings import Settings
from liverec.store import Store


@pytest.fixture
def cat() -> Catalog:
    c = Catalog(dim=2)
    c.upsert(["h1", "k1", "c1"], np.eye(3, 2, dtype=np.float32),
             [{"year": 1997, "genre": "fantasy"}, {"year": 1974, "genre": "horror"}, {"year": 1813}],
             ["Harry Potter", "Carrie", "Pride and Prejudice"])
    return c


def test_the_filter_that_matches_nothing_is_named(cat: Catalog) -> None:
    with pytest.warns(NoMatchWarning, match=r'filter year=\{"gte": 3000\} matches no item in the catalog') as rec:
        assert not cat.filter_mask({"genre": "fantasy", "year": {"gte": 3000}}).any()
    assert len(rec) == 1 and "genre" not in str(rec[0].message)  # the filter that matches is not blamed
    assert rec[0].filename == __file__  # points at the caller's line, not into liverec


def test_an_attribute_no_item_has_is_said_so(cat: Catalog) -> None:
    with pytest.warns(NoMatchWarning, match="no item in the catalog has the attribute 'lang'") as rec:
        cat.filter_mask({"lang": "en"})
    w = rec[0].message
    assert w.field == "filters.lang" and w.fix == "filter on an attribute the items carry: 'year', 'genre'."


def test_each_warning_names_its_filter_and_a_fix_from_what_the_items_hold(cat: Catalog) -> None:
    got = cat.unmatched({"genre": "scifi", "year": {"gt": 2000}})
    assert [w.field for w in got] == ["filters.genre", "filters.year"]
    assert got[0].fix == 'use a value the items hold, e.g. "fantasy", "horror".'
    assert got[1].fix == "the items' year runs from 1813 to 1997: choose a condition within that range."
    assert str(got[1]).startswith('filter year={"gt": 2000} matches no item') and str(got[1]).endswith(got[1].fix)
    together = cat.unmatched({"genre": "horror", "year": 1997})
    assert [(w.field, w.fix) for w in together] == [("filters", "drop or loosen one of the filters.")]
    assert cat.unmatched({"genre": "horror"}) == []  # a filter that matches earns nothing


def test_filters_that_each_match_but_not_together(cat: Catalog) -> None:
    with pytest.warns(NoMatchWarning, match="match no item together"):
        cat.filter_mask({"genre": "horror", "year": 1997})


def test_a_filter_that_matches_is_silent(cat: Catalog) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cat.filter_mask({"genre": ["fantasy", "horror"], "year": {"lt": 2000}}).sum() == 2


def test_a_removed_item_does_not_count_as_a_match(cat: Catalog) -> None:
    cat.remove(["k1"])
    with pytest.warns(NoMatchWarning, match='filter genre="horror" matches no item'):
        cat.filter_mask({"genre": "horror"})


def test_recommend_warns_the_caller(encoder) -> None:
    eng = Engine(Store.open("sqlite://"), Settings(encoder_progress=False), encoder)
    eng.add_items([Item("h1", "Harry Potter", {"year": 1997}), Item("k1", "Carrie", {"year": 1974})])
    with pytest.warns(NoMatchWarning, match=r'year=\{"lt": 1900\}') as rec:
        assert eng.recommend("u1", filters={"year": {"lt": 1900}}) == []
    assert rec[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r.item for r in eng.recommend("u1", filters={"year": {"lt": 1990}})] == ["k1"]
    eng.close()
