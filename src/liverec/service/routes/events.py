"""/events: one event or a batch, durable before the answer, learned from at once."""

from __future__ import annotations

from fastapi import APIRouter, Response

from .. import schemas as S
from ..core import Service
from ..deps import WRITE, Svc
from ..encoding import dumps
from ..params import batch_limit

router = APIRouter(tags=["events"])


@router.post("/events", response_model=S.EventsAccepted, dependencies=[WRITE],
             responses={413: {"model": S.ErrorOut}, 422: {"model": S.ErrorOut}})
async def post_events(body: S.EventsIn | S.EventIn, svc: Svc) -> Response:
    """One event or ``{"events": [...]}``; idempotent by event id; learned from at once.

    The response is sent after the events are durable (committed) and every learner
    has seen them: the next recommendation request reflects them.
    """
    return await accept(svc, body)


async def accept(svc: Service, body: S.EventsIn | S.EventIn) -> Response:
    """Store and learn a validated body; the ``EventsAccepted`` answer (shared with :mod:`..fastpath`)."""
    items = body.events if isinstance(body, S.EventsIn) else [body]
    batch_limit(len(items), svc.settings.max_batch, "events")
    events = [e.to_event() for e in items]
    n = await svc.record(events)
    # Encoded here: the documented EventsAccepted shape without a pydantic pass per request.
    return Response(dumps({"received": len(events), "accepted": n, "duplicates": len(events) - n}),
                    media_type="application/json")
