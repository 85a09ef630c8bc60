"""Bulk event ingestion throughput into a durable store (SQLite file; PostgreSQL if reachable).

Target: "bulk ingestion >= 10k events/s into SQLite with durability on".

Catalog: the 10,000 real goodbooks books (real all-MiniLM-L6-v2 vectors through a
PrecomputedEncoder: no model run). Settings: the defaults (durability on: SQLite WAL +
synchronous=FULL; PostgreSQL synchronous_commit as the server has it) plus
popularity_prior="ratings_count". Events: ``--users`` users, items drawn by the books'
real ratings_count (popular books get more events), kinds click 60% / view 25% / like
10% / rating 5% (1-5 stars), timestamps increasing. Event objects are built before the
timer starts; the timer covers Engine.record_many / Engine.record only (validation,
the durable write + commit, and every learner's update).

Measures, on a fresh store each:
(a) record_many in batches of 1,000 and of 10,000 events, ``--events`` events per batch
    size: events/s overall and per tenth of the run (does it slow down as the tables
    grow?), and the split of the time between the store write, learning and the rest
    (validation etc.);
(b) single-event record(): events/s over ``--single`` events (one commit each);
(c) the same on PostgreSQL at postgresql://root@127.0.0.1:5432/<fresh database>, created
    and dropped by the benchmark; skipped with a note when the server is unreachable.

    .venv/bin/python benchmarks/bench_ingest.py --events 500000 --json out/ingest.json
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import common
from common import console, kv_table

TARGET = "bulk ingestion >= 10k events/s into SQLite with durability on"
KINDS = np.array(["click", "view", "like", "rating"])
KIND_P = np.array([0.60, 0.25, 0.10, 0.05])


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class EventSource:
    """Deterministic synthetic feedback over the real catalog, with increasing timestamps."""

    def __init__(self, item_ids: list[str], popularity: np.ndarray, n_users: int, seed: int, t0: float) -> None:
        self.ids = np.array(item_ids, dtype=object)
        self.p = popularity / popularity.sum()
        self.users = np.array([f"user-{i}" for i in range(n_users)], dtype=object)
        self.rng = np.random.default_rng(seed)
        self.t = t0

    def batch(self, n: int) -> list:
        from liverec import Event

        r = self.rng
        items = self.ids[r.choice(len(self.ids), size=n, p=self.p)]
        users = self.users[r.integers(0, len(self.users), n)]
        kinds = KINDS[r.choice(4, size=n, p=KIND_P)]
        stars = r.integers(1, 6, n)
        out = []
        for u, it, k, s in zip(users, items, kinds, stars):
            self.t += 0.01
            out.append(Event(user=u, item=it, kind=k, value=float(s) if k == "rating" else 1.0, timestamp=self.t))
        return out


class Split:
    """Times Engine internals by wrapping them on the instance (the engine code is untouched).

    Adds two perf_counter calls per call to the ingestor's learning step (one per
    stored batch): well under 1 us per event.
    """

    def __init__(self, eng: Any) -> None:
        self.store_s = 0.0
        self.learn_s = 0.0
        store_append = eng.store.append_events
        learn = eng.ingest.learn

        def timed_append(events):
            t0 = time.perf_counter()
            try:
                return store_append(events)
            finally:
                self.store_s += time.perf_counter() - t0

        def timed_learn(events):
            t0 = time.perf_counter()
            learn(events)
            self.learn_s += time.perf_counter() - t0

        eng.store.append_events = timed_append
        eng.ingest.learn = timed_learn


def bulk_run(open_engine, items, src: EventSource, n_events: int, batch: int) -> dict:
    eng = open_engine()
    eng.add_items(items)
    split = Split(eng)
    total = 0.0
    chunks: list[tuple[int, float, float]] = []  # (events, wall s, CPU s) per tenth of the run
    tenth = max(batch, n_events // 10)
    acc_n, acc_s, acc_c, done = 0, 0.0, 0.0, 0
    cpu = 0.0
    gc.collect()
    while done < n_events:
        b = src.batch(min(batch, n_events - done))
        new, dt, c = common.timed(eng.record_many, b)
        cpu += c
        assert new == len(b), (new, len(b))
        total += dt
        done += len(b)
        acc_n += len(b)
        acc_s += dt
        acc_c += c
        if acc_n >= tenth or done == n_events:
            chunks.append((acc_n, acc_s, acc_c))
            acc_n, acc_s, acc_c = 0, 0.0, 0.0
    stored = eng.store.count_events()
    rss = _rss_mb()
    eng.close()
    rates = [n / s for n, s, _ in chunks]
    cpu_rates = [n / c for n, _, c in chunks]
    return {
        "batch": batch, "events": n_events, "seconds": total, "events_per_s": n_events / total,
        "cpu_seconds": cpu, "events_per_cpu_s": n_events / cpu,
        "events_per_s_by_tenth": rates,
        "events_per_cpu_s_by_tenth": cpu_rates,
        "last_tenth_vs_first_tenth_cpu": cpu_rates[-1] / cpu_rates[0] if cpu_rates else None,
        "store_seconds": split.store_s, "learn_seconds": split.learn_s,
        "other_seconds": total - split.store_s - split.learn_s,
        "us_per_event": {"total": 1e6 * total / n_events, "store": 1e6 * split.store_s / n_events,
                         "learn": 1e6 * split.learn_s / n_events,
                         "validate+other": 1e6 * (total - split.store_s - split.learn_s) / n_events},
        "events_stored": stored, "rss_mb_after": rss,
    }


def single_run(open_engine, items, src: EventSource, n_events: int) -> dict:
    eng = open_engine()
    eng.add_items(items)
    events = src.batch(n_events)
    lat, cpu = [], 0.0
    gc.collect()
    for e in events:
        ok, wall, c = common.timed(eng.record, e)
        lat.append(wall)
        cpu += c
        assert ok
    eng.close()
    total = float(np.sum(lat))
    return {"events": n_events, "seconds": total, "events_per_s": n_events / total, "cpu_seconds": cpu,
            "events_per_cpu_s": n_events / cpu, "latency": common.latency(lat)}


def backend_tables(label: str, res: dict) -> None:
    t = kv_table(f"{label}: record_many throughput", [], caption=None)
    t.columns[0].header = "run"
    t.columns[1].header = "events/s (wall)"
    t.add_column("events per CPU-second", justify="right")
    for r in res["bulk"]:
        t.add_row(f"record_many, batches of {r['batch']:,} ({r['events']:,} events, {r['seconds']:.1f} s)",
                  f"{r['events_per_s']:,.0f}", f"{r['events_per_cpu_s']:,.0f}")
    s = res["single"]
    t.add_row(f"record, one event per call ({s['events']:,} events, {s['seconds']:.1f} s)", f"{s['events_per_s']:,.0f}",
              f"{s['events_per_cpu_s']:,.0f}")
    console.print(t)
    common.print_load()
    d = kv_table(f"{label}: where a bulk event's time goes (wall)", [])
    d.columns[0].header = "batch"
    d.columns[1].header = "total / store write / learn / validate+other (us/event)"
    d.add_column("events per CPU-s, per tenth of the run (table growth)", justify="right")
    for r in res["bulk"]:
        u = r["us_per_event"]
        d.add_row(f"{r['batch']:,}", f"{u['total']:.1f} / {u['store']:.1f} / {u['learn']:.1f} / {u['validate+other']:.1f}",
                  " ".join(f"{x / 1000:.1f}k" for x in r["events_per_cpu_s_by_tenth"]))
    console.print(d)
    lt = common.latency_table(f"{label}: single record() latency", {"record (1 event, 1 commit)": s["latency"]})
    console.print(lt)


def run_backend(label: str, make_url, items, enc, args, seed_offset: int) -> dict:
    from liverec import Engine
    from liverec.settings import Settings

    settings = Settings(popularity_prior="ratings_count", encoder_progress=False)
    pop = np.array([max(1, int(it.attributes.get("ratings_count", 1))) for it in items], dtype=np.float64)
    ids = [it.id for it in items]
    out: dict[str, Any] = {"bulk": []}
    for j, b in enumerate(args.batch_sizes):
        with make_url() as url:
            src = EventSource(ids, pop, args.users, args.seed + seed_offset + j, time.time() - 60 * 86_400.0)
            console.print(f"[dim]{label}: record_many x {b:,} ...[/]")
            out["bulk"].append(bulk_run(lambda: Engine.open(url, settings=settings, encoder=enc), items, src, args.events, b))
    with make_url() as url:
        src = EventSource(ids, pop, args.users, args.seed + seed_offset + 99, time.time() - 60 * 86_400.0)
        console.print(f"[dim]{label}: single record() ...[/]")
        out["single"] = single_run(lambda: Engine.open(url, settings=settings, encoder=enc), items, src, args.single)
    backend_tables(label, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=500_000, help="events per bulk run (one run per batch size)")
    ap.add_argument("--batch-sizes", default="1000,10000", help="comma-separated record_many batch sizes")
    ap.add_argument("--single", type=int, default=5000, help="events for the single-record() run")
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--pg", default="postgresql://root@127.0.0.1:5432",
                    help="PostgreSQL server (a fresh database is created and dropped); 'none' to skip")
    ap.add_argument("--dir", default=None, help="parent directory for the temp SQLite files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="write every figure + machine info here")
    args = ap.parse_args()
    args.batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x.strip()]
    started = time.time()
    common.print_header("bench_ingest", TARGET)

    items, vecs = common.book_vectors()
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    results: dict[str, Any] = {}
    notes: list[str] = []

    # ------------------------------------------------------------------ SQLite
    tmp = tempfile.TemporaryDirectory(prefix="liverec-bench-ingest-", dir=args.dir)
    fs = common.fs_type(tmp.name)
    fsync = common.fsync_probe(tmp.name)
    console.print(f"disk: append 4 KiB + fsync in {tmp.name}: p50 {fsync['p50_ms']:.2f} ms, p99 {fsync['p99_ms']:.2f} ms "
                  "(the floor under each durable commit)")
    counter = [0]

    @contextmanager
    def sqlite_url() -> Iterator[str]:
        counter[0] += 1
        p = Path(tmp.name) / f"ingest-{counter[0]}.sqlite"
        yield f"sqlite:///{p}"
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)

    import sqlalchemy as sa

    from liverec.store import Store

    probe = Store.open(f"sqlite:///{tmp.name}/probe.sqlite")
    with probe.engine.connect() as c:
        journal = c.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(c.exec_driver_sql("PRAGMA synchronous").scalar())
    probe.close()
    console.print(f"SQLite: files in {tmp.name} on {fs}; journal_mode={journal}, synchronous={sync}; "
                  f"catalog: {len(items):,} real goodbooks books; {args.users:,} users")
    results["sqlite"] = run_backend(f"SQLite file (WAL, synchronous={sync})", sqlite_url, items, enc, args, 0)
    results["sqlite"]["durability"] = {"journal_mode": journal, "synchronous": sync, "filesystem": fs,
                                       "fsync_probe": fsync}
    tmp.cleanup()

    # -------------------------------------------------------------- PostgreSQL
    if args.pg.lower() == "none":
        notes.append("PostgreSQL skipped (--pg none)")
        console.print("[yellow]PostgreSQL skipped (--pg none)[/]")
    else:
        admin = sa.create_engine(f"{args.pg.replace('postgresql://', 'postgresql+psycopg://', 1)}/postgres",
                                 isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with admin.connect() as c:
                pg_settings = {k: c.exec_driver_sql(f"SHOW {k}").scalar() for k in (
                    "server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                    "shared_buffers")}
        except Exception as exc:  # unreachable, auth, driver...
            admin.dispose()
            msg = f"PostgreSQL not reachable at {args.pg} ({exc.__class__.__name__}: {str(exc).splitlines()[0]}); skipped"
            notes.append(msg)
            console.print(f"[yellow]{msg}[/]")
        else:
            console.print("PostgreSQL server settings: " + ", ".join(f"{k}={v}" for k, v in pg_settings.items()))
            if pg_settings["fsync"] != "on" or pg_settings["synchronous_commit"] == "off":
                notes.append("PostgreSQL durability is NOT fully on at the server (fsync/synchronous_commit)")
                console.print("[bold yellow]warning:[/] the server's fsync/synchronous_commit mean commits are not durable")

            @contextmanager
            def pg_url() -> Iterator[str]:
                name = f"liverec_bench_{uuid.uuid4().hex[:12]}"
                with admin.connect() as c:
                    c.exec_driver_sql(f'CREATE DATABASE "{name}"')
                try:
                    yield f"{args.pg}/{name}"
                finally:
                    with admin.connect() as c:
                        c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

            try:
                results["postgresql"] = run_backend("PostgreSQL", pg_url, items, enc, args, 1000)
                results["postgresql"]["server_settings"] = pg_settings
            finally:
                admin.dispose()

    rows = []
    for backend, res in results.items():
        for r in res["bulk"]:
            rows.append((f"{backend}: record_many x {r['batch']:,} events/s", f"{r['events_per_s']:,.0f}"))
        rows.append((f"{backend}: record() events/s", f"{res['single']['events_per_s']:,.0f}"))
    console.print(kv_table("summary", rows, caption="target: >= 10,000 events/s bulk into SQLite, durability on"))
    common.write_json(args.json, benchmark="bench_ingest", target=TARGET, started=started,
                      config={**vars(args), "items": len(items), "popularity_prior": "ratings_count",
                              "kinds": dict(zip(KINDS.tolist(), KIND_P.tolist()))},
                      results=results, notes=notes)


if __name__ == "__main__":
    main()
