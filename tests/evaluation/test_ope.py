"""Off-policy estimators against a synthetic log whose true policy value is known."""

from __future__ import annotations

import doctest
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.special import expit

from liverec.errors import ValidationError
from liverec.evaluation import ope as O
from liverec.evaluation.ope import (
    LoggedBandit,
    bernoulli_ts_action_dist,
    bootstrap_ci,
    dm,
    dr,
    empirical_action_dist,
    estimate_all,
    fit_reward_model,
    from_impressions,
    ips,
    load_open_bandit,
    relative_error,
    replay,
    snips,
    validate_on_obd,
)
from liverec.store.sql import Impression
from liverec.types import Event

OBD = Path(__file__).resolve().parents[2].parent / "shared/data/open-bandit-dataset"

N, A, P = 20_000, 5, 2


class Synthetic:
    """A uniform-logger log with reward P(1 | x, a, k) = sigmoid(x·w + b_a + γ R[i, a] + c_k).

    The reward function is exactly what the default reward model can represent
    (context, one-hot action, one-hot position, per-round action feature R), and the
    target policy a*(i) = argmax_a (b_a + γ R[i, a]) is deterministic and contextual.
    The truth is the target's expected reward on these very rounds (the quantity the
    estimators are unbiased for given the contexts).
    """

    def __init__(self, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(N, 3))
        r_feat = rng.normal(size=(N, A))
        b = np.linspace(-2.0, -1.0, A)
        c = np.array([0.0, -0.5])
        logit = (x @ np.array([0.5, -0.3, 0.2]))[:, None, None] + b[None, :, None] \
            + 0.8 * r_feat[:, :, None] + c[None, None, :]
        self.mu = expit(logit)  # (N, A, P)
        action = rng.integers(0, A, N)
        position = rng.integers(0, P, N)
        rows = np.arange(N)
        reward = (rng.random(N) < self.mu[rows, action, position]).astype(float)
        self.log = LoggedBandit(
            context=x, action=action, position=position, reward=reward,
            propensity=np.full(N, 1.0 / A), n_actions=A, n_positions=P,
            round_action_context=r_feat,
        )
        self.target = np.argmax(b[None, :] + 0.8 * r_feat, axis=1)
        self.pi = np.zeros((N, A, P))
        self.pi[rows, self.target, :] = 1.0
        self.truth = float(self.mu[rows, self.target, position].mean())


@pytest.fixture(scope="module")
def syn() -> Synthetic:
    return Synthetic()


@pytest.fixture(scope="module")
def q_fit(syn: Synthetic) -> np.ndarray:
    return fit_reward_model(syn.log, seed=0)


def _se(contributions: np.ndarray) -> float:
    return float(contributions.std(ddof=1) / math.sqrt(contributions.shape[0]))


# ------------------------------------------------------------------- estimators
def test_ips_snips_dr_recover_the_true_value(syn: Synthetic, q_fit: np.ndarray) -> None:
    e_ips = ips(syn.log, syn.pi)
    se = _se(e_ips.contributions)
    assert 0.0 < se < 0.02
    for e in (e_ips, snips(syn.log, syn.pi), dr(syn.log, syn.pi, q_fit)):
        assert abs(e.estimate - syn.truth) < 4 * se, (e.name, e.estimate, syn.truth)
        assert e.contributions.shape == (N,)
        assert np.mean(e.contributions) == pytest.approx(e.estimate)


def test_bootstrap_intervals_cover_the_truth(syn: Synthetic, q_fit: np.ndarray) -> None:
    for e in (ips(syn.log, syn.pi), snips(syn.log, syn.pi), dr(syn.log, syn.pi, q_fit)):
        lo, hi = bootstrap_ci(e, n_boot=300, seed=1)
        assert lo < e.estimate < hi
        assert lo <= syn.truth <= hi, (e.name, lo, hi, syn.truth)
        # A sensible width: about ±2 standard errors.
        assert (hi - lo) == pytest.approx(2 * 1.96 * _se(e.contributions), rel=0.35)


def test_dm_with_the_true_model_is_exact_and_with_a_fitted_one_is_close(
    syn: Synthetic, q_fit: np.ndarray
) -> None:
    assert dm(syn.log, syn.pi, syn.mu).estimate == pytest.approx(syn.truth, abs=1e-12)
    fitted = dm(syn.log, syn.pi, q_fit).estimate
    assert abs(fitted - syn.truth) < 0.015
    # q_hat already taken at each round's logged position is accepted too.
    at_pos = syn.mu[np.arange(N), :, syn.log.position]
    assert dm(syn.log, syn.pi, at_pos).estimate == pytest.approx(syn.truth, abs=1e-12)


def test_dr_stays_unbiased_with_a_wrong_reward_model(syn: Synthetic) -> None:
    wrong = np.full((N, A, P), 0.5)
    e = dr(syn.log, syn.pi, wrong)
    assert abs(dm(syn.log, syn.pi, wrong).estimate - syn.truth) > 0.1  # DM is badly off
    assert abs(e.estimate - syn.truth) < 4 * _se(e.contributions)


def test_replay_keeps_one_in_n_actions_rounds_under_a_uniform_logger(syn: Synthetic) -> None:
    e = replay(syn.log, syn.pi)
    assert e.weights is not None
    kept = np.count_nonzero(e.weights)
    assert kept / N == pytest.approx(1 / A, abs=0.015)
    se = math.sqrt(syn.truth * (1 - syn.truth) / kept)
    assert abs(e.estimate - syn.truth) < 4 * se
    # A uniformly random target, sampled: also ~1/A of the rounds match.
    uniform = np.full((A, P), 1.0 / A)
    kept_u = np.count_nonzero(replay(syn.log, uniform, seed=3).weights)
    assert kept_u / N == pytest.approx(1 / A, abs=0.015)
    assert np.count_nonzero(replay(syn.log, syn.pi, mode="argmax").weights) == kept


def test_replay_warns_for_a_non_uniform_logger() -> None:
    log = LoggedBandit(context=np.zeros((4, 0)), action=[0, 1, 0, 1], position=[0] * 4,
                       reward=[1, 0, 0, 1], propensity=[0.9, 0.1, 0.9, 0.1], n_actions=2)
    with pytest.warns(UserWarning, match="uniform logging policy"):
        replay(log, np.array([[1.0], [0.0]]))


def test_estimate_all_reports_every_estimator(syn: Synthetic, q_fit: np.ndarray) -> None:
    out = estimate_all(syn.log, syn.pi, q_hat=q_fit, n_boot=100, seed=0)
    assert list(out) == ["ips", "snips", "dm", "dr", "replay"]
    for row in out.values():
        lo, hi = row["ci95"]
        assert lo <= row["estimate"] <= hi
    assert out["replay"]["rounds_kept"] > 0
    assert out["dr"]["estimate"] == pytest.approx(dr(syn.log, syn.pi, q_fit).estimate)


def test_the_logistic_shortcut_matches_predict_proba(syn: Synthetic) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    small = syn.log.subset(np.arange(1500))
    fast = fit_reward_model(small, seed=2)
    slow = fit_reward_model(small, seed=2, model=make_pipeline(LogisticRegression(max_iter=2000)))
    np.testing.assert_allclose(fast, slow, atol=1e-10)
    assert fast.shape == (1500, A, P)


def test_action_dist_must_be_a_distribution(syn: Synthetic) -> None:
    with pytest.raises(ValidationError, match="shape"):
        ips(syn.log, np.ones((3, 3)))
    with pytest.raises(ValidationError, match="sum to 1"):
        ips(syn.log, np.full((A, P), 0.5))


def test_logged_bandit_rejects_bad_logs() -> None:
    good = dict(context=np.zeros((2, 1)), action=[0, 1], position=[0, 0], reward=[0, 1],
                propensity=[0.5, 0.5], n_actions=2)
    with pytest.raises(ValidationError, match="propensity"):
        LoggedBandit(**{**good, "propensity": [0.5, 0.0]})
    with pytest.raises(ValidationError, match="n_actions"):
        LoggedBandit(**{**good, "action": [0, 2]})
    with pytest.raises(ValidationError, match="rows"):
        LoggedBandit(**{**good, "reward": [0, 1, 1]})
    reward = np.array([0.0, 1.0])
    log = LoggedBandit(**{**good, "reward": reward})
    assert reward.flags.writeable and not log.reward.flags.writeable


# ------------------------------------------------------------ bootstrap, errors
def test_bootstrap_ci_of_a_mean_and_of_a_ratio() -> None:
    assert bootstrap_ci(np.full(50, 0.25), n_boot=50) == (0.25, 0.25)
    rng = np.random.default_rng(0)
    c = rng.random(2000)
    lo, hi = bootstrap_ci(c, n_boot=400, seed=0)
    assert lo < c.mean() < hi and hi - lo == pytest.approx(2 * 1.96 * _se(c), rel=0.2)
    assert bootstrap_ci(c, n_boot=400, seed=0) == (lo, hi)  # deterministic
    # A ratio whose numerator and denominator move together has a tight interval,
    # which averaging per-round contributions would not give.
    w = rng.exponential(size=2000)
    num = 0.3 * w
    lo_r, hi_r = bootstrap_ci(num, n_boot=200, weights=w)
    assert lo_r == pytest.approx(0.3) and hi_r == pytest.approx(0.3)
    with pytest.raises(ValidationError):
        bootstrap_ci(c, alpha=1.5)


def test_relative_error() -> None:
    assert relative_error(0.9, 1.0) == pytest.approx(0.1)
    assert relative_error(0.0063, 0.0042) == pytest.approx(0.5)
    with pytest.raises(ValidationError):
        relative_error(0.1, 0.0)


# ------------------------------------------------------------------- policies
def test_context_free_bts_action_dists() -> None:
    # Item 2 is clicked a lot, item 0 never: TS should put item 2 first almost always.
    action = np.array([0] * 200 + [1] * 200 + [2] * 200 + [3] * 200)
    reward = np.r_[np.zeros(200), np.full(200, 0.0), np.ones(200), np.zeros(200)]
    reward[200:210] = 1
    log = LoggedBandit(context=np.zeros((800, 0)), action=action, position=np.arange(800) % 2,
                       reward=reward, propensity=np.full(800, 0.25), n_actions=4, n_positions=2)
    emp = empirical_action_dist(log)
    np.testing.assert_allclose(emp, 0.25)
    ts = bernoulli_ts_action_dist(log, n_sim=5000, seed=0)
    np.testing.assert_allclose(ts.sum(axis=0), 1.0)
    assert ts[2, 0] > 0.99 and ts[1, 1] > 0.5
    assert np.array_equal(ts, bernoulli_ts_action_dist(log, n_sim=5000, seed=0))


# ---------------------------------------------------------------------- loaders
def _write_obd(folder: Path) -> None:
    folder.mkdir(parents=True)
    header = ["", "timestamp", "item_id", "position", "click", "propensity_score"] \
        + [f"user_feature_{j}" for j in range(4)] + [f"user-item_affinity_{j}" for j in range(3)]
    rows = [
        [0, "2019-11-24 00:00:01+00:00", 2, 1, 0, 1 / 3, "aa", "x", "p", "m", 0.0, 0.0, 1.0],
        [1, "2019-11-24 00:00:02+00:00", 0, 2, 1, 1 / 3, "bb", "x", "q", "m", 2.0, 0.0, 0.0],
        [2, "2019-11-24 00:00:03+00:00", 1, 3, 0, 1 / 3, "aa", "y", "p", "n", 0.0, 1.0, 0.0],
        [3, "2019-11-24 00:00:04+00:00", 2, 1, 0, 1 / 3, "bb", "y", "q", "n", 0.0, 0.0, 0.0],
    ]
    (folder / "all.csv").write_text(
        "\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n"
    )
    (folder / "item_context.csv").write_text(
        ",item_id,item_feature_0,item_feature_1,item_feature_2,item_feature_3\n"
        "0,0,-0.5,h1,g1,k1\n1,1,0.25,h2,g1,k1\n2,2,1.0,h1,g2,k1\n"
    )


def test_load_open_bandit_reads_the_obd_layout(tmp_path: Path) -> None:
    _write_obd(tmp_path / "random" / "all")
    log = load_open_bandit(tmp_path / "random" / "all")
    assert log.n_rounds == 4 and log.n_actions == 3 and log.n_positions == 3
    assert log.action.tolist() == [2, 0, 1, 2]
    assert log.position.tolist() == [0, 1, 2, 0]  # 1-based in the file
    assert log.reward.tolist() == [0, 1, 0, 0]
    np.testing.assert_allclose(log.propensity, 1 / 3)
    # 4 one-hot user features (2 + 2 + 2 + 2 columns) then 3 affinities.
    assert log.context.shape == (4, 8 + 3)
    np.testing.assert_allclose(log.context[:, :8].sum(axis=1), 4.0)
    np.testing.assert_allclose(log.context[1, 8:], [2.0, 0.0, 0.0])
    assert log.round_action_context is not None
    assert log.round_action_context[0, 2, 0] == 1.0  # affinity_2 belongs to item 2
    # item features: the float, then one-hots of 2 + 2 + 1 categories.
    assert log.action_context is not None and log.action_context.shape == (3, 1 + 5)
    assert log.action_context[1, 0] == 0.25
    again = load_open_bandit(tmp_path / "random" / "all" / "all.csv")
    np.testing.assert_array_equal(again.context, log.context)
    hashed = load_open_bandit(tmp_path / "random" / "all", hash_buckets=16)
    assert hashed.context.shape == (4, 4 * 16 + 3)
    np.testing.assert_array_equal(
        hashed.context, load_open_bandit(tmp_path / "random" / "all", hash_buckets=16).context
    )


def test_load_open_bandit_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(",a,b\n0,1,2\n")
    with pytest.raises(ValidationError, match="missing"):
        load_open_bandit(tmp_path / "x.csv")
    with pytest.raises(ValidationError, match="no Open Bandit"):
        load_open_bandit(tmp_path / "nowhere")


def test_from_impressions_rewards_only_feedback_inside_the_window() -> None:
    imps = [
        Impression("r1", "u1", "i1", 0, 0.9, 0.5, "eps", 100.0, {"hour": 9, "sources": {}}),
        Impression("r1", "u1", "i2", 1, 0.8, 0.25, "eps", 100.0, {"hour": 9}),
        Impression("r2", "u2", "i1", 0, 0.7, 0.5, "eps", 100.0, {}),
        Impression("r3", "u3", "i3", 0, 0.7, 1.0, "greedy", 100.0, {}),
    ]
    events = [
        Event("u1", "i1", "click", timestamp=150.0),   # 50 s later: rewarded
        Event("u1", "i2", "click", timestamp=200.0),   # 100 s later: outside the window
        Event("u2", "i1", "view", timestamp=110.0),    # not a reward kind
        Event("u2", "i1", "click", timestamp=90.0),    # before the impression
    ]
    log = from_impressions(imps, events, window_s=60.0, policy="eps")
    assert log.n_rounds == 3 and log.action_ids == ("i1", "i2")
    assert log.reward.tolist() == [1.0, 0.0, 0.0]
    assert log.action.tolist() == [0, 1, 0] and log.position.tolist() == [0, 1, 0]
    assert log.propensity.tolist() == [0.5, 0.25, 0.5]
    assert log.context.tolist() == [[9.0], [9.0], [0.0]]  # numeric context keys only
    wider = from_impressions(imps, events, window_s=120.0, items=["i1", "i2", "i3"])
    assert wider.reward.tolist() == [1.0, 1.0, 0.0, 0.0] and wider.n_actions == 3
    purchase = from_impressions(imps, [Event("u2", "i1", "purchase", timestamp=100.0)],
                                policy="eps")
    assert purchase.reward.tolist() == [0.0, 0.0, 1.0]
    with pytest.raises(ValidationError, match="no impressions"):
        from_impressions(imps, events, policy="nobody")
    with pytest.raises(ValidationError, match="not in `items`"):
        from_impressions(imps, events, items=["i1"])


def test_module_doctests() -> None:
    result = doctest.testmod(O, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ----------------------------------------------------------------- real data
@pytest.mark.skipif(not OBD.is_dir(), reason=f"Open Bandit Dataset sample not at {OBD}")
def test_validate_on_obd() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = validate_on_obd(OBD, n_boot=200, variants=("empirical",))
    assert out["on_policy_ctr"]["bts"] == pytest.approx(0.0042)
    assert out["on_policy_ctr"]["random"] == pytest.approx(0.0038)
    rows = out["variants"]["empirical"]
    assert set(rows) == {"ips", "snips", "dm", "dr", "replay"}
    for name in ("ips", "snips", "dm", "dr"):
        assert 0.0 < rows[name]["estimate"] < 0.02
        assert rows[name]["relative_error"] == pytest.approx(
            abs(rows[name]["estimate"] - 0.0042) / 0.0042
        )
    assert "runtime_s" in out and "IPS" not in O.format_obd_table(out)


def test_cli_eval_ope(tmp_path):
    import json as _json

    from typer.testing import CliRunner

    from liverec.cli import app

    res = CliRunner().invoke(app, ["eval", "ope"])
    assert res.exit_code == 2 and "--data" in res.output
    root = Path(__file__).resolve().parents[2].parent / "shared/data/open-bandit-dataset"
    if not root.exists():
        pytest.skip("needs shared/data/open-bandit-dataset")
    out = tmp_path / "ope.json"
    res = CliRunner().invoke(app, ["eval", "ope", "--data", str(root), "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = _json.loads(out.read_text())
    assert {"ips", "snips", "dm", "dr"} <= set(got["estimators"])
    assert all(len(v["ci95"]) == 2 and "relative_error" in v for v in got["estimators"].values())


def _uniform_log(n: int, ctr_of: np.ndarray, *, seed: int = 0, ctx_effect: bool = False) -> "O.LoggedBandit":
    """A uniform-random logger over len(ctr_of) items, 2 positions; optional context effect."""
    rng = np.random.default_rng(seed)
    A = len(ctr_of)
    x = rng.integers(0, 2, size=n)
    a = rng.integers(0, A, size=n)
    pos = rng.integers(0, 2, size=n)
    p_click = ctr_of[a].copy()
    if ctx_effect:  # item 0 is great for x=1 users only, item 1 for x=0
        p_click = np.where((a == 0) & (x == 1), 0.3, np.where((a == 1) & (x == 0), 0.3, 0.02))
    r = (rng.random(n) < p_click).astype(float)
    return O.LoggedBandit(context=x.reshape(-1, 1).astype(float), action=a, position=pos, reward=r,
                          propensity=np.full(n, 1.0 / A), n_actions=A, n_positions=2)


def test_learned_policies_beat_random_when_there_is_something_to_learn() -> None:
    ctr = np.array([0.02] * 9 + [0.25])  # one item is far better
    out = O.learned_policies(_uniform_log(20_000, ctr), n_boot=300)
    assert out["n_rounds"] == {"train": 10_000, "test": 10_000}
    rnd = out["random"]["ctr"]
    assert abs(rnd - ctr.mean()) < 0.01
    for name in ("greedy", "epsilon", "thompson", "contextual"):
        dr = out["policies"][name]["dr"]
        assert out["beats_random"][name], name
        assert dr["ci95"][0] > rnd
    assert abs(out["policies"]["greedy"]["dr"]["estimate"] - 0.25) < 0.04  # the truth for greedy
    assert abs(out["policies"]["epsilon"]["dr"]["estimate"] - (0.9 * 0.25 + 0.1 * ctr.mean())) < 0.04


def test_learned_policies_do_not_beat_random_when_nothing_differs() -> None:
    out = O.learned_policies(_uniform_log(6_000, np.full(8, 0.05), seed=3), n_boot=300)
    assert not any(out["beats_random"].values())


def test_contextual_policy_uses_the_context() -> None:
    out = O.learned_policies(_uniform_log(20_000, np.zeros(4), ctx_effect=True, seed=1), n_boot=200)
    # Only a policy that looks at the user can pick the right item for everyone.
    assert out["policies"]["contextual"]["dr"]["estimate"] > out["policies"]["greedy"]["dr"]["estimate"] + 0.05
    with pytest.raises(ValidationError, match="train_share"):
        O.learned_policies(_uniform_log(100, np.full(4, 0.1)), train_share=1.0)


def test_detectable_ctr_matches_a_simulated_policy() -> None:
    """At the detectable click rate, about half of the IPS lower bounds clear the baseline."""
    n, A, base = 4000, 20, 0.02
    c = O.detectable_ctr(n, float(A), base)
    assert base < c < 1 and O.detectable_ctr(4 * n, float(A), base) < c  # more rounds, smaller effects show
    rng = np.random.default_rng(0)
    wins = 0
    for _ in range(200):
        match = rng.random(n) < 1 / A
        terms = A * match * (rng.random(n) < c)
        wins += terms.mean() - 1.96 * terms.std(ddof=1) / np.sqrt(n) > base
    assert 0.35 < wins / 200 < 0.65
    with pytest.raises(ValidationError):
        O.detectable_ctr(0, 2.0, 0.1)
