"""A/B variants: deterministic per-user assignment by hash, and live per-variant CTR.

A variant is a named serving configuration (policy + ranking knobs) with a traffic
share. A user's variant is ``sha256(salt + ":" + user)`` mapped to [0, 1) and cut by
the cumulative shares, so every replica assigns the same user the same way with no
shared state, and changing ``ab_salt`` reshuffles everyone.

Examples
--------
>>> vs = parse_variants({"a": {"share": 0.5}, "b": {"share": 0.5, "policy": "linucb"}},
...                     policies={"greedy", "linucb"}, default_policy="greedy")
>>> [v.name for v in vs], vs[1].policy
(['a', 'b'], 'linucb')
>>> assign(vs, "user-42", salt="s") is assign(vs, "user-42", salt="s")
True
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import ValidationError

_KNOBS = {"share", "policy", "diversity", "weights", "max_per_provider"}


@dataclass(frozen=True)
class Variant:
    """One arm of an A/B test."""

    name: str
    share: float
    policy: str
    diversity: float | None = None
    weights: Mapping[str, float] | None = None
    max_per_provider: int | None = None


def parse_variants(
    raw: Mapping[str, Mapping[str, Any]], *, policies: set[str], default_policy: str
) -> list[Variant]:
    """Validate ``Settings.variants``; empty = one variant ``default`` with all traffic."""
    if not raw:
        return [Variant("default", 1.0, default_policy)]
    out: list[Variant] = []
    for name, spec in raw.items():
        where = f"variants.{name}"
        if not isinstance(spec, Mapping):
            raise ValidationError(f"{where} must be an object like {{\"share\": 0.5, \"policy\": \"greedy\"}}.", field=where)
        unknown = set(spec) - _KNOBS
        if unknown:
            raise ValidationError(f"{where} has unknown keys {sorted(unknown)}; allowed: {sorted(_KNOBS)}.", field=where)
        share = spec.get("share", 1.0)
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not share > 0:
            raise ValidationError(f"{where}.share must be a number > 0, got {share!r}.", field=f"{where}.share")
        policy = spec.get("policy", default_policy)
        if policy not in policies:
            raise ValidationError(
                f"{where}.policy {policy!r} is not configured; configured policies are {sorted(policies)}.",
                field=f"{where}.policy",
            )
        out.append(Variant(name, float(share), policy, spec.get("diversity"), spec.get("weights"),
                           spec.get("max_per_provider")))
    total = sum(v.share for v in out)
    return [Variant(v.name, v.share / total, v.policy, v.diversity, v.weights, v.max_per_provider) for v in out]


def bucket(user: str, salt: str) -> float:
    """A user's stable position in [0, 1)."""
    h = hashlib.sha256(f"{salt}:{user}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign(variants: list[Variant], user: str, *, salt: str) -> Variant:
    """The variant ``user`` belongs to (same answer on every call and every replica)."""
    x, acc = bucket(user, salt), 0.0
    for v in variants:
        acc += v.share
        if x < acc:
            return v
    return variants[-1]


def wilson(clicks: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (sane at 0 clicks and small n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = clicks / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


@dataclass
class _Counts:
    served: int = 0
    clicked: int = 0


@dataclass
class LiveStats:
    """Counters since the process started: events, served/clicked per variant, latency.

    A click is attributed to the variant that served the item to that user in one of
    their last slates; each served item is credited at most once. Time series use
    ``bucket_seconds`` buckets over the last ``window`` buckets (for the live page).
    DP counters bound each user's contribution at ``max_contributions`` served items and
    as many clicks, over all variants together (not per variant: a user who sees four
    variants still moves each released vector by at most that bound).
    """

    max_contributions: int = 20
    bucket_seconds: float = 5.0
    window: int = 120
    max_users: int = 100_000
    variants: dict[str, _Counts] = field(default_factory=lambda: defaultdict(_Counts))
    _served_by_user: "OrderedDict[str, dict[str, str]]" = field(default_factory=OrderedDict)
    _dp: dict[str, _Counts] = field(default_factory=lambda: defaultdict(_Counts))
    _dp_user: dict[str, list[int]] = field(default_factory=dict)
    _series: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    events: int = 0

    def _bucket(self, now: float) -> dict[str, Any]:
        t = math.floor(now / self.bucket_seconds) * self.bucket_seconds
        if not self._series or self._series[-1]["t"] != t:
            self._series.append({"t": t, "events": 0, "requests": 0, "latency_ms": [], "served": {}, "clicked": {}})
            while len(self._series) > self.window:
                self._series.popleft()
        return self._series[-1]

    def served(self, user: str, variant: str, items: list[str], latency_ms: float) -> None:
        with self._lock:
            b = self._bucket(time.time())
            b["requests"] += 1
            if len(b["latency_ms"]) < 2000:
                b["latency_ms"].append(latency_ms)
            if not items:
                return
            self.variants[variant].served += len(items)
            b["served"][variant] = b["served"].get(variant, 0) + len(items)
            seen = self._served_by_user.pop(user, {})
            seen.update({i: variant for i in items})
            if len(seen) > 200:  # keep the most recent slates only
                seen = dict(list(seen.items())[-200:])
            self._served_by_user[user] = seen
            while len(self._served_by_user) > self.max_users:
                self._served_by_user.popitem(last=False)
            dp = self._dp_user.setdefault(user, [0, 0])
            take = min(len(items), self.max_contributions - dp[0])
            if take > 0:
                dp[0] += take
                self._dp[variant].served += take

    def event(self, user: str, item: str, reward: float) -> str | None:
        """Count an accepted event; returns the variant credited with a click, if any."""
        with self._lock:
            self.events += 1
            b = self._bucket(time.time())
            b["events"] += 1
            if reward <= 0:
                return None
            seen = self._served_by_user.get(user)
            variant = seen.pop(item, None) if seen else None
            if variant is None:
                return None
            self.variants[variant].clicked += 1
            b["clicked"][variant] = b["clicked"].get(variant, 0) + 1
            dp = self._dp_user.setdefault(user, [0, 0])
            if dp[1] < self.max_contributions:
                dp[1] += 1
                self._dp[variant].clicked += 1
            return variant

    def forget(self, user: str) -> None:
        """Erasure: drop the user's served-items memory and DP bookkeeping."""
        with self._lock:
            self._served_by_user.pop(user, None)
            self._dp_user.pop(user, None)

    def knows(self, user: str) -> bool:
        with self._lock:
            return user in self._served_by_user or user in self._dp_user

    def ctr(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            out = {}
            for name, c in self.variants.items():
                lo, hi = wilson(c.clicked, c.served)
                out[name] = {"served": c.served, "clicked": c.clicked,
                             "ctr": c.clicked / c.served if c.served else None, "ctr_ci95": [lo, hi]}
            return out

    def dp_counts(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {n: (c.served, c.clicked) for n, c in self._dp.items()}

    def series(self) -> list[dict[str, Any]]:
        """Per-bucket events/s, requests/s, latency p50/p99 and CTR per variant."""
        with self._lock:
            rows = []
            for b in self._series:
                lat = sorted(b["latency_ms"])
                rows.append({
                    "t": b["t"],
                    "events_per_s": b["events"] / self.bucket_seconds,
                    "requests_per_s": b["requests"] / self.bucket_seconds,
                    "latency_p50_ms": lat[len(lat) // 2] if lat else None,
                    "latency_p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
                    "ctr": {v: b["clicked"].get(v, 0) / n for v, n in b["served"].items() if n},
                })
            return rows
