"""A seeded generator of MovieLens-format data at any size, for scale runs.

Writes a folder with ``ratings.csv`` (userId,movieId,rating,timestamp), ``movies.csv``
(movieId,title,genres) and ``tags.csv`` (its header only), like ml-latest-small / ML-1M.
The catalogue is the real titles and genres of the ml-latest-small movies with the most
ratings (read from ``--source``); the ratings are synthetic. The output is for local runs
only: never commit it.

usage (from the project root):
  .venv/bin/python benchmarks/synthetic_movielens.py \\
      --source /work/shared/data/ml-latest-small --out /tmp/ml1m/ml-latest-small
  # ML-1M size by default: 6,040 users, 3,700 movies, ~1,000,000 ratings, stars 1-5.
  # A tenth of it, same catalogue and ratings per user:
  .venv/bin/python benchmarks/synthetic_movielens.py --source ... --out /tmp/ml100k/ml-latest-small \\
      --users 604 --ratings 100000
  # then e.g. movielens_eval.py --data /tmp/ml1m --dataset ml-latest-small (its loader knows that name)

How the ratings are made (every draw comes from one ``numpy`` generator seeded by ``--seed``):

* Genres get random unit vectors in a ``--dim``-dimensional taste space; an item's latent
  vector is the mean of its genres' vectors plus noise of its own.
* Each user has 1-3 favourite genres (drawn by how common the genre is) and a taste
  vector: the mean of those genres' vectors plus personal noise.
* Popularity is long-tailed: Zipf-like weight ``(rank + 10) ** -zipf`` over the source
  ranking by number of ratings.
* Ratings per user: 20 + a log-normal amount (long tail, ML-1M's minimum of 20), scaled so
  the total is about ``--ratings``; never more than half the catalogue (the excess goes
  to the other users).
* A user's order of discovery is a sample without replacement (Gumbel top-k) from
  ``softmax(taste . item / temperature + 0.5 x favourite-genre match + log popularity)``.
* A catalogue-wide "often watched after" relation: each item has ``--successors`` next
  items, its nearest in taste space among a popularity-weighted noisy draw. With
  probability ``--follow`` the next movie is an unseen successor of the previous one
  (sequence signal); otherwise the user's next unseen movie in discovery order.
* Time: users start at different times over the first 80% of ``--years`` years from
  ``--start``; ratings come in sessions (geometric length, mean ``--session``), 20 s - 10 min
  apart within a session, sessions an exponential gap (mean 1-30 days per user) apart,
  shrunk where needed so that every rating falls within the period.
* Stars: ``taste . item`` (standardised) + favourite-genre match + item quality + user
  bias + noise, cut at global quantiles to ML-1M's star shares (6/11/26/35/22%).

It prints users, items rated, ratings, ratings-per-user quantiles and the star histogram.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

# ML-1M's share of 1..5 stars (rounded).
STAR_SHARES = np.array([0.06, 0.11, 0.26, 0.35, 0.22])


def load_catalogue(source: Path, n_items: int) -> pd.DataFrame:
    """The ``n_items`` movies with the most ratings in ``source``, most rated first."""
    movies = pd.read_csv(source / "movies.csv")
    counts = pd.read_csv(source / "ratings.csv").groupby("movieId").size().rename("n")
    movies = movies.join(counts, on="movieId").fillna({"n": 0})
    movies = movies.sort_values(["n", "movieId"], ascending=[False, True], kind="stable")
    if n_items > len(movies):
        raise SystemExit(f"--items {n_items}: the source has only {len(movies)} movies")
    return movies.head(n_items)[["movieId", "title", "genres"]].reset_index(drop=True)


def genre_matrix(genres: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Items x genres 0/1 matrix (``(no genres listed)`` is a genre of its own)."""
    names = sorted({g for s in genres for g in s.split("|")})
    col = {g: k for k, g in enumerate(names)}
    g = np.zeros((len(genres), len(names)), dtype=np.float32)
    for row, s in enumerate(genres):
        for name in s.split("|"):
            g[row, col[name]] = 1.0
    return g, names


def successors(v: np.ndarray, logpop: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Items x k "often watched after" table: nearest in taste space, popularity-weighted, noisy."""
    out = np.empty((len(v), k), dtype=np.int64)
    for lo in range(0, len(v), 1024):
        s = v[lo:lo + 1024] @ v.T * 4.0 + 0.5 * logpop[None, :]
        s += rng.gumbel(size=s.shape)
        s[np.arange(s.shape[0]), np.arange(lo, lo + s.shape[0])] = -np.inf
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1)
        out[lo:lo + 1024] = np.take_along_axis(top, order, axis=1)
    return out


def ratings_per_user(n_users: int, n_ratings: int, n_items: int, rng: np.random.Generator) -> np.ndarray:
    extra = rng.lognormal(mean=0.0, sigma=1.1, size=n_users)
    cap = max(n_items // 2, 20)
    n = np.full(n_users, 20, dtype=np.int64)
    for _ in range(5):  # what the cap cuts off goes to the users below it
        want = n_ratings - int(n.sum())
        room = n < cap
        if want <= 0 or not room.any():
            break
        n[room] += np.floor(extra[room] / extra[room].sum() * want).astype(np.int64)
        n = np.minimum(n, cap)
    return n


def user_timestamps(n: int, start: float, period: float, mean_session: float,
                    rng: np.random.Generator) -> np.ndarray:
    """``n`` increasing timestamps in sessions, from a start in the first 80% of the period
    (session gaps shrink so that the last rating falls within the period)."""
    t0 = start + rng.uniform(0, 0.8 * period)
    new_session = rng.random(n) < 1.0 / mean_session
    new_session[0] = False
    gaps = rng.exponential(rng.uniform(1, 30) * 86400, n) * new_session
    steps = rng.uniform(20, 600, n) * ~new_session
    steps[0] = 0.0
    room = start + period - t0 - steps.sum()
    if gaps.sum() > room:
        gaps *= max(room, 0.0) / gaps.sum()
    return (t0 + np.cumsum(steps + gaps)).astype(np.int64)


def generate(a: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    rng = np.random.default_rng(a.seed)
    movies = load_catalogue(a.source, a.items)
    n_items = len(movies)
    g, _ = genre_matrix(movies["genres"])
    gvec = rng.normal(size=(g.shape[1], a.dim))
    gvec /= np.linalg.norm(gvec, axis=1, keepdims=True)
    v = (g @ gvec) / g.sum(1, keepdims=True) + 0.5 * rng.normal(size=(n_items, a.dim)) / np.sqrt(a.dim)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    logpop = np.log((np.arange(n_items) + 10.0) ** -a.zipf)
    logpop -= logpop.max()
    quality = rng.normal(0, 0.5, n_items)
    succ = successors(v, logpop, a.successors, rng)

    genre_share = g.sum(0) / g.sum()
    n_per_user = ratings_per_user(a.users, a.ratings, n_items, rng)
    period = a.years * 365.25 * 86400
    start = pd.Timestamp(a.start, tz="UTC").timestamp()
    users, items, raw, stamps = [], [], [], []
    follows = 0
    for uid in range(1, a.users + 1):
        n = int(n_per_user[uid - 1])
        fav = rng.choice(g.shape[1], size=rng.integers(1, 4), replace=False, p=genre_share)
        taste = gvec[fav].mean(0) + 0.7 * rng.normal(size=a.dim) / np.sqrt(a.dim)
        taste /= np.linalg.norm(taste)
        match = v @ taste
        genre_hit = g[:, fav].max(1)
        order = np.argsort(-(match / a.temperature + 0.5 * genre_hit + logpop + rng.gumbel(size=n_items)))
        seen = np.zeros(n_items, dtype=bool)
        seq = np.empty(n, dtype=np.int64)
        pos = 0
        for step in range(n):
            nxt = -1
            if step and rng.random() < a.follow:
                cands = succ[seq[step - 1]]
                cands = cands[~seen[cands]]
                if len(cands):
                    nxt = int(cands[min(int(rng.geometric(0.4)) - 1, len(cands) - 1)])
                    follows += 1
            if nxt < 0:
                while seen[order[pos]]:
                    pos += 1
                nxt = int(order[pos])
            seen[nxt] = True
            seq[step] = nxt
        score = (2.0 * match[seq] + 0.6 * genre_hit[seq] + quality[seq]
                 + rng.normal(0, 0.4) + rng.normal(0, 0.6, n))
        users.append(np.full(n, uid))
        items.append(seq)
        raw.append(score)
        stamps.append(user_timestamps(n, start, period, a.session, rng))
    raw_all = np.concatenate(raw)
    cuts = np.quantile(raw_all, np.cumsum(STAR_SHARES)[:-1])
    item_idx = np.concatenate(items)
    ratings = pd.DataFrame({
        "userId": np.concatenate(users),
        "movieId": movies["movieId"].to_numpy()[item_idx],
        "rating": np.searchsorted(cuts, raw_all) + 1,
        "timestamp": np.concatenate(stamps),
    })
    return ratings, movies, follows / max(len(ratings) - a.users, 1)


def summary(ratings: pd.DataFrame, follow_share: float) -> None:
    per_user = ratings.groupby("userId").size()
    q = per_user.quantile([0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0])
    print(f"users {ratings['userId'].nunique():,}  items rated {ratings['movieId'].nunique():,}  "
          f"ratings {len(ratings):,}")
    print("ratings/user quantiles: " + "  ".join(f"p{int(k * 100)} {int(x)}" for k, x in q.items()))
    per_item = ratings.groupby("movieId").size().sort_values(ascending=False)
    top = per_item.head(max(len(per_item) // 10, 1)).sum() / len(ratings)
    print(f"ratings/item: max {per_item.max():,}  median {int(per_item.median())}  "
          f"top 10% of items hold {top:.0%} of ratings")
    hist = ratings["rating"].value_counts().sort_index()
    print("stars: " + "  ".join(f"{s}: {c:,} ({c / len(ratings):.0%})" for s, c in hist.items()))
    span = pd.to_datetime(ratings["timestamp"].agg(["min", "max"]), unit="s")
    print(f"time {span.iloc[0]:%Y-%m-%d} .. {span.iloc[1]:%Y-%m-%d}; "
          f"{follow_share:.0%} of next ratings follow the 'often watched after' relation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, required=True, help="an ml-latest-small folder (movies.csv, ratings.csv)")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    ap.add_argument("--users", type=int, default=6040)
    ap.add_argument("--items", type=int, default=3700)
    ap.add_argument("--ratings", type=int, default=1_000_000, help="about this many in all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=16, help="taste-space dimensions")
    ap.add_argument("--zipf", type=float, default=1.0, help="popularity exponent")
    ap.add_argument("--temperature", type=float, default=0.25, help="taste sharpness in discovery order")
    ap.add_argument("--follow", type=float, default=0.4, help="chance the next movie is a successor of the last")
    ap.add_argument("--successors", type=int, default=10, help="'often watched after' items per movie")
    ap.add_argument("--session", type=float, default=8.0, help="mean ratings per session")
    ap.add_argument("--start", default="2000-04-25")
    ap.add_argument("--years", type=float, default=3.0)
    a = ap.parse_args()
    t0 = time.time()
    ratings, movies, follow_share = generate(a)
    a.out.mkdir(parents=True, exist_ok=True)
    ratings.sort_values(["userId", "timestamp"], kind="stable").to_csv(a.out / "ratings.csv", index=False)
    movies.to_csv(a.out / "movies.csv", index=False)
    (a.out / "tags.csv").write_text("userId,movieId,tag,timestamp\n")
    summary(ratings, follow_share)
    print(f"wrote {a.out} in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
