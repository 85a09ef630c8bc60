"""/users: what the service knows of a user, declared interests, erasure."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Path

from .. import schemas as S
from ..core import Service
from ..deps import READ, WRITE, Svc
from ..params import path_id

log = logging.getLogger("liverec.http")
router = APIRouter(tags=["users"])
UserId = Annotated[str, Path(min_length=1, max_length=256)]


def user_out(svc: Service, user: str) -> S.UserOut:
    """The user's variant, declared interests, event count and latest events."""
    if svc.shared:
        svc.engine.catch_up()
    hist = svc.engine.history(user)
    st = svc.engine.user_state(user)
    return S.UserOut(
        user=user, variant=svc.assign(user).name, interests=st.interests_text, events=len(hist),
        recent=[{"item": e.item, "kind": e.kind, "value": e.value, "timestamp": e.timestamp} for e in hist[-10:]],
    )


@router.get("/users/{user}", response_model=S.UserOut, dependencies=[READ])
def get_user(user: UserId, svc: Svc) -> S.UserOut:
    """The user's variant, declared interests and latest events."""
    path_id(user, "user")
    return user_out(svc, user)


@router.put("/users/{user}/interests", response_model=S.UserOut, dependencies=[WRITE])
def put_interests(body: S.InterestsIn, user: UserId, svc: Svc) -> S.UserOut:
    """Declare (or clear with null) what the user says they like, as free text."""
    path_id(user, "user")
    svc.engine.set_interests(user, body.interests)
    svc.cache.forget(user)
    svc.published("interests")
    return user_out(svc, user)


@router.delete("/users/{user}", response_model=S.ErasureOut, dependencies=[WRITE])
def erase_user(user: UserId, svc: Svc) -> S.ErasureOut:
    """Erase the user: events, impressions, interests, learner state, caches, A/B counters.

    The A/B assignment is a hash of the id and is stored nowhere; the per-variant
    counters forget which items were served to the user. The user's event ids are
    forgotten with them: an event sent later with one of those ids is new data and is
    stored again.
    """
    path_id(user, "user")
    counts = dict(svc.engine.delete_user(user))
    counts["cache_entries"] = svc.forget(user)
    log.info("erased one user (%d events)", counts.get("events", 0))
    return S.ErasureOut(user=user, deleted=counts)
