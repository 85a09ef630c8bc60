"""Latency of a mixed HTTP load while a background re-fit runs and after its learners are swapped in.

Setup: the store of ``bench_http.py`` (10k books, ``--warm-events`` clicks by ``--users``
users), a server with the response cache on and periodic re-fits off; an open-loop load of
``--rate`` req/s for ``--seconds`` s (``--write-share`` POST /events, the rest GET
/recommendations, ``loadgen.mixed``); at ``--fit-at`` s the load's driver asks for a
background fit (``POST /admin/fit``). Printed: p50 / p99 / max over the whole run, over the
fit, and from the swap to the end; the same in 5 s windows; and every cyclic-GC pass of the
server process that took over 5 ms (timed by a ``gc.callbacks`` hook installed in the server
through a ``sitecustomize`` module of this benchmark's own; the fit's child process is left
out). The floor row is the first window, before the fit.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_http_refit.py [--json out.json]

To measure other code with the same load: ``PYTHONPATH=/path/to/other/src`` (the server
process imports liverec from there).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np

import bench_http
import common
import loadgen
from common import console, kv_table

TARGET = "60 s mixed 150 req/s (20% writes): p99 <= 30 ms, also across a re-fit and its swap"

_HOOK = '''
import gc, os, sys, time
if "_serve" in sys.argv:
    _t = [0.0]
    _out = open(os.environ["BENCH_GC_LOG"], "a", buffering=1)
    def _cb(phase, info):
        if phase == "start":
            _t[0] = time.perf_counter()
        elif (time.perf_counter() - _t[0]) > 0.005:
            _out.write(f"{time.time():.3f} {info['generation']} {(time.perf_counter() - _t[0]) * 1e3:.1f}\\n")
    gc.callbacks.append(_cb)
'''


def windows(done: list[tuple[float, float]], t0: float, width: float) -> list[dict]:
    out = []
    end = max(t for t, _ in done) if done else t0
    a = t0
    while a < end:
        lat = [ms for t, ms in done if a <= t < a + width]
        if lat:
            out.append({"from_s": round(a - t0, 1), **pct(lat)})
        a += width
    return out


def pct(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--warm-events", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=150)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--write-share", type=float, default=0.2)
    ap.add_argument("--fit-at", type=float, default=10)
    ap.add_argument("--port", type=int, default=18790)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    common.print_header("bench_http_refit", TARGET)
    import httpx

    tmp = tempfile.mkdtemp(prefix="liverec-refit-")
    db = f"sqlite:///{tmp}/http.db"
    ids = bench_http.prepare(db, args.users, args.warm_events, args.seed)
    Path(tmp, "site").mkdir()
    Path(tmp, "site", "sitecustomize.py").write_text(_HOOK)
    gc_log = Path(tmp, "gc.log")
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(Path(tmp, "site"))) if p)
    proc = bench_http.start_server(db, args.port, 20_000, 1, LIVEREC_REFIT_GROWTH="0", PYTHONPATH=path,
                                   BENCH_GC_LOG=str(gc_log))
    base = f"http://127.0.0.1:{args.port}"
    marks: dict[str, float] = {}
    try:
        gc_log.write_text("")  # the server's start (restore, freeze) is not what is measured

        def fit_later() -> None:
            # One client for the whole run: a new httpx client per call builds an SSL context,
            # tens of ms holding this process's GIL, which would delay the load's requests.
            with httpx.Client(base_url=base, timeout=30) as client:
                time.sleep(args.fit_at)
                marks["fit_started"] = time.time()
                client.post("/admin/fit").raise_for_status()
                while client.get("/admin/fit").json().get("running"):
                    time.sleep(0.05)
            marks["swapped"] = time.time()

        make = loadgen.mixed(urlparse(base).netloc, args.users, ids, write_share=args.write_share, seed=args.seed)
        started = time.time()
        threading.Thread(target=fit_later, daemon=True).start()
        out = asyncio.run(loadgen.run(base, make, rate=args.rate, seconds=args.seconds))
        # loadgen lists latencies in completion order: the k-th done at about its due time + its latency.
        lat, _ = out.pop("latencies_s"), out.pop("write_latencies_s")
        step = 1.0 / args.rate
        due = started + 0.1 + np.arange(len(lat)) * step
        done = [(float(d + s), float(s * 1e3)) for d, s in zip(due, lat)]
    finally:
        proc.terminate()
        proc.wait(30)
    fit_t, swap_t = marks.get("fit_started"), marks.get("swapped")
    rows = {"whole run": pct([ms for _, ms in done])}
    if fit_t and swap_t:
        rows["during the fit"] = pct([ms for t, ms in done if fit_t <= t < swap_t])
        rows["from the swap to the end"] = pct([ms for t, ms in done if t >= swap_t])
    wins = windows(done, started, 5.0)
    rows["floor: the first 5 s (before the fit)"] = {k: v for k, v in wins[0].items() if k != "from_s"}
    pauses = [line.split() for line in gc_log.read_text().splitlines()]
    pauses = [(float(t), int(g), float(ms)) for t, g, ms in pauses]
    after = [p for p in pauses if swap_t and p[0] >= swap_t]
    table = {name: f"{r['n']}: p50 {r['p50_ms']:.1f} / p99 {r['p99_ms']:.1f} / max {r['max_ms']:.1f} ms"
             for name, r in rows.items()}
    table["errors, non-2xx"] = f"{out['failed']}, {out['non2xx']}"
    table["fit: started at / swapped at (s into the run)"] = (
        f"{fit_t - started:.1f} / {swap_t - started:.1f}" if fit_t and swap_t else "did not finish")
    table["server GC passes > 5 ms: all / after the swap"] = f"{len(pauses)} / {len(after)}"
    table["... longest, ms: all / after the swap"] = (
        f"{max((p[2] for p in pauses), default=0):.0f} / {max((p[2] for p in after), default=0):.0f}")
    console.print(kv_table(f"mixed load {args.rate:g} req/s, {args.write_share:.0%} writes, fit at {args.fit_at:g} s",
                           table.items()))
    console.print(kv_table("5 s windows (p99 / max ms)",
                           [(f"{w['from_s']:>5.1f} s", f"{w['p99_ms']:.1f} / {w['max_ms']:.1f}") for w in wins]))
    common.print_load(" (end)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "windows": wins, "gc_pauses": pauses, "marks": marks,
                                               "started": started, **out}, indent=1))


if __name__ == "__main__":
    main()
