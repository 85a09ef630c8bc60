"""Prometheus metrics of one app instance (its own registry, so several apps never clash).

Examples
--------
>>> m = Metrics(model_version=lambda: 3, items=lambda: 10, commits=lambda: 1, committed=lambda: 4)
>>> m.events.inc(2)
>>> b"liverec_events_ingested_total 2.0" in m.render({})
True
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Request latency, events, served and clicked items, cache lookups, model version, CTR."""

    def __init__(self, *, model_version: Callable[[], float], items: Callable[[], float],
                 commits: Callable[[], float], committed: Callable[[], float]) -> None:
        r = self.registry = CollectorRegistry()
        self.latency = Histogram("liverec_request_seconds", "HTTP request latency", ["method", "route", "status"],
                                 registry=r, buckets=BUCKETS)
        self.events = Counter("liverec_events_ingested_total", "Events newly stored", registry=r)
        self.dupes = Counter("liverec_events_duplicate_total", "Events skipped as repeated ids", registry=r)
        self.served = Counter("liverec_items_served_total", "Items served", ["variant"], registry=r)
        self.clicked = Counter("liverec_items_clicked_total", "Served items clicked", ["variant"], registry=r)
        self.cache = Counter("liverec_recommend_cache_total", "Response cache lookups", ["result"], registry=r)
        self.cache_hit, self.cache_miss = self.cache.labels("hit"), self.cache.labels("miss")
        Gauge("liverec_model_version", "Model version (bumped by every re-fit)", registry=r).set_function(model_version)
        Gauge("liverec_items", "Items in the catalog", registry=r).set_function(items)
        # Group commit at work: requests per commit = committed / commits.
        Gauge("liverec_group_commits", "Durable commits of event requests since start", registry=r).set_function(commits)
        Gauge("liverec_group_committed_requests", "Event requests those commits carried", registry=r).set_function(
            committed)
        self.ctr = Gauge("liverec_variant_ctr", "Clicked / served items per A/B variant", ["variant"], registry=r)
        self._observers: dict[tuple[str, str, int], Any] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request's latency (the labelled child is looked up once per route and status)."""
        key = (method, route, status)
        child = self._observers.get(key)
        if child is None:
            child = self._observers[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)

    def render(self, ctr: Mapping[str, Mapping[str, Any]]) -> bytes:
        """The text exposition, after setting the per-variant CTR gauges from ``ctr``."""
        for name, row in ctr.items():
            if row.get("ctr") is not None:
                self.ctr.labels(name).set(row["ctr"])
        return generate_latest(self.registry)
