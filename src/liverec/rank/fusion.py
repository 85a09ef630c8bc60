"""Fusion weights learned from logged feedback.

A prequential replay, so no source is scored on data it has already learned from:
fresh learners are fitted on the log before a cut-off; then, for each later positive
event in time order, the item the user actually chose and ``negatives`` items they
did not are scored by every source (min-max normalised over that candidate set, as
at serving time), and only then is the event revealed to the learners. A logistic
regression on those per-source features (scikit-learn) gives the weights: negative
coefficients are clipped to 0 and the largest weight is scaled to 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..encode.catalog import Catalog
from ..models.base import FeedbackConfig, InteractionLog, Learner, UserState
from ..types import Event
from .ranker import minmax


@dataclass(frozen=True)
class FusionFit:
    """Learned weights and how they were obtained."""

    weights: dict[str, float]
    coefficients: dict[str, float]
    n_events: int
    auc: float  # held-out pairwise accuracy of the fused score (positive vs negatives)


def learn_fusion_weights(
    learners: Mapping[str, Learner],
    events: Sequence[Event],
    catalog: Catalog,
    feedback: FeedbackConfig,
    *,
    holdout: int = 2000,
    negatives: int = 50,
    seed: int = 0,
    history_length: int = 50,
) -> FusionFit:
    """Fit fusion weights for ``learners`` (unfitted; they are fitted here on a prefix).

    Sources that do not learn from events (``learns_from_events`` False: declared
    interests) get no weight here, so they keep their configured one: a log holds no
    evidence about them.

    Examples
    --------
    >>> fit = learn_fusion_weights(engine.lifecycle.new_learners(), events, engine.catalog, engine.feedback)  # doctest: +SKIP
    >>> fit.weights                                                                               # doctest: +SKIP
    {'content': 0.31, 'als': 1.0}
    """
    from sklearn.linear_model import LogisticRegression

    events = sorted(events, key=lambda e: e.timestamp)
    if len(events) < 20:
        raise ValueError("need at least 20 events to learn fusion weights")
    holdout = min(holdout, len(events) // 2)
    prefix, tail = events[: len(events) - holdout], events[len(events) - holdout :]
    log = InteractionLog.from_events(prefix, catalog)
    fitted = {name: m.fit(log) for name, m in learners.items() if m.learns_from_events}
    names = list(fitted)
    rng = np.random.default_rng(seed)
    alive = catalog.alive_idx()
    seen: dict[str, set[int]] = {}
    recent: dict[str, deque[Event]] = {}  # each user's recent events, as a request's state holds them
    for e in prefix:
        i = catalog.get_idx(e.item)
        if i is not None:
            seen.setdefault(e.user, set()).add(i)
        recent.setdefault(e.user, deque(maxlen=history_length)).append(e)
    X, y, groups = [], [], []
    for n, e in enumerate(tail):
        pos = catalog.get_idx(e.item)
        if pos is not None and feedback.weight(e.kind, e.value) > 0 and pos not in seen.get(e.user, set()):
            neg = rng.choice(alive, size=min(negatives, len(alive)), replace=False)
            neg = neg[(neg != pos) & ~np.isin(neg, list(seen.get(e.user, ())))]
            cand = catalog.from_idx(np.concatenate([[pos], neg]))
            state = UserState(e.user, tuple(recent.get(e.user, ())))
            feats = np.stack([minmax(np.asarray(fitted[s].score(state, cand), dtype=np.float64)) for s in names], 1)
            X.append(feats)
            y.append(np.r_[1.0, np.zeros(len(neg))])
            groups.append(np.full(len(cand), n))
        for m in fitted.values():
            m.learn_one(e)
        if pos is not None:
            seen.setdefault(e.user, set()).add(pos)
        recent.setdefault(e.user, deque(maxlen=history_length)).append(e)
    if not X:
        raise ValueError("no positive events after the cut-off: cannot learn fusion weights")
    Xa, ya, ga = np.concatenate(X), np.concatenate(y), np.concatenate(groups)
    # Even/odd events: fit on one half, report pairwise accuracy on the other.
    train = ga % 2 == 0
    clf = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=seed)
    clf.fit(Xa[train], ya[train])
    coef = clf.coef_[0]
    w = np.clip(coef, 0.0, None)
    w = w / w.max() if w.max() > 0 else np.ones_like(w)
    fused = Xa @ w
    wins = []
    for g in np.unique(ga[~train]):
        m = ga == g
        f, lab = fused[m], ya[m]
        wins.append(float(np.mean(f[lab == 1][0] > f[lab == 0])) if (lab == 0).any() else 1.0)
    full = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000, random_state=seed).fit(Xa, ya)
    w = np.clip(full.coef_[0], 0.0, None)
    w = w / w.max() if w.max() > 0 else np.ones_like(w)
    return FusionFit(
        weights={s: round(float(v), 4) for s, v in zip(names, w)},
        coefficients={s: float(c) for s, c in zip(names, full.coef_[0])},
        n_events=len(X),
        auc=float(np.mean(wins)) if wins else float("nan"),
    )


class OnlineFusion:
    """Fusion weights that learn from every served slate's clicks, one event at a time.

    ``learn_fusion_weights`` is the batch answer (a replay of the whole log); this is
    the per-event one: the engine remembers each user's last slate with every item's
    per-source normalised score ``x``, and when the user acts positively on the item
    at slot ``j`` it takes the items *shown above it and not chosen*, plus the one
    right below (Joachims' skip-above / skip-next pairs: what a click says about the
    ranking without trusting the top slot's position bias) and makes a pairwise
    logistic step ``w += lr * sigmoid(-w·d) * d`` with ``d = x_clicked - x_other``.
    Weights stay ``>= floor * initial`` (a source that loses now can come back) and
    their sum stays the initial sum (scale does not change a ranking; a fixed scale
    keeps contributions in explanations comparable over time). Written here rather
    than with a library: it is a few lines, and River's/VW's pairwise learners would
    not keep the non-negative, fixed-sum weights fusion needs.

    Examples
    --------
    >>> f = OnlineFusion({"content": 1.0, "als": 1.0}, lr=0.5)
    >>> f.update({"content": 1.0, "als": 0.0}, [{"content": 0.0, "als": 1.0}])
    1
    >>> w = f.weights; w["content"] > w["als"], round(sum(w.values()), 6)
    (True, 2.0)
    """

    def __init__(self, initial: Mapping[str, float], *, lr: float = 0.05, floor: float = 0.1) -> None:
        if lr < 0 or not 0 <= floor <= 1:
            raise ValueError(f"lr must be >= 0 and floor in [0, 1], got lr={lr}, floor={floor}")
        self.initial = {k: float(v) for k, v in initial.items()}
        self.lr, self.floor = float(lr), float(floor)
        self._w = dict(self.initial)
        self.n_updates = 0

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def state(self) -> dict[str, object]:
        """What to save to resume later: ``OnlineFusion(initial).restore(state)``."""
        return {"initial": dict(self.initial), "weights": self.weights, "n_updates": self.n_updates}

    def restore(self, state: Mapping[str, object]) -> bool:
        """Resume from :meth:`state` if it was learned from the same initial weights (else keep a fresh start)."""
        if state.get("initial") != self.initial:
            return False
        weights = state.get("weights")
        assert isinstance(weights, Mapping)
        self._w.update({n: float(v) for n, v in weights.items() if n in self.initial})
        self.n_updates = int(state.get("n_updates", 0))  # type: ignore[call-overload]
        return True

    def update(self, clicked: Mapping[str, float], others: Sequence[Mapping[str, float]]) -> int:
        """One pairwise step per item in ``others`` (not chosen) against ``clicked``; returns the pairs used.

        Only sources present in ``clicked`` and in ``self.weights`` move (a source
        switched off for a request has no score to learn from).
        """
        names = [n for n in clicked if n in self._w]
        if not names or not others or self.lr == 0:
            return 0
        w = np.array([self._w[n] for n in names])
        total = float(w.sum())
        lo = np.array([self.floor * self.initial[n] for n in names])
        xc = np.array([clicked[n] for n in names], dtype=np.float64)
        for o in others:
            d = xc - np.array([o.get(n, 0.0) for n in names], dtype=np.float64)
            w = w + self.lr / (1.0 + np.exp(float(w @ d))) * d  # sigmoid(-w·d) * d
            w = np.maximum(w, lo)
            if w.sum() > 0:
                w *= total / w.sum()
        self._w.update(zip(names, (float(v) for v in w)))
        self.n_updates += len(others)
        return len(others)
