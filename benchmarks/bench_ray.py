"""Tuning on Ray: wall time of ``Engine.tune(ray=...)`` on a 1-node and a 2-node cluster, same seed.

Setup: an in-memory engine with the first ``--items`` shipped goodbooks books (encoded
once by the shipped all-MiniLM-L6-v2) and ``--users`` synthetic users of ``--events-per-user``
events each, generated here: each user has a taste (a random book); an event is one of
the 50 books nearest that taste (50%), a Zipf-popular book (30%) or the book after the
previous one (20%); every fourth event is a 1-5 rating, the others clicks. Default
settings and sources. The tuner runs its whole plan (``--budget`` large enough that no
batch is skipped) with seed ``--seed``:

- ``local``: ``Engine.tune()`` in this process, no Ray;
- ``ray, 1 node``: a local Ray cluster of one node with 1 CPU (``ray.cluster_utils.Cluster``);
- ``ray, 2 nodes``: the same plus a second node with 1 CPU, as separate processes.

All nodes run on this machine and share its cores: on a 2-core machine the 2-node cluster
is "two processes on two shared cores", not two machines. Connecting to a cluster is timed
apart from tuning. The chosen configuration (sources, weights, feedback reading, score) and
every trial's score must be identical in the three runs: the benchmark asserts it.

    .venv/bin/python benchmarks/bench_ray.py --json benchmarks/.cache/ray.json
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

import common  # noqa: F401  (environment defaults first)
import numpy as np
from common import PrecomputedEncoder, console, kv_table, print_header, rendered_texts, write_json

from liverec import Engine, Event, Item
from liverec.data import load_goodbooks
from liverec.encode import SentenceTransformerEncoder
from liverec.jobs import RayJobs
from liverec.rank.tuner import TunedConfig

T0 = 1_700_000_000.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_events(vectors: np.ndarray, ids: list[str], users: int, per_user: int, seed: int) -> list[Event]:
    """Taste neighbours, popular books and sequels (see the module docstring)."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    popular = rng.zipf(1.3, size=users * per_user) % n
    out: list[Event] = []
    for u in range(users):
        taste = vectors[int(rng.integers(0, n))]
        near = np.argsort(-(vectors @ taste))[:50]
        at = int(near[0])
        for s in range(per_user):
            r = rng.random()
            at = int(rng.choice(near)) if r < 0.5 else int(popular[u * per_user + s]) if r < 0.8 else (at + 1) % n
            kind, value = ("rating", float(rng.integers(1, 6))) if s % 4 == 3 else ("click", 1.0)
            out.append(Event(user=f"u{u}", item=ids[at], kind=kind, value=value,
                             timestamp=T0 + 3600 * s + u, id=f"e{u}-{s}"))
    return out


def _same(a: TunedConfig, b: TunedConfig) -> bool:
    def trials(t: TunedConfig) -> list[dict[str, Any]]:
        return [{k: v for k, v in x.items() if k != "seconds"} for x in t.trials]

    return (a.sources, a.weights, a.feedback, a.score, trials(a)) == (b.sources, b.weights, b.feedback, b.score,
                                                                       trials(b))


def engine(books: list[Item], vectors: np.ndarray, events: list[Event]) -> Engine:
    """A fresh in-memory engine with the books (their vectors looked up) and the log: nothing tuned yet."""
    eng = Engine.open(encoder=PrecomputedEncoder.for_items(books, vectors))
    eng.add_items(books)
    eng.record_many(events, learn=False)
    return eng


def on_cluster(eng: Engine, nodes: int, budget: float, seed: int) -> tuple[TunedConfig, float, float]:
    """(tuned, connect seconds, tune seconds) on a fresh local cluster of ``nodes`` 1-CPU nodes."""
    import ray
    from ray.cluster_utils import Cluster

    node = {"num_cpus": 1, "object_store_memory": 300 * 1024**2}
    cluster = Cluster(initialize_head=True,
                      head_node_args={**node, "include_dashboard": False, "gcs_server_port": _free_port()})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        t = time.perf_counter()
        RayJobs(cluster.address)  # joins the cluster; tune reuses the connection
        connect = time.perf_counter() - t
        t = time.perf_counter()
        tuned = eng.tune(budget=budget, seed=seed, refit=False, ray=cluster.address)
        return tuned, connect, time.perf_counter() - t
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=800)
    ap.add_argument("--users", type=int, default=1500)
    ap.add_argument("--events-per-user", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget", type=float, default=3600.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    started = time.time()
    print_header("tuning on Ray: 1 node vs 2 nodes", "identical configuration; wall time reported")

    books = load_goodbooks(limit=args.items)
    vectors = SentenceTransformerEncoder().encode(rendered_texts(books))
    ids = [b.id for b in books]
    events = synthetic_events(vectors, ids, args.users, args.events_per_user, args.seed)
    eng = engine(books, vectors, events)
    console.print(f"{len(ids):,} books, {len(events):,} events, sources {', '.join(eng.learners)}")

    runs: dict[str, dict[str, Any]] = {}
    t = time.perf_counter()
    local = eng.tune(budget=args.budget, seed=args.seed, refit=False)
    runs["local"] = {"tune_s": time.perf_counter() - t, "connect_s": 0.0, "tuned": local}
    eng.close()
    for nodes in (1, 2):
        with engine(books, vectors, events) as eng:  # each run starts from the same, untuned engine
            tuned, connect, seconds = on_cluster(eng, nodes, args.budget, args.seed)
        runs[f"ray, {nodes} node{'s' * (nodes > 1)}"] = {"tune_s": seconds, "connect_s": connect, "tuned": tuned}

    for name, run in runs.items():
        assert not run["tuned"].stopped_by_budget, f"{name}: stopped by the budget; raise --budget"
        assert _same(run["tuned"], local), f"{name} chose another configuration than the local run"
    rows = [(name, f"tuning {r['tune_s']:.1f} s (+ {r['connect_s']:.1f} s joining the cluster)")
            for name, r in runs.items()]
    rows += [("trials", len(local.trials)), ("validation score (same in all runs)", local.score),
             ("speed-up, 2 nodes over 1 node", f"{runs['ray, 1 node']['tune_s'] / runs['ray, 2 nodes']['tune_s']:.2f}x")]
    console.print(kv_table("tuning wall time (every node on this machine's shared cores)", rows))
    write_json(
        args.json, benchmark="bench_ray", target="identical configuration on 1 and 2 nodes; wall time",
        config=vars(args),
        results={name: {"tune_s": r["tune_s"], "connect_s": r["connect_s"]} for name, r in runs.items()}
        | {"trials": len(local.trials), "score": local.score, "sources": local.sources, "weights": local.weights},
        started=started,
        notes=["all Ray nodes are processes on this machine sharing its cores (1 CPU each as Ray resources)"],
    )


if __name__ == "__main__":
    main()
