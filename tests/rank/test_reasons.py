"""Reasons read as plain words: no source names, the verb of what the user did, no negative numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from liverec import Engine, Event
from liverec.encode import Catalog
from liverec.models.base import FeedbackConfig, UserState, positive_history
from liverec.rank.reasons import _PHRASES, SCORE_IN_TEXT, did, reason_text
from liverec.settings import Settings
from liverec.store import Store

SOURCE_NAMES = re.compile(r"\b(content|trending|ease|als|bpr|itemknn|userknn|transition|tfidf|neural|sequence|pop)\b")
NUMBER = re.compile(r"-?\d+\.\d+")


@pytest.fixture(scope="module")
def engine(encoder, books):
    eng = Engine(Store.open("sqlite://"), Settings(encoder_progress=False, log_impressions=False), encoder)
    eng.add_items(books[:300])
    others = [Event(user=f"r{u}", item=str(i), kind="like", timestamp=1.7e9 + u * 10 + i)
              for u in range(30) for i in (2, 27, 21, 23, 24, 25)[u % 3: u % 3 + 4]]
    eng.record_many(others)
    eng.fit()
    yield eng
    eng.close()


def _texts(eng: Engine, user: str) -> list[str]:
    return [x.text for r in eng.recommend(user, k=10) for x in r.reasons]


def test_what_the_user_did_is_said_with_its_own_verb(engine) -> None:
    engine.record(Event(user="clicker", item="2", kind="click"))  # Harry Potter 1, a click
    engine.record(Event(user="fan", item="2", kind="like"))
    engine.record(Event(user="buyer", item="2", kind="purchase"))
    for user, verb in [("clicker", "viewed"), ("fan", "liked"), ("buyer", "bought")]:
        texts = _texts(engine, user)
        assert any(f"which you {verb}" in t for t in texts), (user, texts)
        assert not any(f"which you {other}" in t for t in texts for other in {"viewed", "liked", "bought"} - {verb})


def test_no_source_name_and_no_negative_number_reaches_the_words(engine) -> None:
    for user in ("r1", "r2", "r3", "newcomer", "clicker"):
        for text in _texts(engine, user):
            assert not SOURCE_NAMES.search(text), text
            assert all(float(n) > 0 for n in NUMBER.findall(text)), text
    engine.set_interests("curious", "dragons and wizards")
    for text in _texts(engine, "curious"):
        assert not SOURCE_NAMES.search(text.replace("dragons and wizards", "")), text


def test_the_verb_of_several_items_and_of_unknown_kinds() -> None:
    u = UserState("u", history=(Event(user="u", item="a", kind="like"), Event(user="u", item="b", kind="skip"),
                                Event(user="u", item="c", kind="share")))
    assert did(u, ("a",)) == "liked" and did(u, ("b",)) == "chose" and did(u, ("c",)) == "chose"
    assert did(u) == "liked or chose" and did(UserState("new")) == "chose"


def test_what_a_slate_derives_once_follows_the_catalog_and_the_feedback_reading() -> None:
    cat = Catalog(dim=2)
    cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["A", "B"])
    u = UserState("u", history=(Event(user="u", item="a", kind="click"), Event(user="u", item="b", kind="rating",
                                                                                value=1.0)))
    fb, signed = FeedbackConfig(), FeedbackConfig(rating_engagement=0.0, rating_valence=1.0)
    ids, _, _ = positive_history(u, cat, fb)
    assert ids == ["a", "b"] and positive_history(u, cat, fb)[0] is ids  # kept for the request
    assert positive_history(u, cat, signed)[0] == ["a"]  # a 1-star rating pushes away when read signed
    cat.remove(["a"])
    assert positive_history(u, cat, fb)[0] == ["b"]  # a removed item stops standing behind reasons
    assert did(u, ("b",)) == "rated" and did(u, ("b",)) == "rated" and did(u) == "viewed or rated"


@pytest.mark.parametrize("source", ["ease", "als", "itemknn", "tfidf", "transition", "sessionknn", "neural", "a-new-learner"])
def test_every_source_reads_without_its_name(source: str) -> None:
    cat = Catalog(dim=2)
    cat.upsert(["a"], np.ones((1, 2), np.float32), [{"title": "Dune"}], ["Dune"])
    u = UserState("u", history=(Event(user="u", item="a", kind="click"),))
    for because in [(), ("a",)]:
        text = reason_text(source, -0.3, because, u, cat)
        assert source not in text and "-0.3" not in text and text, text


@pytest.mark.parametrize("source", sorted(set(_PHRASES) | {"a-new-learner", *SCORE_IN_TEXT}))
def test_a_slate_shares_a_sentence_only_where_it_shows_no_score(source: str) -> None:
    # explain_slate writes each (source, history items) sentence once per slate unless the
    # source is in SCORE_IN_TEXT: every other source's sentence must not depend on the score.
    cat = Catalog(dim=2)
    cat.upsert(["a"], np.ones((1, 2), np.float32), [{"title": "Dune"}], ["Dune"])
    u = UserState("u", history=(Event(user="u", item="a", kind="click"),))
    for because in [(), ("a",)]:
        texts = {reason_text(source, raw, because, u, cat) for raw in (0.0, 0.37, 0.81, 2.5)}
        assert (len(texts) == 1) is (source not in SCORE_IN_TEXT), texts
