"""Operations: liveness, readiness, Prometheus metrics, live stats, background re-fit."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from .. import schemas as S
from ..deps import ADMIN, READ, Svc
from ..encoding import Json
from ..metrics import CONTENT_TYPE
from .variants import variant_rows

router = APIRouter()
_HEALTHY = b'{"status":"ok"}'


@router.get("/health", response_model=S.HealthOut, tags=["ops"])
async def health() -> Response:
    """Liveness: the process answers."""
    return Response(_HEALTHY, media_type="application/json")


@router.get("/ready", response_model=S.ReadyOut, tags=["ops"], responses={503: {"model": S.ReadyOut}})
async def ready(svc: Svc) -> Any:
    """Readiness: the engine is open and the store answers."""
    ok = True
    try:
        await asyncio.to_thread(svc.engine.store.last_event_seq)
    except Exception:  # noqa: BLE001 - not ready is the answer
        ok = False
    replication = "off" if svc.rep is None else ("redis" if svc.rep.connected else "polling")
    body = S.ReadyOut(ready=ok, items=svc.engine.n_items, model_version=svc.engine.model_version,
                      fit_running=svc.engine.fit_running, open_access=svc.settings.open_access,
                      replication=replication)
    return Json(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(svc: Svc) -> Response:
    """Prometheus metrics: request latency histograms, events, model version, per-variant CTR."""
    return Response(svc.metrics.render(svc.stats.ctr()), media_type=CONTENT_TYPE)


@router.get("/stats", response_model=S.StatsOut, tags=["ab"], dependencies=[READ])
def stats(svc: Svc) -> S.StatsOut:
    """Time series for the live page: events/s, requests/s, latency, CTR per variant."""
    e = svc.engine
    return S.StatsOut(events_total=svc.stats.events, items=e.n_items, model_version=e.model_version,
                      bucket_seconds=svc.stats.bucket_seconds, series=svc.stats.series(), variants=variant_rows(svc),
                      tuned=e.tuned.summary() if e.tuned is not None else None, importing=e.import_progress)


def _fit_out(svc: Any, started: bool) -> S.FitOut:
    e = svc.engine
    return S.FitOut(started=started, running=e.fit_running, model_version=e.model_version,
                    last_fit_seconds=e.last_fit_seconds, last_fit_error=e.last_fit_error)


@router.post("/admin/fit", response_model=S.FitOut, status_code=202, tags=["admin"], dependencies=[ADMIN])
def refit(svc: Svc) -> S.FitOut:
    """Start a background re-fit from the log; the old models serve until the hot swap."""
    started = False
    if not svc.engine.fit_running:
        svc.engine.fit(background=True)
        started = True
    return _fit_out(svc, started)


@router.get("/admin/fit", response_model=S.FitOut, tags=["admin"], dependencies=[ADMIN])
def fit_status(svc: Svc) -> S.FitOut:
    """Whether a re-fit runs, the model version, and how the last one went."""
    return _fit_out(svc, False)
