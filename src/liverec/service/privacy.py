"""Differentially private exports of aggregate statistics.

Mechanism: the **geometric mechanism** (Ghosh, Roughgarden & Sundararajan 2009:
two-sided geometric = discrete Laplace noise, P(k) ∝ exp(-ε|k|/Δ)) on integer counts
whose per-user contribution is bounded first.

* Item popularity: for every item, the number of distinct users with a positive event
  on it. Each user counts toward at most ``max_contributions`` items (their first ones
  by time), so adding or removing one user changes the count vector by at most
  ``max_contributions`` in L1: sensitivity ``= max_contributions``, noise scale
  ``max_contributions / epsilon`` per count. Releasing the whole vector is
  ``epsilon``-DP (user-level).
* Per-variant CTR: per variant, noisy served-item and clicked-item counts, each user
  contributing at most ``max_contributions`` to each; the budget is split in two
  (``epsilon / 2`` each); the released CTR is post-processing of the noisy counts.

Negative noisy counts are clipped to 0 (post-processing keeps the guarantee). Every
export spends its ε from the calling API key's budget (``Settings.dp_budget`` per
``Settings.dp_budget_window_s``, kept in the store; basic composition: the total
privacy loss is the sum over exports, keys and windows); once spent, that key's
exports are refused until the next window.
One export's ε is at most ``MAX_EPSILON``.

Examples
--------
>>> noisy = dp_counts({"a": 100, "b": 3}, epsilon=1.0, sensitivity=1, seed=0)
>>> sorted(noisy) == ["a", "b"] and all(v >= 0 for v in noisy.values())
True
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

import numpy as np

from ..types import Event

#: Largest ε one export may spend. Above it the noise is mostly zero (with
#: sensitivity 1, ε=10 leaves a count exact with probability 0.9999): the export would
#: release the exact counts DP is meant to hide.
MAX_EPSILON = 10.0


def dp_counts(
    counts: Mapping[str, int], *, epsilon: float, sensitivity: int, seed: int | None = None
) -> dict[str, int]:
    """Each count plus two-sided geometric noise of scale ``sensitivity / epsilon``, clipped at 0.

    ``epsilon`` applies to the whole vector: the caller must bound each user's L1
    contribution to ``sensitivity``.
    """
    if not epsilon > 0:
        raise ValueError(f"epsilon must be > 0, got {epsilon!r}")
    # Written here rather than taken from IBM's diffprivlib: its 0.6.6 import fails
    # against scikit-learn 1.9 (sklearn.tree._tree.DOUBLE is gone). The difference of two
    # i.i.d. geometric variables with success p = 1 - exp(-ε/Δ) is exactly two-sided
    # geometric; integer output avoids the floating-point attacks on continuous Laplace.
    rng = np.random.default_rng(seed)
    p = 1.0 - np.exp(-epsilon / sensitivity)
    keys = list(counts)
    noise = rng.geometric(p, size=len(keys)) - rng.geometric(p, size=len(keys))
    return {k: max(0, int(counts[k]) + int(z)) for k, z in zip(keys, noise)}


def bounded_popularity(
    events: Iterable[Event], items: Iterable[str], *, positive: Callable[[Event], bool], cap: int
) -> dict[str, int]:
    """Distinct users with a positive event per item, each user counted for at most ``cap``
    items (their first): the count vector a popularity export adds noise to.

    >>> evs = [Event("u1", "a"), Event("u1", "b"), Event("u2", "a"), Event("u2", "zz")]
    >>> bounded_popularity(evs, ["a", "b", "c"], positive=lambda e: True, cap=1)
    {'a': 2, 'b': 0, 'c': 0}
    """
    per_user: dict[str, list[str]] = {}
    for e in events:
        if not positive(e):
            continue
        mine = per_user.setdefault(e.user, [])
        if len(mine) < cap and e.item not in mine:
            mine.append(e.item)
    counts = dict.fromkeys(items, 0)
    for mine in per_user.values():
        for i in mine:
            if i in counts:
                counts[i] += 1
    return counts
