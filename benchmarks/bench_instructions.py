"""CPU instructions one in-process ``recommend`` (or one learned event) costs, counted by valgrind's callgrind.

Wall-clock figures on a shared 2-core machine move by 10-40% between runs of the same
code, more than most single changes to the request path gain. An instruction count barely
does: callgrind counts what the program executes, whatever else the machine does (two counts
of the same code here differed by 0.4%: each run fits its own engine and Python's hashing
and collections vary a little). It is no substitute for time -- a memory-bound matrix-vector
product costs more time per instruction than a Python loop -- but it tells whether a
change made a request do less.

Setup: the store of ``bench_http.py`` (the 10,000 goodbooks books with their real vectors,
``--users`` users with ``--warm-events`` simulated clicks; 50,000 is that benchmark's
starting store, 250,000 about its store after the write scenarios, ~125 books a user), the
default engine fitted on it natively and its snapshot written; then a child process under
``valgrind --tool=callgrind --instr-atstart=no`` restores that snapshot, asks 10 lists to warm
up, switches counting on (``callgrind_control -i on``), asks ``--requests`` lists
(``recommend(user, k=10)``, reasons on, impressions off: their writer is a thread of its own)
and switches it off. With ``--ref DIR`` (another checkout's ``src``) the same is done with
that code, each with its own snapshot, so a change is compared in one run.

``--work learn`` counts learning instead: ``--requests`` clicks recorded one by one
(``Engine.record``: validated, appended to the log in a transaction of its own, learned by
every source before it returns), then as many in batches of 500 (``Engine.record_many``),
each reported per event (same seed, so both checkouts learn the same clicks).

    .venv/bin/python benchmarks/bench_instructions.py --warm-events 250000
    .venv/bin/python benchmarks/bench_instructions.py --warm-events 250000 --ref /tmp/before/src
    .venv/bin/python benchmarks/bench_instructions.py --work learn --requests 1000 --ref /tmp/before/src
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from common import console, kv_table

TARGET = "a count to compare changes by (no target of its own); the issue's targets are in wall time"

CHILD = r"""
import os, random, subprocess, sys
sys.path.insert(0, {bench!r})
import common
from liverec import Engine, Event
from liverec.settings import Settings
from liverec.store import Store

url, users, requests, mode, what = {url!r}, {users}, {requests}, {mode!r}, {what!r}
items, vectors = common.book_vectors(quiet=True)
enc = common.PrecomputedEncoder.for_items(items, vectors)
s = Settings(store=url, encoder_progress=False, popularity_prior="ratings_count", refit_growth=0)
with Engine(Store.open(url), s, enc) as eng:  # natively: fits and writes the snapshot; counted: restores it
    asked = [f"u{{(i * 7919) % users}}" for i in range(requests)]
    for u in asked[:10]:
        eng.recommend(u, k=10, log=False)
    rng = random.Random(1)
    ids = eng.catalog.ids
    clicks = [Event(user=f"u{{rng.randrange(users)}}", item=ids[rng.randrange(len(ids))], kind="click")
              for _ in range(requests + 20)]
    for e in clicks[:20] if what != "recommend" else ():  # warm-up
        eng.record(e)
    clicks = clicks[20:]
    if mode == "count":
        subprocess.run(["callgrind_control", "-i", "on", str(os.getpid())], check=True, capture_output=True)
        if what == "recommend":
            for u in asked:
                eng.recommend(u, k=10, log=False)
        elif what == "record":
            for e in clicks:
                eng.record(e)
        else:
            for a in range(0, len(clicks), 500):
                eng.record_many(clicks[a : a + 500])
        subprocess.run(["callgrind_control", "-i", "off", str(os.getpid())], check=True, capture_output=True)
"""


def run(src: str | None, store: Path, users: int, requests: int, work: Path, tag: str, what: str = "recommend") -> dict:
    """Fit natively (writing the snapshot), then count ``requests`` lists (or learned events:
    ``what`` is "record" or "record_many") under callgrind."""
    db = work / f"{tag}-{what}.db"
    shutil.copy(store, db)
    url = "sqlite:///" + str(db)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    if src:
        env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    bench = str(Path(__file__).resolve().parent)
    for mode in ("fit", "count"):
        code = CHILD.format(bench=bench, url=url, users=users, requests=requests, mode=mode, what=what)
        cmd = [sys.executable, "-c", code]
        if mode == "count":
            out_file = work / f"{tag}-{what}.callgrind"
            cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}", *cmd]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{tag} ({mode}) failed:\n{done.stderr[-3000:]}")
    m = re.search(r"Collected : (\d+)", done.stderr)
    if not m:
        raise RuntimeError(f"callgrind printed no total:\n{done.stderr[-2000:]}")
    total = int(m.group(1))
    return {"instructions": total, "per_request": total / requests}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--warm-events", type=int, default=250_000)
    ap.add_argument("--requests", type=int, default=100, help="lists asked (or events learned, with --work learn)")
    ap.add_argument("--work", choices=("recommend", "learn"), default="recommend")
    ap.add_argument("--ref", default=None, help="another checkout's src directory, counted the same way")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed: apt-get install -y valgrind")
    started = time.time()
    common.print_header("bench_instructions", TARGET)
    import bench_http

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "store.db"
        bench_http.prepare("sqlite:///" + str(store), args.users, args.warm_events, args.seed)
        whats = ("recommend",) if args.work == "recommend" else ("record", "record_many")
        checkouts = [("this code", None)] + ([("--ref", args.ref)] if args.ref else [])
        results = {f"{name}: {what}": run(src, store, args.users, args.requests, work, name.strip("-").replace(" ", "_"), what)
                   for what in whats for name, src in checkouts}
    unit = "request" if args.work == "recommend" else "event"
    rows = [(name, f"{r['per_request'] / 1e6:.3f} M instructions / {unit}") for name, r in results.items()]
    if args.ref:
        for what in whats:
            ratio = results[f"this code: {what}"]["per_request"] / results[f"--ref: {what}"]["per_request"]
            rows.append((f"this code / --ref: {what}", f"{ratio:.3f}"))
    title = ("recommend(k=10), reasons on" if args.work == "recommend"
             else "clicks learned: Engine.record one by one, Engine.record_many 500 at a time")
    console.print(kv_table(f"{title}, {args.warm_events:,} events by {args.users:,} users, "
                           f"10,000 books: {args.requests} counted", rows))
    common.write_json(args.json, benchmark="bench_instructions", target=TARGET, config=vars(args), results=results,
                      started=started)


if __name__ == "__main__":
    main()
