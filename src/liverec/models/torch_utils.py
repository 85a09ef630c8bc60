"""Shared PyTorch plumbing for the neural learners (``neural``, ``sequence``).

Importing this module does not import torch: every function imports it when called,
so ``import liverec.models`` stays light and the CLI starts fast. Networks are built
from stock torch modules only (``nn.Sequential``, ``nn.ModuleDict``, ...), which
pickle with the learner (``Learner.dumps``) and need nothing from this package to load.

What lives here:

- :func:`seeded` / :func:`threads` — reproducible initialisation and a scoped thread count;
- :func:`mlp` — the tower builder;
- :func:`train_early_stopping` — Adam + time-ordered validation + patience, best weights kept;
- :func:`sampled_softmax` — softmax over in-batch and sampled negatives, false negatives masked;
- :class:`ReplayBuffer` — a bounded FIFO of recent training rows for online SGD;
- :class:`ItemTowerCache` — item-tower outputs for the whole catalog, refreshed lazily
  when ``catalog.version`` moves (only new or re-encoded rows are recomputed);
- :class:`EventLog` — the weighted history a learner was fitted on (``forget`` refits from it);
- :class:`TorchLearner` — the fit / learn_one / score / forget skeleton both learners share.
"""

from __future__ import annotations

import abc

import contextlib
import copy
import math
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Self, Sequence

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


def require_torch() -> Any:
    """The torch module, or an ImportError that says how to install it."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        raise ImportError(
            f"the neural and sequence learners need PyTorch ({exc}). "
            "Install it with: pip install 'torch>=2.2'."
        ) from exc
    return torch


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run torch's random initialisers from ``seed`` without touching the global RNG."""
    torch = require_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


_THREADS_LOCK = threading.Lock()
_threads_depth = 0
_threads_saved = 0


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Use ``n`` intra-op threads inside the block (0 = leave torch's setting alone).

    Small models gain nothing from several threads and lose a lot when the cores are
    busy: on a shared 2-core box a GRU pass over 21 steps took ~100 ms with torch's
    default 2 threads and ~4 ms with 1 (workers spin-waiting for a core). The setting
    is process-wide, so overlapping blocks (several request threads) share one saved
    value, restored when the last block exits. Setting it costs about a microsecond.
    """
    global _threads_depth, _threads_saved
    if n <= 0:
        yield
        return
    torch = require_torch()
    with _THREADS_LOCK:
        if _threads_depth == 0:
            _threads_saved = torch.get_num_threads()
        _threads_depth += 1
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_depth -= 1
            if _threads_depth == 0 and torch.get_num_threads() != _threads_saved:
                torch.set_num_threads(_threads_saved)


def mlp(sizes: Sequence[int]) -> "nn.Sequential":
    """``Linear -> ReLU -> ... -> Linear`` through ``sizes`` (input, hidden..., output)."""
    torch = require_torch()
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(torch.nn.ReLU())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers)


#: Smallest number of optimiser steps per epoch, and the smallest batch it may cost.
MIN_STEPS = 8
MIN_BATCH = 16
#: Fewer validation rows than this: no validation split (and no early stopping).
MIN_VAL = 16


def time_split(n: int, val_frac: float) -> int:
    """Rows ``[0, n_train)`` train and the rest (the latest) validate; returns ``n_train``.

    A validation split under ``MIN_VAL`` rows would make early stopping a coin toss
    (one noisy epoch ends training), so tiny logs train on everything for every epoch.
    """
    n_val = int(round(n * val_frac)) if val_frac > 0 else 0
    if n_val < MIN_VAL or n - n_val < 1:  # too few rows for a loss that means anything
        return n
    return n - n_val


def train_early_stopping(
    module: "nn.Module",
    batch_loss: Callable[[np.ndarray, bool], "torch.Tensor | None"],
    n: int,
    n_train: int,
    *,
    epochs: int,
    patience: int,
    lr: float,
    batch_size: int,
    rng: np.random.Generator,
    weight_decay: float = 0.0,
) -> list[dict[str, float]]:
    """Adam on rows ``[0, n_train)``, validation on ``[n_train, n)``, stop when it stalls.

    ``batch_loss(rows, train)`` returns the mean loss of a batch of row indices (or
    None to skip it). Batches hold ``batch_size`` rows, fewer on a log so small that
    an epoch would take less than ``MIN_STEPS`` steps (but at least ``MIN_BATCH``).
    Training batches are reshuffled every epoch from ``rng``;
    validation batches keep their (time) order, so the validation loss is a
    deterministic function of the weights. Training stops after ``patience`` epochs
    without a better validation loss and the best weights are restored. Returns one
    ``{"epoch", "train", "val"}`` row per epoch run (``val`` is NaN without a
    validation split, and then every epoch runs).
    """
    torch = require_torch()
    history: list[dict[str, float]] = []
    if n_train <= 0 or epochs <= 0:
        return history
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    best, best_state, stale = math.inf, None, 0
    val_rows = np.arange(n_train, n)
    # A tiny log would otherwise get one step per epoch and stop before learning
    # anything: shrink the batch so that an epoch has at least MIN_STEPS steps.
    batch_size = max(1, min(batch_size, max(MIN_BATCH, math.ceil(n_train / MIN_STEPS))))
    for epoch in range(1, epochs + 1):
        module.train()
        total, count = 0.0, 0
        for rows in _batches(rng.permutation(n_train), batch_size):
            loss = batch_loss(rows, True)
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
        module.eval()
        val = math.nan
        if len(val_rows):
            with torch.no_grad():
                vt, vc = 0.0, 0
                for rows in _batches(val_rows, batch_size):
                    loss = batch_loss(rows, False)
                    if loss is not None:
                        vt += float(loss) * len(rows)
                        vc += len(rows)
                val = vt / vc if vc else math.nan
        history.append({"epoch": float(epoch), "train": total / count if count else math.nan, "val": val})
        if math.isnan(val):
            continue
        if val < best - 1e-6:
            best, stale = val, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if stale >= patience:
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return history


def _batches(rows: np.ndarray, size: int) -> list[np.ndarray]:
    # Near-equal batches: no tail batch of one row (an in-batch softmax needs company).
    k = max(1, math.ceil(len(rows) / max(size, 1)))
    return [b for b in np.array_split(rows, k) if len(b)]


def sampled_softmax(
    query: "torch.Tensor",
    cand: "torch.Tensor",
    cand_ids: "torch.Tensor",
    target: "torch.Tensor",
    *,
    bias: "torch.Tensor | None" = None,
    temperature: float = 1.0,
) -> "torch.Tensor":
    """Cross-entropy of each query's target among shared candidates.

    ``query`` (B, e); ``cand`` (C, e) the candidates' embeddings with item ids
    ``cand_ids`` (C,) and optional ``bias`` (C,); ``target`` (B,) the column of each
    query's positive. Other columns holding the same item as a query's target are
    masked (an in-batch "negative" that is in fact the positive would push the
    model away from it).
    """
    torch = require_torch()
    logits = query @ cand.T / temperature
    if bias is not None:
        logits = logits + bias[None, :]
    same = cand_ids[None, :] == cand_ids[target][:, None]
    same[torch.arange(len(target)), target] = False
    logits = logits.masked_fill(same, -1e9)
    return torch.nn.functional.cross_entropy(logits, target)


class ReplayBuffer:
    """A bounded FIFO of training rows (a ring over numpy columns) for online SGD.

    Each row is a dict of fixed-shape fields; once ``capacity`` rows are held the
    oldest are overwritten, like ``deque(maxlen=capacity)``, but sampling a
    minibatch is one fancy-index per field instead of a walk through the deque.

    Examples
    --------
    >>> buf = ReplayBuffer(3)
    >>> for i in range(5):
    ...     buf.add(item=i, label=1.0)
    >>> len(buf), sorted(buf.sample(3, np.random.default_rng(0), replace=False)["item"].tolist())
    (3, [2, 3, 4])
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(int(capacity), 1)
        self.cols: dict[str, np.ndarray] = {}
        self.size = 0
        self.head = 0  # next slot to write

    def __len__(self) -> int:
        return self.size

    def add(self, **row: Any) -> None:
        if not self.cols:
            for k, v in row.items():
                a = np.asarray(v)
                self.cols[k] = np.zeros((min(self.capacity, 64),) + a.shape, dtype=a.dtype)
        if self.head >= len(next(iter(self.cols.values()))):  # grow toward capacity
            new = min(self.capacity, 2 * self.head)
            for k, col in self.cols.items():
                grown = np.zeros((new,) + col.shape[1:], dtype=col.dtype)
                grown[: len(col)] = col
                self.cols[k] = grown
        for k, v in row.items():
            self.cols[k][self.head] = v
        self.head = (self.head + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, n: int, rng: np.random.Generator, *, replace: bool = True) -> dict[str, np.ndarray]:
        if replace:
            rows = rng.integers(0, self.size, size=n)
        else:
            rows = rng.choice(self.size, size=min(n, self.size), replace=False)
        return {k: col[rows] for k, col in self.cols.items()}


class ItemTowerCache:
    """The item tower's output for every catalog slot, valid for one ``catalog.version``.

    Serving is then one mat-vec (``items.project(cache, user_vector)``). When the
    catalog's version moves, only new rows and rows whose LM vector changed are
    recomputed: each row keeps a fingerprint of the vector it was computed from (its
    projection on a fixed random direction), so a removal or an unrelated upsert
    costs one (n, d) mat-vec, not a pass through the tower. Call :meth:`invalidate`
    whenever the tower's weights change.

    Examples
    --------
    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a"], np.ones((1, 2), dtype=np.float32), [{}], [""])
    >>> cache, calls = ItemTowerCache(), []
    >>> tower = lambda x: (calls.append(len(x)), 2 * x)[1]
    >>> cache.get(cat, tower).tolist()
    [[2.0, 2.0]]
    >>> _ = cat.upsert(["b"], np.zeros((1, 2), dtype=np.float32), [{}], [""])
    >>> cache.get(cat, tower).tolist(), calls  # only the new row went through the tower
    ([[2.0, 2.0], [0.0, 0.0]], [1, 1])
    """

    #: A new random token whenever the outputs are computed again, unique across caches
    #: (read by indexes built on them: an array's ``id`` can be reused by the next array,
    #: and a model may swap its cache for a fresh one, so neither can say "changed").
    generation = ""

    def __init__(self) -> None:
        self.version: int | None = None
        self.emb: np.ndarray | None = None
        self.fingerprint: np.ndarray | None = None

    def invalidate(self) -> None:
        self.version, self.emb, self.fingerprint = None, None, None

    @staticmethod
    def _fingerprint(vecs: np.ndarray) -> np.ndarray:
        probe = np.random.default_rng(0).normal(size=vecs.shape[1])
        return vecs.astype(np.float64) @ probe

    def get(
        self, catalog: Catalog, tower: Callable[[np.ndarray], np.ndarray], chunk: int = 4096
    ) -> np.ndarray:
        if self.emb is not None and self.version == catalog.version:
            return self.emb
        vecs = catalog.vectors
        n = len(vecs)
        fp = self._fingerprint(vecs)
        old, prev, prev_fp = 0, self.emb, self.fingerprint
        if prev is not None and prev_fp is not None and len(prev) <= n:
            old = len(prev)
        changed = np.flatnonzero(fp[:old] != prev_fp[:old]) if old and prev_fp is not None else np.zeros(0, np.int64)
        rows = np.concatenate([changed, np.arange(old, n)])
        parts = [tower(vecs[rows[s : s + chunk]]) for s in range(0, len(rows), chunk)]
        if old == 0 or prev is None:  # rows == arange(n)
            emb = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
        else:
            emb = prev
            if n > old:
                emb = np.concatenate([emb, np.zeros((n - old, emb.shape[1]), dtype=emb.dtype)])
            if parts:
                emb[rows] = np.concatenate(parts)
        self.emb, self.fingerprint, self.version = emb, fp, catalog.version
        self.generation = uuid.uuid4().hex
        return emb


class EventLog:
    """The weighted events a learner has learned from, in arrival order.

    A neural learner's weights are shaped by every user, so ``forget`` can only
    honour a deletion by refitting from everything else: this is what it refits from.
    """

    def __init__(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        self.users = list(users.astype(str).tolist())
        self.items = items.astype(np.int64).tolist()
        self.weights = weights.astype(np.float64).tolist()
        self.times = times.astype(np.float64).tolist()

    def append(self, user: str, item: int, weight: float, t: float) -> None:
        self.users.append(user)
        self.items.append(item)
        self.weights.append(weight)
        self.times.append(t)

    def arrays(self, drop_user: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        users = np.array(self.users, dtype=object)
        keep = np.ones(len(users), dtype=bool) if drop_user is None else users != drop_user
        return (
            users[keep],
            np.array(self.items, dtype=np.int64)[keep],
            np.array(self.weights, dtype=np.float64)[keep],
            np.array(self.times, dtype=np.float64)[keep],
        )

    def __contains__(self, user: object) -> bool:
        return user in set(self.users)


def time_order(times: np.ndarray) -> np.ndarray:
    """Rows by time, ties in arrival order: the order ``learn_one`` would have seen them."""
    return np.lexsort((np.arange(len(times)), times))


class TorchLearner(Learner, abc.ABC):
    """The skeleton of a learner with a PyTorch model: batch fit, online SGD, forget.

    Subclasses implement ``_build(dim)`` (an ``nn.ModuleDict`` whose ``"item"`` entry
    is the item tower), ``_fit_arrays(users, items, weights, times)`` (the batch fit,
    rows in arrival order), ``_learn(user, item, weight, t)`` (the O(small) state
    update, which may queue rows in ``buffer_``), ``_online_params()`` and
    ``_replay_loss(batch)`` (what an online step trains, on what) and ``_score``.
    Every ``online_every`` events one Adam step is taken on a minibatch of
    ``online_batch`` rows sampled from the replay buffer.
    """

    #: A batch fit runs epochs of Adam over the whole log; the per-event update moves a
    #: user's state and takes a few SGD steps on a replay buffer. The two cannot reach the
    #: same weights, so the shared suite's batch == incremental check does not apply.
    exact_incremental: ClassVar[bool] = False

    # Set by subclasses' __init__.
    feedback: FeedbackConfig | None
    buffer_size: int
    online_every: int
    online_lr: float
    online_batch: int
    num_threads: int
    seed: int

    # ------------------------------------------------------------------ fit
    def fit(self, log: InteractionLog) -> Self:
        keep = log.item_idx >= 0
        w = self._fb.weights(log.kinds[keep], log.values[keep])
        self.catalog_ = log.catalog
        self.log_ = EventLog(log.users[keep], log.item_idx[keep], w, log.timestamps[keep])
        self._refit()
        return self

    def _refit(self) -> None:
        users, items, weights, times = self.log_.arrays()
        self._reset()
        if self.nets_ is not None and len(users):
            with threads(self.num_threads):
                self._fit_arrays(users, items, weights, times)
        self.cache_.invalidate()

    def _reset(self) -> None:
        self.fitted_ = True
        self.rng_ = np.random.default_rng(self.seed)
        self.history_: list[dict[str, float]] = []
        self.cache_ = ItemTowerCache()
        self.events_seen_ = 0
        self.buffer_ = ReplayBuffer(self.buffer_size)
        self.online_opt_: Any = None
        self.nets_: Any = None
        self._ensure_nets()

    def _ensure_nets(self) -> bool:
        """Build the networks once the catalog's vector dimension is known."""
        if self.nets_ is None and self.catalog_.dim:
            with seeded(self.seed):
                self.nets_ = self._build(int(self.catalog_.dim))
            self.nets_.eval()
        return self.nets_ is not None

    def forget(self, user: str, events: Sequence[Event]) -> None:
        """Refit from everything learned except ``user``'s events.

        Every weight of the towers was shaped by the user's data, so only a refit
        removes it; with the same seed the result equals a fresh fit without them
        (online events since the last fit are folded into the refit). Cost: one batch
        fit, which deletion requests can afford.
        """
        if not getattr(self, "fitted_", False) or user not in self.log_:
            return
        users, items, weights, times = self.log_.arrays(drop_user=user)
        self.log_ = EventLog(users, items, weights, times)
        self._refit()

    # ------------------------------------------------------------- protocol
    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        w = self._fb.weight(event.kind, event.value)
        self.log_.append(event.user, i, w, event.timestamp)
        if not self._ensure_nets():
            return
        self._sync_items()
        self._learn(event.user, i, w, event.timestamp)
        self.events_seen_ += 1
        if self.online_every > 0 and self.events_seen_ % self.online_every == 0:
            with threads(self.num_threads):
                self._online_step()

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        if len(items) == 0 or not self._ensure_nets():
            return np.zeros(len(items), dtype=np.float32)
        self._sync_items()
        with threads(self.num_threads):  # the user-side forward pass (see `threads`)
            return self._score(user, items).astype(np.float32)

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """The ``n`` live items with the highest score (dense indices)."""
        self._check_fitted()
        alive = self.catalog_.alive_idx()
        n = min(n, len(alive))
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        s = self.score(user, self.catalog_.from_idx(alive))
        top = np.argpartition(-s, n - 1)[:n]
        return alive[top[np.argsort(-s[top], kind="stable")]]

    # -------------------------------------------------------------- helpers
    def item_embeddings(self) -> np.ndarray:
        """(n_catalog, emb_dim) item-tower outputs, recomputed only when stale."""
        torch = require_torch()
        tower = self.nets_["item"]

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                x32 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
                return self._item_out(tower(x32)).numpy()

        return self.cache_.get(self.catalog_, run)

    def _item_out(self, e: "torch.Tensor") -> "torch.Tensor":
        """Post-processing of the item tower's output (identity; the sequence model normalises)."""
        return e

    def _sync_items(self) -> None:
        """Hook: grow per-item state when the catalog grew (the cache refreshes itself)."""

    def _sample_items(self, shape: int | tuple[int, ...]) -> np.ndarray:
        """Uniform negatives among live items."""
        alive = self.catalog_.alive_idx()
        if len(alive) == 0:
            return np.zeros(shape, dtype=np.int64)
        return alive[self.rng_.integers(0, len(alive), size=shape)]

    # ------------------------------------------------------- subclass hooks
    @abc.abstractmethod
    def _build(self, dim: int) -> "nn.ModuleDict":
        ...

    @abc.abstractmethod
    def _fit_arrays(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        ...

    @abc.abstractmethod
    def _learn(self, user: str, item: int, weight: float, t: float) -> None:
        ...

    def _online_step(self) -> None:
        """One Adam step (``online_lr``) on a replay minibatch, on ``_online_params`` only."""
        if len(self.buffer_) == 0:
            return
        torch = require_torch()
        if self.online_opt_ is None:
            self.online_opt_ = torch.optim.Adam(self._online_params(), lr=self.online_lr, foreach=True)
        loss = self._replay_loss(self.buffer_.sample(self.online_batch, self.rng_))
        if loss is None:
            return
        # The replay loss reads the item tower through the (constant) cache, so only
        # the optimiser's parameters receive gradients.
        self.online_opt_.zero_grad(set_to_none=True)
        loss.backward()
        self.online_opt_.step()
        self.online_opt_.zero_grad(set_to_none=True)
        self._after_online_step()

    @abc.abstractmethod
    def _online_params(self) -> list[Any]:
        ...

    @abc.abstractmethod
    def _replay_loss(self, batch: dict[str, np.ndarray]) -> "torch.Tensor | None":
        ...

    def _after_online_step(self) -> None:
        """Hook: drop state derived from the weights the step changed."""

    @abc.abstractmethod
    def _score(self, user: UserState, items: ItemIds) -> np.ndarray:
        ...
