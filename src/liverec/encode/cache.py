"""Encode through the store's vector cache: only new or changed text reaches the model."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..store import Store
from .encoder import Encoder
from .text import text_hash


class CachedEncoder:
    """Wraps an :class:`Encoder` with a durable (model id, text hash) -> vector cache.

    ``calls`` counts texts actually sent to the model (a cache hit sends none).

    Examples
    --------
    >>> ce = CachedEncoder(encoder, store)                 # doctest: +SKIP
    >>> ce.encode(["Dune"]); ce.encode(["Dune"]); ce.calls  # doctest: +SKIP
    1
    """

    def __init__(self, encoder: Encoder, store: Store, *, progress: bool = True) -> None:
        self.encoder = encoder
        self.store = store
        self.progress = progress
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def model_id(self) -> str:
        return self.encoder.model_id

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) unit vectors for ``texts``; empty text gives a zero vector."""
        hashes = [text_hash(t) for t in texts]
        found = self.store.get_vectors(self.model_id, [h for h, t in zip(hashes, texts) if t])
        missing = {h: t for h, t in zip(hashes, texts) if t and h not in found}
        if missing:
            todo = list(missing.items())
            vecs = self.encoder.encode([t for _, t in todo], progress=self.progress and len(todo) > 256)
            self.calls += len(todo)
            new = {h: v for (h, _), v in zip(todo, vecs)}
            self.store.put_vectors(self.model_id, new)
            found.update(new)
        # A full cache hit never touches (or even loads) the model.
        dim = len(next(iter(found.values()))) if found else self.dim
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, (h, t) in enumerate(zip(hashes, texts)):
            if t:
                out[i] = found[h]
        return out
