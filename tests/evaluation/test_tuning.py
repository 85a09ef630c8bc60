"""Baseline tuning: the validation split, the choice of grid point, no leak, the JSON record."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from liverec import Event, Item
from liverec.encode.catalog import Catalog
from liverec.evaluation.adapters import LearnerModel, make_learner
from liverec.evaluation.datasets import Dataset
from liverec.evaluation.harness import run_cold, run_static, run_stream
from liverec.evaluation.run import evaluate
from liverec.evaluation.splits import cold_item_split, stream_split, temporal_user_split
from liverec.evaluation.tuning import GRIDS, TunedModel, best_index, grid_for, validation_split
from liverec.models.base import InteractionLog, Learner, UserState


def _catalog(ids: list[str]) -> Catalog:
    cat = Catalog(dim=2)
    cat.upsert(ids, np.ones((len(ids), 2), np.float32), [{}] * len(ids), [f"item {i}" for i in ids])
    return cat


def _log(rows: list[tuple[str, str]]) -> list[Event]:
    return [Event(user=u, item=i, kind="click", timestamp=float(t), id=f"e{t}") for t, (u, i) in enumerate(rows)]


# ------------------------------------------------------------------ the choice
def _neighbourhood_log(groups: int = 6, partners: int = 6, followers: int = 3) -> tuple[list[Event], list[str]]:
    """A log where ItemKNN needs several neighbours per history item, by construction.

    In group g, history items h0..h3 each have a private partner f (6 users hold the
    pair: with the item itself, its strongest neighbours) and share one target t
    (3 users hold h0..h3 then t, 3 more stop before t and are held out on it). With 1
    neighbour per history item (the item itself) nothing new scores; with 5, t
    collects from all four history items and ranks first. Every user's last event
    (``z``, seen by nobody earlier) or ``t`` is what the validation holds out.
    """
    rows: list[tuple[str, str]] = []
    for g in range(groups):
        for j in range(4):
            for p in range(partners):
                rows += [(f"p{g}.{j}.{p}", f"h{g}.{j}"), (f"p{g}.{j}.{p}", f"f{g}.{j}"), (f"p{g}.{j}.{p}", f"z{g}")]
        for a in range(followers):
            rows += [(f"b{g}.{a}", f"h{g}.{j}") for j in range(4)] + [(f"b{g}.{a}", f"t{g}"), (f"b{g}.{a}", f"z{g}")]
            rows += [(f"a{g}.{a}", f"h{g}.{j}") for j in range(4)] + [(f"a{g}.{a}", f"t{g}")]
    # Padding items first in the catalog: zero-score ties never reach a top-10 list by index.
    ids = [f"pad{n}" for n in range(40)] + sorted({i for _, i in rows})
    return _log(rows), ids


def test_the_tuner_picks_the_neighbourhood_the_data_needs() -> None:
    events, ids = _neighbourhood_log()
    cat = _catalog(ids)

    def make(point: dict[str, Any]) -> LearnerModel:
        return LearnerModel("itemknn", make_learner("itemknn", {"shrink": 0.0, "max_history": None, **point}), cat)

    model = TunedModel("itemknn", make, [{"k_neighbours": 1}, {"k_neighbours": 5}], "static", k=10)
    model.fit(events)
    t = model.tuning
    assert t["chosen"] == {"k_neighbours": 5}
    # Only the 18 "a" users of 180 can hit (z is new to everyone): t first for each with 5, never with 1.
    assert t["scores"] == pytest.approx([0.0, 18 / 180])
    assert t["grid"] == [{"k_neighbours": 1}, {"k_neighbours": 5}] and t["seconds"] >= 0
    for j in range(4):
        model.learn_one(Event(user="new", item=f"h0.{j}", kind="click", timestamp=1e6 + j))
    assert model.recommend("new", 1, exclude={f"h0.{j}" for j in range(4)}) == ["t0"]


class _Graded(Learner):
    """Recommends the target with probability ``quality`` (deterministic per user): a known best grid point."""

    name = "graded"

    def __init__(self, *, quality: float = 0.0, seed: int = 0) -> None:
        self.quality = quality
        self.seed = seed

    def fit(self, log: InteractionLog) -> "_Graded":
        self.catalog_ = log.catalog
        self.fitted_ = True
        return self

    def learn_one(self, event: Event) -> None:
        pass

    def score(self, user: UserState, items: Any) -> np.ndarray:
        lucky = (int(user.user[1:]) % 10) < self.quality * 10
        return np.array([1.0 if (lucky and i == "target") else 0.0 for i in items.ids])


def test_the_tuner_picks_the_best_point_wherever_it_is_in_the_grid() -> None:
    rows = [(f"u{n}", f"x{n}") for n in range(20)] + [(f"u{n}", "target") for n in range(20)]
    cat = _catalog([f"x{n}" for n in range(20)] + ["target"])
    grid = [{"quality": q} for q in (0.2, 0.9, 0.5)]
    model = TunedModel("graded", lambda p: LearnerModel("graded", _Graded(**p), cat), grid, "static", k=1)
    model.fit(_log(rows))
    assert model.tuning["chosen"] == {"quality": 0.9}
    assert model.tuning["scores"] == pytest.approx([0.2, 0.9, 0.5])


def test_keys_searched_last_score_the_other_keys_first_then_those_at_the_best() -> None:
    rows = [(f"u{n}", f"x{n}") for n in range(20)] + [(f"u{n}", "target") for n in range(20)]
    cat = _catalog([f"x{n}" for n in range(20)] + ["target"])
    quality = {(0, 1): 0.2, (1, 1): 0.5, (2, 1): 0.3, (0, 2): 0.9, (1, 2): 0.6, (1, 3): 0.4, (2, 3): 0.1, (0, 3): 0.0}
    grid = [{"a": a, "size": z} for z in (1, 2, 3) for a in (0, 1, 2) if (a, z) in quality]

    def make(p: dict) -> LearnerModel:
        return LearnerModel("graded", _Graded(quality=quality[(p["a"], p["size"])]), cat)

    staged = TunedModel("graded", make, grid, "static", k=1, last=("size",))
    staged.fit(_log(rows))
    t = staged.tuning
    # a at size 1 (best a=1), then sizes 2 and 3 at a=1: (0, 2), the best of the full grid, is never scored.
    scored = {(p["a"], p["size"]) for p, sc in zip(t["grid"], t["scores"]) if sc is not None}
    assert scored == {(0, 1), (1, 1), (2, 1), (1, 2), (1, 3)} and t["points_scored"] == 5
    assert t["chosen"] == {"a": 1, "size": 2} and t["search"] == "a at size 1, then size at the best of those"
    full = TunedModel("graded", make, grid, "static", k=1)
    full.fit(_log(rows))
    assert full.tuning["chosen"] == {"a": 0, "size": 2} and full.tuning["search"] == "every point"


def test_best_index_ignores_nan_and_keeps_the_first_of_ties() -> None:
    assert best_index([float("nan"), 0.2, 0.5, 0.5, 0.1]) == 2
    assert best_index([float("nan")] * 3) == 0


def test_grids_match_the_documented_ranges_and_fixed_keys_stay_fixed() -> None:
    assert [p["l2"] for p in GRIDS["ease"]] == [50, 100, 200, 500, 1000, 2000]
    assert len(GRIDS["als"]) == 18 and len(GRIDS["bpr"]) == 6
    assert sorted({p["k_neighbours"] for p in GRIDS["itemknn"]}) == [20, 50, 100, 400]
    assert len(GRIDS["sknn"]) == 9
    assert grid_for("ease", {"l2": 10.0}) == [] and grid_for("tfidf", {}) == [] and grid_for("bow", {}) == []
    assert {tuple(p) for p in grid_for("als", {"alpha": 5.0})} == {("factors", "regularization")}


# ------------------------------------------------------------------ no leak
def _random_log(seed: int = 3, users: int = 30, items: int = 40, per_user: int = 12) -> list[Event]:
    rng = np.random.default_rng(seed)
    rows = [(f"u{u}", f"i{int(i)}") for u in range(users) for i in rng.choice(items, per_user, replace=False)]
    order = rng.permutation(len(rows))
    return _log([rows[j] for j in order])


@pytest.mark.parametrize("protocol", ["static", "stream", "cold"])
def test_validation_is_carved_from_the_training_part_only(protocol: str) -> None:
    events = _random_log()
    if protocol == "static":
        outer = temporal_user_split(events)
        train, test = outer.train, outer.test
    elif protocol == "stream":
        outer_s = stream_split(events)
        train, test = outer_s.warmup, outer_s.stream
    else:
        outer_c = cold_item_split(events)
        train, test = outer_c.train, outer_c.test
    val = validation_split(protocol, train)
    train_ids, test_ids = {e.id for e in train}, {e.id for e in test}
    assert {e.id for e in val.fit} | {e.id for e in val.held_out} == train_ids
    assert not ({e.id for e in val.fit} | {e.id for e in val.held_out}) & test_ids
    assert not {e.id for e in val.fit} & {e.id for e in val.held_out}
    if protocol == "stream":
        assert max(e.timestamp for e in val.fit) <= min(e.timestamp for e in val.held_out)
        assert len(val.held_out) == round(0.2 * len(train))
    if protocol == "cold":
        assert val.candidates and not {e.item for e in val.fit} & set(val.candidates)


class _Spy(Learner):
    """Popularity that remembers every event it was ever given."""

    name = "spy"
    seen: set[str] = set()

    def __init__(self, *, bias: float = 0.0, seed: int = 0) -> None:
        self.bias = bias
        self.seed = seed

    def fit(self, log: InteractionLog) -> "_Spy":
        self.catalog_ = log.catalog
        self.fitted_ = True
        _Spy.seen |= {e.id for e in log.events}
        self.pop_ = np.bincount(log.item_idx[log.item_idx >= 0], minlength=len(log.catalog)).astype(float)
        return self

    def learn_one(self, event: Event) -> None:
        _Spy.seen.add(event.id)

    def score(self, user: UserState, items: Any) -> np.ndarray:
        return self.pop_[items.idx] + self.bias * np.arange(len(items))


@pytest.mark.parametrize("protocol", ["static", "stream", "cold"])
def test_tuning_never_sees_a_test_event(protocol: str) -> None:
    events = _random_log()
    cat = _catalog(sorted({e.item for e in events}))
    _Spy.seen = set()

    def factory() -> TunedModel:
        def make(p: dict[str, Any]) -> LearnerModel:
            return LearnerModel("spy", _Spy(**p), cat)

        return TunedModel("spy", make, [{"bias": 0.0}, {"bias": 1.0}], protocol, k=5, learn=False)

    if protocol == "static":
        (res,) = run_static(events, [factory], k=5, n_items=len(cat))
        test = temporal_user_split(events).test
    elif protocol == "stream":
        (res,) = run_stream(events, [factory], k=5, learns={"spy": False})
        test = stream_split(events).stream
    else:
        (res,) = run_cold(events, [factory], k=5)
        test = cold_item_split(events).test
    assert _Spy.seen and not _Spy.seen & {e.id for e in test}
    assert res.tuning is not None and len(res.tuning["scores"]) == 2


# ------------------------------------------------------------------ the record
class _HashEncoder:
    """A deterministic stand-in for the LM: texts to unit vectors by hashing their words."""

    model_id = "hash-test"
    dim = 16

    def encode(self, texts: Any, *, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for r, t in enumerate(texts):
            for w in t.split():
                out[r, sum(map(ord, w)) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_the_eval_json_holds_every_grid_and_the_choice(tmp_path, monkeypatch) -> None:
    from liverec.evaluation import report
    from liverec.evaluation.report import tuning_lines, write_html, write_json

    monkeypatch.setattr(report, "_plots", lambda out: [])  # the plots are tested elsewhere; slow to draw

    events = _random_log(users=40, items=30)
    items = [Item(id=f"i{n}", text=f"item number {n} genre {n % 4}") for n in range(30)]
    ds = Dataset("random", items, events)
    out = evaluate(ds, ["pop", "ease", "ease:l2=10", "itemknn", "sknn"], protocol="static", encoder=_HashEncoder(),
                   cache_url=f"sqlite:///{tmp_path}/v.db")
    write_json(out, tmp_path / "o.json")
    got = json.loads((tmp_path / "o.json").read_text())
    t = got["tuning"]
    assert set(t) == {"ease", "itemknn", "sknn"}  # pop has nothing to tune; ease:l2=10 is fixed
    assert t["ease"]["grid"] == [{"l2": v} for v in (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)]
    assert len(t["ease"]["scores"]) == 6 and t["ease"]["chosen"] in t["ease"]["grid"]
    best = max(s for s in t["ease"]["scores"] if s is not None)
    assert t["ease"]["scores"][t["ease"]["grid"].index(t["ease"]["chosen"])] == best
    assert t["ease"]["metric"] == "ndcg@10" and t["ease"]["seconds"] >= 0
    assert got["settings"]["tune_baselines"] is True
    assert any(line.startswith("ease: l2=") for line in tuning_lines(got))
    write_html(got, tmp_path / "o.html")
    assert "Hyperparameters" in (tmp_path / "o.html").read_text()

    plain = evaluate(ds, ["ease"], protocol="static", encoder=_HashEncoder(), cache_url=f"sqlite:///{tmp_path}/v.db",
                     tune_baselines=False)
    assert plain["tuning"] == {}


@pytest.mark.parametrize("flag", ["--tune-baselines", "--no-tune-baselines"])
def test_cli_flag_turns_baseline_tuning_on_and_off(flag: str, tmp_path, monkeypatch) -> None:
    import liverec.evaluation.run as run_mod
    from typer.testing import CliRunner

    from liverec.cli import app

    monkeypatch.setattr(run_mod, "SentenceTransformerEncoder", lambda *a, **k: _HashEncoder())
    d = tmp_path / "data"
    d.mkdir()
    (d / "items.jsonl").write_text("\n".join(json.dumps({"id": f"i{n}", "text": f"item {n}"}) for n in range(40)))
    (d / "events.csv").write_text(
        "user,item,kind,timestamp,id\n" + "\n".join(f"{e.user},{e.item},click,{e.timestamp},{e.id}" for e in _random_log())
    )
    res = CliRunner().invoke(app, ["eval", "--dataset", "generic", "--data", str(d), "--models", "pop,ease", flag,
                                   "--json", str(tmp_path / "r.json"), "--cache", f"sqlite:///{tmp_path}/c.db"])
    assert res.exit_code == 0, res.output
    tuning = json.loads((tmp_path / "r.json").read_text())["tuning"]
    if flag == "--tune-baselines":
        assert set(tuning) == {"ease"} and "tuned ease: l2=" in res.output
    else:
        assert tuning == {} and "tuned" not in res.output
