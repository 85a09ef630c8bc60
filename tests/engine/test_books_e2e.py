"""End to end on real catalog text: the list follows what the user clicks."""

from liverec import Engine, Event, Settings


def _authors(eng, recs):
    return [eng.get_item(r.item).attributes["authors"] for r in recs]


def test_harry_potter_then_stephen_king(encoder, books):
    eng = Engine.open(settings=Settings(encoder_progress=False, popularity_prior="ratings_count"), encoder=encoder)
    eng.add_items(books)
    by_title = {b.attributes["title"]: b.id for b in books}
    hp = [by_title[t] for t in by_title if t.startswith("Harry Potter and the")][:3]
    king = [b.id for b in books if b.attributes["authors"] == "Stephen King"][:3]
    assert len(hp) == 3 and len(king) == 3

    cold = eng.recommend("reader", k=10)
    rowling_before = sum("Rowling" in a for a in _authors(eng, cold))
    for i, item in enumerate(hp):
        eng.record(Event(user="reader", item=item, kind="click", timestamp=1_700_000_000 + i))
    after_hp = eng.recommend("reader", k=10)
    rowling_after = sum("Rowling" in a for a in _authors(eng, after_hp))
    assert rowling_after >= 3 and rowling_after > rowling_before

    for i, item in enumerate(king):
        eng.record(Event(user="reader", item=item, kind="click", timestamp=1_700_000_100 + i))
    after_king = eng.recommend("reader", k=10)
    king_after = sum("Stephen King" in a for a in _authors(eng, after_king))
    king_before = sum("Stephen King" in a for a in _authors(eng, after_hp))
    assert king_after >= 3 and king_after > king_before
    assert [r.item for r in after_king] != [r.item for r in after_hp]
    eng.close()
