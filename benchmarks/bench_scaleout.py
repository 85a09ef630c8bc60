"""Scale-out figures: cross-replica reflection, 60 s mixed load on 1 and 2 replicas, crash cycles.

Targets: cross-replica event -> reflected in the other replica's
recommendations p99 <= 100 ms; 60 s mixed load: 0 errors, p99 <= 30 ms at the rate
reached, RSS growth <= 10%; crash test: 0 acknowledged events lost, 0 duplicated,
across 20 kill/restart cycles.

Setup: `liverec serve` processes (1 uvicorn worker each, the real shipped MiniLM, the
default engine) on loopback over one PostgreSQL database (127.0.0.1:5432, created fresh
and dropped at the end) and Redis (127.0.0.1:6379, a fresh key prefix), with the first
``--books`` books of the shipped catalog and ``--warm-events`` clicks by ``--users``
users. All processes and the load generator share this machine's 2 cores.

1. ``cross-replica``: POST a click to A on a book in the user's list, then poll B's
   list every 2 ms until the book is gone; ``--n`` times.
2. ``mixed``: open-loop load (``loadgen.py``, latency from the scheduled send time),
   ``--write-share`` POST /events and the rest GET /recommendations, at ``--rate`` req/s for
   ``--seconds`` s against one replica, then against two (connections split between
   them); RSS of every replica before and after.
3. ``crash``: one replica on a fresh store (``--crash-store sqlite`` or ``postgres``),
   4 client threads posting events with unique ids; SIGKILL after 1 s; restart; repeat
   ``--crash-cycles`` times; then count acknowledged ids missing and ids stored twice.

    .venv/bin/python benchmarks/bench_scaleout.py --seconds 60 --crash-cycles 20 --json benchmarks/.cache/scaleout.json
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
import sqlalchemy as sa

import common
import loadgen
from common import console, kv_table, latency_table

sys.path.insert(0, str(common.REPO / "tests"))
from apihelp import Replica, kill_cycles  # noqa: E402  (the test suite's process helpers)

TARGET = ("cross-replica reflection p99 <= 100 ms; 60 s mixed load 0 errors, p99 <= 30 ms, RSS growth <= 10%; "
          "crash: 0 acknowledged events lost or duplicated over 20 kill/restart cycles")
PG_ADMIN = "postgresql+psycopg://root@127.0.0.1:5432/postgres"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def new_pg() -> str:
    name = f"liverec_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"postgresql://root@127.0.0.1:5432/{name}"


def drop_pg(url: str) -> None:
    name = sa.engine.make_url(url).database
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def prepare(store: str, books: int, users: int, warm: int, seed: int) -> list[str]:
    from liverec import Engine, Event
    from liverec.data import load_goodbooks
    from liverec.settings import Settings

    items = load_goodbooks(limit=books)
    rng = random.Random(seed)
    ids = [it.id for it in items]
    now = time.time() - warm
    with Engine.open(store, settings=Settings(store=store, encoder_progress=False)) as eng:
        eng.add_items(items)
        eng.record_many([Event(user=f"u{rng.randrange(users)}", item=rng.choice(ids), kind="click",
                               timestamp=now + k) for k in range(warm)], learn=False)
    return ids


def recs(c: httpx.Client, base: str, user: str) -> list[str]:
    return [x["item"] for x in c.get(f"{base}/recommendations/{user}", params={"k": 10, "explain": "false"}).json()["items"]]


def cross_replica(a: Replica, b: Replica, users: int, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    lags, timeouts = [], 0
    with httpx.Client(timeout=10) as c:
        for _ in range(n):
            u = f"u{rng.randrange(users)}"
            item = rng.choice(recs(c, b.url, u))
            t0 = time.perf_counter()
            c.post(f"{a.url}/events", json={"user": u, "item": item, "kind": "click"})
            while item in recs(c, b.url, u):
                if time.perf_counter() - t0 > 5:
                    timeouts += 1
                    break
                time.sleep(0.002)
            else:
                lags.append(time.perf_counter() - t0)
    return {**common.percentiles(lags), "timeouts": timeouts}


def mixed(reps: list[Replica], ids: list[str], users: int, rate: float, seconds: float, write_share: float) -> dict:
    before = {r.port: rss_mb(r.proc.pid) for r in reps}
    host = urlparse(reps[0].url).netloc
    out = asyncio.run(loadgen.run([r.url for r in reps], loadgen.mixed(host, users, ids, write_share=write_share),
                                  rate=rate, seconds=seconds))
    after = {r.port: rss_mb(r.proc.pid) for r in reps}
    lat = out.pop("latencies_s")
    return {**common.percentiles(lat), "achieved_rate": out["achieved_rate"], "errors": out["failed"] + out["non2xx"],
            "rss_mb_before": before, "rss_mb_after": after,
            "rss_growth": max((after[p] - before[p]) / before[p] for p in before)}


def crash(store: str, ids: list[str], cycles: int) -> dict:
    acked = kill_cycles(Replica(store, sync_seconds=0), ids, cycles, users=50)
    eng = sa.create_engine(store.replace("postgresql://", "postgresql+psycopg://"))
    with eng.connect() as c:
        stored = [r[0] for r in c.execute(sa.text("SELECT id FROM events WHERE id LIKE 'c%-w%'"))]
    eng.dispose()
    return {"cycles": cycles, "acknowledged": len(acked), "stored": len(stored),
            "lost": len(set(acked) - set(stored)), "duplicated": len(stored) - len(set(stored))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--books", type=int, default=2000)
    ap.add_argument("--users", type=int, default=500)
    ap.add_argument("--warm-events", type=int, default=20_000)
    ap.add_argument("--n", type=int, default=200, help="cross-replica round trips")
    ap.add_argument("--rate", type=float, default=150, help="mixed-load request rate (req/s)")
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--write-share", type=float, default=0.2)
    ap.add_argument("--crash-cycles", type=int, default=20)
    ap.add_argument("--crash-store", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_scaleout", TARGET)
    import redis

    r = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    r.ping()
    prefix = f"lrbench-{uuid.uuid4().hex[:8]}"
    store = new_pg()
    results: dict = {}
    reps: list[Replica] = []
    try:
        ids = prepare(store, args.books, args.users, args.warm_events, args.seed)
        reps = [Replica(store, state="redis://127.0.0.1:6379/0", prefix=prefix, sync_seconds=1.0).start()
                for _ in range(2)]
        results["cross-replica"] = cross_replica(reps[0], reps[1], args.users, args.n, args.seed)
        results["mixed-1-replica"] = mixed(reps[:1], ids, args.users, args.rate, args.seconds, args.write_share)
        results["mixed-2-replicas"] = mixed(reps, ids, args.users, args.rate, args.seconds, args.write_share)
    finally:
        for rep in reps:
            rep.stop()
        for k in r.scan_iter(f"{prefix}:*"):
            r.delete(k)
        drop_pg(store)
    if args.crash_cycles:
        if args.crash_store == "postgres":
            cstore = new_pg()
        else:
            cstore = f"sqlite:///{tempfile.mkdtemp()}/crash.db"
        try:
            cids = prepare(cstore, 100, 50, 0, args.seed)
            results["crash"] = crash(cstore, cids, args.crash_cycles)
        finally:
            if args.crash_store == "postgres":
                drop_pg(cstore)
    rows = {"cross-replica reflection": results["cross-replica"]}
    for name in ("mixed-1-replica", "mixed-2-replicas"):
        m = results[name]
        rows[f"{name} ({m['achieved_rate']:.0f} req/s, {m['errors']} errors, RSS +{m['rss_growth'] * 100:.1f}%)"] = m
    console.print(latency_table("scale-out: PostgreSQL + Redis, liverec serve replicas", rows))
    if "crash" in results:
        console.print(kv_table("crash safety (SIGKILL mid-stream)", list(results["crash"].items())))
    common.write_json(args.json, benchmark="bench_scaleout", target=TARGET, started=started,
                      config=vars(args), results=results)


if __name__ == "__main__":
    main()
