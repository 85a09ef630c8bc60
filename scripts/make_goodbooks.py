"""Build the catalog shipped as ``src/liverec/data/goodbooks/books.csv.gz``.

Reads goodbooks-10k's ``books.csv`` (repository zygmuntz/goodbooks-10k, CC BY-SA 4.0),
keeps the columns liverec uses, and writes a deterministic gzip (no file name, mtime 0)
so that re-running it on the same input gives a byte-identical file.

Usage::

    python scripts/make_goodbooks.py /path/to/goodbooks-10k/books.csv [OUT]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from pathlib import Path

KEPT_COLUMNS = (
    "book_id",
    "authors",
    "original_publication_year",
    "original_title",
    "title",
    "language_code",
    "average_rating",
    "ratings_count",
    "image_url",
    "small_image_url",
)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/liverec/data/goodbooks/books.csv.gz"


def make_goodbooks(source: Path, out: Path = DEFAULT_OUT) -> int:
    """Write the kept columns of ``source`` to ``out`` (gzip); return the row count."""
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in KEPT_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SystemExit(f"{source}: missing columns {missing}; pass goodbooks-10k books.csv")
        rows = [{c: row[c] for c in KEPT_COLUMNS} for row in reader]
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=KEPT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:
        gz.write(buf.getvalue().encode("utf-8"))
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="goodbooks-10k books.csv")
    parser.add_argument("out", type=Path, nargs="?", default=DEFAULT_OUT, help="output .csv.gz")
    args = parser.parse_args()
    n = make_goodbooks(args.source, args.out)
    print(f"wrote {n} books to {args.out}")


if __name__ == "__main__":
    main()
