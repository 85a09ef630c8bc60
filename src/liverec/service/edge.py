"""The edge of every request, as pure ASGI middleware (no per-request Request object):
a body-size limit (413), security headers, latency metrics, an access log without ids,
and the one answer to an unexpected exception (500 with a reference to the server log).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Awaitable, Callable, MutableMapping

from .handlers import error
from .metrics import Metrics

log = logging.getLogger("liverec.http")
# Sent with every response, the page's and the API's. Scripts, styles and connections
# come from this origin only; images may also come from https hosts because item
# covers (the ``image_url`` attribute) are the catalog's own links, fetched without a
# referrer, and the page shows initials when one is unreachable.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
     b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
     b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_SECURITY_NAMES = frozenset(k for k, _ in SECURITY_HEADERS)
_WITH_BODY = frozenset(("POST", "PUT", "PATCH"))


def _with_security_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    if any(k.lower() in _SECURITY_NAMES for k, _ in headers):  # a response that set its own keeps them
        have = {k.lower() for k, _ in headers}
        return [*headers, *(h for h in SECURITY_HEADERS if h[0] not in have)]
    return [*headers, *SECURITY_HEADERS]


async def read_body(receive: Callable, limit: int) -> bytes | None:
    """The whole request body, or None once it is longer than ``limit`` bytes."""
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body", False):
        return body if len(body) <= limit else None
    parts, size = [body], len(body)
    while True:
        msg = await receive()
        chunk = msg.get("body", b"")
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
        if not msg.get("more_body", False):
            return b"".join(parts)


class Edge:
    """ASGI middleware around the app; ``metrics_of()`` gives the running Service's metrics."""

    def __init__(self, app: Any, metrics_of: Callable[[], Metrics | None], max_body: int,
                 fast: Callable[[dict, bytes], Awaitable[Any]] | None = None) -> None:
        self.app, self.metrics_of, self.max_body = app, metrics_of, max_body
        #: Answers well-formed hot requests itself (:class:`.fastpath.FastPath`); None sends every one on.
        self.fast = fast

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False

        async def send_(msg: MutableMapping[str, Any]) -> None:
            nonlocal status, started
            if msg["type"] == "http.response.start":
                status, started = msg["status"], True
                msg["headers"] = _with_security_headers(list(msg.get("headers") or ()))
            await send(msg)

        try:
            if scope["method"] in _WITH_BODY:
                await self._with_body(scope, receive, send_)
            elif self.fast is not None and (resp := await self.fast(scope, b"")) is not None:
                await resp(scope, receive, send_)
            else:
                await self.app(scope, receive, send_)
        except Exception as exc:  # noqa: BLE001 - answered here, once, so the connection stays open
            # Handled here rather than by an app-level handler for Exception: Starlette
            # re-raises after such a handler, so the server logged every 500 a second
            # time and closed the keep-alive connection.
            rid = uuid.uuid4().hex[:12]
            log.error("internal error %s on %s %s", rid, scope["method"],
                      getattr(scope.get("route"), "path", None) or "unmatched", exc_info=exc)
            if not started:
                resp = error(500, "internal_error", f"internal error (reference {rid}); the details are in the server log.",
                             fix="retry; if it persists, report the reference to the operator.")
                await resp(scope, receive, send_)
        self._done(scope, status, t0)

    async def _with_body(self, scope: dict, receive: Callable, send_: Callable) -> None:
        """Read the body first (bounded), so a lying or absent Content-Length is caught too."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        too_big = declared is not None and declared.isdigit() and int(declared) > self.max_body
        body = None if too_big else await read_body(receive, self.max_body)
        if body is None:
            resp = error(413, "payload_too_large", f"request body is larger than {self.max_body} bytes.",
                         fix="split it into smaller requests, or raise LIVEREC_MAX_BODY_BYTES.")
            await resp(scope, receive, send_)
            return
        if self.fast is not None and (resp := await self.fast(scope, body)) is not None:
            await resp(scope, receive, send_)
            return
        sent = False

        async def receive_() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, receive_, send_)

    def _done(self, scope: dict, status: int, t0: float) -> None:
        dt = time.perf_counter() - t0
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        metrics = self.metrics_of()
        if metrics is not None:
            metrics.observe(scope["method"], route, status, dt)
        if log.isEnabledFor(logging.INFO):
            # The route template, never the raw path: user and item ids stay out of INFO logs.
            log.info("%s %s %d %.1fms", scope["method"], route, status, dt * 1e3)
