"""Datasets for ``liverec eval``: items (with text) and events, from a path the user gives.

MovieLens is never shipped (its licence); pass its folder. goodbooks uses the shipped
catalog with your ratings file (goodbooks-10k ``ratings.csv``: user_id, book_id,
rating — no timestamps, so row order is used as time). ``generic`` reads a folder with
``items.csv|jsonl`` and ``events.csv|jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..data import load_events, load_goodbooks, load_items, load_movielens
from ..errors import ValidationError
from ..types import Event, Item

DATASETS = ("movielens", "goodbooks", "generic")


@dataclass(frozen=True)
class Dataset:
    name: str
    items: list[Item]
    events: list[Event]


def _need(path: str | Path | None, name: str) -> Path:
    if path is None:
        raise ValidationError(
            f"--data PATH is required for the {name} dataset (liverec does not download or ship it).",
            field="data",
        )
    p = Path(path)
    if not p.exists():
        raise ValidationError(f"--data {p} does not exist.", field="data")
    return p


def _first(folder: Path, stem: str) -> Path:
    for suffix in (".csv", ".jsonl", ".json", ".csv.gz", ".jsonl.gz"):
        if (folder / f"{stem}{suffix}").exists():
            return folder / f"{stem}{suffix}"
    raise ValidationError(f"{folder} has no {stem}.csv or {stem}.jsonl file.", field="data")


def load_dataset(name: str, path: str | Path | None = None, *, max_events: int | None = None) -> Dataset:
    """Load a named dataset; ``max_events`` keeps the earliest N events (quick runs)."""
    if name == "movielens":
        items, events = load_movielens(_need(path, name))
    elif name == "goodbooks":
        p = _need(path, name)
        ratings = p / "ratings.csv" if p.is_dir() else p
        import pandas as pd

        df = pd.read_csv(ratings)
        missing = {"user_id", "book_id", "rating"} - set(df.columns)
        if missing:
            raise ValidationError(f"{ratings} lacks columns {sorted(missing)} (goodbooks ratings.csv).", field="data")
        items = load_goodbooks()
        events = [
            Event(user=str(u), item=str(b), kind="rating", value=float(r), timestamp=float(n), id=f"gb:{u}:{b}")
            for n, (u, b, r) in enumerate(zip(df.user_id, df.book_id, df.rating))
        ]
    elif name == "generic":
        p = _need(path, name)
        items, events = load_items(_first(p, "items")), load_events(_first(p, "events"))
    else:
        raise ValidationError(f"unknown dataset {name!r}; use one of {DATASETS}.", field="dataset")
    if max_events is not None:
        events = sorted(events, key=lambda e: (e.timestamp, e.id))[:max_events]
    known = {it.id for it in items}
    unknown = {e.item for e in events} - known
    if unknown:
        raise ValidationError(
            f"{len(unknown)} event items are not in the {name} catalog (e.g. {sorted(unknown)[:3]}).", field="data"
        )
    return Dataset(name, items, events)
