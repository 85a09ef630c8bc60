"""Dataset loaders: generic CSV/JSONL, the shipped goodbooks catalog, MovieLens formats."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import pytest

from liverec.data import load_events, load_goodbooks, load_items, load_movielens
from liverec.errors import ValidationError
from liverec.types import Event, Item

ML_LATEST_SMALL = Path(__file__).resolve().parents[2].parent / "shared/data/ml-latest-small"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- goodbooks


@pytest.fixture(scope="module")
def books() -> list[Item]:
    return load_goodbooks()


def test_goodbooks_catalog_is_complete(books: list[Item]) -> None:
    assert len(books) == 10_000
    assert len({b.id for b in books}) == 10_000
    assert books[0].id == "1" and books[0].text == ""


def test_goodbooks_has_harry_potter_by_rowling(books: list[Item]) -> None:
    potter = [b for b in books if "Harry Potter" in b.attributes["title"]]
    assert potter
    assert all(isinstance(b.attributes["authors"], str) for b in potter)
    assert any("J.K. Rowling" in b.attributes["authors"] for b in potter)


def test_goodbooks_attributes_typed_and_never_nan(books: list[Item]) -> None:
    allowed = {"title", "authors", "year", "language", "average_rating", "ratings_count"}
    allowed |= {"image_url"}
    for book in books:
        attrs = book.attributes
        assert set(attrs) <= allowed
        assert {"title", "authors", "average_rating", "ratings_count", "image_url"} <= set(attrs)
        for value in attrs.values():
            assert value is not None and value != ""
            assert not (isinstance(value, float) and math.isnan(value))
        assert isinstance(attrs["average_rating"], float)
        assert isinstance(attrs["ratings_count"], int)
        if "year" in attrs:
            assert isinstance(attrs["year"], int)
    assert any("year" not in b.attributes for b in books)  # missing years are omitted
    assert any("language" not in b.attributes for b in books)


def test_goodbooks_limit_and_explicit_path(tmp_path: Path) -> None:
    assert [b.id for b in load_goodbooks(limit=3)] == ["1", "2", "3"]
    csv_path = write(
        tmp_path / "books.csv",
        "book_id,authors,original_publication_year,title,language_code,average_rating,"
        "ratings_count,image_url\n"
        "7,Ann Author,,A Book,,4.5,10,http://x/7.jpg\n",
    )
    [book] = load_goodbooks(csv_path)
    assert book == Item(
        id="7",
        attributes={
            "title": "A Book",
            "authors": "Ann Author",
            "average_rating": 4.5,
            "ratings_count": 10,
            "image_url": "http://x/7.jpg",
        },
    )
    with pytest.raises(ValidationError):
        load_goodbooks(limit=-1)


# --------------------------------------------------------------------------- items


def test_items_csv_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        'id,text,year,rating,genre,code\nb1,"The Hobbit, a tale",1937,4.5,fantasy,007\nb2,,,,,\n',
    )
    items = load_items(path)
    assert items == [
        Item(
            id="b1",
            text="The Hobbit, a tale",
            attributes={"year": 1937, "rating": 4.5, "genre": "fantasy", "code": "007"},
        ),
        Item(id="b2", text="", attributes={}),
    ]


def test_items_jsonl_and_gzip_round_trip(tmp_path: Path) -> None:
    rows = [
        {"id": "b1", "text": "The Hobbit", "year": 1937, "attributes": {"genre": "fantasy"}},
        {"id": 2, "tags": ["a", "b"], "missing": None},
    ]
    body = "\n".join(json.dumps(r) for r in rows) + "\n\n"
    expected = [
        Item(id="b1", text="The Hobbit", attributes={"year": 1937, "genre": "fantasy"}),
        Item(id="2", text="", attributes={"tags": ["a", "b"]}),
    ]
    assert load_items(write(tmp_path / "items.jsonl", body)) == expected
    gz = tmp_path / "items.jsonl.gz"
    gz.write_bytes(gzip.compress(body.encode()))
    assert load_items(gz) == expected
    assert load_items(write(tmp_path / "items.json", json.dumps(rows))) == expected
    assert load_items(write(tmp_path / "items.txt", body), format="jsonl") == expected


def test_items_missing_id_column(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "name,text\nb1,hello\n")
    with pytest.raises(ValidationError, match=r"items\.csv.*'id'.*Fix") as err:
        load_items(path)
    assert err.value.field == "id"


def test_items_missing_id_in_jsonl_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "items.jsonl", '{"id": "b1"}\n{"text": "no id"}\n')
    with pytest.raises(ValidationError, match=r"line 2, field 'id'"):
        load_items(path)


def test_items_duplicate_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv", "id,text\nb1,one\nb2,two\nb1,again\n")
    with pytest.raises(ValidationError, match=r"line 4, field 'id'.*duplicate.*line 2") as err:
        load_items(path)
    assert err.value.field == "id"


def test_items_unknown_suffix_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="format"):
        load_items(write(tmp_path / "items.txt", "id\nb1\n"))
    with pytest.raises(ValidationError, match=r"line 2.*not valid JSON"):
        load_items(write(tmp_path / "items.jsonl", '{"id": "b1"}\n{"id": \n'))


# --------------------------------------------------------------------------- events


def test_events_csv_round_trip(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.csv",
        "user,item,kind,value,timestamp,id,context\n"
        'u1,b1,rating,4.5,1700000000,e1,"{""device"": ""mobile""}"\n'
        "u1,b2,,,2023-11-14T22:13:20Z,,\n"
        "u2,b1,like,,2023-11-14T22:13:20,,\n",
    )
    events = load_events(path)
    assert events == [
        Event("u1", "b1", "rating", 4.5, 1_700_000_000.0, "e1", {"device": "mobile"}),
        Event("u1", "b2", "click", 1.0, 1_700_000_000.0, "u1:b2:click:1700000000"),
        Event("u2", "b1", "like", 1.0, 1_700_000_000.0, "u2:b1:like:1700000000"),
    ]


def test_events_jsonl_round_trip(tmp_path: Path) -> None:
    rows = [
        {"user": "u1", "item": "b1", "kind": "view", "timestamp": 1.5, "context": {"page": 2}},
        {"user": 7, "item": "b2", "value": 2, "timestamp": "2023-11-14T23:13:20+01:00"},
    ]
    path = write(tmp_path / "events.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert load_events(path) == [
        Event("u1", "b1", "view", 1.0, 1.5, "u1:b1:view:1.5", {"page": 2}),
        Event("7", "b2", "click", 2.0, 1_700_000_000.0, "7:b2:click:1700000000"),
    ]


def test_events_deterministic_ids_make_reload_identical(tmp_path: Path) -> None:
    path = write(tmp_path / "events.csv", "user,item,timestamp\nu1,b1,10\nu1,b1,11\nu2,b1,\n")
    first = load_events(path)
    time.sleep(0.01)
    second = load_events(path)
    assert [e.id for e in first] == [e.id for e in second]
    assert first[:2] == second[:2]
    assert len({e.id for e in first}) == 3
    assert first[2].id == "u2:b1:click:line4"  # no timestamp: stable per line


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        ("u1,b1,click,abc,10", "value", r"'abc' is not a finite number"),
        ("u1,b1,click,nan,10", "value", r"'nan' is not a finite number"),
        ("u1,b1,click,1,yesterday", "timestamp", r"'yesterday' is neither Unix seconds"),
        (",b1,click,1,10", "user", r"missing or empty"),
        ("u1, ,click,1,10", "item", r"missing or empty"),
    ],
)
def test_events_bad_rows_name_line_and_field(
    tmp_path: Path, row: str, field: str, message: str
) -> None:
    header = "user,item,kind,value,timestamp\nu1,b0,click,1,1\n"
    path = write(tmp_path / "events.csv", f"{header}{row}\n")
    expected = rf"events\.csv, line 3, field '{field}': {message}.*Fix"
    with pytest.raises(ValidationError, match=expected):
        load_events(path)


def test_events_bad_context_unknown_column_and_missing_column(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"line 2, field 'context'") as err:
        load_events(write(tmp_path / "a.csv", "user,item,context\nu1,b1,[1]\n"))
    assert err.value.field == "context"
    with pytest.raises(ValidationError, match=r"line 2, field 'timestmp'.*unknown"):
        load_events(write(tmp_path / "b.csv", "user,item,timestmp\nu1,b1,10\n"))
    with pytest.raises(ValidationError, match=r"no 'item' column"):
        load_events(write(tmp_path / "c.csv", "user,movie\nu1,b1\n"))
    with pytest.raises(ValidationError, match=r"line 1, field 'value'"):
        load_events(write(tmp_path / "d.jsonl", '{"user": "u", "item": "i", "value": "abc"}\n'))
    with pytest.raises(ValidationError, match=r"line 1, field 'kind': 5 is not a kind"):
        load_events(write(tmp_path / "e.jsonl", '{"user": "u", "item": "i", "kind": 5}\n'))


# --------------------------------------------------------------------------- MovieLens


@pytest.fixture
def ml_latest(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-latest"
    folder.mkdir()
    write(
        folder / "movies.csv",
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation|Children\n"
        '2,"American President, The (1995)",Comedy|Drama|Romance\n'
        "3,Babylon 5,(no genres listed)\n"
        "4,Runaway Brain (1995) ,Animation\n",
    )
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n"
        "1,1,4.0,964982703\n"
        "2,3,0.5,964982000\n"
        "1,2,3.5,964982000\n",
    )
    many = "".join(f"9,4,tag{k:02d},1\n" for k in range(25))
    write(
        folder / "tags.csv",
        "userId,movieId,tag,timestamp\n"
        "1,1,pixar,1\n2,1,funny,1\n3,1,pixar,1\n4,1,Cute,1\n5,1, funny ,1\n6,1,animation,1\n"
        + many,
    )
    return folder


def test_movielens_latest_format(ml_latest: Path) -> None:
    items, events = load_movielens(ml_latest)
    assert items[:3] == [
        Item(
            id="1",
            attributes={
                "title": "Toy Story",
                "year": 1995,
                "genres": "Adventure, Animation, Children",
                "tags": "funny, pixar, animation, Cute",
            },
        ),
        Item(
            id="2",
            attributes={
                "title": "American President, The",
                "year": 1995,
                "genres": "Comedy, Drama, Romance",
            },
        ),
        Item(id="3", attributes={"title": "Babylon 5"}),
    ]
    tags4 = items[3].attributes["tags"].split(", ")
    assert items[3].attributes["title"] == "Runaway Brain"
    assert tags4 == [f"tag{k:02d}" for k in range(20)]
    assert events == [
        Event("1", "2", "rating", 3.5, 964982000.0, "ml:1:2:964982000"),
        Event("2", "3", "rating", 0.5, 964982000.0, "ml:2:3:964982000"),
        Event("1", "1", "rating", 4.0, 964982703.0, "ml:1:1:964982703"),
    ]
    assert load_movielens(ml_latest) == (items, events)  # deterministic ids: idempotent


def test_movielens_latest_without_tags(ml_latest: Path) -> None:
    (ml_latest / "tags.csv").unlink()
    items, _ = load_movielens(ml_latest)
    assert all("tags" not in i.attributes for i in items)


def _write_100k(folder: Path, with_genre_file: bool) -> None:
    folder.mkdir()
    flags = ["0"] * 19
    toy = flags.copy()
    toy[3] = toy[4] = toy[5] = "1"  # Animation, Children's, Comedy
    unknown = flags.copy()
    unknown[0] = "1"
    lines = [
        "|".join(["1", "Toy Story (1995)", "01-Jan-1995", "", "http://imdb/1", *toy]),
        "|".join(["2", "Café Society (1995)", "01-Jan-1995", "", "http://imdb/2", *flags]),
        "|".join(["3", "Dateless", "05-Oct-1996", "", "", *unknown]),
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    ratings = ["196 1 3 881250949", "22 3 1 881250949", "186 2 5 800000000"]
    write(folder / "u.data", "".join(r.replace(" ", "\t") + "\n" for r in ratings))
    if with_genre_file:
        names = ["unknown", "Action", "Adventure", "Cartoon", "Kids", "Funny"]
        names += [f"G{k}" for k in range(13)]
        write(folder / "u.genre", "".join(f"{n}|{k}\n" for k, n in enumerate(names)) + "\n")


@pytest.mark.parametrize("with_genre_file", [False, True])
def test_movielens_100k_format(tmp_path: Path, with_genre_file: bool) -> None:
    folder = tmp_path / "ml-100k"
    _write_100k(folder, with_genre_file)
    items, events = load_movielens(folder)
    genres = "Cartoon, Kids, Funny" if with_genre_file else "Animation, Children's, Comedy"
    assert items == [
        Item(id="1", attributes={"title": "Toy Story", "year": 1995, "genres": genres}),
        Item(id="2", attributes={"title": "Café Society", "year": 1995}),
        Item(id="3", attributes={"title": "Dateless", "year": 1996}),
    ]
    assert events == [
        Event("186", "2", "rating", 5.0, 800000000.0, "ml:186:2:800000000"),
        Event("196", "1", "rating", 3.0, 881250949.0, "ml:196:1:881250949"),
        Event("22", "3", "rating", 1.0, 881250949.0, "ml:22:3:881250949"),
    ]


def test_movielens_unknown_folder(tmp_path: Path) -> None:
    write(tmp_path / "ratings.dat", "1::1::5::1\n")
    with pytest.raises(ValidationError, match=r"not a MovieLens folder.*ratings\.dat.*Fix"):
        load_movielens(tmp_path)


@pytest.mark.skipif(not ML_LATEST_SMALL.is_dir(), reason="needs shared/data/ml-latest-small")
def test_movielens_latest_small_real_data() -> None:
    start = time.perf_counter()
    items, events = load_movielens(ML_LATEST_SMALL)
    elapsed = time.perf_counter() - start
    assert len(events) == 100_836
    assert len(items) == 9_742
    assert len({i.id for i in items}) == 9_742
    assert len({e.id for e in events}) == 100_836
    assert {e.kind for e in events} == {"rating"}
    assert all(0.5 <= e.value <= 5.0 for e in events)
    keys = [(e.timestamp, e.user, e.item) for e in events]
    assert keys == sorted(keys)
    toy = next(i for i in items if i.id == "1")
    assert toy.attributes["title"] == "Toy Story" and toy.attributes["year"] == 1995
    assert toy.attributes["genres"].startswith("Adventure, Animation")
    assert "pixar" in toy.attributes["tags"]
    assert {e.item for e in events} <= {i.id for i in items}
    assert elapsed < 5.0  # typically ~0.5 s; generous bound for slow CI
