"""Evaluation protocols: deterministic train/test splits of an event log.

Three protocols, each a pure function of ``list[Event]`` (and a seed where random):

- :func:`temporal_user_split` — per user, the latest interactions are held out.
  Measures "what will this user do next", without peeking at the future.
- :func:`stream_split` — one global time cut: fit on the past, replay the rest in
  order through ``learn_one``. Measures real-time learning.
- :func:`cold_item_split` — a random set of items is hidden entirely from training.
  Measures cold start (only the item's text can help).

Every split calls :func:`check_no_overlap` before returning, so a split that leaks
an event (or a cold item) into training raises :class:`liverec.errors.ValidationError`
instead of producing optimistic numbers.

Ordering is total and deterministic: events are ordered by ``(timestamp, id)`` and
then by their position in the input, and the ``train``/``test`` tuples come back in
that chronological order. Same input and seed, same output.

Examples
--------
>>> from liverec import Event
>>> evs = [Event(user="u", item=f"i{t}", timestamp=float(t), id=f"e{t}") for t in range(5)]
>>> s = temporal_user_split(evs, test_frac=0.2)
>>> [e.item for e in s.train], [e.item for e in s.test], s.test_by_user
(['i0', 'i1', 'i2', 'i3'], ['i4'], {'u': {'i4'}})
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import AbstractSet, Iterable, Sequence

import numpy as np

from ..errors import ValidationError
from ..types import Event

__all__ = [
    "ColdSplit",
    "Split",
    "StreamSplit",
    "check_no_overlap",
    "cold_item_split",
    "stream_split",
    "temporal_user_split",
]

_MAX_SHOWN = 5  # ids quoted in an error message


# ----------------------------------------------------------------------- results
@dataclass(frozen=True)
class Split:
    """A per-user train/test split.

    ``test_by_user`` is the relevance ground truth of the *full-ranking, train items
    excluded* protocol: for each user, the items of their test events that do **not**
    also occur in their train events. When scoring, a recommender ranks the whole
    catalog minus ``train_by_user[user]`` (items the user already has), so an item
    seen in training can neither be recommended nor count as relevant. Users whose
    test items are all re-interactions have no entry and are skipped by the metrics.

    Attributes
    ----------
    train, test : tuple[Event, ...]
        Disjoint by event id; each in chronological order.
    test_by_user : dict[str, set[str]]
        User -> relevant held-out items (train items excluded); no empty sets.
    train_by_user : dict[str, set[str]]
        User -> items they interacted with in ``train``.

    Examples
    --------
    Train is ``a, b``; test is ``c, a``, but ``a`` is already in train, so only ``c``
    is relevant.

    >>> from liverec import Event
    >>> evs = [Event(user="u", item=i, timestamp=float(t), id=f"e{t}")
    ...        for t, i in enumerate("abca")]
    >>> s = temporal_user_split(evs, test_frac=0.5)
    >>> sorted(s.train_by_user["u"]), s.test_by_user
    (['a', 'b'], {'u': {'c'}})
    """

    train: tuple[Event, ...]
    test: tuple[Event, ...]
    test_by_user: dict[str, set[str]] = field(default_factory=dict)
    train_by_user: dict[str, set[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamSplit:
    """A global time cut: ``warmup`` is fitted, ``stream`` is replayed in order.

    Examples
    --------
    >>> from liverec import Event
    >>> evs = [Event(user="u", item="i", timestamp=t, id=f"e{t}") for t in (3.0, 1.0, 2.0, 0.0)]
    >>> s = stream_split(evs, warmup_frac=0.5)
    >>> [e.timestamp for e in s.warmup], [e.timestamp for e in s.stream]
    ([0.0, 1.0], [2.0, 3.0])
    """

    warmup: tuple[Event, ...]
    stream: tuple[Event, ...]


@dataclass(frozen=True)
class ColdSplit:
    """Items in ``cold_items`` never occur in ``train``; all their events are in ``test``.

    Attributes
    ----------
    train, test : tuple[Event, ...]
        Disjoint by event id; each in chronological order.
    cold_items : frozenset[str]
        The held-out items.
    test_by_user : dict[str, set[str]]
        User -> cold items they interacted with.
    train_by_user : dict[str, set[str]]
        User -> items they interacted with in ``train``.

    Examples
    --------
    >>> from liverec import Event
    >>> evs = [Event(user=f"u{n}", item=i, timestamp=float(n), id=f"{i}{n}")
    ...        for i in "ab" for n in range(5)]
    >>> s = cold_item_split(evs, item_frac=0.5, min_interactions=5, seed=0)
    >>> len(s.cold_items), len(s.train), len(s.test)
    (1, 5, 5)
    """

    train: tuple[Event, ...]
    test: tuple[Event, ...]
    cold_items: frozenset[str]
    test_by_user: dict[str, set[str]] = field(default_factory=dict)
    train_by_user: dict[str, set[str]] = field(default_factory=dict)


# ----------------------------------------------------------------------- helpers
def _chronological(events: Sequence[Event]) -> list[int]:
    """Indices of ``events`` ordered by (timestamp, id, input position)."""
    # Two stable sorts on scalar keys (id, then timestamp) give the same order as one
    # sort on (timestamp, id, position) at a third of the cost: no tuple comparisons.
    ids = [e.id for e in events]
    times = [e.timestamp for e in events]
    order = sorted(range(len(events)), key=ids.__getitem__)
    order.sort(key=times.__getitem__)
    return order


def _round_half_up(x: float) -> int:
    # Python's round() is banker's rounding (round(2.5) == 2); splits should not
    # depend on the parity of the count. The epsilon absorbs float noise such as
    # 0.1 * 25 == 2.5000000000000004 vs 0.15 * 10 == 1.4999999999999998.
    return int(math.floor(x + 0.5 + 1e-9))


def _items_by_user(events: Iterable[Event]) -> dict[str, set[str]]:
    out: defaultdict[str, set[str]] = defaultdict(set)
    for e in events:
        out[e.user].add(e.item)
    return dict(out)


def _check_frac(name: str, value: float, *, low_open: bool, high_open: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (0.0 < value if low_open else 0.0 <= value) and (
            value < 1.0 if high_open else value <= 1.0
        )
    if not ok:
        lo = "(0" if low_open else "[0"
        hi = "1)" if high_open else "1]"
        raise ValidationError(
            f"{name} must be a number in {lo}, {hi}, got {value!r}.", field=name
        )
    return float(value)


def _sample(ids: Iterable[str], limit: int = _MAX_SHOWN) -> list[str]:
    return sorted(ids)[:limit]


# ------------------------------------------------------------------------ checks
def check_no_overlap(
    train: Iterable[Event],
    test: Iterable[Event],
    cold_items: AbstractSet[str] | None = None,
) -> None:
    """Raise if the split leaks test information into training.

    Parameters
    ----------
    train, test : Iterable[Event]
        The two sides of a split.
    cold_items : set of str, optional
        For cold-item splits: items that must not occur in ``train`` at all.

    Raises
    ------
    liverec.errors.ValidationError
        If an event id occurs on both sides, or a cold item occurs in ``train``.
        The message quotes the offending ids.

    Examples
    --------
    >>> from liverec import Event
    >>> e = Event(user="u", item="i", id="e1")
    >>> check_no_overlap([e], [Event(user="u", item="j", id="e2")])
    >>> check_no_overlap([e], [e])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: the split is leaking: ... e.g. ['e1']. ...
    """
    train = list(train)
    train_ids = {e.id for e in train}
    shared = {e.id for e in test if e.id in train_ids}
    if shared:
        raise ValidationError(
            f"the split is leaking: {len(shared)} event id(s) are in both train and "
            f"test, e.g. {_sample(shared)}. Every event must be on exactly one side; "
            "if the input repeats an event id, deduplicate events by id before splitting.",
            field="test",
        )
    if cold_items:
        leaked = {e.item for e in train if e.item in cold_items}
        if leaked:
            raise ValidationError(
                f"the split is leaking: {len(leaked)} cold item(s) occur in train, e.g. "
                f"{_sample(leaked)}. A cold item's events must all be in test.",
                field="train",
            )


# ------------------------------------------------------------------------ splits
def temporal_user_split(events: Sequence[Event], test_frac: float = 0.2) -> Split:
    """Hold out each user's most recent ``test_frac`` of interactions.

    For a user with ``n >= 2`` events, ordered by (timestamp, event id, input
    position), the last ``round(test_frac * n)`` (half up; clamped to
    ``[1, n - 1]``) go to test, so every such user has both a history and a target.
    A user with a single event keeps it in train.

    Parameters
    ----------
    events : Sequence[Event]
        The interaction log, in any order.
    test_frac : float
        Share of each user's events to hold out, in ``(0, 1)``.

    Returns
    -------
    Split
        ``test_by_user`` follows the train-items-excluded protocol (see :class:`Split`).

    Raises
    ------
    liverec.errors.ValidationError
        If ``test_frac`` is out of range, or the result leaks (repeated event ids).

    Examples
    --------
    User ``u`` has 5 events: round(0.2 * 5) = 1 held out; ``v`` has 1: kept in train.

    >>> from liverec import Event
    >>> evs = [Event(user="u", item=f"i{t}", timestamp=float(t), id=f"u{t}") for t in range(5)]
    >>> evs.append(Event(user="v", item="i0", timestamp=9.0, id="v0"))
    >>> s = temporal_user_split(evs)
    >>> len(s.train), [e.id for e in s.test], s.test_by_user
    (5, ['u4'], {'u': {'i4'}})
    """
    test_frac = _check_frac("test_frac", test_frac, low_open=True, high_open=True)
    events = list(events)
    order = _chronological(events)

    by_user: dict[str, list[int]] = {}
    for i in order:  # chronological within every user
        by_user.setdefault(events[i].user, []).append(i)

    is_test = [False] * len(events)
    for idxs in by_user.values():
        n = len(idxs)
        if n < 2:
            continue
        n_test = min(max(_round_half_up(test_frac * n), 1), n - 1)
        for i in idxs[n - n_test :]:
            is_test[i] = True

    train_list: list[Event] = []
    test_list: list[Event] = []
    for i in order:
        (test_list if is_test[i] else train_list).append(events[i])
    train, test = tuple(train_list), tuple(test_list)
    train_by_user = _items_by_user(train)
    test_by_user: dict[str, set[str]] = {}
    for user, items in _items_by_user(test).items():
        relevant = items - train_by_user.get(user, set())
        if relevant:
            test_by_user[user] = relevant

    check_no_overlap(train, test)
    return Split(train=train, test=test, test_by_user=test_by_user, train_by_user=train_by_user)


def stream_split(events: Sequence[Event], warmup_frac: float = 0.5) -> StreamSplit:
    """Cut the log once in time: fit on the first ``warmup_frac``, stream the rest.

    Events are ordered by (timestamp, event id, input position); the first
    ``round(warmup_frac * n)`` (half up) form ``warmup`` and the remainder, still in
    that order, is the ``stream`` to replay through ``learn_one``.

    Parameters
    ----------
    events : Sequence[Event]
        The interaction log, in any order.
    warmup_frac : float
        Share of events to fit on, in ``[0, 1]``.

    Returns
    -------
    StreamSplit

    Raises
    ------
    liverec.errors.ValidationError
        If ``warmup_frac`` is out of range, or the result leaks (repeated event ids).

    Examples
    --------
    >>> from liverec import Event
    >>> evs = [Event(user="u", item="i", timestamp=float(t), id=f"e{t}") for t in range(4)]
    >>> s = stream_split(evs[::-1], warmup_frac=0.25)
    >>> [e.id for e in s.warmup], [e.id for e in s.stream]
    (['e0'], ['e1', 'e2', 'e3'])
    """
    warmup_frac = _check_frac("warmup_frac", warmup_frac, low_open=False, high_open=False)
    events = list(events)
    ordered = [events[i] for i in _chronological(events)]
    cut = _round_half_up(warmup_frac * len(ordered))
    warmup, stream = tuple(ordered[:cut]), tuple(ordered[cut:])
    check_no_overlap(warmup, stream)
    return StreamSplit(warmup=warmup, stream=stream)


def cold_item_split(
    events: Sequence[Event],
    item_frac: float = 0.1,
    min_interactions: int = 5,
    seed: int = 0,
) -> ColdSplit:
    """Hide a random set of items from training entirely.

    Among the items with at least ``min_interactions`` events, ``round(item_frac *
    n_eligible)`` (half up, at least 1) are drawn uniformly without replacement with
    ``numpy.random.default_rng(seed)``. The candidates are sorted by id first, so the
    draw depends only on the set of items and the seed, not on the input order.
    Every event on a drawn item goes to test; everything else to train.

    Parameters
    ----------
    events : Sequence[Event]
        The interaction log, in any order.
    item_frac : float
        Share of eligible items to hold out, in ``(0, 1]``.
    min_interactions : int
        Events an item needs to be eligible (enough test signal to measure).
    seed : int
        Seed of the item draw.

    Returns
    -------
    ColdSplit
        ``test_by_user`` maps each user to the cold items they interacted with.

    Raises
    ------
    liverec.errors.ValidationError
        If a parameter is out of range, no item has ``min_interactions`` events, or
        the result leaks.

    Examples
    --------
    Only ``a`` has 5 events, so it is the one eligible (and cold) item.

    >>> from liverec import Event
    >>> evs = [Event(user=f"u{n}", item="a", timestamp=float(n), id=f"a{n}") for n in range(5)]
    >>> evs.append(Event(user="u0", item="b", timestamp=0.5, id="b0"))
    >>> s = cold_item_split(evs, seed=1)
    >>> sorted(s.cold_items), [e.id for e in s.train], s.test_by_user["u3"]
    (['a'], ['b0'], {'a'})
    """
    item_frac = _check_frac("item_frac", item_frac, low_open=True, high_open=False)
    if (
        isinstance(min_interactions, bool)
        or not isinstance(min_interactions, int)
        or min_interactions < 1
    ):
        raise ValidationError(
            f"min_interactions must be a positive integer, got {min_interactions!r}.",
            field="min_interactions",
        )
    events = list(events)
    counts = Counter(e.item for e in events)
    eligible = sorted(item for item, c in counts.items() if c >= min_interactions)
    if not eligible:
        raise ValidationError(
            f"no item has at least {min_interactions} interactions, so none can be held "
            f"out as cold (the busiest has {max(counts.values(), default=0)}). Lower "
            "min_interactions or pass a larger log.",
            field="min_interactions",
        )
    n_cold = min(max(_round_half_up(item_frac * len(eligible)), 1), len(eligible))
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(eligible), size=n_cold, replace=False)
    cold_items = frozenset(eligible[int(i)] for i in picked)

    train_list: list[Event] = []
    test_list: list[Event] = []
    for i in _chronological(events):
        e = events[i]
        (test_list if e.item in cold_items else train_list).append(e)
    train, test = tuple(train_list), tuple(test_list)
    check_no_overlap(train, test, cold_items)
    return ColdSplit(
        train=train,
        test=test,
        cold_items=cold_items,
        test_by_user=_items_by_user(test),
        train_by_user=_items_by_user(train),
    )
