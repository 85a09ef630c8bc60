"""How long a serving thread is kept waiting while a background re-fit runs in the same process.

A thread sleeps 1 ms in a loop while ``Engine.fit(background=True)`` fits every default source
(10k books, the HTTP benchmark's warm-up events) in a child process and swaps them in; each
iteration's overshoot past 1 ms is time the thread could not run (the GIL held by the fit's
parent side, or the CPU taken). Also the wall time of each step the parent runs itself
(``fit_in_child``: waiting for the child that reads the log, fits and makes the snapshot body),
and which of them each pause over 20 ms overlapped.
The floor row is the same loop with no fit running, measured in the same run.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_refit_pauses.py [--events 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from typing import Any, Callable

import bench_http
import common
import numpy as np

TARGET = "no pause of a serving thread longer than a request's budget (30 ms) while a background re-fit runs"


def pauses(run: Callable[[], Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """Overshoots (s) of a 1-ms sleep loop while ``run()`` runs here, when each ended
    (``perf_counter``), and the wall time of ``run()``."""
    out: list[tuple[float, float]] = []
    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            t = time.perf_counter()
            time.sleep(0.001)
            end = time.perf_counter()
            out.append((end - t - 0.001, end))

    th = threading.Thread(target=tick)
    th.start()
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    got = np.array(out).reshape(-1, 2)
    return got[:, 0], got[:, 1], wall


def long_pauses_by_step(
    overshoots: np.ndarray, ends: np.ndarray, spans: list[tuple[str, float, float]], limit: float = 0.02,
) -> list[tuple[str, str]]:
    """Per step of the parent (or "between steps"): how many pauses longer than ``limit`` overlapped
    it, and the longest."""
    found: dict[str, list[float]] = {}
    for pause, end in zip(overshoots, ends):
        if pause <= limit:
            continue
        start = end - pause - 0.001
        names = [n for n, a, b in spans if a < end and b > start] or ["between steps"]
        found.setdefault(" + ".join(dict.fromkeys(names)), []).append(pause)
    return [(f"> {limit * 1000:.0f} ms during {k}", f"{len(v)}, longest {max(v) * 1000:.0f} ms")
            for k, v in found.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    common.print_header("bench_refit_pauses", TARGET)
    from liverec import Engine
    from liverec import jobs as jobs_mod
    from liverec import lifecycle as life_mod
    from liverec.settings import Settings
    from liverec.store import Store

    db = "sqlite:///" + tempfile.mkdtemp(prefix="liverec-refit-") + "/r.db"
    bench_http.prepare(db, args.users, args.events, 0)
    items, vectors = common.book_vectors(quiet=True)
    enc = common.PrecomputedEncoder.for_items(items, vectors)
    eng = Engine(Store.open(db), Settings(store=db, encoder_progress=False, popularity_prior="ratings_count"), enc)
    eng.fit()
    steps: list[tuple[str, float, float]] = []  # (name, start, end) of each call

    def timed_step(owner: Any, name: str) -> None:
        f = getattr(owner, name)

        def g(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return f(*a, **k)
            finally:
                steps.append((name, t, time.perf_counter()))

        setattr(owner, name, g)

    # The parent's steps (those the code under test has): a fit from the store has the child read
    # the log and make the snapshot body, and loads the model set from it here.
    for name in ("read_log", "fit_in_child", "load_model_set", "capture", "swap_in", "replay", "write_snapshot"):
        if hasattr(eng.lifecycle, name):
            timed_step(eng.lifecycle, name)
    timed_step(life_mod, "fit_learners")
    timed_step(jobs_mod, "_send")  # the parent pickling what the child gets, and writing it
    timed_step(jobs_mod, "_receive")  # from the child's start to its results read back
    timed_step(jobs_mod.subprocess, "Popen")  # starting the child process
    floor, _, _ = pauses(lambda: time.sleep(5))
    during, ends, wall = pauses(lambda: eng.fit(background=True).join())  # type: ignore[union-attr]
    rows = {"floor: nothing running (5 s)": common.percentiles(floor),
            f"background re-fit ({wall:.1f} s)": common.percentiles(during)}
    common.console.print(common.latency_table("serving thread: overshoot of a 1-ms sleep", rows))
    common.console.print(common.kv_table("the parent's steps", [(n, f"{(b - a) * 1000:.0f} ms") for n, a, b in steps] + [
        ("pauses > 20 ms during the fit", str(int((during > 0.02).sum()))),
        ("longest pause", f"{during.max() * 1000:.0f} ms"),
    ] + long_pauses_by_step(during, ends, steps)))
    common.write_json(args.json, benchmark="bench_refit_pauses", target=TARGET, config=vars(args),
                      results={"floor": rows["floor: nothing running (5 s)"], "during": list(rows.values())[1],
                               "steps_ms": {n: (b - a) * 1000 for n, a, b in steps}, "wall_s": wall,
                               "longest_pause_ms": float(during.max() * 1000)}, started=started)
    eng.close()


if __name__ == "__main__":
    main()
