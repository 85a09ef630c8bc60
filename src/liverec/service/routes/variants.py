"""/variants and the ε-DP exports (/admin/export/...): A/B results, live and private."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from ...errors import ValidationError
from ...types import Event
from .. import schemas as S
from ..ab import wilson
from ..core import Service
from ..deps import ADMIN, READ, Caller, Svc
from ..privacy import MAX_EPSILON, bounded_popularity, dp_counts

router = APIRouter()
MECHANISM = "two-sided geometric (discrete Laplace)"
Epsilon = Annotated[float | None, Query(ge=0.001, le=MAX_EPSILON,
                                        description="ε this export spends (default: Settings.dp_epsilon)")]


def variant_rows(svc: Service) -> list[S.VariantOut]:
    """Per-variant served, clicked and CTR (fleet-wide from Redis when replicas share it)."""
    ctr = svc.stats.ctr()
    fleet = svc.rep.counts() if svc.rep is not None else None
    if fleet is not None:  # fleet-wide counters from Redis replace this replica's own
        ctr = {n: {"served": a, "clicked": b, "ctr": b / a if a else None, "ctr_ci95": list(wilson(b, a))}
               for n, (a, b) in fleet.items()}
    names = [v.name for v in svc.variants] + sorted(n for n in ctr if n not in svc.by_name)
    out = []
    for n in names:
        row = ctr.get(n, {"served": 0, "clicked": 0, "ctr": None, "ctr_ci95": [0.0, 1.0]})
        v = svc.by_name.get(n)
        out.append(S.VariantOut(name=n, share=v.share if v else 0.0, policy=v.policy if v else n.split("+")[-1], **row))
    return out


@router.get("/variants", response_model=S.VariantsOut, tags=["ab"], dependencies=[READ])
def variants(svc: Svc) -> S.VariantsOut:
    """Per-variant served items, clicks and CTR with a 95% Wilson interval (since start)."""
    return S.VariantsOut(variants=variant_rows(svc))


def spend(svc: Service, who: str, epsilon: float | None) -> tuple[float, float, float | None]:
    """(ε, spent in this window, when the window ends) for one DP export by caller ``who``,
    after charging ε to that API key's privacy budget for the current window.

    Budgets are counters in the store, so restarts and every worker or replica over the
    same store share them; an export that would take the key past ``Settings.dp_budget``
    in this window (``Settings.dp_budget_window_s``; 0 = one window for ever) is refused
    (429) and spends nothing.
    """
    eps = float(epsilon or svc.settings.dp_epsilon)
    if eps > MAX_EPSILON:
        raise ValidationError(
            f"epsilon {eps:g} is above {MAX_EPSILON:g}: the noise would be so small that the export released "
            f"near-exact counts. Use epsilon <= {MAX_EPSILON:g} (LIVEREC_DP_EPSILON for the default).",
            field="epsilon",
        )
    budget, window = svc.settings.dp_budget, svc.settings.dp_budget_window_s
    start = math.floor(time.time() / window) * window if window > 0 else None
    renews = start + window if start is not None else None
    counter = f"dp_epsilon_spent:{who}" + (f":{start:.0f}" if start is not None else "")
    ok, spent = svc.engine.store.spend(counter, eps, limit=budget)
    if not ok:
        when = (f"it starts afresh at {datetime.fromtimestamp(renews, timezone.utc):%Y-%m-%d %H:%M:%S} UTC; "
                if renews is not None else "")
        raise HTTPException(
            429,
            f"the privacy budget is spent: this API key's DP exports have used ε={spent:g} of dp_budget={budget:g}"
            f"{' in this window' if renews is not None else ''}, and this export needs ε={eps:g}. Every export "
            f"adds to what an observer can learn about one user; {when}export with a smaller epsilon, or raise "
            "LIVEREC_DP_BUDGET knowing the total privacy loss grows.",
        )
    return eps, spent, renews


#: The refusal of an export past the key's budget, in the OpenAPI document.
SPENT: dict[int | str, dict[str, Any]] = {429: {"model": S.ErrorOut, "description": "The API key's privacy budget for this window is spent"}}


@router.get("/admin/export/popularity", response_model=S.DPCountOut, tags=["privacy"], dependencies=[ADMIN],
            responses=SPENT)
def export_popularity(
    svc: Svc,
    who: Caller,
    epsilon: Epsilon = None,
    top: Annotated[int, Query(ge=1, le=100_000, description="Return the top items by noisy count")] = 100,
) -> S.DPCountOut:
    """ε-DP item popularity: distinct users with a positive event per item, geometric noise.

    Each user counts toward at most ``dp_max_contributions`` items (their first),
    so the L1 sensitivity is that bound; noise is added to every catalog item
    (zeros included, so which items were touched is not revealed), then the top
    ``top`` noisy counts are returned (post-processing).
    """
    eps, spent, renews = spend(svc, who, epsilon)
    cap = svc.settings.dp_max_contributions
    eng = svc.engine
    weights = eng.feedback.kind_weights

    def positive(e: Event) -> bool:
        if e.kind == "rating":
            return eng.feedback.weight(e.kind, e.value) > 0
        return weights.get(e.kind, 0) > 0

    live = (i for i, alive in zip(eng.catalog.ids, eng.catalog.alive) if alive)
    counts = bounded_popularity((e for _, e in eng.store.iter_events()), live, positive=positive, cap=cap)
    noisy = dp_counts(counts, epsilon=eps, sensitivity=cap)
    best = dict(sorted(noisy.items(), key=lambda kv: -kv[1])[:top])
    return S.DPCountOut(epsilon=eps, sensitivity=cap, mechanism=MECHANISM, budget=svc.settings.dp_budget,
                        budget_spent=spent, budget_renews_at=renews, counts=best)


@router.get("/admin/export/variants", response_model=S.DPVariantOut, tags=["privacy"], dependencies=[ADMIN],
            responses=SPENT)
def export_variants(svc: Svc, who: Caller, epsilon: Epsilon = None) -> S.DPVariantOut:
    """ε-DP per-variant CTR: noisy served and clicked counts (ε/2 each), CTR from them.

    Each user adds at most ``dp_max_contributions`` served items and as many clicks
    to the counts of all variants together, so that bound is the L1 sensitivity of
    each vector however many variants (or ``?policy=`` overrides) the user saw.
    """
    eps, spent, renews = spend(svc, who, epsilon)
    cap = svc.settings.dp_max_contributions
    raw = svc.stats.dp_counts()
    names = [v.name for v in svc.variants] + sorted(n for n in raw if n not in svc.by_name)
    served = dp_counts({n: raw.get(n, (0, 0))[0] for n in names}, epsilon=eps / 2, sensitivity=cap)
    clicked = dp_counts({n: raw.get(n, (0, 0))[1] for n in names}, epsilon=eps / 2, sensitivity=cap)
    out: dict[str, dict[str, float | int | None]] = {
        n: {"served": served[n], "clicked": clicked[n],
            "ctr": min(1.0, clicked[n] / served[n]) if served[n] else None} for n in names
    }
    return S.DPVariantOut(epsilon=eps, sensitivity=cap, mechanism=MECHANISM, budget=svc.settings.dp_budget,
                          budget_spent=spent, budget_renews_at=renews, variants=out)
