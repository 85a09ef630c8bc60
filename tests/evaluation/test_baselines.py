"""Evaluation-only baselines: session-transition kNN and the text profiles (tf-idf, bag of words)."""

from __future__ import annotations

import numpy as np
import pytest

from liverec import Event
from liverec.encode.catalog import Catalog
from liverec.evaluation.adapters import LearnerModel, make_learner, parse_model
from liverec.evaluation.baselines import SessionKNN, TextProfile
from liverec.evaluation.harness import prequential, run_stream
from liverec.evaluation.tuning import TunedModel, grid_for
from liverec.models.base import InteractionLog, UserState


def _catalog(ids: list[str], texts: list[str] | None = None) -> Catalog:
    cat = Catalog(dim=2)
    cat.upsert(ids, np.ones((len(ids), 2), np.float32), [{}] * len(ids), texts or [""] * len(ids))
    return cat


def _sequences(users: int = 30, seed: int = 0) -> list[Event]:
    """Each user walks a random path where ``b`` always follows ``a``; ``c`` is the most popular item."""
    rng = np.random.default_rng(seed)
    events, t = [], 0.0
    for u in range(users):
        path = ["c"] + [f"x{int(i)}" for i in rng.choice(20, 3, replace=False)] + ["a", "b", "c"]
        for item in path:
            t += 1.0
            events.append(Event(user=f"u{u}", item=item, kind="click", timestamp=t, id=f"e{int(t)}"))
    return events


def test_sknn_predicts_b_after_a_over_a_more_popular_item() -> None:
    events = _sequences()
    cat = _catalog(["a", "b", "c"] + [f"x{i}" for i in range(20)])
    m = SessionKNN(window=3, history=1).fit(InteractionLog.from_events(events, cat))
    m.learn_one(Event(user="new", item="x5", kind="click", timestamp=1e6))
    m.learn_one(Event(user="new", item="a", kind="click", timestamp=1e6 + 1))
    s = m.score(UserState("new"), cat.select(cat.ids))
    assert cat.ids[int(np.argmax(s))] == "b"
    assert s[cat.ids.index("b")] > s[cat.ids.index("c")]
    # A cold user gets popularity: c is consumed twice per user.
    cold = m.score(UserState("nobody"), cat.select(cat.ids))
    assert cat.ids[int(np.argmax(cold))] == "c"


def test_sknn_learns_a_transition_first_seen_in_the_stream() -> None:
    cat = _catalog(["a", "b", "c", "d"])
    m = LearnerModel("sknn", SessionKNN(window=1, history=1), cat)
    m.fit([Event(user="w", item="c", kind="click", timestamp=0.0, id="w0")])
    stream = []
    for u in range(6):
        stream += [Event(user=f"s{u}", item=i, kind="click", timestamp=10.0 * u + j, id=f"s{u}{i}")
                   for j, i in enumerate("ab")]
    hits = prequential(m, [], stream, 1)
    # Each user's "a" is unpredictable (popularity), their "b" is a hit once one user showed a -> b.
    assert hits[1::2] == [0, 1, 1, 1, 1, 1]


def test_sknn_scores_match_the_formula() -> None:
    cat = _catalog(["a", "b", "c", "d"])
    evs = [Event(user="u", item=i, kind="click", timestamp=float(t), id=f"e{t}") for t, i in enumerate("abcd")]
    m = SessionKNN(window=2, history=2, decay=0.5).fit(InteractionLog.from_events(evs, cat))
    m.learn_one(Event(user="v", item="b", kind="click", timestamp=9.0))
    m.learn_one(Event(user="v", item="c", kind="click", timestamp=10.0))
    # u: a b c d gives T[b] = {c: 1, d: 1/2}, T[c] = {d: 1}; v's b -> c adds T[b][c] += 1.
    # v's last two items: c (r=0, row sum 1), b (r=1, row sum 2.5).
    s = m.score(UserState("v"), cat.select(["a", "b", "c", "d"]))
    expect_d = 1.0 / (1.0 + 1.0) + 0.5 * 0.5 / (2.5 + 1.0)
    expect_c = 0.5 * 2.0 / (2.5 + 1.0)
    assert s[3] == pytest.approx(expect_d + 1e-9 * 1, abs=1e-12)
    assert s[2] == pytest.approx(expect_c + 1e-9 * 2, abs=1e-12)


def test_sknn_runs_in_the_stream_protocol_and_tunes_its_window() -> None:
    events = _sequences(users=40)
    cat = _catalog(["a", "b", "c"] + [f"x{i}" for i in range(20)])
    spec = parse_model("sknn")
    grid = grid_for("sknn", spec.params)
    assert len(grid) == 9

    def make(p):
        return LearnerModel("sknn", make_learner("sknn", {**spec.params, **p}), cat)

    (res,) = run_stream(events, [lambda: TunedModel("sknn", make, grid, "stream", k=1)], k=1)
    # Only the b after a is predictable at k=1 (and c after b): about 2 of 7 events per user.
    assert res.metrics["hr@1"] > 0.2
    scores = res.tuning["scores"]
    assert scores[grid.index(res.tuning["chosen"])] == max(s for s in scores if s is not None)
    assert res.tuning["validation"]["held_out_events"] == round(0.2 * len(events) / 2)


def test_the_stream_protocol_predicts_the_first_events_after_the_warmup_only() -> None:
    events = _sequences(users=40)  # 280 events: 140 warm-up, 140 streamed
    cat = _catalog(["a", "b", "c"] + [f"x{i}" for i in range(20)])

    def run(max_events: int | None) -> tuple[float, list[int]]:
        (res,) = run_stream(events, [lambda: LearnerModel("pop", make_learner("trending", {}), cat)], k=1,
                            max_events=max_events)
        return res.metrics["predictions"], res.tenths["predictions"]

    def targets(n: int) -> int:  # events that are no re-interaction among the first n streamed
        seen = {(e.user, e.item) for e in events[:140]}
        out = 0
        for e in events[140:140 + n]:
            out += (e.user, e.item) not in seen
            seen.add((e.user, e.item))
        return out

    everything, tenths = run(None)
    assert everything == targets(140) and sum(tenths) == everything
    first, tenths = run(50)
    assert first == targets(50) < everything and sum(tenths) == first and all(n > 0 for n in tenths)


TEXTS = ["space opera with starships", "starships and space battles", "a cookbook of soups",
         "soups stews and space food", "romance in paris", "paris cookbook"]


def _reference(vectorizer: str, history: list[int], candidates: list[int]) -> np.ndarray:
    """The external MovieLens check's definitions: mean tf-idf row / summed counts, dot product."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    if vectorizer == "tfidf":
        vec = TfidfVectorizer(min_df=1, sublinear_tf=True).fit(TEXTS)
        prof = np.asarray(vec.transform([TEXTS[i] for i in history]).mean(0)).ravel()
    else:
        vec = CountVectorizer(min_df=1).fit(TEXTS)
        prof = np.asarray(vec.transform([TEXTS[i] for i in history]).sum(0)).ravel()
    return np.asarray(vec.transform([TEXTS[i] for i in candidates]) @ prof).ravel()


@pytest.mark.parametrize("name", ["tfidf", "bow"])
def test_text_baselines_match_the_reference_definitions(name: str) -> None:
    ids = [f"i{n}" for n in range(len(TEXTS))]
    cat = _catalog(ids, TEXTS)
    learner = make_learner(name, parse_model(name).params)
    assert isinstance(learner, TextProfile)
    history = [0, 2]
    evs = [Event(user="u", item=ids[i], kind="rating", value=1.0, timestamp=float(t), id=f"e{t}")
           for t, i in enumerate(history)]  # a one-star rating still counts: every event is an interaction
    learner.fit(InteractionLog.from_events(evs[:1], cat))
    learner.learn_one(evs[1])  # batch and per-event history combine
    got = learner.score(UserState("u"), cat.select(ids))
    np.testing.assert_allclose(got, _reference("tfidf" if name == "tfidf" else "count", history, list(range(6))))
    assert learner.score(UserState("nobody"), cat.select(ids)).tolist() == [0.0] * 6


def test_eval_names_resolve_to_the_reference_baselines() -> None:
    assert make_learner("tfidf", {}).get_params()["profile"] == "mean"
    assert make_learner("bow", {}).get_params()["profile"] == "sum"
    assert isinstance(make_learner("sknn", {"window": 10}), SessionKNN)
