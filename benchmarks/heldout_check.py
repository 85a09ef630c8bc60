"""Held-out check of the self-tuning fit: tune on users with even ids, measure on users with odd ids.

The protocols and baselines are the outside check's (`../shared/tools/movielens_eval.py`, imported
from there, so the split and the baselines are exactly its own); liverec goes through its public API
with ratings sent as ratings. The configuration is chosen with `Engine.tune(users=even)`: the odd
users' events are still in the training log (as in any deployment), but none of them is ever held
out for validation, so the choice is not fitted to the users it is measured on.

usage (from the project root):
  .venv/bin/python benchmarks/heldout_check.py --protocol static|stream [--tools ../shared/tools] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def even(u: str) -> bool:
    return int(u) % 2 == 0


def engine(M, items, events):
    from liverec import Engine, Event, Item

    eng = Engine.open()
    eng.add_items([Item(id=str(i), text=t) for i, t in zip(items["item"], items["text"])])
    eng.record_many([Event(user=str(u), item=str(i), kind="rating", value=float(v), timestamp=float(t),
                           id=f"{u}-{i}-{t}") for u, i, v, t in events[["user", "item", "rating", "ts"]].itertuples(index=False)],
                    learn=False)
    t0 = time.time()
    tuned = eng.tune(budget=300, users=even)
    return eng, tuned, time.time() - t0, Event


def by_parity(values: dict[int, list[float]]) -> dict[str, float]:
    return {"all": round(float(np.mean(values[0] + values[1])), 4), "odd": round(float(np.mean(values[1])), 4),
            "even": round(float(np.mean(values[0])), 4)}


def static(M, r, items) -> dict:
    train, test = M.split_static(r)
    targets = test.groupby("user")["item"].apply(list)
    idx = M.Index(sorted(r["user"].unique()), sorted(r["item"].unique()))
    X = idx.matrix(train)
    lam = M.tune("ease", train, idx)["lam"]
    ease = M.EASE(lam=lam).fit(X)
    base = {0: [], 1: []}
    for u, its in targets.items():
        ranked = idx.items[M.topk(ease.scores(X, idx.u[u]), X[idx.u[u]].indices, 10)]
        base[u % 2].append(M.recall_ndcg(list(ranked), its, 10)[1])
    eng, tuned, secs, _ = engine(M, items, train)
    mine = {0: [], 1: []}
    for u, its in targets.items():
        ranked = [int(x.item) for x in eng.recommend(str(u), k=10, log=False)]
        mine[u % 2].append(M.recall_ndcg(ranked, its, 10)[1])
    return {"metric": "ndcg@10", "liverec": by_parity(mine), "ease": {"lam": lam, **by_parity(base)},
            "tuned": tuned.summary(), "tune_seconds": round(secs, 1)}


def stream(M, r, items, n: int = 20_000) -> dict:
    n0 = int(len(r) * 0.5)
    train, events = r.iloc[:n0], r.iloc[n0:n0 + n]
    W, L = M.run_sknn(r, max_events=n)["params"].values()  # its own tuning on the warm-up
    idx = M.Index(sorted(r["user"].unique()), sorted(r["item"].unique()))
    # The outside check's session-transition kNN, hits split by user parity.
    T = np.zeros((len(idx.items), len(idx.items)), dtype=np.float32)
    seqs: dict = {}
    for u, i in zip(train["user"], train["item"]):
        sq = seqs.setdefault(u, [])
        for d, a in enumerate(reversed(sq[-W:]), start=1):
            T[a, idx.i[i]] += 1.0 / d
        sq.append(idx.i[i])
    counts = np.bincount([idx.i[i] for i in train["item"]], minlength=len(idx.items)).astype(np.float64)
    eng, tuned, secs, Event = engine(M, items, train)
    base, mine = {0: [], 1: []}, {0: [], 1: []}
    for u, i, v, t in events[["user", "item", "rating", "ts"]].itertuples(index=False):
        sq, ii = seqs.setdefault(u, []), idx.i[i]
        if sq:
            s = sum((0.7 ** k) * T[a] / (T[a].sum() + 1.0) for k, a in enumerate(reversed(sq[-L:]))) + 1e-9 * counts
        else:
            s = counts.copy()
        base[u % 2].append(float(ii in set(M.topk(s, np.array(sorted(set(sq)), dtype=int), 10).tolist())))
        mine[u % 2].append(float(str(i) in {x.item for x in eng.recommend(str(u), k=10, log=False)}))
        eng.record(Event(user=str(u), item=str(i), kind="rating", value=float(v), timestamp=float(t), id=f"{u}-{i}-{t}"))
        for d, a in enumerate(reversed(sq[-W:]), start=1):
            T[a, ii] += 1.0 / d
        sq.append(ii)
        counts[ii] += 1
    return {"metric": "hr@10", "predictions": len(events), "liverec": by_parity(mine),
            "sknn": {"W": W, "L": L, **by_parity(base)}, "tuned": tuned.summary(), "tune_seconds": round(secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=("static", "stream"), required=True)
    ap.add_argument("--tools", type=Path, default=Path("../shared/tools"))
    ap.add_argument("--data", type=Path, default=Path("../shared/data"))
    a = ap.parse_args()
    sys.path.insert(0, str(a.tools))
    import movielens_eval as M

    r, items = M.load(a.data, "ml-latest-small")
    out = static(M, r, items) if a.protocol == "static" else stream(M, r, items)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
