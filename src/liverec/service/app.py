"""The HTTP service: ``create_app(settings)`` builds a FastAPI app around one Engine.

Nothing is created at import: the engine opens when the app starts (or is passed
in), and closes when it stops. Run it with ``liverec serve``.

Speed without staleness: greedy responses are cached per (user, request) and the
cache entry dies with the user's next event, interests change or erasure, a re-fit,
a catalog change, or after ``response_cache_seconds``. Events from concurrent
requests share one durable commit (group commit), so durability does not cap
ingestion at one fsync per request.

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
import gc
import json
import logging
import sys
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, HTTPException, Path as PathParam, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..engine import Engine
from ..errors import ConflictError, LiverecError, NotFoundError, StoreError, UnknownItemError, ValidationError
from ..settings import Settings
from ..types import Event, Recommendation
from ..validate import check_filters, check_id, check_json_value
from . import schemas as S
from .ab import LiveStats, Variant, assign, parse_variants
from .auth import HEADER, allows, hash_key
from .privacy import MAX_EPSILON, dp_counts

log = logging.getLogger("liverec.http")
PAGE = Path(__file__).parent / "page"
_KEY_TTL = 5.0  # seconds a key lookup is cached: a revoked key stops working within this
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
_FIX = {
    400: "send a well-formed JSON body (Content-Type: application/json) as the OpenAPI schema at /openapi.json describes.",
    401: "send an API key in the X-API-Key header (or Authorization: Bearer); create one with `liverec keys create NAME --role ROLE`.",
    403: "use a key with the role the message names.",
    404: "check the path and id; the endpoints are listed at /openapi.json.",
    405: "use one of the methods in the Allow header.",
    413: "split the request, or raise LIVEREC_MAX_BODY_BYTES / LIVEREC_MAX_BATCH.",
    422: "correct that field and send the request again; nothing was stored.",
    429: "wait, or raise the limit the message names.",
}


class _Service:
    """Everything one app instance holds: the engine, A/B set-up, caches, metrics."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine, self.settings = engine, settings
        self.variants = parse_variants(
            settings.variants, policies={"greedy", *engine.policies}, default_policy=settings.default_policy
        )
        self.by_name = {v.name: v for v in self.variants}
        self.stats = LiveStats(max_contributions=settings.dp_max_contributions)
        self._cache: OrderedDict[str, dict[str, tuple]] = OrderedDict()
        self._cache_n = 0
        self._lock = threading.Lock()
        self._keys: dict[str, tuple[float, str | None]] = {}
        self.queue: asyncio.Queue | None = None
        self.rep: Any = None  # a Replicator when settings.state is set
        # Several processes over one store (workers > 1, or replicas): every read first
        # catches up with the log, so an event accepted by any process is reflected.
        self.shared = settings.workers > 1 or bool(settings.state)
        if self.shared:
            engine.replicated = True
        self.ready = True
        self.registry = CollectorRegistry()
        r = self.registry
        self.m_latency = Histogram(
            "liverec_request_seconds", "HTTP request latency", ["method", "route", "status"], registry=r,
            buckets=(0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.m_events = Counter("liverec_events_ingested_total", "Events newly stored", registry=r)
        self.m_dupes = Counter("liverec_events_duplicate_total", "Events skipped as repeated ids", registry=r)
        self.m_served = Counter("liverec_items_served_total", "Items served", ["variant"], registry=r)
        self.m_clicked = Counter("liverec_items_clicked_total", "Served items clicked", ["variant"], registry=r)
        self.m_cache = Counter("liverec_recommend_cache_total", "Response cache lookups", ["result"], registry=r)
        Gauge("liverec_model_version", "Model version (bumped by every re-fit)", registry=r).set_function(
            lambda: engine.model_version
        )
        Gauge("liverec_items", "Items in the catalog", registry=r).set_function(lambda: engine.n_items)
        self.m_ctr = Gauge("liverec_variant_ctr", "Clicked / served items per A/B variant", ["variant"], registry=r)

    # ------------------------------------------------------------------ auth
    def role_cached(self, key: str) -> tuple[bool, str | None]:
        """(known, role) without touching the store: known=False means ask role_of."""
        h = hash_key(key)
        if h in self.settings.api_keys:
            return True, self.settings.api_keys[h]
        hit = self._keys.get(h)
        if hit is not None and time.monotonic() - hit[0] < _KEY_TTL:
            return True, hit[1]
        return False, None

    def role_of(self, key: str) -> str | None:
        known, role = self.role_cached(key)
        if known:
            return role
        h, now = hash_key(key), time.monotonic()
        found = self.engine.store.find_api_key(h)
        role = found[1] if found else None
        if len(self._keys) > 10_000:
            self._keys.clear()
        self._keys[h] = (now, role)
        return role

    # ----------------------------------------------------------------- cache
    def version(self, user: str) -> tuple[int, int, int, int]:
        # The engine's per-user version moves with every event it learns (from this
        # replica or replayed from another), interests change and erasure.
        return self.engine.user_version(user)

    def invalidate(self, user: str) -> None:
        """Drop a user's cached responses now (they are already stale by version)."""
        with self._lock:
            entries = self._cache.pop(user, None)
            if entries:
                self._cache_n -= len(entries)

    def cache_get(self, user: str, key: str) -> tuple | None:
        if self.settings.response_cache_size == 0:
            return None
        with self._lock:
            entries = self._cache.get(user)
            hit = entries.get(key) if entries else None
            if hit is None:
                return None
            version, born, payload, recs = hit
            if version != self.version(user) or time.monotonic() - born > self.settings.response_cache_seconds:
                del entries[key]
                self._cache_n -= 1
                return None
            self._cache.move_to_end(user)
            return payload, recs

    def cache_put(self, user: str, key: str, version: tuple, payload: list, recs: list[Recommendation]) -> None:
        if self.settings.response_cache_size == 0 or version != self.version(user):
            return  # the user moved on while this was computed: do not cache a stale answer
        with self._lock:
            entries = self._cache.setdefault(user, {})
            if key not in entries:
                self._cache_n += 1
            entries[key] = (version, time.monotonic(), payload, recs)
            self._cache.move_to_end(user)
            while self._cache_n > self.settings.response_cache_size and self._cache:
                _, dropped = self._cache.popitem(last=False)
                self._cache_n -= len(dropped)

    def forget(self, user: str) -> int:
        """Drop every in-process trace of ``user`` (cache, versions, A/B stats). Returns entries dropped."""
        with self._lock:
            entries = self._cache.pop(user, None) or {}
            self._cache_n -= len(entries)
        self.stats.forget(user)
        return len(entries)

    def knows(self, user: str) -> bool:
        with self._lock:
            cached = user in self._cache
        return cached or self.stats.knows(user)

    # ---------------------------------------------------------------- events
    async def committer(self) -> None:
        """Group commit: every event request queued while a commit runs shares the next one."""
        assert self.queue is not None
        while True:
            first = await self.queue.get()
            batch = [first]
            while not self.queue.empty() and len(batch) < 512:
                batch.append(self.queue.get_nowait())
            try:
                results = await asyncio.to_thread(self._commit, [evs for evs, _ in batch])
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                results = [exc] * len(batch)
            for (_, fut), res in zip(batch, results):
                if not fut.done():
                    fut.set_result(res)

    def _commit(self, groups: list[list[Event]]) -> list[int | Exception]:
        results: list[int | Exception] = list(self.engine.record_groups(groups))
        for evs, res in zip(groups, results):
            if isinstance(res, Exception):
                continue
            for e in evs:
                self.invalidate(e.user)
                reward = self.engine.reward_of(e)
                variant = self.stats.event(e.user, e.item, reward)
                if self.rep is not None and reward > 0:
                    variant = self.rep.clicked(e.user, e.item) or variant
                if variant is not None:
                    self.m_clicked.labels(variant).inc()
        if self.rep is not None and any(isinstance(r, int) and r > 0 for r in results):
            self.rep.publish("events")
        return results


def _error(status: int, error: str, message: str, field: str | None = None, fix: str | None = None) -> JSONResponse:
    return JSONResponse(S.ErrorOut(error=error, message=message, field=field, fix=fix).model_dump(), status_code=status)


class _Edge:
    """Pure ASGI middleware: body-size limit (413), latency metrics, access log without ids."""

    def __init__(self, app: Any, svc_of: Callable[[], _Service | None], max_body: int) -> None:
        self.app, self.svc_of, self.max_body = app, svc_of, max_body

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        started = [False]

        async def send_(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
                started[0] = True
                have = {k.lower() for k, _ in msg.get("headers") or []}
                msg = {**msg, "headers": [*(msg.get("headers") or []),
                                          *(h for h in SECURITY_HEADERS if h[0] not in have)]}
            await send(msg)

        try:
            await self._serve(scope, receive, send_, t0, status)
        except Exception as exc:  # noqa: BLE001 - answered here, once, so the connection stays open
            # Handled here rather than by an app-level handler for Exception: Starlette
            # re-raises after such a handler, so the server logged every 500 a second
            # time and closed the keep-alive connection.
            rid = uuid.uuid4().hex[:12]
            log.error("internal error %s on %s %s", rid, scope["method"],
                      getattr(scope.get("route"), "path", None) or "unmatched", exc_info=exc)
            if not started[0]:
                resp = _error(500, "internal_error", f"internal error (reference {rid}); the details are in the server log.",
                              fix="retry; if it persists, report the reference to the operator.")
                await resp(scope, receive, send_)
            self._done(scope, status[0], t0)

    async def _serve(self, scope: dict, receive: Callable, send_: Callable, t0: float, status: list[int]) -> None:
        if scope["method"] in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > self.max_body
            body = b""
            if not too_big:  # read it all (bounded), so a lying or absent Content-Length is caught too
                more = True
                while more:
                    msg = await receive()
                    body += msg.get("body", b"")
                    more = msg.get("more_body", False)
                    if len(body) > self.max_body:
                        too_big = True
                        break
            if too_big:
                resp = _error(413, "payload_too_large", f"request body is larger than {self.max_body} bytes.",
                              fix="split it into smaller requests, or raise LIVEREC_MAX_BODY_BYTES.")
                await resp(scope, receive, send_)
                self._done(scope, status[0], t0)
                return
            sent = [False]

            async def receive_() -> dict:
                if not sent[0]:
                    sent[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, receive_, send_)
        else:
            await self.app(scope, receive, send_)
        self._done(scope, status[0], t0)

    def _done(self, scope: dict, status: int, t0: float) -> None:
        dt = time.perf_counter() - t0
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        svc = self.svc_of()
        if svc is not None:
            svc.m_latency.labels(scope["method"], route, str(status)).observe(dt)
        # The route template, never the raw path: user and item ids stay out of INFO logs.
        log.info("%s %s %d %.1fms", scope["method"], route, status, dt * 1e3)


def create_app(settings: Settings | None = None, *, engine: Engine | None = None) -> FastAPI:
    """The FastAPI app. Opens ``Engine.open(settings.store)`` at start-up unless ``engine`` is given
    (then the caller owns it and closes it)."""
    settings = settings or Settings()
    holder: dict[str, _Service] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = engine is None
        eng = engine if engine is not None else await asyncio.to_thread(Engine.open, settings.store, settings=settings)
        # The engine holds millions of long-lived objects (events, learner tables); a full
        # cyclic-GC pass over them stalls every request for 100+ ms. Freeze what exists
        # now into the permanent generation (re-done after each re-fit, see _Service).
        gc.collect()
        gc.freeze()
        # The event loop is CPU-bound while the commit thread mostly waits on fsync: with
        # the default 5 ms switch interval, every commit wakes up to 5 ms late (a GIL
        # convoy) and caps group-commit throughput. 0.5 ms keeps the hand-off quick.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        svc = _Service(eng, settings)
        if settings.state:
            from .replication import Replicator

            svc.rep = Replicator(eng, settings.state, prefix=settings.state_prefix,
                                 sync_seconds=settings.sync_seconds, on_forget=svc.forget)
        svc.queue = asyncio.Queue()
        task = asyncio.create_task(svc.committer())
        holder["svc"] = svc
        app.state.svc = svc
        if settings.open_access:
            log.warning("=" * 72)
            log.warning("OPEN ACCESS: no API keys are checked. Anyone who can reach this port can")
            log.warning("read, write events, erase users and re-fit. Use only on localhost.")
            log.warning("=" * 72)
        try:
            yield
        finally:
            task.cancel()
            if svc.rep is not None:
                svc.rep.close()
            holder.pop("svc", None)
            if own:
                eng.close()
            else:
                eng.flush()

    app = FastAPI(
        title="liverec",
        version="0.1",
        summary="A recommender that learns from every event the moment it arrives.",
        lifespan=lifespan,
        # Metrics are Prometheus (/metrics); FastAPI's native OpenTelemetry hook otherwise
        # looks up the tracer/meter providers on every request (~5% of a request's CPU).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        # FastAPI's own /docs and /redoc load their scripts from a CDN (blank offline, and
        # outside the Content-Security-Policy): /docs is served below from local files.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(_Edge, svc_of=lambda: holder.get("svc"), max_body=settings.max_body_bytes)
    api_key = APIKeyHeader(name=HEADER, auto_error=False, description="API key; roles read < write < admin")

    # Dependencies are async on purpose: FastAPI runs a sync dependency in the thread
    # pool, a thread hand-off on every request for what is a dict lookup.
    async def svc_dep(request: Request) -> _Service:
        return request.app.state.svc

    async def authorize(request: Request, key: str | None, role: str) -> None:
        """Raise 401/403 unless ``key`` (or a Bearer token) has ``role``."""
        svc: _Service = request.app.state.svc
        if svc.settings.open_access:
            return
        if not key:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        if not key:
            raise HTTPException(401, f"this call needs an API key with role {role!r} in the {HEADER} header.")
        known, have = svc.role_cached(key)
        if not known:  # a store lookup, at most once per key every _KEY_TTL seconds
            have = await asyncio.to_thread(svc.role_of, key)
        if have is None:
            raise HTTPException(401, f"unknown or revoked API key; create one with `liverec keys create NAME --role {role}`.")
        if not allows(have, role):
            raise HTTPException(403, f"this call needs role {role!r}; the key has role {have!r}.")

    def need(role: str) -> Any:
        async def check(request: Request, key: str | None = Depends(api_key)) -> None:
            await authorize(request, key, role)

        check.role = role  # type: ignore[attr-defined]  # read by auth_first and the OpenAPI patch
        return Depends(check)

    read, write, admin = need("read"), need("write"), need("admin")

    def role_of_route(route: Any) -> str | None:
        for dep in getattr(route, "dependencies", None) or []:
            role = getattr(dep.dependency, "role", None)
            if role is not None:
                return role
        return None

    async def auth_first(request: Request) -> JSONResponse | None:
        """The 401/403 a request earns before its body is looked at.

        FastAPI parses the JSON body before it runs dependencies, so a malformed body
        would be answered 400/422 to a caller without a key; this answers 401 first.
        """
        role = role_of_route(request.scope.get("route"))
        if role is None:
            return None
        try:
            await authorize(request, request.headers.get(HEADER), role)
        except HTTPException as exc:
            return await _http(request, exc)
        return None

    # ------------------------------------------------------------- errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        denied = await auth_first(request)
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
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()))
        if first.get("type") == "json_invalid":
            ctx = first.get("ctx") or {}
            return _error(422, "invalid_json", f"the body is not valid JSON ({ctx.get('error', 'decode error')} "
                          f"at character {first['loc'][-1] if first.get('loc') else '?'}).", "body", _FIX[400])
        return JSONResponse(
            {
                "error": "validation_error",
                "message": f"{where}: {first.get('msg')}",
                "field": where,
                "fix": "send the field as the OpenAPI schema at /openapi.json describes.",
                "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")} for e in errs[:20]],
            },
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = exc.status_code
        if code == 400 and request.scope.get("route") is not None:
            denied = await auth_first(request)  # a body FastAPI could not parse: auth still comes first
            if denied is not None:
                return denied
        kind = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 429: "too_many_requests"}.get(code, "error")
        message = str(exc.detail)
        if code == 404 and request.scope.get("route") is None:
            message = f"there is no endpoint {request.method} {request.url.path[:200]}."
        elif code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]}."
        elif code == 400 and message == "There was an error parsing the body":
            message = "the body could not be parsed as JSON (malformed, or nested too deeply)."
        return JSONResponse(S.ErrorOut(error=kind, message=message, field=None, fix=_FIX.get(code)).model_dump(),
                            status_code=code, headers=getattr(exc, "headers", None))

    @app.exception_handler(LiverecError)
    async def _domain(request: Request, exc: LiverecError) -> JSONResponse:
        field = getattr(exc, "field", None)
        if isinstance(exc, UnknownItemError) and request.method in ("POST", "PUT"):
            return _error(422, "unknown_item", str(exc), field, "add the item with POST /items first, "
                          "or start the server with LIVEREC_AUTO_CREATE_ITEMS=true; nothing was stored.")
        if isinstance(exc, NotFoundError):
            return _error(404, "not_found", str(exc), field, _FIX[404])
        if isinstance(exc, ValidationError):
            return _error(422, "validation_error", str(exc), field, _FIX[422])
        if isinstance(exc, ConflictError):
            return _error(409, "conflict", str(exc), field, "wait for the running operation to finish, then retry.")
        if isinstance(exc, StoreError):
            log.error("store error: %s", exc.__class__.__name__)
            return _error(503, "store_unavailable", "the store is not reachable; retry later.",
                          fix="retry later; the operator should check the database.")
        return _error(400, "bad_request", str(exc), field, "correct the request as the message says.")

    # ------------------------------------------------------------- health
    @app.get("/health", response_model=S.HealthOut, tags=["ops"])
    async def health() -> S.HealthOut:
        """Liveness: the process answers."""
        return S.HealthOut(status="ok")

    @app.get("/ready", response_model=S.ReadyOut, tags=["ops"], responses={503: {"model": S.ReadyOut}})
    async def ready(request: Request) -> Any:
        """Readiness: the engine is open and the store answers."""
        svc: _Service = request.app.state.svc
        ok = True
        try:
            await asyncio.to_thread(svc.engine.store.last_event_seq)
        except Exception:  # noqa: BLE001 - not ready is the answer
            ok = False
        replication = "off" if svc.rep is None else ("redis" if svc.rep.connected else "polling")
        body = S.ReadyOut(ready=ok, items=svc.engine.n_items, model_version=svc.engine.model_version,
                          fit_running=svc.engine.fit_running, open_access=svc.settings.open_access,
                          replication=replication)
        return JSONResponse(body.model_dump(), status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics: request latency histograms, events, model version, per-variant CTR."""
        svc: _Service = request.app.state.svc
        for name, row in svc.stats.ctr().items():
            if row["ctr"] is not None:
                svc.m_ctr.labels(name).set(row["ctr"])
        return Response(generate_latest(svc.registry), media_type=CONTENT_TYPE_LATEST)

    # -------------------------------------------------------------- items
    @app.post("/items", response_model=S.ItemsChanged, tags=["items"], dependencies=[write])
    def post_items(body: S.ItemsIn, svc: _Service = Depends(svc_dep)) -> S.ItemsChanged:
        """Create or update items in bulk; only new or changed text is encoded."""
        _batch_limit(len(body.items), svc.settings.max_batch, "items")
        changed = svc.engine.add_items([i.to_item() for i in body.items])
        if svc.rep is not None and changed:
            svc.rep.publish("items")
        return S.ItemsChanged(received=len(body.items), changed=changed)

    @app.get("/items", response_model=list[S.ItemOut], tags=["items"], dependencies=[read])
    def search_items(
        q: str = Query("", max_length=200, description="Case-insensitive text to look for"),
        limit: int = Query(20, ge=1, le=200),
        svc: _Service = Depends(svc_dep),
    ) -> list[S.ItemOut]:
        """Items whose text contains ``q`` (catalog order); no ``q`` = the first items."""
        cat, needle, out = svc.engine.catalog, q.lower().strip(), []
        with svc.engine._lock:
            for i in range(len(cat)):
                if cat.alive[i] and (not needle or needle in cat.texts[i].lower()):
                    out.append(S.ItemOut(id=cat.ids[i], text=cat.texts[i], attributes=dict(cat.attributes[i])))
                    if len(out) >= limit:
                        break
        return out

    @app.get("/items/{item_id}", response_model=S.ItemOut, tags=["items"], dependencies=[read],
             responses={404: {"model": S.ErrorOut}})
    def get_item(item_id: str = PathParam(max_length=256), svc: _Service = Depends(svc_dep)) -> S.ItemOut:
        _path_id(item_id, "item_id")
        it = svc.engine.get_item(item_id)
        return S.ItemOut(id=it.id, text=it.text, attributes=dict(it.attributes))

    @app.delete("/items/{item_id}", tags=["items"], dependencies=[write], responses={404: {"model": S.ErrorOut}})
    def delete_item(item_id: str = PathParam(max_length=256), svc: _Service = Depends(svc_dep)) -> dict[str, int]:
        """Remove an item from the catalog (its past events stay in the log)."""
        _path_id(item_id, "item_id")
        n = svc.engine.remove_items([item_id])
        if n == 0:
            raise HTTPException(404, f"unknown item {item_id!r}: it is not in the catalog.")
        if svc.rep is not None:
            svc.rep.publish("items")
        return {"deleted": n}

    # ------------------------------------------------------------- events
    @app.post("/events", response_model=S.EventsAccepted, tags=["events"], dependencies=[write],
              responses={413: {"model": S.ErrorOut}, 422: {"model": S.ErrorOut}})
    async def post_events(body: S.EventsIn | S.EventIn, request: Request) -> Any:
        """One event or ``{"events": [...]}``; idempotent by event id; learned from at once.

        The response is sent after the events are durable (committed) and every learner
        has seen them: the next recommendation request reflects them.
        """
        svc: _Service = request.app.state.svc
        items = body.events if isinstance(body, S.EventsIn) else [body]
        _batch_limit(len(items), svc.settings.max_batch, "events")
        events = [e.to_event() for e in items]
        assert svc.queue is not None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        svc.queue.put_nowait((events, fut))
        res = await fut
        if isinstance(res, Exception):
            raise res
        svc.m_events.inc(res)
        svc.m_dupes.inc(len(events) - res)
        return S.EventsAccepted(received=len(events), accepted=res, duplicates=len(events) - res)

    # ---------------------------------------------------- recommendations
    @app.get("/recommendations/{user}", response_model=S.RecommendationsOut, tags=["recommendations"],
             dependencies=[read], responses={422: {"model": S.ErrorOut}})
    async def recommendations(
        request: Request,
        user: str = PathParam(min_length=1, max_length=256),
        k: int = Query(10, ge=1, le=200),
        variant: str | None = Query(None, description="Force an A/B variant (default: the user's assignment)"),
        policy: str | None = Query(None, description="Override the policy: greedy, epsilon, linucb, lints, qlearning, ..."),
        diversity: float | None = Query(None, ge=0, le=1, description="MMR trade-off (0 = relevance only)"),
        max_per_provider: int | None = Query(None, ge=1, le=1000),
        exclude_seen: bool | None = Query(None),
        exclude: list[str] = Query([], max_length=1000, description="Item ids never to return"),
        filters: str | None = Query(None, max_length=10_000, description='JSON, e.g. {"year": {"gte": 1990}}'),
        context: str | None = Query(None, max_length=10_000, description="JSON object logged with the impressions"),
        explain: bool = Query(True, description="Include reasons (costs ~2 ms)"),
    ) -> Response:
        """The top ``k`` items for ``user``, with reasons, propensities and the serving variant."""
        svc: _Service = request.app.state.svc
        t0 = time.perf_counter()
        _path_id(user, "user")
        if policy is not None and not policy.strip():
            raise ValidationError("policy is empty; name a policy (greedy, or one of Settings.policies) or leave "
                                  "the parameter out for the variant's own.", field="policy")
        if svc.shared and svc.engine.behind():  # one indexed query inline; learning off the loop
            await asyncio.to_thread(svc.engine.catch_up)
        f = _json_param(filters, "filters")
        if f is not None:
            check_filters(f)
        ctx = _json_param(context, "context") or {}
        check_json_value(ctx, "context")
        if variant is not None and variant not in svc.by_name:
            raise ValidationError(f"unknown variant {variant!r}; configured variants are {sorted(svc.by_name)}.",
                                  field="variant")
        v: Variant = svc.by_name[variant] if variant else assign(svc.variants, user, salt=svc.settings.ab_salt)
        vname = v.name if policy is None else f"{v.name}+{policy}"
        pol = policy or v.policy
        kw = dict(
            k=k, policy=pol, filters=f, exclude=exclude or None, exclude_seen=exclude_seen,
            diversity=diversity if diversity is not None else v.diversity,
            max_per_provider=max_per_provider if max_per_provider is not None else v.max_per_provider,
            weights=v.weights, explain=explain,
        )
        cacheable = pol == "greedy"
        key = json.dumps({**kw, "context": ctx, "variant": vname}, sort_keys=True, default=str)
        hit = svc.cache_get(user, key) if cacheable else None
        if hit is not None:
            payload, recs = hit
            if svc.settings.impression_flush_seconds > 0:  # buffered: a list append
                svc.engine.log_served(user, recs, policy=pol, context={**ctx, "variant": vname})
            else:  # a synchronous write: off the event loop
                await asyncio.to_thread(svc.engine.log_served, user, recs, policy=pol,
                                        context={**ctx, "variant": vname})
            svc.m_cache.labels("hit").inc()
            cached = True
        else:
            version = svc.version(user)
            recs = await asyncio.to_thread(
                svc.engine.recommend, user, context={**ctx, "variant": vname}, **kw  # type: ignore[arg-type]
            )
            cat = svc.engine.catalog
            # Serialised once: a cache hit sends these bytes again without pydantic.
            payload = _ITEMS.dump_json([S.RecommendationOut.of(r, _attrs(cat, r.item)) for r in recs])
            if cacheable:
                svc.m_cache.labels("miss").inc()
                svc.cache_put(user, key, version, payload, recs)
            cached = False
        took = (time.perf_counter() - t0) * 1e3
        svc.stats.served(user, vname, [r.item for r in recs], took)
        if svc.rep is not None:
            svc.rep.served(user, vname, [r.item for r in recs])
        svc.m_served.labels(vname).inc(len(recs))
        head = json.dumps({"user": user, "variant": vname, "policy": pol, "model_version": svc.engine.model_version,
                           "cached": cached, "took_ms": round(took, 3)})
        return Response(head[:-1].encode() + b', "items": ' + payload + b"}", media_type="application/json")

    @app.get("/explain/{user}/{item}", response_model=S.ExplanationOut, tags=["recommendations"],
             dependencies=[read], responses={404: {"model": S.ErrorOut}})
    def explain(user: str = PathParam(max_length=256), item: str = PathParam(max_length=256),
                svc: _Service = Depends(svc_dep)) -> S.ExplanationOut:
        """Why ``item`` would (or would not) be recommended to ``user`` now."""
        _path_id(user, "user")
        _path_id(item, "item")
        if svc.shared:
            svc.engine.catch_up()
        r = svc.engine.explain(user, item)
        return S.ExplanationOut(
            user=user, item=item, rank=r.position, score=r.score, explanation=r.explanation,
            reasons=[S.ReasonOut(source=x.source, contribution=x.contribution, text=x.text, because=list(x.because))
                     for x in r.reasons],
        )

    # -------------------------------------------------------------- users
    @app.get("/users/{user}", response_model=S.UserOut, tags=["users"], dependencies=[read])
    def get_user(user: str = PathParam(min_length=1, max_length=256), svc: _Service = Depends(svc_dep)) -> S.UserOut:
        """The user's variant, declared interests and latest events."""
        _path_id(user, "user")
        if svc.shared:
            svc.engine.catch_up()
        hist = svc.engine.history(user)
        st = svc.engine.user_state(user)
        v = assign(svc.variants, user, salt=svc.settings.ab_salt)
        return S.UserOut(
            user=user, variant=v.name, interests=st.interests_text, events=len(hist),
            recent=[{"item": e.item, "kind": e.kind, "value": e.value, "timestamp": e.timestamp} for e in hist[-10:]],
        )

    @app.put("/users/{user}/interests", response_model=S.UserOut, tags=["users"], dependencies=[write])
    def put_interests(body: S.InterestsIn, user: str = PathParam(min_length=1, max_length=256),
                      svc: _Service = Depends(svc_dep)) -> S.UserOut:
        """Declare (or clear with null) what the user says they like, as free text."""
        _path_id(user, "user")
        svc.engine.set_interests(user, body.interests)
        svc.invalidate(user)
        if svc.rep is not None:
            svc.rep.publish("interests")
        return get_user(user, svc)

    @app.delete("/users/{user}", response_model=S.ErasureOut, tags=["users"], dependencies=[write])
    def erase_user(user: str = PathParam(min_length=1, max_length=256), svc: _Service = Depends(svc_dep)) -> S.ErasureOut:
        """Erase the user: events, impressions, interests, learner state, caches, A/B counters.

        The A/B assignment is a hash of the id and is stored nowhere; the per-variant
        counters forget which items were served to the user. The user's event ids are
        forgotten with them: an event sent later with one of those ids is new data and is
        stored again.
        """
        _path_id(user, "user")
        counts = dict(svc.engine.delete_user(user))
        counts["cache_entries"] = svc.forget(user)
        log.info("erased one user (%d events)", counts.get("events", 0))
        return S.ErasureOut(user=user, deleted=counts)

    # ---------------------------------------------------------- A/B + stats
    def _variants(svc: _Service) -> list[S.VariantOut]:
        ctr = svc.stats.ctr()
        fleet = svc.rep.counts() if svc.rep is not None else None
        if fleet is not None:  # fleet-wide counters from Redis replace this replica's own
            from .ab import wilson

            ctr = {n: {"served": a, "clicked": b, "ctr": b / a if a else None, "ctr_ci95": list(wilson(b, a))}
                   for n, (a, b) in fleet.items()}
        names = [v.name for v in svc.variants] + sorted(n for n in ctr if n not in svc.by_name)
        out = []
        for n in names:
            row = ctr.get(n, {"served": 0, "clicked": 0, "ctr": None, "ctr_ci95": [0.0, 1.0]})
            v = svc.by_name.get(n)
            out.append(S.VariantOut(name=n, share=v.share if v else 0.0, policy=v.policy if v else n.split("+")[-1], **row))
        return out

    @app.get("/variants", response_model=S.VariantsOut, tags=["ab"], dependencies=[read])
    def variants(svc: _Service = Depends(svc_dep)) -> S.VariantsOut:
        """Per-variant served items, clicks and CTR with a 95% Wilson interval (since start)."""
        return S.VariantsOut(variants=_variants(svc))

    @app.get("/stats", response_model=S.StatsOut, tags=["ab"], dependencies=[read])
    def stats(svc: _Service = Depends(svc_dep)) -> S.StatsOut:
        """Time series for the live page: events/s, requests/s, latency, CTR per variant."""
        return S.StatsOut(events_total=svc.stats.events, items=svc.engine.n_items,
                          model_version=svc.engine.model_version, bucket_seconds=svc.stats.bucket_seconds,
                          series=svc.stats.series(), variants=_variants(svc),
                          tuned=svc.engine.tuned.summary() if svc.engine.tuned is not None else None,
                          importing=svc.engine.import_progress)

    # -------------------------------------------------------------- admin
    @app.post("/admin/fit", response_model=S.FitOut, status_code=202, tags=["admin"], dependencies=[admin])
    def refit(svc: _Service = Depends(svc_dep)) -> S.FitOut:
        """Start a background re-fit from the log; the old models serve until the hot swap."""
        e = svc.engine
        started = False
        if not e.fit_running:
            e.fit(background=True)
            started = True
        return S.FitOut(started=started, running=e.fit_running, model_version=e.model_version,
                        last_fit_seconds=e.last_fit_seconds, last_fit_error=e.last_fit_error)

    @app.get("/admin/fit", response_model=S.FitOut, tags=["admin"], dependencies=[admin])
    def fit_status(svc: _Service = Depends(svc_dep)) -> S.FitOut:
        e = svc.engine
        return S.FitOut(started=False, running=e.fit_running, model_version=e.model_version,
                        last_fit_seconds=e.last_fit_seconds, last_fit_error=e.last_fit_error)

    @app.get("/admin/export/popularity", response_model=S.DPCountOut, tags=["privacy"], dependencies=[admin])
    def export_popularity(
        epsilon: float | None = Query(None, ge=0.001, le=MAX_EPSILON,
                                      description="ε this export spends (default: Settings.dp_epsilon)"),
        top: int = Query(100, ge=1, le=100_000, description="Return the top items by noisy count"),
        svc: _Service = Depends(svc_dep),
    ) -> S.DPCountOut:
        """ε-DP item popularity: distinct users with a positive event per item, geometric noise.

        Each user counts toward at most ``dp_max_contributions`` items (their first),
        so the L1 sensitivity is that bound; noise is added to every catalog item
        (zeros included, so which items were touched is not revealed), then the top
        ``top`` noisy counts are returned (post-processing).
        """
        eps, spent = _spend(svc, epsilon)
        cap = svc.settings.dp_max_contributions
        weights = svc.engine.feedback.kind_weights
        per_user: dict[str, list[str]] = {}
        for _, e in svc.engine.store.iter_events():
            if weights.get(e.kind, 0) <= 0 and e.kind != "rating":
                continue
            if e.kind == "rating" and svc.engine.feedback.weight(e.kind, e.value) <= 0:
                continue
            mine = per_user.setdefault(e.user, [])
            if len(mine) < cap and e.item not in mine:
                mine.append(e.item)
        counts = {i: 0 for i, alive in zip(svc.engine.catalog.ids, svc.engine.catalog.alive) if alive}
        for mine in per_user.values():
            for i in mine:
                if i in counts:
                    counts[i] += 1
        noisy = dp_counts(counts, epsilon=eps, sensitivity=cap)
        best = dict(sorted(noisy.items(), key=lambda kv: -kv[1])[:top])
        return S.DPCountOut(epsilon=eps, sensitivity=cap, mechanism="two-sided geometric (discrete Laplace)",
                            budget=svc.settings.dp_budget, budget_spent=spent, counts=best)

    @app.get("/admin/export/variants", response_model=S.DPVariantOut, tags=["privacy"], dependencies=[admin])
    def export_variants(
        epsilon: float | None = Query(None, ge=0.001, le=MAX_EPSILON,
                                      description="ε this export spends (default: Settings.dp_epsilon)"),
        svc: _Service = Depends(svc_dep),
    ) -> S.DPVariantOut:
        """ε-DP per-variant CTR: noisy served and clicked counts (ε/2 each), CTR from them.

        Each user adds at most ``dp_max_contributions`` served items and as many clicks
        to the counts of all variants together, so that bound is the L1 sensitivity of
        each vector however many variants (or ``?policy=`` overrides) the user saw.
        """
        eps, spent = _spend(svc, epsilon)
        cap = svc.settings.dp_max_contributions
        raw = svc.stats.dp_counts()
        names = [v.name for v in svc.variants] + sorted(n for n in raw if n not in svc.by_name)
        served = dp_counts({n: raw.get(n, (0, 0))[0] for n in names}, epsilon=eps / 2, sensitivity=cap)
        clicked = dp_counts({n: raw.get(n, (0, 0))[1] for n in names}, epsilon=eps / 2, sensitivity=cap)
        out: dict[str, dict[str, float | int | None]] = {
            n: {"served": served[n], "clicked": clicked[n],
                "ctr": min(1.0, clicked[n] / served[n]) if served[n] else None} for n in names
        }
        return S.DPVariantOut(epsilon=eps, sensitivity=cap, mechanism="two-sided geometric (discrete Laplace)",
                              budget=svc.settings.dp_budget, budget_spent=spent, variants=out)

    # --------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(_docs_html(swagger_ui_dir() is not None))

    swagger = swagger_ui_dir()
    if swagger is not None:
        app.mount("/docs/assets", StaticFiles(directory=swagger), name="swagger-ui")
    if PAGE.is_dir():
        app.mount("/static", StaticFiles(directory=PAGE), name="static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(
                get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes),
                {(r.path, m.lower()): role_of_route(r) for r in app.routes for m in getattr(r, "methods", None) or ()},
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_ITEMS = TypeAdapter(list[S.RecommendationOut])


def app_from_env() -> FastAPI:
    """The app with settings from ``LIVEREC_*`` variables: the factory each worker process
    of ``liverec serve --workers N`` imports."""
    return create_app(Settings())


def _attrs(catalog: Any, item: str) -> dict[str, Any]:
    i = catalog.get_idx(item)
    return dict(catalog.attributes[i]) if i is not None else {}


def _batch_limit(n: int, limit: int, what: str) -> None:
    if n > limit:
        raise HTTPException(413, f"{n} {what} in one request; the limit is {limit}. "
                                 f"Split the batch, or raise LIVEREC_MAX_BATCH.")


def _path_id(value: str, field: str) -> None:
    """An id in the URL path follows the id rule (so ``%00`` is a 422 on every store, not a 500)."""
    check_id(value, field)


def _spend(svc: _Service, epsilon: float | None) -> tuple[float, float]:
    """(ε, total spent) for one DP export, after charging ε to the store's privacy budget.

    The budget is kept in the store, so restarts and every worker or replica over the
    same store share it; an export that would exceed ``Settings.dp_budget`` is refused
    (429) and spends nothing.
    """
    eps = float(epsilon or svc.settings.dp_epsilon)
    if eps > MAX_EPSILON:
        raise ValidationError(
            f"epsilon {eps:g} is above {MAX_EPSILON:g}: the noise would be so small that the export released "
            f"near-exact counts. Use epsilon <= {MAX_EPSILON:g} (LIVEREC_DP_EPSILON for the default).",
            field="epsilon",
        )
    budget = svc.settings.dp_budget
    ok, spent = svc.engine.store.spend("dp_epsilon_spent", eps, limit=budget)
    if not ok:
        raise HTTPException(
            429,
            f"the privacy budget is spent: DP exports of this store have used ε={spent:g} of dp_budget={budget:g}, "
            f"and this export needs ε={eps:g}. Every export adds to what an observer can learn about one user; "
            "export with a smaller epsilon, or raise LIVEREC_DP_BUDGET knowing the total privacy loss grows.",
        )
    return eps, spent


def swagger_ui_dir() -> Path | None:
    """The Swagger UI files shipped by the ``swagger-ui-bundle-v2`` package, if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def _docs_html(swagger: bool) -> str:
    """/docs: Swagger UI from local files, or (without the package) a plain list of the
    endpoints read from /openapi.json. No inline script: the CSP allows none."""
    assets = ('<link rel="stylesheet" href="/docs/assets/swagger-ui.css">\n'
              '<script src="/docs/assets/swagger-ui-bundle.js" defer></script>\n') if swagger else ""
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<title>liverec API</title>\n<link rel="stylesheet" href="/static/docs.css">\n{assets}'
        '<script src="/static/docs.js" defer></script>\n</head>\n<body>\n'
        '<div id="swagger-ui"></div>\n'
        '<main id="plain-docs" class="plain-docs" hidden>\n<h1>liverec API</h1>\n'
        '<p>The OpenAPI document is at <a href="/openapi.json">/openapi.json</a>. '
        '(Install the <code>swagger-ui-bundle-v2</code> package for the interactive view.)</p>\n'
        '<ul id="endpoints"></ul>\n</main>\n</body>\n</html>\n'
    )


def _document_errors(doc: dict[str, Any], roles: dict[tuple[str, str], str | None]) -> dict[str, Any]:
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


def _json_param(raw: str | None, name: str) -> dict[str, Any] | None:
    if raw is None or raw == "":
        return None
    try:
        v = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} is not valid JSON ({exc}); send e.g. {name}={{\"year\": {{\"gte\": 1990}}}}.",
                              field=name) from None
    if not isinstance(v, dict):
        raise ValidationError(f"{name} must be a JSON object, got {type(v).__name__}.", field=name)
    return v
