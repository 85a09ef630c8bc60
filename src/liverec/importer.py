"""Add a catalog to a serving engine in the background, in chunks, first items first.

Encoding a large catalog takes minutes on a small CPU (10,000 books: about four on
2 cores, when no vector cache holds them yet). A :class:`CatalogImport` lets the
engine serve meanwhile: each chunk is encoded outside the engine's lock (requests
keep being answered), then added in one short step, so the catalog grows while
the page is up. Order the items by importance (the shipped books come most-rated
first): the first chunk is small so the first lists come within seconds.

Examples
--------
>>> imp = CatalogImport(engine, load_goodbooks()).start()   # doctest: +SKIP
>>> engine.import_progress                                   # doctest: +SKIP
(576, 10000)
>>> imp.join(); engine.n_items                               # doctest: +SKIP
10000
"""

from __future__ import annotations

import logging
import threading
from typing import Sequence

from .encode.text import render_text
from .engine import Engine
from .types import Item

log = logging.getLogger("liverec.import")


class CatalogImport:
    """Adds ``items`` to ``engine`` chunk by chunk on a daemon thread.

    While it runs, ``engine.import_progress`` is ``(items done, items in all)``;
    ``None`` once it ends. ``error`` holds what stopped it early, if anything.

    Parameters
    ----------
    first : int
        Size of the first chunk (small: the first lists come quickly).
    chunk : int
        Size of every later chunk.
    """

    def __init__(self, engine: Engine, items: Sequence[Item], *, first: int = 64, chunk: int = 256) -> None:
        if first < 1 or chunk < 1:
            raise ValueError(f"chunk sizes must be at least 1 (first={first}, chunk={chunk})")
        self.engine = engine
        self.items = list(items)
        self.first, self.chunk = first, chunk
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="liverec-import", daemon=True)

    def start(self) -> "CatalogImport":
        """Start importing on a background thread; returns ``self``."""
        self.engine.import_progress = (0, len(self.items))
        self._thread.start()
        return self

    def run(self) -> None:
        """Import every chunk on the calling thread (what :meth:`start` runs)."""
        eng, total, done, size = self.engine, len(self.items), 0, self.first
        eng.import_progress = (0, total)
        try:
            while done < total and not self._stop.is_set():
                part = self.items[done : done + size]
                # Encode (and cache) outside the engine's lock; add_items then only reads the cache.
                eng.encoder.encode([render_text(it.text, it.attributes, eng.settings.text_template) for it in part])
                eng.add_items(part)
                done += len(part)
                eng.import_progress = (done, total)
                size = self.chunk
        except Exception as exc:  # a background thread: log it, keep serving what was added
            self.error = exc
            log.error("catalog import stopped after %d of %d items: %s", done, total, exc)
        finally:
            eng.import_progress = None

    def stop(self) -> None:
        """Stop after the chunk in progress (the items added so far stay)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the import to end."""
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
