"""The three protocols, run on every model in the same process on the same split.

- **static**: each user's last 20% of interactions (by time) held out; full ranking
  over the catalog with the user's training items excluded.
- **stream**: events in time order; the first 50% fitted; then for each later event,
  recommend 10 for that user *before* revealing it (HR@10), then reveal it
  (``learn_one``) to models that learn per event.
- **cold**: 10% of the items with >= 5 interactions removed from training; rank only
  those items for the users who interacted with them.

A model that tunes itself on its training part (:class:`.tuning.TunedModel`) reports
how in ``ModelResult.tuning``; its ``fit_seconds`` are those of the final fit only.

With ``jobs > 1`` the models of a protocol run in that many forked worker processes
(each model wholly in one worker, on the same split); results are the same as a
sequential run, in the order given, and progress is one bar over all models.

Every function returns plain rows/dicts; nothing here prints.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..types import Event
from . import metrics as M
from .adapters import EvalModel
from .splits import StreamSplit, cold_item_split, stream_split, temporal_user_split

RANKING = ("recall", "ndcg", "map", "hr", "mrr")
Progress = Callable[[Iterable, str, int], Iterable]
#: The stream protocol's predictions: the first 20,000 events after the 50% warm-up.
STREAM_EVENTS = 20_000
COLD_USER_MAX_TRAIN = 5  # users with at most this many training interactions form the cold-user slice


@dataclass
class ModelResult:
    """Everything measured for one model under one protocol."""

    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)  # stream: (events seen, rolling HR)
    tenths: dict[str, list[float]] = field(default_factory=dict)  # stream: hit rate per tenth of the stream
    tuning: dict[str, Any] | None = None  # how the model's hyperparameters were chosen, if they were

    def summary(self) -> dict[str, float]:
        out = dict(self.metrics)
        out["fit_s"] = round(self.fit_seconds, 3)
        if self.latencies_ms:
            lat = np.asarray(self.latencies_ms)
            out["latency_p50_ms"] = float(np.percentile(lat, 50))
            out["latency_p99_ms"] = float(np.percentile(lat, 99))
        return out


def _popularity(events: Iterable[Event]) -> dict[str, int]:
    users_per_item: dict[str, set[str]] = defaultdict(set)
    for e in events:
        users_per_item[e.item].add(e.user)
    return {i: len(u) for i, u in users_per_item.items()}


def ranking_metrics(
    lists: Mapping[str, list[str]], relevant: Mapping[str, set[str]], k: int, users: Iterable[str] | None = None
) -> dict[str, float]:
    users = [u for u in (lists if users is None else users) if relevant.get(u)]
    out = {}
    for name in RANKING:
        fn = M.METRICS[name]
        vals = [fn(lists[u], relevant[u], k) for u in users]
        out[f"{name}@{k}"] = float(np.mean(vals)) if vals else float("nan")
    return out


def _list_metrics(
    lists: Mapping[str, list[str]], n_items: int, popularity: Mapping[str, int], n_users: int,
    vectors: Mapping[str, np.ndarray] | None,
) -> dict[str, float]:
    recs = list(lists.values())
    out = {
        "coverage": M.catalog_coverage(recs, n_items),
        "novelty": M.novelty(recs, popularity, n_users),
    }
    if vectors is not None:
        out["diversity"] = float(np.mean([M.intra_list_diversity(r, vectors) for r in recs])) if recs else 0.0
    return out


def rank_users(
    model: EvalModel,
    users: Sequence[str],
    k: int,
    *,
    exclude: Mapping[str, set[str]] | None = None,
    candidates: Sequence[str] | None = None,
    progress: Progress = lambda it, desc, total: it,
    desc: str = "",
    latencies: list[float] | None = None,
) -> dict[str, list[str]]:
    """Each user's top ``k`` (their ``exclude`` items hidden, or only ``candidates`` ranked).

    Examples
    --------
    >>> class Fixed:
    ...     def recommend(self, user, k, *, exclude=(), candidates=None):
    ...         return [i for i in "abc" if i not in exclude][:k]
    >>> rank_users(Fixed(), ["u"], 2, exclude={"u": {"a"}})
    {'u': ['b', 'c']}
    """
    lists: dict[str, list[str]] = {}
    for u in progress(users, desc, len(users)):
        t = time.perf_counter()
        if candidates is not None:
            lists[u] = model.recommend(u, k, candidates=candidates)
        else:
            lists[u] = model.recommend(u, k, exclude=(exclude or {}).get(u, set()))
        if latencies is not None:
            latencies.append((time.perf_counter() - t) * 1000)
    return lists


def prequential(model: EvalModel, history: Iterable[Event], stream: Sequence[Event], k: int, **options: Any) -> list[int]:
    """Replay ``stream``: recommend ``k`` for each event's user before revealing it; 1 = hit.

    A re-interaction (an item in the user's ``history`` or already streamed) is not a
    target, and the user's known items are excluded from the list. ``options`` are those
    of :func:`prequential_many`: with ``learn`` (default) the model sees every event
    (``learn_one``) after its prediction; ``curve`` collects (events seen, hit rate over
    the last ``window`` predictions); ``latencies`` the milliseconds of each request.

    Examples
    --------
    >>> from liverec import Event
    >>> class Last:
    ...     def __init__(self): self.last = None
    ...     def recommend(self, user, k, *, exclude=(), candidates=None): return [self.last]
    ...     def learn_one(self, e): self.last = e.item
    >>> evs = [Event(user=u, item="x", timestamp=float(t)) for t, u in enumerate("abc")]
    >>> prequential(Last(), [], evs, 1)
    [0, 1, 1]
    """
    return prequential_many([model], model, history, stream, k, **options)[0]


def prequential_many(
    models: Sequence[EvalModel],
    learner: EvalModel,
    history: Iterable[Event],
    stream: Sequence[Event],
    k: int,
    *,
    learn: bool = True,
    window: int = 2000,
    progress: Progress = lambda it, desc, total: it,
    desc: str = "",
    latencies: list[float] | None = None,
    curve: list[tuple[int, float]] | None = None,
    positions: list[int] | None = None,
) -> list[list[int]]:
    """:func:`prequential` for several ``models`` that share one state, taught through ``learner``.

    Each event is predicted by every model, then revealed once (``learner.learn_one``):
    the models are views of ``learner`` (e.g. one set of counts scored with several
    hyperparameters). ``latencies`` and ``curve`` follow the first model; ``positions``
    collects the stream index of each prediction (the same for every model).
    """
    seen: dict[str, set[str]] = defaultdict(set)
    for e in history:
        seen[e.user].add(e.item)
    hits: list[list[int]] = [[] for _ in models]
    for n, e in enumerate(progress(stream, desc, len(stream))):
        if e.item not in seen[e.user]:  # a re-interaction is not a recommendation target
            for m, got in zip(models, hits):
                t = time.perf_counter()
                ranked = m.recommend(e.user, k, exclude=seen[e.user])
                if latencies is not None and got is hits[0]:
                    latencies.append((time.perf_counter() - t) * 1000)
                got.append(int(e.item in ranked[:k]))
            if positions is not None:
                positions.append(n)
            if curve is not None and len(hits[0]) % window == 0:
                curve.append((n + 1, float(np.mean(hits[0][-window:]))))
        if learn:
            learner.learn_one(e)
        seen[e.user].add(e.item)
    return hits


def by_tenth(hits: Sequence[int], positions: Sequence[int], n: int, k: int = 10) -> dict[str, list[float]]:
    """Hit rate in each tenth of a stream of ``n`` events (by position, in time order).

    ``hits[j]`` is the outcome of the prediction made at stream index ``positions[j]``;
    a tenth with no prediction has hit rate NaN.

    Examples
    --------
    >>> t = by_tenth([1, 0, 1, 1], [0, 1, 5, 9], 10, k=10)
    >>> t["hr@10"][:2], t["predictions"][:2], t["hr@10"][9]
    ([1.0, 0.0], [1, 1], 1.0)
    """
    tenth = np.minimum(np.asarray(positions, dtype=np.int64) * 10 // max(n, 1), 9)
    h = np.asarray(hits, dtype=np.float64)
    count = np.bincount(tenth, minlength=10)
    got = np.bincount(tenth, weights=h, minlength=10)
    rate = np.divide(got, count, out=np.full(10, np.nan), where=count > 0)
    return {f"hr@{k}": [float(r) for r in rate], "predictions": [int(c) for c in count]}


def fit_timed(model: EvalModel, train: Sequence[Event]) -> ModelResult:
    """Fit ``model``; the result holds the fit time and, if it tuned itself, how (time apart)."""
    t = time.perf_counter()
    model.fit(train)
    took = time.perf_counter() - t
    tuning = getattr(model, "tuning", None)
    tuned_s = float(tuning.get("seconds", 0.0)) if tuning else 0.0
    return ModelResult(model.name, fit_seconds=max(took - tuned_s, 0.0), tuning=tuning)


def run_static(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    n_items: int,
    vectors: Mapping[str, np.ndarray] | None = None,
    progress: Progress = lambda it, desc, total: it,
    jobs: int = 1,
) -> list[ModelResult]:
    """Temporal per-user hold-out with full ranking (train items excluded)."""
    split = temporal_user_split(events)
    pop = _popularity(split.train)
    n_users = len({e.user for e in events})
    train_counts = {u: len(s) for u, s in split.train_by_user.items()}
    item_counts = pop
    cold_users = [u for u in split.test_by_user if train_counts.get(u, 0) <= COLD_USER_MAX_TRAIN]
    users = [u for u, rel in split.test_by_user.items() if rel]

    def one(factory: Callable[[], EvalModel], progress: Progress) -> ModelResult:
        model = factory()
        res = fit_timed(model, split.train)
        lists = rank_users(model, users, k, exclude=split.train_by_user, progress=progress,
                           desc=f"static {model.name}", latencies=res.latencies_ms)
        res.metrics.update(ranking_metrics(lists, split.test_by_user, k))
        res.metrics.update(_list_metrics(lists, n_items, pop, n_users, vectors))
        # Slices: users with little history, and held-out items with little history.
        res.metrics[f"ndcg@{k}_cold_users"] = ranking_metrics(lists, split.test_by_user, k, cold_users)[f"ndcg@{k}"]
        cold_rel = {
            u: {i for i in rel if item_counts.get(i, 0) < COLD_USER_MAX_TRAIN} for u, rel in split.test_by_user.items()
        }
        res.metrics[f"recall@{k}_cold_items"] = ranking_metrics(lists, cold_rel, k)[f"recall@{k}"]
        close_model(model)
        return res

    return run_models(models, one, jobs=jobs, progress=progress, label="static", units=len(users))


def run_stream(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    learns: Mapping[str, bool] | None = None,
    window: int = 2000,
    progress: Progress = lambda it, desc, total: it,
    jobs: int = 1,
    max_events: int | None = STREAM_EVENTS,
) -> list[ModelResult]:
    """Prequential: predict each event before revealing it. ``learns[name]=False`` = frozen model.

    The first ``max_events`` events after the warm-up are streamed (None: all of them).
    """
    split = stream_split(events)
    if max_events is not None:
        split = StreamSplit(split.warmup, split.stream[:max_events])

    def one(factory: Callable[[], EvalModel], progress: Progress) -> ModelResult:
        model = factory()
        res = fit_timed(model, split.warmup)
        learn = True if learns is None else learns.get(model.name, True)
        at: list[int] = []
        hits = prequential(model, split.warmup, split.stream, k, learn=learn, window=window, progress=progress,
                           desc=f"stream {model.name}", latencies=res.latencies_ms, curve=res.curve, positions=at)
        res.metrics[f"hr@{k}"] = float(np.mean(hits)) if hits else float("nan")
        res.metrics["predictions"] = float(len(hits))
        res.tenths = by_tenth(hits, at, len(split.stream), k)
        close_model(model)
        return res

    return run_models(models, one, jobs=jobs, progress=progress, label="stream", units=len(split.stream))


def run_cold(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    seed: int = 0,
    progress: Progress = lambda it, desc, total: it,
    jobs: int = 1,
) -> list[ModelResult]:
    """Cold items: rank only the held-out items for the users who interacted with them."""
    split = cold_item_split(events, seed=seed)
    cold = sorted(split.cold_items)
    users = [u for u, rel in split.test_by_user.items() if rel]

    def one(factory: Callable[[], EvalModel], progress: Progress) -> ModelResult:
        model = factory()
        res = fit_timed(model, split.train)
        lists = rank_users(model, users, k, candidates=cold, progress=progress,
                           desc=f"cold {model.name}", latencies=res.latencies_ms)
        res.metrics.update(ranking_metrics(lists, split.test_by_user, k))
        res.metrics["cold_items"] = float(len(cold))
        close_model(model)
        return res

    return run_models(models, one, jobs=jobs, progress=progress, label="cold", units=len(users))


# ------------------------------------------------------------------ workers
#: What forked workers run: (per-model function, factories, progress queue). Set just
#: before the pool forks, so workers inherit it instead of unpickling closures.
_WORK: tuple[Callable[..., ModelResult], Sequence[Callable[[], EvalModel]], Any] | None = None
_TICK = 200  # a worker reports progress every this many units


def run_models(
    models: Sequence[Callable[[], EvalModel]],
    one: Callable[[Callable[[], EvalModel], Progress], ModelResult],
    *,
    jobs: int = 1,
    progress: Progress = lambda it, desc, total: it,
    label: str = "",
    units: int = 0,
) -> list[ModelResult]:
    """``one(factory, progress)`` for every model, in up to ``jobs`` worker processes.

    Results come back in the order of ``models`` whatever order they finish in. With
    more than one job, each worker counts the units it gets through (``one`` iterates
    ``progress(...)``) and the parent shows one bar of ``units`` per model for all.
    Workers are forked (the split and the models' factories are inherited, not
    pickled); the results are pickled back.

    Examples
    --------
    >>> square = lambda f, progress: sum(progress([f()] * 3, "", 3))
    >>> run_models([lambda: 1, lambda: 2], square, jobs=2)
    [3, 6]
    """
    global _WORK
    jobs = max(1, min(jobs, len(models)))
    if jobs == 1:
        return [one(factory, progress) for factory in models]
    ctx = mp.get_context("fork")
    ticks = ctx.SimpleQueue()
    _WORK = (one, models, ticks)
    try:
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker) as pool:
            futures = [pool.submit(_run_work, i) for i in range(len(models))]
            desc = f"{label} {len(models)} models, {jobs} jobs"
            try:
                for _ in progress(_ticks(ticks, futures), desc, units * len(models)):
                    pass
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        _WORK = None


def _init_worker() -> None:
    # One thread per worker: the workers already share the cores (and torch's thread
    # pool, if the parent used it to encode, is not usable across a fork).
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _run_work(i: int) -> ModelResult:
    assert _WORK is not None, "run_models sets the work before forking"
    one, models, ticks = _WORK
    return one(models[i], lambda it, desc, total: _counting(it, ticks))


def _counting(it: Iterable, ticks: Any) -> Iterator:
    n = 0
    for x in it:
        yield x
        n += 1
        if n == _TICK:
            ticks.put(n)
            n = 0
    if n:
        ticks.put(n)


def _ticks(ticks: Any, futures: Sequence[Any]) -> Iterator[None]:
    """One item per unit the workers report, until every model has finished."""
    while True:
        done = all(f.done() for f in futures)  # a worker's ticks are all sent before its result
        while not ticks.empty():
            yield from (None for _ in range(ticks.get()))
        if done:
            return
        time.sleep(0.05)


def close_model(model: Any) -> None:
    """Release what ``model`` holds (an engine's store), if it has anything to release."""
    close = getattr(model, "close", None)
    if close is not None:
        close()
