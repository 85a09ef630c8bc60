"""HTTP latency and throughput of `liverec serve` under load, measured with wrk.

Targets (10k items, 1 worker, durable SQLite): uncached GET /recommendations >= 500
req/s; p99 <= 15 ms at 300 req/s uncached; POST event -> GET reflects it p99 <= 20 ms;
single-event ingestion >= 2k events/s; batch ingestion >= 20k events/s; 60 s mixed load
at 150 req/s (20% writes): 0 errors, p99 <= 30 ms, RSS growth <= 10%.

Setup: a server PROCESS (uvicorn, 1 worker, the app from ``create_app``) over a SQLite
FILE with default durability (WAL + synchronous=FULL), the 10,000 real goodbooks books
with their real all-MiniLM-L6-v2 vectors (PrecomputedEncoder: no re-encoding), the
default engine (content, trending, EASE, ALS, ItemKNN) fitted on ``--warm-events``
simulated clicks by ``--users`` users, impressions logged by the background writer
(0.25 s, as ``liverec serve`` does), open access (auth costs one dict lookup when on).
Load comes from wrk (Debian package) in another process on loopback; both share the
same 2 cores, so the load generator's CPU is inside the figures.

Scenarios:
1. ``reco-300``: open-loop load (``loadgen.py``: requests leave on a fixed schedule, latency
   counted from the scheduled time) at ``--rate`` req/s, GET /recommendations/u<random>?k=10
   over ``--users`` users, measured for ``--seconds`` after as long a warm-up at the same
   rate. With response caching (5 min) a user asked again with no event in
   between is served from cache; the hit ratio is reported.
2. ``reco-300-uncached``: the same with the response cache off (every request ranks).
3. ``reco-max``: unpaced wrk, 8 connections: the most req/s one worker serves.
4. ``ingest``: unpaced wrk, POST /events with one event per request, 32 connections:
   durable single-event ingestion (each response after the commit; group commit). The
   events it posts start a periodic re-fit, which runs during it; ``ingest-no-refit`` runs
   it again at the end on a server started with ``LIVEREC_REFIT_GROWTH=0``.
5. ``event->reco``: a Python client, sequential: POST a click, then GET the user's list (on a
   second connection) and check the clicked book is gone (seen exclusion proves the state
   moved); round-trip p99.
6. ``ingest-batch``: unpaced wrk, POST /events with ``--batch`` events per request, 1 connection;
   ``ingest-batch-4`` the same on 4 connections (a bulk loader with a few requests in flight:
   one request's body is read and checked while another commits, and group commit stores and
   learns the batches waiting together in one transaction).
7. ``mixed``: open-loop ``--mixed-rate`` req/s for ``--mixed-seconds`` s, ``--write-share``
   POST a click and the rest GET a list (cache on); the server's RSS before and after, and the
   response cache's hit ratio. It starts right after the write scenarios, whose events left
   every user's cached list stale and their histories about five times longer: most of its
   reads rank. ``mixed-steady`` runs the same load once more at once, with the caches as the
   first run left them (a service's steady state under this load).

The uncached scenarios (2, and ``reco-max-uncached``) run first, on a server over the
store as prepared; the cached server with the write scenarios after (they grow the log
about fivefold: a server started after them would rank over longer histories and begin
with a periodic re-fit, and its figures would not compare with the floors).

Floor rows, measured in the same run before the servers start, on a copy of the same
store: ``Engine.recommend(k=10)`` in process (what one request must cost at least, so
1000 / its mean is the most req/s one worker can rank), ``Engine.record`` of one event per
commit, ``Engine.record_groups`` of 32 one-event groups per commit (what group commit can
reach at most: the learning of every event stays), ``Engine.record_many`` of ``--batch``
events; and GET /health under wrk (the HTTP stack alone). A diagnostic table beside them
splits an in-process request into its stages and each source's scoring
(``common.recommend_stages``). The load average is printed
before each scenario: other jobs on the machine share the 2 cores.

``--no-fast-path`` serves every request through FastAPI (``create_app(fast_path=False)``).
``--workers N`` runs N server processes over the same SQLite file (read-your-writes:
each read first catches up with what the other processes wrote).

    .venv/bin/python benchmarks/bench_http.py --seconds 20 --json benchmarks/.cache/http.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse


import common
import loadgen as load
from common import console, kv_table, latency_table

TARGET = ("10k items, 1 worker, durable SQLite: uncached GET >= 500 req/s; p99 <= 15 ms at 300 req/s uncached; "
          "event -> GET reflects it p99 <= 20 ms; single-event ingestion >= 2k events/s; batch >= 20k events/s; "
          "60 s mixed 150 req/s (20% writes): 0 errors, p99 <= 30 ms, RSS growth <= 10%")

WRK_REPORT = r"""
done = function(summary, latency, requests)
  local p = {}
  for _, q in ipairs({50, 90, 99, 99.9}) do p[tostring(q)] = latency:percentile(q) / 1000.0 end
  io.write(string.format('WRKJSON {"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d, '
    .. '"p50": %f, "p90": %f, "p99": %f, "p999": %f, "max": %f, "mean": %f}\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, p["50"], p["90"], p["99"], p["99.9"], latency.max / 1000.0, latency.mean / 1000.0))
end
"""


def reco_script(users: int, delay_ms: float | None) -> str:
    pace = f"function delay() return {delay_ms:.3f} end\n" if delay_ms else ""
    return (
        f"math.randomseed(os.time())\n{pace}"
        "request = function()\n"
        f"  return wrk.format('GET', '/recommendations/u' .. math.random(0, {users - 1}) .. '?k=10')\n"
        "end\n" + WRK_REPORT
    )


def ingest_script(users: int, items: list[str]) -> str:
    sample = ",".join(f"'{i}'" for i in items[:2000])
    return (
        f"math.randomseed(os.time())\nlocal items = {{{sample}}}\n"
        "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
        "request = function()\n"
        f"  local body = '{{\"user\": \"u' .. math.random(0, {users - 1}) .. '\", \"item\": \"' .. items[math.random(1, #items)] .. '\", \"kind\": \"click\"}}'\n"
        "  return wrk.format(nil, '/events', nil, body)\n"
        "end\n" + WRK_REPORT
    )


def batch_script(users: int, items: list[str], batch: int, seed: int) -> str:
    """A fresh body of ``batch`` random clicks per request (random users and books, as the
    ``record_many`` floor draws them): a body sent again would repeat its (user, book)
    pairs, which co-occurrence learning does not count twice, and understate the work."""
    sample = ",".join(f"'{i}'" for i in items[:2000])
    return (
        f"math.randomseed({seed} + os.time())\nlocal items = {{{sample}}}\n"
        "wrk.method = 'POST'\nwrk.path = '/events'\nwrk.headers['Content-Type'] = 'application/json'\n"
        "request = function()\n"
        "  local parts = {}\n"
        f"  for k = 1, {batch} do\n"
        f"    parts[k] = '{{\"user\": \"u' .. math.random(0, {users - 1}) .. '\", \"item\": \"' .. "
        "items[math.random(1, #items)] .. '\", \"kind\": \"click\"}'\n"
        "  end\n"
        "  return wrk.format(nil, nil, nil, '{\"events\": [' .. table.concat(parts, ',') .. ']}')\n"
        "end\n" + WRK_REPORT
    )


def health_script() -> str:
    return "wrk.path = '/health'\n" + WRK_REPORT


def run_wrk(base: str, script: str, *, seconds: int, connections: int, threads: int = 1) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", "-s", f.name, base],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    os.unlink(f.name)
    m = re.search(r"WRKJSON (\{.*\})", out.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {out.stdout}\n{out.stderr}")
    r = json.loads(m.group(1))
    r["req_per_s"] = r["requests"] / r["seconds"]
    return r


def loadgen(base: str, rate: float, seconds: int, users: int) -> dict:
    """Run loadgen.py in its own process (its CPU is not the server's GIL) and read its JSON."""
    out = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("loadgen.py")), base, "--rate", str(rate),
         "--seconds", str(seconds), "--users", str(users)],
        capture_output=True, text=True, timeout=seconds * 4 + 120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r.update(req_per_s=r["achieved_rate"], requests=r["n"], errors=r["failed"], p50=r["p50_ms"],
             p90=r["p90_ms"], p99=r["p99_ms"], max=r["max_ms"], mean=r["mean_ms"])
    return r


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def floors(db: str, users: int, batch: int, seed: int, n: int = 300) -> dict:
    """In-process costs on a copy of the store, measured before any server starts."""
    import sqlite3

    from liverec import Engine, Event
    from liverec.settings import Settings
    from liverec.store import Store

    path = db.removeprefix("sqlite:///")
    copy = path + ".floor"
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    url = "sqlite:///" + copy
    items, vectors = common.book_vectors(quiet=True)
    enc = common.PrecomputedEncoder.for_items(items, vectors)
    s = Settings(store=url, encoder_progress=False, popularity_prior="ratings_count", impression_flush_seconds=0.25)
    rng = random.Random(seed + 2)
    ids = [it.id for it in items]
    out: dict = {"load_average": load_average()}
    with Engine(Store.open(url), s, enc) as eng:
        for _ in range(20):  # warm-up
            eng.recommend(f"u{rng.randrange(users)}", k=10)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            eng.recommend(f"u{rng.randrange(users)}", k=10)
            ts.append(time.perf_counter() - t0)
        out["recommend"] = common.percentiles(ts)
        out["recommend_stages"] = common.recommend_stages(eng, [f"u{i}" for i in range(users)], 10, n=n)

        def click() -> Event:
            return Event(user=f"u{rng.randrange(users)}", item=rng.choice(ids), kind="click")

        t0 = time.perf_counter()
        for _ in range(n):
            eng.record(click())
        out["record_one_per_commit_per_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(n // 32 + 1):
            eng.record_groups([[click()] for _ in range(32)])
        out["record_groups_32_per_s"] = (n // 32 + 1) * 32 / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(5):
            eng.record_many([click() for _ in range(batch)])
        out["record_many_per_s"] = 5 * batch / (time.perf_counter() - t0)
    for suffix in ("", "-wal", "-shm"):
        Path(copy + suffix).unlink(missing_ok=True)
    return out


def mixed_load(base: str, pid: int, ids: list[str], users: int, rate: float, seconds: float, share: float) -> dict:
    def rss() -> float:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    import httpx

    def cache() -> tuple[float, float]:
        name = "liverec_recommend_cache_total"
        return metric(base, name, 'result="hit"'), metric(base, name, 'result="miss"')

    before, version, (hit0, miss0) = rss(), metric(base, "liverec_model_version"), cache()
    fitting = bool(httpx.get(base + "/ready").json().get("fit_running"))  # a re-fit the writes before started
    out = asyncio.run(load.run(base, load.mixed(urlparse(base).netloc, users, ids, write_share=share),
                                  rate=rate, seconds=seconds))
    after, (hit1, miss1) = rss(), cache()
    hits, misses = hit1 - hit0, miss1 - miss0
    p = common.percentiles(out.pop("latencies_s"))
    w = common.percentiles(out.pop("write_latencies_s"))
    return {"requests": p["n"], "req_per_s": out["achieved_rate"], "errors": out["failed"], "non2xx": out["non2xx"],
            "p50": p["p50_ms"], "p90": p["p90_ms"], "p99": p["p99_ms"], "max": p["max_ms"], "mean": p["mean_ms"],
            "rss_mb_before": before, "rss_mb_after": after, "rss_growth": (after - before) / before,
            "cache_hit_ratio": hits / (hits + misses) if hits + misses else 0.0,
            "write_p50": w["p50_ms"], "write_p99": w["p99_ms"], "write_max": w["max_ms"],
            "refit_running_at_start": fitting, "swaps": metric(base, "liverec_model_version") - version,
            "refit_running_at_end": bool(httpx.get(base + "/ready").json().get("fit_running"))}


def metric(base: str, name: str, label: str = "") -> float:
    import httpx

    text = httpx.get(base + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---------------------------------------------------------------- the server
def app_factory():
    """One server process's app (engine over the prepared store); settings from BENCH_* variables."""
    from liverec import Engine
    from liverec.service import create_app
    from liverec.settings import Settings
    from liverec.store import Store

    db, cache, workers = os.environ["BENCH_DB"], int(os.environ["BENCH_CACHE"]), int(os.environ["BENCH_WORKERS"])
    items, vectors = common.book_vectors(quiet=True)
    enc = common.PrecomputedEncoder.for_items(items, vectors)
    s = Settings(store=db, open_access=True, encoder_progress=False, popularity_prior="ratings_count",
                 impression_flush_seconds=0.25, response_cache_size=cache, workers=workers)
    return create_app(s, engine=Engine(Store.open(db), s, enc), fast_path=os.environ.get("BENCH_FAST", "1") == "1")


def serve(db: str, port: int, cache: int, workers: int = 1) -> None:
    """Child process: uvicorn with ``workers`` processes (each builds its own engine)."""
    import uvicorn

    os.environ.update(BENCH_DB=db, BENCH_CACHE=str(cache), BENCH_WORKERS=str(workers))
    if workers == 1:
        uvicorn.run(app_factory(), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    else:
        uvicorn.run("bench_http:app_factory", factory=True, workers=workers, app_dir=str(Path(__file__).parent),
                    host="127.0.0.1", port=port, log_level="warning", access_log=False)


def prepare(db: str, users: int, warm: int, seed: int) -> list[str]:
    from liverec import Engine, Event
    from liverec.settings import Settings
    from liverec.store import Store

    items, vectors = common.book_vectors()
    enc = common.PrecomputedEncoder.for_items(items, vectors)
    s = Settings(store=db, encoder_progress=False, popularity_prior="ratings_count")
    rng = random.Random(seed)
    ids = [it.id for it in items]
    now = time.time() - warm
    with Engine(Store.open(db), s, enc) as eng:
        eng.add_items(items)
        # Each user has a taste: a random anchor book and its nearest neighbours get most clicks.
        events = []
        for k in range(warm):
            u = rng.randrange(users)
            item = ids[(u * 37 + int(rng.expovariate(0.05))) % len(ids)] if rng.random() < 0.7 else rng.choice(ids)
            events.append(Event(user=f"u{u}", item=item, kind="click", timestamp=now + k))
        eng.record_many(events, learn=False)
    return ids


def start_server(db: str, port: int, cache: int, workers: int = 1, **extra_env: str) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", **extra_env}
    proc = subprocess.Popen([sys.executable, __file__, "_serve", db, str(port), str(cache), str(workers)], env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(base + "/ready", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not become ready")


def event_then_reco(base: str, ids: list[str], users: int, n: int, seed: int) -> dict:
    import httpx

    rng = random.Random(seed + 1)
    rts, stale = [], 0
    # POST and GET on two keep-alive connections: with several workers they usually land
    # on different processes, so the GET tests read-your-writes across processes.
    with httpx.Client(base_url=base, timeout=10) as c, httpx.Client(base_url=base, timeout=10) as g:
        for k in range(n + 50):
            u = f"u{rng.randrange(users)}"
            slate = [r["item"] for r in g.get(f"/recommendations/{u}", params={"k": 10}).json()["items"]]
            item = rng.choice(slate) if slate and rng.random() < 0.5 else rng.choice(ids)
            t0 = time.perf_counter()
            r = c.post("/events", json={"user": u, "item": item, "kind": "click"})
            got = g.get(f"/recommendations/{u}", params={"k": 10}).json()["items"]
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"POST /events answered {r.status_code}: {r.text}")
            if k >= 50:
                rts.append(dt)
                stale += item in {g["item"] for g in got}
    return {**common.percentiles(rts), "stale_responses": stale}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20, help="duration of each wrk run")
    ap.add_argument("--rate", type=float, default=300, help="paced GET rate (req/s in total)")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--warm-events", type=int, default=50_000)
    ap.add_argument("--n", type=int, default=500, help="event -> reco round trips")
    ap.add_argument("--port", type=int, default=0, help="0 = a free port")
    ap.add_argument("--workers", type=int, default=1, help="server processes (read-your-writes across them)")
    ap.add_argument("--batch", type=int, default=500, help="events per request in ingest-batch")
    ap.add_argument("--mixed-rate", type=float, default=150)
    ap.add_argument("--mixed-seconds", type=float, default=60)
    ap.add_argument("--write-share", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fast-path", action="store_true",
                    help="serve every request through FastAPI (create_app(fast_path=False)), for comparison")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    started = time.time()
    os.environ["BENCH_FAST"] = "0" if args.no_fast_path else "1"  # read by each server process
    common.print_header("bench_http", TARGET)
    tmp = tempfile.mkdtemp(prefix="liverec-http-")
    db = f"sqlite:///{tmp}/http.db"
    ids = prepare(db, args.users, args.warm_events, args.seed)
    floor = floors(db, args.users, args.batch, args.seed)
    if not args.port:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            args.port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{args.port}"
    results: dict = {}
    # Uncached first: on the store the floors were measured on. The write scenarios grow the
    # log about fivefold, and a server started after them begins with a re-fit.
    for label, cache in (("reco-300-uncached", 0), ("reco-300", 20_000)):
        proc = start_server(db, args.port, cache, args.workers)
        try:
            console.print(f"{label}: load average {load_average()}")
            loadgen(base, args.rate, args.seconds, args.users)  # warm-up at the same rate
            hits0, miss0 = metric(base, "liverec_recommend_cache_total", 'result="hit"'), metric(
                base, "liverec_recommend_cache_total", 'result="miss"')
            r = loadgen(base, args.rate, args.seconds, args.users)
            hits = metric(base, "liverec_recommend_cache_total", 'result="hit"') - hits0
            miss = metric(base, "liverec_recommend_cache_total", 'result="miss"') - miss0
            r["cache_hit_ratio"] = hits / (hits + miss) if hits + miss else 0.0
            results[label] = r
            r["load_average"] = load_average()
            if cache:
                wrk_runs = {
                    "reco-max": (reco_script(args.users, None), 8),
                    "ingest": (ingest_script(args.users, ids), 32),
                    "ingest-batch": (batch_script(args.users, ids, args.batch, args.seed), 1),
                    "ingest-batch-4": (batch_script(args.users, ids, args.batch, args.seed), 4),
                    "health": (health_script(), 8),
                }
                for name, (script, conns) in wrk_runs.items():
                    results[name] = run_wrk(base, script, seconds=args.seconds, connections=conns)
                    results[name]["load_average"] = load_average()
                results["event->reco"] = event_then_reco(base, ids, args.users, args.n, args.seed)
                results["event->reco"]["load_average"] = load_average()
                # Right after the write scenarios, which left every user's cached list stale; then
                # the same load again, its caches as the first run left them (steady state).
                for name in ("mixed", "mixed-steady"):
                    results[name] = mixed_load(base, proc.pid, ids, args.users, args.mixed_rate, args.mixed_seconds,
                                               args.write_share)
                    results[name]["load_average"] = load_average()
            else:
                results["reco-max-uncached"] = run_wrk(base, reco_script(args.users, None), seconds=args.seconds,
                                                       connections=8)
                results["reco-max-uncached"]["load_average"] = load_average()
        finally:
            proc.terminate()
            proc.wait(30)
    # The ingest scenario above grows the log enough to start a periodic re-fit, which it then
    # shares the cores with; the same scenario once more on a server with re-fits off.
    proc = start_server(db, args.port, 20_000, args.workers, LIVEREC_REFIT_GROWTH="0")
    try:
        results["ingest-no-refit"] = run_wrk(base, ingest_script(args.users, ids), seconds=args.seconds, connections=32)
        results["ingest-no-refit"]["load_average"] = load_average()
    finally:
        proc.terminate()
        proc.wait(30)
    rows = {}
    for name in ("reco-300", "reco-300-uncached", "reco-max", "reco-max-uncached", "ingest", "ingest-no-refit",
                 "ingest-batch", "ingest-batch-4", "health", "mixed", "mixed-steady"):
        r = results[name]
        rows[f"{name} ({r['req_per_s']:.0f} req/s, errors {r['errors'] + r['non2xx']}, load {r['load_average']})"] = {
            "n": r["requests"], "p50_ms": r["p50"], "p90_ms": r["p90"], "p99_ms": r["p99"], "max_ms": r["max"],
            "mean_ms": r["mean"]}
    rt = results["event->reco"]
    rows[f"event->reco round trip (load {rt['load_average']})"] = rt
    rows[f"floor: Engine.recommend(k=10) in process (load {floor['load_average']})"] = floor["recommend"]
    console.print(latency_table(f"HTTP, {args.workers} uvicorn worker(s), 10k books, durable SQLite", rows))
    console.print(common.stages_table("where an uncached request's time goes, in process (diagnostic, timed "
                                      "separately)", floor["recommend_stages"]))
    mixed, steady = results["mixed"], results["mixed-steady"]
    console.print(kv_table("notes", [
        ("cache hit ratio, reco-300", f"{results['reco-300']['cache_hit_ratio']:.2f}"),
        ("event->reco stale responses", rt["stale_responses"]),
        ("ingestion, 1 event per request", f"{results['ingest']['req_per_s']:.0f} events/s"),
        ("ingestion, 1 event per request, re-fits off", f"{results['ingest-no-refit']['req_per_s']:.0f} events/s"),
        (f"ingestion, {args.batch} events per request",
         f"{results['ingest-batch']['req_per_s'] * args.batch:.0f} events/s"),
        (f"ingestion, {args.batch} events per request, 4 connections",
         f"{results['ingest-batch-4']['req_per_s'] * args.batch:.0f} events/s"),
        ("mixed: RSS before -> after", f"{mixed['rss_mb_before']:.0f} -> {mixed['rss_mb_after']:.0f} MB "
                                       f"({mixed['rss_growth']:+.1%})"),
        ("mixed / mixed-steady: cache hit ratio", f"{mixed['cache_hit_ratio']:.2f} / {steady['cache_hit_ratio']:.2f}"),
        ("mixed / mixed-steady: the writes' p50 / p99 ms",
         f"{mixed['write_p50']:.1f} / {mixed['write_p99']:.1f}; {steady['write_p50']:.1f} / {steady['write_p99']:.1f}"),
        ("mixed-steady: RSS before -> after", f"{steady['rss_mb_before']:.0f} -> {steady['rss_mb_after']:.0f} MB "
                                              f"({steady['rss_growth']:+.1%})"),
        *((f"{name}: a re-fit running at its start / at its end / re-fits swapped in during it",
           f"{'yes' if r['refit_running_at_start'] else 'no'} / {'yes' if r['refit_running_at_end'] else 'no'}"
           f" / {r['swaps']:.0f}") for name, r in (("mixed", mixed), ("mixed-steady", steady))),
        ("floor: most req/s one worker can rank (1000 / mean recommend ms)",
         f"{1000 / floor['recommend']['mean_ms']:.0f} req/s"),
        ("floor: Engine.record, one event per commit", f"{floor['record_one_per_commit_per_s']:.0f} events/s"),
        ("floor: Engine.record_groups, 32 one-event groups per commit", f"{floor['record_groups_32_per_s']:.0f} events/s"),
        (f"floor: Engine.record_many, {args.batch} events", f"{floor['record_many_per_s']:.0f} events/s"),
    ]))
    common.write_json(args.json, benchmark="bench_http", target=TARGET, started=started,
                      config=vars(args), results={**results, "floor": floor})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 1)
    else:
        main()
