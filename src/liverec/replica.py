"""Replica sync: keep one engine in line with what other engines write to the shared store.

The durable log is the source of truth. A replica remembers how far it has read
(``cursor``: the last log position it learned, or skipped as its own), the store's
change counter it last saw, which item rows and declared interests it has loaded,
and which erasures it has applied. :meth:`ReplicaSync.sync` learns the events after
the cursor in log order, loads changed items and interests, and notices erasures it
was not told about (another replica's notice may be lost): after a grace period it
asks for a background re-fit, which drops the erased user's state.

Examples
--------
>>> import threading
>>> import numpy as np
>>> from liverec.encode import Catalog
>>> from liverec.store import Store
>>> from liverec.types import Event
>>> store = Store.open()
>>> learned = []
>>> rep = ReplicaSync(store, Catalog(dim=2), threading.RLock(), write_lock=threading.RLock(), learn=learned.append, own=set(),
...                   load_items=lambda rows: 0, set_interests=lambda user, text: None,
...                   refit=lambda: None, fit_running=lambda: False)
>>> _ = store.append_events([Event(user="u", item="a", id="e1")])
>>> rep.behind(), rep.sync(catalog=False)["events"], [e.id for e in learned], rep.behind()
(True, 1, ['e1'], False)
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, ContextManager, Sequence

from .encode.catalog import Catalog
from .store import Store
from .types import Event

#: Seconds an erasure may go unannounced before the replica re-fits without its notice.
ERASURE_GRACE_S = 2.0
#: Overlap (seconds) of the item and interest scans, absorbing clock skew between replicas.
CLOCK_OVERLAP_S = 5.0


class ReplicaSync:
    """The replica cursor and catch-up logic of one engine (see the module docstring).

    ``learn(e)`` learns one event into the engine; ``own`` is the set of event ids the
    engine already learned at record time (skipped once, then forgotten);
    ``load_items(rows)`` brings stored item rows into the catalog and index;
    ``set_interests(user, text)`` loads a user's declared interests (None clears);
    ``refit()`` starts a background re-fit; ``fit_running()`` says whether one runs;
    ``before_sync(out)`` runs first (e.g. refill a shared user state that lost its data);
    ``batch()`` groups the user-state writes of one catch-up (one round trip to Redis).
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        lock: threading.RLock,
        *,
        write_lock: threading.RLock,
        learn: Callable[[Event], None],
        own: set[str],
        load_items: Callable[[Sequence[Any]], int],
        set_interests: Callable[[str, str | None], bool],
        refit: Callable[[], Any],
        fit_running: Callable[[], bool],
        before_sync: Callable[[dict[str, int]], None] | None = None,
        batch: Callable[[], ContextManager[Any]] = contextlib.nullcontext,
    ) -> None:
        self.store, self.catalog, self.lock, self.write_lock = store, catalog, lock, write_lock
        self.learn, self.own, self.load_items = learn, own, load_items
        self.set_interests, self.refit, self.fit_running = set_interests, refit, fit_running
        self.before_sync, self.batch = before_sync, batch
        self.cursor = 0  # last log seq this engine has learned (or skipped as its own)
        self.items_mark = 0.0
        self.item_seen: dict[str, float] = {}  # item id -> `updated` of the row loaded
        self.users_mark = time.time()
        self.erasures_seen = store.counter("erasures")
        self.erasures_applied: set[int] = set()
        self.erasure_noticed: float | None = None
        self.changes_seen = store.counter("changes")

    # ------------------------------------------------------------ bookkeeping
    def items_loaded(self, rows: Sequence[Any]) -> None:
        """Item rows (with ``id`` and ``updated``) now in the catalog."""
        for r in rows:
            self.item_seen[r.id] = r.updated
        if rows:
            self.items_mark = max(self.items_mark, max(r.updated for r in rows))

    def applied(self, epoch: int | None) -> None:
        """An erasure (the store's erasure counter value it produced) was applied here."""
        if epoch is not None:
            self.erasures_applied.add(epoch)

    def settled_erasures(self) -> int:
        """The erasure count this engine's state reflects (every erasure up to it applied)."""
        n = self.erasures_seen
        while n + 1 in self.erasures_applied:
            n += 1
        return n

    # ------------------------------------------------------------------- sync
    def behind(self) -> bool:
        """Whether another engine wrote to the shared store since this one last looked."""
        seq, changes = self.store.head()
        return seq > self.cursor or changes != self.changes_seen

    def catch_up(self) -> dict[str, int] | None:
        """Read-your-writes across processes: if another engine wrote to the store since
        this one last looked (one cheap query), :meth:`sync` now. None if nothing was new."""
        seq, changes = self.store.head()
        if seq <= self.cursor and changes == self.changes_seen:
            return None
        catalog = changes != self.changes_seen
        self.changes_seen = changes  # read before syncing: a later change is seen next time
        return self.sync(catalog=catalog)

    def sync(self, *, catalog: bool = True) -> dict[str, int]:
        """Learn the log after the cursor, load changed items and interests (``catalog``),
        notice missed erasures; returns what changed."""
        out = {"events": 0, "items": 0, "interests": 0, "refit": 0}
        if self.before_sync is not None:
            self.before_sync(out)
        with self.write_lock, self.lock, self.batch():
            last = self.cursor
            for seq, e in self.store.iter_events(after_seq=self.cursor):
                if e.id in self.own:
                    self.own.discard(e.id)
                else:
                    self.learn(e)
                    out["events"] += 1
                last = seq
            self.cursor = last
        if catalog:
            self._sync_catalog(out)
        epoch = self.store.counter("erasures")
        missed = [x for x in range(self.erasures_seen + 1, epoch + 1) if x not in self.erasures_applied]
        if not missed:
            self.erasures_seen, self.erasure_noticed = epoch, None
        elif self.erasure_noticed is None:
            self.erasure_noticed = time.monotonic()  # its notice may still be on the way
        elif time.monotonic() - self.erasure_noticed > ERASURE_GRACE_S and not self.fit_running():
            self.refit()
            self.erasures_seen, self.erasure_noticed = epoch, None
            out["refit"] = 1
        return out

    def _sync_catalog(self, out: dict[str, int]) -> None:
        """Items and interests changed by other engines (rows already loaded at the same
        ``updated`` are skipped without rendering)."""
        since = self.items_mark - CLOCK_OVERLAP_S
        todo = [i for i, u in self.store.item_versions_since(since) if self.item_seen.get(i) != u]
        changed = self.store.get_items(todo) if todo else []
        if changed:
            with self.lock:
                out["items"] = self.load_items(changed)
                self.items_loaded(changed)
        if self.store.count_items() != self.catalog.n_alive:
            alive = self.store.item_ids()
            gone = [i for i, a in zip(self.catalog.ids, self.catalog.alive) if a and i not in alive]
            if gone:
                with self.lock:
                    self.catalog.remove(gone)
                    out["items"] += len(gone)
        mark = time.time()
        for user, text in self.store.interests_changed_since(self.users_mark - CLOCK_OVERLAP_S):
            if self.set_interests(user, text):
                out["interests"] += 1
        self.users_mark = mark
