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
) -> FusionFit:
    """Fit fusion weights for ``learners`` (unfitted; they are fitted here on a prefix).

    Examples
    --------
    >>> fit = learn_fusion_weights(engine._new_learners(), events, engine.catalog, engine.feedback)  # doctest: +SKIP
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
    fitted = {name: m.fit(log) for name, m in learners.items()}
    names = list(fitted)
    rng = np.random.default_rng(seed)
    alive = catalog.alive_idx()
    seen: dict[str, set[int]] = {}
    for e in prefix:
        i = catalog.get_idx(e.item)
        if i is not None:
            seen.setdefault(e.user, set()).add(i)
    X, y, groups = [], [], []
    for n, e in enumerate(tail):
        pos = catalog.get_idx(e.item)
        if pos is not None and feedback.weight(e.kind, e.value) > 0 and pos not in seen.get(e.user, set()):
            neg = rng.choice(alive, size=min(negatives, len(alive)), replace=False)
            neg = neg[(neg != pos) & ~np.isin(neg, list(seen.get(e.user, ())))]
            cand = catalog.from_idx(np.concatenate([[pos], neg]))
            state = UserState(e.user)
            feats = np.stack([minmax(np.asarray(fitted[s].score(state, cand), dtype=np.float64)) for s in names], 1)
            X.append(feats)
            y.append(np.r_[1.0, np.zeros(len(neg))])
            groups.append(np.full(len(cand), n))
        for m in fitted.values():
            m.learn_one(e)
        if pos is not None:
            seen.setdefault(e.user, set()).add(pos)
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
