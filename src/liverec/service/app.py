"""The HTTP service: ``create_app(settings)`` builds a FastAPI app around one Engine.

Nothing is created at import: the engine opens when the app starts (or is passed
in), and closes when it stops. Run it with ``liverec serve``.

The parts: :mod:`.core` (the Service every route shares), :mod:`.routes` (one router
per resource), :mod:`.deps` (the Service and API-key roles as dependencies),
:mod:`.cache` (per-user response cache), :mod:`.commit` (group commit),
:mod:`.handlers` (the one error shape), :mod:`.edge` (body limit, security headers,
metrics, access log), :mod:`.fastpath` (the two hot routes without FastAPI's per-request
machinery).

Examples
--------
>>> from fastapi.testclient import TestClient                 # doctest: +SKIP
>>> app = create_app(Settings(open_access=True))              # doctest: +SKIP
>>> with TestClient(app) as c:                                # doctest: +SKIP
...     c.post("/events", json={"user": "u1", "item": "b1", "kind": "click"})
...     c.get("/recommendations/u1", params={"k": 5}).json()["items"]
"""

from __future__ import annotations

import asyncio
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import Route

from ..engine import Engine
from ..settings import Settings
from . import handlers
from .core import Service
from .deps import role_of_route
from .edge import Edge
from .fastpath import FastPath
from .routes import ROUTERS, page

log = logging.getLogger("liverec.http")


class LiverecApp(FastAPI):
    """The FastAPI app, whose HTTP requests meet :class:`.edge.Edge` (body limit, security
    headers, metrics, the fast path) before Starlette's own error, body-limit and telemetry
    layers: those cost 30-48 of the 160-216 µs of a cached GET in process, and the edge answers
    errors itself. The edge is one of the app's middleware; while it is the only one, requests
    are handed to it directly. A middleware the app's user adds sits outside it and sees every
    request, through Starlette's whole stack.
    """

    def _edge_alone(self) -> Edge | None:
        """The edge in the built stack while it is the app's only middleware, else None."""
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        kept = self.__dict__.get("_edge_kept")
        if kept is None or kept[0] is not self.middleware_stack:
            layer: Any = None
            if [m.cls for m in self.user_middleware] == [Edge]:
                layer = self.middleware_stack
                while layer is not None and not isinstance(layer, Edge):
                    layer = getattr(layer, "app", None)
            self._edge_kept = kept = (self.middleware_stack, layer)
        return kept[1]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        edge = self._edge_alone() if scope["type"] == "http" else None
        if edge is None:
            await super().__call__(scope, receive, send)
            return
        if self.root_path:  # what FastAPI's and Starlette's entries set before their stack
            scope["root_path"] = self.root_path
        scope["app"] = self
        await edge(scope, receive, send)


async def start(app: FastAPI, settings: Settings, engine: Engine) -> Service:
    """The Service over ``engine``, its replication and its committer, on ``app.state.svc``."""
    # The event loop is CPU-bound while the commit thread mostly waits on fsync: with
    # the default 5 ms switch interval, every commit wakes up to 5 ms late (a GIL
    # convoy) and caps group-commit throughput. 0.5 ms keeps the hand-off quick.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
    svc = Service(engine, settings)
    svc.heap.full()  # the libraries, the engine: hundreds of thousands of long-lived objects
    engine.on_swap.append(svc.heap)  # after each swap of new learners: young generations only
    engine.on_catch_up.append(svc.heap.young)  # a fit's new learners, before and during their catch-up
    if settings.state:
        from .replication import Replicator

        svc.rep = Replicator(engine, settings.state, prefix=settings.state_prefix,
                             sync_seconds=settings.sync_seconds, on_forget=svc.forget)
    svc.commits.start()
    app.state.svc = svc
    if settings.open_access:
        log.warning("=" * 72)
        log.warning("OPEN ACCESS: no API keys are checked. Anyone who can reach this port can")
        log.warning("read, write events, erase users and re-fit. Use only on localhost.")
        log.warning("=" * 72)
    return svc


def create_app(settings: Settings | None = None, *, engine: Engine | None = None,
               fast_path: bool | None = None) -> FastAPI:
    """The FastAPI app. Opens ``Engine.open(settings.store)`` at start-up unless ``engine`` is given
    (then the caller owns it and closes it). ``fast_path``: well-formed ``POST /events`` and
    ``GET /recommendations/{user}`` skip FastAPI's per-request machinery (:mod:`.fastpath`;
    the same answers); False serves every request through FastAPI; None follows
    ``Settings.http_fast_path`` (``LIVEREC_HTTP_FAST_PATH``, on by default)."""
    settings = settings or Settings()
    if fast_path is None:
        fast_path = settings.http_fast_path

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        eng = engine if engine is not None else await asyncio.to_thread(Engine.open, settings.store, settings=settings)
        svc = await start(app, settings, eng)
        try:
            yield
        finally:
            await svc.commits.close()
            svc.close()
            if svc.rep is not None:
                svc.rep.close()
            app.state.svc = None
            if svc.heap in eng.on_swap:
                eng.on_swap.remove(svc.heap)
            if svc.heap.young in eng.on_catch_up:
                eng.on_catch_up.remove(svc.heap.young)
            if own:
                eng.close()
            else:
                eng.flush()

    app = LiverecApp(
        title="liverec",
        version="0.1",
        summary="A recommender that learns from every event the moment it arrives.",
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's native OpenTelemetry hook otherwise
        # looks up the tracer/meter providers on every request (~5% of a request's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own /docs and /redoc load their scripts from a CDN (blank offline, and
        # outside the Content-Security-Policy): /docs is served from local files.
        docs_url=None,
        redoc_url=None,
    )
    app.state.svc = None
    app.add_middleware(Edge, metrics_of=lambda: app.state.svc and app.state.svc.metrics,
                       max_body=settings.max_body_bytes, fast=FastPath(app) if fast_path else None)
    handlers.install(app)
    for router in ROUTERS:
        app.include_router(router)
    page.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = handlers.document_errors(
                get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes),
                {(r.path, m.lower()): role_of_route(r)
                 for router in (*ROUTERS, app.router) for r in router.routes if isinstance(r, Route)
                 for m in r.methods or ()},
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def app_from_env() -> FastAPI:
    """The app with settings from ``LIVEREC_*`` variables: the factory each worker process
    of ``liverec serve --workers N`` imports."""
    return create_app(Settings())
