"""Dependencies every router shares: the Service, and API-key roles (read < write < admin).

Routes declare what they need in their signature or decorator::

    @router.get("/variants", dependencies=[READ])
    def variants(svc: Svc) -> VariantsOut: ...

Dependencies are async on purpose: FastAPI runs a sync dependency in the thread pool,
a thread hand-off on every request for what is a dict lookup.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import APIKeyHeader

from .auth import HEADER, allows, bearer_token, hash_key
from .core import Service


async def get_service(request: Request) -> Service:
    """The app's Service (created by the lifespan)."""
    return request.app.state.svc


Svc = Annotated[Service, Depends(get_service)]
api_key = APIKeyHeader(name=HEADER, auto_error=False, description="API key; roles read < write < admin")


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if any."""
    return bearer_token(request.headers.get("authorization", ""))


async def authorize(svc: Service, key: str | None, role: str) -> None:
    """Raise 401/403 unless ``key`` has ``role`` (nothing is checked with open access)."""
    if svc.settings.open_access:
        return
    if not key:
        raise HTTPException(401, f"this call needs an API key with role {role!r} in the {HEADER} header.")
    known, have = svc.role_cached(key)
    if not known:  # a store lookup, at most once per key every Service.key_ttl seconds
        have = await asyncio.to_thread(svc.role_of, key)
    if have is None:
        raise HTTPException(401, f"unknown or revoked API key; create one with `liverec keys create NAME --role {role}`.")
    if not allows(have, role):
        raise HTTPException(403, f"this call needs role {role!r}; the key has role {have!r}.")


def require(role: str) -> DependsParam:
    """A route dependency that answers 401/403 unless the caller's key has ``role``."""

    # The Service is read from the app, not asked for as a dependency: each nested
    # dependency costs FastAPI a resolution pass on every request.
    async def check(request: Request, key: Annotated[str | None, Depends(api_key)] = None) -> None:
        await authorize(request.app.state.svc, key or bearer(request), role)

    check.role = role  # type: ignore[attr-defined]  # read by role_of_route (auth first, OpenAPI)
    return Depends(check)


READ, WRITE, ADMIN = require("read"), require("write"), require("admin")


async def caller_id(request: Request, key: Annotated[str | None, Depends(api_key)] = None) -> str:
    """Who is calling, for per-key accounting: ``key:<first 16 hex of the key's SHA-256>``
    (never the key itself), or ``open`` when keys are off."""
    if request.app.state.svc.settings.open_access:
        return "open"
    key = key or bearer(request)
    return f"key:{hash_key(key)[:16]}" if key else "anonymous"


Caller = Annotated[str, Depends(caller_id)]


def role_of_route(route: Any) -> str | None:
    """The role a route's dependencies require, or None for a public route."""
    for dep in getattr(route, "dependencies", None) or []:
        role = getattr(dep.dependency, "role", None)
        if role is not None:
            return role
    return None
