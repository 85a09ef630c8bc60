"""A restart replays the log after its snapshot in runs (``learn_many``): the restored engine is
the one an event-by-event replay of the same log restores."""

from __future__ import annotations

import numpy as np

from liverec import Engine, Settings
from liverec import lifecycle as lifecycle_module
from liverec.models.base import BatchLearner
from liverec.rank.ranker import offers

from test_snapshots import QUIET, events, served


def _itemknn_state(eng: Engine) -> dict:
    m = eng.learners["itemknn"]
    nl = m._neighbours(np.arange(len(eng.catalog)))  # every row read: stale rows rebuilt
    return {
        "C": m.counts_.to_csr().toarray(), "n": m.n_.tolist(), "items": {u: dict(h) for u, h in m.items_.items()},
        "recent": {u: list(r) for u, r in m.recent_.items()},
        "rows": {r: tuple(a.tolist() for a in nl.row(r)) for r in range(len(eng.catalog))},
    }


def test_batch_replay_restores_what_event_by_event_replay_restores(tmp_path, encoder, books, monkeypatch):
    s = Settings(**QUIET)
    url = f"sqlite:///{tmp_path / 'rec.db'}"
    ids = [b.id for b in books[:200]]
    users = ["u0", "u3", "u11", "u24", "nobody"]
    with Engine.open(url, settings=s, encoder=encoder) as e:
        e.add_items(books[:200])
        e.record_many(events(500, ids, seed=1), learn=False)
        e.fit()
        e.record_many(events(400, ids, seed=2, t=1000))  # the tail a restart replays
        writer = served(e, users)
    assert any(offers(m, BatchLearner) for m in e.learners.values())

    def restore(per_event: bool, batch: int) -> tuple[dict, dict]:
        with monkeypatch.context() as mp:
            mp.setattr(lifecycle_module, "REPLAY_BATCH", batch)
            if per_event:
                mp.setattr(lifecycle_module, "offers", lambda m, p: p is not BatchLearner and offers(m, p))
            with Engine.open(url, settings=s, encoder=encoder) as eng:
                assert eng.snapshots.log_seq < eng.replica.cursor  # restored from the snapshot, tail replayed
                return served(eng, users), _itemknn_state(eng)

    one, one_state = restore(True, 10_000)
    for batch in (10_000, 64):
        many, many_state = restore(False, batch)
        assert many == one == writer
        np.testing.assert_array_equal(many_state.pop("C"), one_state["C"])
        assert many_state == {k: v for k, v in one_state.items() if k != "C"}
