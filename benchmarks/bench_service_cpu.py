"""CPU time the HTTP service spends per request, through the ASGI app (no sockets, no load generator).

Wall-clock figures on a shared 2-core machine move with everyone else's jobs; CPU time
per request (``time.process_time``, this process only) does much less, so this is the
figure to compare the service's own overhead across versions.

Setup: ``create_app`` over an engine on a SQLite file with the first ``--items`` shipped
books (real MiniLM vectors, no re-encoding), ``--users`` users with 40 clicks each,
impressions batched (0.25 s), response cache on, open access. Each request is an ASGI
call with an HTTP scope, as uvicorn would make it. Rows:

- ``GET /health``: the app's fixed cost (middleware, routing, one dependency-free route);
- ``GET /recommendations`` cached: the hot read path when the answer is cached
  (routing, auth dependency, query validation, cache lookup, impression log, JSON);
- ``GET /recommendations`` uncached (response cache size 0): with ranking;
- ``POST /events``: one event per request, through group commit (fsync + learning);
- floor: a bare ASGI app answering fixed bytes, the cost below which no route can go.

    .venv/bin/python benchmarks/bench_service_cpu.py --json benchmarks/.cache/service_cpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from typing import Any, Awaitable, Callable

import common
from common import console, kv_table

TARGET = "no target of its own: the service's CPU per request, against a bare ASGI floor measured in the same run"


def scope(method: str, path: str, query: bytes = b"", body: bytes = b"") -> dict[str, Any]:
    headers = [(b"host", b"bench")]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "path": path,
            "raw_path": path.encode(), "query_string": query, "headers": headers, "scheme": "http",
            "server": ("bench", 80), "client": ("client", 1), "root_path": "", "state": {}}


async def call(app: Any, method: str, path: str, query: bytes = b"", body: bytes = b"") -> int:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(msg: dict) -> None:
        sent.append(msg)

    await app({**scope(method, path, query, body), "app": app}, receive, send)
    status = sent[0]["status"]
    if status != 200:
        raise RuntimeError(f"{method} {path} answered {status}: {sent[1:]}")
    return status


async def cpu_per_call(fn: Callable[[int], Awaitable[Any]], n: int) -> float:
    """Mean CPU seconds of ``fn(i)`` over ``n`` calls, after 20 warm-up calls."""
    for i in range(20):
        await fn(i)
    t0 = time.process_time()
    for i in range(n):
        await fn(20 + i)
    return (time.process_time() - t0) / n


async def bare(scope_: dict, receive: Callable, send: Callable) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status":"ok"}'})


async def measure(items: int, users: int, n: int, cache: int) -> dict[str, float]:
    from liverec import Engine, Event
    from liverec.service import create_app
    from liverec.settings import Settings
    from liverec.store import Store

    books, vectors = common.book_vectors(quiet=True)
    books, vectors = books[:items], vectors[:items]
    enc = common.PrecomputedEncoder.for_items(books, vectors)
    url = f"sqlite:///{tempfile.mkdtemp(prefix='liverec-cpu-')}/cpu.db"
    s = Settings(store=url, open_access=True, encoder_progress=False, impression_flush_seconds=0.25,
                 response_cache_size=cache)
    eng = Engine(Store.open(url), s, enc)
    eng.add_items(books)
    eng.record_many([Event(user=f"u{i % users}", item=books[(i * 7919) % items].id) for i in range(users * 40)])
    app = create_app(s, engine=eng)
    out: dict[str, float] = {}
    async with app.router.lifespan_context(app):
        cases: dict[str, Callable[[int], Awaitable[Any]]] = {
            "GET /health": lambda i: call(app, "GET", "/health"),
            "GET /recommendations": lambda i: call(app, "GET", f"/recommendations/u{i % users}", b"k=10"),
            "POST /events": lambda i: call(app, "POST", "/events", body=(
                f'{{"user": "w{i % 500}", "item": "{books[(i * 31) % items].id}", "kind": "click"}}').encode()),
        }
        for name, fn in cases.items():
            runs = n if name != "POST /events" else max(50, n // 5)
            if name == "GET /recommendations" and cache:  # every user's answer cached first
                for u in range(users):
                    await fn(u)
            out[name] = await cpu_per_call(fn, runs)
    eng.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--n", type=int, default=1000, help="requests per row (POST: a fifth)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_service_cpu", TARGET)
    floor = asyncio.run(cpu_per_call(lambda i: call(bare, "GET", "/health"), args.n))
    cached = asyncio.run(measure(args.items, args.users, args.n, cache=20_000))
    uncached = asyncio.run(measure(args.items, args.users, max(100, args.n // 5), cache=0))
    rows = [
        ("GET /health", cached["GET /health"]),
        ("GET /recommendations, cached answer", cached["GET /recommendations"]),
        ("GET /recommendations, uncached (ranks)", uncached["GET /recommendations"]),
        ("POST /events, one event (commit + learning)", cached["POST /events"]),
        ("floor: bare ASGI app, fixed bytes (same run)", floor),
    ]
    console.print(kv_table(f"CPU per request through the ASGI app, {args.items} books",
                           [(k, f"{v * 1e6:,.0f} us") for k, v in rows]))
    common.write_json(args.json, benchmark="bench_service_cpu", target=TARGET, started=started, config=vars(args),
                      results={k: v * 1e6 for k, v in rows})


if __name__ == "__main__":
    main()
