"""The user simulator, its agents and ``liverec simulate`` (seconds, real LM vectors)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from liverec.encode.text import render_text
from liverec.errors import ValidationError
from liverec.evaluation.agents import EngineAgent, PopularityAgent, make_agent
from liverec.evaluation.simulator import (
    RandomAgent,
    SimResult,
    Simulator,
    benchmark_simulator,
    click_probability,
    compare_agents,
)
from liverec.settings import DEFAULT_TEXT_TEMPLATE, Settings

N_ITEMS = 300
LM_ONLY = Settings(sources={"content": {}, "trending": {}}, fusion_weights={"content": 1.0, "trending": 0.1})


@pytest.fixture(scope="module")
def catalog(books, encoder):
    """The first 300 real books and their all-MiniLM-L6-v2 vectors."""
    items = books[:N_ITEMS]
    vecs = encoder.encode([render_text(i.text, i.attributes, DEFAULT_TEXT_TEMPLATE) for i in items])
    return vecs.astype(np.float32), [i.id for i in items]


class Recorder:
    """Random slates; remembers what the simulator's users looked like at every step."""

    name = "recorder"

    def __init__(self, sim: Simulator, ids: list[str], seed: int = 0) -> None:
        self.sim, self.inner = sim, RandomAgent(ids, seed=seed)
        self.snapshots: list[np.ndarray] = []
        self.events: list[tuple[str, str, str, float]] = []

    def recommend(self, user: str, k: int) -> list[str]:
        self.snapshots.append(self.sim.interests.copy())
        return self.inner.recommend(user, k)

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        self.events.append((user, item, kind, t))


# ------------------------------------------------------------------ click model
def test_click_probability_rises_with_taste_and_falls_with_position_and_satiation():
    aff = np.linspace(-0.2, 1.0, 25)
    p = click_probability(aff, 0)
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
    by_pos = click_probability(0.6, np.arange(10), eta=1.0)
    assert np.all(np.diff(by_pos) < 0)
    assert by_pos[1] == pytest.approx(by_pos[0] / 2)  # 1 / (1 + j) ** eta
    assert click_probability(0.6, 3, eta=0.0) == pytest.approx(click_probability(0.6, 0))
    sat = click_probability(0.6, 0, np.arange(4), satiation=0.5)
    assert np.allclose(sat[1:] / sat[:-1], 0.5)


def test_simulator_click_model_on_real_books(catalog):
    vecs, ids = catalog
    sim = Simulator(vecs, ids, n_users=10, seed=3)
    for u in range(10):
        aff = sim.affinity(u, np.arange(len(ids)))
        order = np.argsort(aff)
        worst, middle, best = order[0], order[len(order) // 2], order[-1]
        p = [sim.click_probabilities(u, np.array([i]))[0] for i in (worst, middle, best)]
        assert p[0] < p[1] < p[2]  # more similar to the taste -> more clicks
        # The same item is less likely to be clicked lower down the slate.
        filler = order[:4]
        down = [sim.click_probabilities(u, np.r_[filler[:j], best])[j] for j in range(5)]
        assert all(x > y for x, y in zip(down, down[1:]))
        assert down[1] == pytest.approx(down[0] / 2)
    # Satiation: after a click in this session, the item (cos 1 > 0.8) is less attractive.
    best0 = int(np.argmax(sim.affinity(0, np.arange(len(ids)))))
    before = sim.click_probabilities(0, np.array([best0]))[0]
    sim.session_clicked[0].append(best0)
    assert sim.click_probabilities(0, np.array([best0]))[0] == pytest.approx(before * sim.satiation)


# ------------------------------------------------------------------ determinism
def test_same_seed_same_run_and_other_seed_differs(catalog):
    vecs, ids = catalog

    def run(seed: int) -> SimResult:
        return Simulator(vecs, ids, n_users=30, seed=seed, drift_at=150).run(RandomAgent(ids, seed=1), 300, warmup=50)

    a, b, c = run(5), run(5), run(6)
    for field in ("users", "clicks", "shown", "expected"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.users, c.users)
    assert a.clicks.sum() > 0 and a.shown.sum() == 300 * 5
    # One Simulator re-runs from scratch: every agent meets the same world.
    sim = Simulator(vecs, ids, n_users=30, seed=5, drift_at=150)
    first = sim.run(RandomAgent(ids, seed=1), 300, warmup=50)
    again = sim.run(RandomAgent(ids, seed=1), 300, warmup=50)
    assert np.array_equal(first.clicks, again.clicks) and np.array_equal(first.clicks, a.clicks)


def test_warm_up_log_is_the_same_for_every_agent(catalog):
    vecs, ids = catalog
    logs = []
    for agent_seed in (0, 1):
        got: list = []

        class Warm(RandomAgent):
            def warm_start(self, events):
                got.extend((e.user, e.item, e.kind, e.timestamp) for e in events)

        Simulator(vecs, ids, n_users=20, seed=2).run(Warm(ids, seed=agent_seed), 10, warmup=200)
        logs.append(got)
    assert logs[0] and logs[0] == logs[1]


# ------------------------------------------------------------------------ drift
@pytest.mark.parametrize("mode", ["replace", "rotate"])
def test_drift_changes_tastes_at_the_given_step(catalog, mode):
    vecs, ids = catalog
    sim = Simulator(vecs, ids, n_users=15, seed=0, drift_at=40, drift_mode=mode, drift_strength=0.5)
    rec = Recorder(sim, ids)
    res = sim.run(rec, 80, warmup=20)
    snaps = rec.snapshots
    assert len(snaps) == 80
    assert all(np.array_equal(snaps[0], s) for s in snaps[:40])  # unchanged before the shift
    assert all(np.array_equal(snaps[40], s) for s in snaps[40:])  # the shift happens once
    assert not np.allclose(snaps[39], snaps[40])
    cos = np.einsum("uid,uid->ui", snaps[39], snaps[40])
    if mode == "rotate":  # turned part of the way, not replaced
        assert np.all(cos > 0.3) and np.all(cos < 0.9999)
    assert np.allclose(np.linalg.norm(snaps[40], axis=-1), 1.0, atol=1e-5)
    before, after = res.user_ctr()
    assert before.shape == after.shape == (15,)
    assert SimResult.recovery(res)["users"] >= 0


def test_recovery_counts_slates_until_back_to_90_percent():
    # One user: 5 slates at CTR 0.4, the shift, then 0.0, 0.0, 0.4, 0.4 ... (k=5).
    exp = np.array([2.0] * 5 + [0.0, 0.0] + [2.0] * 8)
    res = SimResult(
        agent="x", k=5, n_users=1, users=np.zeros(15, dtype=np.int64), clicks=exp.astype(np.int64),
        shown=np.full(15, 5), expected=exp, drift_at=5, wall_seconds=1.0, agent_seconds=0.5,
    )
    # Rolling over the last 2 post-shift slates: [0, 0, .2, .4] -> back to >= 0.36 at the 4th.
    assert res.recovery(window=2)["recovery_events"] == 4
    assert res.recovery(window=2)["recovered_frac"] == 1.0
    # evidence: the 2 clicks of the 3rd post-shift slate came before the 4th; found at the 3rd slate
    assert res.recovery(window=2)["recovery_clicks"] == 2.0
    assert res.recovery(window=2)["first_click_slates"] == 3.0
    assert np.isnan(res.recovery(window=20)["recovery_events"])  # too few slates to judge
    assert res.ctr == pytest.approx(exp.sum() / 75)


# ----------------------------------------------------------------------- agents
def test_realtime_liverec_beats_random_by_a_clear_margin(catalog):
    vecs, ids = catalog
    random_clicks = realtime_clicks = random_exp = realtime_exp = 0.0
    for seed in range(3):  # pooled over worlds: one seed alone swings between 1.5x and 1.7x
        # Broad tastes (8 principal axes): learnable from the few clicks 1500 steps give.
        sim = Simulator(vecs, ids, n_users=50, k=5, seed=seed, taste_dims=8)
        random = sim.run(RandomAgent(ids, seed=seed), 1500, warmup=300)
        # The LM learners only: the default fusion's CF sources (EASE, ALS, ItemKNN) are
        # tuned on MovieLens and change with it; this test is about learning from clicks.
        agent = EngineAgent.build(vecs, ids, "realtime", settings=LM_ONLY)
        realtime = sim.run(agent, 1500, warmup=300)
        agent.close()
        random_clicks += random.clicks.sum()
        realtime_clicks += realtime.clicks.sum()
        random_exp += random.expected.sum()
        realtime_exp += realtime.expected.sum()
    assert realtime_clicks > 1.35 * random_clicks, (realtime_clicks, random_clicks)
    assert realtime_exp > 1.35 * random_exp, (realtime_exp, random_exp)


def test_engine_agent_modes_learn_as_documented(catalog):
    vecs, ids = catalog
    sim = Simulator(vecs, ids, n_users=20, seed=1)
    static = EngineAgent.build(vecs, ids, "static")
    retrain = EngineAgent.build(vecs, ids, "retrain-25")
    realtime = EngineAgent.build(vecs, ids, "realtime")
    both = EngineAgent.build(vecs, ids, "realtime+retrain-25")
    for a in (static, retrain, realtime, both):
        sim.run(a, 300, warmup=100)
    assert static.n_fits == 1 and realtime.n_fits == 1  # the warm-up fit only
    assert retrain.n_fits == 1 + retrain.n_events // 25 and retrain.n_events >= 25
    assert both.learn and both.n_fits == 1 + both.n_events // 25
    both.close()
    # Static never moves its profiles past the warm-up; realtime learned every click.
    n_warm = static.engine.store.count_events() - static.n_events
    assert realtime.engine.store.count_events() == n_warm + realtime.n_events
    with pytest.raises(ValidationError, match="retrain-N"):
        EngineAgent(static.engine, "retrain-x")
    for a in (static, retrain, realtime):
        a.close()


def test_reference_agents_and_bad_slates(catalog):
    vecs, ids = catalog
    sim = Simulator(vecs, ids, n_users=10, seed=0)
    res = sim.run(PopularityAgent(ids), 200, warmup=50)
    assert 0 <= res.ctr <= 1 and res.shown.sum() == 1000

    class Dup(RandomAgent):
        def recommend(self, user, k):
            return [ids[0]] * k

    with pytest.raises(ValidationError, match="twice"):
        sim.run(Dup(ids), 5)
    with pytest.raises(ValidationError):
        make_agent("nonsense", vecs, ids)


def test_vw_agent_runs(catalog):
    pytest.importorskip("vowpalwabbit")
    vecs, ids = catalog
    sim = Simulator(vecs, ids, n_users=20, seed=0, drift_at=150)
    agent = make_agent("vw", vecs, ids, seed=0)
    res = sim.run(agent, 300, warmup=100)
    agent.close()
    assert res.shown.sum() == 300 * 5 and 0 < res.ctr < 1
    assert agent.pool == 100 and agent.n_random == 20


def test_compare_agents_and_benchmark(catalog):
    vecs, ids = catalog
    out = compare_agents(
        vecs, ids, {"random": lambda s: RandomAgent(ids, seed=s), "pop": lambda s: PopularityAgent(ids, seed=s)},
        seeds=[0, 1], steps=200, warmup=50, n_users=15, drift_at=100, ratios=[("pop", "random")],
    )
    p = out["policies"]["pop"]
    assert p["ctr_ci95"][0] <= p["ctr"] <= p["ctr_ci95"][1]
    assert len(p["curve"]) == 50 and "pop/random" in out["ratios"]
    json.dumps(out, allow_nan=False)
    bench = benchmark_simulator(vecs, ids, steps=500, n_users=20)
    assert bench["sim_steps_per_second"] > 0 and bench["steps"] == 500


# -------------------------------------------------------------------------- CLI
def test_cli_simulate_writes_json(encoder, tmp_path, monkeypatch):
    import liverec.evaluation.simulator as sim_mod
    from typer.testing import CliRunner

    from liverec.cli import app

    monkeypatch.setattr(sim_mod, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    out = tmp_path / "sim.json"
    agents = "static,retrain-20,realtime,random"
    res = CliRunner().invoke(
        app,
        ["simulate", "--seeds", "2", "--steps", "120", "--warmup", "60", "--users", "15", "--catalog-size", "150",
         "--agents", agents, "--drift", "--json", str(out), "--cache", f"sqlite:///{tmp_path}/v.db",
         "--report", str(tmp_path / "sim.html")],
    )
    assert res.exit_code == 0, res.output
    page = (tmp_path / "sim.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # CTR curves + cumulative CTR
    assert all(f"<th>{a}</th>" in page for a in agents.split(","))
    got = json.loads(out.read_text())
    assert set(got["policies"]) == set(agents.split(","))
    for p in got["policies"].values():
        assert 0.0 <= p["ctr"] <= 1.0 and len(p["ctr_ci95"]) == 2
        assert "recovery_events" in p and "curve" in p
    assert got["settings"]["catalog_size"] == 150 and got["settings"]["seeds"] == [0, 1]
    assert "realtime/static" in got["ratios"]
    assert "realtime/static" in res.output
    bad = CliRunner().invoke(app, ["simulate", "--agents", "nonsense", "--catalog-size", "150", "--steps", "5",
                                   "--seeds", "1", "--cache", f"sqlite:///{tmp_path}/v.db"])
    assert bad.exit_code == 2 and "retrain-N" in bad.output


def test_parallel_seeds_give_the_same_figures(catalog):
    vecs, ids = catalog
    facs = {
        "realtime@lints": lambda s: make_agent("realtime@lints", vecs, ids, seed=s, settings=LM_ONLY),
        "pop": lambda s: PopularityAgent(ids, seed=s),
    }
    kw = dict(seeds=[0, 1, 2], steps=150, warmup=60, n_users=15, drift_at=75, ratios=[("realtime@lints", "pop")])
    seen: list[tuple[str, int, int]] = []
    one = compare_agents(vecs, ids, facs, jobs=1, **kw)
    two = compare_agents(vecs, ids, facs, jobs=2, progress=lambda n, s, k: seen.append((n, s, k)), **kw)
    for name in facs:
        assert one["policies"][name]["ctr_per_seed"] == two["policies"][name]["ctr_per_seed"]
        assert one["policies"][name]["curve"] == two["policies"][name]["curve"]
    assert one["ratios"] == two["ratios"]
    # progress from the worker processes reached the parent: every agent step of every seed
    assert sum(k for _, _, k in seen) == 3 * 150 * len(facs)


def test_agent_names_pick_the_policy(catalog):
    vecs, ids = catalog
    agent = make_agent("realtime@lints", vecs, ids, settings=LM_ONLY)
    assert agent.name == "realtime@lints" and agent.engine.settings.default_policy == "lints"
    with pytest.raises(ValidationError, match="unknown policy"):
        make_agent("realtime@nope", vecs, ids, settings=LM_ONLY)
    with pytest.raises(ValidationError, match="retrain-N"):
        make_agent("sometimes@lints", vecs, ids, settings=LM_ONLY)
