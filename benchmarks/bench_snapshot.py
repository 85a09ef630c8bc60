"""Restart to the first served recommendation: from a snapshot + log tail vs a full replay.

Target: <= 10 s from snapshot with 1M events in the log (10k books catalog).

Setup: one SQLite file store (``--store`` for another URL) holding the 10,000 shipped
goodbooks books (their real all-MiniLM-L6-v2 vectors in the store's vector cache, so no
restart runs the model) and ``--events`` synthetic events generated here: ``--users``
users, item popularity Zipf(1.1), kinds view/click/like/rating/purchase, time-ordered
over 30 days. The writer engine (default settings and sources) fits on the log, which
writes a snapshot (its size and write time are reported), then learns ``--tail`` more
events live (the log after the snapshot).

Each restart is a fresh Python process (``liverec`` imported from scratch, the default
encoder, which a full vector-cache hit never loads): wall time from spawning it to its
first ``recommend`` answer, and inside it ``Engine.open`` + the first ``recommend``.

- ``from snapshot``: loads the newest compatible snapshot (the body read from the store,
  then unpickled), replays the tail (in runs: learners with ``learn_many`` take a run at once).
- ``full replay``: today's path, snapshots switched off (``snapshot_keep=0``): re-fits
  every source from the whole log.
- ``floor``: the same process on a store with the same catalog and no events: what
  any restart costs (imports, catalog, index) before models are involved.

Both restarts must serve the lists the writer served (same users, same top 10).

    .venv/bin/python benchmarks/bench_snapshot.py --events 1000000 --json benchmarks/.cache/snapshot.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import common
from common import console, kv_table

TARGET = "restart to first served recommendation <= 10 s from snapshot (1M events, 10k books)"
KINDS = ["view", "click", "like", "rating", "purchase"]
KIND_P = [0.40, 0.30, 0.10, 0.15, 0.05]


def synthetic_events(n: int, users: int, items: list[str], *, seed: int, start: float, span: float) -> list:
    """``n`` events, time-ordered over ``span`` seconds from ``start`` (see module docstring)."""
    from liverec import Event

    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, len(items) + 1) ** 1.1
    item_of = rng.permutation(len(items))[rng.choice(len(items), size=n, p=pop / pop.sum())]
    user_of = rng.integers(users, size=n)
    kind_of = rng.choice(len(KINDS), size=n, p=KIND_P)
    stars = rng.integers(1, 6, size=n)
    ts = np.sort(start + rng.random(n) * span)
    return [
        Event(user=f"u{user_of[j]}", item=items[item_of[j]], kind=KINDS[kind_of[j]],
              value=float(stars[j]) if kind_of[j] == 3 else 1.0, timestamp=float(ts[j]), id=f"e{seed}-{j}")
        for j in range(n)
    ]


def build(url: str, empty_url: str, n_events: int, n_tail: int, users: int, probe: list[str]) -> dict:
    """Write the store (catalog, log, snapshot, tail); returns the writer's figures and lists."""
    from liverec import Engine, Settings

    items, vectors = common.book_vectors()
    enc = common.PrecomputedEncoder(dict(zip(common.rendered_texts(items), vectors)))
    quiet = Settings(encoder_progress=False, snapshot_every_events=0, snapshot_interval_s=0)
    with Engine.open(empty_url, settings=quiet, encoder=enc) as floor_engine:
        floor_engine.add_items(items)
    ids = [it.id for it in items]
    now = time.time() - 3600
    out: dict = {}
    with Engine.open(url, settings=quiet, encoder=enc) as eng:
        eng.add_items(items)
        t0 = time.perf_counter()
        log = synthetic_events(n_events, users, ids, seed=1, start=now - 30 * 86400, span=30 * 86400 - 7200)
        for i in range(0, len(log), 20_000):
            eng.record_many(log[i : i + 20_000], learn=False)
        out["ingest_s"] = time.perf_counter() - t0
        del log
        t0 = time.perf_counter()
        eng.fit()
        out["fit_and_snapshot_s"] = time.perf_counter() - t0
        w = eng.snapshots.last_write
        assert w is not None, "the fit wrote no snapshot"
        out["snapshot_bytes"], out["snapshot_write_s"] = int(w["bytes"]), w["seconds"]
        out["snapshot_log_seq"] = int(w["log_seq"])
        t0 = time.perf_counter()
        eng.record_many(synthetic_events(n_tail, users, ids, seed=2, start=now - 7000, span=6000))
        out["tail_learn_s"] = time.perf_counter() - t0
        out["log_events"] = eng.store.count_events()
        t0 = time.perf_counter()
        assert eng.snapshot() is not None  # the scheduled path: serialised under the engine lock
        w = eng.snapshots.last_write
        out["scheduled_snapshot_s"] = time.perf_counter() - t0
        out["scheduled_lock_s"] = out["scheduled_snapshot_s"] - w["seconds"]
        eng.snapshots.repo.delete(eng.snapshots.repo.list()[0])  # restart from the fit's, with the tail
        out["lists"] = {u: [r.item for r in eng.recommend(u, k=10, log=False, explain=False)] for u in probe}
    return out


def restart(url: str, keep: int, probe: list[str]) -> dict:
    """Spawn a fresh process that opens ``url`` and serves ``probe``'s lists; its timings."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__, "--restart", url, "--keep", str(keep), "--probe", ",".join(probe)],
        capture_output=True, text=True, check=True,
    )
    wall = time.perf_counter() - t0
    got = json.loads(p.stdout.strip().splitlines()[-1])
    for line in p.stderr.splitlines():
        if "refused" in line or "re-fitting" in line:
            console.print(f"restart (keep={keep}): {line.strip()}")
    return {**got, "spawn_to_first_rec_s": wall - got["after_first_rec_s"]}


def _restart_child(url: str, keep: int, probe: list[str]) -> None:
    t_import = time.perf_counter()
    from liverec import Engine, Settings

    imported = time.perf_counter() - t_import
    from liverec.lifecycle import Lifecycle
    from liverec.snapshot import Snapshots
    from liverec.store.snapshots import StoreSnapshots

    parts = {"load_snapshot_s": 0.0, "read_body_s": 0.0, "replay_tail_s": 0.0, "refit_s": 0.0}
    _time_calls(Lifecycle, "rebuild", parts, "refit_s")
    _time_calls(Snapshots, "newest", parts, "load_snapshot_s")  # read + unpickle
    _time_calls(StoreSnapshots, "read", parts, "read_body_s")  # of which the read from the store
    _time_calls(Lifecycle, "replay", parts, "replay_tail_s")
    t0 = time.perf_counter()
    eng = Engine.open(url, settings=Settings(encoder_progress=False, snapshot_keep=keep,
                                             snapshot_every_events=0, snapshot_interval_s=0))
    opened = time.perf_counter() - t0
    first = [r.item for r in eng.recommend(probe[0], k=10, log=False, explain=False)]
    first_rec = time.perf_counter() - t0
    t_after = time.perf_counter()
    lists = {probe[0]: first, **{u: [r.item for r in eng.recommend(u, k=10, log=False, explain=False)]
                                 for u in probe[1:]}}
    after = time.perf_counter() - t_after
    # VmHWM: this process's own peak (ru_maxrss would include the parent's, inherited at fork).
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    peak_mb = int(hwm.split()[1]) / 1024
    print(json.dumps({**parts, "peak_rss_mb": peak_mb, "import_s": imported, "open_s": opened, "open_to_first_rec_s": first_rec,
                      "from_snapshot": parts["refit_s"] == 0.0, "lists": lists,
                      "after_first_rec_s": after}))
    # no close(): a restart benchmark stops at the first answer; the process exits here


def _time_calls(cls: type, name: str, into: dict, key: str) -> None:
    """Add the wall time of every ``cls.name(...)`` call to ``into[key]`` (this process only)."""
    inner = getattr(cls, name)

    def timed(*a, **kw):
        t = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            into[key] += time.perf_counter() - t

    setattr(cls, name, timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--tail", type=int, default=5_000, help="events learned after the snapshot")
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temp dir)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--restart", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=int, default=3, help=argparse.SUPPRESS)
    ap.add_argument("--probe", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.restart:
        _restart_child(a.restart, a.keep, a.probe.split(","))
        return
    started = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="liverec-snap-"))
    url = a.store or f"sqlite:///{tmp / 'rec.db'}"
    empty_url = f"sqlite:///{tmp / 'catalog-only.db'}"
    probe = ["u0", "u1", "u17", "u4242", "nobody"]
    console.print(f"building: {a.events:,} events + {a.tail:,} tail over 10,000 books in {url} ...")
    built = build(url, empty_url, a.events, a.tail, a.users, probe)
    snap = restart(url, 3, probe)
    full = restart(url, 0, probe)
    floor = restart(empty_url, 3, probe)
    assert snap["from_snapshot"] and not full["from_snapshot"]
    rows = [
        ("log events (snapshot at / total)", f"{built['snapshot_log_seq']:,} / {built['log_events']:,}"),
        ("snapshot size MB", built["snapshot_bytes"] / 1e6),
        ("snapshot write s", built["snapshot_write_s"]),
        ("fit + snapshot s (writer)", built["fit_and_snapshot_s"]),
        ("scheduled snapshot s (of which serialising under the lock)",
         f"{built['scheduled_snapshot_s']:.2f} ({built['scheduled_lock_s']:.2f})"),
        ("tail learned live s (events/s)",
         f"{built['tail_learn_s']:.2f} ({(built['log_events'] - built['snapshot_log_seq']) / built['tail_learn_s']:,.0f})"),
        ("restart from snapshot: spawn -> first rec s", snap["spawn_to_first_rec_s"]),
        ("  of which Engine.open + first rec s", snap["open_to_first_rec_s"]),
        ("    of which read body / unpickle s / replay tail s (per-user tables decode in replay)",
         f"{snap['read_body_s']:.2f} / {snap['load_snapshot_s'] - snap['read_body_s']:.2f} / {snap['replay_tail_s']:.2f}"),
        ("restart full replay: spawn -> first rec s", full["spawn_to_first_rec_s"]),
        ("  of which Engine.open + first rec s", full["open_to_first_rec_s"]),
        ("floor (catalog, no events): spawn -> first rec s", floor["spawn_to_first_rec_s"]),
        ("import liverec s (snapshot process)", snap["import_s"]),
        ("peak RSS MB: snapshot / full replay / floor process",
         f"{snap['peak_rss_mb']:,.0f} / {full['peak_rss_mb']:,.0f} / {floor['peak_rss_mb']:,.0f}"),
        ("speed-up from snapshot (spawn -> first rec)", full["spawn_to_first_rec_s"] / snap["spawn_to_first_rec_s"]),
        ("lists equal the writer's: snapshot / full replay",
         f"{snap['lists'] == built['lists']} / {full['lists'] == built['lists']}"),
        ("target met (<= 10 s from snapshot)", str(snap["spawn_to_first_rec_s"] <= 10.0)),
    ]
    console.print(kv_table("restart to first recommendation", rows, caption=TARGET))
    for name, r in (("snapshot", snap), ("full replay", full)):
        for u in probe:
            if r["lists"][u] != built["lists"][u]:
                console.print(f"{name}: {u} served {r['lists'][u]}, the writer {built['lists'][u]}")
    common.write_json(
        a.json, benchmark="snapshot", target=TARGET,
        config={"events": a.events, "tail": a.tail, "users": a.users, "store": url.split(":")[0], "books": 10_000},
        results={"writer": {k: v for k, v in built.items() if k != "lists"}, "from_snapshot": snap,
                 "full_replay": full, "floor": floor},
        started=started,
    )
    if not a.store:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
