"""Declared interests move a light user's list visibly, and fade as their history grows."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

from liverec import Engine, Event, Settings
from liverec.models import DeclaredInterests
from liverec.models.base import UserState

T0 = 1_700_000_000.0
#: Title or author words of the shipped catalog's crime and detective books.
CRIME = re.compile(r"detective|murder|myster|crime|sherlock|holmes|christie|poirot|marple|police|killer", re.I)
INTEREST = "detective mysteries and crime investigations"


@pytest.fixture(scope="module")
def eng(encoder, books):
    e = Engine.open(settings=Settings(encoder_progress=False), encoder=encoder)
    e.add_items(books)
    # Other readers, so the behavioural sources (co-occurrence, factorisation) have a say.
    rng = random.Random(0)
    popular = [b.id for b in books[:300]]
    e.record_many([Event(user=f"other{u}", item=rng.choice(popular), kind="click", timestamp=T0 + 100 * u + j)
                   for u in range(60) for j in range(8)])
    yield e
    e.close()


def _reader(eng: Engine, user: str, n: int) -> None:
    """``n`` clicks on Harry Potter and Tolkien books: a history with no crime in it."""
    fantasy = [b for b in eng.catalog.ids if re.search(r"Rowling|Tolkien", str(eng.attributes_of(b).get("authors")))]
    eng.record_many([Event(user=user, item=fantasy[i % len(fantasy)], kind="click", timestamp=T0 + 10_000 + i)
                     for i in range(n)])


def _top(eng: Engine, user: str) -> list[str]:
    return [r.item for r in eng.recommend(user, k=10, log=False)]


def _words(eng: Engine, item: str) -> str:
    a = eng.attributes_of(item)
    return f"{a.get('title', '')} {a.get('authors', '')}"


def test_interests_change_a_light_readers_list_toward_them(eng) -> None:
    _reader(eng, "light", 5)
    before = _top(eng, "light")
    assert not any(CRIME.search(_words(eng, i)) for i in before)
    eng.set_interests("light", INTEREST)
    after = eng.recommend("light", k=10, log=False)
    new = [r.item for r in after if r.item not in before]
    assert len(new) >= 5, f"only {len(new)} of 10 changed"
    # The new items are about the interest: their titles say so, and the LM agrees.
    assert sum(bool(CRIME.search(_words(eng, i))) for i in new) >= len(new) / 2, [_words(eng, i) for i in new]
    iv = eng.encoder.encode([INTEREST])[0]
    cos = {i: float(eng.catalog.vectors[eng.catalog.index[i]] @ iv) for i in set(before) | set(new)}
    gone = [i for i in before if i not in {r.item for r in after}]
    assert np.mean([cos[i] for i in new]) > np.mean([cos[i] for i in gone])
    top = next(r for r in after if r.item in new)
    assert f"matches the interests you declared “{INTEREST}”" in top.explanation
    # Cleared, the list is the reader's own again.
    eng.set_interests("light", None)
    assert _top(eng, "light") == before


def test_interests_fade_as_the_history_grows(eng) -> None:
    changed = {}
    for n in (5, 50):
        user = f"reader{n}"
        _reader(eng, user, n)
        before = _top(eng, user)
        eng.set_interests(user, INTEREST)
        changed[n] = len(set(_top(eng, user)) - set(before))
    assert changed[5] >= 5 and changed[50] < changed[5], changed


def test_the_fusion_scale_rule() -> None:
    m = DeclaredInterests(half_events=10.0)
    iv = np.ones(4, dtype=np.float32)
    history = tuple(Event(user="u", item=f"i{j}", timestamp=T0 + j) for j in range(10))
    assert m.fusion_scale(UserState("u", interests=iv)) == 1.0
    assert m.fusion_scale(UserState("u", history[:5], interests=iv)) == pytest.approx(1 / 1.5)
    assert m.fusion_scale(UserState("u", history, interests=iv)) == pytest.approx(0.5)
    assert m.fusion_scale(UserState("u", history)) == 0.0  # nothing declared: no weight at all


def test_weights_learned_from_a_log_keep_the_interests_weight(eng) -> None:
    # Last in this module: it changes the engine's weights. A log carries no interests, so
    # learning from it must not switch them off.
    fit = eng.tune_fusion(holdout=200, negatives=20)
    assert "interests" not in fit.weights and "content" in fit.weights
    _reader(eng, "after-tuning", 5)
    before = _top(eng, "after-tuning")
    eng.set_interests("after-tuning", INTEREST)
    assert len(set(_top(eng, "after-tuning")) - set(before)) >= 5
