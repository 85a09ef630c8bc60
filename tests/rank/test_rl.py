"""Reinforcement-learning policies: exact propensities, TD updates, learning, engine wiring."""

from __future__ import annotations

import numpy as np
import pytest

from checks.learner_checks import make_catalog
from liverec import Engine, Event, Settings
from liverec.models import UserState
from liverec.rank.policy import POLICIES, SlateContext, make_policies
from liverec.rank.rl import DQN, SARSA, QLearning


def ctx_for(cat, fused, query=None, user="u"):
    return SlateContext(UserState(user), cat.from_idx(cat.alive_idx()), np.asarray(fused, float), query, cat)


def test_rl_policies_are_registered():
    assert {"qlearning", "sarsa", "dqn"} <= set(POLICIES)
    pols = make_policies({"qlearning": {}, "sarsa": {"epsilon": 0.2}, "dqn": {}}, seed=3)
    assert isinstance(pols["qlearning"], QLearning) and isinstance(pols["dqn"], DQN)
    assert pols["sarsa"].epsilon == 0.2 and pols["sarsa"].seed == 3


@pytest.mark.parametrize("cls", [QLearning, SARSA, DQN])
def test_propensities_valid_and_untrained_is_greedy(cls):
    cat = make_catalog(40, clusters=4)
    ctx = ctx_for(cat, np.linspace(1, 0, 40), cat.vectors[1])
    s = cls(epsilon=0.3, pool=20, seed=1).choose(ctx, 5)
    assert len(s.positions) == 5 and len(set(s.positions.tolist())) == 5
    assert set(s.positions.tolist()) <= set(range(20))  # only from the pool
    assert np.all((s.propensities > 0) & (s.propensities <= 1))
    # No exploration and nothing learned yet: the fused ranking, with certainty.
    s = cls(epsilon=0.0, pool=20).choose(ctx, 5)
    assert s.positions.tolist() == [0, 1, 2, 3, 4] and s.propensities.tolist() == [1.0] * 5


def _first_position_frequencies(pol, ctx, n=4000):
    counts, props = {}, {}
    for _ in range(n):
        s = pol.choose(ctx, 2)
        first = int(s.positions[0])
        counts[first] = counts.get(first, 0) + 1
        props[first] = float(s.propensities[0])
    return {i: counts[i] / n for i in counts}, props


def test_tabular_propensity_matches_frequency():
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[2])
    pol = QLearning(epsilon=0.3, n_clusters=4, pool=10, seed=1)
    pol.choose(ctx, 2)  # fits the clusters
    pol.Q_[:, :] = np.arange(4)[None, :] * 0.1  # a non-trivial greedy choice
    freq, props = _first_position_frequencies(pol, ctx)
    assert len(freq) >= 2  # exploration happened
    for item, p in props.items():
        assert abs(freq[item] - p) < 0.03
    # Per position: the propensities of the clusters on offer sum to 1.
    s = pol.choose(ctx, 3)
    _, labels = pol._pool(ctx, 3)
    avail = pol._available(labels)
    greedy = pol._greedy(pol._state(ctx), avail)
    p0 = 0.3 / len(avail) + 0.7 * (s.state["actions"][0] == greedy)
    assert s.propensities[0] == pytest.approx(p0)


def test_dqn_propensity_matches_frequency():
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[2])
    pol = DQN(epsilon=0.3, pool=10, seed=1)
    freq, props = _first_position_frequencies(pol, ctx, n=2000)
    for item, p in props.items():
        assert abs(freq[item] - p) < 0.04


def test_qlearning_update_is_the_formula():
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[0])
    nxt = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[1])
    pol = QLearning(gamma=0.8, lr=0.1, epsilon=0.0, n_clusters=3, pool=30)
    served = pol.choose(ctx, 1)
    s, a = served.state["s"], served.state["actions"][0]
    s2 = pol._state(nxt)
    pol.Q_[:3, :3] = [[0.5, 0.2, 0.1], [0.3, 0.9, 0.4], [0.0, 0.6, 0.2]]
    q_sa, max_next = pol.Q_[s, a], pol.Q_[s2, :3].max()  # every cluster is in the next pool
    pol.feedback(served, 0, 1.0)
    pol.settle(served, nxt)
    assert pol.Q_[s, a] == pytest.approx(q_sa + 0.1 * (1.0 + 0.8 * max_next - q_sa))
    # Terminal (no next request): no bootstrap; an unrewarded top slot has reward 0.
    before = pol.Q_.copy()
    served = pol.choose(ctx, 1)
    a = served.state["actions"][0]
    pol.settle(served, None)
    assert pol.Q_[s, a] == pytest.approx(before[s, a] + 0.1 * (0.0 - before[s, a]))
    changed = np.argwhere(pol.Q_ != before).tolist()
    assert changed == [[s, a]]


def test_cold_user_has_its_own_state():
    cat = make_catalog(30, clusters=3)
    pol = QLearning(n_clusters=3)
    served = pol.choose(ctx_for(cat, np.linspace(1, 0, 30)), 2)
    assert served.state["s"] == pol.cold_state == 3
    assert pol._state(ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[0])) < 3


def test_sarsa_bootstraps_with_the_next_action():
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[0])
    pol = SARSA(gamma=0.8, lr=0.1, epsilon=1.0, n_clusters=3, pool=30, seed=5)
    served = pol.choose(ctx, 1)
    s, a = served.state["s"], served.state["actions"][0]
    pol.Q_[:3, :3] = [[0.5, 0.2, 0.1], [0.3, 0.9, 0.4], [0.0, 0.6, 0.2]]
    before = pol.Q_.copy()
    pol.feedback(served, 0, 1.0)
    pol.settle(served, ctx)
    assert np.array_equal(pol.Q_, before)  # waits for the action taken next
    nxt = pol.choose(ctx, 1)  # epsilon=1: a random next cluster
    a2 = nxt.state["actions"][0]
    assert before[s, a2] < before[s, :3].max()  # (this seed explores away from the max)
    assert pol.Q_[s, a] == pytest.approx(before[s, a] + 0.1 * (1.0 + 0.8 * before[s, a2] - before[s, a]))
    assert not pol.pending_


def test_sarsa_completes_stale_updates_and_terminal_at_once():
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[0])
    pol = SARSA(n_clusters=3, max_pending=1)
    a = pol.choose(ctx_for(cat, ctx.fused, ctx.query, user="a"), 2)
    b = pol.choose(ctx_for(cat, ctx.fused, ctx.query, user="b"), 2)
    pol.feedback(a, 0, 1.0)
    pol.feedback(b, 0, 1.0)
    pol.settle(a, ctx_for(cat, ctx.fused, ctx.query, user="a"))
    q1 = pol.Q_.copy()
    pol.settle(b, ctx_for(cat, ctx.fused, ctx.query, user="b"))  # evicts a's: completed by sampling
    assert list(pol.pending_) == ["b"] and not np.array_equal(pol.Q_, q1)
    q2 = pol.Q_.copy()
    c = pol.choose(ctx_for(cat, ctx.fused, ctx.query, user="c"), 2)
    pol.settle(c, None)
    assert not np.array_equal(pol.Q_, q2) and list(pol.pending_) == ["b"]


def test_clusters_refit_only_after_large_catalog_changes():
    cat = make_catalog(50, clusters=3)
    pol = QLearning(n_clusters=4)
    pol.choose(ctx_for(cat, np.linspace(1, 0, 50)), 2)
    assert pol.n_fits_ == 1
    pol.Q_[0, 0] = 1.0
    cat.remove(["i0", "i1", "i2"])  # 6% of the items
    pol.choose(ctx_for(cat, np.linspace(1, 0, 47)), 2)
    assert pol.n_fits_ == 1
    cat.remove([f"i{j}" for j in range(3, 12)])  # 24% now
    pol.choose(ctx_for(cat, np.linspace(1, 0, 38)), 2)
    assert pol.n_fits_ == 2
    assert pol.Q_[0, 0] == 1.0  # warm-started centroids keep their meaning and Q


def test_dqn_target_network_syncs_every_target_every_steps():
    torch = pytest.importorskip("torch")
    cat = make_catalog(30, clusters=3)
    ctx = ctx_for(cat, np.linspace(1, 0, 30), cat.vectors[0])
    pol = DQN(batch_size=4, target_every=5, pool=30, seed=2)
    syncs = []
    for step in range(12):
        s = pol.choose(ctx, 2)
        pol.feedback(s, 0, 1.0)
        pol.settle(s, ctx)
        syncs.append((pol.steps_, pol.target_syncs_))
        same = all(torch.equal(p, q) for p, q in zip(pol.net_.parameters(), pol.target_.parameters()))
        assert same == (pol.steps_ % 5 == 0)
    assert len(pol.buffer_) == 24
    assert syncs[-1] == (11, 2)  # training starts once the buffer holds a batch (2nd slate)
    assert all(sy == st // 5 for st, sy in syncs)


def _train(cls, paying_cluster, steps=300, **kw):
    """Clicks only on ``paying_cluster``; the share of cluster 0 in slates before and after."""
    cat = make_catalog(60, clusters=2, seed=4)
    cluster = np.array([a["cluster"] for a in cat.attributes])
    rng = np.random.default_rng(0)
    pol = cls(pool=60, seed=0, **kw)
    user_q = cat.vectors.mean(0)  # a user vector that favours neither cluster
    user_q /= np.linalg.norm(user_q)

    def share():  # of cluster 0 in 20 slates, without learning from them
        return float(np.mean([
            np.mean(cluster[pol.choose(ctx_for(cat, 0.5 + 0.05 * rng.random(60), user_q), 5).positions] == 0)
            for _ in range(20)
        ]))

    before = share()
    for _ in range(steps):
        ctx = ctx_for(cat, 0.5 + 0.05 * rng.random(60), user_q)
        s = pol.choose(ctx, 5)
        for slot, p in enumerate(s.positions):
            if cluster[p] == paying_cluster:
                pol.feedback(s, slot, 1.0)
        pol.settle(s, ctx)
    return before, share()


@pytest.mark.parametrize("cls", [QLearning, SARSA, DQN])
def test_rl_policies_learn_what_pays(cls):
    """Same catalog, opposite rewards: the learned slates go opposite ways."""
    first, last = _train(cls, paying_cluster=0)
    assert 0.25 < first < 0.75 and last > 0.8
    first, last = _train(cls, paying_cluster=1)
    assert 0.25 < first < 0.75 and last < 0.2


def test_engine_serves_rl_policies(encoder, books):
    s = Settings(encoder_progress=False, policies={"qlearning": {}, "sarsa": {}, "dqn": {}})
    with Engine.open(settings=s, encoder=encoder) as eng:
        eng.add_items(books[:200])
        for name in ("qlearning", "sarsa", "dqn"):
            user = f"u-{name}"
            pol = eng.policies[name]
            recs = eng.recommend(user, k=5, policy=name)
            assert len(recs) == 5 and all(0 < r.propensity <= 1 for r in recs)
            imps = list(eng.store.iter_impressions(user=user))
            assert [i.policy for i in imps] == [name] * 5
            assert [i.propensity for i in imps] == [r.propensity for r in recs]
            eng.record(Event(user=user, item=recs[1].item, kind="click"))
            served = eng.served.pending[user][0]
            assert served.rewards == {1: 1.0}  # the click reached the policy at once
            q_before = pol.Q_.copy() if name != "dqn" else None
            recs2 = eng.recommend(user, k=5, policy=name)  # settles the first slate
            assert pol.shown_by_pos_[:5].sum() == 5
            if name == "qlearning":
                assert not np.array_equal(pol.Q_, q_before)
            elif name == "sarsa":  # completed by the action its next slate took
                assert not np.array_equal(pol.Q_, q_before) and user not in pol.pending_
            else:
                assert len(pol.buffer_) == 5
            imps = list(eng.store.iter_impressions(user=user))
            assert len(imps) == 10 and {i.policy for i in imps} == {name}
            assert sorted(i.propensity for i in imps[5:]) == sorted(r.propensity for r in recs2)
