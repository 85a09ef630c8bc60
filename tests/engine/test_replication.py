"""Two engines over one store: sync() makes the second learn what the first wrote."""

from __future__ import annotations


import pytest

from liverec import Engine, Event, Item
from liverec.settings import Settings
from liverec.store import Store

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(tmp_path, encoder, books):
    url = f"sqlite:///{tmp_path}/shared.db"
    s = Settings(store=url, encoder_progress=False)
    a = Engine(Store.open(url), s, encoder)
    a.add_items(books[:200])
    b = Engine(Store.open(url), s, encoder)
    a.replicated = b.replicated = True
    yield a, b
    a.close()
    b.close()


def ids(recs) -> list[str]:
    return [r.item for r in recs]


def test_events_items_interests_reach_the_other_engine(pair) -> None:
    a, b = pair
    before = ids(b.recommend("reader", k=10, log=False))
    a.record(Event(user="reader", item="2", kind="like"))
    a.record(Event(user="reader", item="18", kind="like"))
    assert b.history("reader") and ids(b.recommend("reader", k=10, log=False)) == before  # not yet learned
    assert b.sync()["events"] == 2
    assert ids(b.recommend("reader", k=10, log=False)) == ids(a.recommend("reader", k=10, log=False))
    assert b.user_state("reader").history == a.user_state("reader").history
    # Its own events are never learned twice.
    b.record(Event(user="reader", item="21", kind="click"))
    assert b.sync()["events"] == 0 and a.sync()["events"] == 1
    assert len(a.user_state("reader").history) == len(b.user_state("reader").history) == 3
    # Items: new, changed and removed.
    a.add_items([Item(id="new-1", text="A brand new book about dragons", attributes={"title": "Dragons"})])
    a.remove_items(["1"])
    out = b.sync()
    assert out["items"] == 2 and "new-1" in b.catalog and b.n_items == a.n_items
    assert "1" not in ids(b.recommend("x", k=200, log=False))
    # Interests.
    a.set_interests("fan", "vampires and the undead")
    assert b.sync()["interests"] == 1 and b.user_state("fan").interests_text == "vampires and the undead"


def test_erasure_notice_and_missed_erasure(pair) -> None:
    a, b = pair
    for item in ("2", "18"):
        a.record(Event(user="gone-user", item=item, kind="like"))
    b.sync()
    told: list = []
    a.on_erase.append(lambda user, events, epoch: told.append((user, events, epoch)))
    a.delete_user("gone-user")
    user, events, epoch = told[0]
    assert user == "gone-user" and len(events) == 2 and epoch == 1
    b.forget_user(user, events, epoch=epoch)
    assert "gone-user" not in b.state and b.sync()["refit"] == 0
    # An erasure B is never told about: after a grace period B re-fits from the log.
    a.record(Event(user="other", item="2", kind="like"))
    b.sync()
    a.delete_user("other")
    assert b.sync()["refit"] == 0  # the notice may still be on its way
    b.replica.erasure_noticed -= 3.0
    v = b.model_version
    assert b.sync()["refit"] == 1
    b.lifecycle.thread.join(60)
    assert b.model_version == v + 1 and "other" not in b.state
