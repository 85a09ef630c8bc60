"""Load catalogs and feedback from files: generic CSV/JSONL, goodbooks-10k, MovieLens.

Every loader returns plain :class:`~liverec.types.Item` / :class:`~liverec.types.Event`
objects and raises :class:`~liverec.errors.ValidationError` on bad input, naming the
file, the line, the field and the fix. Nothing is stored: hand the result to the engine.

DATASETS
--------
goodbooks-10k
    A real 10,000-book catalog ships inside liverec (``liverec/data/goodbooks``),
    derived from goodbooks-10k by Zygmunt Zając (repository zygmuntz/goodbooks-10k)
    under CC BY-SA 4.0; the derived file keeps that licence (see its README.md).
MovieLens
    MovieLens (GroupLens Research) may be used for research but not redistributed
    outside its own terms, so it must **never** be copied into this project, its
    tests or its packages. :func:`load_movielens` reads it from a folder the user
    downloaded and passes by path.

Examples
--------
>>> from liverec.data import load_goodbooks
>>> books = load_goodbooks(limit=2)
>>> books[1].attributes["authors"]
'J.K. Rowling, Mary GrandPré'
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import IO, Any, Literal

import pandas as pd

from liverec.errors import ValidationError
from liverec.types import Event, Item

__all__ = ["load_events", "load_goodbooks", "load_items", "load_movielens", "read_events", "read_items"]

FileFormat = Literal["csv", "jsonl", "json"]

_EVENT_FIELDS = ("id", "user", "item", "kind", "value", "timestamp", "context")
_INT_RE = re.compile(r"[+-]?(?:0|[1-9][0-9]*)")
_FLOAT_RE = re.compile(r"[+-]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TITLE_YEAR_RE = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:\s*[-–]\s*\d{4})?\)\s*$")
_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_MAX_TAGS = 20


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class _Record:
    """One row of a CSV file or one object of a JSON(L) file.

    CSV values are the raw cell strings (empty cells dropped); JSON values are the
    decoded values (``null`` dropped). ``where`` locates it: ``"line 3"``.
    """

    path: Path
    where: str
    fields: dict[str, Any]
    from_csv: bool

    def error(self, field: str, problem: str, fix: str) -> ValidationError:
        return ValidationError(
            f"{self.path}, {self.where}, field {field!r}: {problem}. Fix: {fix}", field=field
        )


def _resolve_format(path: Path, format: FileFormat | None) -> tuple[FileFormat, bool]:
    """The file format (explicit or from the suffix) and whether it is gzipped."""
    suffixes = [s.lower() for s in path.suffixes]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    if format is not None:
        if format not in ("csv", "jsonl", "json"):
            raise ValidationError(
                f"{path}: unknown format {format!r}. Fix: pass format='csv', 'jsonl' or 'json'.",
                field="format",
            )
        return format, gzipped
    suffix = suffixes[-2] if gzipped and len(suffixes) > 1 else (suffixes[-1] if suffixes else "")
    if suffix in (".csv", ".jsonl", ".json"):
        return suffix[1:], gzipped  # type: ignore[return-value]
    raise ValidationError(
        f"{path}: cannot tell the format from the suffix {''.join(path.suffixes)!r}. "
        "Fix: name the file .csv, .jsonl or .json (optionally .gz), or pass format=.",
        field="format",
    )


def _open_text(path: Path, gzipped: bool) -> IO[str]:
    if not path.is_file():
        raise ValidationError(f"{path}: no such file. Fix: check the path.", field="path")
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open("r", encoding="utf-8-sig", newline="")


def _read_records(
    path: str | Path, format: FileFormat | None, required: tuple[str, ...]
) -> Iterator[_Record]:
    """Yield the records of a CSV / JSONL / JSON-array file.

    A CSV header lacking a ``required`` column fails before any row is read; in
    JSON every record is checked. Empty required values fail in both.
    """
    path = Path(path)
    fmt, gzipped = _resolve_format(path, format)
    with _open_text(path, gzipped) as f:
        records = _csv_records(path, f, required) if fmt == "csv" else _json_records(path, f)
        for record in records:
            for name in required:
                if name not in record.fields or record.fields[name] in ("", None):
                    raise record.error(name, "missing or empty", f"give every record a {name!r}")
            yield record


def _csv_records(path: Path, f: IO[str], required: tuple[str, ...]) -> Iterator[_Record]:
    reader = csv.reader(f)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        return
    missing = [c for c in required if c not in header]
    if missing:
        raise ValidationError(
            f"{path}: no {', '.join(map(repr, missing))} column (columns: {', '.join(header)}). "
            f"Fix: add the column or rename the column that holds it to {missing[0]!r}.",
            field=missing[0],
        )
    duplicated = sorted({h for h in header if header.count(h) > 1})
    if duplicated:
        raise ValidationError(
            f"{path}, line 1: duplicated column(s) {', '.join(duplicated)}. "
            "Fix: give every column a distinct name.",
            field=duplicated[0],
        )
    last_line = reader.line_num
    for row in reader:
        start, last_line = last_line + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            raise ValidationError(
                f"{path}, line {start}: {len(row)} cells but the header has {len(header)}. "
                "Fix: quote cells that contain commas.",
                field=None,
            )
        fields = {h: cell for h, cell in zip(header, row) if cell.strip() != ""}
        yield _Record(path, f"line {start}", fields, from_csv=True)


def _json_records(path: Path, f: IO[str]) -> Iterator[_Record]:
    text = f.read()
    if text.lstrip().startswith("["):  # a JSON array of objects
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValidationError(
                f"{path}, line {e.lineno}: not valid JSON ({e.msg}). Fix: repair the JSON.",
                field=None,
            ) from e
        located: Iterator[tuple[str, Any]] = ((f"entry {i}", v) for i, v in enumerate(values, 1))
    else:
        located = _json_lines(path, text)
    for where, value in located:
        if not isinstance(value, dict):
            raise ValidationError(
                f"{path}, {where}: expected a JSON object, got {type(value).__name__}. "
                "Fix: write one object per line, like {\"id\": \"b1\"}.",
                field=None,
            )
        fields = {k: v for k, v in value.items() if v is not None}
        yield _Record(path, where, fields, from_csv=False)


def _json_lines(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for number, line in enumerate(io.StringIO(text), 1):
        if not line.strip():
            continue
        try:
            yield f"line {number}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ValidationError(
                f"{path}, line {number}: not valid JSON ({e.msg}). "
                "Fix: write exactly one JSON object per line.",
                field=None,
            ) from e


# --------------------------------------------------------------------------- values


def _coerce_cell(text: str) -> str | int | float:
    """A CSV cell as int/float when it looks numeric ("42", "4.5", "1e3"), else as is.

    Leading zeros ("007") and ``nan``/``inf`` stay strings.
    """
    s = text.strip()
    if _INT_RE.fullmatch(s):
        return int(s)
    if _FLOAT_RE.fullmatch(s):
        return float(s)
    return text


def _identifier(record: _Record, field: str) -> str:
    value = record.fields[field]
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise record.error(field, f"{value!r} is not a string or an integer", "use a string id")
    text = str(value).strip()
    if not text:
        raise record.error(field, "it is empty", f"give every record a {field!r}")
    return text


def _number(record: _Record, field: str, default: float) -> float:
    raw = record.fields.get(field, default)
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise record.error(
            field, f"{raw!r} is not a finite number", "write a number such as 1 or 4.5, or omit it"
        )
    return value


def _timestamp(record: _Record) -> float | None:
    """Unix seconds from a number, a numeric string or an ISO-8601 string (naive = UTC)."""
    raw = record.fields.get("timestamp")
    if raw is None:
        return None
    if isinstance(raw, str) and not _FLOAT_RE.fullmatch(raw.strip()):
        try:
            parsed = datetime.fromisoformat(raw.strip())
        except ValueError:
            raise record.error(
                "timestamp",
                f"{raw!r} is neither Unix seconds nor an ISO-8601 date",
                "write Unix seconds (1700000000) or ISO-8601 (2023-11-14T22:13:20Z)",
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    return _number(record, "timestamp", math.nan)


def _context(record: _Record) -> dict[str, Any]:
    raw = record.fields.get("context", {})
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, dict):
        raise record.error(
            "context", "it is not a JSON object", 'write a JSON object such as {"device": "mobile"}'
        )
    return raw


def _format_seconds(ts: float) -> str:
    return str(int(ts)) if ts.is_integer() else repr(ts)


# --------------------------------------------------------------------------- generic


def load_items(path: str | Path, *, format: FileFormat | None = None) -> list[Item]:
    """Load a catalog from a CSV or JSON Lines file (optionally gzipped): :func:`read_items`
    without the line numbers.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "items.csv"
    >>> _ = p.write_text("id,text,year\\nb1,The Hobbit,1937\\n")
    >>> load_items(p)
    [Item(id='b1', text='The Hobbit', attributes={'year': 1937})]
    """
    return read_items(path, format=format)[0]


def read_items(path: str | Path, *, format: FileFormat | None = None) -> tuple[list[Item], list[str]]:
    """Load a catalog from a CSV or JSON Lines file (optionally gzipped), with where each
    item was read (``"line 3"``), so an error found later can name the line.

    Parameters
    ----------
    path
        ``.csv``, ``.jsonl`` or ``.json`` (JSON Lines or a JSON array), each
        optionally ``.gz``.
    format
        Overrides the format inferred from the suffix.

    Returns
    -------
    tuple[list[Item], list[str]]
        The items in file order, and where each one was read (``"line 3"``,
        ``"entry 2"`` of a JSON array). ``id`` is required, ``text`` optional; every
        other column or key becomes an attribute (CSV: empty cells omitted,
        numeric-looking cells converted to int/float). A JSON ``attributes`` object
        is merged in.

    Raises
    ------
    ValidationError
        Missing ``id`` column, empty id, duplicate id, malformed line.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "items.csv"
    >>> _ = p.write_text("id,text,year\\nb1,The Hobbit,1937\\n")
    >>> read_items(p)
    ([Item(id='b1', text='The Hobbit', attributes={'year': 1937})], ['line 2'])
    """
    items: list[Item] = []
    where: list[str] = []
    seen: dict[str, str] = {}
    for record in _read_records(path, format, required=("id",)):
        item_id = _identifier(record, "id")
        if item_id in seen:
            raise record.error(
                "id",
                f"duplicate item id {item_id!r} (first on {seen[item_id]})",
                "give every item a distinct id",
            )
        seen[item_id] = record.where
        fields = dict(record.fields)
        del fields["id"]
        text = fields.pop("text", "")
        if not isinstance(text, str):
            raise record.error("text", f"{text!r} is not a string", "write the text as a string")
        extra = fields.pop("attributes", {}) if not record.from_csv else {}
        if not isinstance(extra, dict):
            raise record.error(
                "attributes", "it is not a JSON object", 'write {"attributes": {"year": 1937}}'
            )
        if record.from_csv:
            fields = {k: _coerce_cell(v) for k, v in fields.items()}
        attributes = {**fields, **{k: v for k, v in extra.items() if v is not None}}
        items.append(Item(id=item_id, text=text, attributes=attributes))
        where.append(record.where)
    return items, where


def load_events(path: str | Path, *, format: FileFormat | None = None) -> list[Event]:
    """Load feedback events from a CSV or JSON Lines file (optionally gzipped):
    :func:`read_events` without the line numbers.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
    >>> _ = p.write_text("user,item,kind,timestamp\\nu1,b1,like,1700000000\\n")
    >>> load_events(p)[0].id
    'u1:b1:like:1700000000'
    """
    return read_events(path, format=format)[0]


def read_events(path: str | Path, *, format: FileFormat | None = None) -> tuple[list[Event], list[str]]:
    """Load feedback events from a CSV or JSON Lines file (optionally gzipped), with where
    each event was read (``"line 12"``), so an error found later can name the line.

    Columns / keys: ``user`` and ``item`` (required); ``kind`` (default
    ``"click"``); ``value`` (default 1.0); ``timestamp`` (Unix seconds or ISO-8601,
    naive dates are UTC; default: the time of loading); ``id``; ``context`` (a JSON
    object, in CSV as a JSON string). Other columns are rejected so typos surface.

    Without an ``id`` the event gets ``f"{user}:{item}:{kind}:{timestamp}"``
    (``...:line{n}`` when there is no timestamp either), so loading the same file
    twice gives the same ids and the store keeps each event once.

    Parameters
    ----------
    path
        ``.csv``, ``.jsonl`` or ``.json``, each optionally ``.gz``.
    format
        Overrides the format inferred from the suffix.

    Returns
    -------
    tuple[list[Event], list[str]]
        The events in file order, and where each one was read.

    Raises
    ------
    ValidationError
        With the file, line, field and fix, for any bad row.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
    >>> _ = p.write_text("user,item,kind,timestamp\\nu1,b1,like,1700000000\\n")
    >>> events, where = read_events(p)
    >>> events[0].id, where
    ('u1:b1:like:1700000000', ['line 2'])
    """
    now = time.time()
    events: list[Event] = []
    where: list[str] = []
    for record in _read_records(path, format, required=("user", "item")):
        unknown = sorted(set(record.fields) - set(_EVENT_FIELDS))
        if unknown:
            raise record.error(
                unknown[0],
                f"unknown field(s) {', '.join(unknown)}",
                f"use only {', '.join(_EVENT_FIELDS)}; put anything else inside 'context'",
            )
        user, item = _identifier(record, "user"), _identifier(record, "item")
        kind = record.fields.get("kind", "click")
        if not isinstance(kind, str) or not kind.strip():
            raise record.error("kind", f"{kind!r} is not a kind", "write a kind such as 'click'")
        kind = kind.strip()
        value = _number(record, "value", 1.0)
        ts = _timestamp(record)
        suffix = _format_seconds(ts) if ts is not None else record.where.replace(" ", "")
        event_id = (
            _identifier(record, "id") if "id" in record.fields else f"{user}:{item}:{kind}:{suffix}"
        )
        events.append(
            Event(
                user=user,
                item=item,
                kind=kind,
                value=value,
                timestamp=now if ts is None else ts,
                id=event_id,
                context=_context(record),
            )
        )
        where.append(record.where)
    return events, where


# --------------------------------------------------------------------------- goodbooks


def _frame_items(
    frame: pd.DataFrame,
    id_column: str,
    attribute_columns: Mapping[str, str],
    converters: Mapping[str, Callable[[Any], Any]],
) -> list[Item]:
    """Items from a DataFrame: ``attribute_columns`` maps attribute -> column.

    Missing cells (NaN/None/"") are omitted, never stored as NaN.
    """
    present = {a: c for a, c in attribute_columns.items() if c in frame.columns}
    names = list(present)
    ids = frame[id_column].astype(str).str.strip().tolist()
    items = []
    for item_id, *values in zip(ids, *(frame[c].tolist() for c in present.values())):
        attributes = {}
        for name, value in zip(names, values):
            if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
                continue
            convert = converters.get(name)
            attributes[name] = convert(value) if convert else value
        items.append(Item(id=item_id, text="", attributes=attributes))
    return items


def load_goodbooks(path: str | Path | None = None, limit: int | None = None) -> list[Item]:
    """Load the goodbooks-10k book catalog (10,000 real books).

    Parameters
    ----------
    path
        A goodbooks ``books.csv`` (or ``.csv.gz``). ``None`` loads the copy
        shipped with liverec (CC BY-SA 4.0, see ``liverec/data/goodbooks``).
    limit
        Load only the first ``limit`` books (the most popular come first).

    Returns
    -------
    list[Item]
        ``id`` is the goodbooks ``book_id``; ``text`` is empty; attributes are
        ``title``, ``authors``, ``year`` (int), ``language``, ``average_rating``
        (float), ``ratings_count`` (int) and ``image_url``; missing ones are omitted.

    Examples
    --------
    >>> book = load_goodbooks(limit=1)[0]
    >>> book.id, book.attributes["title"], book.attributes["year"]
    ('1', 'The Hunger Games (The Hunger Games, #1)', 2008)
    """
    if limit is not None and limit < 0:
        raise ValidationError(
            f"limit={limit} is negative. Fix: pass None or a count >= 0.", field="limit"
        )
    read = dict(nrows=limit, keep_default_na=False, na_values=[""], dtype={"book_id": str})
    if path is None:
        shipped = resources.files("liverec.data").joinpath("goodbooks/books.csv.gz")
        with shipped.open("rb") as f:
            frame = pd.read_csv(f, compression="gzip", **read)
        source: object = shipped
    else:
        frame = pd.read_csv(Path(path), **read)
        source = path
    for column in ("book_id", "title"):
        if column not in frame.columns:
            raise ValidationError(
                f"{source}: no {column!r} column. Fix: pass goodbooks-10k's books.csv.",
                field=column,
            )
    attribute_columns = {
        "title": "title",
        "authors": "authors",
        "year": "original_publication_year",
        "language": "language_code",
        "average_rating": "average_rating",
        "ratings_count": "ratings_count",
        "image_url": "image_url",
    }
    converters = {"year": int, "average_rating": float, "ratings_count": int}
    return _frame_items(frame, "book_id", attribute_columns, converters)


# --------------------------------------------------------------------------- MovieLens


def _split_title(title: str) -> tuple[str, int | None]:
    """``"Toy Story (1995)"`` -> ``("Toy Story", 1995)``; no year -> ``(title, None)``."""
    match = _TITLE_YEAR_RE.match(title)
    if match is None:
        return title.strip(), None
    return match["title"], int(match["year"])


def _movie_items(
    ids: list[str],
    titles: list[tuple[str, int | None]],
    genres: list[list[str]],
    tags: Mapping[str, str],
) -> list[Item]:
    """Items from parallel lists of ids, (title, year), genre lists and a tag map."""
    items = []
    for movie_id, (title, year), movie_genres in zip(ids, titles, genres):
        attributes: dict[str, Any] = {"title": title}
        if year is not None:
            attributes["year"] = year
        if movie_genres:
            attributes["genres"] = ", ".join(movie_genres)
        if movie_id in tags:
            attributes["tags"] = tags[movie_id]
        items.append(Item(id=movie_id, text="", attributes=attributes))
    return items


def _rating_events(ratings: pd.DataFrame) -> list[Event]:
    """Events from a frame with str ``user``/``item``, float ``rating``, int ``ts``."""
    ratings = ratings.sort_values(["ts", "user", "item"], kind="stable")
    return [
        Event(user=u, item=i, kind="rating", value=r, timestamp=float(t), id=f"ml:{u}:{i}:{t}")
        for u, i, r, t in zip(
            ratings["user"].tolist(),
            ratings["item"].tolist(),
            ratings["rating"].astype(float).tolist(),
            ratings["ts"].astype("int64").tolist(),
        )
    ]


def _movie_tags(path: Path) -> dict[str, str]:
    """movieId -> up to 20 distinct tags, most frequent first, then alphabetical."""
    if not path.is_file():
        return {}
    tags = pd.read_csv(path, dtype=str, keep_default_na=False, usecols=["movieId", "tag"])
    tags["tag"] = tags["tag"].str.strip()
    tags = tags[tags["tag"] != ""]
    counts = tags.groupby(["movieId", "tag"]).size().rename("n").reset_index()
    counts["key"] = counts["tag"].str.casefold()
    counts = counts.sort_values(["movieId", "n", "key", "tag"], ascending=[True, False, True, True])
    top = counts.groupby("movieId").head(_MAX_TAGS)
    return {m: ", ".join(group.tolist()) for m, group in top.groupby("movieId")["tag"]}


def _load_movielens_latest(folder: Path) -> tuple[list[Item], list[Event]]:
    movies = pd.read_csv(folder / "movies.csv", dtype=str, keep_default_na=False)
    genres = [
        [] if g in ("", "(no genres listed)") else g.split("|") for g in movies["genres"].tolist()
    ]
    titles = [_split_title(t) for t in movies["title"].tolist()]
    tags = _movie_tags(folder / "tags.csv")
    items = _movie_items(movies["movieId"].tolist(), titles, genres, tags)
    ratings = pd.read_csv(
        folder / "ratings.csv",
        dtype={"userId": str, "movieId": str, "rating": float, "timestamp": "int64"},
    ).rename(columns={"userId": "user", "movieId": "item", "timestamp": "ts"})
    return items, _rating_events(ratings)


def _load_movielens_100k(folder: Path) -> tuple[list[Item], list[Event]]:
    genre_file = folder / "u.genre"
    names = list(_ML100K_GENRES)
    if genre_file.is_file():
        lines = genre_file.read_text(encoding="latin-1").splitlines()
        names = [line.rsplit("|", 1)[0] for line in lines if line.strip()]
    flag_columns = [f"g{i}" for i in range(len(names))]
    movies = pd.read_csv(
        folder / "u.item",
        sep="|",
        header=None,
        encoding="latin-1",
        dtype=str,
        keep_default_na=False,
        names=["movieId", "title", "released", "video", "imdb", *flag_columns],
    )
    flags = movies[flag_columns].to_numpy() == "1"
    genres = [[n for n, on in zip(names, row) if on and n != "unknown"] for row in flags]
    titles = [_split_title(t) for t in movies["title"].tolist()]
    # A few titles lack "(year)": take the year from the release date (01-Jan-1995).
    for k, ((title, year), released) in enumerate(zip(titles, movies["released"].tolist())):
        if year is None and re.fullmatch(r"\d\d-\w{3}-\d{4}", released):
            titles[k] = (title, int(released[-4:]))
    items = _movie_items(movies["movieId"].tolist(), titles, genres, {})
    ratings = pd.read_csv(
        folder / "u.data",
        sep="\t",
        header=None,
        names=["user", "item", "rating", "ts"],
        dtype={"user": str, "item": str, "rating": float, "ts": "int64"},
    )
    return items, _rating_events(ratings)


def load_movielens(path: str | Path) -> tuple[list[Item], list[Event]]:
    """Load a MovieLens folder the user downloaded (never ship MovieLens itself).

    The layout is detected: "latest" / "latest-small" / 25M-style (``movies.csv``,
    ``ratings.csv``, optional ``tags.csv``) or 100K (``u.item``, ``u.data``,
    optional ``u.genre``).

    Parameters
    ----------
    path
        The folder holding the MovieLens files.

    Returns
    -------
    (list[Item], list[Event])
        Items with id ``movieId`` and attributes ``title`` (without the trailing
        year), ``year``, ``genres`` ("Adventure, Animation") and ``tags`` (up to 20,
        most frequent first); absent ones are omitted. Events are ``rating`` events
        with ``value`` = stars and id ``f"ml:{user}:{movie}:{timestamp}"``, sorted
        by (timestamp, user, item).

    Examples
    --------
    >>> items, events = load_movielens("ml-latest-small")  # doctest: +SKIP
    >>> items[0].attributes  # doctest: +SKIP
    {'title': 'Toy Story', 'year': 1995, 'genres': 'Adventure, ...', 'tags': 'pixar, fun'}
    """
    folder = Path(path)
    if (folder / "movies.csv").is_file() and (folder / "ratings.csv").is_file():
        return _load_movielens_latest(folder)
    if (folder / "u.item").is_file() and (folder / "u.data").is_file():
        return _load_movielens_100k(folder)
    found = sorted(p.name for p in folder.iterdir())[:10] if folder.is_dir() else []
    raise ValidationError(
        f"{folder}: not a MovieLens folder (found: {', '.join(found) or 'nothing'}). "
        "Fix: pass the extracted folder holding movies.csv + ratings.csv (latest) "
        "or u.item + u.data (100K).",
        field="path",
    )
