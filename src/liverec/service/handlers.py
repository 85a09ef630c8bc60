"""The one error shape of the API, ``{"error", "message", "field", "fix"}``, for every failure.

``install(app)`` maps FastAPI's validation errors, HTTP errors and the engine's
:class:`~liverec.errors.LiverecError` family to it; ``document_errors`` adds the same
responses to the OpenAPI document.

Examples
--------
>>> error(404, "not_found", "unknown item 'x'.").status_code
404
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ConflictError, LiverecError, NotFoundError, StoreError, UnknownItemError, ValidationError
from . import schemas as S
from .auth import HEADER
from .deps import authorize, bearer, role_of_route
from .encoding import Json

log = logging.getLogger("liverec.http")

FIX = {
    400: "send a well-formed JSON body (Content-Type: application/json) as the OpenAPI schema at /openapi.json describes.",
    401: "send an API key in the X-API-Key header (or Authorization: Bearer); create one with `liverec keys create NAME --role ROLE`.",
    403: "use a key with the role the message names.",
    404: "check the path and id; the endpoints are listed at /openapi.json.",
    405: "use one of the methods in the Allow header.",
    413: "split the request, or raise LIVEREC_MAX_BODY_BYTES / LIVEREC_MAX_BATCH.",
    422: "correct that field and send the request again; nothing was stored.",
    429: "wait, or raise the limit the message names.",
}
_KIND = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
         405: "method_not_allowed", 413: "payload_too_large", 429: "too_many_requests"}


def error(status: int, error: str, message: str, field: str | None = None, fix: str | None = None,
          headers: dict[str, str] | None = None) -> Json:
    """A response in the API's error shape."""
    return Json({"error": error, "message": message, "field": field, "fix": fix},
                          status_code=status, headers=headers)


async def _auth_first(request: Request) -> Json | None:
    """The 401/403 a request earns before its body is looked at.

    FastAPI parses the JSON body before it runs dependencies, so a malformed body
    would be answered 400/422 to a caller without a key; this answers 401 first.
    """
    role = role_of_route(request.scope.get("route"))
    if role is None:
        return None
    try:
        await authorize(request.app.state.svc, request.headers.get(HEADER) or bearer(request), role)
    except HTTPException as exc:
        return await _http(request, exc)
    return None


async def _invalid(request: Request, exc: RequestValidationError) -> Json:
    denied = await _auth_first(request)
    if denied is not None:
        return denied
    errs = list(exc.errors())
    # POST /events takes one event or {"events": [...]}: report only the branch the body meant.
    branches = {"EventIn", "EventsIn"}
    if any(len(e.get("loc", ())) > 1 and e["loc"][1] in branches for e in errs):
        body = getattr(exc, "body", None)
        meant = "EventsIn" if isinstance(body, dict) and "events" in body else "EventIn"
        errs = [
            {**e, "loc": (e["loc"][0], *e["loc"][2:])}
            for e in errs
            if len(e.get("loc", ())) < 2 or e["loc"][1] == meant
        ] or errs
    first: dict[str, Any] = errs[0] if errs else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return error(422, "invalid_json", f"the body is not valid JSON ({ctx.get('error', 'decode error')} "
                     f"at character {first['loc'][-1] if first.get('loc') else '?'}).", "body", FIX[400])
    return Json(
        {
            "error": "validation_error",
            "message": f"{where}: {first.get('msg')}",
            "field": where,
            "fix": "send the field as the OpenAPI schema at /openapi.json describes.",
            "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")} for e in errs[:20]],
        },
        status_code=422,
    )


async def _http(request: Request, exc: StarletteHTTPException) -> Json:
    code = exc.status_code
    if code == 400 and request.scope.get("route") is not None:
        denied = await _auth_first(request)  # a body FastAPI could not parse: auth still comes first
        if denied is not None:
            return denied
    message = str(exc.detail)
    if code == 404 and request.scope.get("route") is None:
        message = f"there is no endpoint {request.method} {request.url.path[:200]}."
    elif code == 405:
        message = f"{request.method} is not allowed on {request.url.path[:200]}."
    elif code == 400 and message == "There was an error parsing the body":
        message = "the body could not be parsed as JSON (malformed, or nested too deeply)."
    return error(code, _KIND.get(code, "error"), message, None, FIX.get(code), getattr(exc, "headers", None))


async def _domain(request: Request, exc: LiverecError) -> Json:
    return domain_error(request.method, exc)


def domain_error(method: str, exc: LiverecError) -> Json:
    """The answer to an engine error raised while serving a ``method`` request."""
    field = getattr(exc, "field", None)
    if isinstance(exc, UnknownItemError) and method in ("POST", "PUT"):
        return error(422, "unknown_item", str(exc), field, "add the item with POST /items first, "
                     "or start the server with LIVEREC_AUTO_CREATE_ITEMS=true; nothing was stored.")
    if isinstance(exc, NotFoundError):
        return error(404, "not_found", str(exc), field, FIX[404])
    if isinstance(exc, ValidationError):  # the error's own fix: it knows the setting or value to change
        return error(422, "validation_error", str(exc), field, exc.fix)
    if isinstance(exc, ConflictError):
        return error(409, "conflict", str(exc), field, "wait for the running operation to finish, then retry.")
    if isinstance(exc, StoreError):
        log.error("store error: %s", exc.__class__.__name__)
        return error(503, "store_unavailable", "the store is not reachable; retry later.",
                     fix="retry later; the operator should check the database.")
    return error(400, "bad_request", str(exc), field, exc.fix)


def install(app: FastAPI) -> None:
    """Answer every request error in the one error shape."""
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(LiverecError, _domain)  # type: ignore[arg-type]


def document_errors(doc: dict[str, Any], roles: dict[tuple[str, str], str | None]) -> dict[str, Any]:
    """Add the error responses every operation can give, in the one error shape."""
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    doc.setdefault("components", {}).setdefault("schemas", {})["ErrorOut"] = S.ErrorOut.model_json_schema()
    for path, ops in doc.get("paths", {}).items():
        for method, op in ops.items():
            res = op.setdefault("responses", {})
            if roles.get((path, method)):
                res.setdefault("401", {"description": "No API key, or an unknown or revoked one", **ref})
                res.setdefault("403", {"description": "The key's role is too low", **ref})
            if op.get("parameters") or op.get("requestBody"):
                res["422"] = {"description": "A field is invalid (named in `field`); nothing was stored", **ref}
            if op.get("requestBody"):
                res.setdefault("400", {"description": "The body could not be parsed", **ref})
                res.setdefault("413", {"description": "The body or the batch is too large", **ref})
    doc.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
    doc.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    return doc
