"""Served slates to the impression log: now, or batched by a background writer."""

from __future__ import annotations

import logging
import threading

from .sql import Impression, Store

#: Buffered impressions are written this many rows per transaction.
WRITE_CHUNK = 1000


class ImpressionWriter:
    """Writes impressions now (``every == 0``) or batched by a background thread.

    Why buffer: a durable SQLite commit per request costs ~2 ms, most of a cached
    recommendation's budget; impressions are telemetry for OPE and CTR, so losing the
    last fraction of a second of them on a crash is an acceptable trade (events are
    never buffered).
    """

    def __init__(self, store: Store, every: float) -> None:
        self.store, self.every = store, every
        self._buf: list[Impression] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if every > 0:
            self._thread = threading.Thread(target=self._run, name="liverec-impressions", daemon=True)
            self._thread.start()

    def write(self, rows: list[Impression]) -> None:
        if self._thread is None:
            self.store.log_impressions(rows)
            return
        with self._lock:
            self._buf.extend(rows)

    def flush(self) -> None:
        """Write what is buffered, :data:`WRITE_CHUNK` rows per transaction: the store has one
        writer at a time, so a commit of the event log waits for one chunk at most, not for a
        backlog of a busy second (tens of thousands of rows).

        >>> from liverec.store import Store
        >>> store = Store.open()
        >>> w = ImpressionWriter(store, every=0)
        >>> w.write([Impression("r1", "u", "b1", 0, 1.0, 1.0, "greedy", 0.0)]); store.count_impressions()
        1
        """
        # Two locks: writers only ever wait for the list swap, never for the disk; the
        # write lock makes a caller of flush() (an erasure) wait for a write in flight.
        with self._write_lock:
            with self._lock:
                rows, self._buf = self._buf, []
            for at in range(0, len(rows), WRITE_CHUNK):
                self.store.log_impressions(rows[at : at + WRITE_CHUNK])

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.every)
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - keep the writer alive; rows stay lost, not the thread
                logging.getLogger("liverec").exception("writing buffered impressions failed")

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
