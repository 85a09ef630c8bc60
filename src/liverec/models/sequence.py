"""Sequence model: what the user does next, from the last few things they did.

A small GRU (``kind="gru"``) or one causal self-attention block with learned
positions (``kind="attention"``) reads the user's last ``max_len`` events — each the
item's embedding concatenated with a learned embedding of the event's polarity
(positive or negative feedback) — and outputs ``h``; the score of item ``i`` is
``cos(h, v_i) / temperature`` with ``v_i = MLP(LM vector of i)``, so an item nobody has
touched yet is ranked by its text. The item embeddings feed the encoder too (tied
input and output embeddings, as in SASRec): once cached, a user's ``h`` costs one
encoder pass over at most ``max_len + 1`` steps, with no LM-sized matrix products.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..encode.catalog import ItemIds
from .base import FeedbackConfig, UserState, register
from .retrieval import FactorIndex, best
from .torch_utils import (
    TorchLearner,
    mlp,
    require_torch,
    sampled_softmax,
    threads,
    time_order,
    time_split,
    train_early_stopping,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor, nn

_KINDS = ("gru", "attention")


@register
class SequenceModel(TorchLearner):
    """Next-item prediction from the user's recent events, with per-event state updates.

    Batch fit: one training pair per positive event, (the user's previous
    ``max_len`` events with a non-zero feedback weight -> this item), in time order;
    the latest ``val_frac`` validate. The loss is a sampled softmax over the batch's
    targets (in-batch negatives; a duplicate of a row's own target is masked) at
    ``temperature``; Adam, early stopping after ``patience`` epochs without a better
    validation loss, best weights kept, ``history_`` per epoch. Every sequence starts
    with a learned begin token, so a user without history gets ``h`` of the empty
    sequence (a learned "what people start with").

    Online: ``learn_one`` appends the event to the user's sequence (a deque of
    ``max_len``) and drops their cached ``h``; the next ``score`` recomputes it once.
    A positive event also queues its (prefix -> item) pair in a replay buffer; every
    ``online_every`` events (0 = never) one Adam step (``online_lr``) on
    ``online_batch`` buffered pairs updates **only the sequence encoder**: the item
    tower stays frozen between batch fits, so the cached embeddings of the whole
    catalog stay valid (the step changes every user's ``h``, so those caches are dropped).
    ``num_threads`` and ``seed`` work as in :class:`~liverec.models.NeuralScorer`.
    A batch fit trains on the most recent ``max_pairs`` pairs (0 = all), so its time is
    bounded whatever the log's length. ``cold_popularity=False`` scores a user with no
    events 0 everywhere (in a fused engine the trending source answers them) instead of
    by the learned start state.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> from liverec.models import InteractionLog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> evs = [Event(user="u", item=i, timestamp=float(t)) for t, i in enumerate("abab")]
    >>> m = SequenceModel(epochs=2).fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="w", item="b", timestamp=9.0))
    >>> m.score(UserState("w"), cat.select(["a", "b"])).shape
    (2,)
    """

    name: ClassVar[str] = "sequence"
    # Online SGD on the encoder from a replay buffer is not a batch fit: the shared
    # suite's batch == incremental check does not apply.
    exact_incremental: ClassVar[bool] = False
    #: What ``fit(tune=True)`` tries: the window read (events) and the embedding size.
    search_space: ClassVar[dict[str, tuple]] = {"max_len": (10, 50), "emb_dim": (32, 128)}

    def __init__(
        self,
        *,
        kind: str = "gru",
        emb_dim: int = 64,
        hidden: int = 128,
        kind_dim: int = 8,
        max_len: int = 20,
        heads: int = 2,
        temperature: float = 0.1,
        epochs: int = 20,
        patience: int = 2,
        batch_size: int = 256,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        val_frac: float = 0.1,
        buffer_size: int = 10_000,
        online_every: int = 8,
        online_lr: float = 1e-3,
        online_batch: int = 64,
        max_pairs: int = 200_000,
        num_threads: int = 1,
        feedback: FeedbackConfig | None = None,
        cold_popularity: bool = True,
        seed: int = 0,
    ) -> None:
        self.kind = kind
        self.emb_dim = emb_dim
        self.hidden = hidden
        self.kind_dim = kind_dim
        self.max_len = max_len
        self.heads = heads
        self.temperature = temperature
        self.epochs = epochs
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.val_frac = val_frac
        self.buffer_size = buffer_size
        self.online_every = online_every
        self.online_lr = online_lr
        self.online_batch = online_batch
        self.max_pairs = max_pairs
        self.num_threads = num_threads
        self.feedback = feedback
        self.cold_popularity = cold_popularity
        self.seed = seed

    # ------------------------------------------------------------------ nets
    def _build(self, dim: int) -> "nn.ModuleDict":
        if self.kind not in _KINDS:
            from ..errors import ValidationError

            raise ValidationError(
                f"unknown kind {self.kind!r} for SequenceModel: use one of {_KINDS}.", field="kind"
            )
        torch = require_torch()
        nn = torch.nn
        e, x = self.emb_dim, self.emb_dim + self.kind_dim
        nets: dict[str, Any] = {
            "item": mlp([dim, self.hidden, e]),
            "polarity": nn.Embedding(2, self.kind_dim),  # 0 negative, 1 positive feedback
            "begin": nn.Embedding(1, x),
            "out": nn.Linear(e, e),
        }
        if self.kind == "gru":
            nets["gru"] = nn.GRU(x, e, batch_first=True)
        else:
            nets.update(
                inp=nn.Linear(x, e),
                pos=nn.Embedding(self.max_len + 1, e),  # by recency: 0 = the latest step
                attn=nn.MultiheadAttention(e, self.heads, batch_first=True),
                norm1=nn.LayerNorm(e),
                ffn=mlp([e, 2 * e, e]),
                norm2=nn.LayerNorm(e),
            )
        # Small learned embeddings (nn.Embedding draws N(0, 1)): next to unit-norm item
        # embeddings, N(0, 1) positions or polarities would drown the items' signal and
        # stall the first epochs (the attention block then plateaus and stops early).
        for key in ("polarity", "begin", "pos"):
            if key in nets:
                nn.init.normal_(nets[key].weight, std=0.02)
        return nn.ModuleDict(nets)

    def _item_out(self, e: "torch.Tensor") -> "torch.Tensor":
        return require_torch().nn.functional.normalize(e, dim=-1)

    def _encode(
        self, emb: "torch.Tensor", polarity: "torch.Tensor", lengths: "torch.Tensor"
    ) -> "torch.Tensor":
        """``h`` (B, e) of right-padded sequences: item embeddings (B, L, e), polarity and lengths (B,)."""
        torch = require_torch()
        nets = self.nets_
        b = emb.shape[0]
        width = int(lengths.max()) if b else 0  # padding past the longest sequence is never read
        emb, polarity = emb[:, :width], polarity[:, :width]
        x = torch.cat([emb, nets["polarity"](polarity)], dim=-1)
        x = torch.cat([nets["begin"].weight.expand(b, 1, -1), x], dim=1)  # step 0: begin token
        last = torch.arange(b)
        if self.kind == "gru":
            out, _ = nets["gru"](x)
        else:
            steps = x.shape[1]
            recency = (lengths[:, None] - torch.arange(steps)[None, :]).clamp(0, self.max_len)
            z = nets["inp"](x) + nets["pos"](recency)
            # Causal: step t sees steps <= t, so padding after a sequence's end is never read.
            mask = torch.ones(steps, steps, dtype=torch.bool).triu(1)
            a, _ = nets["attn"](z, z, z, attn_mask=mask, need_weights=False)
            z = nets["norm1"](z + a)
            out = nets["norm2"](z + nets["ffn"](z))
        return torch.nn.functional.normalize(nets["out"](out[last, lengths]), dim=-1)

    def _encoder_params(self) -> list[Any]:
        return [p for name, m in self.nets_.items() if name != "item" for p in m.parameters()]

    # ------------------------------------------------------------------- fit
    def _reset(self) -> None:
        self.seqs_: dict[str, deque[tuple[int, int]]] = {}
        self.h_: dict[str | None, np.ndarray] = {}  # cached h per user (None: the empty sequence)
        self.h_version_: int | None = None  # catalog version the cached h were computed at
        super()._reset()

    def _pairs(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(prefix items (N, L), prefix polarity (N, L), lengths (N,), targets (N,)) in time order.

        Also leaves every user's last ``max_len`` events in ``seqs_``.
        """
        order = time_order(times)
        order = order[weights[order] != 0]
        L = self.max_len
        codes = np.unique(users[order].astype(str), return_inverse=True)[1]
        g = np.argsort(codes, kind="stable")  # positions in `order`, by user, time order kept
        it, pol = items[order][g], (weights[order][g] > 0).astype(np.int64)
        starts = np.flatnonzero(np.diff(codes[g], prepend=-1))  # each user's first row
        ends = np.append(starts[1:], len(g)) if len(g) else starts
        seg_start = np.repeat(starts, ends - starts)
        # One pair per positive event: the (up to L) events of the same user before it.
        tgt = np.flatnonzero(pol == 1)
        start = np.maximum(tgt - L, seg_start[tgt])
        lengths = tgt - start
        cols = np.arange(L)
        valid = cols[None, :] < lengths[:, None]
        src = np.where(valid, start[:, None] + cols[None, :], 0)
        prefix = np.where(valid, it[src], 0) if len(it) else np.zeros((0, L), np.int64)
        ppol = np.where(valid, pol[src], 0) if len(it) else np.zeros((0, L), np.int64)
        for s, e in zip(starts, ends):
            tail = slice(max(s, e - L), e)
            user = str(users[order[g[s]]])
            self.seqs_[user] = deque(zip(it[tail].tolist(), pol[tail].tolist()), maxlen=L)
        by_time = np.argsort(g[tgt], kind="stable")  # g[tgt] = each target's rank in time
        return prefix[by_time], ppol[by_time], lengths[by_time], it[tgt][by_time]

    def _fit_arrays(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        torch = require_torch()
        prefix, pol, lengths, targets = self._pairs(users, items, weights, times)
        if self.max_pairs and len(targets) > self.max_pairs:  # the most recent pairs bound the fit's time
            keep = slice(len(targets) - self.max_pairs, None)
            prefix, pol, lengths, targets = prefix[keep], pol[keep], lengths[keep], targets[keep]
        n = len(targets)
        if n == 0:
            return
        vecs = torch.from_numpy(np.ascontiguousarray(self.catalog_.vectors, dtype=np.float32))
        nets = self.nets_

        def batch_loss(b: np.ndarray, train: bool) -> "Tensor | None":  # torch is a local here
            uniq, inv = np.unique(np.concatenate([prefix[b].ravel(), targets[b]]), return_inverse=True)
            emb = self._item_out(nets["item"](vecs[torch.from_numpy(uniq)]))
            m = len(b) * self.max_len
            seq_emb = emb[torch.from_numpy(inv[:m].reshape(len(b), self.max_len))]
            h = self._encode(seq_emb, torch.from_numpy(pol[b]), torch.from_numpy(lengths[b]))
            return self._softmax(h, emb[torch.from_numpy(inv[m:])], targets[b])

        n_train = time_split(n, self.val_frac)
        self.history_ = train_early_stopping(
            nets, batch_loss, n, n_train, epochs=self.epochs, patience=self.patience, lr=self.lr,
            batch_size=self.batch_size, rng=self.rng_, weight_decay=self.weight_decay,
        )

    def _softmax(
        self, h: "torch.Tensor", target_emb: "torch.Tensor", targets: np.ndarray
    ) -> "torch.Tensor":
        torch = require_torch()
        return sampled_softmax(h, target_emb, torch.from_numpy(targets.astype(np.int64)),
                               torch.arange(len(targets)), temperature=self.temperature)

    # ---------------------------------------------------------------- online
    def _prefix_row(self, seq: deque[tuple[int, int]] | None) -> tuple[np.ndarray, np.ndarray, int]:
        items = np.zeros(self.max_len, dtype=np.int64)
        pol = np.zeros(self.max_len, dtype=np.int64)
        if seq:
            items[: len(seq)], pol[: len(seq)] = zip(*seq)
        return items, pol, len(seq or ())

    def _learn(self, user: str, item: int, weight: float, t: float) -> None:
        if weight == 0:
            return
        seq = self.seqs_.get(user)
        if weight > 0:
            prefix, pol, n = self._prefix_row(seq)
            self.buffer_.add(prefix=prefix, pol=pol, length=n, target=item)
        if seq is None:
            seq = self.seqs_[user] = deque(maxlen=self.max_len)
        seq.append((item, int(weight > 0)))
        self.h_.pop(user, None)

    def _online_params(self) -> list[Any]:
        return self._encoder_params()

    def _replay_loss(self, batch: dict[str, np.ndarray]) -> "torch.Tensor | None":
        torch = require_torch()
        if len(np.unique(batch["target"])) < 2:  # nothing to contrast with
            return None
        emb = torch.from_numpy(self.item_embeddings())  # the frozen item tower: constants here
        h = self._encode(emb[torch.from_numpy(batch["prefix"])], torch.from_numpy(batch["pol"]),
                         torch.from_numpy(batch["length"].astype(np.int64)))
        return self._softmax(h, emb[torch.from_numpy(batch["target"].astype(np.int64))], batch["target"])

    def _after_online_step(self) -> None:
        self.h_.clear()

    # ----------------------------------------------------------------- serve
    def user_vector(self, user: str) -> np.ndarray:
        """``h`` of ``user``'s current sequence (unit norm), cached until their next event."""
        if self.h_version_ != self.catalog_.version:  # an item's embedding may have changed
            self.h_.clear()
            self.h_version_ = self.catalog_.version
        seq = self.seqs_.get(user)
        key = user if seq else None
        h = self.h_.get(key)
        if h is None:
            torch = require_torch()
            emb = self.item_embeddings()
            items, pol, n = self._prefix_row(seq)
            with torch.no_grad():
                h = self._encode(torch.from_numpy(emb[items][None]), torch.from_numpy(pol[None]),
                                 torch.tensor([n]))[0].numpy()
            self.h_[key] = h
        return h

    # --------------------------------------------------------------- retrieval
    def prepare_retrieval(self) -> None:
        """Build the output graph ``candidates`` searches (:class:`~.base.PreparesRetrieval`)."""
        if getattr(self, "fitted_", False):
            self._output_index()

    def _output_index(self) -> FactorIndex:
        """Inner-product HNSW over the item tower's outputs, in line with them.

        Rows whose output changed since the last sync (a new tower after a fit, changed
        or new items) are found by a fingerprint (each row's projection on a fixed random
        direction), as :class:`~.torch_utils.ItemTowerCache` finds changed LM vectors,
        so a catalog change re-inserts only what moved.
        """
        emb = self.item_embeddings()
        cat = self.catalog_
        key = (cat.version, self.cache_.generation)
        fi = self.__dict__.get("output_index_")
        if fi is None:
            fi = self.output_index_ = FactorIndex(emb.shape[1])
            self.output_index_key_, self.output_index_fp_ = None, np.zeros(0, dtype=np.float32)
        if self.output_index_key_ != key:
            direction = np.random.default_rng(0).standard_normal(int(emb.shape[1])).astype(np.float32)
            fp, old = emb @ direction, self.output_index_fp_
            m = min(len(old), len(fp))
            fi.changed(np.flatnonzero(old[:m] != fp[:m]))
            fi.sync(emb, cat.alive[: len(emb)])
            self.output_index_key_, self.output_index_fp_ = key, fp
        return fi

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """About the ``n`` best-scored live items (dense indices, best first): the user's
        ``h`` searched in an HNSW graph over the item outputs (scores are cosines), the
        found items ordered by their exact score. None for a user with no events when
        ``cold_popularity`` is off."""
        self._check_fitted()
        if n <= 0 or not self._ensure_nets() or (not self.cold_popularity and not self.seqs_.get(user.user)):
            return np.zeros(0, dtype=np.int64)
        self._sync_items()
        with threads(self.num_threads):
            h = self.user_vector(user.user)
            fi = self._output_index()
        keys = fi.search(h, n)
        return best(keys, self.item_embeddings()[keys] @ h, n)

    def floor(self, user: UserState, probe: int = 32) -> float | None:
        """The lowest score over live items: the ``probe`` items nearest ``-h``, scored exactly."""
        self._check_fitted()
        if not self._ensure_nets() or (not self.cold_popularity and not self.seqs_.get(user.user)):
            return 0.0
        self._sync_items()
        with threads(self.num_threads):
            h = self.user_vector(user.user)
            keys = self._output_index().search(-h, probe)
        return float((self.item_embeddings()[keys] @ h).min() / self.temperature) if len(keys) else None

    def _score(self, user: UserState, items: ItemIds) -> np.ndarray:
        if not self.cold_popularity and not self.seqs_.get(user.user):  # in a fused engine, trending covers them
            return np.zeros(len(items), dtype=np.float32)
        return items.project(self.item_embeddings(), self.user_vector(user.user)) / self.temperature
