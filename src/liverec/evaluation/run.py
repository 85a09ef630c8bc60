"""One call from a dataset and model names to every figure: what ``liverec eval`` runs.

Examples
--------
>>> out = evaluate(dataset, ["liverec", "pop", "ease"], protocol="static")   # doctest: +SKIP
>>> out["results"]["ease"]["ndcg@10"]                                         # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..encode.cache import CachedEncoder, machine_cache_url, open_cache
from ..encode.cache import cache_url as resolve_cache_url
from ..encode.catalog import Catalog
from ..encode.encoder import Encoder, SentenceTransformerEncoder
from ..encode.text import render_text
from ..errors import ValidationError
from ..settings import Settings
from ..store import Store
from .adapters import LearnerModel, ModelSpec, build_model, learner_class, learner_params, make_learner, parse_model
from .datasets import Dataset
from .harness import STREAM_EVENTS, ModelResult, run_cold, run_static, run_stream
from .tuning import SEARCHED_LAST, SharesGrid, TunedModel, grid_for, state_keys

PROTOCOLS = ("static", "stream", "cold")
DEFAULT_MODELS = ("liverec", "pop", "itemknn", "ease", "als", "bpr", "tfidf")
#: The baselines each protocol runs unless told otherwise: the stream adds the
#: session-transition kNN (what comes next); new items add the bag-of-words profile
#: and leave out the item-item models, which cannot rank items nobody has touched.
PROTOCOL_MODELS = {
    "static": DEFAULT_MODELS,
    "stream": (*DEFAULT_MODELS, "sknn"),
    "cold": ("liverec", "pop", "als", "bpr", "tfidf", "bow"),
}


#: Rough relative cost of a tuned baseline (its grid and its final run) on
#: ml-latest-small's stream protocol, measured: parallel runs start the costliest first.
RELATIVE_COST = {"itemknn": 6, "als": 5, "ease": 4, "bpr": 3, "tfidf": 2, "userknn": 2, "sknn": 2, "pop": 1}


def default_models(protocol: str) -> tuple[str, ...]:
    """The models ``liverec eval -p PROTOCOL`` runs without ``--models``.

    >>> default_models("stream")[-1], "bow" in default_models("cold")
    ('sknn', True)
    """
    return PROTOCOL_MODELS.get(protocol, DEFAULT_MODELS)


def default_cache_url() -> str:
    """The machine's vector cache, the one every engine on this machine shares."""
    return machine_cache_url()


def evaluate(
    dataset: Dataset,
    models: Sequence[str] | None = None,
    *,
    protocol: str = "static",
    k: int = 10,
    seed: int = 0,
    settings: Settings | None = None,
    encoder: Encoder | None = None,
    cache_url: str | None = None,
    progress: Callable[[Iterable, str, int], Iterable] | None = None,
    jobs: int | None = 1,
    tune_baselines: bool = True,
    tune_liverec: bool = True,
    stream_events: int | None = STREAM_EVENTS,
) -> dict[str, Any]:
    """Run one protocol for every model on the same split; return JSON-ready results.

    A model name ending in ``@frozen`` is the same model that never sees revealed
    events in the stream protocol (the "retrain never" reference). ``jobs`` models run
    at once in worker processes (None: one per CPU, at most one per model); the
    figures are the same for any ``jobs``, latencies aside (workers share the cores).

    With ``tune_baselines`` every baseline with a grid picks its hyperparameters on a
    validation split of its own training part (:mod:`.tuning`); hyperparameters given
    in the model name (``ease:l2=200``) stay fixed. With ``tune_liverec`` engines fit
    with ``fit(tune=True)`` where the engine supports it. ``out["tuning"]`` records,
    per model, the grid with every validation score, the choice and the seconds, or
    which fit an engine made. ``models`` None runs liverec and the protocol's
    baselines (:func:`default_models`). The stream protocol predicts the first
    ``stream_events`` events after its warm-up (None: every one).
    """
    if protocol not in PROTOCOLS:
        raise ValidationError(f"unknown protocol {protocol!r}; use one of {PROTOCOLS}.", field="protocol")
    if models is None:
        models = default_models(protocol)
    if not models:
        raise ValidationError("no models given; e.g. --models liverec,pop,ease", field="models")
    base = settings or Settings(log_impressions=False, encoder_progress=False)
    url = resolve_cache_url(cache_url or base.vector_cache)
    base = base.model_copy(update={"vector_cache": url or "off", "log_impressions": False})
    # Encode the catalog once through the machine's vector cache; every model reuses it
    # (its directory is created on first use; 'off' encodes into memory only).
    cache_store = open_cache(url) if url else Store.open("sqlite://")
    enc = encoder or SentenceTransformerEncoder(base.encoder_model, batch_size=base.encoder_batch_size)
    cached = CachedEncoder(enc, cache_store, progress=True)
    texts = [render_text(it.text, it.attributes, base.text_template) for it in dataset.items]
    t = time.perf_counter()
    vecs = cached.encode(texts)
    encode_s = time.perf_counter() - t
    cache_store.close()
    catalog = Catalog(vecs.shape[1])
    catalog.upsert([it.id for it in dataset.items], vecs, [dict(it.attributes) for it in dataset.items], texts)
    vectors = {it.id: vecs[i] for i, it in enumerate(dataset.items)}

    specs, learns = [], {}
    for name in models:
        frozen = name.endswith("@frozen")
        spec = parse_model(name[: -len("@frozen")] if frozen else name)
        spec = type(spec)(name, spec.kind, spec.learner, spec.weights, spec.params)
        specs.append(spec)
        learns[name] = not frozen

    def plain(spec: ModelSpec) -> Any:
        return build_model(
            spec, catalog=catalog, items=dataset.items, encoder=enc, base_settings=base, tune_engine=tune_liverec
        )

    def factory(spec: ModelSpec) -> Callable[[], Any]:
        learner = spec.learner  # set for kind "learner"
        grid = grid_for(learner, spec.params) if tune_baselines and learner is not None and spec.kind == "learner" else []
        if not grid or learner is None:
            return lambda: plain(spec)

        def make(point: Any) -> LearnerModel:
            return LearnerModel(spec.name, make_learner(learner, {**spec.params, **point}), catalog)

        shared: Any = None
        keys: tuple[str, ...] = ()
        cls = learner_class(learner)
        if isinstance(cls, SharesGrid):  # grid points scored from one state: fewer passes
            shared, keys = (lambda points: shared_views(cls, spec, points, catalog)), state_keys(cls, grid)
        return lambda: TunedModel(
            spec.name, make, grid, protocol, k=k, learn=learns[spec.name], seed=seed, shared=shared, state_keys=keys,
            last=SEARCHED_LAST.get(learner, ()),
        )

    jobs = max(1, min((os.cpu_count() or 1) if jobs is None else jobs, len(specs)))
    # In parallel, the costliest models start first so no worker is left with a long one
    # at the end: engines (five sources each) before single learners, those by cost.
    order = list(range(len(specs)))
    if jobs > 1:
        order.sort(key=lambda i: (specs[i].kind != "engine", -RELATIVE_COST.get(specs[i].learner or "", 0)))
    factories = [factory(specs[i]) for i in order]
    prog = progress or (lambda it, desc, total: it)
    t = time.perf_counter()
    if protocol == "static":
        res = run_static(
            dataset.events, factories, k=k, n_items=len(dataset.items), vectors=vectors, progress=prog, jobs=jobs
        )
    elif protocol == "stream":
        res = run_stream(
            dataset.events, factories, k=k, learns=learns, progress=prog, jobs=jobs, max_events=stream_events
        )
    else:
        res = run_cold(dataset.events, factories, k=k, seed=seed, progress=prog, jobs=jobs)
    res = [r for _, r in sorted(zip(order, res), key=lambda p: p[0])]  # back in the order asked
    total_s = time.perf_counter() - t
    return {
        "results": {r.model: _clean(r.summary()) for r in res},
        "curves": {r.model: r.curve for r in res if r.curve},
        # Stream: HR@k in each tenth of the stream's events (time order), and the predictions in each.
        "tenths": {r.model: _clean_lists(r.tenths) for r in res if r.tenths},
        "latencies_ms": {r.model: _lat_summary(r) for r in res},
        "tuning": {r.model: r.tuning for r in res if r.tuning},
        "settings": {
            "protocol": protocol,
            "dataset": dataset.name,
            "n_items": len(dataset.items),
            "n_events": len(dataset.events),
            "n_users": len({e.user for e in dataset.events}),
            "k": k,
            "seed": seed,
            "models": list(models),
            "encoder": enc.model_id,
            "encode_seconds": round(encode_s, 2),
            "run_seconds": round(total_s, 2),
            "jobs": jobs,
            "tune_baselines": tune_baselines,
            "tune_liverec": tune_liverec,
            "stream_events": stream_events if protocol == "stream" else None,
            "liverec_settings": base.model_dump(mode="json"),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        },
    }


def shared_views(
    cls: SharesGrid, spec: ModelSpec, points: Sequence[Mapping[str, Any]], catalog: Catalog
) -> tuple[LearnerModel, list[LearnerModel]]:
    """One learner state for grid ``points`` (the ``spec``'s fixed parameters added) and a
    model per point viewing it: validation fits and replays the state once."""
    state, views = cls.grid_state([learner_params(spec.learner or "", {**spec.params, **p}) for p in points])
    return LearnerModel(spec.name, state, catalog), [LearnerModel(spec.name, v, catalog) for v in views]


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else round(float(v), 6)) for k, v in d.items()}


def _clean_lists(d: Mapping[str, Sequence[float]]) -> dict[str, list[float | None]]:
    return {k: [None if isinstance(v, float) and not np.isfinite(v) else round(v, 6) for v in vals]
            for k, vals in d.items()}


def _lat_summary(r: ModelResult) -> dict[str, Any]:
    if not r.latencies_ms:
        return {}
    lat = np.asarray(r.latencies_ms)
    # A fixed set of quantiles, enough to draw the distribution in the report.
    qs = np.linspace(0, 100, 101)
    return {"quantiles": [round(float(x), 4) for x in np.percentile(lat, qs)], "n": int(len(lat))}
