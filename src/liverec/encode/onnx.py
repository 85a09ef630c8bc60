"""The same sentence encoder run by ONNX Runtime instead of PyTorch (≈1.5× faster on CPU).

The transformer is exported once from the local weights (``torch.onnx.export``, the
TorchScript exporter, which needs ``onnx``; no download) into ``cache_dir`` and then run by
``onnxruntime`` with the model's own ``tokenizer.json`` (Hugging Face ``tokenizers``);
pooling (mean over tokens, as the model's ``1_Pooling`` config says) and L2
normalisation follow in numpy. Vectors match the PyTorch path to ~1e-6, so both share
the vector cache (same ``model_id``). ``onnx`` and ``onnxruntime`` come with the extra
``liverec[onnx]``.

Examples
--------
>>> enc = OnnxEncoder()                       # doctest: +SKIP
>>> enc.encode(["The Hobbit"]).shape          # doctest: +SKIP
(1, 384)
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from .._extras import require
from ..errors import LiverecError
from .encoder import model_id_for, shipped_model_path


def require_runtime() -> None:
    """Raise :class:`~liverec._extras.MissingExtraError` unless ``liverec[onnx]`` is installed."""
    for module in ("onnxruntime", "onnx"):  # onnx: torch's exporter writes the model with it
        require(module, "onnx", "the ONNX encoder backend (encoder_backend='onnx')")


class OnnxEncoder:
    """A sentence-transformers model folder (BERT-style, mean pooling) on ONNX Runtime.

    Parameters
    ----------
    model : local model folder; ``None`` = the shipped all-MiniLM-L6-v2.
    cache_dir : where the exported ``.onnx`` file is kept (default ``~/.cache/liverec/onnx``).
    threads : ONNX Runtime intra-op threads (default: what it picks).
    """

    def __init__(self, model: str | None = None, *, batch_size: int = 64, cache_dir: str | None = None,
                 threads: int | None = None) -> None:
        require_runtime()
        self.path = model or shipped_model_path()
        if not os.path.isdir(self.path):
            raise LiverecError(f"the ONNX backend needs a local model folder, got {self.path!r}; "
                               "use encoder_backend='torch' for a hub model name.")
        self.model_id = model_id_for(model)
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir or Path.home() / ".cache" / "liverec" / "onnx")
        self.threads = threads
        self._session = None
        self._tok = None
        self._lock = threading.Lock()
        cfg = Path(self.path, "1_Pooling", "config.json")
        pooling = json.loads(cfg.read_text()) if cfg.exists() else {"pooling_mode_mean_tokens": True}
        if not pooling.get("pooling_mode_mean_tokens"):
            raise LiverecError(f"{self.path}: the ONNX backend implements mean pooling only; use encoder_backend='torch'.")
        st_cfg = Path(self.path, "sentence_bert_config.json")
        self.max_len = int(json.loads(st_cfg.read_text()).get("max_seq_length", 256)) if st_cfg.exists() else 256
        self.dim = int(json.loads(Path(self.path, "config.json").read_text())["hidden_size"])

    def _onnx_file(self) -> Path:
        digest = hashlib.sha256(self.model_id.encode()).hexdigest()[:16]
        return self.cache_dir / f"{digest}.onnx"

    def _export(self, out: Path) -> None:
        import torch
        from transformers import AutoModel

        bert = AutoModel.from_pretrained(self.path).eval()

        class _Hidden(torch.nn.Module):  # keyword arguments: forward()'s positional order varies by version
            def __init__(self) -> None:
                super().__init__()
                self.bert = bert  # a registered submodule: weights export as initialisers

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        model = _Hidden()
        ids = torch.ones((2, 8), dtype=torch.long)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with torch.no_grad():
            torch.onnx.export(
                model, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(tmp),
                input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["last_hidden_state"],
                dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids",
                                                                  "last_hidden_state")},
                opset_version=17, dynamo=False,
            )
        tmp.replace(out)  # atomic: a half-written file is never loaded

    def _load(self):
        if self._session is None:
            import onnxruntime as ort
            from tokenizers import Tokenizer

            f = self._onnx_file()
            if not f.exists():
                self._export(f)
            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            self._session = ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"])
            tok = Tokenizer.from_file(str(Path(self.path, "tokenizer.json")))
            tok.enable_truncation(self.max_len)
            tok.enable_padding()
            self._tok = tok
        return self._session, self._tok

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Encode ``texts`` into an (n, dim) float32 array of unit vectors."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            sess, tok = self._load()
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            # Length-sorted batches pad less (the PyTorch path does the same).
            order = np.argsort([-len(t) for t in texts], kind="stable")
            for s in range(0, len(texts), self.batch_size):
                rows = order[s : s + self.batch_size]
                enc = tok.encode_batch([texts[i] for i in rows])
                ids = np.array([e.ids for e in enc], dtype=np.int64)
                mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
                types = np.array([e.type_ids for e in enc], dtype=np.int64)
                hidden = sess.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
                m = mask[..., None].astype(np.float32)
                pooled = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
                out[rows] = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        return out
