"""The two hot routes, ``POST /events`` and ``GET /recommendations/{user}``, answered
without FastAPI's per-request machinery when the request is well formed.

FastAPI spends most of a small request's CPU outside the endpoint: routing, the
dependency graph (the Service, the API key), the body parsed to Python and then
validated, the exception-handling wrappers. For the two routes every client calls
all the time this layer does the same checks directly: the caller's role from the
key cache, the body validated from its bytes by pydantic's JSON parser (one Rust
call), the query by the same ``RecommendQuery`` model, and then the routes' own code
(:func:`.routes.events.accept`, :func:`.routes.recommendations.answer`), so the
answer is the same bytes.

Anything it does not accept as plainly valid (an unknown or uncached key, a body or
query that fails validation, an unknown parameter, a batch over the limit) is left to
the full route, untouched, which gives the documented error; nothing has happened by
then. An engine error after the work started gets the error handlers' own answer.
``create_app(fast_path=False)`` serves every request through FastAPI.

Examples
--------
>>> fast_route("GET", "/recommendations/u1"), fast_route("GET", "/recommendations/u1/x")
('recommendations', None)
>>> fast_route("POST", "/events"), fast_route("GET", "/events")
('events', None)
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticError
from starlette.datastructures import QueryParams
from starlette.responses import Response

from ..errors import LiverecError
from . import schemas as S
from .auth import HEADER, allows, bearer_token
from .handlers import domain_error
from .routes import events, recommendations

_EVENTS = TypeAdapter(S.EventsIn | S.EventIn)  # the route's own body type: the same union, the same choice
_QUERY_FIELDS = frozenset(S.RecommendQuery.model_fields)
_LISTS = frozenset(n for n, f in S.RecommendQuery.model_fields.items() if f.annotation == list[str])
_PREFIX = "/recommendations/"
_KEY = HEADER.lower().encode()


def fast_route(method: str, path: str) -> str | None:
    """Which hot route a request is for, or None."""
    if method == "POST" and path == "/events":
        return "events"
    if method == "GET" and path.startswith(_PREFIX) and len(path) > len(_PREFIX) and "/" not in path[len(_PREFIX):]:
        return "recommendations"
    return None


def _route(router: Any, path: str) -> Any:
    """The route object of ``path`` in ``router`` (set on the scope: metrics and logs name it)."""
    return next(r for r in router.routes if getattr(r, "path", None) == path)


def _header(scope: dict, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v
    return None


class FastPath:
    """Answers the hot routes of ``app`` (a FastAPI app whose ``state.svc`` is the Service).

    ``routes`` maps ``"events"`` / ``"recommendations"`` to the routes' objects, set on the
    scope so metrics and logs name the route as the full path does.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.routes = {"events": _route(events.router, "/events"),
                       "recommendations": _route(recommendations.router, "/recommendations/{user}")}
        self.answered = 0  # requests this layer answered itself

    async def __call__(self, scope: dict, body: bytes) -> Response | None:
        """The answer, or None to let the full route serve the request."""
        name = fast_route(scope["method"], scope["path"])
        svc = self.app.state.svc
        if name is None or svc is None or scope.get("root_path"):
            return None
        if not self._allowed(svc, scope, "write" if name == "events" else "read"):
            return None
        resp = await (self._events(svc, scope, body) if name == "events" else self._recommendations(svc, scope))
        self.answered += resp is not None
        return resp

    @staticmethod
    def _allowed(svc: Any, scope: dict, role: str) -> bool:
        """Open access, or a key the Service already knows with at least ``role``."""
        if svc.settings.open_access:
            return True
        raw = _header(scope, _KEY)
        key = raw.decode("latin-1") if raw is not None else bearer_token(
            (_header(scope, b"authorization") or b"").decode("latin-1"))
        if not key:
            return False
        known, have = svc.role_cached(key)
        return known and have is not None and allows(have, role)

    async def _events(self, svc: Any, scope: dict, body: bytes) -> Response | None:
        ctype = _header(scope, b"content-type") or b""
        if not ctype.startswith(b"application/json"):
            return None
        try:
            parsed = _EVENTS.validate_json(body)
        except PydanticError:
            return None
        if isinstance(parsed, S.EventsIn) and len(parsed.events) > svc.settings.max_batch:
            return None
        scope["route"] = self.routes["events"]
        try:
            return await events.accept(svc, parsed)
        except LiverecError as exc:
            return domain_error("POST", exc)

    async def _recommendations(self, svc: Any, scope: dict) -> Response | None:
        user = scope["path"][len(_PREFIX):]
        if len(user) > 256:
            return None
        params = QueryParams(scope["query_string"])
        if any(k not in _QUERY_FIELDS for k in params):
            return None
        values = {k: (params.getlist(k) if k in _LISTS else params[k]) for k in params}
        try:
            q = S.RecommendQuery.model_validate(values)
        except PydanticError:
            return None
        scope["route"] = self.routes["recommendations"]
        try:
            return await recommendations.answer(svc, user, q)
        except LiverecError as exc:
            return domain_error("GET", exc)
