"""Fleet mode: replica memory and recommend latency with per-user state in Redis vs in memory.

Targets: a fleet-mode replica's RSS stays within ±10% from 10k to 1M users; fleet mode
adds <= 1 ms to a recommend's p50 over in-memory user state.

Setup: one SQLite file store with ``--items`` shipped goodbooks books (their real
all-MiniLM-L6-v2 vectors, precomputed) and a seed log of ``--seed-events`` events from
``--seed-users`` users, so every default source is fitted and a recommend does its
usual work. Then, for each user count N in ``--users``, N users with
``--events-per-user`` events each (random books, kinds click/like/view, increasing
timestamps) are given to each replica's user state:

- ``memory``: a fresh replica process (``Engine`` with default settings and sources)
  applies them to its in-memory user state (what replaying the log leaves there).
- ``fleet``: the seed log's and the same users' events are written to Redis
  (``--redis``, a unique key prefix, deleted afterwards) by this process; then a fresh
  replica process opens the engine with ``Settings.state`` set and serves from Redis.

The first ``--seed-users`` of the N users are the seed log's users (``u0``...), and
requests go to them: the learners know them, so each recommend does its full work.

By default only the per-user online state (recent events, seen items, interests,
versions) is populated: the learners are fitted on the seed log and do not learn the N
users, in both modes alike. Learners that keep per-user tables of their own (content,
ease, als, itemknn, transition, tfidf) still hold those in replica memory in fleet mode:
``--learn`` makes every replica's learners learn the N users' events too (as replicas
do from the log), to measure what those tables add; ``--no-user-tables`` opens the fleet
replica with ``Settings(user_tables=False)`` (content, tfidf, ALS and EASE then keep no table
per user); ``--no-user-tables all`` also turns them off in the neighbour sources (itemknn,
transition, sessionknn: their item side then learns at fits only). ``--fleet-only`` skips the
in-memory replica (at 1M users its load is most of the run): the fleet replica's RSS alone.

Each replica reports its RSS (``VmRSS`` after a full GC) once opened and after the users
are loaded and ``--requests`` recommends served (k=10, users drawn from the N, no
impression logging), and the recommend latency (p50/p99 after 50 warm-up requests).
The fleet replica also times, in the same process, its user state read alone
(``RedisUserState.view``: one round trip) and a bare Redis ``GET`` round trip (the floor).
Each recommend's CPU time (this thread's) is reported next to its wall time: on a shared
machine it excludes waiting for a core, which a blocking round trip can add.

    .venv/bin/python benchmarks/bench_fleet_state.py --users 10000,100000,1000000 \\
        --json benchmarks/.cache/fleet_state.json
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import common
from common import console, kv_table

#: Sources that keep their tables under Settings(user_tables=False) unless their own settings say not to.
NEIGHBOURS = ("itemknn", "transition", "sessionknn")

TARGET = "fleet replica RSS within ±10% from 10k to 1M users; recommend p50 + <= 1 ms over in-memory state"
KINDS = ("click", "like", "view")


def user_events(n_users: int, per_user: int, items: list[str], *, seed: int) -> Iterator[Any]:
    """Every event of ``n_users`` users (ids ``u0``...), generated lazily and reproducibly."""
    from liverec import Event

    rng = np.random.default_rng(seed)
    for start in range(0, n_users, 10_000):
        n = min(10_000, n_users - start)
        picks = rng.integers(len(items), size=(n, per_user))
        kinds = rng.integers(len(KINDS), size=(n, per_user))
        for j in range(n):
            u = f"u{start + j}"
            for k in range(per_user):
                yield Event(user=u, item=items[picks[j, k]], kind=KINDS[kinds[j, k]], timestamp=1.7e9 + k,
                            id=f"{u}-{k}")


def rss_mb() -> float:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def build_store(path: Path, n_items: int, seed_users: int, seed_events: int) -> tuple[str, list[str]]:
    """The shared store: ``n_items`` real books, a seed log; returns (url, item ids)."""
    from liverec import Engine, Event
    from liverec.settings import Settings
    from liverec.store import Store

    items, vecs = common.book_vectors(quiet=True)
    items, vecs = items[:n_items], vecs[:n_items]
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    url = f"sqlite:///{path}"
    eng = Engine(Store.open(url), Settings(store=url, encoder_progress=False, snapshot_keep=0), enc)
    eng.add_items(items)
    rng = np.random.default_rng(1)
    ids = [it.id for it in items]
    pop = 1.0 / np.arange(1, len(ids) + 1) ** 1.1
    picks = rng.choice(len(ids), size=seed_events, p=pop / pop.sum())
    users = rng.integers(seed_users, size=seed_events)
    eng.record_many([Event(user=f"u{u}", item=ids[i], kind="click", timestamp=1.6e9 + t, id=f"seed-{t}")
                     for t, (u, i) in enumerate(zip(users, picks))], learn=False)
    eng.close()
    return url, ids


def fill_redis(url: str, prefix: str, store: str, n_users: int, per_user: int, ids: list[str],
               history_length: int) -> float:
    """Write the seed log's and the N users' state to Redis as fleet replicas would; returns seconds."""
    import itertools

    from liverec.state_redis import RedisUserState
    from liverec.store import Store

    st = RedisUserState.open(url, prefix=prefix, history_length=history_length, idx_of=lambda i: 0)
    log = Store.open(store)
    t0 = time.perf_counter()
    with st.batch():
        seed = (e for _, e in log.iter_events())
        for e in itertools.chain(seed, user_events(n_users, per_user, ids, seed=n_users)):
            st.apply(e, 0)
    st.mark_complete()
    st.close()
    log.close()
    return time.perf_counter() - t0


def drop_prefix(url: str, prefix: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    batch = []
    for key in r.scan_iter(match=f"{prefix}:*", count=10_000):
        batch.append(key)
        if len(batch) >= 10_000:
            r.unlink(*batch)
            batch.clear()
    if batch:
        r.unlink(*batch)
    r.close()


# ------------------------------------------------------------------ replica process
def replica(cfg: dict[str, Any]) -> dict[str, Any]:
    """One replica: open, load (memory mode) the users, serve; RSS and latency."""
    from liverec import Engine
    from liverec.settings import Settings
    from liverec.store import Store

    items, vecs = common.book_vectors(quiet=True)
    enc = common.PrecomputedEncoder.for_items(items[:cfg["items"]], vecs[:cfg["items"]])
    fleet = cfg["mode"] == "fleet"
    extra: dict[str, Any] = dict(state=cfg["redis"], state_prefix=cfg["prefix"]) if fleet else {}
    if fleet and cfg["user_tables"] != "kept":
        extra["user_tables"] = False
    if fleet and cfg["user_tables"] == "all":
        extra["sources"] = {**Settings().sources, **{n: {"user_tables": False} for n in NEIGHBOURS}}
    s = Settings(store=cfg["store"], encoder_progress=False, snapshot_keep=0, log_impressions=False, **extra)
    eng = Engine(Store.open(cfg["store"]), s, enc)
    out: dict[str, Any] = {"rss_open_mb": rss_mb()}
    n = cfg["users"]
    t0 = time.perf_counter()
    if cfg["learn"] or not fleet:
        cat, learners = eng.catalog, list(eng.learners.values()) if cfg["learn"] else []
        for e in user_events(n, cfg["per_user"], cfg["ids"], seed=n):
            if not fleet:
                eng.state.apply(e, cat.get_idx(e.item))
            for m in learners:  # what a replica learns from the log, in both modes
                m.learn_one(e)
    out["load_s"] = time.perf_counter() - t0
    rng = np.random.default_rng(7)
    # Users the learners know from the seed log too, so every source does its usual work.
    users = [f"u{j}" for j in rng.integers(min(n, cfg["seed_users"]), size=cfg["requests"] + 50)]
    assert len(eng.user_state(users[0]).history) >= min(cfg["per_user"], s.history_length), "users not loaded"
    times, cpu = [], []
    for u in users:
        c0, t0 = time.thread_time(), time.perf_counter()
        eng.recommend(u, k=10)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    out["recommend"], out["recommend_cpu"] = common.percentiles(times[50:]), common.percentiles(cpu[50:])
    if fleet:
        state = eng.state
        view, get = [], []
        key = f"{cfg['prefix']}:bench:floor"
        state.r.set(key, b"x" * 16)
        for u in users:
            t0 = time.perf_counter()
            state.view(u)
            view.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            state.r.get(key)
            get.append(time.perf_counter() - t0)
        out["state_read"], out["redis_get"] = common.percentiles(view[50:]), common.percentiles(get[50:])
    out["rss_served_mb"] = rss_mb()
    eng.close()
    return out


def run_replica(cfg: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--replica", json.dumps(cfg)], capture_output=True, text=True,
                         cwd=Path(__file__).parent)
    if res.returncode != 0:
        raise RuntimeError(f"replica failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", default="10000,100000,1000000", help="comma-separated user counts")
    ap.add_argument("--events-per-user", type=int, default=5)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--seed-users", type=int, default=2000)
    ap.add_argument("--seed-events", type=int, default=20000)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/14")
    ap.add_argument("--learn", action="store_true",
                    help="the replica's learners also learn the N users' events (their per-user tables)")
    ap.add_argument("--no-user-tables", nargs="?", const="global", choices=("global", "all"), default=None,
                    help="the fleet replica keeps no per-user table in content, tfidf, ALS and EASE (user_tables=False); "
                    "\"all\": in the neighbour sources too")
    ap.add_argument("--fleet-only", action="store_true",
                    help="skip the in-memory replica (its load takes most of a 1M-user run): RSS of the fleet replica only")
    ap.add_argument("--json", default=None)
    ap.add_argument("--replica", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replica:
        print(json.dumps(replica(json.loads(args.replica))))
        return
    from liverec.settings import Settings

    started = time.time()
    common.print_load(" (start)")
    counts = [int(x) for x in args.users.split(",")]
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url, ids = build_store(Path(tmp) / "fleet.db", args.items, args.seed_users, args.seed_events)
        base = dict(store=url, items=args.items, ids=ids, per_user=args.events_per_user, requests=args.requests,
                    redis=args.redis, seed_users=args.seed_users, learn=args.learn,
                    user_tables=args.no_user_tables or "kept")
        for n in counts:
            mem = None if args.fleet_only else run_replica({**base, "mode": "memory", "users": n})
            prefix = f"benchfleet-{uuid.uuid4().hex[:8]}"
            try:
                fill_s = fill_redis(args.redis, prefix, url, n, args.events_per_user, ids, Settings().history_length)
                fleet = run_replica({**base, "mode": "fleet", "users": n, "prefix": prefix})
            finally:
                drop_prefix(args.redis, prefix)
            fleet["fill_s"] = fill_s
            rows[str(n)] = {"memory": mem, "fleet": fleet}
            fp = fleet["recommend"]["p50_ms"]
            console.print(kv_table(f"{n:,} users", [
                ("memory: RSS opened / with users, MB",
                 "not run" if mem is None else f"{mem['rss_open_mb']:.0f} / {mem['rss_served_mb']:.0f}"),
                ("fleet: RSS opened / serving, MB", f"{fleet['rss_open_mb']:.0f} / {fleet['rss_served_mb']:.0f}"),
                ("recommend p50 / p99 ms, memory",
                 "not run" if mem is None else f"{mem['recommend']['p50_ms']:.2f} / {mem['recommend']['p99_ms']:.2f}"),
                ("recommend p50 / p99 ms, fleet", f"{fp:.2f} / {fleet['recommend']['p99_ms']:.2f}"),
                ("added p50 ms (fleet - memory)", "—" if mem is None else f"{fp - mem['recommend']['p50_ms']:+.2f}"),
                ("recommend CPU p50 ms, memory / fleet",
                 f"{'—' if mem is None else format(mem['recommend_cpu']['p50_ms'], '.2f')} / "
                 f"{fleet['recommend_cpu']['p50_ms']:.2f}"),
                ("fleet user state read p50 ms (one round trip)", f"{fleet['state_read']['p50_ms']:.3f}"),
                ("floor: bare Redis GET p50 ms", f"{fleet['redis_get']['p50_ms']:.3f}"),
                ("memory: users loaded in s / fleet: Redis filled in s",
                 f"{'—' if mem is None else format(mem['load_s'], '.1f')} / {fill_s:.1f}"),
                ("learners learned the N users' events", "yes" if args.learn else "no"),
                ("fleet replica: user tables", {None: "kept", "global": "off (user_tables=False)",
                                                "all": "off, neighbour sources too"}[args.no_user_tables]),
            ]))
            common.print_load()
    lo, hi = rows[str(counts[0])]["fleet"]["rss_served_mb"], rows[str(counts[-1])]["fleet"]["rss_served_mb"]
    console.print(f"fleet RSS {counts[0]:,} -> {counts[-1]:,} users: {lo:.0f} -> {hi:.0f} MB ({(hi / lo - 1) * 100:+.1f}%)")
    common.print_load(" (end)")
    common.write_json(args.json, benchmark="bench_fleet_state", target=TARGET, config=vars(args), results=rows,
                      started=started)


if __name__ == "__main__":
    main()
