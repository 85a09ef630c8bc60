"""A seeded user simulator over real item LM vectors: does per-event learning pay off?

Users have hidden tastes in the language model's space; an agent serves slates; the
simulator answers with clicks drawn from an explicit click model. Every agent sees
the *same* world for a given seed (same users, same activity sequence, same random
draws, same warm-up log), so differences between agents are differences between
policies, and ratios between agents can be paired by seed.

The click model
---------------
Tastes live in a *taste space* derived from the catalog's LM vectors: centred (LM
vectors share a large common direction — book cosines bunch around 0.3 — and raw
cosines would make "central" books everyone's favourites, a world a non-personal
list wins) and projected on the catalog's top ``taste_dims`` principal axes (broad
themes: genre, era, audience). Agents never see it; they get the raw LM vectors.

Each user is a mixture of 1-3 *interest directions*: a random item's taste vector
plus Gaussian noise of norm ``interest_noise``, normalised. Each session is mostly
about one of them (drawn uniformly when the session starts): the affinity to item
``i`` is ``aff = (1 - f) * max_j cos(interest_j, t_i) + f * cos(interest_s, t_i)``
with ``f = session_focus``, ``t_i`` the item's taste vector and ``s`` the session's
interest. The item shown at position ``j`` (0 = top) is clicked with probability

``sigmoid(a * aff + b) * (1 + j) ** -eta * satiation ** n_similar``

where ``n_similar`` counts items whose LM cosine with it exceeds ``similar_cos``
(0.8: in practice the same series or author) the user already clicked in the
current session. The defaults (``a=10, b=-5, interest_noise=0.3, taste_dims=32``)
are calibrated on the 10k goodbooks books with all-MiniLM-L6-v2: random slates get
about 2% CTR, a list of the most "central" books no more, an oracle that knows
every taste about 30% — room for learning to show.

A session ends after each slate with probability ``p_end`` (or after ``max_session``
slates). Users arrive with Zipf-like activity (``activity ∝ rank^-zipf``). At
``drift_at`` (counted in agent steps, after the warm-up) every user's taste shifts:
``drift_mode="replace"`` draws a fresh set of interests, ``"rotate"`` turns each
interest toward one new random direction by ``drift_strength`` (0 = no change,
1 = replaced).

Events: a ``"click"`` for every clicked item, in slate order, and (``skips=True``, the
default) a ``"skip"`` for the top-most unclicked item — the impression feedback a
real integration sends. Without it a greedy engine re-serves the same ignored items
to a user forever (only interacted items count as seen), and the benchmark would
measure that rather than learning. Simulated time advances
``step_seconds`` per step from a fixed epoch, so runs are reproducible.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> v = rng.normal(size=(300, 16)).astype(np.float32)
>>> v /= np.linalg.norm(v, axis=1, keepdims=True)
>>> sim = Simulator(v, [f"i{j}" for j in range(300)], n_users=20, seed=1)
>>> res = sim.run(RandomAgent([f"i{j}" for j in range(300)], seed=0), 200)
>>> res.steps, 0.0 <= res.ctr <= 1.0
(200, True)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..encode.encoder import SentenceTransformerEncoder
from ..errors import ValidationError
from ..types import Event

#: Simulated clock start (2020-09-13): fixed so runs are reproducible and never "in the future".
SIM_EPOCH = 1_600_000_000.0
DRIFT_MODES = ("replace", "rotate")


@runtime_checkable
class Agent(Protocol):
    """What the simulator talks to. ``warm_start(events)`` is optional."""

    name: str

    def recommend(self, user: str, k: int) -> list[str]: ...

    def feedback(self, user: str, item: str, kind: str, t: float) -> None: ...


def click_probability(
    affinity: np.ndarray | float,
    position: np.ndarray | int,
    n_similar: np.ndarray | int = 0,
    *,
    a: float = 10.0,
    b: float = -5.0,
    eta: float = 1.0,
    satiation: float = 0.5,
) -> np.ndarray:
    """The click model, vectorised: ``sigmoid(a*aff + b) * (1+pos)^-eta * satiation^n_similar``.

    Examples
    --------
    >>> click_probability(np.array([0.0, 0.3, 0.7]), 0).round(3).tolist()
    [0.007, 0.119, 0.881]
    >>> click_probability(0.7, np.array([0, 1, 4])).round(3).tolist()
    [0.881, 0.44, 0.176]
    """
    aff = np.asarray(affinity, dtype=np.float64)
    pos = np.asarray(position, dtype=np.float64)
    sim = np.asarray(n_similar, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-(a * aff + b))) * (1.0 + pos) ** -eta * satiation**sim


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(n, 1e-12)


@dataclass
class SimResult:
    """Per-step records of one run (agent steps only; the warm-up is not included).

    ``users[s]`` was served ``shown[s]`` items at step ``s`` and clicked ``clicks[s]``
    of them; ``expected[s]`` is the sum of the click probabilities of the served slate
    (the noise-free version of ``clicks``).
    """

    agent: str
    k: int
    n_users: int
    users: np.ndarray
    clicks: np.ndarray
    shown: np.ndarray
    expected: np.ndarray
    drift_at: int | None
    wall_seconds: float
    agent_seconds: float
    warmup_steps: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.users)

    @property
    def sim_seconds(self) -> float:
        """Time spent in the simulator itself (wall time minus the agent's calls)."""
        return max(self.wall_seconds - self.agent_seconds, 0.0)

    @property
    def sim_steps_per_second(self) -> float:
        """Simulated steps (warm-up included) per second of simulator time."""
        n = self.steps + self.warmup_steps
        return n / self.sim_seconds if self.sim_seconds > 0 else float("inf")

    @property
    def ctr(self) -> float:
        """Cumulative CTR: clicks / impressions over the whole run."""
        n = int(self.shown.sum())
        return float(self.clicks.sum()) / n if n else 0.0

    @property
    def expected_ctr(self) -> float:
        n = int(self.shown.sum())
        return float(self.expected.sum()) / n if n else 0.0

    def ctr_between(self, start: int, stop: int | None = None) -> float:
        n = int(self.shown[start:stop].sum())
        return float(self.clicks[start:stop].sum()) / n if n else float("nan")

    def ctr_curve(self, bins: int = 50) -> list[float]:
        """CTR in ``bins`` equal consecutive blocks of steps."""
        edges = np.linspace(0, self.steps, min(bins, max(self.steps, 1)) + 1).astype(int)
        return [self.ctr_between(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]

    def user_ctr(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-user CTR before and after the drift (NaN where a user had no slate).

        Without drift "before" is the whole run and "after" is all NaN.
        """
        cut = self.steps if self.drift_at is None else min(self.drift_at, self.steps)
        out = []
        for sl in (slice(0, cut), slice(cut, None)):
            c = np.bincount(self.users[sl], weights=self.clicks[sl], minlength=self.n_users)
            n = np.bincount(self.users[sl], weights=self.shown[sl], minlength=self.n_users)
            with np.errstate(invalid="ignore", divide="ignore"):
                out.append(np.where(n > 0, c / np.maximum(n, 1), np.nan))
        return out[0], out[1]

    def recovery(self, *, window: int = 5, level: float = 0.9, expected: bool = True) -> dict[str, float]:
        """Slates a user needs after the shift until their CTR is back to ``level`` x pre-shift.

        For every user with at least ``window`` slates before and after the shift: the
        pre-shift level is their CTR over their last ``window`` slates before it; after
        it, the rolling CTR over their last ``window`` post-shift slates (fewer at the
        start) is compared with ``level`` x that. ``expected=True`` uses the served
        slates' click probabilities instead of the sampled clicks (same CTR, no
        click noise). A user who never gets back counts with all their post-shift
        slates (a lower bound) and lowers ``recovered_frac``.

        The slates split into *finding* the new taste and *adapting* to it: a random
        slate of the default world gets ~2% CTR, so the first post-shift click alone
        takes ~10 slates whatever learns from it. ``recovery_clicks`` counts the
        evidence instead: the user's post-shift clicks before the slate that is back
        (the events a learner needed), ``first_click_slates`` the slates up to and
        including the first post-shift click.

        Returns ``{"recovery_events": mean slates (censored included),
        "recovery_events_recovered": mean over recovered users, "recovered_frac",
        "recovery_clicks": mean post-shift clicks before recovery (censored: all of
        them), "first_click_slates": mean slates to the first post-shift click (users
        with one), "users": how many users were eligible}`` (NaN without drift).
        """
        nan = {"recovery_events": float("nan"), "recovery_events_recovered": float("nan"),
               "recovered_frac": float("nan"), "recovery_clicks": float("nan"),
               "first_click_slates": float("nan"), "users": 0}
        if self.drift_at is None or self.drift_at >= self.steps:
            return nan
        num = self.expected if expected else self.clicks.astype(np.float64)
        order = np.argsort(self.users, kind="stable")
        users_sorted = self.users[order]
        bounds = np.searchsorted(users_sorted, np.arange(self.n_users + 1))
        counts, recovered, clicks_before, first_click = [], [], [], []
        for u in range(self.n_users):
            steps = order[bounds[u] : bounds[u + 1]]  # this user's steps, in time order
            pre = steps[steps < self.drift_at]
            post = steps[steps >= self.drift_at]
            if len(pre) < window or len(post) < window:
                continue
            last = pre[-window:]
            target = level * float(num[last].sum()) / max(float(self.shown[last].sum()), 1.0)
            c = np.concatenate([[0.0], np.cumsum(num[post])])
            n = np.concatenate([[0.0], np.cumsum(self.shown[post])])
            idx = np.arange(1, len(post) + 1)
            lo = np.maximum(idx - window, 0)
            rolling = (c[idx] - c[lo]) / np.maximum(n[idx] - n[lo], 1.0)
            hit = np.flatnonzero(rolling >= target - 1e-12)
            stop = int(hit[0]) if len(hit) else len(post)  # slates before the one that is back
            counts.append(stop + 1 if len(hit) else stop)
            recovered.append(bool(len(hit)))
            clicks_before.append(int(self.clicks[post[:stop]].sum()))
            clicked = np.flatnonzero(self.clicks[post] > 0)
            if len(clicked):
                first_click.append(int(clicked[0]) + 1)
        if not counts:
            return nan
        rec = np.asarray(recovered)
        arr = np.asarray(counts, dtype=np.float64)
        return {
            "recovery_events": float(arr.mean()),
            "recovery_events_recovered": float(arr[rec].mean()) if rec.any() else float("nan"),
            "recovered_frac": float(rec.mean()),
            "recovery_clicks": float(np.mean(clicks_before)),
            "first_click_slates": float(np.mean(first_click)) if first_click else float("nan"),
            "users": int(len(arr)),
        }


class Simulator:
    """Simulated users with hidden LM-space tastes who click on served slates.

    Parameters
    ----------
    catalog_vectors : (n_items, d) unit item vectors (e.g. the books' LM vectors).
    item_ids : the items' external ids, one per row.
    n_users : number of simulated users (ids ``"u0"``, ``"u1"``, ...).
    k : slate size.
    seed : everything random derives from it; the same seed gives the same world.
    drift_at : agent step at which every taste shifts (None = never).
    drift_mode : ``"replace"`` (new random interests) or ``"rotate"`` (turn toward one).
    drift_strength : how far ``"rotate"`` turns, in [0, 1].
    a, b, eta, satiation, similar_cos : the click model (see the module docstring).
    p_end, max_session : session length.
    zipf : activity skew; user of activity rank ``r`` (1-based) arrives ``∝ r^-zipf``.
    center, taste_dims : the taste space (centred LM vectors on their top principal
        axes; ``center=False, taste_dims=None`` = raw LM cosines).
    n_interests : (min, max) interest directions per user.
    interest_noise : norm of the Gaussian noise added to each interest's seed item.
    skips : also emit a ``"skip"`` for the top-most unclicked item of each slate.
    step_seconds : simulated time between steps.

    Examples
    --------
    >>> sim = Simulator(vectors, ids, n_users=500, drift_at=10_000)   # doctest: +SKIP
    >>> res = sim.run(agent, 20_000, warmup=2_000)                  # doctest: +SKIP
    >>> res.ctr, res.recovery()["recovery_events"]                  # doctest: +SKIP
    """

    def __init__(
        self,
        catalog_vectors: np.ndarray,
        item_ids: Sequence[str],
        *,
        n_users: int = 500,
        k: int = 5,
        seed: int = 0,
        drift_at: int | None = None,
        drift_mode: str = "replace",
        drift_strength: float = 0.5,
        a: float = 10.0,
        b: float = -5.0,
        eta: float = 1.0,
        satiation: float = 0.5,
        similar_cos: float = 0.8,
        session_focus: float = 0.5,
        p_end: float = 0.2,
        max_session: int = 20,
        zipf: float = 0.8,
        n_interests: tuple[int, int] = (1, 3),
        interest_noise: float = 0.3,
        skips: bool = True,
        step_seconds: float = 60.0,
        center: float = 1.0,
        taste_dims: int | None = 32,
    ) -> None:
        vecs = np.ascontiguousarray(catalog_vectors, dtype=np.float32)
        if vecs.ndim != 2 or len(vecs) != len(item_ids):
            raise ValidationError(
                f"catalog_vectors must be (n_items, d) with one row per item id; got shape {vecs.shape} "
                f"for {len(item_ids)} ids.",
                field="catalog_vectors",
            )
        if len(set(item_ids)) != len(item_ids):
            raise ValidationError("item_ids contain duplicates; give every row its own id.", field="item_ids")
        if not 1 <= k <= len(item_ids):
            raise ValidationError(f"k must be in [1, {len(item_ids)}] (the catalog size), got {k}.", field="k")
        if n_users < 1:
            raise ValidationError(f"n_users must be >= 1, got {n_users}.", field="n_users")
        if drift_mode not in DRIFT_MODES:
            raise ValidationError(f"drift_mode must be one of {DRIFT_MODES}, got {drift_mode!r}.", field="drift_mode")
        if drift_at is not None and drift_at < 0:
            raise ValidationError(f"drift_at must be >= 0 or None, got {drift_at}.", field="drift_at")
        lo, hi = n_interests
        if not 1 <= lo <= hi:
            raise ValidationError(f"n_interests must be (min, max) with 1 <= min <= max, got {n_interests}.",
                                  field="n_interests")
        if not 0.0 <= p_end <= 1.0 or max_session < 1:
            raise ValidationError("p_end must be in [0, 1] and max_session >= 1.", field="p_end")
        self.vectors = _unit_rows(vecs).astype(np.float32)
        # Tastes live in the centred space: LM vectors share a large common direction
        # (book vectors' cosines bunch around 0.3), and raw cosines would make "central"
        # items everyone's favourites — a world a non-personal list wins.
        self.center, self.taste_dims = center, taste_dims
        self.taste_vectors = _taste_space(self.vectors, center, taste_dims)
        self.item_ids = list(item_ids)
        self.index = {i: j for j, i in enumerate(self.item_ids)}
        self.n_users, self.k, self.seed = n_users, k, seed
        self.drift_at, self.drift_mode, self.drift_strength = drift_at, drift_mode, drift_strength
        self.a, self.b, self.eta, self.satiation, self.similar_cos = a, b, eta, satiation, similar_cos
        if not 0.0 <= session_focus <= 1.0:
            raise ValidationError(f"session_focus must be in [0, 1], got {session_focus}.", field="session_focus")
        self.session_focus = session_focus
        self.p_end, self.max_session, self.zipf = p_end, max_session, zipf
        self.n_interests, self.interest_noise = (lo, hi), interest_noise
        self.skips, self.step_seconds = skips, step_seconds
        self.user_ids = [f"u{u}" for u in range(n_users)]
        self.pos_bias = (1.0 + np.arange(k, dtype=np.float64)) ** -eta
        self.reset()

    # ------------------------------------------------------------------ world
    def params(self) -> dict[str, Any]:
        """Every world parameter, JSON-ready."""
        keys = ("n_users", "k", "seed", "drift_at", "drift_mode", "drift_strength", "a", "b", "eta",
                "satiation", "similar_cos", "session_focus", "p_end", "max_session", "zipf", "n_interests",
                "interest_noise", "skips", "step_seconds", "center", "taste_dims")
        out = {key: getattr(self, key) for key in keys}
        out["n_items"] = len(self.item_ids)
        out["n_interests"] = list(self.n_interests)
        return out

    def _draw_interests(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, max_interests, d) unit directions and each user's count; fewer repeat the first."""
        lo, hi = self.n_interests
        d = self.taste_vectors.shape[1]
        seeds = self.taste_vectors[rng.integers(len(self.vectors), size=(n, hi))].astype(np.float64)
        noise = _unit_rows(rng.normal(size=(n, hi, d))) * self.interest_noise
        dirs = _unit_rows(seeds + noise)
        m = rng.integers(lo, hi + 1, size=n)
        for j in range(1, hi):  # pad: a copy never changes the max over interests
            short = m <= j
            dirs[short, j] = dirs[short, 0]
        return dirs.astype(np.float32), m

    def reset(self) -> None:
        """Rebuild the world from the seed: tastes, activity, sessions, time."""
        ss = np.random.SeedSequence(self.seed)
        self._rng_world, self._rng_drift, self._rng_users, self._rng_clicks, self._rng_end, self._rng_warm = (
            np.random.default_rng(s) for s in ss.spawn(6)
        )
        self.interests, self.n_user_interests = self._draw_interests(self._rng_world, self.n_users)
        # The interest each user's current session is about (see session_focus).
        self.session_interest = (
            self._rng_world.random(self.n_users) * self.n_user_interests
        ).astype(np.int64)
        ranks = self._rng_world.permutation(self.n_users) + 1
        act = ranks.astype(np.float64) ** -self.zipf
        self.activity = act / act.sum()
        self.session_clicked: list[list[int]] = [[] for _ in range(self.n_users)]
        self.session_len = np.zeros(self.n_users, dtype=np.int64)
        self.drifted = False
        self.interests_before_drift: np.ndarray | None = None

    def apply_drift(self) -> None:
        """Shift every user's taste now (``drift_mode``); sessions restart."""
        self.interests_before_drift = self.interests.copy()
        if self.drift_mode == "replace":
            self.interests, self.n_user_interests = self._draw_interests(self._rng_drift, self.n_users)
            self.session_interest = np.minimum(self.session_interest, self.n_user_interests - 1)
        else:
            target = self._draw_interests(self._rng_drift, self.n_users)[0][:, :1, :]
            s = float(self.drift_strength)
            self.interests = _unit_rows((1 - s) * self.interests + s * target).astype(np.float32)
        for lst in self.session_clicked:
            lst.clear()
        self.session_len[:] = 0
        self.drifted = True

    def _affinity(self, user: int, vs: np.ndarray) -> np.ndarray:
        c = vs @ self.interests[user].T  # (items, interests)
        f = self.session_focus
        if f == 0.0:
            return c.max(axis=1)
        return (1.0 - f) * c.max(axis=1) + f * c[:, self.session_interest[user]]

    def affinity(self, user: int, items: np.ndarray) -> np.ndarray:
        """``user``'s affinity to each item now: best interest, blended with the session's."""
        return self._affinity(user, self.taste_vectors[np.asarray(items, dtype=np.int64)])

    def click_probabilities(self, user: int, items: np.ndarray) -> np.ndarray:
        """Click probability of each item of a slate (in serving order) for ``user`` now."""
        items = np.asarray(items, dtype=np.int64)
        vs = self.vectors[items]
        aff = self._affinity(user, self.taste_vectors[items])
        p = 1.0 / (1.0 + np.exp(-(self.a * aff + self.b))) * self.pos_bias[: len(items)]
        clicked = self.session_clicked[user]
        if clicked and self.satiation != 1.0:
            n_sim = (vs @ self.vectors[clicked].T > self.similar_cos).sum(axis=1)
            p = p * self.satiation**n_sim
        return p

    def optimal_slate(self, user: int) -> np.ndarray:
        """The k items of highest affinity for ``user`` now (ignores satiation)."""
        aff = self._affinity(user, self.taste_vectors)
        top = np.argpartition(-aff, self.k - 1)[: self.k]
        return top[np.argsort(-aff[top])]

    # -------------------------------------------------------------------- run
    def _slate_idx(self, ids: Sequence[str], agent: str) -> np.ndarray:
        if len(ids) > self.k:
            raise ValidationError(f"agent {agent!r} returned {len(ids)} items for k={self.k}.", field="slate")
        try:
            idx = [self.index[i] for i in ids]
        except KeyError as exc:
            raise ValidationError(f"agent {agent!r} recommended unknown item {exc.args[0]!r}.", field="slate") from None
        if len(set(idx)) != len(idx):
            raise ValidationError(f"agent {agent!r} recommended the same item twice in one slate.", field="slate")
        return np.array(idx, dtype=np.int64)

    def run(
        self,
        agent: Agent,
        steps: int,
        *,
        warmup: int = 0,
        progress: Callable[[int], None] | None = None,
        progress_every: int = 500,
    ) -> SimResult:
        """Let ``agent`` serve ``steps`` slates after ``warmup`` steps of random slates.

        The warm-up traffic depends only on the seed: every agent gets the same initial
        log, handed over in one ``agent.warm_start(events)`` call when the agent has
        that method (else event by event through ``feedback``). ``progress(n)`` is
        called with the number of agent steps done since the last call.
        """
        if steps < 0 or warmup < 0:
            raise ValidationError("steps and warmup must be >= 0.", field="steps")
        self.reset()
        k, n_items = self.k, len(self.item_ids)
        total = warmup + steps
        users = self._rng_users.choice(self.n_users, size=total, p=self.activity)
        uniforms = self._rng_clicks.random((total, k))
        ends = self._rng_end.random(total)
        intents = self._rng_end.random(total)
        rec_users = users[warmup:].astype(np.int64)
        rec_clicks = np.zeros(steps, dtype=np.int64)
        rec_shown = np.zeros(steps, dtype=np.int64)
        rec_exp = np.zeros(steps, dtype=np.float64)
        warm_events: list[Event] = []
        uid, ids_all, vectors, pos_bias = self.user_ids, self.item_ids, self.vectors, self.pos_bias
        tastes = self.taste_vectors
        a, b, sat, thr = self.a, self.b, self.satiation, self.similar_cos
        drift_step = None if self.drift_at is None else warmup + self.drift_at
        has_warm_start = callable(getattr(agent, "warm_start", None))
        name = getattr(agent, "name", type(agent).__name__)
        agent_s = 0.0
        pc = time.perf_counter
        t_start = pc()
        done_since = 0
        for s in range(total):
            if s == drift_step:
                self.apply_drift()
            u = int(users[s])
            user = uid[u]
            t = SIM_EPOCH + s * self.step_seconds
            if s < warmup:
                slate = self._rng_warm.choice(n_items, size=k, replace=False) if n_items < 4 * k else \
                    _distinct(self._rng_warm, n_items, k)
                ids = [ids_all[i] for i in slate]
            else:
                t0 = pc()
                ids = agent.recommend(user, k)
                agent_s += pc() - t0
                slate = self._slate_idx(ids, name)
            m = len(slate)
            if m:
                aff = self._affinity(u, tastes[slate])
                p = pos_bias[:m] / (1.0 + np.exp(-(a * aff + b)))
                clicked_before = self.session_clicked[u]
                if clicked_before and sat != 1.0:
                    p = p * sat ** (vectors[slate] @ vectors[clicked_before].T > thr).sum(axis=1)
                hits = np.nonzero(uniforms[s, :m] < p)[0]
            else:
                p = np.zeros(0)
                hits = np.zeros(0, dtype=np.int64)
            kinds: list[tuple[int, str]] = [(int(j), "click") for j in hits]
            if self.skips and len(hits) < m:
                missed = np.ones(m, dtype=bool)
                missed[hits] = False
                kinds.append((int(np.argmax(missed)), "skip"))
            if s < warmup:
                for j, kind in kinds:
                    warm_events.append(Event(user=user, item=ids[j], kind=kind, timestamp=t, id=f"w{s}-{j}"))
            elif kinds:
                t0 = pc()
                for j, kind in kinds:
                    agent.feedback(user, ids[j], kind, t)
                agent_s += pc() - t0
            if len(hits):
                self.session_clicked[u].extend(int(slate[j]) for j in hits)
            self.session_len[u] += 1
            if ends[s] < self.p_end or self.session_len[u] >= self.max_session:
                self.session_clicked[u].clear()
                self.session_len[u] = 0
                self.session_interest[u] = int(intents[s] * self.n_user_interests[u])
            if s >= warmup:
                r = s - warmup
                rec_clicks[r] = len(hits)
                rec_shown[r] = m
                rec_exp[r] = float(p.sum())
                done_since += 1
                if progress is not None and done_since >= progress_every:
                    progress(done_since)
                    done_since = 0
            elif s == warmup - 1:
                t0 = pc()
                _hand_over(agent, warm_events, has_warm_start)
                agent_s += pc() - t0
        if progress is not None and done_since:
            progress(done_since)
        wall = pc() - t_start
        return SimResult(
            agent=name, k=k, n_users=self.n_users, users=rec_users, clicks=rec_clicks, shown=rec_shown,
            expected=rec_exp, drift_at=self.drift_at, wall_seconds=wall, agent_seconds=agent_s,
            warmup_steps=warmup, params=self.params(),
        )


def _taste_space(vectors: np.ndarray, center: float, dims: int | None) -> np.ndarray:
    """Unit item vectors in the space tastes live in: (partly) centred, optionally on top principal axes."""
    if not center and dims is None:
        return vectors
    x = vectors.astype(np.float64)
    if center:
        x = x - float(center) * x.mean(axis=0)
    if dims is not None and dims < x.shape[1]:
        # Principal axes of the catalog (deterministic: SVD of the small d x d covariance).
        _, vecs = np.linalg.eigh(x.T @ x)
        basis = vecs[:, ::-1][:, :dims]
        basis *= np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(dims)])  # fixed sign
        x = x @ basis
    return _unit_rows(x).astype(np.float32)


def _distinct(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """k distinct ints in [0, n) without an O(n) permutation (n >> k)."""
    while True:
        x = rng.integers(n, size=k)
        if len(set(x.tolist())) == k:
            return x


def _hand_over(agent: Agent, events: list[Event], has_warm_start: bool) -> None:
    if has_warm_start:
        agent.warm_start(events)  # type: ignore[attr-defined]
    else:
        for e in events:
            agent.feedback(e.user, e.item, e.kind, e.timestamp)


# ------------------------------------------------------------- reference agents
class RandomAgent:
    """k distinct random items per request (seeded); learns nothing."""

    name = "random"

    def __init__(self, item_ids: Sequence[str], *, seed: int = 0) -> None:
        self.item_ids = list(item_ids)
        self.rng = np.random.default_rng(seed)

    def recommend(self, user: str, k: int) -> list[str]:
        n = len(self.item_ids)
        k = min(k, n)
        idx = _distinct(self.rng, n, k) if n >= 4 * k else self.rng.choice(n, size=k, replace=False)
        return [self.item_ids[i] for i in idx]

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        return None


class GreedyScoresAgent:
    """Serves each user's top-k of a fixed (n_users, n_items) score matrix; learns nothing.

    The cheapest possible agent: what :func:`benchmark_simulator` runs to time the
    simulator alone.
    """

    name = "greedy-scores"

    def __init__(self, scores: np.ndarray, item_ids: Sequence[str], k: int) -> None:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)
        self.slates = {f"u{u}": [item_ids[i] for i in row] for u, row in enumerate(top)}

    def recommend(self, user: str, k: int) -> list[str]:
        return self.slates[user]

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        return None


def benchmark_simulator(
    catalog_vectors: np.ndarray, item_ids: Sequence[str], *, steps: int = 20_000, n_users: int = 500,
    k: int = 5, seed: int = 0, drift: bool = True,
) -> dict[str, float]:
    """Steps per second of the simulator alone, serving a greedy agent over precomputed scores.

    The agent's time is measured and subtracted; ``sim_steps_per_second`` is what the
    click model, sessions and bookkeeping cost.
    """
    sim = Simulator(catalog_vectors, item_ids, n_users=n_users, k=k, seed=seed,
                    drift_at=steps // 2 if drift else None)
    # Each user's initial taste: one BLAS product per interest slot.
    scores = np.max([sim.taste_vectors @ sim.interests[:, j].T for j in range(sim.interests.shape[1])], axis=0).T
    agent = GreedyScoresAgent(scores, item_ids, k)
    res = sim.run(agent, steps)
    return {
        "steps": steps,
        "wall_seconds": res.wall_seconds,
        "agent_seconds": res.agent_seconds,
        "sim_steps_per_second": res.sim_steps_per_second,
        "wall_steps_per_second": steps / res.wall_seconds if res.wall_seconds > 0 else float("inf"),
        "ctr": res.ctr,
    }


# ----------------------------------------------------------------- the catalog
def load_book_vectors(
    catalog_size: int | None = None,
    *,
    encoder: Any | None = None,
    cache_url: str | None = None,
    template: str | None = None,
) -> tuple[np.ndarray, list[str], list[str]]:
    """The shipped goodbooks books' LM vectors, encoded once through the vector cache.

    Returns ``(vectors, ids, titles)`` for the first ``catalog_size`` books (the most
    popular come first; None = all 10,000). The texts are rendered with liverec's
    default template, exactly as the engine would, so the cache is shared with it.
    """
    from ..data import load_goodbooks
    from ..encode.cache import CachedEncoder, open_cache
    from ..encode.text import render_text
    from ..settings import DEFAULT_TEXT_TEMPLATE
    from .run import default_cache_url

    items = load_goodbooks(limit=catalog_size)
    tpl = template or DEFAULT_TEXT_TEMPLATE
    texts = [render_text(it.text, it.attributes, tpl) for it in items]
    store = open_cache(cache_url or default_cache_url())  # its directory made on first use
    try:
        enc = encoder if encoder is not None else SentenceTransformerEncoder()
        vecs = CachedEncoder(enc, store, progress=True).encode(texts)
    finally:
        store.close()
    titles = [str(it.attributes.get("title", it.id)) for it in items]
    return vecs.astype(np.float32), [it.id for it in items], titles


# ------------------------------------------------------------ many seeds, agents
def t_interval(x: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): Student-t interval of the mean over seeds (one value = zero width)."""
    arr = np.asarray([v for v in x if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(arr) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(arr.mean())
    if len(arr) < 2:
        return m, m, m
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, len(arr) - 1) * arr.std(ddof=1) / math.sqrt(len(arr)))
    return m, m - half, m + half


def compare_agents(
    catalog_vectors: np.ndarray,
    item_ids: Sequence[str],
    factories: Mapping[str, Callable[[int], Agent]],
    *,
    seeds: Sequence[int] = tuple(range(20)),
    steps: int = 20_000,
    warmup: int = 2_000,
    curve_bins: int = 50,
    recovery_window: int = 5,
    ratios: Sequence[tuple[str, str]] = (("realtime", "static"), ("realtime", "retrain-1000")),
    progress: Callable[[str, int, int], None] | None = None,
    jobs: int = 1,
    **sim_kwargs: Any,
) -> dict[str, Any]:
    """Run every agent on every seed's world; JSON-ready summary with 95% t-intervals over seeds.

    ``factories[name](seed)`` builds a fresh agent. ``progress(name, seed, n)``
    reports ``n`` more agent steps. ``jobs > 1`` runs seeds in that many forked
    processes (same figures as ``jobs=1``). Ratios ``a/b`` are paired by seed (same world,
    same warm-up log, same arrival sequence) before averaging.
    """
    per: dict[str, dict[str, list]] = {
        n: {"ctr": [], "expected_ctr": [], "before": [], "after": [], "rec": [], "rec_ok": [], "rec_frac": [],
            "rec_clicks": [], "first_click": [], "curve": [], "agent_s": [], "sim_sps": []}
        for n in factories
    }
    job = _SeedJob(catalog_vectors, item_ids, factories, steps, warmup, curve_bins, recovery_window, sim_kwargs)
    for seed, name, row in _run_seeds(job, list(seeds), jobs, progress):
        d = per[name]
        for key, value in row.items():
            d[key].append(value)
    return _summarise(per, factories, seeds, steps, warmup, curve_bins, recovery_window, ratios,
                      catalog_vectors, item_ids, sim_kwargs)


@dataclass
class _SeedJob:
    """Everything one seed's run needs (inherited by forked worker processes)."""

    vectors: np.ndarray
    item_ids: Sequence[str]
    factories: Mapping[str, Callable[[int], Agent]]
    steps: int
    warmup: int
    curve_bins: int
    recovery_window: int
    sim_kwargs: dict[str, Any]

    def run(self, seed: int, progress: Callable[[str, int, int], None] | None) -> list[tuple[str, dict[str, Any]]]:
        sim = Simulator(self.vectors, self.item_ids, seed=seed, **self.sim_kwargs)
        out = []
        for name, make in self.factories.items():
            agent = make(seed)
            cb = (lambda n, _name=name: progress(_name, seed, n)) if progress else None
            res = sim.run(agent, self.steps, warmup=self.warmup, progress=cb)
            close = getattr(agent, "close", None)
            if callable(close):
                close()
            cut = res.drift_at if res.drift_at is not None else res.steps
            rec = res.recovery(window=self.recovery_window)
            out.append((name, {
                "ctr": res.ctr, "expected_ctr": res.expected_ctr, "before": res.ctr_between(0, cut),
                "after": res.ctr_between(cut) if res.drift_at is not None else float("nan"),
                "rec": rec["recovery_events"], "rec_ok": rec["recovery_events_recovered"],
                "rec_frac": rec["recovered_frac"], "rec_clicks": rec["recovery_clicks"],
                "first_click": rec["first_click_slates"], "curve": res.ctr_curve(self.curve_bins),
                "agent_s": res.agent_seconds, "sim_sps": res.sim_steps_per_second,
            }))
        return out


_JOB: _SeedJob | None = None  # set in the parent before forking workers
_QUEUE: Any = None


def _worker(seed: int) -> list[tuple[str, dict[str, Any]]]:
    assert _JOB is not None
    q = _QUEUE
    return _JOB.run(seed, (lambda name, s, n: q.put((name, s, n))) if q is not None else None)


def _run_seeds(
    job: _SeedJob, seeds: list[int], jobs: int, progress: Callable[[str, int, int], None] | None
) -> list[tuple[int, str, dict[str, Any]]]:
    """Run every seed (in ``jobs`` forked processes when > 1); rows in seed order."""
    global _JOB, _QUEUE
    if jobs <= 1 or len(seeds) <= 1:
        return [(seed, name, row) for seed in seeds for name, row in job.run(seed, progress)]
    import multiprocessing as mp
    import threading
    from concurrent.futures import ProcessPoolExecutor

    # Fork, not spawn: agents are built by closures (factories), which cannot be pickled;
    # forked workers inherit them. Seeds are independent worlds, so results do not
    # depend on how they are spread over processes.
    ctx = mp.get_context("fork")
    _JOB, _QUEUE = job, (ctx.Queue() if progress is not None else None)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set() or (_QUEUE is not None and not _QUEUE.empty()):
            try:
                name, s, n = _QUEUE.get(timeout=0.2)
            except Exception:  # queue.Empty
                continue
            progress(name, s, n)  # type: ignore[misc]

    t = threading.Thread(target=drain, daemon=True) if progress is not None else None
    if t is not None:
        t.start()
    try:
        with ProcessPoolExecutor(max_workers=min(jobs, len(seeds)), mp_context=ctx) as pool:
            results = list(pool.map(_worker, seeds))
    finally:
        stop.set()
        if t is not None:
            t.join()
        _JOB, _QUEUE = None, None
    return [(seed, name, row) for seed, rows in zip(seeds, results) for name, row in rows]


def _summarise(
    per: dict[str, dict[str, list]], factories: Mapping[str, Any], seeds: Sequence[int], steps: int, warmup: int,
    curve_bins: int, recovery_window: int, ratios: Sequence[tuple[str, str]], catalog_vectors: np.ndarray,
    item_ids: Sequence[str], sim_kwargs: dict[str, Any],
) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    for name, d in per.items():
        m, lo, hi = t_interval(d["ctr"])
        rm, rlo, rhi = t_interval(d["rec"])
        cm, clo, chi = t_interval(d["rec_clicks"])
        policies[name] = {
            "ctr": m,
            "ctr_ci95": [lo, hi],
            "ctr_per_seed": d["ctr"],
            "expected_ctr": t_interval(d["expected_ctr"])[0],
            "ctr_before_drift": t_interval(d["before"])[0],
            "ctr_after_drift": t_interval(d["after"])[0],
            "recovery_events": rm,
            "recovery_events_ci95": [rlo, rhi],
            "recovery_events_recovered": t_interval(d["rec_ok"])[0],
            "recovered_frac": t_interval(d["rec_frac"])[0],
            "recovery_clicks": cm,
            "recovery_clicks_ci95": [clo, chi],
            "first_click_slates": t_interval(d["first_click"])[0],
            "curve": [float(x) for x in np.nanmean(np.asarray(d["curve"], dtype=np.float64), axis=0)],
            "agent_seconds_per_seed": t_interval(d["agent_s"])[0],
            "agent_ms_per_step": 1000 * t_interval(d["agent_s"])[0] / max(steps, 1),
        }
    out_ratios: dict[str, Any] = {}
    for num, den in ratios:
        if num in per and den in per:
            r = [x / y if y > 0 else float("nan") for x, y in zip(per[num]["ctr"], per[den]["ctr"])]
            m, lo, hi = t_interval(r)
            out_ratios[f"{num}/{den}"] = {"ratio": m, "ci95": [lo, hi], "per_seed": r}
    sim_sps = [v for d in per.values() for v in d["sim_sps"] if math.isfinite(v)]
    return {
        "policies": _json_safe(policies),
        "ratios": _json_safe(out_ratios),
        "simulator_steps_per_second": float(np.median(sim_sps)) if sim_sps else None,
        "settings": _json_safe({
            "seeds": list(seeds), "steps": steps, "warmup": warmup, "agents": list(factories),
            "recovery_window": recovery_window, "curve_bins": curve_bins,
            "simulator": Simulator(catalog_vectors, item_ids, seed=0, **sim_kwargs).params() | {"seed": None},
        }),
    }


def _json_safe(x: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python: strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x
