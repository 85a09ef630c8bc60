"""recommend latency with ANN retrieval at 10k / 100k (/ 1M) items, and its recall vs exact.

Target: "recommend p99 <= 5 ms at 100k items (ANN), measured with recall@10 vs exact".

Catalog: the 10,000 real goodbooks books (real all-MiniLM-L6-v2 vectors) plus, above
10k, SYNTHETIC items whose vectors are noisy mixtures of two real book vectors (see
common.synthetic_catalog) -- no corpus of 100k real texts ships with liverec. Items
are added through a PrecomputedEncoder (no model run). Store: a SQLite file in a temp
dir (default durability). Settings: exact_index_max_items=20000 (ANN above it),
log_impressions=False (this measures retrieval+ranking; bench_record_recommend measures
impression logging).

Per size:
* index build time (the HNSW graph is built lazily by the first search);
* recommend(user, k=10) latency over ``--requests`` users who each have 5 clicks
  (recorded with record_many; each user's clicks are an anchor book plus 4 of its 20
  nearest neighbours -- a coherent session, not 5 random items);
* recall@10 of the two-stage list vs the exact path's list. Both come from the same
  engine and the same learners, batch-fitted on the recorded log (as Engine.open does):
  the exact path is the engine with an index whose threshold is above the catalog size,
  so every live item is scored and min-max normalised over the catalog -- what the
  engine does below exact_index_max_items. Two more lists split the gap: the two-stage
  path with the index searching exactly (same candidate generation, no ANN error) ->
  "pure ANN loss" vs "candidate generation". One more row compares the lists served
  before the batch fit (every learner as learned event by event: EASE without a fitted
  B) with the exact path after it, the way earlier versions of this benchmark compared
  two engines;
* where the exact top-10 is lost (two-stage only): per source, the share of the exact
  top-10 in its candidates, of its own top-10 in its candidates, and the error of the
  minimum it normalises with (its floor) vs its true catalog minimum; for the union,
  its share of the exact top-10 and the recall of the union fused with exact
  catalog-wide min/max (the best scoring only the union can do);
* served recall and latency for other ``candidates_per_source`` values (--sweep-candidates);
* raw VectorIndex.search latency (ANN and exact) on the users' query vectors, with raw
  recall@10 of the HNSW search;
* the per-request costs that grow with the catalog even on the ANN path (diagnostic).

    .venv/bin/python benchmarks/bench_ann.py --sizes 10000,100000 --json out/ann.json
    .venv/bin/python benchmarks/bench_ann.py --million      # adds 1,000,000: ~10 GB RAM, long
"""

from __future__ import annotations

import argparse
import gc
import resource
import tempfile
import time

import numpy as np

import common
from common import Stopwatch, console, kv_table, latency, latency_table

TARGET = "recommend p99 <= 5 ms at 100k items (ANN), measured with recall@10 vs exact"
FLOOR = "floor: one exact mat-vec + argpartition over the catalog"


def coherent_clicks(vecs: np.ndarray, n_users: int, clicks: int, rng: np.random.Generator,
                    pool: int = 20) -> np.ndarray:
    """(n_users, clicks) dense indices: an anchor item + (clicks-1) of its ``pool`` nearest."""
    anchors = rng.choice(len(vecs), size=n_users, replace=False)
    out = np.empty((n_users, clicks), dtype=np.int64)
    for s in range(0, n_users, 64):
        a = anchors[s: s + 64]
        sims = vecs @ vecs[a].T  # (n, chunk)
        sims[a, np.arange(len(a))] = -np.inf
        near = np.argpartition(-sims, pool, axis=0)[:pool].T  # (chunk, pool)
        for j, row in enumerate(near):
            out[s + j, 0] = a[j]
            out[s + j, 1:] = rng.choice(row, size=clicks - 1, replace=False)
    return out


def recall_at(a: list[str] | np.ndarray, b: list[str] | np.ndarray) -> float:
    """|a ∩ b| / |b| (b = the reference list)."""
    b = list(b)
    return len(set(list(a)) & set(b)) / len(b) if len(b) else 1.0


def time_calls(fn, args_list, warm: int = 20) -> list[float]:
    for a in args_list[:warm]:
        fn(a)
    out = []
    for a in args_list:
        t0 = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t0)
    return out


def source_breakdown(eng, users: list[str], k: int) -> dict[str, dict[str, float]]:
    """Per source, over ``users``: where the exact path's top-``k`` is lost on the two-stage path.

    The exact top-``k`` here is by fused score over every unseen live item, each source
    min-max normalised over them (the slate's rules, e.g. the title-word cap, come after
    and are left out, so every figure is about retrieval and scoring alone).

    * ``in candidates``: share of the exact top-k in the source's candidate list;
    * ``own top-k``: share of the source's own top-k (every unseen live item scored) in it;
    * ``floor error``: |floor used - catalog minimum| / catalog range (0 = the two-stage
      normalisation is the exact one);
    and for the union: its share of the exact top-k, its size, and the recall of the
    union fused with every source's exact catalog-wide min/max (what scoring only the
    union can reach at best).
    """
    from liverec.rank import ranker
    from liverec.rank.index import top_k

    cat, learners, index = eng.catalog, eng.learners, eng.index
    w = eng._weights(None)
    names = [n for n in learners if w.get(n, 0.0) > 0]
    live = cat.alive_idx()
    acc: dict[str, dict[str, list[float]]] = {n: {"in candidates": [], f"own top-{k}": [], "floor error": []}
                                              for n in names + ["union"]}
    acc["union"] = {"in candidates": [], "size": [], "union fused with exact min/max": []}
    for u in users:
        state, seen = eng.user_state(u), eng.state.seen(u)
        n = max(k, eng.pipeline.per_source()) + len(seen)
        seen_a = np.fromiter(seen, dtype=np.int64, count=len(seen))
        unseen = live[~np.isin(live, seen_a)]
        union, floor = ranker.retrieve_with_floors(state, learners, w, cat, index, n)  # as served
        union = union[~np.isin(union, seen_a)]
        at = np.searchsorted(unseen, union)
        full = {name: np.asarray(learners[name].score(state, cat.from_idx(unseen)), dtype=np.float64)
                for name in names}
        exact = np.zeros(len(unseen))
        for name, s in full.items():
            exact += w[name] * ranker.minmax(s)
        want = set(unseen[top_k(exact, k)].tolist())
        fused = np.zeros(len(union))
        for name in names:
            full_s = full[name]
            c = ranker.source_candidates(learners[name], state, cat, index, n)
            c = set() if c is None else set(c.tolist())
            acc[name]["in candidates"].append(len(want & c) / len(want))
            own = set(unseen[top_k(full_s, k)].tolist())
            acc[name][f"own top-{k}"].append(len(own & c) / max(len(own), 1))
            lo, hi = float(full_s.min()), float(full_s.max())
            used = min(floor.get(name, np.inf), float(full_s[at].min()) if len(at) else np.inf)
            acc[name]["floor error"].append(abs(used - lo) / (hi - lo) if hi - lo > 1e-12 else 0.0)
            if hi - lo > 1e-12:
                fused += w[name] * (full_s[at] - lo) / (hi - lo)
        acc["union"]["in candidates"].append(len(want & set(union.tolist())) / len(want))
        acc["union"]["size"].append(float(len(union)))
        top = set(union[top_k(fused, k)].tolist())
        acc["union"]["union fused with exact min/max"].append(len(want & top) / len(want))
    return {n: {m: float(np.mean(v)) for m, v in d.items() if v} for n, d in acc.items()}


def candidates_trial(eng, users: list[str], exact: dict[str, list[str]], n: int,
                     floors: bool = True) -> dict[str, float]:
    """Served recall@10 and latency with ``candidates_per_source = n`` (the same engine);
    ``floors=False``: min-max over the retrieved candidates, as before floors existed."""
    from liverec.rank import ranker

    saved, saved_retrieve = eng.pipeline.settings, ranker.retrieve_with_floors
    eng.pipeline.settings = saved.model_copy(update={"candidates_per_source": n})
    if not floors:
        ranker.retrieve_with_floors = lambda *a, **kw: (ranker.retrieve(*a, **kw), {})
    try:
        got, wall = {}, []
        for u in users:
            recs, s, _ = common.timed(eng.recommend, u, k=10)
            got[u] = [r.item for r in recs]
            wall.append(s)
    finally:
        eng.pipeline.settings, ranker.retrieve_with_floors = saved, saved_retrieve
    return {"served recall@10": float(np.mean([recall_at(got[u], exact[u]) for u in users])), **latency(wall)}


def breakdown_table(title: str, rows: dict[str, dict[str, float]]):
    from rich.table import Table

    cols = sorted({m for d in rows.values() for m in d}, key=lambda m: (m != "in candidates", m))
    t = Table(title=title)
    t.add_column("source")
    for c in cols:
        t.add_column(c, justify="right")
    for name, d in rows.items():
        t.add_row(name, *(f"{d[c]:.3f}" if c in d and c != "size" else (f"{d[c]:.0f}" if c in d else "")
                          for c in cols))
    return t


def run_size(size: int, args: argparse.Namespace) -> dict:
    from liverec import Engine, Event
    from liverec.rank.index import VectorIndex
    from liverec.settings import Settings

    rng = np.random.default_rng(args.seed)
    console.rule(f"{size:,} items")
    with Stopwatch() as sw_cat:
        items, vecs = common.synthetic_catalog(size, seed=args.seed)
    enc = common.PrecomputedEncoder.for_items(items, vecs)
    n_syn = max(0, size - common.N_REAL_BOOKS)
    console.print(f"catalog: {size - n_syn:,} real books + {n_syn:,} synthetic items ({sw_cat.seconds:.1f} s to build)")
    if n_syn:
        console.print(f"[yellow]note:[/] {common.SYNTHETIC_NOTE}")

    tmp = tempfile.TemporaryDirectory(prefix="liverec-bench-ann-", dir=args.dir)
    url = f"sqlite:///{tmp.name}/ann.sqlite"
    extra = {} if args.candidates_per_source is None else {"candidates_per_source": args.candidates_per_source}
    settings = Settings(exact_index_max_items=args.exact_max, log_impressions=False, encoder_progress=False, **extra)
    eng = Engine.open(url, settings=settings, encoder=enc)
    # Settings has no HNSW knobs and Engine.__init__ builds VectorIndex(catalog,
    # exact_max_items=...) with the usearch defaults, so the benchmark replaces the index
    # (before any item is added) to apply --connectivity / --expansion-add / --expansion-search.
    eng.index = VectorIndex(eng.catalog, exact_max_items=args.exact_max, connectivity=args.connectivity,
                            expansion_add=args.expansion_add, expansion_search=args.expansion_search,
                            center=eng.index.center, dtype=args.ann_dtype)
    add_s = common.add_items_in_batches(eng, items)
    mode = "ANN (usearch HNSW)" if eng.index.uses_ann else "exact (below exact_index_max_items)"
    console.print(f"add_items: {add_s:.1f} s; engine retrieval: {mode}")

    # A separate HNSW index over the same catalog for the raw-search figures when the
    # engine itself is exact (size <= exact_max); otherwise the engine's own index.
    if eng.index.uses_ann:
        ann_index = eng.index
    else:
        ann_index = VectorIndex(eng.catalog, exact_max_items=0, connectivity=args.connectivity,
                                expansion_add=args.expansion_add, expansion_search=args.expansion_search,
                                center=eng.index.center, dtype=args.ann_dtype)
    probe = vecs[0].copy()
    with Stopwatch() as sw_build:
        ann_index.search(probe, 10)  # first search syncs (builds) the whole graph
    console.print(f"HNSW build ({size:,} vectors, connectivity={args.connectivity}, "
                  f"expansion_add={args.expansion_add}, 2 threads): {sw_build.seconds:.1f} s")

    # ------------------------------------------------------------ users + clicks
    n_users = min(args.requests, size // 2)
    users = [f"u{i}" for i in range(n_users)]
    clicks = coherent_clicks(vecs, n_users, args.clicks, rng)
    t = time.time() - 2 * 86_400.0
    events = []
    for u, row in zip(users, clicks):
        for j in row:
            t += 1.0
            events.append(Event(user=u, item=items[int(j)].id, kind="click", timestamp=t))
    with Stopwatch() as sw_rec:
        for s in range(0, len(events), 1000):
            eng.record_many(events[s: s + 1000])
    console.print(f"recorded {len(events):,} clicks ({n_users:,} users x {args.clicks}) with record_many "
                  f"in {sw_rec.seconds:.2f} s")

    # Served lists on the state as learned event by event (for the row that compares it
    # with the exact path after a batch fit, as earlier runs of this benchmark did).
    order = [users[i] for i in rng.permutation(n_users)]
    n_recall = min(args.recall_users or n_users, n_users)
    if size > 200_000 and args.recall_users is None:
        n_recall = min(n_recall, 200)
        console.print(f"[yellow]note:[/] scoring every item per user at {size:,} items is slow; recall on "
                      f"{n_recall} users (set --recall-users to change)")
    recall_users = order[:n_recall]
    incremental_lists = {u: [r.item for r in eng.recommend(u, k=10)] for u in recall_users}
    # Batch-fit every learner on the recorded log, as Engine.open and Engine.fit do: EASE's
    # B and ALS's factors come from a batch fit, so served and exact lists share one state.
    with Stopwatch() as sw_fit:
        eng.fit()
    console.print(f"fit (batch, every source) on the recorded log: {sw_fit.seconds:.1f} s")
    cal = eng.candidate_calibration
    calibration = cal.to_json() if cal is not None else None
    console.print(f"candidates per source in use: {eng.pipeline.per_source()}"
                  + (f" (calibrated on {cal.users} users in {cal.seconds:.1f} s of the fit: served recall@10 by count "
                     f"{calibration['recall']}, target {cal.target})" if cal is not None else " (set or default)"))

    # ------------------------------------------------------------ recommend latency
    for u in order[:50]:  # warm-up (caches, allocator); unmeasured
        eng.recommend(u, k=10)
    gc.collect()
    ann_lists: dict[str, list[str]] = {}
    reco_s, reco_cpu = [], []
    for u in order:
        recs, wall, cpu = common.timed(eng.recommend, u, k=10)
        reco_s.append(wall)
        reco_cpu.append(cpu)
        ann_lists[u] = [r.item for r in recs]
    lat = {f"recommend k=10, {mode}": latency(reco_s), "  (CPU time of those requests)": latency(reco_cpu)}
    # The floor: what a single pass over the catalog costs on this machine, in this run
    # (one exact mat-vec over every item vector + argpartition for the top 10).
    cat_vecs = eng.catalog.vectors
    content_a = eng.learners["content"]
    floor_q = [content_a.query_vector(eng.user_state(u)) for u in order]
    lat[FLOOR] = latency(time_calls(
        lambda q: np.argpartition(-(cat_vecs @ q), 10)[:10], floor_q))
    common.print_load(" (during the recommend measurements)")
    stages = common.recommend_stages(eng, order, 10, rng=rng, n=min(len(order), 500))

    # ------------------------------------------------------------ exact path
    # The exact engine: the same learners, every live item scored and min-max normalised
    # over the catalog -- what the engine does below exact_index_max_items. (The same
    # engine with an exact index, so model state cannot differ between the two paths.)
    class ExactRetrievalIndex(VectorIndex):
        """Keeps the two-stage path (uses_ann stays True) but searches exactly."""

        def search(self, query, n, *, exact=None):  # noqa: ANN001
            return super().search(query, n, exact=True)

    saved = eng.index
    exact_lists, exact_s, excand_lists = {}, [], {}
    eng.index = VectorIndex(eng.catalog, exact_max_items=len(eng.catalog) + 1, center=saved.center)
    try:
        for u in recall_users:
            t0 = time.perf_counter()
            recs = eng.recommend(u, k=10)
            exact_s.append(time.perf_counter() - t0)
            exact_lists[u] = [r.item for r in recs]
        if saved.uses_ann:
            eng.index = ExactRetrievalIndex(eng.catalog, exact_max_items=args.exact_max, center=saved.center)
            eng.index.mean_ = saved.mean_
            for u in recall_users:
                excand_lists[u] = [r.item for r in eng.recommend(u, k=10)]
        else:
            excand_lists = {u: ann_lists[u] for u in recall_users}
    finally:
        eng.index = saved
    lat["recommend k=10, exact path (scores every item)"] = latency(exact_s)

    rec_total = float(np.mean([recall_at(ann_lists[u], exact_lists[u]) for u in recall_users]))
    rec_pure = float(np.mean([recall_at(ann_lists[u], excand_lists[u]) for u in recall_users]))
    rec_cand = float(np.mean([recall_at(excand_lists[u], exact_lists[u]) for u in recall_users]))
    rec_incr = float(np.mean([recall_at(incremental_lists[u], exact_lists[u]) for u in recall_users]))
    identical = float(np.mean([ann_lists[u] == exact_lists[u] for u in recall_users]))
    per_source = source_breakdown(eng, recall_users, 10) if saved.uses_ann else {}
    sweep = {}
    for n in (int(v) for v in args.sweep_candidates.split(",") if v.strip()) if saved.uses_ann else ():
        sweep[f"candidates_per_source={n}"] = candidates_trial(eng, recall_users, exact_lists, n)
    if saved.uses_ann:
        cps = eng.pipeline.per_source()
        sweep[f"candidates_per_source={cps}, min-max over the candidates (no floors)"] = candidates_trial(
            eng, recall_users, exact_lists, cps, floors=False)

    # ------------------------------------------------------------ raw index search
    queries = [content_a.query_vector(eng.user_state(u)) for u in order]
    n_cand = eng.pipeline.per_source() + args.clicks  # what the engine asks for
    raw = {}
    for n in (10, n_cand):
        raw[f"ANN search n={n}"] = latency(time_calls(lambda q, n=n: ann_index.search(q, n), queries))
        raw[f"exact search n={n}"] = latency(time_calls(lambda q, n=n: ann_index.search(q, n, exact=True), queries))
    raw_recall = float(np.mean([recall_at(ann_index.search(q, 10)[0], ann_index.search(q, 10, exact=True)[0])
                                for q in queries]))
    raw_recall_cand = float(np.mean([
        recall_at(ann_index.search(q, n_cand)[0], ann_index.search(q, n_cand, exact=True)[0]) for q in queries]))

    # ------------------------------------------- per-request work that grows with n
    st = eng.user_state(order[0])
    diag = {}
    diag["catalog.n_alive (alive.sum(); >= 2 per request)"] = latency(
        time_calls(lambda _: eng.catalog.n_alive, range(500)))

    def sync_noop(_):
        with ann_index._lock:
            ann_index._sync_ann()

    diag["VectorIndex._sync_ann() with nothing to do (every ANN search)"] = latency(time_calls(sync_noop, range(500)))
    # Each source's own retrieval (Retriever.candidates) for the same users: the part of a
    # request that must not grow with the catalog.
    from liverec.models.base import Retriever

    for name, model in eng.learners.items():
        if isinstance(model, Retriever):
            sts = [eng.user_state(u) for u in order[:300]]
            diag[f"{name}.candidates(n={n_cand})"] = latency(
                time_calls(lambda s, m=model: m.candidates(s, n_cand), sts))
    diag["ContentProfile.query_vector"] = latency(
        time_calls(lambda _: content_a.query_vector(st), range(500)))

    # ------------------------------------------------------------ print
    console.print(latency_table(f"recommend latency, {size:,} items", lat,
                                caption=f"{len(order):,} users with {args.clicks} clicks each; log_impressions off; "
                                        "target p99 <= 5 ms at 100k"))
    console.print(common.stages_table(f"recommend stages, {size:,} items (diagnostic, timed separately)", stages))
    console.print(kv_table(f"recall@10 vs exact, {size:,} items ({n_recall} users)", [
        ("served recall@10: two-stage vs exact path (same learners)", rec_total),
        ("  pure ANN loss: ANN vs exact search, same candidate generation", rec_pure),
        ("  candidate generation: exact-search candidates vs full scan", rec_cand),
        ("identical top-10 lists (two-stage vs exact)", identical),
        ("served before the batch fit vs exact after it (how earlier runs compared)", rec_incr),
        ("raw HNSW recall@10 (VectorIndex.search)", raw_recall),
        (f"raw HNSW recall@{n_cand} (the engine's candidate count)", raw_recall_cand),
    ], caption="engine mode: " + mode))
    if sweep:
        console.print(kv_table(f"candidates per source: served recall@10 and recommend latency, {size:,} items", [
            (name, f"recall {r['served recall@10']:.3f}, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms")
            for name, r in sweep.items()
        ], caption=f"{n_recall} users, one request each, reasons on"))
    if per_source:
        console.print(breakdown_table(f"where the exact top-10 is lost, {size:,} items ({n_recall} users)", per_source))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    console.print(f"peak resident memory of this process so far: {rss:.2f} GiB")
    console.print(latency_table(f"raw VectorIndex.search, {size:,} items", raw,
                                caption=f"{len(queries):,} user query vectors; expansion_search={args.expansion_search}"))
    console.print(latency_table(f"per-request costs that scale with the catalog, {size:,} items (diagnostic)", diag))

    out = {
        "size": size, "real_items": size - n_syn, "synthetic_items": n_syn, "engine_mode": mode,
        "add_items_seconds": add_s, "hnsw_build_seconds": sw_build.seconds,
        "record_many_seconds": sw_rec.seconds, "events": len(events), "users": n_users,
        "fit_seconds": sw_fit.seconds, "candidate_calibration": calibration, "candidates_sweep": sweep, "peak_rss_gib": rss, "per_source": per_source,
        "recall_at_10_served_before_fit_vs_exact": rec_incr,
        "latency": lat, "recommend_stages": stages, "raw_search": raw, "per_request_diagnostics": diag,
        "recall_users": n_recall,
        "recall_at_10_engine_ann_vs_exact": rec_total,
        "recall_at_10_pure_ann_loss": rec_pure,
        "recall_at_10_candidate_generation": rec_cand,
        "identical_lists_fraction": identical,
        "raw_hnsw_recall_at_10": raw_recall,
        f"raw_hnsw_recall_at_{n_cand}": raw_recall_cand,
    }
    eng.close()
    eng = ann_index = enc = items = vecs = None  # noqa: F841 - free the 1M-item state before the next size
    gc.collect()
    tmp.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="comma-separated catalog sizes")
    ap.add_argument("--million", action="store_true",
                    help="also run 1,000,000 items (about 10 GB of RAM and tens of minutes on 2 cores)")
    ap.add_argument("--requests", type=int, default=1000, help="users (each with --clicks clicks), one request each")
    ap.add_argument("--clicks", type=int, default=5)
    ap.add_argument("--recall-users", type=int, default=None,
                    help="users for recall (default: all, capped at 200 above 200k items)")
    ap.add_argument("--exact-max", type=int, default=20_000, help="exact_index_max_items of the ANN engine")
    ap.add_argument("--connectivity", type=int, default=16, help="usearch HNSW connectivity (M)")
    ap.add_argument("--expansion-add", type=int, default=128, help="usearch HNSW expansion_add (efConstruction)")
    ap.add_argument("--expansion-search", type=int, default=128, help="usearch HNSW expansion_search (ef)")
    ap.add_argument("--ann-dtype", default="i8", choices=["i8", "f16", "f32"],
                    help="precision of the vectors inside the HNSW graphs (Settings.ann_dtype)")
    ap.add_argument("--candidates-per-source", type=int, default=None,
                    help="Settings.candidates_per_source (default: unset, calibrated after the fit); the ANN search "
                         "asks usearch for this many + the user's seen items")
    ap.add_argument("--sweep-candidates", default="50,100,200",
                    help="also measure served recall and latency with these candidates_per_source values")
    ap.add_argument("--dir", default=None, help="parent directory for the temp SQLite files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="write every figure + machine info here")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.million and 1_000_000 not in sizes:
        sizes.append(1_000_000)
    started = time.time()
    common.print_header("bench_ann", TARGET)
    if max(sizes) >= 1_000_000:
        console.print("[bold yellow]warning:[/] 1,000,000 items needs ~10 GB of RAM (two engines' catalogs, the "
                      "HNSW graph, the vector cache) and tens of minutes on 2 cores.")
    results = [run_size(s, args) for s in sizes]

    summary = kv_table("summary", [
        (f"{r['size']:,}: recommend p50 / p99 ms / served recall@10 / floor p50 / p99 ms",
         f"{r['latency'][next(iter(r['latency']))]['p50_ms']:.2f} / "
         f"{r['latency'][next(iter(r['latency']))]['p99_ms']:.2f} (CPU p99 "
         f"{r['latency']['  (CPU time of those requests)']['p99_ms']:.2f}) / "
         f"{r['recall_at_10_engine_ann_vs_exact']:.3f} / {r['latency'][FLOOR]['p50_ms']:.2f} / "
         f"{r['latency'][FLOOR]['p99_ms']:.2f}  ({r['engine_mode']})")
        for r in results
    ], caption="target: p99 <= 5 ms at 100k items")
    console.print(summary)
    common.write_json(
        args.json, benchmark="bench_ann", target=TARGET, started=started,
        config={**vars(args), "sizes": sizes, "log_impressions": False,
                "vectors": "10k real all-MiniLM-L6-v2 goodbooks vectors; beyond 10k synthetic mixtures",
                "synthetic_note": common.SYNTHETIC_NOTE},
        results={"sizes": results},
        notes=[common.SYNTHETIC_NOTE,
               "the HNSW parameters are applied by replacing engine.index (Settings has no HNSW fields)"],
    )


if __name__ == "__main__":
    main()
