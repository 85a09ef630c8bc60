"""Neural scorer: a task-adaptation layer on LM vectors, as a two-tower model.

The seed's step 2 ("a deep model on top of the LM vectors: linear + sigmoid with
cross-entropy; softmax over items") shaped so serving stays one mat-vec:

- user tower: ``u = MLP(profile)``, where the profile is the user's time-decayed,
  feedback-weighted mean of the LM vectors of their items (negatives enter with their
  negative weight), kept by the learner itself in O(d) per event;
- item tower: ``v_i = MLP(LM vector of i)`` plus a learned per-item bias ``b_i`` (0 for
  items the fit never saw, so a new item is ranked by its text alone);
- ``p(positive | user, i) = sigmoid(<u, v_i> + b_i + b_0)``.

Online, every event moves the user's profile (so the next request already follows
it) and queues replay rows; every ``online_every`` events one Adam step updates the
user tower and the biases from the replay buffer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..encode.catalog import ItemIds
from .base import FeedbackConfig, UserState, register
from .torch_utils import (
    TorchLearner,
    mlp,
    require_torch,
    sampled_softmax,
    time_order,
    time_split,
    train_early_stopping,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import Tensor, nn

_DAY = 86_400.0
#: Exponent (in half-lives) below which 2^e is too close to float64 underflow for the
#: closed-form prefix sums; users spanning more fall back to the exact recurrence.
_MAX_SPAN = 900.0
_LOSSES = ("bce", "softmax")


@register
class NeuralScorer(TorchLearner):
    """Two-tower neural scorer on LM vectors with per-event profile updates and online SGD.

    Batch fit (``fit``): one training row per event with a non-zero feedback weight,
    in time order; the row's input is the user's profile *before* that event (what
    serving would have seen), its label 1 for positive kinds and 0 for skips and
    dislikes. ``loss="bce"`` adds ``n_negatives`` uniformly sampled items per positive
    as extra 0 labels (binary cross-entropy, the seed's sigmoid layer);
    ``loss="softmax"`` ranks each positive against the batch's other positives and the
    sampled items (the seed's softmax over items; explicit negatives then only shape
    the profile). The latest ``val_frac`` of rows validate; Adam runs up to ``epochs``
    and stops after ``patience`` epochs without a better validation loss, keeping the
    best weights; ``history_`` holds the per-epoch losses.

    Online (``learn_one``): the profile moves in O(d); the row (profile before the
    event, item, label) and its sampled negatives go to a replay buffer of
    ``buffer_size`` rows; every ``online_every`` events one Adam step (``online_lr``)
    on ``online_batch`` buffered rows updates **only the user tower and the biases**.
    The item tower is frozen between batch fits so that the cached item embeddings of
    the whole catalog stay valid: updating it would mean recomputing the tower for
    every item after every step (or serving a mix of stale and fresh embeddings).

    Scores are logits (``<u, v_i> + b_i + b_0``; sigmoid is monotone, and logits do not
    saturate into ties). A user without a profile scores ``b_i + b_0``; declared
    interests (``UserState.interests``, an LM vector) count as ``interest_weight``
    events in the profile. Torch runs with ``num_threads`` intra-op threads (1: these
    models are too small to gain from more, and lose a lot on a busy machine; 0 =
    torch's default). The fit is deterministic given ``seed``.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> from liverec.models import InteractionLog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> evs = [Event(user="u", item="a", timestamp=float(t)) for t in range(3)]
    >>> m = NeuralScorer(epochs=2).fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="w", item="b", timestamp=9.0))
    >>> m.score(UserState("w"), cat.select(["a", "b"])).shape
    (2,)
    """

    name: ClassVar[str] = "neural"
    scores_new_items: ClassVar[bool] = True
    # SGD online updates (a user-tower/bias step every few events, from a replay
    # buffer) are not equal to a batch fit of Adam epochs over the whole log, so the
    # shared suite's batch == incremental check does not apply.
    exact_incremental: ClassVar[bool] = False

    def __init__(
        self,
        *,
        emb_dim: int = 64,
        hidden: int = 128,
        loss: str = "bce",
        n_negatives: int = 4,
        half_life_days: float = 30.0,
        interest_weight: float = 1.0,
        epochs: int = 20,
        patience: int = 2,
        batch_size: int = 256,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        val_frac: float = 0.1,
        buffer_size: int = 10_000,
        online_every: int = 4,
        online_lr: float = 1e-3,
        online_batch: int = 64,
        num_threads: int = 1,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.emb_dim = emb_dim
        self.hidden = hidden
        self.loss = loss
        self.n_negatives = n_negatives
        self.half_life_days = half_life_days
        self.interest_weight = interest_weight
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
        self.num_threads = num_threads
        self.feedback = feedback
        self.seed = seed

    # ------------------------------------------------------------------ nets
    def _build(self, dim: int) -> "nn.ModuleDict":
        if self.loss not in _LOSSES:
            from ..errors import ValidationError

            raise ValidationError(
                f"unknown loss {self.loss!r} for NeuralScorer: use one of {_LOSSES}.", field="loss"
            )
        torch = require_torch()
        nn = torch.nn
        return nn.ModuleDict({
            "user": mlp([dim, self.hidden, self.emb_dim]),
            "item": mlp([dim, self.hidden, self.emb_dim]),
            "bias": nn.ParameterDict({
                "item": nn.Parameter(torch.zeros(len(self.catalog_))),
                "global": nn.Parameter(torch.zeros(1)),
            }),
        })

    def _reset(self) -> None:
        self.num_: dict[str, np.ndarray] = {}  # decayed sum of w * v (float64)
        self.den_: dict[str, float] = {}  # decayed sum of |w|
        self.last_t_: dict[str, float] = {}
        super()._reset()

    def _sync_items(self) -> None:
        torch = require_torch()
        b = self.nets_["bias"]["item"]
        n = len(self.catalog_)
        if len(b) < n:  # new items start at bias 0: ranked by their text alone
            grown = torch.zeros(max(n, 2 * len(b)))
            grown[: len(b)] = b.detach()
            self.nets_["bias"]["item"] = torch.nn.Parameter(grown)
            self.online_opt_ = None  # it held the old tensor

    def _logits(self, u: "torch.Tensor", v: "torch.Tensor", items: "torch.Tensor") -> "torch.Tensor":
        bias = self.nets_["bias"]
        return (u * v).sum(-1) + bias["item"][items] + bias["global"]

    def _user_emb(self, prof: "torch.Tensor", has: "torch.Tensor") -> "torch.Tensor":
        # No profile -> u = 0: the logit falls back to b_i + b_0, as for a cold user.
        return self.nets_["user"](prof) * has[:, None]

    # ------------------------------------------------------------------- fit
    def _fit_arrays(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> None:
        torch = require_torch()
        vecs = torch.from_numpy(np.ascontiguousarray(self.catalog_.vectors, dtype=np.float32))
        rows, prof, has = self._prefix_profiles(users, items, weights, times)
        n = len(rows)
        if n == 0:
            return
        prof_t, has_t = torch.from_numpy(prof), torch.from_numpy(has)
        item_np = items[rows]
        label_np = (weights[rows] > 0).astype(np.float32)
        n_train = time_split(n, self.val_frac)
        k = max(self.n_negatives, 0)
        val_neg = self._sample_items((n - n_train, k))
        nets = self.nets_

        def batch_loss(b: np.ndarray, train: bool) -> "Tensor | None":  # torch is a local here
            neg = self._sample_items((len(b), k)) if train else val_neg[b - n_train]
            it, lab = item_np[b], label_np[b]
            u = self._user_emb(prof_t[b], has_t[b])
            if self.loss == "softmax":
                pos = lab > 0
                if not pos.any():
                    return None
                cand, inv = np.unique(np.concatenate([it[pos], neg[pos].ravel()]), return_inverse=True)
                cand_t = torch.from_numpy(cand)
                bias = nets["bias"]["item"][cand_t] + nets["bias"]["global"]
                return sampled_softmax(u[torch.from_numpy(pos)], nets["item"](vecs[cand_t]), cand_t,
                                       torch.from_numpy(inv[: int(pos.sum())]), bias=bias)
            cand = np.concatenate([it[:, None], neg], axis=1)  # column 0: the event's item
            uniq, inv = np.unique(cand, return_inverse=True)
            v = nets["item"](vecs[torch.from_numpy(uniq)])[torch.from_numpy(inv.reshape(cand.shape))]
            logits = self._logits(u[:, None, :], v, torch.from_numpy(cand))
            y = np.zeros(cand.shape, dtype=np.float32)
            y[:, 0] = lab
            mask = np.ones(cand.shape, dtype=np.float32)
            mask[:, 1:] = lab[:, None]  # sampled negatives belong to positives only
            y_t, m_t = torch.from_numpy(y), torch.from_numpy(mask)
            per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_t, reduction="none")
            return (per * m_t).sum() / m_t.sum()

        self.history_ = train_early_stopping(
            nets, batch_loss, n, n_train, epochs=self.epochs, patience=self.patience, lr=self.lr,
            batch_size=self.batch_size, rng=self.rng_, weight_decay=self.weight_decay,
        )

    def _prefix_profiles(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Training rows (events with w != 0, time order) and each user's profile before them.

        Also leaves every user's final state in ``num_``/``den_``/``last_t_``, the same
        state ``learn_one`` would have reached event by event. Per user, with
        ``c_j = 2^((t_j - t_last)/h)``, the profile before event k is
        ``sum_{j<k} w_j c_j v_j / sum_{j<k} |w_j| c_j`` (the decay to ``t_k`` cancels in
        the mean), i.e. two cumulative sums.
        """
        order = time_order(times)
        order = order[weights[order] != 0]
        n, d = len(order), int(self.catalog_.dim or 0)
        prof = np.zeros((n, d), dtype=np.float32)
        has = np.zeros(n, dtype=np.float32)
        if n == 0:
            return order, prof, has
        codes = np.unique(users[order].astype(str), return_inverse=True)[1]
        by_user = np.argsort(codes, kind="stable")  # positions in `order` by user, in time order
        bounds = np.flatnonzero(np.diff(codes[by_user])) + 1
        h = self.half_life_days * _DAY
        vecs = self.catalog_.vectors
        for seg in np.split(by_user, bounds):
            rows = order[seg]
            w, t = weights[rows], times[rows]
            v = vecs[items[rows]].astype(np.float64)
            e = (t - t[-1]) / h
            if e[0] > -_MAX_SPAN:
                c = np.exp2(e)
                num = np.cumsum((w * c)[:, None] * v, axis=0)
                den = np.cumsum(np.abs(w) * c)
            else:  # spans too many half-lives for 2^e: the recurrence learn_one uses
                num, den = np.empty_like(v), np.empty(len(w))
                nu, de = np.zeros(d), 0.0
                for j in range(len(w)):
                    f = math.exp2(-(t[j] - t[j - 1]) / h) if j else 1.0
                    nu, de = nu * f + w[j] * v[j], de * f + abs(w[j])
                    num[j], den[j] = nu, de
            ok = den[:-1] > 1e-300
            prof[seg[1:][ok]] = num[:-1][ok] / den[:-1][ok, None]
            has[seg[1:][ok]] = 1.0
            user = str(users[rows[0]])
            self.num_[user], self.den_[user], self.last_t_[user] = num[-1], float(den[-1]), float(t[-1])
        return order, prof, has

    # ---------------------------------------------------------------- online
    def _profile(self, user: str) -> np.ndarray | None:
        den = self.den_.get(user, 0.0)
        return self.num_[user] / den if den > 1e-300 else None

    def _learn(self, user: str, item: int, weight: float, t: float) -> None:
        if weight == 0:
            return
        before = self._profile(user)
        v = self.catalog_.vectors[item].astype(np.float64)
        h = self.half_life_days * _DAY
        num, t0 = self.num_.get(user), self.last_t_.get(user)
        if num is None or t0 is None:
            self.num_[user], self.den_[user], self.last_t_[user] = weight * v, abs(weight), t
        elif t >= t0:  # fade the old sums to the new event's time, then add it: O(d)
            f = math.exp2(-(t - t0) / h)
            self.num_[user] = num * f + weight * v
            self.den_[user] = self.den_[user] * f + abs(weight)
            self.last_t_[user] = t
        else:  # a late event: add it already faded
            f = math.exp2(-(t0 - t) / h)
            self.num_[user] = num + f * weight * v
            self.den_[user] = self.den_[user] + f * abs(weight)
        prof = np.zeros(len(v), dtype=np.float32) if before is None else before.astype(np.float32)
        has = float(before is not None)
        self.buffer_.add(prof=prof, has=has, item=item, label=float(weight > 0))
        if weight > 0:
            for j in self._sample_items(max(self.n_negatives, 0)):
                self.buffer_.add(prof=prof, has=has, item=int(j), label=0.0)

    def _online_params(self) -> list[Any]:
        return [*self.nets_["user"].parameters(), *self.nets_["bias"].parameters()]

    def _replay_loss(self, batch: dict[str, np.ndarray]) -> "torch.Tensor | None":
        torch = require_torch()
        emb = self.item_embeddings()  # the frozen item tower: constants here
        items = torch.from_numpy(batch["item"].astype(np.int64))
        has = torch.from_numpy(batch["has"].astype(np.float32))
        u = self._user_emb(torch.from_numpy(batch["prof"]), has)
        if self.loss == "softmax":
            pos = batch["label"] > 0
            if not pos.any():
                return None
            cand, inv = np.unique(batch["item"], return_inverse=True)
            cand_t = torch.from_numpy(cand.astype(np.int64))
            bias = self.nets_["bias"]["item"][cand_t] + self.nets_["bias"]["global"]
            return sampled_softmax(u[torch.from_numpy(pos)], torch.from_numpy(emb[cand]), cand_t,
                                   torch.from_numpy(inv[pos]), bias=bias)
        logits = self._logits(u, torch.from_numpy(emb[batch["item"]]), items)
        y = torch.from_numpy(batch["label"].astype(np.float32))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y)

    # ----------------------------------------------------------------- serve
    def query_profile(self, user: UserState) -> np.ndarray | None:
        """The user tower's input: the behaviour profile, mixed with declared interests."""
        num, den = self.num_.get(user.user), self.den_.get(user.user, 0.0)
        if user.interests is not None and self.interest_weight > 0:
            iv = self.interest_weight * user.interests.astype(np.float64)
            num = iv if num is None else num + iv
            den = den + self.interest_weight
        return None if num is None or den <= 1e-300 else num / den

    def _score(self, user: UserState, items: ItemIds) -> np.ndarray:
        torch = require_torch()
        bias = self.nets_["bias"]
        b = bias["item"].detach().numpy()[items.idx] + float(bias["global"].detach()[0])
        p = self.query_profile(user)
        if p is None:
            return b
        with torch.no_grad():
            u = self.nets_["user"](torch.from_numpy(p.astype(np.float32))).numpy()
        return items.project(self.item_embeddings(), u) + b
