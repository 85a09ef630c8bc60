"""Several `liverec serve` replicas over one store, kept in step through Redis.

Design (decided here, see README "Scale-out"): the durable log in the shared store
(PostgreSQL) is the only truth. Each replica holds the online state (user profiles,
learner statistics, trending, bandit statistics) in memory and keeps it equal to what
the log implies by **shipping the log**: after a commit a replica publishes a small
notice on a Redis channel; every other replica wakes and learns the events after its
cursor (:meth:`liverec.Engine.sync`). Items, interests and erasures travel the same
way. Redis holds no state that matters: if it is lost, replicas fall back to polling
the log every ``sync_seconds`` and nothing durable is lost; when it returns, notices
resume. Fleet-wide A/B counters and served-slate attribution live in Redis (keys under
``state_prefix``), so a click on replica B is credited to the slate replica A served.

Examples
--------
>>> Replicator.keys_of("liverec", "u1")
['liverec:served:u1']
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import asdict
from typing import Any, Callable

from .._extras import require
from ..engine import Engine
from ..types import Event

redis = require("redis", "redis", "replicas sharing state through Redis (--state / LIVEREC_STATE)")
log = logging.getLogger("liverec.replication")


class Replicator:
    """Publishes this replica's writes and applies the others' (see module docstring)."""

    def __init__(self, engine: Engine, url: str, *, prefix: str = "liverec", sync_seconds: float = 1.0,
                 on_forget: Callable[[str], Any] | None = None) -> None:
        self.engine, self.prefix, self.sync_seconds = engine, prefix, sync_seconds
        self.on_forget = on_forget
        self.id = uuid.uuid4().hex[:12]
        self.channel = f"{prefix}:log"
        self.r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True)
        self._wake = threading.Event()
        self._catalog = True  # the next sync also reads items and interests
        self._last_catalog = 0.0
        self._stop = threading.Event()
        self._warned = 0.0
        self.connected = False
        self.notices = 0
        engine.replicated = True
        engine.on_erase.append(self._erased)
        self._threads = [
            threading.Thread(target=self._listen, name="liverec-subscribe", daemon=True),
            threading.Thread(target=self._syncer, name="liverec-sync", daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def keys_of(prefix: str, user: str) -> list[str]:
        """Every Redis key that names ``user`` (erasure deletes them)."""
        return [f"{prefix}:served:{user}"]

    # ------------------------------------------------------------- publishing
    def publish(self, kind: str, **payload: Any) -> None:
        """Tell the other replicas something changed; never fails the request (they also poll)."""
        try:
            self.r.publish(self.channel, json.dumps({"origin": self.id, "kind": kind, **payload}))
        except redis.RedisError as exc:
            self._warn(f"cannot publish to Redis ({exc.__class__.__name__}); replicas will catch up by polling")

    def _erased(self, user: str, events: list[Event], epoch: int) -> None:
        try:
            self.r.delete(*self.keys_of(self.prefix, user))
        except redis.RedisError:
            pass  # served-slate keys expire within a day anyway
        # The events ride along so others can subtract exactly what they learned; the
        # message is transient (pub/sub stores nothing).
        self.publish("erase", user=user, epoch=epoch, events=[asdict(e) for e in events])

    # -------------------------------------------------------------- receiving
    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                ps = self.r.pubsub(ignore_subscribe_messages=True)
                ps.subscribe(self.channel)
                if not self.connected:
                    log.info("replication: subscribed to %s", self.channel)
                self.connected = True
                self._catalog = True
                self._wake.set()  # catch up on whatever happened while disconnected
                while not self._stop.is_set():
                    msg = ps.get_message(timeout=1.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    self._handle(json.loads(msg["data"]))
            except redis.RedisError as exc:
                self.connected = False
                self._warn(f"Redis unreachable ({exc.__class__.__name__}); polling the log every "
                           f"{self.sync_seconds} s until it returns")
                self._stop.wait(1.0)

    def _handle(self, d: dict) -> None:
        if d.get("origin") == self.id:
            return
        self.notices += 1
        if d.get("kind") != "events":
            self._catalog = True
        if d.get("kind") == "erase":
            events = [Event(**{**e, "context": e.get("context") or {}}) for e in d.get("events", [])]
            self.engine.forget_user(d["user"], events, epoch=d.get("epoch"))
            if self.on_forget is not None:
                self.on_forget(d["user"])
        self._wake.set()

    def _syncer(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.sync_seconds if self.sync_seconds > 0 else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            # Items and interests on a notice about them, and at least every 10 s (and on
            # every poll while Redis is down); events and erasures on every wake-up.
            now = time.monotonic()
            catalog = self._catalog or not self.connected or now - self._last_catalog > 10
            self._catalog = False
            try:
                self.engine.sync(catalog=catalog)
                if catalog:
                    self._last_catalog = now
            except Exception as exc:  # noqa: BLE001 - keep syncing; the store may be back next time
                self._warn(f"sync from the store failed ({exc.__class__.__name__}: {exc})")
                self._stop.wait(1.0)

    def _warn(self, msg: str) -> None:
        now = time.monotonic()
        if now - self._warned > 30:
            self._warned = now
            log.warning("replication: %s", msg)

    # --------------------------------------------------------- fleet counters
    def served(self, user: str, variant: str, items: list[str]) -> None:
        if not items:
            return
        key = f"{self.prefix}:served:{user}"
        try:
            p = self.r.pipeline(transaction=False)
            p.hincrby(f"{self.prefix}:ab:served", variant, len(items))
            p.hset(key, mapping={i: variant for i in items})
            p.expire(key, 86_400)
            p.execute()
        except redis.RedisError:
            pass  # counters are telemetry; the log and impressions are the record

    def clicked(self, user: str, item: str) -> str | None:
        key = f"{self.prefix}:served:{user}"
        try:
            p = self.r.pipeline(transaction=True)
            p.hget(key, item)
            p.hdel(key, item)
            variant, _ = p.execute()
            if variant:
                self.r.hincrby(f"{self.prefix}:ab:clicked", variant, 1)
            return variant
        except redis.RedisError:
            return None

    def counts(self) -> dict[str, tuple[int, int]] | None:
        """Fleet-wide (served, clicked) per variant, or None if Redis is unreachable."""
        try:
            served = self.r.hgetall(f"{self.prefix}:ab:served")
            clicked = self.r.hgetall(f"{self.prefix}:ab:clicked")
        except redis.RedisError:
            return None
        return {v: (int(served.get(v, 0)), int(clicked.get(v, 0))) for v in set(served) | set(clicked)}

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        try:
            self.r.close()
        except redis.RedisError:
            pass
