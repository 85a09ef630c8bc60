"""What the harness evaluates: liverec engines and single learners behind one small interface.

A model under evaluation is fitted on history, optionally sees each revealed event
(``learn_one``), and recommends ``k`` item ids for a user, excluding given items or
restricted to candidates. ``LearnerModel`` wraps any registered learner (the
baselines Pop, ItemKNN, EASE, ALS, BPR, UserKNN are learners too) or one of the
evaluation baselines of :mod:`.baselines` (``sknn``, ``tfidf``, ``bow``, and
``itemknn``/``ease``: the engine's learners with scoring made cheaper for a replay;
their names take precedence, so ``tfidf`` here is the reference mean-tf-idf profile,
not the engine's ``tfidf`` source); ``EngineModel`` wraps a whole in-memory
:class:`~liverec.Engine`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence

import numpy as np

from ..encode.catalog import Catalog
from ..engine import Engine
from ..errors import ValidationError
from ..models.base import REGISTRY, InteractionLog, Learner
from ..rank.index import top_k
from ..settings import Settings
from ..state import OnlineState
from ..types import Event
from .baselines import EVAL_BASELINES


class EvalModel(Protocol):
    name: str

    def fit(self, train: Sequence[Event]) -> None: ...

    def learn_one(self, event: Event) -> None: ...

    def recommend(
        self, user: str, k: int, *, exclude: Collection[str] = (), candidates: Sequence[str] | None = None
    ) -> list[str]: ...


class LearnerModel:
    """One learner ranking the whole catalog (or candidates) by its raw score."""

    def __init__(self, name: str, learner: Learner, catalog: Catalog, history_length: int = 50) -> None:
        self.name = name
        self.learner = learner
        self.catalog = catalog
        #: Each user's recent events, held as the engine holds them for a request.
        self.users = OnlineState(history_length)
        self._all = catalog.from_idx(catalog.alive_idx())

    def fit(self, train: Sequence[Event]) -> None:
        self.learner.fit(InteractionLog.from_events(train, self.catalog))
        self.users = self.users.fresh()
        for e in train:
            self._remember(e)

    def learn_one(self, event: Event) -> None:
        self.learner.learn_one(event)
        self._remember(event)

    def _remember(self, event: Event) -> None:
        self.users.apply(event, self.catalog.get_idx(event.item))

    def recommend(
        self, user: str, k: int, *, exclude: Collection[str] = (), candidates: Sequence[str] | None = None
    ) -> list[str]:
        items = self.catalog.select(candidates) if candidates is not None else self._all
        state = self.users.state(user)
        scores = np.asarray(self.learner.score(state, items), dtype=np.float64).copy()
        if exclude:
            hide = np.zeros(len(self.catalog), dtype=bool)
            hide[self.catalog.live_indices(exclude)] = True
            scores[hide[items.idx]] = -np.inf
        order = top_k(scores, k)
        order = order[np.isfinite(scores[order])]
        ids = items.ids
        return [ids[i] for i in order]


class EngineModel:
    """A full liverec engine (in-memory store) with the given settings.

    With ``tune`` the engine fits with ``fit(tune=True)`` (its own validation-based
    tuning) when its ``fit`` accepts that keyword, else with ``fit()``; ``tuning``
    records which call was made.
    """

    def __init__(
        self, name: str, settings: Settings, encoder: Any, items: Sequence[Any], *, tune: bool = True
    ) -> None:
        self.name = name
        self.tune = tune
        self.tuning: dict[str, Any] | None = None
        self.engine = Engine.open("sqlite://", settings=settings, encoder=encoder)
        self.engine.add_items(items)

    def fit(self, train: Sequence[Event]) -> None:
        for i in range(0, len(train), 20_000):
            self.engine.record_many(train[i : i + 20_000], learn=False)
        supported = "tune" in inspect.signature(self.engine.fit).parameters
        if self.tune and supported:
            self.engine.fit(tune=True)
        else:
            self.engine.fit()
        self.tuning = {
            "engine_fit": "fit(tune=True)" if self.tune and supported else "fit()",
            "tune_requested": self.tune,
            "tune_supported": supported,
        }
        tuned = getattr(self.engine, "tuned", None)
        if tuned is not None:  # what the engine chose, with its validation score
            self.tuning["configuration"] = tuned.summary()

    def learn_one(self, event: Event) -> None:
        self.engine.record(event)

    def recommend(
        self, user: str, k: int, *, exclude: Collection[str] = (), candidates: Sequence[str] | None = None
    ) -> list[str]:
        # The engine excludes what it has seen itself; ``exclude`` adds what the
        # protocol revealed without teaching it (a frozen model must not waste slots).
        recs = self.engine.recommend(
            user, k=k, candidates=candidates, exclude_seen=candidates is None,
            exclude=list(exclude) if exclude and candidates is None else None, explain=False, log=False,
        )
        return [r.item for r in recs]

    def close(self) -> None:
        self.engine.close()


@dataclass(frozen=True)
class ModelSpec:
    """A named model: ``liverec`` (engine), a learner name, or ``liverec:src=w,...``."""

    name: str
    kind: str  # "engine" | "learner"
    learner: str | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


#: Baselines are compared with every event counted as an interaction ("all ratings"),
#: and ItemKNN scores from the user's whole history (the engine's source reads only
#: the latest 200 items for latency), as in the reference definitions.
BASELINE_PARAMS: dict[str, dict[str, Any]] = {
    "pop": {"all_events": True},
    "itemknn": {"all_events": True, "max_history": None},
    "userknn": {"all_events": True},
    "ease": {"all_events": True},
    "als": {"all_events": True},
    "bpr": {"all_events": True},
    "tfidf": {"all_events": True},
    "bow": {"all_events": True},
    "sknn": {"all_events": True},
}


def parse_model(spec: str) -> ModelSpec:
    """``liverec``, ``liverec:content=1,trending=0.2``, or a learner name like ``ease``.

    Examples
    --------
    >>> parse_model("liverec:content=1,trending=0").weights
    {'content': 1.0, 'trending': 0.0}
    >>> parse_model("ease").kind
    'learner'
    """
    name, _, rest = spec.partition(":")
    if name == "liverec":
        weights = {}
        for part in filter(None, rest.split(",")):
            src, _, w = part.partition("=")
            try:
                weights[src.strip()] = float(w)
            except ValueError:
                raise ValidationError(
                    f"bad weight {part!r} in model {spec!r}: write liverec:source=weight,... "
                    "(e.g. liverec:content=1,trending=0.1).",
                    field="models",
                ) from None
        return ModelSpec(spec, "engine", weights=weights)
    if name not in REGISTRY and name not in EVAL_BASELINES:
        raise ValidationError(
            f"unknown model {spec!r}: use 'liverec', 'liverec:source=weight,...' or one of "
            f"{sorted(set(REGISTRY) | set(EVAL_BASELINES))}.",
            field="models",
        )
    params = dict(BASELINE_PARAMS.get(name, {}))
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        params[key.strip()] = _literal(value)
    return ModelSpec(spec, "learner", learner=name, params=params)


def split_models(text: str) -> list[str]:
    """Split a comma-separated model list; ``key=value`` parts belong to the model before them.

    Examples
    --------
    >>> split_models("liverec:content=1,als=0.5,pop,ease:l2=200")
    ['liverec:content=1,als=0.5', 'pop', 'ease:l2=200']
    """
    out: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" in part and ":" not in part and out:
            out[-1] += "," + part
        else:
            out.append(part)
    return out


def _literal(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def learner_class(name: str) -> type[Learner]:
    """The class :func:`make_learner` builds for ``name`` (an evaluation baseline first).

    >>> learner_class("itemknn").__name__
    'StreamItemKNN'
    """
    return EVAL_BASELINES[name][0] if name in EVAL_BASELINES else REGISTRY[name]


def make_learner(name: str, params: Mapping[str, Any]) -> Learner:
    """The learner ``name`` (an evaluation baseline first, else a registered learner) with ``params``.

    Examples
    --------
    >>> make_learner("bow", {}).get_params()["vectorizer"]
    'count'
    >>> make_learner("ease", {"l2": 200.0}).l2
    200.0
    """
    return learner_class(name)(**learner_params(name, params))


def learner_params(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` over the parameters that define evaluation baseline ``name`` (none for a learner)."""
    return {**(EVAL_BASELINES[name][1] if name in EVAL_BASELINES else {}), **params}


def build_model(
    spec: ModelSpec,
    *,
    catalog: Catalog,
    items: Sequence[Any],
    encoder: Any,
    base_settings: Settings,
    tune_engine: bool = True,
) -> EvalModel:
    """The model ``spec`` names; an engine fits with ``fit(tune=True)`` if ``tune_engine`` and it can."""
    if spec.kind == "engine":
        weights = dict(base_settings.fusion_weights)
        weights.update(spec.weights)
        # A weight for a source the settings do not run adds that source.
        sources = dict(base_settings.sources)
        for name in spec.weights:
            sources.setdefault(name, {})
        settings = base_settings.model_copy(update={"fusion_weights": weights, "sources": sources})
        return EngineModel(spec.name, settings, encoder, items, tune=tune_engine)
    return LearnerModel(spec.name, make_learner(spec.learner, spec.params), catalog)  # type: ignore[arg-type]


Factory = Callable[[], EvalModel]
