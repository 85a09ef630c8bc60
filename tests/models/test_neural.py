"""NeuralScorer and SequenceModel: what they learn, online updates, caching, persistence."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

from checks.learner_checks import make_catalog
from liverec import Event
from liverec.models import InteractionLog, Learner, NeuralScorer, SequenceModel, UserState

CLUSTERS = 6
N_ITEMS = 120
SEEN = 90  # items [0, SEEN) appear in training; the rest are held out
T0 = 1_700_000_000.0


def cluster_of(j: int) -> int:
    return j % CLUSTERS


def taste_events(n_users: int = 36, per_user: int = 10, seed: int = 1) -> list[Event]:
    """Users who each click items of one cluster (among the seen ones), with a few skips."""
    rng = np.random.default_rng(seed)
    out = []
    for step in range(per_user):
        for u in range(n_users):
            fav = u % CLUSTERS
            kind = str(rng.choice(["click", "click", "like", "skip"]))
            c = (fav + 1 + int(rng.integers(0, CLUSTERS - 1))) % CLUSTERS if kind == "skip" else fav
            j = int(rng.integers(0, SEEN // CLUSTERS)) * CLUSTERS + c
            n = len(out)
            out.append(Event(user=f"u{u}", item=f"i{j}", kind=kind, timestamp=T0 + 60 * n, id=f"e{n}"))
    return out


def switch_events(n_users: int = 36, segments: int = 3, seed: int = 2) -> list[Event]:
    """Users who stay in one cluster for 3-6 events, then move on to another."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        c = int(rng.integers(0, CLUSTERS))
        for _ in range(segments):
            for _ in range(int(rng.integers(3, 7))):
                j = int(rng.integers(0, SEEN // CLUSTERS)) * CLUSTERS + c
                n = len(out)
                out.append(Event(user=f"s{u}", item=f"i{j}", timestamp=T0 + 3600 * u + 60 * n, id=f"e{n}"))
            c = (c + 1 + int(rng.integers(0, CLUSTERS - 1))) % CLUSTERS
    return sorted(out, key=lambda e: e.timestamp)


def fit(model: Learner, events: list[Event], cat=None) -> Learner:
    cat = cat if cat is not None else make_catalog(n_items=N_ITEMS, dim=16, clusters=CLUSTERS)
    return model.fit(InteractionLog.from_events(events, cat))


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def clone_fitted(m: Learner, cat=None) -> Learner:
    """An independent copy (through save/load), optionally on a fresh copy of the catalog."""
    return Learner.loads(m.dumps(), m.catalog_ if cat is None else cat)


@pytest.fixture(scope="module")
def neural() -> NeuralScorer:
    return fit(NeuralScorer(), taste_events())


@pytest.fixture(scope="module")
def neural_softmax() -> NeuralScorer:
    return fit(NeuralScorer(loss="softmax"), taste_events())


@pytest.fixture(scope="module")
def sequence() -> SequenceModel:
    return fit(SequenceModel(), switch_events())


@pytest.fixture(scope="module")
def attention() -> SequenceModel:
    return fit(SequenceModel(kind="attention"), switch_events())


def all_items(m: Learner):
    return m.catalog_.from_idx(m.catalog_.alive_idx())


# --------------------------------------------------------------------------- neural
@pytest.mark.parametrize("model", ["neural", "neural_softmax"])
def test_neural_ranks_the_users_cluster_first_on_held_out_items(model, request):
    neural = request.getfixturevalue(model)
    held = np.arange(SEEN, N_ITEMS)
    items = neural.catalog_.from_idx(held)
    aucs = []
    for u in range(12):
        s = neural.score(UserState(f"u{u}"), items)
        own = np.array([cluster_of(j) == u % CLUSTERS for j in held])
        aucs.append(auc(s[own], s[~own]))
    assert np.mean(aucs) > 0.8 and min(aucs) > 0.6, aucs


def test_neural_history_and_cold_user(neural):
    assert 1 <= len(neural.history_) <= neural.epochs
    assert all(np.isfinite(h["train"]) and np.isfinite(h["val"]) for h in neural.history_)
    cold = neural.score(UserState("nobody"), all_items(neural))
    bias = neural.nets_["bias"]
    expected = bias["item"].detach().numpy()[: len(cold)] + float(bias["global"].detach()[0])
    np.testing.assert_allclose(cold, expected, rtol=1e-6)


def test_neural_online_moves_a_fresh_user_toward_the_clicked_cluster(neural):
    m = clone_fitted(neural)
    items = all_items(m)
    target = np.array([cluster_of(j) == 2 for j in range(N_ITEMS)])
    st = UserState("fresh")
    before = m.score(st, items)
    for k, j in enumerate((2, 8, 14)):
        m.learn_one(Event(user="fresh", item=f"i{j}", timestamp=T0 + 1e6 + k))
    after = m.score(st, items)
    gain = after - before
    assert gain[target].mean() > gain[~target].mean()
    top = np.argsort(-after)[:10]
    assert target[top].mean() >= 0.7


def test_neural_online_step_updates_only_user_tower_and_biases(neural):
    m = clone_fitted(neural)
    emb = m.item_embeddings().copy()
    item_w = copy.deepcopy(m.nets_["item"].state_dict())
    user_w = copy.deepcopy(m.nets_["user"].state_dict())
    bias = m.nets_["bias"]["item"].detach().clone()
    for k in range(m.online_every):
        m.learn_one(Event(user="u1", item=f"i{1 + CLUSTERS * k}", timestamp=T0 + 1e6 + k))
    for name, w in m.nets_["item"].state_dict().items():
        assert np.array_equal(w.numpy(), item_w[name].numpy())
    user_now = m.nets_["user"].state_dict()
    assert any(not np.array_equal(user_now[n].numpy(), w.numpy()) for n, w in user_w.items())
    assert not np.array_equal(m.nets_["bias"]["item"].detach().numpy(), bias.numpy())
    np.testing.assert_array_equal(m.item_embeddings(), emb)  # the cache stayed valid


def test_neural_profile_is_the_decayed_weighted_mean(neural):
    m = clone_fitted(neural)
    cat = m.catalog_
    t = T0 + 2e6
    m.learn_one(Event(user="p", item="i0", kind="like", timestamp=t))  # w = 2
    # w = -0.3, one half-life later
    m.learn_one(Event(user="p", item="i1", kind="skip", timestamp=t + 30 * 86_400))
    v0, v1 = cat.vectors[0].astype(np.float64), cat.vectors[1].astype(np.float64)
    expected = (2 * 0.5 * v0 - 0.3 * v1) / (2 * 0.5 + 0.3)
    np.testing.assert_allclose(m.query_profile(UserState("p")), expected, rtol=1e-6)


# ------------------------------------------------------------------------- sequence
@pytest.mark.parametrize("model", ["sequence", "attention"])
def test_sequence_follows_a_switch_of_cluster(model, request):
    m = clone_fitted(request.getfixturevalue(model))
    items = all_items(m)
    cl = np.arange(N_ITEMS) % CLUSTERS
    t = T0 + 1e7
    for k, j in enumerate([0, 6, 12, 18, 24, 3, 9, 15]):  # five of cluster 0, then three of cluster 3
        m.learn_one(Event(user="switcher", item=f"i{j}", timestamp=t + k))
    s = m.score(UserState("switcher"), items)
    assert s[cl == 3].mean() > s[cl == 0].mean()
    top = np.argsort(-s)[:10]
    assert (cl[top] == 3).mean() >= 0.6, cl[top]


def test_sequence_history_and_cached_user_vector(sequence):
    assert 1 <= len(sequence.history_) <= sequence.epochs
    m = clone_fitted(sequence)
    h = m.user_vector("s1")
    assert m.user_vector("s1") is h  # cached until the user's next event
    m.learn_one(Event(user="s1", item="i5", kind="skip", timestamp=T0 + 1e7))
    assert not np.array_equal(m.user_vector("s1"), h)
    assert abs(float(np.linalg.norm(m.user_vector("never-seen"))) - 1.0) < 1e-5


def test_sequence_online_step_updates_only_the_encoder(sequence):
    m = clone_fitted(sequence)
    emb = m.item_embeddings().copy()
    item_w = copy.deepcopy(m.nets_["item"].state_dict())
    gru_w = copy.deepcopy(m.nets_["gru"].state_dict())
    for k in range(m.online_every):
        m.learn_one(Event(user=f"s{k}", item=f"i{k}", timestamp=T0 + 1e7 + k))
    for name, w in m.nets_["item"].state_dict().items():
        assert np.array_equal(w.numpy(), item_w[name].numpy())
    gru_now = m.nets_["gru"].state_dict()
    assert any(not np.array_equal(gru_now[n].numpy(), w.numpy()) for n, w in gru_w.items())
    np.testing.assert_array_equal(m.item_embeddings(), emb)


def test_sequence_online_moves_a_fresh_user_toward_the_clicked_cluster(sequence):
    m = clone_fitted(sequence)
    items = all_items(m)
    target = np.arange(N_ITEMS) % CLUSTERS == 4
    before = m.score(UserState("fresh"), items)
    for k, j in enumerate((4, 10, 16)):
        m.learn_one(Event(user="fresh", item=f"i{j}", timestamp=T0 + 1e7 + k))
    after = m.score(UserState("fresh"), items)
    assert (after - before)[target].mean() > (after - before)[~target].mean()
    assert target[np.argsort(-after)[:10]].mean() >= 0.7


# ----------------------------------------------------------------------------- both
def test_early_stopping_stops_before_max_epochs():
    m = fit(NeuralScorer(epochs=200, patience=2, lr=1e-2), taste_events())
    vals = [h["val"] for h in m.history_]
    assert len(vals) < 200 and all(np.isfinite(vals))
    assert min(vals[-2:]) >= min(vals) - 1e-6  # stopped after `patience` epochs without progress


@pytest.mark.parametrize("model", ["neural", "neural_softmax", "sequence", "attention"])
def test_pickle_round_trip_keeps_scores_identical(model, request):
    m = clone_fitted(request.getfixturevalue(model))
    m2 = clone_fitted(m)
    items = all_items(m)
    for u in ("u0", "s3", "nobody"):
        np.testing.assert_array_equal(m.score(UserState(u), items), m2.score(UserState(u), items))
    for k in range(10):  # crosses online steps: replay buffer, optimiser state and RNG survive too
        e = Event(user=f"u{k % 3}", item=f"i{k}", kind="click", timestamp=T0 + 1e7 + k)
        m.learn_one(e)
        m2.learn_one(e)
    for u in ("u0", "u1", "nobody"):
        np.testing.assert_array_equal(m.score(UserState(u), items), m2.score(UserState(u), items))


@pytest.mark.parametrize("cls", [NeuralScorer, SequenceModel])
def test_same_seed_same_scores(cls):
    events = taste_events(n_users=12, per_user=6)
    a, b, c = fit(cls(seed=3), events), fit(cls(seed=3), events), fit(cls(seed=4), events)
    items = all_items(a)
    for u in ("u1", "nobody"):
        np.testing.assert_array_equal(a.score(UserState(u), items), b.score(UserState(u), items))
    assert not np.array_equal(a.score(UserState("u1"), items), c.score(UserState("u1"), items))


@pytest.mark.parametrize("model", ["neural", "sequence"])
def test_items_added_after_fit_are_scorable_by_text(model, request):
    cat = make_catalog(n_items=N_ITEMS, dim=16, clusters=CLUSTERS)  # the fixture's catalog stays as is
    m = clone_fitted(request.getfixturevalue(model), cat)
    rng = np.random.default_rng(5)
    base = cat.vectors[[j for j in range(SEEN) if cluster_of(j) == 0]].mean(axis=0)
    v = base + 0.01 * rng.normal(size=(2, len(base)))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    cat.upsert(["new-a", "new-b"], v, [{}, {}], ["new a", "new b"])
    user = "u0" if model == "neural" else "s-new"
    if model == "sequence":
        for k, j in enumerate((0, 6, 12)):
            m.learn_one(Event(user=user, item=f"i{j}", timestamp=T0 + 1e7 + k))
    s = m.score(UserState(user), all_items(m))
    assert np.all(np.isfinite(s))
    new_a, new_b = s[cat.index["new-a"]], s[cat.index["new-b"]]
    assert abs(new_a - new_b) < 0.05 * (s.max() - s.min())  # similar text, similar score
    assert new_a > np.median(s[:SEEN])  # and ranked like the cluster it resembles
    m.learn_one(Event(user=user, item="new-a", kind="click", timestamp=T0 + 2e7))


def test_new_item_bias_starts_at_zero(neural):
    m = clone_fitted(neural, make_catalog(n_items=N_ITEMS, dim=16, clusters=CLUSTERS))
    m.catalog_.upsert(["fresh-item"], m.catalog_.vectors[:1].copy(), [{}], ["x"])
    m.score(UserState("u0"), m.catalog_.select(["fresh-item"]))
    assert float(m.nets_["bias"]["item"].detach()[m.catalog_.index["fresh-item"]]) == 0.0


def test_bad_hyperparameters_are_rejected():
    from liverec.errors import ValidationError

    with pytest.raises(ValidationError, match="loss"):
        fit(NeuralScorer(loss="hinge"), taste_events(n_users=2, per_user=2))
    with pytest.raises(ValidationError, match="kind"):
        fit(SequenceModel(kind="lstm"), taste_events(n_users=2, per_user=2))


def test_importing_the_models_does_not_import_torch():
    code = "import sys, liverec.models; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_item_cache_recomputes_only_changed_rows(neural):
    cat = make_catalog(n_items=N_ITEMS, dim=16, clusters=CLUSTERS)
    m = clone_fitted(neural, cat)
    emb = m.item_embeddings().copy()
    new_v = cat.vectors[7:8][:, ::-1].copy()  # item i5 is re-encoded (its text changed)
    cat.upsert(["i5"], new_v, [{}], ["changed"])
    cat.remove(["i9"])
    after = m.item_embeddings()
    import torch

    with torch.no_grad():
        expected = m.nets_["item"](torch.from_numpy(new_v)).numpy()[0]
    np.testing.assert_allclose(after[5], expected, rtol=1e-5, atol=1e-6)
    keep = np.arange(N_ITEMS) != 5
    np.testing.assert_array_equal(after[keep], emb[keep])
