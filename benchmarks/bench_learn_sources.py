"""Where an event's learning time goes: each default source's cost per event, single and in batches.

Single-event ingestion (one ``Engine.record`` per event) pays every source's per-event
update once per event; a stored batch (``record_many``) hands a run to each source that
can take it at once (``BatchLearner``). This prints both per source, so the next
optimisation goes where the time is.

Setup: the 10,000 real goodbooks books (real all-MiniLM-L6-v2 vectors, no re-encoding), the
default engine over an in-memory store (no fsync: learning alone is measured, the store's
share is in ``bench_ingest.py``), ``--warm`` events by ``--users`` users (items drawn by the
books' real ratings count, kinds click/view/like/rating as ``bench_ingest.py``) recorded and
fitted, re-fits off; then ``--events`` events through ``record_many`` in batches of 1,000,
and ``--single`` events through ``record``. Each source's learning is timed by wrapping the
engine's ``learn_all`` (two clock reads per source per call). The floor row is the whole
record path for the same events, measured in the same run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_learn_sources.py [--json out/learn.json]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import numpy as np

import common
from bench_ingest import EventSource
from common import console, kv_table

TARGET = "single-event durable ingestion >= 2,000 events/s (HTTP), bulk >= 10k events/s: per-event learning is most of it"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--warm", type=int, default=100_000, help="events recorded and fitted before timing")
    ap.add_argument("--events", type=int, default=20_000, help="events through record_many (batches of 1,000)")
    ap.add_argument("--single", type=int, default=3_000, help="events through record, one per call")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_learn_sources", TARGET)

    from liverec import Engine
    from liverec import engine as engine_module
    from liverec.lifecycle import learn_all
    from liverec.settings import Settings

    items, vecs = common.book_vectors()
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    pop = np.array([max(1, int(it.attributes.get("ratings_count", 1))) for it in items], dtype=np.float64)
    src = EventSource([it.id for it in items], pop, args.users, args.seed, time.time() - 90 * 86_400.0)
    eng = Engine.open(None, settings=Settings(refit_growth=0, encoder_progress=False), encoder=enc)
    eng.add_items(items)
    for a in range(0, args.warm, 10_000):
        eng.record_many(src.batch(min(10_000, args.warm - a)))
    eng.fit()

    spent: dict[str, float] = defaultdict(float)

    def timed_learn_all(learners: Any, events: Any) -> None:
        for name, model in learners.items():
            t = time.perf_counter()
            learn_all({name: model}, events)
            spent[name] += time.perf_counter() - t

    engine_module.learn_all = timed_learn_all  # type: ignore[assignment]
    results: dict[str, Any] = {}
    for label, n, run in (
        ("record_many, batches of 1,000", args.events,
         lambda evs: [eng.record_many(evs[a : a + 1000]) for a in range(0, len(evs), 1000)]),
        ("record, one event per call", args.single, lambda evs: [eng.record(e) for e in evs]),
    ):
        events = src.batch(n)
        spent.clear()
        t = time.perf_counter()
        run(events)
        wall = time.perf_counter() - t
        per = {name: s / n * 1e6 for name, s in sorted(spent.items(), key=lambda kv: -kv[1])}
        results[label] = {"events": n, "events_per_s": n / wall, "us_per_event": wall / n * 1e6,
                          "learning_us_per_event": per}
        rows = [(f"floor: the whole record path ({n:,} events)", f"{wall / n * 1e6:,.0f} us ({n / wall:,.0f} events/s)")]
        rows += [(f"  {name}", f"{us:,.1f} us") for name, us in per.items()]
        rows.append(("  every source", f"{sum(per.values()):,.0f} us"))
        console.print(kv_table(f"{label}: learning per event, by source", rows))
    eng.close()
    common.print_load()
    common.write_json(args.json, benchmark="bench_learn_sources", target=TARGET, config=vars(args), results=results,
                      started=started)


if __name__ == "__main__":
    main()
