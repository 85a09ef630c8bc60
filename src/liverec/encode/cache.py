"""Encode through the vector caches: only text no cache holds reaches the model.

Two caches, both keyed by (model id, text hash):

* the store's own ``vectors`` table: travels with the store (a copied database file, a
  replica on another machine) and is what erasure cleans;
* the machine cache, one SQLite file per machine (``~/.cache/liverec/vectors.db`` on
  Linux, from platformdirs) shared by every store, the demo, ``import-items`` and
  ``liverec eval``: a catalog encoded once on this machine is never encoded again.

A user's own text (declared interests) never enters the machine cache: it lives in the
user's store only, where erasing the user deletes it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
from sqlalchemy.engine import make_url as sa_url
from sqlalchemy.exc import OperationalError

from ..errors import StoreError
from ..store import Store
from .encoder import Encoder
from .text import text_hash

log = logging.getLogger("liverec.encode")

#: Values of ``Settings.vector_cache`` / ``LIVEREC_VECTOR_CACHE`` that turn the machine cache off.
CACHE_OFF = ("off", "none", "false", "0", "")


def machine_cache_url() -> str:
    """URL of this machine's vector cache (created on first use).

    Examples
    --------
    >>> machine_cache_url().startswith("sqlite:///") and machine_cache_url().endswith("vectors.db")
    True
    """
    import platformdirs

    return f"sqlite:///{Path(platformdirs.user_cache_dir('liverec', appauthor=False)) / 'vectors.db'}"


def cache_url(setting: str | None) -> str | None:
    """The vector-cache URL a ``vector_cache`` setting names; None = no machine cache.

    ``None`` (the default) is the machine cache; ``"off"`` turns it off; a store URL
    (``sqlite:///path.db``, ``postgresql://...``) or a plain file path picks another.

    Examples
    --------
    >>> cache_url("off") is None, cache_url("/tmp/v.db"), cache_url("sqlite:///v.db")
    (True, 'sqlite:////tmp/v.db', 'sqlite:///v.db')
    """
    if setting is None:
        return machine_cache_url()
    if setting.strip().lower() in CACHE_OFF:
        return None
    if "://" not in setting:
        return f"sqlite:///{os.path.abspath(os.path.expanduser(setting))}"
    return setting


def open_cache(url: str) -> Store:
    """Open a shared vector cache; several processes may create the same new file at once.

    SQLite's WAL mode and busy timeout (the store's defaults) make concurrent reads and
    writes wait rather than fail; the one race left, two processes creating the tables
    of a new file together, is retried.
    """
    path = sa_url(url).database if url.startswith("sqlite") else None
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(5):
        try:
            return Store.open(url)
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def open_shared_cache(setting: str | None, store_url: str) -> Store | None:
    """The vector cache ``Settings.vector_cache`` names, opened; None when it is off or is the store.

    The default machine cache is a convenience: if it cannot be created (a read-only home
    directory, a full disk) the engine logs why and runs on its store's own vectors. A
    cache set explicitly must open, or the error says which one failed.
    """
    url = cache_url(setting)
    if url is None or url == store_url:
        return None
    try:
        return open_cache(url)
    except (OSError, StoreError, OperationalError) as exc:
        if setting is not None:
            raise StoreError(
                f"cannot open the vector cache {url!r} (LIVEREC_VECTOR_CACHE / vector_cache): {exc}.",
                fix="point LIVEREC_VECTOR_CACHE at a writable file or store, or set it to 'off'.",
            ) from exc
        log.warning("no machine vector cache (%s): %s. Each store keeps its own vectors; set "
                    "LIVEREC_VECTOR_CACHE to a writable file to share them.", url, exc)
        return None


class CachedEncoder:
    """Wraps an :class:`Encoder` with the store's and the machine's vector caches.

    ``calls`` counts texts actually sent to the model (a cache hit sends none). Texts
    found only in the machine cache are copied into the store, so the store stays
    complete on its own. ``private=True`` (a user's own text) skips the machine cache
    both ways.

    Examples
    --------
    >>> ce = CachedEncoder(encoder, store, shared=Store.open(machine_cache_url()))  # doctest: +SKIP
    >>> ce.encode(["Dune"]); ce.encode(["Dune"]); ce.calls                         # doctest: +SKIP
    1
    """

    def __init__(
        self, encoder: Encoder, store: Store, *, shared: Store | None = None, progress: bool = True
    ) -> None:
        self.encoder = encoder
        self.store = store
        self.shared = shared
        self.progress = progress
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def encode(self, texts: Sequence[str], *, private: bool = False) -> np.ndarray:
        """(n, dim) unit vectors for ``texts``; empty text gives a zero vector."""
        hashes = [text_hash(t) for t in texts]
        wanted = {h: t for h, t in zip(hashes, texts) if t}
        found = self.store.get_vectors(self.model_id, list(wanted))
        shared = None if private else self.shared
        if shared is not None and len(found) < len(wanted):
            hits = shared.get_vectors(self.model_id, [h for h in wanted if h not in found])
            self.store.put_vectors(self.model_id, hits)
            found.update(hits)
        missing = [(h, t) for h, t in wanted.items() if h not in found]
        if missing:
            vecs = self.encoder.encode([t for _, t in missing], progress=self.progress and len(missing) > 256)
            self.calls += len(missing)
            new = {h: v for (h, _), v in zip(missing, vecs)}
            self.store.put_vectors(self.model_id, new)
            if shared is not None:
                shared.put_vectors(self.model_id, new)
            found.update(new)
        # A full cache hit never touches (or even loads) the model.
        dim = len(next(iter(found.values()))) if found else self.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, (h, t) in enumerate(zip(hashes, texts)):
            if t:
                out[i] = found[h]
        return out

    def forget(self, texts: Sequence[str]) -> None:
        """Delete these texts' vectors from the machine cache (e.g. an erased user's interests)."""
        if self.shared is not None and texts:
            self.shared.delete_vectors([text_hash(t) for t in texts])
