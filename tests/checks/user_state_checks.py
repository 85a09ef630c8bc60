"""The user state contract: one set of checks every per-user state backend must pass.

A backend's test class subclasses :class:`UserStateContract` and provides a
function-scoped ``make`` fixture: ``make(history_length)`` returns a fresh, empty
:class:`~liverec.state.UserStateStore` whose catalog is :data:`CATALOG` (item id ->
dense index; ``"zz"`` is not in it). :func:`redis_prefix` gives Redis-backed tests a
unique key prefix on a test database, deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Iterator

import numpy as np
import pytest

from liverec import Event
from liverec.state import UserStateStore

CATALOG = {"a": 0, "b": 1, "c": 2, "d": 3, "e": 4}
REDIS_URL = "redis://127.0.0.1:6379/15"


def ev(user: str, item: str, ts: float, id: str | None = None, **kw: Any) -> Event:
    return Event(user=user, item=item, timestamp=ts, id=id or f"{user}-{item}-{ts}", **kw)


def redis_client(url: str = REDIS_URL) -> Any:
    """A client of the test Redis; skips (fails with ``LIVEREC_REQUIRE_SERVICES=1``) when absent."""
    import redis

    r = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        r.ping()
    except redis.RedisError as exc:
        if os.environ.get("LIVEREC_REQUIRE_SERVICES") == "1":
            pytest.fail(f"Redis not reachable on {url} ({exc}); LIVEREC_REQUIRE_SERVICES=1 requires it: "
                        "start redis-server, or unset LIVEREC_REQUIRE_SERVICES.", pytrace=False)
        pytest.skip(f"Redis not reachable on {url} ({exc.__class__.__name__})")
    return r


def redis_prefix() -> Iterator[str]:
    """A unique key prefix on the test Redis; every key under it is deleted afterwards."""
    r = redis_client()
    prefix = f"lrtest-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            r.delete(*keys)
        r.close()


class UserStateContract:
    """Checks every backend passes (see the module docstring)."""

    def test_unknown_user_is_empty(self, make) -> None:
        st: UserStateStore = make(5)
        user_state, seen = st.view("nobody")
        assert user_state.user == "nobody" and user_state.history == () and user_state.interests is None
        assert seen == set() and st.version("nobody") == 0 and "nobody" not in st
        assert st.interests_text("nobody") is None and st.state("nobody").history == ()

    def test_history_keeps_the_newest_events_oldest_first(self, make) -> None:
        st = make(3)
        events = [ev("u", item, float(t), context={"page": "home"} if t == 4 else {}) for t, item in
                  enumerate("abcde")]
        for e in events:
            st.apply(e, CATALOG[e.item])
        assert list(st.state("u").history) == events[-3:]  # the events themselves, context and all
        assert st.seen("u") == {0, 1, 2, 3, 4}  # the seen filter outlives the history window
        assert "u" in st

    def test_an_item_outside_the_catalog_is_history_but_not_seen(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "zz", 1.0, kind="rating", value=4.5), None)
        (e,) = st.state("u").history
        assert (e.item, e.kind, e.value) == ("zz", "rating", 4.5) and st.seen("u") == set()

    def test_view_is_state_and_seen_in_one_read(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "b", 1.0), 1)
        st.set_interests("u", np.ones(4, np.float32), "space opera")
        user_state, seen = st.view("u")
        assert user_state.history == st.state("u").history and seen == st.seen("u") == {1}
        assert user_state.interests_text == "space opera"

    def test_every_read_is_a_new_state_so_what_a_request_derives_never_goes_stale(self, make) -> None:
        # Reasons keep what they derive from a state on it (UserState.derived) for the
        # rest of the request; that is only safe while no two reads share one object.
        st = make(5)
        st.apply(ev("u", "a", 1.0), 0)
        first, _ = st.view("u")
        first.derived["probe"] = 1
        st.apply(ev("u", "b", 2.0), 1)
        again, _ = st.view("u")
        assert again is not first and again.derived == {} and st.state("u") is not st.state("u")

    def test_version_moves_on_every_change_of_that_user_only(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "a", 1.0), 0)
        v1, other = st.version("u"), st.version("w")
        st.apply(ev("u", "b", 2.0), 1)
        v2 = st.version("u")
        st.set_interests("u", np.ones(4, np.float32), "whales")
        v3 = st.version("u")
        assert 0 < v1 < v2 < v3 and other == 0 and st.version("w") == 0

    def test_interests_round_trip_and_clear(self, make) -> None:
        st = make(5)
        vec = np.linspace(-1, 1, 8).astype(np.float32)
        st.set_interests("u", vec, "gothic novels")
        got = st.state("u")
        assert got.interests_text == "gothic novels" == st.interests_text("u")
        np.testing.assert_array_equal(got.interests, vec)
        st.set_interests("u", None, None)
        assert st.state("u").interests is None and st.interests_text("u") is None

    def test_forget_removes_everything_of_that_user(self, make) -> None:
        st = make(5)
        for u in ("gone", "stays"):
            st.apply(ev(u, "a", 1.0), 0)
            st.set_interests(u, np.ones(4, np.float32), "poetry")
        st.forget("gone")
        assert "gone" not in st and st.version("gone") == 0 and st.seen("gone") == set()
        assert st.state("gone").history == () and st.interests_text("gone") is None
        assert "stays" in st and st.seen("stays") == {0}
        st.forget("never-there")  # erasing twice, or a stranger, is fine

    def test_batched_writes_are_all_there_after_the_batch(self, make) -> None:
        st = make(50)
        with st.batch():
            with st.batch():  # nested: the outer one sends
                for t in range(30):
                    st.apply(ev(f"u{t % 3}", "abcde"[t % 5], float(t)), t % 5)
            st.set_interests("u0", np.ones(4, np.float32), "maps")
        assert [len(st.state(f"u{i}").history) for i in range(3)] == [10, 10, 10]
        assert st.interests_text("u0") == "maps" and st.seen("u1") == {0, 1, 2, 3, 4}

    def test_fresh_is_an_empty_rebuild_target(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "a", 1.0), 0)
        rebuilt = st.fresh()
        assert "u" not in rebuilt and rebuilt.history_length == 5
