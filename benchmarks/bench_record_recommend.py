"""record -> next recommend reflects it, in process, on a durable SQLite file.

Target: "record -> next recommend reflects it: p99 <= 20 ms at 10k items, in process".

Setup: an Engine on a SQLite FILE in a temp dir with the default durability settings
(WAL + synchronous=FULL: a commit is on disk when record() returns), the 10,000 real
goodbooks books with their real all-MiniLM-L6-v2 vectors (PrecomputedEncoder: no
re-encoding), popularity_prior="ratings_count". 200 simulated users.

Loop (``--n`` iterations after ``--warmup`` unmeasured ones): pick a random user,
record one click (timestamps increasing), immediately recommend(user, k=10) and check
the clicked item is NOT in the result: seen-exclusion proves the engine's state moved.
With probability ``--slate-click-prob`` the click is on an item of the slate that user
was last served (so the item was in the top 10 just before and must now be gone -- a
strong check); otherwise it is a uniformly random book (as a random click would be).

Reports p50/p90/p99/max of record, recommend and the round trip (record+recommend),
plus the round trip's CPU time (this thread's CPU: robust to a busy shared machine) and
a second loop of ``--n/2`` iterations with recommend(log=False) (one commit per round
trip instead of two); then recommend-only latency with impression logging on and off
(and explain off), a breakdown of one recommend into its stages, and the disk's raw
append+fsync latency (the floor under every durable commit). No timed assertions:
these are measurements.

    .venv/bin/python benchmarks/bench_record_recommend.py --n 2000 --json out/record_recommend.json
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import numpy as np

import common
from common import Stopwatch, console, kv_table, latency, latency_table

TARGET = "record -> next recommend reflects it: p99 <= 20 ms at 10k items, in process"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="measured record->recommend iterations")
    ap.add_argument("--warmup", type=int, default=200, help="unmeasured iterations first")
    ap.add_argument("--users", type=int, default=200, help="simulated users")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--slate-click-prob", type=float, default=0.5,
                    help="probability a click is on an item of the user's last slate (else a random book)")
    ap.add_argument("--reco-only-n", type=int, default=1000,
                    help="requests per variant for the recommend-only measurements")
    ap.add_argument("--dir", default=None, help="parent directory of the temp dir holding the SQLite file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="write every figure + machine info here")
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_record_recommend", TARGET)

    from liverec import Engine, Event
    from liverec.settings import Settings

    items, vecs = common.book_vectors()
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    ids = [it.id for it in items]
    rng = np.random.default_rng(args.seed)
    users = [f"user-{i}" for i in range(args.users)]

    tmp = tempfile.TemporaryDirectory(prefix="liverec-bench-", dir=args.dir)
    db = f"{tmp.name}/bench.sqlite"
    settings = Settings(popularity_prior="ratings_count", encoder_progress=False)
    eng = Engine.open(f"sqlite:///{db}", settings=settings, encoder=enc)
    with Stopwatch() as sw_add:
        eng.add_items(items)
    with eng.store.engine.connect() as c:
        journal = c.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(c.exec_driver_sql("PRAGMA synchronous").scalar())
    fs = common.fs_type(tmp.name)
    fsync_before = common.fsync_probe(tmp.name)
    console.print(
        f"catalog: {eng.n_items:,} real goodbooks books (real all-MiniLM-L6-v2 vectors); add_items took "
        f"{sw_add.seconds:.2f} s; index: {'ANN' if eng.index.uses_ann else 'exact'}\n"
        f"store: SQLite file {db} on {fs}; journal_mode={journal}, synchronous={sync}"
    )

    ts = [time.time() - 7 * 86_400.0]  # a week ago, +1 s per event: always in the past

    def next_ts() -> float:
        ts[0] += 1.0
        return ts[0]

    last_slate: dict[str, list[str]] = {}
    rec_s: list[float] = []
    reco_s: list[float] = []
    trip_s: list[float] = []
    stats = {"checks": 0, "violations": 0, "strong_checks": 0, "strong_violations": 0}

    trip_nolog_s: list[float] = []
    trip_cpu_s: list[float] = []  # CPU time of this thread for the round trip (excludes waiting)

    def iteration(measure: bool, log: bool | None = None) -> None:
        user = users[int(rng.integers(len(users)))]
        slate = last_slate.get(user)
        if slate and rng.random() < args.slate_click_prob:
            item = slate[int(rng.integers(len(slate)))]
        else:
            item = ids[int(rng.integers(len(ids)))]
        strong = bool(slate) and item in slate
        ev = Event(user=user, item=item, kind="click", timestamp=next_ts())  # built outside the timer
        c0, t0 = time.thread_time(), time.perf_counter()
        new = eng.record(ev)
        t1 = time.perf_counter()
        recs = eng.recommend(user, k=args.k, log=log)
        t2, c2 = time.perf_counter(), time.thread_time()
        assert new, "event id collided"
        got = [r.item for r in recs]
        last_slate[user] = got
        if measure and log is False:
            trip_nolog_s.append(t2 - t0)
        elif measure:
            rec_s.append(t1 - t0)
            reco_s.append(t2 - t1)
            trip_s.append(t2 - t0)
            trip_cpu_s.append(c2 - c0)
        if measure:
            stats["checks"] += 1
            bad = item in got
            stats["violations"] += bad
            stats["strong_checks"] += strong
            stats["strong_violations"] += bad and strong

    for _ in range(args.warmup):
        iteration(False)
    gc.collect()
    for _ in range(args.n):
        iteration(True)
    gc.collect()
    for _ in range(args.n // 2):  # the same loop with recommend(log=False): one commit per round trip
        iteration(True, log=False)

    loop = {
        "record (1 click, durable commit)": latency(rec_s),
        "recommend (k=10, logs impressions)": latency(reco_s),
        "round trip record+recommend": latency(trip_s),
        "  (CPU time of that round trip)": latency(trip_cpu_s),
        "round trip, recommend(log=False) (2nd loop)": latency(trip_nolog_s),
    }
    console.print(latency_table(
        f"record -> recommend, {eng.n_items:,} items, SQLite file (WAL, synchronous={sync})", loop,
        caption=f"{args.n} iterations after {args.warmup} warm-up; {args.users} users; target p99 <= 20 ms (round trip)",
    ))
    common.print_load()
    console.print(
        f"state-moved check: clicked item absent from the next slate in {stats['checks'] - stats['violations']}/"
        f"{stats['checks']} "
        f"iterations; {stats['strong_checks']} of them clicked an item of the previous slate "
        f"(strong check), violations there: {stats['strong_violations']}"
    )

    # ---------------------------------------------------- recommend-only variants
    variants = {
        "recommend, log_impressions on": dict(log=True),
        "recommend, log_impressions off": dict(log=False),
        "recommend, log off, explain off": dict(log=False, explain=False),
    }
    samples: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    gc.collect()
    for _ in range(args.reco_only_n):  # interleaved so drift hits every variant alike
        for name, kw in variants.items():
            user = users[int(rng.integers(len(users)))]
            _, wall, cpu_s = common.timed(eng.recommend, user, k=args.k, **kw)
            samples[name].append(wall)
            cpu[name].append(cpu_s)
    only = {}
    for k in variants:
        only[k] = latency(samples[k])
        only[f"  (CPU time, {k.split(', ', 1)[1]})"] = latency(cpu[k])
    console.print(latency_table("recommend only (users with history)", only,
                                caption=f"{args.reco_only_n} requests per variant, interleaved; CPU time = "
                                        "this thread's CPU, i.e. without waiting for a core or the disk"))
    common.print_load()

    # ------------------------------------------------ where a recommend goes
    stages = common.recommend_stages(eng, users, args.k, log_impressions=True, rng=rng,
                                     n=min(args.reco_only_n, 500))
    console.print(common.stages_table(
        f"recommend stages (diagnostic, timed separately; exact retrieval below "
        f"{settings.exact_index_max_items:,} items scores every live item)", stages))

    fsync_after = common.fsync_probe(tmp.name)
    console.print(latency_table("disk: append 4 KiB + fsync in the database's directory (the floor of a durable commit)",
                                {"fsync, before the run": fsync_before, "fsync, after the run": fsync_after}))

    summary = [
        ("items", eng.n_items),
        ("events stored", eng.store.count_events()),
        ("impressions stored", eng.store.count_impressions()),
        ("round trip p99 ms", loop["round trip record+recommend"]["p99_ms"]),
        ("target p99 ms", 20.0),
        ("state-moved violations", stats["violations"]),
    ]
    console.print(kv_table("summary", summary))

    common.write_json(
        args.json, benchmark="bench_record_recommend", target=TARGET, started=started,
        config={**vars(args), "items": eng.n_items, "store": f"sqlite file on {fs}", "journal_mode": journal,
                "synchronous": sync, "popularity_prior": settings.popularity_prior,
                "exact_index_max_items": settings.exact_index_max_items, "uses_ann": eng.index.uses_ann,
                "vectors": "real all-MiniLM-L6-v2 vectors of the 10k shipped goodbooks books"},
        results={"add_items_seconds": sw_add.seconds, "loop": loop, "check": stats,
                 "recommend_only": only, "recommend_stages": stages,
                 "fsync_probe_before": fsync_before, "fsync_probe_after": fsync_after,
                 "events_stored": eng.store.count_events(), "impressions_stored": eng.store.count_impressions()},
    )
    eng.close()
    tmp.cleanup()


if __name__ == "__main__":
    main()
