"""What happens to a served slate when the user acts on it.

Each user's last served slate is remembered (item -> slot, every slot's per-source
normalised scores) until their next request replaces it. A later event on one of its
items then
- rewards the exploring policy that chose the slate (bandit / RL feedback, with the
  propensities it logged), and
- teaches the online fusion (:class:`~liverec.rank.fusion.OnlineFusion`) which sources
  ranked the acted-on item above the items shown over it (skip-above / skip-next pairs).

Examples
--------
>>> loop = SlateFeedback(store, policies, reward_of, learning_rate=0.05)   # doctest: +SKIP
>>> loop.reset(start_weights)                                           # doctest: +SKIP
>>> loop.remember(user, scored, positions, weights); loop.learn(event, item_idx)  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Callable, Mapping

import numpy as np

from ..store import Store
from ..types import Event
from .fusion import OnlineFusion
from .policy import Policy, Served, SlateContext
from .ranker import Scored

#: The per-event fusion learning rate when ``Settings.fusion_learning_rate`` is unset and
#: the weights were not tuned on the log. Tuned weights hold: learning per click from them
#: lost 5-7% of stream HR@10 on two MovieLens datasets (benchmarks/RESULTS.md), while from
#: hand-set starting weights it finds what a hand-tuned blend would.
UNTUNED_RATE = 0.05

#: Users whose last slate is remembered for online fusion learning (oldest forgotten first).
MAX_SLATES = 100_000

#: The online fusion weights are written to the store after this many steps (and on close).
SAVE_EVERY = 1000


class SlateFeedback:
    """Remembers served slates and turns events on them into policy and fusion updates."""

    def __init__(
        self, store: Store, policies: Mapping[str, Policy], reward_of: Callable[[Event], float],
        learning_rate: float | None, max_users: int = MAX_SLATES,
    ) -> None:
        self.store, self.policies, self.reward_of = store, policies, reward_of
        self.learning_rate, self.max_users = learning_rate, max_users
        #: user -> (exploring slate, item idx -> slot), until the user's next exploring request.
        self.pending: dict[str, tuple[Served, dict[int, int]]] = {}
        #: user -> (item idx -> slot, per-slot normalised source scores, slots acted on).
        self.slates: OrderedDict[str, tuple[dict[int, int], list[dict[str, float]], set[int]]] = OrderedDict()
        self.fusion: OnlineFusion | None = None
        self._dirty = 0

    # --------------------------------------------------------------- fusion state
    def rate(self, tuned: bool) -> float:
        """The learning rate: as configured, else :data:`UNTUNED_RATE` for weights not tuned
        on the log and 0 (fixed) for tuned ones.

        Examples
        --------
        >>> loop = SlateFeedback(None, {}, lambda e: 0.0, learning_rate=None)
        >>> loop.rate(tuned=False), loop.rate(tuned=True)
        (0.05, 0.0)
        """
        if self.learning_rate is not None:
            return self.learning_rate
        return 0.0 if tuned else UNTUNED_RATE

    def reset(self, start: Mapping[str, float], *, tuned: bool = False) -> None:
        """(Re)start per-event fusion learning from ``start`` (``tuned``: weights tuned on the
        log; see :meth:`rate`); resume what the store holds if it was learned from these
        same starting weights."""
        self._dirty = 0
        rate = self.rate(tuned)
        if rate <= 0:
            self.fusion = None
            return
        self.fusion = OnlineFusion(dict(start), lr=rate)
        snap = self.store.get_snapshot("fusion_weights_online")
        if snap is not None:
            self.fusion.restore(json.loads(snap[0].decode()))

    def save(self) -> None:
        """Write the learned fusion weights to the store (if they moved since the last save)."""
        if self.fusion is None or not self._dirty:
            return
        self.store.put_snapshot(
            "fusion_weights_online", json.dumps(self.fusion.state()).encode(), self.store.last_event_seq()
        )
        self._dirty = 0

    def weights(self, start: Mapping[str, float]) -> dict[str, float]:
        """The fusion weights now: learned online, else ``start``."""
        return self.fusion.weights if self.fusion is not None else dict(start)

    # ------------------------------------------------------------------ slates
    def remember(self, user: str, scored: Scored, positions: np.ndarray, w: Mapping[str, float]) -> None:
        """Keep the served slate's per-source normalised scores until the user acts on it."""
        if self.fusion is None:
            return
        eff = {n: w.get(n, 0.0) * scored.scale.get(n, 1.0) for n in scored.parts}  # the weights this slate used
        pos = np.asarray(positions, dtype=np.intp)
        cols = [(n, (v[pos] / eff[n]).tolist()) for n, v in scored.parts.items() if eff[n]]  # one read per source
        xs = [{n: col[j] for n, col in cols} for j in range(len(pos))]
        self.slates[user] = ({int(scored.items.idx[p]): slot for slot, p in enumerate(positions)}, xs, set())
        self.slates.move_to_end(user)
        if len(self.slates) > self.max_users:
            self.slates.popitem(last=False)

    def choose(self, policy: str, ctx: SlateContext, scored: Scored, k: int) -> Served:
        """Let an exploring policy pick the slate; the user's previous one is settled first."""
        prev = self.pending.pop(ctx.user.user, None)
        if prev is not None:
            self.policies[prev[0].policy].settle(prev[0], ctx)
        served = self.policies[policy].choose(ctx, k)
        self.pending[ctx.user.user] = (served, {int(scored.items.idx[p]): s for s, p in enumerate(served.positions)})
        return served

    def learn(self, e: Event, item: int | None) -> None:
        """An event of ``e.user`` on dense item ``item``: reward the policy, teach the fusion."""
        pending = self.pending.get(e.user)
        if pending is not None and item is not None:
            served, slots = pending
            slot = slots.get(item)
            if slot is not None:
                r = self.reward_of(e)
                if r != 0:
                    self.policies[served.policy].feedback(served, slot, r)
        memo = self.slates.get(e.user)
        if memo is None or self.fusion is None or item is None:
            return
        slots, xs, acted = memo
        j = slots.get(item)
        if j is None or j in acted or self.reward_of(e) <= 0:
            return
        acted.add(j)
        # Skip-above and skip-next: the items shown above j and the one right below, not acted on.
        others = [xs[o] for o in range(min(j + 2, len(xs))) if o != j and o not in acted]
        if self.fusion.update(xs[j], others):
            self._dirty += 1
            if self._dirty >= SAVE_EVERY:
                self.save()

    def forget(self, user: str) -> None:
        self.pending.pop(user, None)
        self.slates.pop(user, None)
