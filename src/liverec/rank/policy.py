"""Policies: choose the served slate from fused scores, with a propensity for every item.

Every policy sees the same :class:`SlateContext` (the user, the candidate pool and
their fused scores, the user's LM query vector) and returns a :class:`Served` slate:
the chosen candidates in order and the probability with which each was chosen at its
position, so any served slate can be evaluated off-policy later (``evaluation.ope``).

Feedback reaches a policy twice: ``feedback`` at once when a served item gets a
positive event (per-event learning), and ``settle`` when the slate is closed (the
user's next request): items never acted on then count as reward 0, and
reinforcement learners take their temporal-difference step with the next state.

Position bias (slate awareness): a click at a low position is worth more evidence
than one at the top, because fewer users look there. Policies here learn the
examination curve online from their own slates (clicks per position relative to
position 0) and weight rewards by its inverse (clipped), the examination hypothesis
of click models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..models.base import UserState
from .index import top_k
from .ranker import minmax


@dataclass
class SlateContext:
    """What a policy may look at to choose a slate."""

    user: UserState
    items: ItemIds  # the candidate pool
    fused: np.ndarray  # fused score per candidate
    query: np.ndarray | None  # the user's LM query vector (None for a cold user)
    catalog: Catalog
    # catalog idx -> item vectors in the query's space (the content source's centred
    # vectors); None = the catalog's raw LM vectors.
    item_vectors: Callable[[np.ndarray], np.ndarray] | None = None
    # per-source normalised scores over the candidates (source -> array), if known
    parts: Mapping[str, np.ndarray] | None = None


@dataclass
class Served:
    """A chosen slate: positions into the pool, propensities, and what learning needs."""

    positions: np.ndarray  # indices into ctx.items, in slate order
    propensities: np.ndarray
    policy: str
    features: np.ndarray | None = None  # one row per served item (linear policies)
    state: Any = None  # policy-specific (RL: state id / vector, chosen actions)
    rewarded: set[int] = field(default_factory=set)  # slate positions that got feedback
    rewards: dict[int, float] = field(default_factory=dict)


class Policy:
    """Base: greedy top-k. Subclasses override ``choose`` and the learning hooks."""

    name: ClassVar[str] = "greedy"
    stochastic: ClassVar[bool] = False

    def __init__(self, *, pool: int = 100, seed: int = 0) -> None:
        self.pool = pool
        self.seed = seed
        self.rng_ = np.random.default_rng(seed)
        self.clicks_by_pos_ = np.zeros(64)
        self.shown_by_pos_ = np.zeros(64)

    # ------------------------------------------------------------------ serving
    def choose(self, ctx: SlateContext, k: int) -> Served:
        order = top_k(ctx.fused, k)
        return Served(order, np.ones(len(order)), self.name)

    # ----------------------------------------------------------------- learning
    def feedback(self, ctx_served: Served, slot: int, reward: float) -> None:
        """A served item at slate position ``slot`` got a (positive) reward now."""

    def settle(self, served: Served, next_ctx: SlateContext | None) -> None:
        """The slate is closed: unrewarded slots count 0; update the examination curve."""
        n = min(len(served.positions), len(self.shown_by_pos_))
        self.shown_by_pos_[:n] += 1
        for slot in served.rewards:
            if slot < 64 and served.rewards[slot] > 0:
                self.clicks_by_pos_[slot] += 1

    def examination(self, slot: int) -> float:
        """Estimated probability that position ``slot`` is looked at, relative to the top."""
        slot = min(slot, len(self.shown_by_pos_) - 1)  # deep slots share the last estimate
        if slot == 0 or self.shown_by_pos_[slot] < 50 or self.clicks_by_pos_[0] < 5:
            return 1.0 / (1.0 + slot) ** 0.5 if slot else 1.0  # prior until there is evidence
        ctr0 = self.clicks_by_pos_[0] / self.shown_by_pos_[0]
        ctr = self.clicks_by_pos_[slot] / self.shown_by_pos_[slot]
        return float(np.clip(ctr / ctr0, 0.05, 1.0)) if ctr0 > 0 else 1.0

    def params(self) -> dict[str, Any]:
        return {"pool": self.pool, "seed": self.seed}


class EpsilonGreedy(Policy):
    """With probability ε a uniformly random pool item, else the best remaining one.

    The propensity of each served item is exact: ``(1-ε)·[item is best remaining] +
    ε / |remaining pool|`` at its position, given the items above it.
    """

    name: ClassVar[str] = "epsilon"
    stochastic: ClassVar[bool] = True

    def __init__(self, *, epsilon: float = 0.1, pool: int = 50, seed: int = 0) -> None:
        super().__init__(pool=pool, seed=seed)
        self.epsilon = epsilon

    def choose(self, ctx: SlateContext, k: int) -> Served:
        pool = top_k(ctx.fused, max(self.pool, k))
        remaining = list(pool)  # best first
        chosen, props = [], []
        for _ in range(min(k, len(pool))):
            n = len(remaining)
            if self.rng_.random() < self.epsilon:
                j = int(self.rng_.integers(n))
            else:
                j = 0
            p = self.epsilon / n + (1 - self.epsilon) * (j == 0)
            chosen.append(remaining.pop(j))
            props.append(p)
        return Served(np.asarray(chosen, dtype=np.int64), np.asarray(props), self.name)


class _Linear(Policy):
    """Shared machinery of LinUCB and linear Thompson sampling.

    Features of (user, item): a fixed seeded random projection of ``q ⊙ v_item``
    (the LM-space agreement of user and item, reduced to ``dim``), the item's fused
    score, each source's normalised score (so the policy learns online which source
    predicts what this audience clicks: the blend adapts per event) and a bias term.
    Ridge regression statistics A, b are updated per reward.
    """

    def __init__(self, *, dim: int = 32, l2: float = 1.0, pool: int = 100, seed: int = 0) -> None:
        super().__init__(pool=pool, seed=seed)
        self.dim = dim
        self.l2 = l2
        self.A_ = np.eye(dim + 2) * l2
        self.b_ = np.zeros(dim + 2)
        self.proj_: np.ndarray | None = None
        self.sources_: tuple[str, ...] = ()

    def _features(self, ctx: SlateContext, pool: np.ndarray) -> np.ndarray:
        d_lm = ctx.catalog.dim or 1
        if self.proj_ is None or self.proj_.shape[0] != d_lm:
            rng = np.random.default_rng(self.seed + 7919)
            self.proj_ = rng.normal(size=(d_lm, self.dim)) / math.sqrt(self.dim)
        idx = ctx.items.idx[pool]
        v = (ctx.item_vectors(idx) if ctx.item_vectors is not None else ctx.catalog.vectors[idx]).astype(np.float64)
        q = ctx.query.astype(np.float64) if ctx.query is not None else np.zeros(d_lm)
        f = minmax(ctx.fused[pool])
        sources = tuple(sorted(ctx.parts)) if ctx.parts else ()
        if sources != self.sources_:
            # The feature layout changed (first slate, or other sources): start the model over.
            self.sources_ = sources
            self.A_ = np.eye(self.dim + 2 + len(sources)) * self.l2
            self.b_ = np.zeros(self.dim + 2 + len(sources))
        per = [minmax(np.asarray(ctx.parts[n])[pool]) for n in sources]  # type: ignore[index]
        return np.column_stack([(v * q) @ self.proj_ * math.sqrt(d_lm), f, *per, np.ones(len(pool))])

    def _update(self, x: np.ndarray, r: float, weight: float = 1.0) -> None:
        self.A_ += weight * np.outer(x, x)
        self.b_ += weight * r * x

    def feedback(self, served: Served, slot: int, reward: float) -> None:
        if served.features is None or slot in served.rewarded:
            return
        served.rewarded.add(slot)
        served.rewards[slot] = reward
        # Examination hypothesis: a click where few users look counts as more evidence.
        w = 1.0 / self.examination(slot)
        self._update(served.features[slot], reward, min(w, 5.0))

    def settle(self, served: Served, next_ctx: SlateContext | None) -> None:
        if served.features is not None:
            for slot in range(len(served.positions)):
                if slot not in served.rewarded:
                    # An unclicked item was only weakly evidence of dislike if rarely examined.
                    self._update(served.features[slot], 0.0, self.examination(slot))
        super().settle(served, next_ctx)


class LinUCB(_Linear):
    """Upper confidence bound on a ridge model (Li et al. 2010). Deterministic: propensity 1."""

    name: ClassVar[str] = "linucb"

    def __init__(self, *, alpha: float = 0.5, dim: int = 32, l2: float = 1.0, pool: int = 100, seed: int = 0) -> None:
        super().__init__(dim=dim, l2=l2, pool=pool, seed=seed)
        self.alpha = alpha

    def choose(self, ctx: SlateContext, k: int) -> Served:
        pool = top_k(ctx.fused, max(self.pool, k))
        X = self._features(ctx, pool)
        A_inv = np.linalg.inv(self.A_)
        theta = A_inv @ self.b_
        ucb = X @ theta + self.alpha * np.sqrt(np.einsum("ij,jk,ik->i", X, A_inv, X))
        order = top_k(ucb, k)
        return Served(pool[order], np.ones(len(order)), self.name, features=X[order])


class LinearTS(_Linear):
    """Linear Thompson sampling (Agrawal & Goyal 2013).

    The pool is the top ``pool`` items by fused score plus ``n_random`` other
    candidates drawn uniformly: a taste the fused score does not know yet (a new
    interest, a shifted one) can only be discovered among items it ranks low.
    Propensities are estimated by re-drawing the random candidates and the posterior
    ``n_propensity`` times and counting how often each served item lands at its
    position.
    """

    name: ClassVar[str] = "lints"
    stochastic: ClassVar[bool] = True

    def __init__(
        self, *, v: float = 0.3, dim: int = 32, l2: float = 1.0, pool: int = 100, n_random: int = 20,
        n_propensity: int = 64, seed: int = 0,
    ) -> None:
        super().__init__(dim=dim, l2=l2, pool=pool, seed=seed)
        self.v = v
        self.n_random = n_random
        self.n_propensity = n_propensity

    def _extras(self, n: int, top: np.ndarray, draws: int) -> np.ndarray:
        """(draws, n_random) candidate positions outside ``top`` (-1 = none left)."""
        m = min(self.n_random, n - len(top))
        if m <= 0:
            return np.full((draws, 0), -1, dtype=np.int64)
        rest = np.setdiff1d(np.arange(n), top, assume_unique=True)
        return np.stack([self.rng_.choice(rest, size=m, replace=False) for _ in range(draws)])

    def choose(self, ctx: SlateContext, k: int) -> Served:
        top = top_k(ctx.fused, max(self.pool, k))
        extras = self._extras(len(ctx.fused), top, self.n_propensity + 1)  # row 0 serves, the rest re-draw
        universe = np.unique(np.concatenate([top, extras.ravel()]))
        X = self._features(ctx, universe)
        where = {int(p): j for j, p in enumerate(universe)}
        A_inv = np.linalg.inv(self.A_)
        mean = A_inv @ self.b_
        chol = np.linalg.cholesky(self.v**2 * A_inv + 1e-12 * np.eye(len(mean)))
        draws = mean[:, None] + chol @ self.rng_.standard_normal((len(mean), self.n_propensity + 1))
        scores = X @ draws  # (universe, draws)
        # Draw d may only pick from the top pool and its own random candidates.
        allowed = np.zeros(scores.shape, dtype=bool)
        allowed[[where[int(p)] for p in top], :] = True
        for d in range(extras.shape[0]):
            allowed[[where[int(p)] for p in extras[d]], d] = True
        scores = np.where(allowed, scores, -np.inf)
        order = top_k(scores[:, 0], k)
        order = order[np.isfinite(scores[order, 0])]
        kk = len(order)
        # Each other draw's slate: where would it put the served items?
        tops = np.argsort(-scores[:, 1:], axis=0, kind="stable")[:kk]  # (kk, n_propensity)
        props = np.array([(tops[slot] == order[slot]).mean() for slot in range(kk)])
        props = np.clip(props, 1.0 / (self.n_propensity + 1), 1.0)
        return Served(universe[order], props, self.name, features=X[order])


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Policy, EpsilonGreedy, LinUCB, LinearTS)}


def register_policy(cls: type[Policy]) -> type[Policy]:
    POLICIES[cls.name] = cls
    return cls


def make_policies(config: Mapping[str, Mapping[str, Any]], seed: int = 0) -> dict[str, Policy]:
    """Instantiate configured policies (name -> hyperparameters); greedy is always there."""
    out: dict[str, Policy] = {"greedy": Policy(seed=seed)}
    for name, params in config.items():
        cls = POLICIES.get(params.get("type", name) if isinstance(params, Mapping) else name)
        if cls is None:
            from ..errors import ValidationError

            raise ValidationError(
                f"unknown policy {name!r}; known policies are {sorted(POLICIES)}.", field="policies"
            )
        kwargs = {k: v for k, v in dict(params).items() if k != "type"}
        kwargs.setdefault("seed", seed)
        out[name] = cls(**kwargs)
    return out
