"""Reinforcement-learning policies: tabular Q-learning and SARSA, and a small DQN.

The source frames the serving side as reinforcement learning: the recommender is an
agent, the user's state is what it observes, the served item is its action, user
satisfaction (``Settings.reward_weights`` of the events a served item gets) is the
reward, and a discount factor ``gamma`` and a learning rate ``lr`` set how the
long-run value of an action is estimated.

One *transition* per served slot: the state ``s`` the slate was chosen in, the action
``a`` at that slot, its reward ``r`` (the reward :meth:`~Policy.feedback` reported for
it, or 0 if the slot was never acted on) and the next state ``s'`` -- the state of the
user's next request, which is also when the engine calls :meth:`~Policy.settle`. A
temporal-difference step needs ``s'``, so all three policies learn at ``settle``;
``feedback`` only records the reward (a user who never comes back never settles,
which the engine treats like any other pending slate).

Like the linear policies, rewards are weighted by the position-bias curve
(:meth:`Policy.examination`): a rewarded slot by ``min(1/examination, 5)``, an
unrewarded one by ``examination`` (not looking is weak evidence of dislike). For the
tabular policies the weight scales the step size (capped at 1), for DQN the loss.

Policies
--------
``qlearning`` / ``sarsa`` (:class:`QLearning`, :class:`SARSA`)
    Tabular over *user state x item cluster* of the LM space. Items are clustered by
    k-means (``MiniBatchKMeans``, seeded) fitted lazily on the live item vectors; a
    user's state is the cluster nearest to their LM query vector, or a dedicated
    "cold" state when there is none. An action is a cluster: each slate position
    picks a cluster epsilon-greedily over ``Q[s, .]`` among the clusters that still
    have candidates in the pool, then that cluster's best-fused remaining item.
``dqn`` (:class:`DQN`)
    ``Q(s, a) = MLP([s, a, s*a])`` on the user's query vector and the item's vector
    (both through one fixed seeded random projection), trained from a replay buffer
    against a periodically copied target network.

Examples
--------
>>> import numpy as np
>>> from liverec.encode import Catalog
>>> from liverec.models import UserState
>>> from liverec.rank.policy import SlateContext, make_policies
>>> cat = Catalog(dim=2)
>>> _ = cat.upsert(["a", "b", "c"], np.eye(3, 2, dtype=np.float32) + 0.1, [{}] * 3, ["A", "B", "C"])
>>> ctx = SlateContext(UserState("u"), cat.from_idx(cat.alive_idx()), np.array([0.9, 0.5, 0.1]), None, cat)
>>> pol = make_policies({"qlearning": {"epsilon": 0.0, "n_clusters": 2}})["qlearning"]
>>> served = pol.choose(ctx, 2)
>>> served.propensities.tolist()
[1.0, 1.0]
>>> pol.feedback(served, 0, 1.0)
>>> pol.settle(served, ctx)       # the TD step, with the next request's state
"""

from __future__ import annotations

import abc

import copy
import math
import warnings
from collections import OrderedDict, deque
from typing import Any, ClassVar

import numpy as np

from ..encode.catalog import Catalog
from .index import top_k
from .policy import Policy, Served, SlateContext, register_policy

# A rewarded slot counts at most this many times its plain weight (as in _Linear).
_MAX_WEIGHT = 5.0

_controller: Any = None


def _one_thread(user_api: str | None = "blas") -> Any:
    """Limit BLAS (or, with ``user_api=None``, also OpenMP) to one thread inside the block.

    The matrices here are small (a pool of 100 against 16 centroids; k-means on at
    most ``max_fit_items`` rows): threads buy nothing and, on busy cores, workers
    spin-waiting for a core made a 100x384 @ 384x16 product take ~20 ms instead of
    0.3 ms. The controller is built once (it scans the loaded libraries).
    """
    global _controller
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api=user_api)


def _slot_weight(policy: Policy, served: Served, slot: int) -> float:
    e = policy.examination(min(slot, 63))  # the curve is tracked for the top 64 positions
    return min(1.0 / e, _MAX_WEIGHT) if slot in served.rewarded else e


def _record(served: Served, slot: int, reward: float) -> None:
    # The first reward of a slot counts (a click then a purchase of the same item is
    # one satisfied slot, as for the linear policies).
    if slot in served.rewarded or not 0 <= slot < len(served.positions):
        return
    served.rewarded.add(slot)
    served.rewards[slot] = float(reward)


# ============================================================================ tabular
class _Tabular(Policy, abc.ABC):
    """Shared machinery of :class:`QLearning` and :class:`SARSA`.

    Parameters
    ----------
    gamma : discount factor of future reward.
    lr : learning rate (step size) of the TD update.
    epsilon : probability of a uniformly random cluster at each slate position.
    n_clusters : item clusters = actions (fewer when the catalog has fewer live items).
    pool : candidates considered: the top ``pool`` by fused score.
    refit_fraction : refit the clusters once more than this fraction of the live
        items changed (added or removed) since the last fit. A refit starts from the
        previous centroids, so cluster ids -- and the learned ``Q`` -- keep their meaning.
        Items re-encoded under the same id do not count (their cluster is recomputed
        from their current vector on every request anyway).
    max_fit_items : k-means is fitted on a seeded sample of at most this many items.
    seed : seeds k-means and the exploration draws.

    Learned state: ``Q_`` of shape ``(n_clusters + 1, n_clusters)`` (the last row is
    the cold state), ``centroids_``.
    """

    stochastic: ClassVar[bool] = True

    def __init__(
        self, *, gamma: float = 0.8, lr: float = 0.1, epsilon: float = 0.1, n_clusters: int = 16, pool: int = 100,
        refit_fraction: float = 0.2, max_fit_items: int = 20_000, seed: int = 0,
    ) -> None:
        super().__init__(pool=pool, seed=seed)
        self.gamma = gamma
        self.lr = lr
        self.epsilon = epsilon
        self.n_clusters = n_clusters
        self.refit_fraction = refit_fraction
        self.max_fit_items = max_fit_items
        self.Q_ = np.zeros((n_clusters + 1, n_clusters))
        self.centroids_: np.ndarray | None = None
        self.fit_alive_: np.ndarray | None = None  # live-item mask at the last fit
        self.checked_version_ = -1
        self.n_fits_ = 0
        self._labels_cache: tuple[Any, np.ndarray, np.ndarray] | None = None

    @property
    def cold_state(self) -> int:
        return self.n_clusters

    def params(self) -> dict[str, Any]:
        return {
            **super().params(), "gamma": self.gamma, "lr": self.lr, "epsilon": self.epsilon,
            "n_clusters": self.n_clusters, "refit_fraction": self.refit_fraction,
            "max_fit_items": self.max_fit_items,
        }

    # ------------------------------------------------------------- clustering
    def _ensure_clusters(self, catalog: Catalog) -> None:
        if self.centroids_ is not None and catalog.version == self.checked_version_:
            return
        alive = catalog.alive.copy()
        if self.centroids_ is None or self.centroids_.shape[1] != (catalog.dim or 0):
            self._fit(catalog, alive)
        else:
            old = self.fit_alive_ if self.fit_alive_ is not None else np.zeros(0, bool)
            n = max(len(old), len(alive))
            a = np.zeros(n, bool)
            b = np.zeros(n, bool)
            a[: len(old)] = old
            b[: len(alive)] = alive
            changed = int((a != b).sum())
            if changed > self.refit_fraction * max(int(a.sum()), 1):
                self._fit(catalog, alive)
        self.checked_version_ = catalog.version

    def _fit(self, catalog: Catalog, alive: np.ndarray) -> None:
        from sklearn.cluster import MiniBatchKMeans

        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            return
        if len(idx) > self.max_fit_items:
            idx = np.sort(np.random.default_rng(self.seed).choice(idx, self.max_fit_items, replace=False))
        X = catalog.vectors[idx].astype(np.float64)
        k = min(self.n_clusters, len(idx))
        prev = self.centroids_
        warm = prev is not None and prev.shape == (k, X.shape[1])
        km = MiniBatchKMeans(
            n_clusters=k, random_state=self.seed, batch_size=1024,
            init=prev if warm else "k-means++", n_init=1 if warm else 3,
        )
        with warnings.catch_warnings(), _one_thread(None):
            warnings.simplefilter("ignore")  # duplicate vectors -> fewer distinct clusters
            km.fit(X)
        if not warm:
            # New meaning for the cluster ids (first fit, or the number of clusters or
            # the LM dimension changed): what was learned about the old ones is void.
            self.Q_[:] = 0.0
        self.centroids_ = km.cluster_centers_.astype(np.float64)
        self.fit_alive_ = alive
        self.n_fits_ += 1
        self._labels_cache = None

    def _assign(self, X: np.ndarray) -> np.ndarray:
        """Nearest centroid (Euclidean) of each row."""
        assert self.centroids_ is not None
        C = self.centroids_
        with _one_thread():
            return np.argmax(2.0 * (np.asarray(X, np.float64) @ C.T) - (C * C).sum(1), axis=1)

    def _state(self, ctx: SlateContext) -> int:
        q = ctx.query
        if q is None or self.centroids_ is None or q.shape[-1] != self.centroids_.shape[1] or not np.any(q):
            return self.cold_state
        return int(self._assign(q[None, :])[0])

    def _pool(self, ctx: SlateContext, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The pool (best first) and its items' clusters; memoised for the last context
        (the engine settles the previous slate and chooses the next one on one context)."""
        c = self._labels_cache
        if c is not None and c[0] is ctx and (k <= len(c[1]) or len(c[1]) == len(ctx.fused)):
            return c[1], c[2]
        pool = top_k(ctx.fused, max(self.pool, k))
        labels = self._assign(ctx.catalog.vectors[ctx.items.idx[pool]]) if len(pool) else np.zeros(0, np.int64)
        self._labels_cache = (ctx, pool, labels)
        return pool, labels

    def _available(self, labels: np.ndarray) -> np.ndarray:
        """Clusters present in a pool, ordered by their best item (the greedy tie-break)."""
        _, first = np.unique(labels, return_index=True)
        return labels[np.sort(first)]

    def _greedy(self, s: int, avail: np.ndarray) -> int:
        # np.argmax takes the first maximum: ties go to the cluster with the best item,
        # so an untrained table serves the fused ranking.
        return int(avail[int(np.argmax(self.Q_[s, avail]))])

    def _explore(self, s: int, avail: np.ndarray) -> tuple[int, float]:
        """An epsilon-greedy cluster and its exact probability."""
        n = len(avail)
        greedy = self._greedy(s, avail)
        a = int(avail[int(self.rng_.integers(n))]) if self.rng_.random() < self.epsilon else greedy
        return a, self.epsilon / n + (1 - self.epsilon) * (a == greedy)

    # ---------------------------------------------------------------- serving
    def choose(self, ctx: SlateContext, k: int) -> Served:
        if len(ctx.fused) == 0 or k <= 0:
            return Served(np.zeros(0, np.int64), np.zeros(0), self.name, state={"s": self.cold_state, "actions": []})
        self._ensure_clusters(ctx.catalog)
        s = self._state(ctx)
        pool, labels = self._pool(ctx, k)
        # Per cluster, its items' ranks in the pool (best first).
        queues: dict[int, deque[int]] = {}
        for r, c in enumerate(labels.tolist()):
            queues.setdefault(c, deque()).append(r)
        chosen, props, actions = [], [], []
        for _ in range(min(k, len(pool))):
            # Clusters with candidates left, ordered by their best remaining item.
            avail = np.array(sorted(queues, key=lambda c: queues[c][0]), dtype=np.int64)
            a, p = self._explore(s, avail)
            chosen.append(int(pool[queues[a].popleft()]))
            if not queues[a]:
                del queues[a]
            props.append(p)
            actions.append(a)
        served = Served(
            np.asarray(chosen, dtype=np.int64), np.asarray(props), self.name,
            state={"s": s, "actions": actions},
        )
        self._after_choose(ctx, s, actions)
        return served

    def _after_choose(self, ctx: SlateContext, s: int, actions: list[int]) -> None:
        """Hook: SARSA completes the previous slate's update with the action just taken."""

    # --------------------------------------------------------------- learning
    def feedback(self, served: Served, slot: int, reward: float) -> None:
        """Record the slot's reward; the TD step waits for the next state (``settle``)."""
        if served.state is not None:
            _record(served, slot, reward)

    def _transitions(self, served: Served) -> list[tuple[int, int, float, float]]:
        s = served.state["s"]
        return [
            (s, a, served.rewards.get(slot, 0.0), _slot_weight(self, served, slot))
            for slot, a in enumerate(served.state["actions"])
        ]

    def _next(self, next_ctx: SlateContext | None) -> tuple[int | None, np.ndarray]:
        """The next state and the actions available in it (None: terminal)."""
        if next_ctx is None or len(next_ctx.fused) == 0:
            return None, np.zeros(0, np.int64)
        self._ensure_clusters(next_ctx.catalog)
        _, labels = self._pool(next_ctx)
        return self._state(next_ctx), self._available(labels)

    def _td(self, s: int, a: int, r: float, w: float, bootstrap: float) -> None:
        step = min(1.0, self.lr * w)
        self.Q_[s, a] += step * (r + self.gamma * bootstrap - self.Q_[s, a])

    def settle(self, served: Served, next_ctx: SlateContext | None) -> None:
        if served.state is not None and served.state.get("actions"):
            self._learn(self._transitions(served), *self._next(next_ctx), served, next_ctx)
        super().settle(served, next_ctx)

    @abc.abstractmethod
    def _learn(
        self, transitions: list[tuple[int, int, float, float]], s_next: int | None, avail: np.ndarray,
        served: Served, next_ctx: SlateContext | None,
    ) -> None:
        """The temporal-difference update of one settled slate (Q-learning or SARSA)."""


@register_policy
class QLearning(_Tabular):
    """Tabular Q-learning over (user cluster, item cluster): off-policy, bootstraps with the max.

    At ``settle``, for every served slot ``(s, a, r)``::

        Q[s, a] += lr * w * (r + gamma * max_a' Q[s', a'] - Q[s, a])

    where ``s'`` is the state of the request that closes the slate, ``a'`` ranges
    over the clusters with candidates in that request's pool, ``w`` is the position
    weight (``lr * w`` capped at 1), and there is no bootstrap when there is no next
    request (``next_ctx is None``: terminal).

    Propensities are exact: a cluster's epsilon-greedy probability given the clusters
    left at that position (the item within the cluster is deterministic).

    Examples
    --------
    >>> pol = QLearning(gamma=0.8, lr=0.1, epsilon=0.1, n_clusters=16, pool=100, seed=0)
    >>> pol.Q_.shape                   # 16 user-cluster states + the cold state
    (17, 16)
    """

    name: ClassVar[str] = "qlearning"

    def _learn(
        self, transitions: list[tuple[int, int, float, float]], s_next: int | None, avail: np.ndarray,
        served: Served, next_ctx: SlateContext | None,
    ) -> None:
        for s, a, r, w in transitions:
            boot = float(self.Q_[s_next, avail].max()) if s_next is not None and len(avail) else 0.0
            self._td(s, a, r, w, boot)


@register_policy
class SARSA(_Tabular):
    """Tabular SARSA: on-policy, bootstraps with the action actually taken next.

    ``Q[s, a] += lr * w * (r + gamma * Q[s', a'] - Q[s, a])`` where ``a'`` is the
    cluster this policy serves at the first position of the user's next slate. As in
    the textbook algorithm, ``a'`` is chosen (with the table as it is) before
    ``Q[s, a]`` moves: ``settle`` stores the update per user and the user's next
    ``choose`` completes it. When that next request is not served by this policy in
    state ``s'`` (another policy served it, or the user's state changed in between),
    ``a'`` is drawn from this policy's epsilon-greedy distribution at ``s'`` instead --
    the same distribution the first position would have used. At most
    ``max_pending`` users wait (the oldest is completed that way); ``next_ctx is
    None`` is terminal and updates at once.

    Examples
    --------
    >>> pol = SARSA(epsilon=0.1)
    >>> pol.name, pol.gamma, pol.lr
    ('sarsa', 0.8, 0.1)
    """

    name: ClassVar[str] = "sarsa"

    def __init__(self, *, max_pending: int = 10_000, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_pending = max_pending
        # user -> (transitions, s', actions available in s')
        self.pending_: OrderedDict[str, tuple[list[tuple[int, int, float, float]], int, np.ndarray]] = OrderedDict()

    def params(self) -> dict[str, Any]:
        return {**super().params(), "max_pending": self.max_pending}

    def _apply(self, transitions: list[tuple[int, int, float, float]], s_next: int | None, a_next: int | None) -> None:
        for s, a, r, w in transitions:
            boot = float(self.Q_[s_next, a_next]) if s_next is not None and a_next is not None else 0.0
            self._td(s, a, r, w, boot)

    def _complete_sampled(self, user: str) -> None:
        transitions, s_next, avail = self.pending_.pop(user)
        a_next = self._explore(s_next, avail)[0] if len(avail) else None
        self._apply(transitions, s_next, a_next)

    def _learn(
        self, transitions: list[tuple[int, int, float, float]], s_next: int | None, avail: np.ndarray,
        served: Served, next_ctx: SlateContext | None,
    ) -> None:
        if s_next is None or next_ctx is None:
            self._apply(transitions, None, None)
            return
        user = next_ctx.user.user
        if user in self.pending_:  # a stale one: its next slate was never served by us
            self._complete_sampled(user)
        self.pending_[user] = (transitions, s_next, avail)
        while len(self.pending_) > self.max_pending:
            self._complete_sampled(next(iter(self.pending_)))

    def _after_choose(self, ctx: SlateContext, s: int, actions: list[int]) -> None:
        user = ctx.user.user
        if user not in self.pending_:
            return
        if actions and self.pending_[user][1] == s:
            transitions, s_next, _ = self.pending_.pop(user)
            self._apply(transitions, s_next, actions[0])
        else:
            self._complete_sampled(user)


# ================================================================================ DQN
@register_policy
class DQN(Policy):
    """Deep Q-network on LM vectors (Mnih et al. 2015), one transition per served slot.

    ``Q(s, a) = MLP([s, a, s*a])`` with one hidden ReLU layer, where ``s`` is the
    user's LM query vector (zeros for a cold user) and ``a`` the item's LM vector,
    both reduced by one fixed seeded Gaussian projection to ``state_dim`` (so
    ``sum(s*a)`` still tracks their LM agreement and a step stays cheap;
    ``state_dim=None`` keeps the full vectors). The output layer starts at zero, so
    an untrained DQN serves the fused ranking.

    Serving: every pool item (top ``pool`` by fused score) is scored
    ``Q(s, a) + fused_weight * fused`` (fused min-max scaled within the pool); each
    position takes the best remaining item with probability ``1 - epsilon``, else a
    uniformly random remaining one; propensities are exact as in
    :class:`~liverec.rank.policy.EpsilonGreedy`.

    Learning: ``settle`` pushes ``(s, a, r, w, s', A')`` per slot into a bounded
    replay buffer -- ``A'`` is the top ``next_candidates`` of the next request's pool,
    the actions the TD target maximises over -- and, once the buffer holds a batch,
    takes ``train_steps`` Adam steps on the position-weighted squared TD error against
    ``r + gamma * max_a' Q_target(s', a')`` (``r`` alone when there is no next
    request). The target network is copied from the online one every
    ``target_every`` steps. Torch runs with ``threads`` intra-op threads (the network
    is tiny; more threads only contend for busy cores).

    Examples
    --------
    >>> pol = DQN(gamma=0.8, lr=1e-3, epsilon=0.1, buffer_size=5000, batch_size=32, target_every=100)
    >>> pol.name, len(pol.buffer_)
    ('dqn', 0)
    """

    name: ClassVar[str] = "dqn"
    stochastic: ClassVar[bool] = True

    def __init__(
        self, *, gamma: float = 0.8, lr: float = 1e-3, epsilon: float = 0.1, hidden: int = 64,
        state_dim: int | None = 32, fused_weight: float = 1.0, pool: int = 100, buffer_size: int = 5000,
        batch_size: int = 32, train_steps: int = 1, target_every: int = 100, next_candidates: int = 20,
        threads: int = 1, seed: int = 0,
    ) -> None:
        super().__init__(pool=pool, seed=seed)
        self.gamma = gamma
        self.lr = lr
        self.epsilon = epsilon
        self.hidden = hidden
        self.state_dim = state_dim
        self.fused_weight = fused_weight
        self.buffer_size = buffer_size
        self.batch_size = batch_size
        self.train_steps = train_steps
        self.target_every = target_every
        self.next_candidates = next_candidates
        self.threads = threads
        # (s, a, r, w, s' | None, A' | None), projected float32 arrays; one slate's
        # transitions share their s, s' and A'.
        self.buffer_: deque[tuple[Any, ...]] = deque(maxlen=buffer_size)
        self.net_: Any = None
        self.target_: Any = None
        self.opt_: Any = None
        self.proj_: Any = None  # torch (d_lm, state_dim)
        self.steps_ = 0
        self.target_syncs_ = 0
        self.last_loss_: float | None = None

    def params(self) -> dict[str, Any]:
        return {
            **super().params(), "gamma": self.gamma, "lr": self.lr, "epsilon": self.epsilon, "hidden": self.hidden,
            "state_dim": self.state_dim, "fused_weight": self.fused_weight, "buffer_size": self.buffer_size,
            "batch_size": self.batch_size, "train_steps": self.train_steps, "target_every": self.target_every,
            "next_candidates": self.next_candidates, "threads": self.threads,
        }

    # ------------------------------------------------------------------ model
    def _ensure(self, d_lm: int) -> None:
        if self.proj_ is not None and self.proj_.shape[0] == d_lm:
            return
        import torch
        from torch import nn

        if self.state_dim:
            # Unit variance per coordinate for a unit vector: inputs at the MLP's scale.
            proj = np.random.default_rng(self.seed + 7919).normal(size=(d_lm, self.state_dim))
            self.proj_ = torch.from_numpy(proj.astype(np.float32))
        else:
            self.proj_ = torch.eye(d_lm)
        d = self.proj_.shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            first, last = nn.Linear(3 * d, self.hidden), nn.Linear(self.hidden, 1)
            net = nn.Sequential(first, nn.ReLU(), last)
        with torch.no_grad():
            last.weight.zero_()  # Q starts at 0: untrained, the fused ranking decides
            last.bias.zero_()
        self.net_ = net
        self.target_ = copy.deepcopy(net).requires_grad_(False)
        self.opt_ = torch.optim.Adam(net.parameters(), lr=self.lr)
        self.buffer_.clear()  # transitions from another LM space are meaningless now
        self.steps_ = 0

    def _torch(self) -> Any:
        from ..models.torch_utils import threads

        return threads(self.threads)

    def _project(self, X: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return (torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)) @ self.proj_).numpy()

    def _state_vec(self, ctx: SlateContext) -> np.ndarray:
        q = ctx.query
        if q is None or q.shape[-1] != self.proj_.shape[0]:
            return np.zeros(self.proj_.shape[1], np.float32)
        return self._project(q[None, :])[0]

    @staticmethod
    def _inputs(torch: Any, S: Any, A: Any) -> Any:
        """``[s, a, s*a]`` along the last axis (``S`` broadcasts against ``A``)."""
        S = S.expand_as(A)
        return torch.cat([S, A, S * A], dim=-1)

    def q_values(self, s: np.ndarray, A: np.ndarray, *, target: bool = False) -> np.ndarray:
        """Q of one projected state against rows of projected actions (no gradient)."""
        import torch

        net = self.target_ if target else self.net_
        with torch.no_grad():
            x = self._inputs(torch, torch.from_numpy(s)[None, :], torch.from_numpy(np.ascontiguousarray(A)))
            return net(x)[:, 0].numpy().astype(np.float64)

    # ---------------------------------------------------------------- serving
    def choose(self, ctx: SlateContext, k: int) -> Served:
        pool = top_k(ctx.fused, max(self.pool, k))
        if len(pool) == 0 or k <= 0:
            return Served(np.zeros(0, np.int64), np.zeros(0), self.name)
        self._ensure(ctx.catalog.dim or ctx.catalog.vectors.shape[1])
        with self._torch():
            s = self._state_vec(ctx)
            A = self._project(ctx.catalog.vectors[ctx.items.idx[pool]])
            q = self.q_values(s, A)
        f = ctx.fused[pool].astype(np.float64)
        span = f.max() - f.min()
        f = (f - f.min()) / span if span > 1e-12 else np.zeros_like(f)
        score = q + self.fused_weight * f
        remaining = list(np.argsort(-score, kind="stable"))  # rows of the pool, best first
        chosen, props = [], []
        for _ in range(min(k, len(pool))):
            n = len(remaining)
            j = int(self.rng_.integers(n)) if self.rng_.random() < self.epsilon else 0
            props.append(self.epsilon / n + (1 - self.epsilon) * (j == 0))
            chosen.append(remaining.pop(j))
        rows = np.asarray(chosen, dtype=np.int64)
        return Served(pool[rows], np.asarray(props), self.name, state={"s": s, "a": A[rows]})

    # --------------------------------------------------------------- learning
    def feedback(self, served: Served, slot: int, reward: float) -> None:
        """Record the slot's reward; the transition is stored when the slate settles."""
        if served.state is not None:
            _record(served, slot, reward)

    def settle(self, served: Served, next_ctx: SlateContext | None) -> None:
        st = served.state
        if st is not None and len(st["a"]) and self.proj_ is not None and st["s"].shape[0] == self.proj_.shape[1]:
            with self._torch():
                s_next, A_next = None, None
                if next_ctx is not None and len(next_ctx.fused):
                    nxt = top_k(next_ctx.fused, self.next_candidates)
                    s_next = self._state_vec(next_ctx)
                    A_next = self._project(next_ctx.catalog.vectors[next_ctx.items.idx[nxt]])
                for slot in range(len(st["a"])):
                    r = served.rewards.get(slot, 0.0)
                    self.buffer_.append((st["s"], st["a"][slot], r, _slot_weight(self, served, slot), s_next, A_next))
                if len(self.buffer_) >= self.batch_size:
                    for _ in range(self.train_steps):
                        self._train_step()
        super().settle(served, next_ctx)

    def _train_step(self) -> None:
        import torch

        B = self.batch_size
        batch = [self.buffer_[int(i)] for i in self.rng_.integers(len(self.buffer_), size=B)]
        d = self.proj_.shape[1]
        m = max((len(t[5]) for t in batch if t[5] is not None), default=1)
        S2 = np.zeros((B, d), np.float32)
        A2 = np.zeros((B, m, d), np.float32)
        mask = np.zeros((B, m), bool)
        for i, t in enumerate(batch):
            if t[5] is not None and len(t[5]):
                S2[i] = t[4]
                A2[i, : len(t[5])] = t[5]
                mask[i, : len(t[5])] = True
        S = torch.from_numpy(np.stack([t[0] for t in batch]))
        A = torch.from_numpy(np.stack([t[1] for t in batch]))
        R = torch.tensor([t[2] for t in batch], dtype=torch.float32)
        W = torch.tensor([t[3] for t in batch], dtype=torch.float32)
        with torch.no_grad():
            q2 = self.target_(self._inputs(torch, torch.from_numpy(S2)[:, None, :], torch.from_numpy(A2)))[..., 0]
            mk = torch.from_numpy(mask)
            best = q2.masked_fill(~mk, -math.inf).max(dim=1).values
            best = torch.where(mk.any(dim=1), best, torch.zeros_like(best))  # terminal: no bootstrap
            y = R + self.gamma * best
        q = self.net_(self._inputs(torch, S, A))[:, 0]
        loss = (W * (q - y) ** 2).mean()
        self.opt_.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_.step()
        self.steps_ += 1
        self.last_loss_ = float(loss.detach())
        if self.steps_ % self.target_every == 0:
            self.target_.load_state_dict(self.net_.state_dict())
            self.target_syncs_ += 1
