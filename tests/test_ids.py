"""Generated ids (events without one, served requests) are UUID 7: unique, and later ids sort later."""

from __future__ import annotations

import time
import uuid

from liverec import Event
from liverec.types import new_id


def test_ids_are_uuid7_and_sort_by_the_millisecond_they_were_made() -> None:
    made = []
    for _ in range(5):
        made.append(new_id())
        time.sleep(0.002)
    assert made == sorted(made) and len(set(made)) == 5
    assert all(uuid.UUID(x).version == 7 and uuid.UUID(x).variant == uuid.RFC_4122 for x in made)
    ms = int(made[0][:12], 16)
    assert abs(ms / 1000 - time.time()) < 60


def test_ids_made_in_the_same_millisecond_differ() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)


def test_an_event_without_an_id_gets_one() -> None:
    a, b = Event(user="u", item="i"), Event(user="u", item="i")
    assert a.id != b.id and uuid.UUID(a.id).version == 7
