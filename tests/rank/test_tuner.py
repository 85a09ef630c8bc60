"""The self-tuning search: its split, its choices on data with a known answer, its robustness."""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import make_catalog
from liverec import Engine, Event, Settings
from liverec.errors import ValidationError
from liverec.models import REGISTRY, FeedbackConfig, Learner
from liverec.rank.tuner import TunedConfig, Tuner, _grid, time_split

T0 = 1_700_000_000.0


def chains(n_users: int = 40, length: int = 12, n_items: int = 60, seed: int = 0, jump: float = 0.0) -> list[Event]:
    """Every user walks i, i+1, i+2, ... from a random start: what comes next is the next id
    (except, with ``jump``, that share of the steps goes to a random item)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        cur = int(rng.integers(0, n_items))
        for s in range(length):
            out.append(Event(user=f"u{u}", item=f"i{cur}", kind="click", timestamp=T0 + 1000 * s + u, id=f"e{u}-{s}"))
            cur = int(rng.integers(0, n_items)) if jump and rng.random() < jump else (cur + 1) % n_items
    return out


def make(name, params, fb) -> Learner:
    kw = dict(params)
    if name != "trending":
        kw["feedback"] = fb
    return REGISTRY[name](**kw)


def test_time_split_holds_out_each_users_latest_events():
    cat = make_catalog()
    events = chains()
    split = time_split(events, cat, FeedbackConfig(), holdout=0.25, max_users=10, seed=1)
    assert len(split.users) == 10
    train_ids = {e.id for e in split.train}
    for u, st, nxt, held in zip(split.users, split.states, split.next_item, split.heldout):
        mine = sorted((e for e in events if e.user == u), key=lambda e: e.timestamp)
        tail = mine[-3:]  # 25% of 12
        assert not train_ids & {e.id for e in tail}  # held out ...
        assert {e.id for e in mine[:-3]} <= train_ids  # ... and only those
        assert cat.ids[int(nxt)] == tail[0].item
        assert sorted(cat.ids[int(i)] for i in held) == sorted({e.item for e in tail})
        assert st.history[-1].id == mine[-4].id  # the state ends right before the tail
    # Users not sampled keep every event.
    others = {e.user for e in events} - set(split.users)
    assert all(e.id in train_ids for e in events if e.user in others)
    again = time_split(events, cat, FeedbackConfig(), holdout=0.25, max_users=10, seed=1)
    assert again.users == split.users


def test_tuner_finds_the_sequential_source_on_sequential_data():
    cat = make_catalog()
    tuner = Tuner(make, {"trending": {}, "transition": {"window": 1}}, {"trending": 1.0, "transition": 0.01},
                  FeedbackConfig(), budget_seconds=60, seed=0)
    tuned = tuner.run(chains(), cat)
    assert tuned.score > tuned.default_score
    assert tuned.weights["transition"] > tuned.weights["trending"]
    assert tuned.score >= 0.9  # the next item is always the next id: HR@10 ~1, NDCG high
    stages = [t["stage"] for t in tuned.trials]
    assert stages[0] == "start" and "weights" in stages and "source" in stages
    assert not tuned.stopped_by_budget
    assert TunedConfig.from_json(tuned.to_json()) == tuned


def test_a_failing_trial_is_recorded_not_fatal():
    cat = make_catalog()

    def fragile(name, params, fb):
        if params.get("window") == 10:
            raise RuntimeError("boom")
        return make(name, params, fb)

    tuned = Tuner(fragile, {"transition": {}}, {"transition": 1.0}, FeedbackConfig(), seed=0).run(chains(), cat)
    failed = [t for t in tuned.trials if t.get("error")]
    assert failed and all("boom" in t["error"] for t in failed)
    assert tuned.sources["transition"].get("window") != 10


def test_same_seed_same_choice_and_max_trials_bounds_the_search():
    cat = make_catalog()
    args = (make, {"trending": {}, "transition": {}}, {"trending": 1.0, "transition": 0.5}, FeedbackConfig())
    a = Tuner(*args, seed=3, max_trials=6).run(chains(), cat)
    b = Tuner(*args, seed=3, max_trials=6).run(chains(), cat)
    assert (a.sources, a.weights, a.score) == (b.sources, b.weights, b.score)
    assert len(a.trials) == 6 and a.stopped_by_budget


def test_feedback_reading_is_searched_only_when_there_are_ratings():
    cat = make_catalog()
    clicks = Tuner(make, {"transition": {}}, {"transition": 1.0}, FeedbackConfig(), seed=0).run(chains(), cat)
    assert not [t for t in clicks.trials if t["stage"] == "feedback"]
    rated = [Event(user=e.user, item=e.item, kind="rating", value=float(1 + int(e.id.split("-")[1]) % 5),
                   timestamp=e.timestamp, id=e.id) for e in chains()]
    tuned = Tuner(make, {"transition": {}}, {"transition": 1.0}, FeedbackConfig(), seed=0).run(rated, cat)
    assert len([t for t in tuned.trials if t["stage"] == "feedback"]) == 3


def test_grid_is_every_combination_in_a_fixed_order():
    assert _grid({"b": (1, 2), "a": ("x",)}) == [{"a": "x", "b": 1}, {"a": "x", "b": 2}]
    assert _grid({}) == []


def test_too_little_history_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5 positive events"):
        Tuner(make, {"transition": {}}, {"transition": 1.0}, FeedbackConfig()).run(chains(length=3), make_catalog())


# ------------------------------------------------------------------ through the engine (real LM)
def test_engine_fit_tune_persists_and_is_reused_after_restart(tmp_path, encoder):
    from liverec import Item

    url = f"sqlite:///{tmp_path / 'tuned.db'}"
    settings = Settings(
        encoder_progress=False, sources={"trending": {}, "transition": {}, "itemknn": {}},
        fusion_weights={"trending": 1.0, "transition": 0.05, "itemknn": 0.05}, fusion_learning_rate=0.0,
    )
    with Engine.open(url, settings=settings, encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"item number {j}") for j in range(60)])
        eng.record_many(chains(), learn=False)
        eng.fit(tune=True, budget=60)
        tuned = eng.tuned
        assert tuned is not None and tuned.score > tuned.default_score
        assert eng.learners["transition"].get_params()["window"] == tuned.sources["transition"].get("window", 3)
        assert eng.recommend("u0", k=3)  # serves with the tuned configuration
    with Engine.open(url, settings=settings, encoder=encoder) as again:
        assert again.tuned == tuned
        assert again._base_weights() == tuned.weights
    # A hyperparameter written in the settings wins over the tuned one.
    pinned = settings.model_copy(update={"sources": {"trending": {}, "transition": {"window": 7}, "itemknn": {}}})
    with Engine.open(url, settings=pinned, encoder=encoder) as eng3:
        assert eng3.learners["transition"].window == 7


@pytest.mark.parametrize("rate", [None, 0.2])
def test_tuned_weights_hold_unless_a_learning_rate_is_set(tmp_path, encoder, rate):
    """Per-click fusion learning runs from starting weights; once tuning fits the weights to
    the log they hold (unset rate), also after a restart; an explicit rate always applies."""
    from liverec import Item

    url = f"sqlite:///{tmp_path / 'hold.db'}"
    settings = Settings(encoder_progress=False, sources={"trending": {}, "transition": {}},
                        fusion_weights={"trending": 1.0, "transition": 0.05}, fusion_learning_rate=rate)
    with Engine.open(url, settings=settings, encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"item number {j}") for j in range(60)])
        eng.record_many(chains(), learn=False)
        eng.fit()
        assert eng.online_fusion is not None  # starting weights: learned per click
        eng.tune(max_trials=3)
        assert (eng.online_fusion is None) == (rate is None)
        for j in range(5):  # clicks on served items: weights move only where learning is on
            top = eng.recommend("u1", k=3)[2].item
            eng.record(Event(user="u1", item=top, timestamp=1e9 + j, id=f"c{j}"))
        moved = eng._weights(None) != eng.tuned.weights
        assert moved == (rate is not None)
    with Engine.open(url, settings=settings, encoder=encoder) as again:
        assert (again.online_fusion is None) == (rate is None)


def test_engine_tune_on_an_empty_log_names_the_fix(encoder):
    settings = Settings(encoder_progress=False, sources={"transition": {}})
    with Engine.open(settings=settings, encoder=encoder) as eng:
        with pytest.raises(ValidationError, match="record more events") as err:
            eng.fit(tune=True, budget=5)
        assert err.value.field == "tune"
        with pytest.raises(ValidationError, match="budget"):
            eng.tune(budget=0)


def test_new_items_are_part_of_the_objective_for_sources_that_can_rank_them():
    cat = make_catalog(n_items=200)
    events = chains(n_users=150, n_items=200)
    tuner = Tuner(make, {"transition": {}, "content": {}}, {"transition": 1.0, "content": 0.5},
                  FeedbackConfig(), seed=0, max_trials=3)
    boards = tuner._boards(events, cat, FeedbackConfig())
    assert boards.cold is not None and "new items" in boards.describe()
    new = set(boards.cold.pool.tolist())
    assert not any(cat.get_idx(e.item) in new for e in boards._log(boards.cold).events)  # truly unseen
    warm, cold, _ = boards.fit("content", {}, FeedbackConfig())
    assert cold is not None and cold.shape == (len(boards.cold.split.users), len(new)) and cold.any()
    assert boards.fit("transition", {}, FeedbackConfig())[1] is None  # cannot rank unseen items
    assert "new items" in tuner.run(events, cat).objective


def test_new_item_weights_are_searched_on_the_new_item_board_for_the_sources_that_rank_new_items():
    cat = make_catalog(n_items=200)
    events = chains(n_users=150, n_items=200)
    start = {"transition": 1.0, "content": 0.5, "trending": 0.5}
    tuned = Tuner(make, {n: {} for n in start}, start, FeedbackConfig(), seed=0).run(events, cat)
    assert set(tuned.new_item_weights) == set(tuned.weights)
    assert tuned.new_item_weights["transition"] == tuned.weights["transition"]  # cannot tell new items apart
    [search] = [t for t in tuned.trials if t["stage"] == "new-item weights"]
    assert search["params"] == tuned.new_item_weights
    boards = Tuner(make, {}, {}, FeedbackConfig(), seed=0)._boards(events, cat, FeedbackConfig())
    parts = {n: boards.fit(n, tuned.sources.get(n, {}), FeedbackConfig()) for n in start}
    on_new = {n: p[1] for n, p in parts.items() if p[1] is not None}
    assert boards.cold is not None
    assert boards.cold.objective(on_new, tuned.new_item_weights) >= boards.cold.objective(on_new, tuned.weights)
    assert TunedConfig.from_json(tuned.to_json()) == tuned
    old = tuned.to_json().replace(', "new_item_weights": ' + __import__("json").dumps(tuned.new_item_weights), "")
    assert TunedConfig.from_json(old).new_item_weights == {}  # configurations stored before it existed


def test_a_switched_off_source_comes_back_at_a_share_of_the_sources_that_score():
    """A source with no evidence in the log (all scores 0) does not set the scale of the weights tried."""
    from liverec.rank.tuner import _Boards

    tried: list[float] = []

    def objective(parts, w):
        tried.append(w["off"])
        return 0.0

    boards = _Boards.__new__(_Boards)
    boards.objective = objective
    ones, zeros = np.ones((3, 4), np.float32), np.zeros((3, 4), np.float32)
    parts = {"a": (ones, None, None), "off": (ones, None, None), "silent": (zeros, None, None)}
    boards.search_weights(parts, {"a": 1.0, "off": 0.0, "silent": 10.0})
    assert set(tried) - {0.0} == {0.05, 0.25, 1.0}


def fake_clock(monkeypatch) -> list[float]:
    """The tuner's clock, moved by hand: ``clock[0]`` seconds."""
    import liverec.rank.tuner as tuner_module

    clock = [0.0]

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            return clock[0]

    monkeypatch.setattr(tuner_module, "time", Clock)
    return clock


def test_when_the_budget_runs_out_the_weights_are_searched_once_more(monkeypatch):
    """Source parameters chosen after the last weight search get weights that fit them:
    the closing weight search refits nothing, so it runs even past the budget."""
    clock = fake_clock(monkeypatch)
    start = {"window": 10, "history": 10, "recency": 0.5, "both_ways": True}

    def slow(name, params, fb):  # every source trial takes 100 s of the tuner's clock
        if params != start:
            clock[0] += 100.0
        return make(name, params, fb)

    tuned = Tuner(slow, {"transition": start}, {"transition": 1.0}, FeedbackConfig(), budget_seconds=250,
                  seed=0, batch_size=1).run(chains(60, 14, jump=0.5), make_catalog())
    stages = [t["stage"] for t in tuned.trials]
    assert tuned.stopped_by_budget and stages[:2] == ["start", "weights"] and "source" in stages[2:-1]
    assert tuned.sources["transition"] != start  # a better source setting was found in time ...
    assert stages[-1] == "weights" and stages.count("weights") == 2  # ... and weighed once more after


def test_run_here_a_batch_holds_no_more_trials_than_the_budget_left_fits(monkeypatch):
    """Trials that run one after another: the budget is overrun by about one trial, not by a
    batch of sixteen."""
    clock = fake_clock(monkeypatch)

    def slow(name, params, fb):  # every learner built takes 100 s of the tuner's clock
        clock[0] += 100.0
        return make(name, params, fb)

    tuned = Tuner(slow, {"transition": {}}, {"transition": 1.0}, FeedbackConfig(), budget_seconds=450,
                  seed=0, batch_size=16).run(chains(60, 14, jump=0.5), make_catalog())
    per_trial = tuned.trials[0]["seconds"]  # the starting fit: one source, like each source trial
    sources = [t for t in tuned.trials if t["stage"] == "source"]
    assert tuned.stopped_by_budget and 1 <= len(sources) <= 3
    assert clock[0] - 450 <= per_trial  # over the budget by at most one trial


def test_a_request_ranking_only_new_items_is_served_with_the_new_item_weights(encoder):
    from dataclasses import replace

    from liverec import Item

    settings = Settings(encoder_progress=False, sources={"trending": {}, "content": {}, "tfidf": {}},
                        fusion_weights={"trending": 1.0, "content": 1.0, "tfidf": 0.0}, fusion_learning_rate=0.0)
    with Engine.open(settings=settings, encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"item number {j} about gardens") for j in range(60)])
        eng.record_many(chains(), learn=False)
        eng.fit()
        eng.add_items([Item(id="n1", text="gardens and roses"), Item(id="n2", text="item about the sea")])
        base = TunedConfig(sources={}, weights={"trending": 1.0, "content": 1.0, "tfidf": 0.0}, feedback={},
                           score=0.0, default_score=0.0, objective="", n_validation_users=0, n_train_events=0,
                           seconds=0.0, seed=0, stopped_by_budget=False)
        eng.models.tuned = replace(base, new_item_weights={"trending": 0.0, "content": 0.0, "tfidf": 1.0})

        def sources(**kw) -> set[str]:
            return {r.source for rec in eng.recommend("u0", k=2, **kw) for r in rec.reasons}

        assert sources(candidates=["n1", "n2"]) == {"tfidf"}  # nobody acted on either: new-item weights
        assert "tfidf" not in sources(candidates=["n1", "n2", "i3"])  # one has events: the usual weights
        assert sources(candidates=["n1", "n2"], weights={"tfidf": 0.0, "trending": 0.0}) == {"content"}
        eng.models.tuned = base  # tuned before new-item weights existed: the usual weights
        assert "tfidf" not in sources(candidates=["n1", "n2"])


def test_replay_split_asks_each_sampled_tail_event_from_the_history_it_came_after():
    from liverec.rank.tuner import replay_split

    cat = make_catalog()
    events = sorted(chains(), key=lambda e: e.timestamp)
    split = replay_split(events, cat, FeedbackConfig(), share=0.25, max_rows=50, seed=0)
    assert split is not None and split.replay is not None and split.seen is not None
    cut = len(events) - int(len(events) * 0.25)
    assert split.train == events[:cut]  # sources are fitted on the log before the tail
    assert len(split.users) == 50 and len(set(split.users)) < 50  # per event: a user may be asked more than once
    learned = [e for batch in split.replay for e in batch]
    assert learned == events[cut : cut + len(learned)]  # the tail, in time order, learned before each row
    for r, (u, st, nxt) in enumerate(zip(split.users, split.states, split.next_item)):
        at = cut + sum(len(b) for b in split.replay[: r + 1])  # this row's event
        assert events[at].user == u and cat.ids[int(nxt)] == events[at].item
        before = [e for e in events[:at] if e.user == u]
        assert list(st.history) == before[-len(st.history) :] if st.history else not before
        assert split.seen[r] == {cat.get_idx(e.item) for e in before} and int(nxt) not in split.seen[r]
    again = replay_split(events, cat, FeedbackConfig(), share=0.25, max_rows=50, seed=0)
    assert again is not None and again.users == split.users and (again.next_item == split.next_item).all()
    assert replay_split(events, cat, FeedbackConfig(), share=0.25, users=lambda u: u == "u0") is None  # too few rows


def test_the_objective_weighs_the_next_item_against_the_later_ones_by_next_share(encoder):
    """``next_share`` (``Settings.tune_next_share``) moves the objective between HR@10 of the
    next item (1) and NDCG@10 of every held-out item (0), linearly; the engine's tuner reads it."""
    cat = make_catalog()
    events = chains(jump=0.3)
    sources = {"trending": {}, "transition": {"window": 1}}
    weights = {"trending": 0.2, "transition": 1.0}

    def objective(share: float) -> float:
        tuner = Tuner(make, sources, weights, FeedbackConfig(), seed=0, new_item_share=0.0, next_share=share)
        return tuner.evaluate(events, cat, sources, weights, FeedbackConfig())

    hr, ndcg, half = objective(1.0), objective(0.0), objective(0.5)
    assert hr != pytest.approx(ndcg)
    assert half == pytest.approx(0.5 * hr + 0.5 * ndcg)
    assert objective(0.25) == pytest.approx(0.25 * hr + 0.75 * ndcg)
    with pytest.raises(ValueError, match="next_share"):
        Tuner(make, sources, weights, FeedbackConfig(), next_share=1.5)

    from liverec import Item

    settings = Settings(encoder_progress=False, sources=sources, fusion_weights=weights, tune_next_share=0.0)
    with Engine.open(settings=settings, encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"item number {j}") for j in range(60)])
        eng.record_many(events, learn=False)
        tuned = eng.tune(max_trials=1, refit=False)
    assert tuned.objective.startswith("0*HR@10") and "1*NDCG@10(held-out items)" in tuned.objective
