"""Baseline hyperparameters picked on a validation split carved from the training part only.

A baseline compared with untuned defaults flatters whatever it is compared with, so
every baseline with a grid (:data:`GRIDS`) tunes itself: :class:`TunedModel` receives
exactly what the protocol would fit it on (static/cold: the train part; stream: the
warm-up), carves a validation split out of *that* the same way the protocol carves
its test, scores every grid point, and fits the best one on the whole training part.
The test part is never passed in, so it cannot leak into the choice.

- static: each training user's last 20% by time held out (full ranking, the user's
  other training items excluded); score NDCG@k.
- stream: the warm-up's last 20% of events in time order replayed prequentially
  (learning from each revealed event unless the model is frozen); score HR@k.
- cold: 10% of the warm items with >= 5 interactions hidden as pseudo-new items,
  ranked for the users who interacted with them; score NDCG@k.

Grid points that differ only in hyperparameters that change scoring, not the learned
state, can share one validation pass (``TunedModel(shared=..., state_keys=...)``). A
learner declares it (:class:`SharesGrid`): its ``scoring_params`` and a
``grid_state(points)`` returning one state and a view of it per point. ItemKNN's
``k_neighbours`` (how many of the co-occurrence counts each history item reads) and
``shrink`` (how the counts become similarities) leave the counts alone, so its
12-point grid is fitted and replayed once and every point is scored at every event;
the scores are those of separate passes.
Shorter stream replays are not used: on ml-latest-small the first 2,500 or 4,000
validation events pick other points than 5,000 for BPR and ALS.

Examples
--------
>>> grid_for("ease", {})[:2]
[{'l2': 50.0}, {'l2': 100.0}]
>>> grid_for("ease", {"l2": 300.0})   # fixed by the caller: nothing to tune
[]
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Collection, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import ValidationError
from ..types import Event
from .adapters import EvalModel
from .harness import close_model, prequential, prequential_many, rank_users, ranking_metrics
from .splits import check_no_overlap, cold_item_split, stream_split, temporal_user_split

#: Grid per baseline (by model name). Baselines without an entry (pop, tfidf, bow) have
#: nothing to tune.
GRIDS: dict[str, list[dict[str, Any]]] = {
    "ease": [{"l2": float(lam)} for lam in (50, 100, 200, 500, 1000, 2000)],
    "als": [
        {"factors": f, "regularization": r, "alpha": a}
        for f in (32, 64, 128) for r in (0.01, 0.1) for a in (2.0, 10.0, 40.0)
    ],
    "bpr": [{"factors": f, "learning_rate": lr} for f in (32, 64, 128) for lr in (0.01, 0.05)],
    "itemknn": [{"k_neighbours": n, "shrink": s} for n in (20, 50, 100, 400) for s in (0.0, 10.0, 100.0)],
    "userknn": [{"k_neighbours": n} for n in (20, 50, 100, 400)],
    "sknn": [{"window": w, "history": h} for w in (1, 3, 10) for h in (1, 3, 10)],
}

#: Keys searched last, per baseline: the grid's other keys are scored at the first value
#: of these, then these at the best point found (a coordinate search, not every point).
#: ALS's validation cost grows with its factors (one point, fit and 5,000-event replay
#: on ml-latest-small, shared cores: 15 s at 32 factors, 17.5 s at 64, 35 s at 128), so
#: regularization x alpha is searched at 32 factors and 64 and 128 are tried at the
#: best pair: 8 of the 18 points, about a third of the cost.
SEARCHED_LAST: dict[str, tuple[str, ...]] = {"als": ("factors",)}

VALIDATION_FRAC = 0.2  # static: per user; stream: of the warm-up
COLD_ITEM_FRAC = 0.1
MAX_STREAM = 5_000  # validation events replayed per grid point (stream): HR@10 to about ±0.004, 4x faster than 20k


@runtime_checkable
class SharesGrid(Protocol):
    """A learner class whose grid points differing only in ``scoring_params`` share one state.

    ``grid_state(points)`` (full parameters of points equal on every other key) builds
    the learner that is fitted and taught once and a view of it per point: each view
    scores as a learner built with its point's parameters would, and fits and learns
    nothing itself. Checked on the class: ``isinstance(StreamItemKNN, SharesGrid)``.
    """

    scoring_params: ClassVar[tuple[str, ...]]

    def grid_state(self, points: Sequence[dict[str, Any]]) -> tuple[Any, list[Any]]: ...


def state_keys(learner: SharesGrid, grid: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """The keys of ``grid`` that change ``learner``'s state: points equal on them share a pass.

    >>> from liverec.evaluation.itemknn import StreamItemKNN
    >>> state_keys(StreamItemKNN, grid_for("itemknn", {}))
    ()
    """
    return tuple(sorted({key for p in grid for key in p} - set(learner.scoring_params)))


def grid_for(name: str, fixed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The grid of baseline ``name`` without the keys the caller ``fixed``; [] if nothing is left.

    Examples
    --------
    >>> len(grid_for("itemknn", {"shrink": 0.0})), grid_for("pop", {})
    (4, [])
    """
    out: list[dict[str, Any]] = []
    for point in GRIDS.get(name, []):
        free = {key: v for key, v in point.items() if key not in fixed}
        if free and free not in out:
            out.append(free)
    return out if len(out) > 1 else []


@dataclass(frozen=True)
class Validation:
    """A validation split of a training part: fit on ``fit``, score on ``held_out``.

    ``targets`` (static, cold): user -> relevant held-out items; ``exclude`` (static):
    user -> items they already have; ``candidates`` (cold): the pseudo-new items.
    """

    protocol: str
    fit: tuple[Event, ...]
    held_out: tuple[Event, ...]
    targets: dict[str, set[str]] = field(default_factory=dict)
    exclude: dict[str, set[str]] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()

    @property
    def metric(self) -> str:
        return "hr" if self.protocol == "stream" else "ndcg"

    def describe(self) -> dict[str, Any]:
        how = {
            "static": f"each training user's last {VALIDATION_FRAC:.0%} of events by time",
            "stream": f"the warm-up's last {VALIDATION_FRAC:.0%} of events in time order, replayed",
            "cold": f"{COLD_ITEM_FRAC:.0%} of the warm items with >= 5 events hidden as new items",
        }[self.protocol]
        return {"split": how, "fit_events": len(self.fit), "held_out_events": len(self.held_out)}


def validation_split(
    protocol: str, train: Sequence[Event], *, seed: int = 0, max_stream: int | None = MAX_STREAM
) -> Validation:
    """Carve the validation split of ``protocol`` out of ``train`` (only ``train`` is read).

    Examples
    --------
    >>> from liverec import Event
    >>> evs = [Event(user="u", item=f"i{t}", timestamp=float(t), id=f"e{t}") for t in range(10)]
    >>> v = validation_split("stream", evs)
    >>> [e.id for e in v.held_out]
    ['e8', 'e9']
    >>> {u: sorted(items) for u, items in validation_split("static", evs).targets.items()}
    {'u': ['i8', 'i9']}
    """
    if protocol == "static":
        s = temporal_user_split(train, test_frac=VALIDATION_FRAC)
        return Validation(protocol, s.train, s.test, targets=s.test_by_user, exclude=s.train_by_user)
    if protocol == "stream":
        ss = stream_split(train, warmup_frac=1.0 - VALIDATION_FRAC)
        held = ss.stream if max_stream is None else ss.stream[:max_stream]
        return Validation(protocol, ss.warmup, held)
    if protocol == "cold":
        c = cold_item_split(train, item_frac=COLD_ITEM_FRAC, seed=seed)
        return Validation(protocol, c.train, c.test, targets=c.test_by_user, candidates=tuple(sorted(c.cold_items)))
    raise ValidationError(f"unknown protocol {protocol!r}; use static, stream or cold.", field="protocol")


def validation_score(model: EvalModel, val: Validation, k: int, *, learn: bool = True) -> float:
    """``model`` (already fitted on ``val.fit``) scored on the held-out part: NDCG@k or HR@k."""
    if val.protocol == "stream":
        hits = prequential(model, val.fit, val.held_out, k, learn=learn)
        return float(np.mean(hits)) if hits else float("nan")
    users = [u for u, rel in val.targets.items() if rel]
    if val.protocol == "cold":
        lists = rank_users(model, users, k, candidates=list(val.candidates))
    else:
        lists = rank_users(model, users, k, exclude=val.exclude)
    return ranking_metrics(lists, val.targets, k)[f"ndcg@{k}"]


def shared_validation_scores(
    state: EvalModel, views: Sequence[EvalModel], val: Validation, k: int, *, learn: bool = True
) -> list[float]:
    """:func:`validation_score` of each of ``views``, models sharing ``state`` (already fitted).

    In a stream each event is predicted by every view and revealed once, to ``state``.
    """
    if val.protocol != "stream":
        return [validation_score(v, val, k, learn=learn) for v in views]
    hits = prequential_many(views, state, val.fit, val.held_out, k, learn=learn)
    return [float(np.mean(h)) if h else float("nan") for h in hits]


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score (the first one on ties; NaN never wins unless all are NaN).

    Examples
    --------
    >>> best_index([0.1, float("nan"), 0.3, 0.3])
    2
    """
    keyed = [(-math.inf if not math.isfinite(s) else s) for s in scores]
    return int(np.argmax(keyed)) if keyed else 0


class TunedModel:
    """A baseline that picks its hyperparameters on validation data carved from what ``fit`` gets.

    ``make(point)`` builds the model with one grid point's hyperparameters. ``fit``
    scores every point of ``grid`` on :func:`validation_split` of its input, then fits
    the best one on the whole input; ``tuning`` records the grid, every score, the
    choice and the seconds it took. Everything else is delegated to the chosen model.
    With ``last`` keys the grid is searched in two stages (:data:`SEARCHED_LAST`):
    unscored points have score None in ``tuning``.

    Examples
    --------
    >>> from liverec import Event
    >>> class Const:
    ...     def __init__(self, best): self.name, self.best = "c", best
    ...     def fit(self, train): pass
    ...     def learn_one(self, e): pass
    ...     def recommend(self, user, k, *, exclude=(), candidates=None):
    ...         return ["i9"] if self.best else ["i0"]
    >>> evs = [Event(user="u", item=f"i{t}", timestamp=float(t), id=f"e{t}") for t in range(10)]
    >>> m = TunedModel("c", lambda p: Const(**p), [{"best": False}, {"best": True}], "stream", k=1)
    >>> m.fit(evs); m.tuning["chosen"], m.tuning["scores"]
    ({'best': True}, [0.0, 0.5])
    """

    def __init__(
        self,
        name: str,
        make: Callable[[Mapping[str, Any]], EvalModel],
        grid: Sequence[Mapping[str, Any]],
        protocol: str,
        *,
        k: int = 10,
        learn: bool = True,
        seed: int = 0,
        max_stream: int | None = MAX_STREAM,
        shared: Callable[[Sequence[Mapping[str, Any]]], tuple[EvalModel, Sequence[EvalModel]]] | None = None,
        state_keys: Sequence[str] = (),
        last: Sequence[str] = (),
    ) -> None:
        if not grid:
            raise ValueError("TunedModel needs a grid with at least one point.")
        self.name = name
        self.make = make
        self.grid = [dict(p) for p in grid]
        self.protocol = protocol
        self.k = k
        self.learn = learn
        self.seed = seed
        self.max_stream = max_stream
        self.shared = shared
        self.state_keys = tuple(state_keys)
        self.last = tuple(last)
        self.model: EvalModel | None = None
        self.tuning: dict[str, Any] | None = None

    def fit(self, train: Sequence[Event]) -> None:
        t = time.perf_counter()
        val = validation_split(self.protocol, train, seed=self.seed, max_stream=self.max_stream)
        check_no_overlap(val.fit, val.held_out)
        scores = [math.nan] * len(self.grid)
        first = self.grid[0]
        # With ``last`` keys: every point at the first point's values of those keys, then
        # the points equal to the best so far on every other key.
        stage = [i for i, p in enumerate(self.grid) if all(p.get(key) == first.get(key) for key in self.last)]
        passes = self._score(stage, val, scores)
        if self.last:
            best = self.grid[best_index(scores)]
            rest = [i for i, p in enumerate(self.grid) if not math.isfinite(scores[i]) and i not in stage
                    and all(p.get(key) == best.get(key) for key in p if key not in self.last)]
            passes += self._score(rest, val, scores)
        best = self.grid[best_index(scores)]
        self.tuning = {
            "grid": self.grid,
            "scores": [round(s, 6) if math.isfinite(s) else None for s in scores],
            "chosen": best,
            "metric": f"{val.metric}@{self.k}",
            "validation": val.describe(),
            "search": self._search(),
            "points_scored": sum(math.isfinite(s) for s in scores),
            "validation_passes": passes,
            "seconds": round(time.perf_counter() - t, 2),
        }
        self.model = self.make(best)
        self.model.fit(train)

    def _score(self, todo: Sequence[int], val: Validation, scores: list[float]) -> int:
        """Validation scores of grid points ``todo`` into ``scores``; the passes it took."""
        passes = self._passes(todo)
        for group in passes:
            state, views = self._views([self.grid[i] for i in group])
            state.fit(val.fit)
            for i, s in zip(group, shared_validation_scores(state, views, val, self.k, learn=self.learn)):
                scores[i] = s
            close_model(state)
        return len(passes)

    def _search(self) -> str:
        if not self.last or not any(key in p for p in self.grid for key in self.last):
            return "every point"
        others = ", ".join(k for k in self.grid[0] if k not in self.last)
        at = ", ".join(f"{key} {self.grid[0].get(key)}" for key in self.last)
        return f"{others} at {at}, then {', '.join(self.last)} at the best of those"

    def _views(self, points: Sequence[Mapping[str, Any]]) -> tuple[EvalModel, Sequence[EvalModel]]:
        """The model fitted for one pass over ``points`` and a view of it per point."""
        if self.shared is not None:
            return self.shared(points)
        model = self.make(points[0])  # no sharing: a pass per point, the model its own view
        return model, [model]

    def _passes(self, todo: Sequence[int]) -> list[list[int]]:
        """Grid indices of ``todo`` scored in one validation pass: one each, or with ``shared``
        those equal on ``state_keys`` (the hyperparameters that change the model's state)."""
        if self.shared is None:
            return [[i] for i in todo]
        groups: dict[tuple, list[int]] = {}
        for i in todo:
            point = self.grid[i]
            groups.setdefault(tuple(repr(point.get(key)) for key in self.state_keys), []).append(i)
        return list(groups.values())

    def _fitted(self) -> EvalModel:
        if self.model is None:
            raise RuntimeError(f"{self.name}: call fit(train) before learn_one or recommend.")
        return self.model

    def learn_one(self, event: Event) -> None:
        self._fitted().learn_one(event)

    def recommend(
        self, user: str, k: int, *, exclude: Collection[str] = (), candidates: Sequence[str] | None = None
    ) -> list[str]:
        return self._fitted().recommend(user, k, exclude=exclude, candidates=candidates)

    def close(self) -> None:
        if self.model is not None:
            close_model(self.model)
