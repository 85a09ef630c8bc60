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
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..engine import Engine
from ..errors import ConflictError, LiverecError, NotFoundError, StoreError, UnknownItemError, ValidationError
from ..settings import Settings
from ..types import Event, Recommendation
from . import schemas as S
from .ab import LiveStats, Variant, assign, parse_variants
from .auth import HEADER, allows, hash_key
from .privacy import dp_counts

log = logging.getLogger("liverec.http")
PAGE = Path(__file__).parent / "page"
_KEY_TTL = 5.0  # seconds a key lookup is cached: a revoked key stops working within this


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

        async def send_(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

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
    )
    app.add_middleware(_Edge, svc_of=lambda: holder.get("svc"), max_body=settings.max_body_bytes)
    api_key = APIKeyHeader(name=HEADER, auto_error=False, description="API key; roles read < write < admin")

    # Dependencies are async on purpose: FastAPI runs a sync dependency in the thread
    # pool, a thread hand-off on every request for what is a dict lookup.
    async def svc_dep(request: Request) -> _Service:
        return request.app.state.svc

    def need(role: str) -> Any:
        async def check(request: Request, key: str | None = Depends(api_key)) -> None:
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

        return Depends(check)

    read, write, admin = need("read"), need("write"), need("admin")

    # ------------------------------------------------------------- errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
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
        return JSONResponse(
            {
                "error": "validation_error",
                "message": f"{where}: {first.get('msg')}",
                "field": where,
                "fix": "send the field as the OpenAPI schema at /docs describes.",
                "errors": [{"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")} for e in errs[:20]],
            },
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {401: "unauthorized", 403: "forbidden", 404: "not_found", 413: "payload_too_large"}.get(exc.status_code, "error")
        return JSONResponse({"error": kind, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(LiverecError)
    async def _domain(request: Request, exc: LiverecError) -> JSONResponse:
        field = getattr(exc, "field", None)
        if isinstance(exc, UnknownItemError) and request.method in ("POST", "PUT"):
            return _error(422, "unknown_item", str(exc), field)
        if isinstance(exc, NotFoundError):
            return _error(404, "not_found", str(exc), field)
        if isinstance(exc, ValidationError):
            return _error(422, "validation_error", str(exc), field)
        if isinstance(exc, ConflictError):
            return _error(409, "conflict", str(exc), field)
        if isinstance(exc, StoreError):
            log.error("store error: %s", exc.__class__.__name__)
            return _error(503, "store_unavailable", "the store is not reachable; retry later.")
        return _error(400, "bad_request", str(exc), field)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        rid = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s", rid, request.method, exc_info=exc)
        return _error(500, "internal_error", f"internal error (reference {rid}); the details are in the server log.")

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
        it = svc.engine.get_item(item_id)
        return S.ItemOut(id=it.id, text=it.text, attributes=dict(it.attributes))

    @app.delete("/items/{item_id}", tags=["items"], dependencies=[write], responses={404: {"model": S.ErrorOut}})
    def delete_item(item_id: str = PathParam(max_length=256), svc: _Service = Depends(svc_dep)) -> dict[str, int]:
        """Remove an item from the catalog (its past events stay in the log)."""
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
        if svc.shared and svc.engine.behind():  # one indexed query inline; learning off the loop
            await asyncio.to_thread(svc.engine.catch_up)
        f = _json_param(filters, "filters")
        ctx = _json_param(context, "context") or {}
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
        svc.engine.set_interests(user, body.interests)
        svc.invalidate(user)
        if svc.rep is not None:
            svc.rep.publish("interests")
        return get_user(user, svc)

    @app.delete("/users/{user}", response_model=S.ErasureOut, tags=["users"], dependencies=[write])
    def erase_user(user: str = PathParam(min_length=1, max_length=256), svc: _Service = Depends(svc_dep)) -> S.ErasureOut:
        """Erase the user: events, impressions, interests, learner state, caches, A/B counters.

        The A/B assignment is a hash of the id and is stored nowhere; the per-variant
        counters forget which items were served to the user.
        """
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
                          series=svc.stats.series(), variants=_variants(svc))

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
        epsilon: float | None = Query(None, ge=0.001, le=100, description="Privacy budget (default: Settings.dp_epsilon)"),
        top: int = Query(100, ge=1, le=100_000, description="Return the top items by noisy count"),
        svc: _Service = Depends(svc_dep),
    ) -> S.DPCountOut:
        """ε-DP item popularity: distinct users with a positive event per item, geometric noise.

        Each user counts toward at most ``dp_max_contributions`` items (their first),
        so the L1 sensitivity is that bound; noise is added to every catalog item
        (zeros included, so which items were touched is not revealed), then the top
        ``top`` noisy counts are returned (post-processing).
        """
        eps = epsilon or svc.settings.dp_epsilon
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
                            counts=best)

    @app.get("/admin/export/variants", response_model=S.DPVariantOut, tags=["privacy"], dependencies=[admin])
    def export_variants(
        epsilon: float | None = Query(None, ge=0.001, le=100, description="Privacy budget (default: Settings.dp_epsilon)"),
        svc: _Service = Depends(svc_dep),
    ) -> S.DPVariantOut:
        """ε-DP per-variant CTR: noisy served and clicked counts (ε/2 each), CTR from them."""
        eps = epsilon or svc.settings.dp_epsilon
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
                              variants=out)

    # --------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE / "index.html")

    if PAGE.is_dir():
        app.mount("/static", StaticFiles(directory=PAGE), name="static")
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
