"""/recommendations and /explain: the hot read path.

A greedy answer is cached per (user, request) and sent again as the same bytes until
the user's next change (see :mod:`..cache`); the items are encoded once, with orjson,
from the engine's dataclasses (no pydantic model per item, no re-validation), in the
documented ``RecommendationsOut`` shape.
"""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Mapping, Sequence

import orjson
from fastapi import APIRouter, Path, Query, Response

from ...errors import ValidationError
from ...types import Recommendation, served_rows
from ...validate import check_filters, check_json_value
from .. import schemas as S
from ..core import Service
from ..deps import READ, Svc
from ..encoding import dumps
from ..params import json_param, path_id

router = APIRouter(tags=["recommendations"])
UserId = Annotated[str, Path(min_length=1, max_length=256)]


def item_json(r: Recommendation, attributes: Mapping[str, Any]) -> dict[str, Any]:
    """One served item as ``RecommendationOut`` JSON.

    >>> from liverec.types import Reason
    >>> r = Recommendation("b1", 0.5, (Reason("content", 1.0, "like b2", ("b2",)),))
    >>> item_json(r, {"title": "Dune", "year": 1965})["reasons"][0]["because"]
    ['b2']
    """
    return {
        "item": r.item, "score": float(r.score), "propensity": float(r.propensity), "position": r.position,
        "title": S.str_or_none(attributes.get("title")), "image_url": S.str_or_none(attributes.get("image_url")),
        "attributes": attributes, "explanation": r.explanation,
        "reasons": [{"source": x.source, "contribution": float(x.contribution), "text": x.text,
                     "because": list(x.because)} for x in r.reasons],
    }


def encode_items(svc: Service, recs: Sequence[Recommendation]) -> bytes:
    """The served items as a JSON array, attributes from the in-memory catalog."""
    return dumps([item_json(r, svc.engine.attributes_of(r.item)) for r in recs])


@router.get("/recommendations/{user}", response_model=S.RecommendationsOut, dependencies=[READ],
            responses={422: {"model": S.ErrorOut}})
async def recommendations(svc: Svc, user: UserId, q: Annotated[S.RecommendQuery, Query()]) -> Response:
    """The top ``k`` items for ``user``, with reasons, propensities and the serving variant."""
    return await answer(svc, user, q)


async def answer(svc: Service, user: str, q: S.RecommendQuery) -> Response:
    """The ``RecommendationsOut`` answer for validated parameters (shared with :mod:`..fastpath`)."""
    t0 = time.perf_counter()
    path_id(user, "user")
    if q.policy is not None and not q.policy.strip():
        raise ValidationError("policy is empty; name a policy (greedy, or one of Settings.policies) or leave "
                              "the parameter out for the variant's own.", field="policy")
    eng = svc.engine
    if svc.shared and eng.behind():  # one indexed query inline; learning off the loop
        await asyncio.to_thread(eng.catch_up)
    f = json_param(q.filters, "filters")
    if f is not None:
        check_filters(f)
    ctx = json_param(q.context, "context") or {}
    check_json_value(ctx, "context")
    if q.variant is not None and q.variant not in svc.by_name:
        raise ValidationError(f"unknown variant {q.variant!r}; configured variants are {sorted(svc.by_name)}.",
                              field="variant")
    v = svc.by_name[q.variant] if q.variant else svc.assign(user)
    vname = v.name if q.policy is None else f"{v.name}+{q.policy}"
    pol = q.policy or v.policy
    div = q.diversity if q.diversity is not None else v.diversity
    cap = q.max_per_provider if q.max_per_provider is not None else v.max_per_provider
    log_ctx = {**ctx, "variant": vname}
    # The variant name fixes its weights; the raw JSON strings stand for filters and context.
    key = (q.k, pol, div, cap, q.exclude_seen, tuple(q.exclude), q.filters or "", q.context or "", q.explain, vname)
    hit = svc.cache.get(user, key) if pol == "greedy" else None
    if hit is not None:
        payload, rows = hit
        if svc.settings.impression_flush_seconds > 0:  # buffered: a list append
            eng.log_served(user, rows, policy=pol, context=log_ctx)
        else:  # a synchronous write: off the event loop
            await asyncio.to_thread(eng.log_served, user, rows, policy=pol, context=log_ctx)
        svc.metrics.cache_hit.inc()
    else:
        version = svc.version(user)
        recs = await svc.recommend(
            user, k=q.k, policy=pol, filters=f, exclude=q.exclude or None, exclude_seen=q.exclude_seen,
            diversity=div, max_per_provider=cap, weights=v.weights, explain=q.explain, context=log_ctx,
        )
        payload = encode_items(svc, recs)
        rows = served_rows(recs)  # what a cache hit logs: plain tuples, which the cyclic GC stops tracking
        if pol == "greedy":
            svc.metrics.cache_miss.inc()
            svc.cache.put(user, key, version, payload, rows)
    took = (time.perf_counter() - t0) * 1e3
    served = [row[0] for row in rows]
    svc.stats.served(user, vname, served, took)
    if svc.rep is not None:
        svc.rep.served(user, vname, served)
    svc.metrics.served.labels(vname).inc(len(rows))
    # Only an empty answer can come of a filter that matches nothing: say which one.
    warns = [{"warning": "no_match", "message": w.message, "field": w.field, "fix": w.fix}
             for w in (await svc.unmatched(f) if f and not rows else ())]
    body = dumps({"user": user, "variant": vname, "policy": pol, "model_version": eng.model_version,
                  "cached": hit is not None, "took_ms": round(took, 3), "items": orjson.Fragment(payload),
                  "warnings": warns})
    return Response(body, media_type="application/json")


@router.get("/explain/{user}/{item}", response_model=S.ExplanationOut, dependencies=[READ],
            responses={404: {"model": S.ErrorOut}})
def explain(user: Annotated[str, Path(max_length=256)], item: Annotated[str, Path(max_length=256)],
            svc: Svc) -> S.ExplanationOut:
    """Why ``item`` would (or would not) be recommended to ``user`` now."""
    path_id(user, "user")
    path_id(item, "item")
    if svc.shared:
        svc.engine.catch_up()
    r = svc.engine.explain(user, item)
    return S.ExplanationOut(
        user=user, item=item, rank=r.position, score=r.score, explanation=r.explanation,
        reasons=[S.ReasonOut(source=x.source, contribution=x.contribution, text=x.text, because=list(x.because))
                 for x in r.reasons],
    )
