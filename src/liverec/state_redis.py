"""Fleet mode: per-user online state in Redis, shared by every replica.

With ``Settings.state`` set (``--state redis://…``, ``LIVEREC_STATE``), each user's
recent events, seen items, declared interests and version live in Redis under
``<state_prefix>:`` keys, read once per request and written once per event (one
round trip each; a batch of events is one round trip). A replica's memory then does
not grow with the number of users, and a replica that just started serves every user
at once. Item-side model state stays in each replica's memory.

Keys of user ``u`` (``P`` = the prefix): ``P:uh:u`` (sorted set: recent events as
JSON rows, scored by timestamp), ``P:us:u`` (set: item ids interacted with), ``P:um:u``
(hash: version ``v``, interests text ``it`` and vector ``iv``). ``P:users:clock``
numbers versions; ``P:users:complete`` says the keys hold every user of the log. Every
write is idempotent (a row is its event's JSON, a seen item a set member): replaying
the log over Redis, or two replicas writing the same event, changes nothing twice.

Redis loss (the ``complete`` key is gone, or a write failed): the engine refills the
keys by streaming the durable log (:meth:`liverec.Engine.sync` checks on every call);
one replica at a time (``P:users:refilling``, a claim that expires unless renewed while
it writes). Until ``complete`` is back, reads rebuild the user from the store. While
Redis cannot be reached, a read rebuilds the user from the store (``fallback``:
their events and interests, slower but exact) and writes are dropped to be refilled;
after a failure Redis is left alone for :data:`RETRY_S` seconds. Erasure deletes the
user's three keys.

Examples
--------
>>> st = RedisUserState.open("redis://127.0.0.1:6379/15", prefix="doc", history_length=2,
...                          idx_of={"a": 0, "b": 1}.get)                        # doctest: +SKIP
>>> st.apply(Event(user="u", item="a", timestamp=1.0), 0)                       # doctest: +SKIP
>>> st.view("u")[1]                                                            # doctest: +SKIP
{0}
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from ._extras import require
from .errors import StoreError, ValidationError
from .models.base import UserState
from .state import OnlineState, Row
from .types import Event

log = logging.getLogger("liverec.state")

#: Writes buffered by :meth:`RedisUserState.batch` before they are sent.
BATCH = 1000

#: After a failed call, Redis is not asked again for this many seconds (reads use the fallback).
RETRY_S = 1.0

#: A refill claim expires after this many seconds unless the refilling replica writes again.
REFILL_CLAIM_S = 60

#: Rebuilds one user from the durable store: (what the learners see, seen dense indices).
Fallback = Callable[[str], tuple[UserState, set[int]]]

#: KEYS: history, seen, meta, clock. ARGV: timestamp, row, item id ('' = not in the
#: catalog), history length. Adds the row and the item, keeps the newest rows and, when
#: anything was new, gives the user the next version (the clock starts at the server's
#: time in microseconds, so versions keep growing after Redis lost its data).
_APPLY = """
local added = redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local n, keep = redis.call('ZCARD', KEYS[1]), tonumber(ARGV[4])
if n > keep then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - keep - 1) end
if ARGV[3] ~= '' then added = added + redis.call('SADD', KEYS[2], ARGV[3]) end
if added > 0 then
  if redis.call('EXISTS', KEYS[4]) == 0 then
    local t = redis.call('TIME')
    redis.call('SET', KEYS[4], t[1] .. string.rep('0', 6 - #t[2]) .. t[2])
  end
  redis.call('HSET', KEYS[3], 'v', redis.call('INCR', KEYS[4]))
end
return added
"""

#: KEYS: meta, clock. ARGV: interests text, vector bytes ('' and '' = clear them).
_INTERESTS = """
if ARGV[1] == '' then redis.call('HDEL', KEYS[1], 'it', 'iv')
else redis.call('HSET', KEYS[1], 'it', ARGV[1], 'iv', ARGV[2]) end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], t[1] .. string.rep('0', 6 - #t[2]) .. t[2])
end
redis.call('HSET', KEYS[1], 'v', redis.call('INCR', KEYS[2]))
return 1
"""


class StateUnavailableError(StoreError):
    """The shared user state (Redis) cannot be reached (the HTTP service answers 503)."""

    default_fix = "check that Redis is running at the state URL (--state / LIVEREC_STATE), then retry."


def check_state_url(url: str) -> str:
    """The URL if it names Redis, else a :class:`ValidationError` naming every way to set it.

    >>> check_state_url("redis://127.0.0.1:6379/0")
    'redis://127.0.0.1:6379/0'
    >>> check_state_url("postgresql://x")
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: state must be a Redis URL (redis://, rediss:// or unix://), got 'postgresql://x'.
    """
    if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValidationError(
            f"state must be a Redis URL (redis://, rediss:// or unix://), got {url!r}.", field="state",
            fix="pass a Redis URL such as redis://127.0.0.1:6379/0 (--state, LIVEREC_STATE, "
            "Settings.state or Engine.open(state=...)), or leave it unset to keep user state in memory.",
        )
    return url


def _row(e: Event) -> bytes:
    """The event as a canonical JSON row: the same event always gives the same bytes."""
    return json.dumps([e.item, e.kind, float(e.value), float(e.timestamp), e.id, dict(e.context) or None],
                      separators=(",", ":"), sort_keys=True).encode()


class _Discarding(OnlineState):
    """A rebuild target that keeps nothing: the shared store already holds what a fit would rebuild."""

    def apply(self, e: Event, item: int | None) -> None:
        pass

    def set_interests(self, user: str, vector: np.ndarray | None, text: str | None) -> None:
        pass


class RedisUserState:
    """Per-user online state in Redis (fleet mode; see the module docstring).

    ``idx_of`` maps an item id to this replica's dense index (None: not in the catalog):
    Redis holds item ids, since dense indices differ between replicas. ``fallback``
    answers reads while Redis cannot be reached (None: the user is served cold).

    Examples
    --------
    >>> st = RedisUserState.open("redis://127.0.0.1:6379/0", prefix="shop", history_length=50,
    ...                          idx_of=engine.catalog.get_idx)                  # doctest: +SKIP
    >>> user_state, seen = st.view("u1")                                        # doctest: +SKIP
    """

    shared = True

    def __init__(self, client: Any, *, prefix: str, history_length: int,
                 idx_of: Callable[[str], int | None], fallback: Fallback | None = None) -> None:
        self.r, self.prefix, self.history_length, self.idx_of = client, prefix, history_length, idx_of
        self.fallback = fallback
        self._down_until = 0.0  # monotonic time before which Redis is not asked (it just failed)
        self._apply = client.register_script(_APPLY)
        self._interests = client.register_script(_INTERESTS)
        self._clock, self._complete = f"{prefix}:users:clock", f"{prefix}:users:complete"
        self._refilling, self._claimed = f"{prefix}:users:refilling", False
        self._local = threading.local()
        self._lost = False  # a write failed: refill once Redis answers again

    @classmethod
    def open(cls, url: str, *, prefix: str, history_length: int, idx_of: Callable[[str], int | None],
             fallback: Fallback | None = None) -> "RedisUserState":
        """Connect to the Redis at ``url`` (checked, not contacted yet)."""
        redis = require("redis", "redis", "user state in Redis (--state / LIVEREC_STATE)")
        client = redis.Redis.from_url(check_state_url(url), socket_timeout=2, socket_connect_timeout=1,
                                      health_check_interval=30)
        return cls(client, prefix=prefix, history_length=history_length, idx_of=idx_of, fallback=fallback)

    @property
    def down(self) -> bool:
        """Whether a call failed less than :data:`RETRY_S` seconds ago."""
        return time.monotonic() < self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        if not self.down:
            log.warning("user state %s Redis failed (%s: %s); retrying in %.0f s", what, type(exc).__name__, exc,
                        RETRY_S)
        self._down_until = time.monotonic() + RETRY_S

    def keys(self, user: str) -> tuple[str, str, str]:
        """(history, seen, meta) keys of ``user``."""
        p = self.prefix
        return f"{p}:uh:{user}", f"{p}:us:{user}", f"{p}:um:{user}"

    # ------------------------------------------------------------------ writes
    @contextmanager
    def batch(self) -> Iterator[None]:
        """Send the writes made inside together (every :data:`BATCH` writes, and at the end)."""
        loc = self._local
        if getattr(loc, "pipe", None) is not None:  # nested: the outer batch sends
            yield
            return
        loc.pipe, loc.n = self.r.pipeline(transaction=False), 0
        try:
            yield
        finally:
            pipe, loc.pipe = loc.pipe, None
            self._send(pipe)

    def _write(self, queue: Callable[[Any], None]) -> None:
        loc = self._local
        pipe = getattr(loc, "pipe", None)
        if pipe is None:
            pipe = self.r.pipeline(transaction=False)
            queue(pipe)
            self._send(pipe)
            return
        queue(pipe)
        loc.n += 1
        if loc.n >= BATCH:
            self._send(pipe)
            loc.pipe, loc.n = self.r.pipeline(transaction=False), 0

    def _send(self, pipe: Any) -> None:
        if not len(pipe):
            return
        if self.down:  # the events are durable in the log: a refill restores them
            self._lost = True
            return
        if self._claimed:  # still refilling: keep the claim
            pipe.expire(self._refilling, REFILL_CLAIM_S)
        try:
            pipe.execute()
        except Exception as exc:
            self._lost = True
            self._failed("write to (refilled from the log later)", exc)

    def apply(self, e: Event, item: int | None) -> None:
        """One event of ``e.user``; ``item`` None = the item is not in the catalog (no seen entry)."""
        keys = [*self.keys(e.user), self._clock]
        args = [repr(float(e.timestamp)), _row(e), e.item if item is not None else "", self.history_length]
        self._write(lambda p: self._apply(keys=keys, args=args, client=p))

    def set_interests(self, user: str, vector: np.ndarray | None, text: str | None) -> None:
        blob = np.asarray(vector, dtype=np.float32).tobytes() if vector is not None and text else b""
        keys, args = [self.keys(user)[2], self._clock], [text or "", blob]
        self._write(lambda p: self._interests(keys=keys, args=args, client=p))

    def forget(self, user: str) -> None:
        """Delete the user's keys (raises :class:`StateUnavailableError` if Redis cannot be reached:
        the erasure is not complete until they are gone)."""
        try:
            self.r.delete(*self.keys(user))
        except Exception as exc:
            raise StateUnavailableError(
                f"user {user!r}'s state in Redis could not be deleted ({type(exc).__name__}: {exc}).",
                fix="erase the user again once Redis answers (erasing twice is safe).",
            ) from None

    # ------------------------------------------------------------------- reads
    def _read(self, user: str) -> tuple[list[bytes], set[bytes], list[bytes | None], int]:
        h, s, m = self.keys(user)
        pipe = self.r.pipeline(transaction=True)
        pipe.zrange(h, 0, -1)
        pipe.smembers(s)
        pipe.hmget(m, "it", "iv")
        pipe.exists(self._complete)
        return pipe.execute()

    def view(self, user: str) -> tuple[UserState, set[int]]:
        """(what the learners see, the seen filter as this replica's dense indices), in one round trip.

        While Redis cannot be reached, or does not hold every user (lost, being refilled):
        the ``fallback``'s answer (the store's), else what Redis has (a cold user if nothing)."""
        try:
            if self.down:
                raise ConnectionError("Redis failed moments ago")
            rows, seen, (text, blob), filled = self._read(user)
        except Exception as exc:
            if not self.down:
                self._failed("read from", exc)
            return self.fallback(user) if self.fallback is not None else (UserState(user), set())
        if not filled and self.fallback is not None:
            return self.fallback(user)
        # orjson parses the rows written by json.dumps (kept for its canonical bytes) ~8x faster.
        history = tuple(Event(user, i, k, v, t, x, c or {}) for i, k, v, t, x, c in map(orjson.loads, rows))
        vec = np.frombuffer(blob, dtype=np.float32).copy() if blob else None
        idx = (self.idx_of(s.decode()) for s in seen)
        return (UserState(user, history, vec, text.decode() if text else None),
                {i for i in idx if i is not None})

    def state(self, user: str) -> UserState:
        return self.view(user)[0]

    def seen(self, user: str) -> set[int]:
        return self.view(user)[1]

    def version(self, user: str) -> int:
        try:
            if self.down:
                raise ConnectionError("Redis failed moments ago")
            v = self.r.hget(self.keys(user)[2], "v")
        except Exception as exc:
            if not self.down:
                self._failed("version read from", exc)
            return -time.monotonic_ns()  # never the same twice: no cached response is served while Redis is away
        return int(v) if v is not None else 0

    def interests_text(self, user: str) -> str | None:
        try:
            t = self.r.hget(self.keys(user)[2], "it")
        except Exception:
            return None
        return t.decode() if t is not None else None

    def __contains__(self, user: str) -> bool:
        return bool(self.r.exists(*self.keys(user)))

    # ------------------------------------------------------ rebuilds, snapshots
    def fresh(self) -> OnlineState:
        """A rebuild target that keeps nothing: a fit does not rebuild the shared state."""
        return _Discarding(self.history_length)

    def adopt(self, rebuilt: OnlineState, *, touch: bool = True) -> None:
        """Nothing to take: the shared state is kept by every replica's writes (and refills)."""

    def records(self) -> Iterator[tuple[str, tuple[Row, ...], list[int]]]:
        """None: snapshots in fleet mode hold no users (Redis does; a lost Redis is refilled from the log)."""
        return iter(())

    def count(self) -> int | None:
        """Not counted (it would scan every user's keys)."""
        return None

    def complete(self) -> bool:
        """Whether the keys hold every user of the log (False after Redis lost its data or a failed write)."""
        try:
            present = bool(self.r.exists(self._complete))
        except Exception:
            return True  # unreachable: nothing can be refilled yet
        self._down_until = 0.0  # it answers again
        if present and not self._lost:
            return True
        self._lost = False  # the caller refills now; a write failing meanwhile sets it again
        return False

    def claim_refill(self) -> bool:
        """Whether this replica refills now: one replica at a time (the claim expires after
        :data:`REFILL_CLAIM_S` seconds unless renewed by the refill's writes)."""
        try:
            self._claimed = bool(self.r.set(self._refilling, "1", nx=True, ex=REFILL_CLAIM_S))
        except Exception:
            return False
        return self._claimed

    def mark_complete(self) -> None:
        """Called by the engine after a refill from the log (kept incomplete if a write of it
        failed); releases the refill claim."""
        try:
            if not self._lost:
                self.r.set(self._complete, "1")
            self.r.delete(self._refilling)
        except Exception:
            self._lost = True
        self._claimed = False

    def close(self) -> None:
        self.r.close()
