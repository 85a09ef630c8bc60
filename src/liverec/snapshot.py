"""Snapshots of the whole model set: a restart or a new replica replays only the log tail.

A snapshot holds every source's learned state, the online fusion weights, the per-user
online state (recent events, seen items) and the catalog's dense order, at one log
position (event ``seq``); its header names the tuned configuration (hyperparameters,
feedback reading and fusion weights, kept in the store) it was fitted with. A node that opens a store loads the newest
*compatible* snapshot and learns only the events after its position; with none, it
re-fits from the whole log (and writes one).

Compatible means: same snapshot format, liverec version and code, encoder model,
sources, model-shaping settings (every setting but the deployment ones in
:data:`DEPLOYMENT_FIELDS`) and tuned configuration; taken after the store's last
erasure; not ahead of the log. Anything else is refused with a log line saying why.

Why pickle (protocol 5, the C implementation in the standard library): the state is
numpy arrays, scipy sparse matrices and plain Python objects (neighbour lists, dicts,
deques of events) spread over seven learner classes; pickle writes all of it in one
pass, large arrays as raw buffers. joblib (pickle with a numpy-aware Python unpickler)
was measured first: loading a 200 MB snapshot took 8.6 s against 1.8 s for the C
unpickler, because the Python unpickler pays per object and the per-user state is
millions of small objects. safetensors would need a hand-written flattening of every
learner's state into named tensors plus a JSON side file, kept in step with each
learner. Pickle runs code on load: snapshots are trusted exactly like the store they
sit in (only liverec writes them; keep a snapshot directory as private as the database).

Format 3 packs the learners' per-user tables before pickling (:func:`pack`): per-user
arrays as one matrix, per-user dicts as one pickled blob per user decoded on first read
(:class:`LazyTable`), so a restart unpickles a few large buffers and only the users it
replays or serves, not millions of small objects.

Format 4 keeps the arrays' data out of the pickle stream (:func:`frame`): the body is a
small table of contents, the stream, then each array's bytes, aligned. Loading hands those
bytes to the arrays in place (writable views of the body as read from the store), so the
~800 MB of arrays at 1M events are neither copied nor allocated again on a restart.

Examples
--------
>>> from liverec.settings import Settings
>>> key = compat_key(Settings(), "all-MiniLM-L6-v2", None)
>>> key["format"], key["sources"][:2]
(4, ['als', 'content'])
>>> refusal({**key, "erasures": 0, "log_seq": 5}, key, erasures=1, last_seq=9)
'taken before a user was erased (the store has had 1 erasures, the snapshot reflects 0)'
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import pickle
import struct
import threading
import time
from array import array
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from .encode.catalog import Catalog
from .models.base import Learner
from .settings import Settings
from .state import OnlineState, Row, UserRecord, UserStateStore
from .store.snapshots import Body, Parts, SnapshotInfo, SnapshotRepo
from .store.sql import StoredItem

log = logging.getLogger("liverec.snapshot")

#: Version of the snapshot body layout (bump when :class:`ModelSet` changes shape).
FORMAT_VERSION = 4

#: Settings that do not shape the learned state a snapshot holds (where and how the node
#: runs, when it re-fits, what input it accepts, how a list is filtered and diversified at
#: request time): they may differ between the node that wrote a snapshot and the one that
#: loads it. A node restarted with another blocklist or re-fit policy loads its snapshot
#: instead of fitting the whole log again.
DEPLOYMENT_FIELDS = frozenset({
    "store", "vector_cache", "encoder_batch_size", "encoder_progress", "impression_flush_seconds",
    "log_impressions", "open_access", "api_keys", "max_body_bytes", "max_batch", "response_cache_size",
    "response_cache_seconds", "workers", "state", "state_prefix", "sync_seconds", "dp_epsilon",
    "dp_max_contributions", "dp_budget", "dp_budget_window_s", "snapshot_dir", "snapshot_keep", "snapshot_every_events",
    "snapshot_interval_s", "http_fast_path",
    # when fits run (what they learn is the log's)
    "refit_growth", "refit_min_events", "background_fit_process", "bulk_fit_events", "tune_budget_seconds",
    # what input is accepted
    "auto_create_items", "max_clock_skew_seconds", "max_event_value",
    # request-time filters of a ranked list
    "exclude_seen", "diversity", "max_per_provider", "max_per_title_word", "blocklist", "blocked_terms",
})


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


#: The code that shapes learned state (the service, CLI, store and evaluation do not).
MODEL_CODE = ("models", "rank", "encode", "engine.py", "state.py", "snapshot.py", "settings.py", "types.py",
              "validate.py")


@lru_cache(maxsize=1)
def code_digest() -> str:
    """A digest of liverec's model-shaping source files (:data:`MODEL_CODE`): a change to any
    of them makes older snapshots incompatible."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    files = [root / part for part in MODEL_CODE if part.endswith(".py")]
    files += [p for part in MODEL_CODE if not part.endswith(".py") for p in (root / part).rglob("*.py")]
    for path in sorted(files):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def settings_digest(settings: Settings) -> str:
    """A digest of every model-shaping setting (all but :data:`DEPLOYMENT_FIELDS`).

    >>> settings_digest(Settings(workers=4, refit_growth=0, blocklist=["b1"])) == settings_digest(Settings())
    True
    >>> settings_digest(Settings(history_length=7)) == settings_digest(Settings())
    False
    """
    shaping = settings.model_dump(mode="json", exclude=set(DEPLOYMENT_FIELDS))
    return _digest(json.dumps(shaping, sort_keys=True).encode())


def compat_key(settings: Settings, encoder_id: str, tuned_json: str | None) -> dict[str, Any]:
    """What a snapshot must have been built with to be loaded by this node."""
    from . import __version__

    return {
        "format": FORMAT_VERSION,
        "liverec": __version__,
        "code": code_digest(),
        "encoder": encoder_id,
        "sources": sorted(settings.sources),
        "settings": settings_digest(settings),
        "tuned": _digest(tuned_json.encode()) if tuned_json else None,
        # Fleet mode (users in Redis) writes snapshots without users: a node keeping users in
        # memory must not load one.
        "user_state": "redis" if settings.state else "memory",
    }


_WHAT = {
    "format": "snapshot format", "liverec": "liverec version", "code": "liverec code", "encoder": "encoder model",
    "sources": "sources", "settings": "model settings", "tuned": "tuned configuration",
    "user_state": "user state",
}


def refusal(header: Mapping[str, Any], key: Mapping[str, Any], *, erasures: int, last_seq: int) -> str | None:
    """Why a snapshot with ``header`` cannot be loaded by a node with ``key`` (None: it can)."""
    for field, what in _WHAT.items():
        if header.get(field) != key[field]:
            return f"written with {what} {header.get(field)!r}, this node has {key[field]!r}"
    if header.get("erasures") != erasures:
        return (f"taken before a user was erased (the store has had {erasures} erasures, "
                f"the snapshot reflects {header.get('erasures')})")
    if int(header.get("log_seq", 0)) > last_seq:
        return f"ahead of the log (position {header.get('log_seq')}, the log ends at {last_seq}): another store's"
    return None


#: Per-user tables with fewer entries than this are pickled as they are.
PACK_MIN = 64


def pack(value: Any) -> Any:
    """``value`` in a form that loads fast; anything but a per-user table as it is.

    Unpickling builds one object per pickled object: at 1M events the per-user tables
    (a dict with an entry per user) are millions of small objects and cost seconds. So:

    - ``{key: 1-D array}`` (arrays of one dtype and length) is stored as one matrix
      (:class:`_ArrayDict`): it loads as one buffer, each key getting its row back;
    - ``{key: dict}`` is stored as one pickled blob per key (:class:`LazyTable`): a key's
      dict is unpickled when a learner first reads it, so a restart decodes only the
      users it serves or replays;
    - ``[array.array, ...]`` of one numeric type (session neighbours' sittings) is stored
      as one array and its offsets (:class:`_ArrayList`): pickling 150,000 small arrays one
      by one took half a second, under the engine lock of a scheduled snapshot.

    Either way the learner sees a value equal to the original (same keys, order, values).

    >>> table = {f"u{j}": {3: 1.0, j: 2.5} for j in range(100)}
    >>> packed = pack(table)
    >>> type(packed).__name__, unpack(packed) == table
    ('LazyTable', True)
    >>> pack({"a": 1}) == {"a": 1}
    True
    >>> rows = [array("i", range(j % 5)) for j in range(100)]
    >>> type(pack(rows)).__name__, unpack(pack(rows)) == rows
    ('_ArrayList', True)
    """
    if type(value) is list and len(value) >= PACK_MIN and type(value[0]) is array:
        return _ArrayList.pack(value) or value
    if type(value) is not dict or len(value) < PACK_MIN:
        return value
    first = next(iter(value.values()))
    if type(first) is np.ndarray:
        return _ArrayDict.pack(value) or value
    if type(first) is dict and all(type(v) is dict for v in value.values()):
        return LazyTable.of(value)
    return value


def unpack(value: Any) -> Any:
    """The inverse of :func:`pack` (a :class:`LazyTable` stays lazy)."""
    return value.unpack() if isinstance(value, (_ArrayDict, _ArrayList)) else value


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector off while a model set is unpickled or built: the
    many objects made at once would start full collections over the whole heap, each
    holding the GIL (a 100k-item model set loaded in 0.34–0.52 s with it on, 0.11 s off).

    >>> with paused_gc():
    ...     gc.isenabled()
    False
    >>> gc.isenabled()  # as it was before
    True
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class _ArrayList:
    """``[array.array, ...]`` of one numeric type code, as their concatenation and the offsets
    where each starts; unpacked, a list of new arrays with the same items."""

    typecode: str
    items: np.ndarray
    starts: np.ndarray

    @classmethod
    def pack(cls, arrays: list[Any]) -> "_ArrayList | None":
        code = arrays[0].typecode
        if code == "u" or not all(type(a) is array and a.typecode == code for a in arrays):
            return None
        if len({id(a) for a in arrays}) != len(arrays):  # a shared array would come back as two
            return None
        dtype = np.dtype(code)
        starts = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays)), out=starts[1:])
        items = np.frombuffer(b"".join(arrays), dtype=dtype) if starts[-1] else np.zeros(0, dtype=dtype)
        return cls(code, items, starts)

    def unpack(self) -> list[Any]:
        raw, size = self.items.tobytes(), self.items.dtype.itemsize
        bounds = (self.starts * size).tolist()
        return [array(self.typecode, raw[a:b]) for a, b in zip(bounds, bounds[1:])]


@dataclass
class _ArrayDict:
    """``{key: 1-D array}`` with arrays of one dtype and length, as one matrix; unpacked,
    each key gets its own row (a writable view of that matrix)."""

    keys: list[Any]
    rows: np.ndarray

    @classmethod
    def pack(cls, table: dict[Any, Any]) -> "_ArrayDict | None":
        arrays = list(table.values())
        a0 = arrays[0]
        if a0.ndim != 1 or a0.dtype.hasobject:
            return None
        if not all(type(a) is np.ndarray and a.dtype == a0.dtype and a.shape == a0.shape for a in arrays):
            return None
        if len({id(a) for a in arrays}) != len(arrays):  # a shared array would come back as two
            return None
        return cls(list(table), np.stack(arrays))

    def unpack(self) -> dict[Any, np.ndarray]:
        return dict(zip(self.keys, self.rows))


#: First bytes of a format-4 body; its arrays' data start at multiples of this many bytes.
_MAGIC, _ALIGN = b"LRS4", 64


def _layout(stream: bytes, buffers: Sequence[memoryview]) -> tuple[bytes, list[int], int]:
    """A body's table of contents, each buffer's offset and the body's length."""
    head = 4 + 8 + 8 + 16 * len(buffers)
    at = -(-(head + len(stream)) // _ALIGN) * _ALIGN
    table: list[tuple[int, int]] = []
    end = head + len(stream)
    for b in buffers:
        table.append((at, b.nbytes))
        end = at + b.nbytes
        at = -(-end // _ALIGN) * _ALIGN
    toc = struct.pack(f"<4sQQ{2 * len(buffers)}Q", _MAGIC, len(stream), len(buffers), *(x for t in table for x in t))
    return toc, [off for off, _ in table], end


def frame(stream: bytes, buffers: Sequence[memoryview]) -> memoryview:
    """One body: magic, the stream's length, each buffer's (offset, length), the stream,
    then the buffers, each at an offset that is a multiple of 64 (aligned for any dtype).

    The body is assembled a megabyte at a time into memory that is not zero-filled first,
    so a large snapshot (hundreds of MB for an EASE matrix) is never copied in one call that
    holds the GIL: requests served meanwhile wait milliseconds, not a second.

    >>> body = frame(b"stream", [memoryview(b"abc"), memoryview(b"")])
    >>> s, bufs = unframe(bytearray(body))
    >>> bytes(s), [bytes(b) for b in bufs], bytes(body).index(b"abc") % 64
    (b'stream', [b'abc', b''], 0)
    """
    return frame_parts(stream, buffers, copy=False).join()


def frame_parts(stream: bytes, buffers: Sequence[memoryview], *, copy: bool = True) -> Parts:
    """The :func:`frame` body as :class:`Parts`, the same bytes in order: writable buffers
    copied (learning may change them once the caller lets go of its lock; ``copy=False``:
    referred to, for a body joined at once), read-only ones referred to. A read-only buffer
    is taken to stay as it is: a learner marks read-only the arrays it never changes until a
    fit replaces them (:attr:`Learner.fixed_between_fits`).

    >>> fixed = np.arange(3, dtype=np.uint8); fixed.flags.writeable = False
    >>> live = np.arange(3, dtype=np.uint8)
    >>> body = frame_parts(b"stream", [memoryview(fixed), memoryview(live)])
    >>> live[:] = 9  # changed after the capture: the body keeps what it was
    >>> bytes(body.join()) == bytes(frame(b"stream", [memoryview(fixed), memoryview(np.arange(3, dtype=np.uint8))]))
    True
    >>> any(np.shares_memory(np.frombuffer(p, np.uint8), fixed) for p in body.parts)  # referred to, not copied
    True
    """
    toc, offsets, end = _layout(stream, buffers)
    parts: list[bytes | memoryview] = [toc, stream]
    pos = len(toc) + len(stream)
    for b, start in zip(buffers, offsets):
        if start > pos:
            parts.append(bytes(start - pos))  # alignment padding
        parts.append(Parts([b]).join() if copy and not b.readonly else b)
        pos = start + b.nbytes
    assert pos == end or not buffers
    return Parts(parts)


def unframe(body: bytes | bytearray | memoryview) -> tuple[memoryview, list[memoryview]]:
    """(stream, buffers) of a :func:`frame` body, as views of it (of a writable copy when
    ``body`` is read-only: arrays loaded from the buffers are written to in place)."""
    mv = memoryview(body)
    if mv.readonly:
        mv = memoryview(bytearray(mv))
    magic, n_stream, n_buf = struct.unpack_from("<4sQQ", mv)
    if magic != _MAGIC:
        raise ValueError("not a format-4 snapshot body")
    table = struct.unpack_from(f"<{2 * n_buf}Q", mv, 20)
    head = 20 + 16 * n_buf
    return mv[head : head + n_stream], [mv[a : a + n] for a, n in zip(table[::2], table[1::2])]


_MISSING = object()
_DECODING = threading.Lock()


class LazyTable(dict):
    """A per-user table (``{user: dict}``) restored from a snapshot: each value is unpickled
    the first time it is read, then kept. Every read path of a dict decodes
    (``[]``, ``get``, ``setdefault``, ``pop``, ``values``, ``items``, copies, ``==``);
    keys, ``in`` and ``len`` never need to. Pickling it keeps undecoded values as they are.
    An undecoded value is its pickled ``bytes`` (so tables are only made of values that are
    never ``bytes``: :func:`pack` makes them of dicts, snapshots of users' row tuples).

    >>> t = LazyTable.of({"a": {1: 2.0}, "b": {}})
    >>> t["a"], t.get("b"), t.get("c", 0), "a" in t, len(t), dict(t) == {"a": {1: 2.0}, "b": {}}
    ({1: 2.0}, {}, 0, True, 2, True)
    """

    __slots__ = ()

    @classmethod
    def of(cls, table: Mapping[Any, Any]) -> "LazyTable":
        out = cls()
        for k, v in table.items():
            dict.__setitem__(out, k, v if type(v) is bytes else pickle.dumps(v, protocol=5))
        return out

    def _load(self, key: Any, data: bytes) -> Any:
        """The value of ``key`` from its blob."""
        return pickle.loads(data)

    def _decode(self, key: Any, v: Any) -> Any:
        if type(v) is not bytes:
            return v
        # A request and an event may read a user first at the same time: one decodes and
        # stores, the other takes what was stored (an update to it is then never lost).
        with _DECODING:
            cur = dict.get(self, key, _MISSING)
            if cur is v:
                cur = self._load(key, v)
                dict.__setitem__(self, key, cur)
            return self._load(key, v) if cur is _MISSING else cur

    def __getitem__(self, key: Any) -> Any:
        return self._decode(key, dict.__getitem__(self, key))

    def get(self, key: Any, default: Any = None) -> Any:
        v = dict.get(self, key, _MISSING)
        return default if v is _MISSING else self._decode(key, v)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        v = dict.setdefault(self, key, default)
        return self._decode(key, v)

    def pop(self, key: Any, *default: Any) -> Any:
        v = dict.pop(self, key, *default)
        return self._load(key, v) if type(v) is bytes else v

    def popitem(self) -> tuple[Any, Any]:
        k, v = dict.popitem(self)
        return k, self._load(k, v) if type(v) is bytes else v

    def decode_all(self) -> "LazyTable":
        for k, v in dict.items(self):
            if type(v) is bytes:
                dict.__setitem__(self, k, self._load(k, v))
        return self

    def __iter__(self) -> Any:  # not dict's own: dict(t) and {**t} then read through __getitem__
        return dict.__iter__(self)

    def values(self) -> Any:
        return dict.values(self.decode_all())

    def items(self) -> Any:
        return dict.items(self.decode_all())

    def copy(self) -> dict[Any, Any]:
        return dict(self.items())

    def __eq__(self, other: object) -> bool:
        return dict.__eq__(self.decode_all(), other.decode_all() if isinstance(other, LazyTable) else other)

    __hash__ = None

    def __repr__(self) -> str:
        return f"LazyTable({dict.__repr__(self.decode_all())})"

    def __reduce__(self) -> Any:
        return LazyTable.of, (dict(dict.items(self)),)


class _LazyUsers(LazyTable):
    """Users restored from a snapshot (``{user: UserRecord}``), each built from its blob of
    ``(rows, seen)`` when first read: a restart builds only the users it replays or serves."""

    __slots__ = ("history_length",)
    history_length: int

    @classmethod
    def of_blobs(cls, blobs: LazyTable, history_length: int) -> "_LazyUsers":
        out = cls()
        out.history_length = history_length
        dict.update(out, dict.items(blobs))
        return out

    def _load(self, key: Any, data: bytes) -> Any:
        rows, seen = pickle.loads(data)
        return UserRecord.from_rows(key, rows, seen, history_length=self.history_length)

    def __reduce__(self) -> Any:  # a plain dict of records (the blobs are not records)
        return dict, (list(self.items()),)


@dataclass
class ModelSet:
    """Everything a node learned, at log position ``log_seq`` (see module docstring)."""

    log_seq: int
    erasures: int
    catalog_ids: list[str]  # dense order
    learners: dict[str, tuple[type[Learner], dict[str, Any]]]
    users: dict[str, tuple[tuple[Row, ...], list[int]]]  # user -> (recent events as rows, seen dense indices)
    online_fusion: dict[str, Any] | None  # per-click fusion learning: not in the log, so kept here

    @classmethod
    def capture(
        cls, learners: Mapping[str, Learner], users: UserStateStore, catalog: Catalog, *, log_seq: int,
        erasures: int, online_fusion: Mapping[str, Any] | None,
    ) -> "ModelSet":
        """The model set as it is now (the caller keeps it from changing meanwhile).

        Declared interests are not included: they live in the store and are loaded from it. Nor
        are users whose state lives in Redis (``users.records()`` gives none).
        """
        return cls(
            log_seq=int(log_seq), erasures=int(erasures), catalog_ids=list(catalog.ids),
            learners={name: (type(m), m.learned_state()) for name, m in learners.items()},
            users={u: (rows, seen) for u, rows, seen in users.records()},
            online_fusion=dict(online_fusion) if online_fusion else None,
        )

    def dumps(self) -> memoryview:
        """The snapshot body: learners' per-user tables packed (see :func:`pack`), then
        pickle protocol 5, uncompressed (load speed over size)."""
        return frame(*self._pickled())

    def dumps_parts(self) -> Parts:
        """:meth:`dumps` as :class:`Parts` (:func:`frame_parts`): what a learner keeps fixed
        between fits is referred to, not copied, so a scheduled snapshot's capture under the
        engine lock copies only what learning changes."""
        return frame_parts(*self._pickled())

    def _pickled(self) -> tuple[bytes, list[memoryview]]:
        body = dict(self.__dict__)
        body["learners"] = {name: (cls, {k: pack(v) for k, v in state.items()})
                            for name, (cls, state) in self.learners.items()}
        if len(self.users) >= PACK_MIN:  # one blob per user: built into a record when first read
            body["users"] = LazyTable.of(self.users)
        buffers: list[pickle.PickleBuffer] = []
        stream = pickle.dumps(body, protocol=5, buffer_callback=buffers.append)
        return stream, [b.raw() for b in buffers]

    @classmethod
    def loads(cls, body: bytes | bytearray | memoryview) -> "ModelSet":
        """The model set in ``body`` (from :meth:`dumps`); its arrays are views of ``body``
        when it is writable (a ``bytearray``), else of one copy of it."""
        stream, buffers = unframe(body)
        with paused_gc():
            d = pickle.loads(stream, buffers=buffers)
        d["learners"] = {name: (c, {k: unpack(v) for k, v in state.items()}) for name, (c, state) in d["learners"].items()}
        return cls(**d)

    def arrange(self, stored: Sequence[StoredItem]) -> tuple[list[StoredItem], list[str]]:
        """The store's items in the snapshot's dense order (items added since at the end), and
        the ids the snapshot knows that are gone from the store (given empty placeholders,
        to be marked removed): every dense index means the item it meant when written.

        >>> a, b = (StoredItem(i, x, "", {}, 0.0, 0.0) for i, x in ((1, "a"), (2, "b")))
        >>> ms = ModelSet(0, 0, ["gone", "b"], {}, {}, None)
        >>> order, gone = ms.arrange([a, b])
        >>> [s.id for s in order], gone
        (['gone', 'b', 'a'], ['gone'])
        """
        by_id = {s.id: s for s in stored}
        known = set(self.catalog_ids)
        gone = [i for i in self.catalog_ids if i not in by_id]
        order = [by_id.get(i) or StoredItem(-1, i, "", {}, 0.0, 0.0) for i in self.catalog_ids]
        return order + [s for s in stored if s.id not in known], gone

    def build_learners(self, catalog: Catalog) -> dict[str, Learner]:
        return {name: Learner.from_state(cls, state, catalog) for name, (cls, state) in self.learners.items()}

    def build_users(self, history_length: int) -> OnlineState:
        with paused_gc():  # one object per user, made at once
            return self._build_users(history_length)

    def _build_users(self, history_length: int) -> OnlineState:
        users = OnlineState(history_length)
        if isinstance(self.users, LazyTable):
            users.users = _LazyUsers.of_blobs(self.users, history_length)
            for name in self.users:
                users.touch(name)
            return users
        for name, (rows, seen) in self.users.items():
            users.users[name] = UserRecord.from_rows(name, rows, seen, history_length=history_length)
            users.touch(name)
        return users


class Snapshots:
    """Writes, finds and prunes one store's model snapshots (``repo`` None: switched off)."""

    def __init__(self, repo: SnapshotRepo | None, keep: int) -> None:
        self.repo = repo if keep > 0 else None
        self.keep = keep
        self.last_write: dict[str, float] | None = None  # log_seq, bytes, seconds of the last write
        self.log_seq = 0  # position of the last snapshot loaded or written
        self._scheduler: Scheduler | None = None

    @property
    def enabled(self) -> bool:
        return self.repo is not None

    def write(self, body: Body, key: Mapping[str, Any], *, log_seq: int, erasures: int,
              meta: Mapping[str, Any] | None = None) -> SnapshotInfo | None:
        """Store ``body`` (from :meth:`ModelSet.dumps`) with its header, then prune."""
        if self.repo is None:
            return None
        header = {**key, "log_seq": int(log_seq), "erasures": int(erasures), "written": time.time(), **(meta or {})}
        t0 = time.perf_counter()
        info = self.repo.write(header, body)
        dt = time.perf_counter() - t0
        self.last_write = {"log_seq": float(log_seq), "bytes": float(len(body)), "seconds": dt}
        self.log_seq = max(self.log_seq, int(log_seq))
        if self._scheduler is not None:
            self._scheduler.wrote(int(log_seq))
        log.info("snapshot at log position %d written (%.1f MB in %.2f s)", log_seq, len(body) / 1e6, dt)
        self.prune(erasures)
        return info

    def newest(self, key: Mapping[str, Any], *, erasures: int, last_seq: int) -> ModelSet | None:
        """The newest compatible snapshot, loaded; None (and a log line saying why) if there is none."""
        if self.repo is None:
            return None
        infos = self.repo.list()
        for info in infos:
            why = refusal(info.header, key, erasures=erasures, last_seq=last_seq)
            if why is None:
                try:
                    ms = ModelSet.loads(self.repo.read(info))
                except Exception as exc:  # truncated, or classes that no longer exist
                    why = f"unreadable ({type(exc).__name__}: {exc})"
                else:
                    log.info("loaded the snapshot at log position %d; replaying the events after it", info.log_seq)
                    self.log_seq = info.log_seq
                    return ms
            log.warning("snapshot %s (log position %d) refused: %s", info.key, info.log_seq, why)
        if infos:
            log.warning("no compatible snapshot: re-fitting from the whole event log")
        elif last_seq:
            log.info("no snapshot yet: fitting from the whole event log")
        return None

    def prune(self, erasures: int) -> int:
        """Delete snapshots taken before the last erasure, and all but the ``keep`` newest others."""
        if self.repo is None:
            return 0
        kept, dropped = 0, 0
        for info in self.repo.list():
            if info.header.get("erasures") == erasures and kept < self.keep:
                kept += 1
                continue
            self.repo.delete(info)
            dropped += 1
        return dropped

    def erased(self) -> None:
        """A user was erased: delete every snapshot (they hold the user's state) and have the
        scheduler write a new one (which holds none of it) at its next poll."""
        if self.repo is None:
            return
        for info in self.repo.list():
            self.repo.delete(info)
        if self._scheduler is not None:
            self._scheduler.request()

    def schedule(self, take: Callable[[], SnapshotInfo | None], position: Callable[[], int], *,
                 every_events: int, interval_s: float) -> None:
        """Start writing snapshots on a schedule (see :class:`Scheduler`); nothing if switched off."""
        if self.repo is None or not (every_events or interval_s):
            return
        self._scheduler = Scheduler(take, position, every_events=every_events, interval_s=interval_s)
        self._scheduler.wrote(self.log_seq)
        self._scheduler.start()

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()


#: Scheduled snapshots take at most this share of the time: after one that took ``t``
#: seconds, the next by count waits until ``t / MAX_DUTY`` seconds have passed since it began.
MAX_DUTY = 0.05


class Scheduler:
    """Calls ``take()`` (in its own thread) every ``every_events`` new log events, every
    ``interval_s`` seconds when there were new events, and soon after :meth:`request`.

    ``position()`` is the log's current end; :meth:`wrote` tells it a snapshot at a log
    position was written (by a fit, say), which restarts both counts. ``take()`` returns
    None when it could not write now (a fit is running): it is asked again next poll.
    Snapshots by count are spaced so that writing them takes at most :data:`MAX_DUTY` of
    the time (a scheduled snapshot holds the engine lock while it serialises): under heavy
    ingestion they come every ``t / MAX_DUTY`` seconds rather than every ``every_events``.

    >>> sch = Scheduler(lambda: None, lambda: 0, every_events=100, interval_s=0)
    >>> sch.wrote(50); sch.due(120), sch.due(150)
    (False, True)
    """

    def __init__(self, take: Callable[[], SnapshotInfo | None], position: Callable[[], int], *, every_events: int,
                 interval_s: float, poll_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.take, self.position, self.clock = take, position, clock
        self.every_events, self.interval_s, self.poll_s = every_events, interval_s, poll_s
        self._last_seq, self._last_time = 0, clock()
        #: When the last scheduled snapshot began, and how long it took.
        self._began, self._took = self._last_time, 0.0
        self._asked = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liverec-snapshot", daemon=True)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def wrote(self, log_seq: int) -> None:
        self._last_seq, self._last_time = log_seq, self.clock()

    def request(self) -> None:
        """Take a snapshot at the next poll, whatever the counts."""
        self._asked = True

    def due(self, position: int) -> bool:
        new = position - self._last_seq
        if self._asked:
            return True
        now = self.clock()
        if self.every_events and new >= self.every_events and now - self._began >= self._took / MAX_DUTY:
            return True
        return bool(self.interval_s and new > 0 and now - self._last_time >= self.interval_s)

    def poll(self) -> None:
        """Take a snapshot if one is due (the thread calls this every ``poll_s`` seconds)."""
        if self.due(self.position()):
            began = self.clock()
            if self.take() is not None:
                self._asked = False
                self._began, self._took = began, self.clock() - began

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception:  # keep serving; the next poll tries again
                log.exception("scheduled snapshot failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

