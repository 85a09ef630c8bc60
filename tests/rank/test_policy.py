"""Exploring policies: valid propensities, learning from rewards, engine wiring."""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import make_catalog
from liverec import Engine, Event, Settings
from liverec.errors import ValidationError
from liverec.models import UserState
from liverec.rank.policy import EpsilonGreedy, LinearTS, LinUCB, Policy, SlateContext


def ctx_for(cat, fused, query=None):
    return SlateContext(UserState("u"), cat.from_idx(cat.alive_idx()), np.asarray(fused, float), query, cat)


def test_greedy_and_epsilon_extremes():
    cat = make_catalog(20)
    fused = np.linspace(1, 0, 20)
    ctx = ctx_for(cat, fused)
    assert Policy().choose(ctx, 3).positions.tolist() == [0, 1, 2]
    s = EpsilonGreedy(epsilon=0.0).choose(ctx, 3)
    assert s.positions.tolist() == [0, 1, 2] and s.propensities.tolist() == [1.0, 1.0, 1.0]
    s = EpsilonGreedy(epsilon=1.0, pool=10).choose(ctx, 3)
    assert np.allclose(s.propensities, [1 / 10, 1 / 9, 1 / 8]) and len(set(s.positions.tolist())) == 3


def test_epsilon_propensity_matches_frequency():
    cat = make_catalog(30)
    ctx = ctx_for(cat, np.linspace(1, 0, 30))
    pol = EpsilonGreedy(epsilon=0.3, pool=10, seed=1)
    counts, props = {}, {}
    for _ in range(4000):
        s = pol.choose(ctx, 2)
        first = int(s.positions[0])
        counts[first] = counts.get(first, 0) + 1
        props[first] = float(s.propensities[0])
    for item, p in props.items():
        assert abs(counts[item] / 4000 - p) < 0.03


def test_thompson_propensities_are_frequencies():
    cat = make_catalog(40)
    ctx = ctx_for(cat, np.linspace(1, 0, 40), cat.vectors[0])
    pol = LinearTS(v=2.0, pool=20, n_propensity=400, seed=3)
    for slot_item in range(5):  # some evidence so the posterior is not flat
        pol._update(pol._features(ctx, np.array([slot_item]))[0], 1.0)
    s = pol.choose(ctx, 3)
    assert np.all((s.propensities > 0) & (s.propensities <= 1))
    first = int(s.positions[0])
    hits = sum(int(pol.choose(ctx, 3).positions[0]) == first for _ in range(300))
    assert abs(hits / 300 - s.propensities[0]) < 0.12


def _train(cls, paying_cluster):
    """Clicks only on ``paying_cluster``; returns the share of cluster 0 in the last slates."""
    cat = make_catalog(60, clusters=2, seed=4)
    cluster = np.array([a["cluster"] for a in cat.attributes])
    rng = np.random.default_rng(0)
    pol = cls(pool=60, seed=0)
    user_q = cat.vectors.mean(0)  # a user vector that favours neither cluster
    user_q /= np.linalg.norm(user_q)
    last_share = 0.0
    for step in range(300):
        fused = 0.5 + 0.05 * rng.random(60)
        ctx = ctx_for(cat, fused, user_q)
        s = pol.choose(ctx, 5)
        if step >= 280:
            last_share += float(np.mean(cluster[s.positions] == 0)) / 20
        for slot, p in enumerate(s.positions):
            if cluster[p] == paying_cluster:
                pol.feedback(s, slot, 1.0)
        pol.settle(s, ctx)
    return last_share


@pytest.mark.parametrize("cls", [LinUCB, LinearTS])
def test_linear_policies_learn_what_pays(cls):
    """Same features, opposite rewards: the learned slates go opposite ways."""
    assert _train(cls, paying_cluster=0) > 0.8
    assert _train(cls, paying_cluster=1) < 0.2


def test_engine_policies_log_propensities_and_learn(encoder, books):
    s = Settings(encoder_progress=False)
    with Engine.open(settings=s, encoder=encoder) as eng:
        eng.add_items(books[:200])
        recs = eng.recommend("u", k=5, policy="epsilon")
        imps = list(eng.store.iter_impressions(user="u"))
        assert [i.policy for i in imps] == ["epsilon"] * 5
        assert [i.propensity for i in imps] == [r.propensity for r in recs]
        assert all(0 < r.propensity <= 1 for r in recs)
        lin = eng.policies["linucb"]
        served = eng.recommend("u", k=5, policy="linucb")
        # features: 32 projected dims, fused score, one score per served source (weight > 0), bias
        served_sources = sorted(n for n in eng.learners if s.fusion_weights.get(n, 1.0) > 0)
        assert lin.b_.shape == (32 + 1 + len(served_sources) + 1,) and lin.sources_ == tuple(served_sources)
        before = lin.b_.copy()
        eng.record(Event(user="u", item=served[2].item, kind="click"))
        assert not np.allclose(lin.b_, before)   # the click reached the policy at once
        eng.recommend("u", k=5, policy="linucb")  # settles the previous slate (zeros for the rest)
        assert lin.shown_by_pos_[:5].sum() == 5
        with pytest.raises(ValidationError, match="unknown policy"):
            eng.recommend("u", policy="psychic")


def test_thompson_explores_beyond_the_top_pool_only_when_asked():
    cat = make_catalog(60)
    ctx = ctx_for(cat, np.linspace(1, 0, 60), cat.vectors[0])
    top = set(range(10))  # pool=10: the ten best fused items
    reach = set()
    pol = LinearTS(v=3.0, pool=10, n_random=10, n_propensity=16, seed=2)
    for _ in range(200):
        reach |= set(pol.choose(ctx, 3).positions.tolist())
    assert reach - top, "random candidates must sometimes be served"
    closed = LinearTS(v=3.0, pool=10, n_random=0, n_propensity=16, seed=2)
    assert all(set(closed.choose(ctx, 3).positions.tolist()) <= top for _ in range(100))
