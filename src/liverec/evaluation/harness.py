"""The three protocols, run on every model in the same process on the same split.

- **static**: each user's last 20% of interactions (by time) held out; full ranking
  over the catalog with the user's training items excluded.
- **stream**: events in time order; the first 50% fitted; then for each later event,
  recommend 10 for that user *before* revealing it (HR@10), then reveal it
  (``learn_one``) to models that learn per event.
- **cold**: 10% of the items with >= 5 interactions removed from training; rank only
  those items for the users who interacted with them.

Every function returns plain rows/dicts; nothing here prints.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ..types import Event
from . import metrics as M
from .adapters import EvalModel
from .splits import cold_item_split, stream_split, temporal_user_split

RANKING = ("recall", "ndcg", "map", "hr", "mrr")
COLD_USER_MAX_TRAIN = 5  # users with at most this many training interactions form the cold-user slice


@dataclass
class ModelResult:
    """Everything measured for one model under one protocol."""

    model: str
    metrics: dict[str, float] = field(default_factory=dict)
    fit_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    curve: list[tuple[int, float]] = field(default_factory=list)  # stream: (events seen, rolling HR)

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


def _ranking_metrics(
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


def run_static(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    n_items: int,
    vectors: Mapping[str, np.ndarray] | None = None,
    progress: Callable[[Iterable, str, int], Iterable] = lambda it, desc, total: it,
) -> list[ModelResult]:
    """Temporal per-user hold-out with full ranking (train items excluded)."""
    split = temporal_user_split(events)
    pop = _popularity(split.train)
    n_users = len({e.user for e in events})
    train_counts = {u: len(s) for u, s in split.train_by_user.items()}
    item_counts = pop
    cold_users = [u for u in split.test_by_user if train_counts.get(u, 0) <= COLD_USER_MAX_TRAIN]
    results = []
    for factory in models:
        model = factory()
        t = time.perf_counter()
        model.fit(split.train)
        res = ModelResult(model.name, fit_seconds=time.perf_counter() - t)
        lists: dict[str, list[str]] = {}
        users = [u for u, rel in split.test_by_user.items() if rel]
        for u in progress(users, f"static {model.name}", len(users)):
            t = time.perf_counter()
            lists[u] = model.recommend(u, k, exclude=split.train_by_user.get(u, set()))
            res.latencies_ms.append((time.perf_counter() - t) * 1000)
        res.metrics.update(_ranking_metrics(lists, split.test_by_user, k))
        res.metrics.update(_list_metrics(lists, n_items, pop, n_users, vectors))
        # Slices: users with little history, and held-out items with little history.
        res.metrics[f"ndcg@{k}_cold_users"] = _ranking_metrics(lists, split.test_by_user, k, cold_users)[f"ndcg@{k}"]
        cold_rel = {
            u: {i for i in rel if item_counts.get(i, 0) < COLD_USER_MAX_TRAIN} for u, rel in split.test_by_user.items()
        }
        res.metrics[f"recall@{k}_cold_items"] = _ranking_metrics(lists, cold_rel, k)[f"recall@{k}"]
        results.append(res)
        _close(model)
    return results


def run_stream(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    learns: Mapping[str, bool] | None = None,
    window: int = 2000,
    progress: Callable[[Iterable, str, int], Iterable] = lambda it, desc, total: it,
) -> list[ModelResult]:
    """Prequential: predict each event before revealing it. ``learns[name]=False`` = frozen model."""
    split = stream_split(events)
    results = []
    for factory in models:
        model = factory()
        t = time.perf_counter()
        model.fit(split.warmup)
        res = ModelResult(model.name, fit_seconds=time.perf_counter() - t)
        learn = True if learns is None else learns.get(model.name, True)
        seen: dict[str, set[str]] = defaultdict(set)
        for e in split.warmup:
            seen[e.user].add(e.item)
        hits: list[int] = []
        for n, e in enumerate(progress(split.stream, f"stream {model.name}", len(split.stream))):
            if e.item not in seen[e.user]:  # a re-interaction is not a recommendation target
                t = time.perf_counter()
                ranked = model.recommend(e.user, k, exclude=seen[e.user])
                res.latencies_ms.append((time.perf_counter() - t) * 1000)
                hits.append(int(e.item in ranked[:k]))
                if len(hits) % window == 0:
                    res.curve.append((n + 1, float(np.mean(hits[-window:]))))
            if learn:
                model.learn_one(e)
            seen[e.user].add(e.item)
        res.metrics[f"hr@{k}"] = float(np.mean(hits)) if hits else float("nan")
        res.metrics["predictions"] = float(len(hits))
        results.append(res)
        _close(model)
    return results


def run_cold(
    events: Sequence[Event],
    models: Sequence[Callable[[], EvalModel]],
    *,
    k: int = 10,
    seed: int = 0,
    progress: Callable[[Iterable, str, int], Iterable] = lambda it, desc, total: it,
) -> list[ModelResult]:
    """Cold items: rank only the held-out items for the users who interacted with them."""
    split = cold_item_split(events, seed=seed)
    cold = sorted(split.cold_items)
    results = []
    for factory in models:
        model = factory()
        t = time.perf_counter()
        model.fit(split.train)
        res = ModelResult(model.name, fit_seconds=time.perf_counter() - t)
        lists: dict[str, list[str]] = {}
        users = [u for u, rel in split.test_by_user.items() if rel]
        for u in progress(users, f"cold {model.name}", len(users)):
            t = time.perf_counter()
            lists[u] = model.recommend(u, k, candidates=cold)
            res.latencies_ms.append((time.perf_counter() - t) * 1000)
        res.metrics.update(_ranking_metrics(lists, split.test_by_user, k))
        res.metrics["cold_items"] = float(len(cold))
        results.append(res)
        _close(model)
    return results


def _close(model: Any) -> None:
    close = getattr(model, "close", None)
    if close is not None:
        close()
