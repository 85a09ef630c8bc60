"""GET /stats shows the configuration fit(tune=True) chose."""

from __future__ import annotations

from apihelp import auth
from liverec import Event

T0 = 1_700_000_000.0


def test_stats_show_the_tuned_configuration(make_client) -> None:
    c = make_client(sources={"trending": {}, "transition": {}, "content": {}})
    assert c.get("/stats", headers=auth("read")).json()["tuned"] is None
    ids = [it for it in c.engine.catalog.ids[:100]]
    c.engine.record_many(
        [Event(user=f"u{u}", item=ids[(3 * u + s) % 100], timestamp=T0 + 60 * s + u, id=f"e{u}-{s}")
         for u in range(30) for s in range(8)]
    )
    tuned = c.engine.tune(budget=60, max_trials=4)
    got = c.get("/stats", headers=auth("read")).json()["tuned"]
    assert got["weights"] == tuned.weights and got["score"] == tuned.score
    assert got["n_trials"] == 4 and "objective" in got and "trials" not in got
