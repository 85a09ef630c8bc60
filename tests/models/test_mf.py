"""ALS and BPR: fold-in, the LM -> CF map for new items, persistence, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from checks.learner_checks import make_catalog
from liverec import Event
from liverec.models import ALS, BPR, FeedbackConfig, InteractionLog, Learner, UserState

CLUSTERS = 6
T0 = 1_700_000_000.0


def synth(n_items: int = 120, n_users: int = 60, per_user: int = 12, seed: int = 0):
    """Users who each consume items of one cluster, low item numbers most popular."""
    cat = make_catalog(n_items=n_items, dim=16, clusters=CLUSTERS, seed=seed)
    rng = np.random.default_rng(seed + 1)
    cluster = np.arange(n_items) % CLUSTERS
    events = []
    for u in range(n_users):
        members = np.flatnonzero(cluster == u % CLUSTERS)
        p = 1.0 / np.arange(1, len(members) + 1)
        for j in rng.choice(members, size=per_user, replace=False, p=p / p.sum()):
            n = len(events)
            e = Event(user=f"u{u}", item=f"i{j}", kind="click", timestamp=T0 + 60 * n, id=f"e{n}")
            events.append(e)
    return cat, events


def fit(model, cat, events):
    return model.fit(InteractionLog.from_events(events, cat))


def cluster_items(cat, c: int):
    return cat.from_idx(np.flatnonzero(np.arange(len(cat)) % CLUSTERS == c))


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def implicit_als(m: ALS):
    """An implicit model holding ``m``'s factors, to compare against its solvers."""
    from implicit.cpu.als import AlternatingLeastSquares

    ref = AlternatingLeastSquares(
        factors=m.factors, regularization=m.regularization, alpha=m.alpha, num_threads=1
    )
    m.solve_all()
    ref.item_factors = m.item_factors_[: m.n_items_].copy()
    ref.user_factors = m.user_factors_[: m.n_users_].copy()
    return ref


def row_csr(idx: np.ndarray, values: np.ndarray, n: int) -> sp.csr_matrix:
    rows = np.zeros(len(idx), dtype=np.int64)
    return sp.csr_matrix((values.astype(np.float32), (rows, idx)), shape=(1, n))


@pytest.fixture(scope="module")
def data():
    return synth()


# ------------------------------------------------------------------------ fold-in
@pytest.mark.parametrize("cls", [ALS, BPR])
def test_fold_in_moves_user_toward_coconsumed_items(cls, data):
    cat, events = data
    m = fit(cls(), cat, events)
    user, clicked = "u0", 3  # u0 consumes cluster 0; item 3 belongs to cluster 3
    co = {e.item for e in events if e.user in {x.user for x in events if x.item == f"i{clicked}"}}
    co.discard(f"i{clicked}")
    co_items = cat.select(sorted(co))
    other = cluster_items(cat, 1)
    st = UserState(user)
    before_co, before_other = m.score(st, co_items), m.score(st, other)
    for k in range(3):
        m.learn_one(Event(user=user, item=f"i{clicked}", kind="purchase", timestamp=T0 + 1e6 + k))
    gain_co = m.score(st, co_items).mean() - before_co.mean()
    gain_other = m.score(st, other).mean() - before_other.mean()
    assert gain_co > 0 and gain_co > gain_other + 0.01


def test_new_user_gets_a_vector_from_the_first_event(data):
    cat, events = data
    m = fit(ALS(), cat, events)
    st = UserState("newcomer")
    assert not m.score(st, cluster_items(cat, 2)).any()  # cold users score 0
    m.learn_one(Event(user="newcomer", item="i2", kind="click", timestamp=T0 + 1e6))
    liked, other = m.score(st, cluster_items(cat, 2)), m.score(st, cluster_items(cat, 4))
    assert liked.mean() > other.mean() + 0.05


@pytest.mark.parametrize("user", ["u0", "brand-new-user"])
def test_als_fold_in_equals_implicit_recalculate_user(user, data):
    cat, events = data
    m = fit(ALS(), cat, events)
    for k, j in enumerate([3, 9, 3, 17]):
        kind = "like" if k % 2 else "click"
        m.learn_one(Event(user=user, item=f"i{j}", kind=kind, timestamp=T0 + 1e6 + k))
    idx, strengths = m.user_items(user)
    expected = implicit_als(m).recalculate_user(0, row_csr(idx, strengths, m.n_items_))
    np.testing.assert_allclose(m.user_factor(user), expected, rtol=1e-4, atol=1e-5)


def test_als_solves_a_user_once_per_read_with_the_gram_matrices_in_step(data, monkeypatch):
    """Events mark the user's row; the next read solves it once, to what solving after
    every event gives (the item factors did not move between them), and ``X^T X`` follows."""
    from liverec.models import mf

    cat, events = data
    lazy, eager = fit(ALS(), cat, events), fit(ALS(), cat, events)
    burst = [Event(user=u, item=f"i{j}", kind="click", timestamp=T0 + 1e6 + k)
             for k, (u, j) in enumerate([("u0", 3), ("u0", 9), ("u1", 4), ("u0", 17), ("new", 2)])]
    solves = []
    real = mf.solve_least_squares
    monkeypatch.setattr(mf, "solve_least_squares", lambda *a: solves.append(1) or real(*a))
    for e in burst:
        lazy.learn_one(e)
        eager.learn_one(e)
        eager.solve_all()  # the same events, each solved at once
    assert len(solves) == len(burst)  # eager: one per event; lazy: none yet
    items = cat.from_idx(cat.alive_idx())
    for u in ("u0", "u1", "new", "u5"):
        np.testing.assert_allclose(lazy.score(UserState(u), items), eager.score(UserState(u), items),
                                   rtol=1e-5, atol=1e-6)
    assert len(solves) == 2 * len(burst) - 2  # lazy: one per user with events (u0, u1, new)
    lazy.score(UserState("u0"), items)
    assert len(solves) == 2 * len(burst) - 2  # solved rows are read as they are
    x = lazy.user_factors_[: lazy.n_users_].astype(np.float64)
    np.testing.assert_allclose(lazy.xtx_, x.T @ x, rtol=1e-6, atol=1e-8)
    # A snapshot keeps the marks: a restored learner solves them as the writer would.
    lazy.learn_one(Event(user="u1", item="i8", timestamp=T0 + 2e6))
    back = Learner.loads(lazy.dumps(), cat)
    np.testing.assert_array_equal(back.user_factor("u1"), lazy.user_factor("u1"))


def test_all_events_counts_every_event_with_strength_one(data):
    cat, _ = data
    evs = [
        Event(user="a", item="i1", kind="skip", timestamp=T0),
        Event(user="a", item="i2", kind="like", timestamp=T0),
        Event(user="a", item="i2", kind="rating", value=1.0, timestamp=T0),
    ]
    signed = FeedbackConfig(rating_engagement=0.0, rating_valence=1.0)  # 1 star pushes away
    idx, s = fit(ALS(factors=4, iterations=2, feedback=signed), cat, evs).user_items("a")
    assert dict(zip(idx.tolist(), s.tolist())) == {2: 2.0}  # only positive weight counts
    idx, s = fit(ALS(factors=4, iterations=2, all_events=True, feedback=signed), cat, evs).user_items("a")
    assert dict(zip(idx.tolist(), s.tolist())) == {1: 1.0, 2: 2.0}


# -------------------------------------------------------------- new items: LM -> CF
@pytest.mark.parametrize("cls", [ALS, BPR])
def test_the_map_averages_ridge_and_the_nearest_items_with_interactions(cls):
    cat, events = synth()
    m = fit(cls(factors=8, map_neighbours=5), cat, events)
    lm = np.random.default_rng(3).normal(size=(4, cat.dim)).astype(np.float32)
    ridge = m.map_y_mean_ + (lm.astype(np.float64) - m.map_x_mean_) @ m.map_w_
    base = m.map_base_
    x = cat.vectors[base] - m.map_x_mean_.astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    want = []
    for q, r in zip(lm, ridge):
        q = q - m.map_x_mean_.astype(np.float32)
        sim = x @ (q / np.linalg.norm(q))
        top = np.argsort(-sim)[:5]
        w = np.maximum(sim[top], 0) ** 2
        want.append(0.5 * r + 0.5 * (w @ m.item_factors_[base[top]]) / w.sum())
    np.testing.assert_allclose(m.map_vectors(lm), np.array(want), rtol=1e-4, atol=1e-5)
    m.map_neighbours = 0
    np.testing.assert_allclose(m.map_vectors(lm), ridge, rtol=1e-5, atol=1e-6)


def test_only_items_written_since_the_last_sync_are_mapped_again():
    cat, events = synth()
    m = fit(ALS(factors=8), cat, events)
    cat.upsert(["a"], cat.vectors[:1].copy(), [{}], [""])
    m.score(UserState("u0"), cat.select(["a"]))  # syncs: "a" is mapped
    a = cat.index["a"]
    mapped = m.item_factors_[a].copy()
    np.testing.assert_allclose(mapped, m.map_vectors(cat.vectors[a : a + 1])[0], rtol=1e-6)
    m.item_factors_[a] = 7.0  # as if learned: a later catalog change must not overwrite it...
    cat.upsert(["b"], cat.vectors[1:2].copy(), [{}], [""])
    m.score(UserState("u0"), cat.select(["b"]))
    assert (m.item_factors_[a] == 7.0).all() and m.item_factors_[cat.index["b"]].any()
    cat.upsert(["a"], cat.vectors[2:3].copy(), [{}], [""])  # ...unless its text is encoded again
    m.score(UserState("u0"), cat.select(["a"]))
    np.testing.assert_allclose(m.item_factors_[a], m.map_vectors(cat.vectors[2:3])[0], rtol=1e-6)


@pytest.mark.parametrize("cls", [ALS, BPR])
def test_new_item_is_mapped_from_its_lm_vector(cls):
    cat, events = synth()
    # Few factors: with 64 for 60 users the model memorises and nothing generalises.
    m = fit(cls(factors=8), cat, events)
    counts = np.bincount([cat.index[e.item] for e in events], minlength=len(cat))
    pop = int(np.argmax(counts))
    unit = cat.vectors[pop] / np.linalg.norm(cat.vectors[pop])
    rng = np.random.default_rng(5)
    near = unit + 0.05 * rng.normal(size=cat.dim)
    far = rng.normal(size=cat.dim)
    far -= (far @ unit) * unit  # unrelated to the popular item
    vecs = np.stack([near / np.linalg.norm(near), far / np.linalg.norm(far)]).astype(np.float32)
    cat.upsert(["near", "far"], vecs, [{}, {}], ["", ""])  # after the fit, no interactions
    sel = cat.select([f"i{pop}", "near", "far"])
    scores = np.array([m.score(UserState(f"u{u}"), sel) for u in range(60)])
    fans = np.arange(60) % CLUSTERS == pop % CLUSTERS
    # The near item ranks like the popular one across users and scores close to it
    # for its fans; the unrelated one does neither.
    assert np.corrcoef(scores[:, 0], scores[:, 1])[0, 1] > 0.7
    gap_near = np.abs(scores[fans, 0] - scores[fans, 1]).mean()
    gap_far = np.abs(scores[fans, 0] - scores[fans, 2]).mean()
    assert gap_near < 0.75 * gap_far
    f = m.item_factors_
    c_near, c_far = cos(f[pop], f[cat.index["near"]]), cos(f[pop], f[cat.index["far"]])
    assert c_near > 0.8 and c_near > c_far + 0.4


@pytest.mark.parametrize("cls", [ALS, BPR])
def test_a_new_item_is_mapped_from_its_words_too(cls):
    """Items of each cluster share a word the LM vectors do not carry: a new item with an
    uninformative LM vector but its cluster's word lands near that cluster's items; without
    the word (or with map_text off) it does not."""
    cat, events = synth()
    words = ["nebula", "harbour", "saffron", "quartz", "tundra", "violin"]
    n = len(cat)
    cat.upsert([f"i{j}" for j in range(n)], cat.vectors[:n].copy(), [{}] * n,
               [f"item {j} {words[j % CLUSTERS]}" for j in range(n)])
    flat = np.ones((1, cat.dim), np.float32) / np.sqrt(cat.dim)  # close to no cluster in particular
    fans = [f"u{u}" for u in range(60) if u % CLUSTERS == 2]
    others = [f"u{u}" for u in range(60) if u % CLUSTERS != 2]
    for use in (True, False):
        m = fit(cls(factors=8, map_text=use), cat, events)
        worded, wordless = f"worded-{use}", f"wordless-{use}"
        cat.upsert([worded, wordless], np.repeat(flat, 2, axis=0), [{}, {}],
                   [f"new arrival {words[2]}", "new arrival"])
        sel = cat.select([worded, wordless])
        fan_scores = np.array([m.score(UserState(u), sel) for u in fans])  # syncs: both are mapped
        other_scores = np.array([m.score(UserState(u), sel) for u in others])
        f = m.item_factors_
        mean = f[:n].mean(0)  # what every item vector shares (popularity): compare what is left
        centroids = [f[np.flatnonzero(np.arange(n) % CLUSTERS == c)].mean(0) - mean for c in range(CLUSTERS)]
        nearest = lambda i: int(np.argmax([cos(f[cat.index[i]] - mean, c) for c in centroids]))  # noqa: E731
        if use:
            assert m.map_text_ is not None
            assert fan_scores[:, 0].mean() > other_scores[:, 0].mean()  # its cluster's readers rank it higher
            assert nearest(worded) == 2 and cos(f[cat.index[worded]] - mean, centroids[2]) > 0.5
        else:
            assert m.map_text_ is None
            np.testing.assert_allclose(f[cat.index[worded]], f[cat.index[wordless]], rtol=1e-5, atol=1e-6)


def test_als_new_item_folds_in_from_its_interactions():
    cat, events = synth()
    m = fit(ALS(factors=8), cat, events)
    rng = np.random.default_rng(7)
    v = rng.normal(size=cat.dim)
    [new] = cat.upsert(["fresh"], (v / np.linalg.norm(v))[None].astype(np.float32), [{}], [""])
    fans = [f"u{u}" for u in range(60) if u % CLUSTERS == 2]
    others = [f"u{u}" for u in range(60) if u % CLUSTERS != 2]
    sel = cat.select(["fresh"])
    for k, u in enumerate(fans[:5]):
        m.learn_one(Event(user=u, item="fresh", kind="click", timestamp=T0 + 1e6 + k))
    # Fans who have not clicked it yet now score it above everyone else.
    rest = [float(m.score(UserState(u), sel)[0]) for u in fans[5:]]
    assert min(rest) > max(float(m.score(UserState(u), sel)[0]) for u in others)
    assert m.has_cf_[new]
    # The item's vector is implicit's recalculate_item over its users.
    col_users = np.array([m.users_[u] for u in fans[:5]])
    ref = implicit_als(m).recalculate_item(
        0, sp.csr_matrix((np.ones(5, dtype=np.float32), (np.zeros(5, dtype=np.int64), col_users)),
                         shape=(1, m.n_users_)))
    # The last fold-in solved the item after the last user's update: same factors here.
    np.testing.assert_allclose(m.item_factors_[new], ref, rtol=1e-4, atol=1e-5)


def test_als_without_user_tables_solves_each_user_from_the_recent_events():
    """user_tables=False keeps no row per user and solves the request's user from their recent
    events: the row the kept form re-solves after an event; an item first interacted with
    after the fit keeps its mapped vector until the next fit (with tables it is folded in
    from its users); an erasure refits from the fit's matrix without the user."""
    cat, events = synth()
    kept = fit(ALS(factors=8, min_interactions=0), cat, events)
    bare = fit(ALS(factors=8, min_interactions=0, user_tables=False), cat, events)
    # Users after the fit (new ones, and u3 again), on items the fit knew.
    later = [Event(user=f"n{e.user}", item=e.item, kind=e.kind, timestamp=T0 + 1e6 + k, id=f"n{k}")
             for k, e in enumerate(events[:36])] + [Event(user="u3", item="i0", timestamp=T0 + 2e6, id="again")]
    for e in later:
        kept.learn_one(e)
        bare.learn_one(e)
    assert len(bare.user_factors_) == 0 and not list(bare.extra_.items())
    assert b"nu1" in kept.dumps() and b"nu1" not in bare.dumps()  # an online user: nothing kept
    assert bare.n_interactions_ == bare.base_.nnz + len(later)
    items = cat.from_idx(cat.alive_idx())
    for u in ("nu0", "nu2", "u3"):
        st = UserState(u, tuple(e for e in events + later if e.user == u))
        np.testing.assert_allclose(bare.score(st, items), kept.score(st, items), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(bare.candidates(st, 10), kept.candidates(st, 10))
    # A new item: folded in from its user with tables, the mapped vector without.
    [new] = cat.upsert(["fresh"], cat.vectors[2:3].copy(), [{}], ["fresh"])
    for m in (kept, bare):
        m.learn_one(Event(user="u2", item="fresh", kind="click", timestamp=T0 + 3e6))
    assert kept.has_cf_[new] and not bare.has_cf_[new]
    np.testing.assert_allclose(bare.item_factors_[new], bare.map_vectors(cat.vectors[[new]], ["fresh"])[0],
                               rtol=1e-5, atol=1e-6)
    # An erasure refits from the fit's matrix without the user: a fit without them.
    bare.forget("u5", [e for e in events if e.user == "u5"])
    ref = fit(ALS(factors=8, min_interactions=0, user_tables=False), cat, [e for e in events if e.user != "u5"])
    assert "u5" not in bare.users_ and len(bare.user_factors_) == 0
    np.testing.assert_allclose(bare.item_factors_[: len(cat)], ref.item_factors_[: len(cat)], rtol=1e-5, atol=1e-6)


def test_als_learns_online_from_an_empty_fit():
    cat, events = synth()
    m = fit(ALS(), cat, [])
    for e in events:
        m.learn_one(e)
    st = UserState("u0")  # a cluster-0 user
    assert m.score(st, cluster_items(cat, 0)).mean() > m.score(st, cluster_items(cat, 3)).mean()


@pytest.mark.parametrize("cls", [ALS, BPR])
def test_the_interaction_count_gate_reads_a_log_the_same_fitted_or_learned(cls):
    """Below ``min_interactions`` distinct (user, item) pairs the model is silent, whether the
    pairs came from a fit or event by event: a restarted server (snapshot + the log after it)
    and one fitted on the whole log must agree, however often a user repeats an item."""
    cat, events = synth(n_users=6, per_user=5)  # 30 distinct pairs, each clicked 3 times
    repeated = [Event(user=e.user, item=e.item, kind="click", timestamp=e.timestamp + k, id=f"{e.id}-{k}")
                for k in range(3) for e in events]
    fitted = fit(cls(min_interactions=40), cat, repeated)
    learned = fit(cls(min_interactions=40), cat, [])
    for e in repeated:
        learned.learn_one(e)
    assert fitted.n_interactions_ == learned.n_interactions_ == 30
    items = cat.from_idx(np.arange(len(cat)))
    assert not fitted.score(UserState("u0"), items).any() and not learned.score(UserState("u0"), items).any()


# ------------------------------------------------------------ persistence, seeds
@pytest.mark.parametrize("cls", [ALS, BPR])
def test_save_load_round_trip_keeps_learning_identically(cls, data):
    cat, events = data
    m = fit(cls(), cat, events)
    m2 = Learner.loads(m.dumps(), cat)
    items = cat.from_idx(cat.alive_idx())
    for e in [Event(user="u1", item="i7", timestamp=T0), Event(user="zz", item="i8", timestamp=T0)]:
        m.learn_one(e)
        m2.learn_one(e)
    for u in ("u1", "zz", "u9", "nobody"):
        np.testing.assert_array_equal(m.score(UserState(u), items), m2.score(UserState(u), items))


@pytest.mark.parametrize("cls", [ALS, BPR])
def test_deterministic_by_seed(cls, data):
    cat, events = data
    a, b, c = (fit(cls(seed=s), cat, events) for s in (3, 3, 4))
    for m in (a, b, c):
        m.learn_one(Event(user="u2", item="i5", timestamp=T0 + 1e6))
    items = cat.from_idx(cat.alive_idx())
    st = UserState("u2")
    np.testing.assert_array_equal(a.score(st, items), b.score(st, items))
    assert not np.allclose(a.score(st, items), c.score(st, items))


def test_candidates_are_the_top_scored_live_items(data):
    cat, events = data
    m = fit(ALS(), cat, events)
    st = UserState("u0")
    top = m.candidates(st, 5)
    s = m.score(st, cat.from_idx(cat.alive_idx()))
    assert top.tolist() == np.argsort(-s, kind="stable")[:5].tolist()
    assert m.candidates(UserState("nobody"), 5).size == 0
