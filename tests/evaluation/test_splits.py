"""Evaluation protocols: leakage, temporal order, fractions, determinism."""

from __future__ import annotations

import doctest
import random
from collections import Counter, defaultdict

import numpy as np
import pytest

from liverec import Event
from liverec.errors import ValidationError
from liverec.evaluation import splits as S
from liverec.evaluation.splits import (
    ColdSplit,
    Split,
    StreamSplit,
    check_no_overlap,
    cold_item_split,
    stream_split,
    temporal_user_split,
)


def ev(user: str, item: str, ts: float, eid: str) -> Event:
    return Event(user=user, item=item, timestamp=float(ts), id=eid)


def make_log(
    n_events: int = 3000, n_users: int = 60, n_items: int = 80, seed: int = 7
) -> list[Event]:
    """A random log with many timestamp ties (integer times in a small range),
    unique ids, and an input order unrelated to time."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n_events)
    # Skewed item popularity, so some items have few interactions.
    items = np.minimum(rng.zipf(1.3, n_events) - 1, n_items - 1)
    times = rng.integers(0, 200, n_events)
    ids = rng.permutation(n_events)
    return [ev(f"u{u}", f"i{i}", t, f"e{n:05d}") for u, i, t, n in zip(users, items, times, ids)]


def key(e: Event) -> tuple[float, str]:
    return (e.timestamp, e.id)


@pytest.fixture(scope="module")
def log() -> list[Event]:
    return make_log()


# ------------------------------------------------------------- check_no_overlap
def test_check_no_overlap_raises_on_a_crafted_leaky_split() -> None:
    e1, e2, e3 = ev("u", "a", 1, "e1"), ev("u", "b", 2, "e2"), ev("u", "c", 3, "e3")
    check_no_overlap([e1, e2], [e3])  # clean: no error
    with pytest.raises(ValidationError, match="leaking") as info:
        check_no_overlap([e1, e2], [e2, e3])
    assert "'e2'" in str(info.value) and "'e1'" not in str(info.value)
    # Same id, different content: still the same event on both sides.
    with pytest.raises(ValidationError, match="e1"):
        check_no_overlap([e1], [ev("v", "z", 9, "e1")])


def test_check_no_overlap_raises_when_a_cold_item_is_in_train() -> None:
    train = [ev("u", "warm", 1, "e1"), ev("u", "ice", 2, "e2")]
    test = [ev("v", "ice", 3, "e3")]
    check_no_overlap(train[:1], test, cold_items={"ice"})
    with pytest.raises(ValidationError, match="cold item.*'ice'"):
        check_no_overlap(train, test, cold_items={"ice"})


def test_splits_call_the_check_before_returning() -> None:
    # The same event id twice (at t=0 and t=9): the temporal split puts one copy in
    # each side, which is a leak the split must refuse to return.
    evs = [ev("u", "a", 0, "dup"), ev("u", "b", 1, "x1"), ev("u", "c", 9, "dup")]
    with pytest.raises(ValidationError, match="leaking"):
        temporal_user_split(evs, test_frac=0.2)
    with pytest.raises(ValidationError, match="leaking"):
        stream_split(evs, warmup_frac=0.5)
    # Cold: "a" is the only eligible item; "dup" also names an event on warm item "b".
    cold = [ev(f"u{n}", "a", n, f"a{n}") for n in range(5)] + [ev("u0", "b", 9, "a0")]
    with pytest.raises(ValidationError, match="leaking"):
        cold_item_split(cold, min_interactions=5)


# ---------------------------------------------------------- temporal_user_split
def test_temporal_split_partitions_the_log_without_leaks(log: list[Event]) -> None:
    s = temporal_user_split(log)
    assert isinstance(s, Split)
    train_ids, test_ids = {e.id for e in s.train}, {e.id for e in s.test}
    assert not train_ids & test_ids
    assert train_ids | test_ids == {e.id for e in log}
    assert len(s.train) + len(s.test) == len(log)


def test_temporal_split_respects_per_user_time(log: list[Event]) -> None:
    s = temporal_user_split(log)
    train_by, test_by = defaultdict(list), defaultdict(list)
    for e in s.train:
        train_by[e.user].append(e)
    for e in s.test:
        test_by[e.user].append(e)
    assert test_by  # the check below is not vacuous
    for user, tests in test_by.items():
        last_train = max(key(e) for e in train_by[user])
        first_test = min(key(e) for e in tests)
        assert min(e.timestamp for e in tests) >= max(e.timestamp for e in train_by[user])
        assert first_test > last_train  # ties on time are cut by event id


def test_temporal_split_per_user_fractions() -> None:
    # n events -> expected test count: round-half-up(0.2 n), clamped to [1, n - 1].
    expected = {1: 0, 2: 1, 3: 1, 5: 1, 8: 2, 10: 2, 13: 3, 20: 4}
    evs = [ev(f"n{n}", f"i{t}", t, f"n{n}-{t:02d}") for n in expected for t in range(n)]
    random.Random(0).shuffle(evs)
    s = temporal_user_split(evs, test_frac=0.2)
    got = Counter(e.user for e in s.test)
    assert {n: got.get(f"n{n}", 0) for n in expected} == expected
    # The single-event user keeps their event in train and has no test target.
    assert [e.user for e in s.train].count("n1") == 1
    assert "n1" not in s.test_by_user


def test_temporal_split_rounds_half_up_and_keeps_one_train_event() -> None:
    four = [ev("u", f"i{t}", t, f"e{t}") for t in range(4)]
    # 0.5 * 5 = 2.5 -> 3 (not banker's 2); 0.9 * 4 = 3.6 -> 4, clamped to n - 1 = 3.
    five = four + [ev("u", "i4", 4, "e4")]
    assert len(temporal_user_split(five, test_frac=0.5).test) == 3
    assert len(temporal_user_split(four, test_frac=0.9).train) == 1


def test_temporal_split_overall_fraction_on_a_random_log(log: list[Event]) -> None:
    s = temporal_user_split(log, test_frac=0.2)
    assert len(s.test) / len(log) == pytest.approx(0.2, abs=0.01)


def test_temporal_split_breaks_time_ties_by_event_id() -> None:
    pairs = [("c", "e3"), ("a", "e1"), ("d", "e4"), ("b", "e2")]
    evs = [ev("u", item, 5, eid) for item, eid in pairs]
    s = temporal_user_split(evs, test_frac=0.5)
    assert [e.id for e in s.train] == ["e1", "e2"]
    assert [e.id for e in s.test] == ["e3", "e4"]


def test_test_by_user_excludes_items_already_in_train() -> None:
    evs = [
        ev("u", "a", 1, "u1"), ev("u", "b", 2, "u2"), ev("u", "a", 3, "u3"), ev("u", "c", 4, "u4"),
        # v re-interacts with their train item only: no relevance target.
        ev("v", "x", 1, "v1"), ev("v", "x", 2, "v2"),
    ]
    s = temporal_user_split(evs, test_frac=0.5)
    assert [e.id for e in s.test] == ["v2", "u3", "u4"]
    assert s.test_by_user == {"u": {"c"}}
    assert s.train_by_user == {"u": {"a", "b"}, "v": {"x"}}


def test_test_by_user_matches_an_independent_recount(log: list[Event]) -> None:
    s = temporal_user_split(log)
    train_items, test_items = defaultdict(set), defaultdict(set)
    for e in s.train:
        train_items[e.user].add(e.item)
    for e in s.test:
        test_items[e.user].add(e.item)
    expected = {
        u: items - train_items[u] for u, items in test_items.items() if items - train_items[u]
    }
    assert s.test_by_user == expected
    assert s.train_by_user == dict(train_items)
    assert all(s.test_by_user.values())


def test_temporal_split_is_deterministic_and_order_independent(log: list[Event]) -> None:
    shuffled = list(log)
    random.Random(1).shuffle(shuffled)
    a, b = temporal_user_split(log), temporal_user_split(list(log))
    c = temporal_user_split(shuffled)
    assert a == b == c
    # Output is chronological by (timestamp, id).
    assert [key(e) for e in a.train] == sorted(key(e) for e in a.train)
    assert [key(e) for e in a.test] == sorted(key(e) for e in a.test)


def test_temporal_split_does_not_mutate_its_input(log: list[Event]) -> None:
    before = list(log)
    temporal_user_split(log)
    assert log == before


@pytest.mark.parametrize("frac", [0, 1, -0.1, 1.5, float("nan"), True])
def test_temporal_split_rejects_bad_fractions(frac: float) -> None:
    with pytest.raises(ValidationError, match="test_frac"):
        temporal_user_split([ev("u", "a", 0, "e0")], test_frac=frac)


# ------------------------------------------------------------------ stream_split
def test_stream_split_is_a_time_ordered_cut(log: list[Event]) -> None:
    s = stream_split(log, warmup_frac=0.5)
    assert isinstance(s, StreamSplit)
    assert len(s.warmup) == 1500  # 0.5 * 3000
    assert list(s.warmup) + list(s.stream) == sorted(log, key=key)
    assert max(key(e) for e in s.warmup) < min(key(e) for e in s.stream)
    stream_keys = [key(e) for e in s.stream]
    assert stream_keys == sorted(stream_keys)


def test_stream_split_fractions_and_bounds() -> None:
    evs = [ev("u", "a", t, f"e{t}") for t in range(7)][::-1]
    # 0.5 * 7 = 3.5 -> 4 warmup events; 0.3 * 7 = 2.1 -> 2.
    assert [e.id for e in stream_split(evs, warmup_frac=0.5).warmup] == ["e0", "e1", "e2", "e3"]
    stream_ids = [e.id for e in stream_split(evs, warmup_frac=0.3).stream]
    assert stream_ids == [f"e{t}" for t in range(2, 7)]
    assert len(stream_split(evs, warmup_frac=0.0).stream) == 7
    assert len(stream_split(evs, warmup_frac=1.0).warmup) == 7
    assert stream_split([], warmup_frac=0.5) == StreamSplit((), ())
    with pytest.raises(ValidationError, match="warmup_frac"):
        stream_split(evs, warmup_frac=1.2)


def test_stream_split_is_deterministic(log: list[Event]) -> None:
    shuffled = list(log)
    random.Random(2).shuffle(shuffled)
    assert stream_split(log) == stream_split(shuffled)


# --------------------------------------------------------------- cold_item_split
def test_cold_items_are_absent_from_train(log: list[Event]) -> None:
    s = cold_item_split(log, item_frac=0.1, min_interactions=5, seed=0)
    assert isinstance(s, ColdSplit)
    assert s.cold_items
    assert not {e.item for e in s.train} & s.cold_items
    assert {e.item for e in s.test} == s.cold_items
    # Every event on a cold item went to test, nothing was lost or duplicated.
    assert Counter(e.id for e in s.test) == Counter(e.id for e in log if e.item in s.cold_items)
    assert len(s.train) + len(s.test) == len(log)


def test_cold_item_count_and_eligibility(log: list[Event]) -> None:
    counts = Counter(e.item for e in log)
    eligible = {i for i, c in counts.items() if c >= 5}
    assert len(eligible) < len(counts)  # the log does have ineligible items
    s = cold_item_split(log, item_frac=0.1, min_interactions=5, seed=3)
    assert s.cold_items <= eligible
    assert len(s.cold_items) == max(1, int(len(eligible) * 0.1 + 0.5))
    # At least one item even when the fraction rounds to zero.
    assert len(cold_item_split(log, item_frac=0.001, seed=3).cold_items) == 1
    assert cold_item_split(log, item_frac=1.0, seed=3).cold_items == eligible


def test_cold_split_test_by_user(log: list[Event]) -> None:
    s = cold_item_split(log, seed=0)
    expected: dict[str, set[str]] = defaultdict(set)
    for e in log:
        if e.item in s.cold_items:
            expected[e.user].add(e.item)
    assert s.test_by_user == dict(expected)
    assert all(items <= s.cold_items for items in s.test_by_user.values())
    assert not any(items & s.cold_items for items in s.train_by_user.values())


def test_cold_split_determinism_by_seed(log: list[Event]) -> None:
    shuffled = list(log)
    random.Random(3).shuffle(shuffled)
    a0 = cold_item_split(log, seed=0)
    assert a0 == cold_item_split(list(log), seed=0)
    assert a0.cold_items == cold_item_split(shuffled, seed=0).cold_items  # input order irrelevant
    assert a0.cold_items != cold_item_split(log, seed=1).cold_items


def test_cold_split_draws_items_uniformly() -> None:
    # 4 eligible items with 5 events each, 1 drawn per seed: each ~1/4 of 400 seeds.
    evs = [ev(f"u{n}", item, n, f"{item}{n}") for item in "abcd" for n in range(5)]
    drawn = Counter(
        next(iter(cold_item_split(evs, item_frac=0.25, seed=s).cold_items)) for s in range(400)
    )
    assert set(drawn) == set("abcd")
    assert all(60 <= c <= 140 for c in drawn.values()), drawn


def test_cold_split_needs_eligible_items() -> None:
    evs = [ev(f"u{n}", "a", n, f"a{n}") for n in range(4)]
    with pytest.raises(ValidationError, match="at least 5 interactions"):
        cold_item_split(evs, min_interactions=5)
    with pytest.raises(ValidationError, match="item_frac"):
        cold_item_split(evs, item_frac=0.0, min_interactions=1)
    with pytest.raises(ValidationError, match="min_interactions"):
        cold_item_split(evs, min_interactions=0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(S, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10
    assert result.failed == 0
