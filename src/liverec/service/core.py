"""What one app instance holds around its Engine: A/B set-up, key lookups, the response
cache, group commit, live stats and metrics.

Examples
--------
>>> from liverec import Engine                                   # doctest: +SKIP
>>> svc = Service(Engine.open("sqlite://"), Settings())          # doctest: +SKIP
>>> svc.assign("u1").name                                        # doctest: +SKIP
'default'
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Mapping, Sequence

from ..engine import Engine
from ..errors import NoMatchWarning
from ..settings import Settings
from ..types import Event, Recommendation
from .ab import LiveStats, Variant, assign, parse_variants
from .auth import hash_key
from .cache import ResponseCache
from .commit import GroupCommit
from .heap import HeapSettler
from .metrics import Metrics


class Service:
    """The engine plus the per-process serving state every route shares."""

    #: Seconds a key lookup is remembered: a revoked key stops working within this.
    key_ttl = 5.0

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.variants: list[Variant] = parse_variants(
            settings.variants, policies={"greedy", *engine.policies}, default_policy=settings.default_policy
        )
        self.by_name = {v.name: v for v in self.variants}
        self.stats = LiveStats(max_contributions=settings.dp_max_contributions)
        self.cache = ResponseCache(size=settings.response_cache_size, ttl=settings.response_cache_seconds,
                                   version_of=engine.user_version)
        self.commits = GroupCommit(self._commit)
        self.metrics = Metrics(model_version=lambda: engine.model_version, items=lambda: engine.n_items,
                               commits=lambda: self.commits.commits, committed=lambda: self.commits.groups)
        self.rep: Any = None  # a Replicator when settings.state is set
        self.heap = HeapSettler()  # keeps long-lived objects out of the cyclic collector's walks
        # The engine ranks one request at a time (its lock): one thread of its own queues them
        # in order, where the default pool's threads would wake each other in a lock convoy.
        self._ranker = ThreadPoolExecutor(1, thread_name_prefix="liverec-rank")
        self._keys: dict[str, tuple[float, str | None]] = {}
        # Several processes over one store (workers > 1, or replicas): every read first
        # catches up with the log, so an event accepted by any process is reflected.
        self.shared = settings.workers > 1 or bool(settings.state)
        if self.shared:
            engine.replicated = True

    # ------------------------------------------------------------------ users
    def assign(self, user: str) -> Variant:
        """The user's A/B variant (a hash of the id: the same on every replica)."""
        return assign(self.variants, user, salt=self.settings.ab_salt)

    def version(self, user: str) -> tuple[int, ...]:
        """Moves with every event learned for ``user``, interests change, erasure and re-fit."""
        return self.engine.user_version(user)

    def forget(self, user: str) -> int:
        """Drop every in-process trace of ``user`` (cached answers, A/B stats). Returns entries dropped."""
        n = self.cache.forget(user)
        self.stats.forget(user)
        return n

    def knows(self, user: str) -> bool:
        """Whether anything in this process still mentions ``user``."""
        return user in self.cache or self.stats.knows(user)

    def published(self, kind: str) -> None:
        """Tell the other replicas that ``kind`` (items, interests, events) changed here."""
        if self.rep is not None:
            self.rep.publish(kind)

    async def recommend(self, user: str, **kw: Any) -> list[Recommendation]:
        """``Engine.recommend`` off the event loop, on the ranking thread."""
        return await asyncio.get_running_loop().run_in_executor(self._ranker, partial(self._recommend, user, **kw))

    def _recommend(self, user: str, **kw: Any) -> list[Recommendation]:
        recs = self.engine.recommend(user, **kw)
        self.heap.made(1)  # what a request keeps (the user's derived state, item caches) gets frozen in time
        return recs

    async def unmatched(self, filters: Mapping[str, Any]) -> list[NoMatchWarning]:
        """The filters that match no item (``Catalog.unmatched``), on the ranking thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._ranker, partial(self.engine.catalog.unmatched, filters))

    def close(self) -> None:
        """Let the ranking in flight finish and stop the ranking thread."""
        self._ranker.shutdown(wait=True)

    # ------------------------------------------------------------------- auth
    def role_cached(self, key: str) -> tuple[bool, str | None]:
        """(known, role) without touching the store: known=False means ask :meth:`role_of`."""
        h = hash_key(key)
        if h in self.settings.api_keys:
            return True, self.settings.api_keys[h]
        hit = self._keys.get(h)
        if hit is not None and time.monotonic() - hit[0] < self.key_ttl:
            return True, hit[1]
        return False, None

    def role_of(self, key: str) -> str | None:
        """The key's role (None: unknown or revoked), looked up in the store at most every ``key_ttl``."""
        known, role = self.role_cached(key)
        if known:
            return role
        h, now = hash_key(key), time.monotonic()
        found = self.engine.store.find_api_key(h)
        role = found[1] if found else None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[h] = (now, role)
        return role

    # ----------------------------------------------------------------- events
    async def record(self, events: Sequence[Event]) -> int:
        """Store and learn ``events`` in the next group commit; how many were new."""
        n = await self.commits.submit(events)
        self.metrics.events.inc(n)
        if n < len(events):
            self.metrics.dupes.inc(len(events) - n)
        return n

    def _commit(self, groups: list[Sequence[Event]]) -> list[int | Exception]:
        """One durable commit for every queued request, then the in-process bookkeeping."""
        results: list[int | Exception] = list(self.engine.record_groups(groups))
        self.heap.made(sum(r for r in results if isinstance(r, int)))
        for evs, res in zip(groups, results):
            if isinstance(res, Exception):
                continue
            for e in evs:
                self.cache.forget(e.user)
                reward = self.engine.reward_of(e)
                variant = self.stats.event(e.user, e.item, reward)
                if self.rep is not None and reward > 0:
                    variant = self.rep.clicked(e.user, e.item) or variant
                if variant is not None:
                    self.metrics.clicked.labels(variant).inc()
        if self.rep is not None and any(isinstance(r, int) and r > 0 for r in results):
            self.rep.publish("events")
        return results
