"""What a snapshot packs to load and save fast comes back equal: session neighbours' sittings."""

from __future__ import annotations

import pickle
from array import array

from checks.learner_checks import fitted, make_catalog, make_events
from liverec import Engine, Settings
from liverec.models import SessionKNN
from liverec.snapshot import _ArrayList, pack, unpack
from test_snapshots import QUIET, events, no_refit, served


def test_a_list_of_sittings_is_one_array_in_a_snapshot_and_the_same_arrays_after() -> None:
    cat = make_catalog(120, seed=3)
    m = fitted(SessionKNN(gap_minutes=1.0), make_events(cat, n_users=40, per_user=12, seed=4), cat)
    state = m.learned_state()
    sittings = state["items_"]
    assert len(sittings) >= 64 and type(sittings[0]) is array
    packed = pack(sittings)
    assert isinstance(packed, _ArrayList)
    back = unpack(pickle.loads(pickle.dumps(packed, protocol=5)))
    assert back == sittings and all(type(a) is array and a.typecode == sittings[0].typecode for a in back)
    assert len({id(a) for a in back}) == len(back)  # each its own array: learning appends to one


def test_lists_that_are_not_one_numeric_type_stay_as_they_are() -> None:
    mixed = [array("i", [1])] * 10 + [array("d", [1.0])] * 60
    assert pack(mixed) is mixed
    shared = [array("i", [1, 2])] * 70  # one array seventy times: would come back as seventy
    assert pack(shared) is shared
    assert pack([array("i")] * 3) == [array("i")] * 3  # short lists as they are
    empty = [array("i") for _ in range(70)]
    assert unpack(pack(empty)) == empty


def test_a_restart_serves_what_the_writer_served_with_packed_sittings(tmp_path, encoder, books, monkeypatch) -> None:
    """Every event its own sitting (a gap of 0.06 s): hundreds of sittings go through the packed
    form into the snapshot and back, and the restarted engine scores as the writer did."""
    s = Settings(**QUIET, snapshot_dir=str(tmp_path / "snaps"),
                 sources={"sessionknn": {"gap_minutes": 0.001}, "trending": {}})
    url, ids = f"sqlite:///{tmp_path / 'rec.db'}", [b.id for b in books[:150]]
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:150])
        e.record_many(events(400, ids, seed=7), learn=False)
        e.fit()
        assert len(e.learners["sessionknn"].items_) >= 64
        e.record_many(events(30, ids, seed=8, t=900))
        info = e.snapshot()
        expected = served(e, ["u1", "u2", "u9"])
    assert info is not None
    no_refit(monkeypatch)
    with Engine.open(url, settings=s, encoder=encoder) as again:
        assert again.snapshots.log_seq == info.log_seq
        assert served(again, ["u1", "u2", "u9"]) == expected
