"""What requests wait for when a large catalog changes under them: a re-fit, a new item.

On a two-stage catalog (above ``exact_index_max_items``), requests run one after another
in the serving thread (one worker's view) while:

* ``Engine.fit(background=True)`` fits every default source and swaps them in: latency of
  the requests served meanwhile (a request that had to build a retrieval graph of the new
  learners under the engine lock shows as the max);
* ``add_items`` adds one item: the next request's latency (what is computed again per
  catalog version shows there).

The floor row is the same request loop with nothing else running, in the same run.
Catalog: the 10,000 real books + synthetic mixtures of their vectors (``common.synthetic_catalog``).

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_refit_requests.py [--items 100000]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import common
import numpy as np
from bench_ann import coherent_clicks
from common import console, kv_table, latency, latency_table

TARGET = "no request waits for a re-fit or a catalog change: max latency during a re-fit and after add_items near the floor"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=90.0, help="longest wait for the background re-fit")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from liverec import Engine, Event
    from liverec.settings import Settings

    started = time.time()
    common.print_header("bench_refit_requests", TARGET)
    rng = np.random.default_rng(0)
    items, vecs = common.synthetic_catalog(args.items, seed=0)
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    tmp = tempfile.TemporaryDirectory(prefix="liverec-bench-refit-req-")
    eng = Engine.open(f"sqlite:///{tmp.name}/a.sqlite", encoder=enc,
                      settings=Settings(log_impressions=False, encoder_progress=False))
    common.add_items_in_batches(eng, items)
    users = [f"u{i}" for i in range(args.users)]
    t = time.time() - 2 * 86_400.0
    events = []
    for u, row in zip(users, coherent_clicks(vecs, args.users, 5, rng)):
        for j in row:
            t += 1.0
            events.append(Event(user=u, item=items[int(j)].id, kind="click", timestamp=t))
    eng.record_many(events)
    fit_s = time.perf_counter()
    eng.fit()
    fit_s = time.perf_counter() - fit_s
    console.print(f"{args.items:,} items, two-stage: {eng.index.uses_ann}; foreground fit {fit_s:.1f} s; "
                  f"candidates per source {eng.pipeline.per_source()}")

    def serve(n: int) -> list[float]:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            eng.recommend(users[i % len(users)], k=10, log=False)
            out.append(time.perf_counter() - t0)
        return out

    serve(50)
    floor = serve(600)
    during: list[float] = []
    th = eng.fit(background=True)
    assert th is not None
    t_end = time.time() + args.seconds
    i = 0
    while th.is_alive() and time.time() < t_end:
        t0 = time.perf_counter()
        eng.recommend(users[i % len(users)], k=10, log=False)
        during.append(time.perf_counter() - t0)
        i += 1
    th.join()
    after_item: list[float] = []
    for rep in range(5):
        eng.add_items([dataclasses.replace(items[10 + rep], id=f"bench-new-{rep}")])
        t0 = time.perf_counter()
        eng.recommend(users[rep], k=10, log=False)
        after_item.append(time.perf_counter() - t0)
    rows = {"floor: requests with nothing else running": latency(floor),
            "requests while a background re-fit runs": latency(during),
            "first request after add_items (1 item), 5 times": latency(after_item)}
    console.print(latency_table(f"recommend latency, {args.items:,} items", rows,
                                caption="one serving thread; the re-fit's child process takes the other core"))
    console.print(kv_table("summary", [
        ("max while re-fitting / floor p99", f"{rows['requests while a background re-fit runs']['max_ms']:.1f} / "
                                              f"{rows['floor: requests with nothing else running']['p99_ms']:.1f} ms"),
        ("max after add_items", f"{rows['first request after add_items (1 item), 5 times']['max_ms']:.1f} ms"),
    ]))
    common.write_json(args.json, benchmark="bench_refit_requests", target=TARGET, config=vars(args),
                      results={"fit_seconds": fit_s, "latency": rows}, started=started)
    eng.close()


if __name__ == "__main__":
    main()
