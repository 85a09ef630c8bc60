"""Memory each default learner keeps per user (what every replica holds, fleet mode or not).

Setup (the same as ``bench_fleet_state.py``): a SQLite file store with ``--items`` shipped
goodbooks books and a seed log of ``--seed-events`` clicks from ``--seed-users`` users;
the default engine fits every source on it. Then ``--users`` new users with
``--events-per-user`` events each (random books, kinds click/like/view) are learned by each
default learner on its own, with Python's ``tracemalloc`` counting what the learner
allocated and kept; the figure is that divided by the number of users. The user state
(recent events; what fleet mode moves to Redis) is measured the same way. The last column
measures each learner as the engine builds it with ``Settings(user_tables=False)``, fitted on
the same seed log: learners that can read users from their recent events
(``users_from_events``) keep no per-user table then (the neighbour sources, whose item side
then learns at fits only, by their own source setting ``{"user_tables": false}``); the
others are the same learner.
A fit still keeps part of what it learned per user it saw (its user x item matrix, so that
an erasure takes a user out), and the item side grows with the events it counts: the third
column is what each ``user_tables=False`` learner fitted on the seed log plus the new users'
events holds more than one fitted on the seed log alone, per new user (``tracemalloc`` over
each fit): what a replica grows by per user once a re-fit includes them.

    .venv/bin/python benchmarks/bench_user_memory.py --users 5000
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import Any

import common
from bench_fleet_state import build_store, user_events
from common import console
from rich.table import Table

TARGET = "per-user memory of each default learner (replica memory that grows with users)"


def kept_bytes(fn) -> int:  # type: ignore[no-untyped-def]
    """Bytes allocated by ``fn()`` and still held after it returns (and a full GC)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    fn()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--events-per-user", type=int, default=5)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--seed-users", type=int, default=2000)
    ap.add_argument("--seed-events", type=int, default=20_000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_user_memory", TARGET)
    from liverec import Engine
    from liverec.lifecycle import make_learner, source_params
    from liverec.models import InteractionLog
    from liverec.settings import Settings
    from liverec.store import Store

    with tempfile.TemporaryDirectory(prefix="liverec-usermem-") as tmp:
        url, ids = build_store(Path(tmp) / "store.db", args.items, args.seed_users, args.seed_events)
        items, vecs = common.book_vectors(quiet=True)
        enc = common.PrecomputedEncoder.for_items(items[: args.items], vecs[: args.items])
        s = Settings(store=url, encoder_progress=False, snapshot_keep=0, log_impressions=False)
        with Engine(Store.open(url), s, enc) as eng:
            # New users (ids after the seed log's), the same events for every learner.
            events = [replace(e, user="new-" + e.user, id=f"new-{e.id}")
                      for e in user_events(args.users, args.events_per_user, ids, seed=3)]
            per_user: dict[str, float] = {}
            fleet: dict[str, float] = {}
            fitted: dict[str, float] = {}
            bare_settings = s.model_copy(update={"user_tables": False})
            seed = [e for _, e in eng.store.iter_events()]
            log = InteractionLog.from_events(seed, eng.catalog)
            log_with_users = InteractionLog.from_events(seed + events, eng.catalog)
            for name, model in eng.learners.items():
                per_user[name] = kept_bytes(lambda m=model: [m.learn_one(e) for e in events]) / args.users

                def bare(on: InteractionLog, name: str = name) -> Any:
                    params = dict(source_params(s, None)[name])
                    if type(eng.learners[name]).users_from_events:  # the neighbour sources: by their own setting
                        params["user_tables"] = False
                    return make_learner(bare_settings, name, params, eng.feedback).fit(on)

                if type(model).users_from_events:
                    fleet[name] = kept_bytes(lambda m=bare(log): [m.learn_one(e) for e in events]) / args.users
                else:
                    fleet[name] = per_user[name]
                held: list[Any] = []
                fitted[name] = (kept_bytes(lambda: held.append(bare(log_with_users)))
                                - kept_bytes(lambda: held.append(bare(log)))) / args.users
                held.clear()
            cat = eng.catalog
            per_user["user state (recent events)"] = kept_bytes(
                lambda: [eng.state.apply(e, cat.get_idx(e.item)) for e in events]) / args.users
    rows = [(name, f"{b / 1024:.2f} KB", f"{fleet[name] / 1024:.2f} KB" if name in fleet else "(Redis in fleet mode)",
             f"{fitted[name] / 1024:.2f} KB" if name in fitted else "")
            for name, b in sorted(per_user.items(), key=lambda kv: -kv[1])]
    learners = sum(b for n, b in per_user.items() if not n.startswith("user state"))
    in_fleet = sum(fleet.values())
    in_fit = sum(fitted.values())
    rows.append(("all learners", f"{learners / 1024:.2f} KB", f"{in_fleet / 1024:.2f} KB", f"{in_fit / 1024:.2f} KB"))
    table = Table(title=f"kept per user in replica memory ({args.users:,} users × {args.events_per_user} events)")
    for col in ("", "user_tables=True (default)", "user_tables=False", "user_tables=False, a fit with them: more"):
        table.add_column(col, justify="left" if not col else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    common.write_json(args.json, benchmark="bench_user_memory", target=TARGET, config=vars(args),
                      results={"bytes_per_user": per_user, "learners_bytes_per_user": learners,
                               "fleet_bytes_per_user": fleet, "fleet_learners_bytes_per_user": in_fleet,
                               "fitted_bytes_per_user": fitted, "fitted_learners_bytes_per_user": in_fit},
                      started=started)


if __name__ == "__main__":
    main()
