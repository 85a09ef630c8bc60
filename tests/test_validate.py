"""The shared input checks (liverec.validate) and the filters that rely on them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from liverec import Engine, Event, Item
from liverec.encode import Catalog
from liverec.errors import ValidationError
from liverec.validate import (
    MAX_DEPTH,
    check_event_value,
    check_filters,
    check_id,
    check_json_value,
    check_text,
)


def nested(depth: int, leaf: object = 1) -> object:
    x: object = leaf
    for _ in range(depth):
        x = {"a": x}
    return x


# ------------------------------------------------------------------------ ids
@pytest.mark.parametrize("good", ["u1", "<script>", "ana maría", "a%2Fb", "a.b", "ü" * 256, "x?y#z"])
def test_ids_accepted(good: str) -> None:
    check_id(good, "user")


@pytest.mark.parametrize(
    "bad, why",
    [
        ("a/b", "'/'"),
        ("a\x00b", "control character"),
        ("a\nb", "control character"),
        ("a\x7fb", "control character"),
        ("a\udc00", "surrogate"),
        ("..", "relative path segment"),
        (".", "relative path segment"),
        ("x" * 257, "257 characters"),
        ("", "non-empty"),
        (None, "non-empty"),
        (7, "non-empty"),
    ],
)
def test_ids_refused_with_the_rule_and_the_field(bad: object, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as e:
        check_id(bad, "events[2].user")
    assert e.value.field == "events[2].user"
    assert "1-256 characters" in str(e.value)


def test_event_ids_may_hold_a_slash_but_nothing_unstorable() -> None:
    check_id("ml/123", "events[0].id", path_safe=False)
    with pytest.raises(ValidationError, match="control character"):
        check_id("e\x00", "events[0].id", path_safe=False)


# ----------------------------------------------------------------------- text
def test_text_refuses_nul_and_lone_surrogates() -> None:
    check_text("plain text, ünïcode and emoji 📚", "interests")
    for bad in ("a\x00b", "\ud800", "ok \udfff"):
        with pytest.raises(ValidationError) as e:
            check_text(bad, "interests")
        assert e.value.field == "interests" and "remove it" in str(e.value)


# ----------------------------------------------------------------------- JSON
def test_json_depth_limit_counts_the_outermost_object() -> None:
    check_json_value(nested(MAX_DEPTH), "items[0].attributes")
    with pytest.raises(ValidationError, match=f"more than {MAX_DEPTH} levels") as e:
        check_json_value(nested(MAX_DEPTH + 1), "items[0].attributes")
    assert e.value.field == "items[0].attributes"


def test_json_depth_far_past_the_recursion_limit_is_a_validation_error() -> None:
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(ValidationError, match="levels deep"):
        check_json_value({"x": deep}, "context")


@pytest.mark.parametrize(
    "value, what",
    [
        ({"k": "\udc00"}, "lone surrogate"),
        ({"\ud83d": 1}, "key"),
        ({"year": 10**400}, "64-bit range"),
        ({"year": -(2**63) - 1}, "64-bit range"),
        ({"x": math.nan}, "finite"),
        ({"x": [1, math.inf]}, "finite"),
        ({"x": {1, 2}}, "not JSON"),
        ({"x": object()}, "not JSON"),
        ({1: "a"}, "not a string"),
        ({"t": "a\x00"}, "NUL"),
    ],
)
def test_json_values_that_break_stores_or_responses_are_refused(value: object, what: str) -> None:
    with pytest.raises(ValidationError, match=what) as e:
        check_json_value(value, "items[3].attributes")
    assert e.value.field == "items[3].attributes"


def test_json_within_limits_is_accepted() -> None:
    check_json_value({"year": 2**63 - 1, "r": -1.5e308, "tags": ["a", None, True], "m": {"n": [1, 2]}}, "attributes")


# -------------------------------------------------------------------- filters
@pytest.mark.parametrize(
    "filters",
    [
        {"year": [[1997]]},
        {"year": [{"a": 1}]},
        {"year": {"gte": {"gte": {"gte": 1}}}},
        {"year": {"gte": 10**400}},
        {"year": {"about": 3}},
        {"year": {}},
        {"year": None},
        {"year": math.nan},
        {"year": "19\udc0097"},
    ],
)
def test_malformed_filters_name_the_attribute(filters: dict) -> None:
    with pytest.raises(ValidationError) as e:
        check_filters(filters)
    assert e.value.field == "filters.year"


def test_well_formed_filters_pass() -> None:
    check_filters({"year": 1997, "lang": ["en", "fr"], "r": {"gte": 3.5, "lt": 5}, "ok": True})
    with pytest.raises(ValidationError, match="object of attribute filters"):
        check_filters([1, 2])


def test_event_value_is_bounded() -> None:
    check_event_value(1e6, "events[0].value", limit=1e6)
    check_event_value(-3, "events[0].value", limit=1e6)
    for bad in (1.7e308, -1e7, math.inf, math.nan, "1", True):
        with pytest.raises(ValidationError) as e:
            check_event_value(bad, "events[0].value", limit=1e6)
        assert e.value.field == "events[0].value"


# ------------------------------------------------- the catalog's filter columns
def catalog(attrs: list[dict]) -> Catalog:
    cat = Catalog(dim=2)
    cat.upsert([f"i{n}" for n in range(len(attrs))], np.ones((len(attrs), 2), np.float32), attrs, [""] * len(attrs))
    return cat


def test_one_odd_value_never_breaks_a_filter_for_the_others() -> None:
    # A value already in a catalog (from before these checks, or a removed item's
    # slot) that is beyond float64, a string, a list: comparisons skip it.
    cat = catalog([{"year": 1997}, {"year": 10**400}, {"year": "1999"}, {"year": [1]}, {"year": 2001.5}, {}])
    assert cat.filter_mask({"year": {"gte": 1990, "lt": 2000}}).tolist() == [True, False, False, False, False, False]
    assert cat.filter_mask({"year": [1997, 2001.5]}).tolist() == [True, False, False, False, True, False]
    assert cat.filter_mask({"year": 1997}).tolist() == [True, False, False, False, False, False]
    cat.remove(["i1"])
    assert cat.filter_mask({"year": {"gte": 1990}}).tolist() == [True, False, False, False, True, False]


def test_numeric_column_stays_numeric_and_refuses_a_string_bound() -> None:
    cat = catalog([{"year": 1997}, {"year": 2005}, {"year": None}])
    values, present = cat.column("year")
    assert values.dtype == np.float64 and present.tolist() == [True, True, False]
    with pytest.raises(ValidationError) as e:
        cat.filter_mask({"year": {"gte": "1990"}})
    assert e.value.field == "filters.year"


def test_list_attributes_of_equal_length_stay_one_value_per_item() -> None:
    cat = catalog([{"g": ["a", "b"]}, {"g": ["c", "d"]}])
    values, _ = cat.column("g")
    assert values.shape == (2,)
    assert cat.filter_mask({"g": ["a"]}).tolist() == [False, False]


# ------------------------------------------------------------ through the engine
class _Zero:
    dim, model_id = 4, "zero"

    def encode(self, texts, *, progress: bool = False) -> np.ndarray:
        return np.ones((len(texts), 4), np.float32) / 2


@pytest.fixture
def engine() -> Engine:
    from liverec.settings import Settings
    from liverec.store import Store

    eng = Engine(Store.open("sqlite://"), Settings(encoder_progress=False, sources={"trending": {}},
                                                   fusion_weights={"trending": 1.0}), _Zero())
    eng.add_items([Item(id="b1", text="one"), Item(id="b2", text="two")])
    yield eng
    eng.close()


@pytest.mark.parametrize(
    "item, field",
    [
        (Item(id="x", attributes=nested(MAX_DEPTH + 1)), "items[0].attributes"),
        (Item(id="x", attributes={"k": "\udc00"}), "items[0].attributes"),
        (Item(id="x", attributes={"year": 10**400}), "items[0].attributes"),
        (Item(id="x", attributes={"r": math.inf}), "items[0].attributes"),
        (Item(id="x", text="t\udc00"), "items[0].text"),
        (Item(id="a/b"), "items[0].id"),
        (Item(id="a\udc00"), "items[0].id"),
    ],
)
def test_engine_add_items_refuses_and_stores_nothing(engine: Engine, item: Item, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        engine.add_items([item])
    assert e.value.field == field
    assert engine.store.count_items() == 2 and "x" not in engine.catalog


@pytest.mark.parametrize(
    "event, field",
    [
        (Event(user="u", item="b1", value=1.7e308), "events[0].value"),
        (Event(user="u", item="b1", value=-1e9), "events[0].value"),
        (Event(user="u", item="b1", context={"k": "\udc00"}), "events[0].context"),
        (Event(user="u", item="b1", context=nested(MAX_DEPTH + 5)), "events[0].context"),
        (Event(user="u", item="b1", context={"n": 10**30}), "events[0].context"),
        (Event(user="a/b", item="b1"), "events[0].user"),
        (Event(user="u\udc00", item="b1"), "events[0].user"),
        (Event(user="u", item="b1", id="e\x00"), "events[0].id"),
    ],
)
def test_engine_record_refuses_and_stores_nothing(engine: Engine, event: Event, field: str) -> None:
    with pytest.raises(ValidationError) as e:
        engine.record(event)
    assert e.value.field == field
    assert engine.store.count_events() == 0


def test_engine_event_value_limit_is_a_setting(engine: Engine) -> None:
    assert engine.record(Event(user="u", item="b1", value=1e6))
    assert engine.record(Event(user="v", item="b2", value=1e6))
    recs = engine.recommend("new", k=2)
    assert len(recs) == 2 and all(math.isfinite(r.score) for r in recs)
    assert np.isfinite(engine.learners["trending"].raw_).all()
    engine.delete_user("u")
    with pytest.raises(ValidationError, match="max_event_value"):
        engine.record(Event(user="u", item="b1", value=1e6 + 1))


def test_engine_recommend_validates_filters(engine: Engine) -> None:
    with pytest.raises(ValidationError) as e:
        engine.recommend("u", filters={"year": [[1997]]})
    assert e.value.field == "filters.year"
