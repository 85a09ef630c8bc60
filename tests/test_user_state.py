"""The user state contract on both backends (process memory, Redis), and what only Redis does."""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pytest

from checks.user_state_checks import CATALOG, REDIS_URL, UserStateContract, ev, redis_client, redis_prefix
from liverec.errors import ValidationError
from liverec.settings import Settings
from liverec.store import Store
from liverec.state import OnlineState, open_user_state, refill_from_log, user_from_events
from liverec.state_redis import REFILL_CLAIM_S, RedisUserState, StateUnavailableError, check_state_url


class TestMemory(UserStateContract):
    @pytest.fixture
    def make(self) -> Callable[[int], OnlineState]:
        return OnlineState

    def test_records_and_adopt_carry_users_for_snapshots_and_fits(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "a", 1.0), 0)
        st.set_interests("fan", np.ones(4, np.float32), "opera")
        assert [(u, len(rows), seen) for u, rows, seen in st.records()] == [("u", 1, [0])]
        rebuilt = st.fresh()
        rebuilt.apply(ev("w", "b", 2.0), 1)
        st.adopt(rebuilt)
        assert "u" not in st and st.seen("w") == {1} and st.interests_text("fan") == "opera"
        assert st.complete() and st.count() == 2


@pytest.fixture
def prefix() -> Iterator[str]:
    yield from redis_prefix()


class TestRedis(UserStateContract):
    @pytest.fixture
    def make(self, prefix: str) -> Iterator[Callable[[int], RedisUserState]]:
        opened: list[RedisUserState] = []

        def make(history_length: int) -> RedisUserState:
            opened.append(RedisUserState.open(REDIS_URL, prefix=prefix, history_length=history_length,
                                              idx_of=CATALOG.get))
            return opened[-1]

        yield make
        for st in opened:
            st.close()

    def test_writes_are_idempotent(self, make) -> None:
        st = make(5)
        e = ev("u", "a", 1.0, value=2.0)
        st.apply(e, 0)
        v = st.version("u")
        st.apply(e, 0)  # a replica replaying the log, or two replicas writing the same event
        assert len(st.state("u").history) == 1 and st.version("u") == v

    def test_history_is_kept_in_time_order(self, make) -> None:
        st = make(2)
        for t in (3.0, 1.0, 2.0):
            st.apply(ev("u", "a", t), 0)
        assert [e.timestamp for e in st.state("u").history] == [2.0, 3.0]

    def test_seen_is_mapped_to_this_replicas_dense_order(self, make, prefix) -> None:
        make(5).apply(ev("u", "b", 1.0), 1)
        other = RedisUserState.open(REDIS_URL, prefix=prefix, history_length=5, idx_of={"b": 7}.get)
        assert other.seen("u") == {7}
        other.close()

    def test_two_prefixes_on_one_redis_do_not_mix(self, make) -> None:
        a = make(5)
        a.apply(ev("u", "a", 1.0), 0)
        for b_prefix in redis_prefix():
            b = RedisUserState.open(REDIS_URL, prefix=b_prefix, history_length=5, idx_of=CATALOG.get)
            assert "u" not in b and b.state("u").history == ()
            b.apply(ev("u", "c", 2.0), 2)
            b.forget("u")
            b.close()
        assert a.seen("u") == {0}

    def test_forget_leaves_no_key_naming_the_user(self, make, prefix) -> None:
        st = make(5)
        st.apply(ev("erase-me-7", "a", 1.0), 0)
        st.set_interests("erase-me-7", np.ones(4, np.float32), "secret")
        r = redis_client()
        assert list(r.scan_iter(match=f"{prefix}:*erase-me-7*"))
        st.forget("erase-me-7")
        assert not list(r.scan_iter(match=f"{prefix}:*erase-me-7*"))

    def test_complete_until_the_data_is_lost(self, make, prefix) -> None:
        st = make(5)
        assert not st.complete()  # never filled
        st.mark_complete()
        st.apply(ev("u", "a", 1.0), 0)
        v = st.version("u")
        assert st.complete() and st.records() is not None and list(st.records()) == []  # snapshots hold no users
        r = redis_client()
        r.delete(*r.scan_iter(match=f"{prefix}:*"))  # Redis restarted empty
        assert not st.complete() and "u" not in st
        st.apply(ev("u", "a", 1.0), 0)
        assert st.version("u") > v  # versions keep growing: no cached list of before the loss matches

    def test_until_redis_holds_every_user_reads_come_from_the_fallback(self, make) -> None:
        st = make(5)
        st.apply(ev("u", "a", 1.0), 0)
        st.fallback = lambda user: user_from_events(user, [ev(user, "b", 2.0)], CATALOG.get, history_length=5)
        assert st.view("u")[1] == {1}  # lost or being refilled: the store is exact
        st.mark_complete()
        assert st.view("u")[1] == {0}

    def test_one_replica_refills_at_a_time(self, make, prefix) -> None:
        a, b = make(5), make(5)
        assert a.claim_refill() and not b.claim_refill()
        assert 0 < redis_client().ttl(f"{prefix}:users:refilling") <= REFILL_CLAIM_S  # a crashed refill expires
        with a.batch():
            a.apply(ev("u", "a", 1.0), 0)
        assert not b.claim_refill()
        a.mark_complete()
        assert a.complete() and b.complete() and b.claim_refill()  # released

    def test_a_refill_does_not_bring_back_a_user_erased_meanwhile(self, make) -> None:
        store = Store.open("sqlite://")
        store.append_events([ev("gone", "a", 1.0), ev("keep", "b", 2.0), ev("keep", "c", 3.0)])
        store.set_interests("fan", "opera")
        st, read = make(5), store.iter_events

        def iter_events(**kw):  # another replica erases "gone" after its event was read, before it is written
            for seq, e in read(**kw):
                yield seq, e
                if e.user == "gone":
                    store.delete_user("gone")
                    st.forget("gone")

        store.iter_events = iter_events
        assert refill_from_log(st, store, CATALOG.get, lambda texts: np.ones((len(texts), 4), np.float32)) == 3
        assert "gone" not in st and st.seen("keep") == {1, 2} and st.interests_text("fan") == "opera"
        store.close()

    def test_unreachable_redis(self, make) -> None:
        down = RedisUserState.open("redis://127.0.0.1:1/0", prefix="x", history_length=5, idx_of=CATALOG.get)
        down.apply(ev("u", "a", 1.0), 0)  # durable in the log: logged, refilled later
        assert down.view("u")[0].history == ()  # served cold
        assert down.version("u") < 0 and down.version("u") != down.version("u")  # never from a cache
        assert down.down and down.complete()  # nothing to refill while it cannot be reached
        down.fallback = lambda user: user_from_events(user, [ev(user, "b", 2.0)], CATALOG.get, history_length=5)
        assert down.view("u")[1] == {1}  # rebuilt from the store instead
        with pytest.raises(StateUnavailableError) as exc:
            down.forget("u")
        assert "again" in exc.value.fix

    def test_a_failed_write_asks_for_a_refill(self, make) -> None:
        st = make(5)
        st.mark_complete()
        real, st.r = st.r, RedisUserState.open("redis://127.0.0.1:1/0", prefix="x", history_length=5,
                                                idx_of=CATALOG.get).r
        st.apply(ev("u", "a", 1.0), 0)
        st.r = real
        assert not st.complete()  # the lost write is refilled from the log
        st.mark_complete()
        assert st.complete()


def test_settings_choose_the_backend() -> None:
    assert isinstance(open_user_state(Settings(), CATALOG.get), OnlineState)
    st = open_user_state(Settings(state=REDIS_URL, state_prefix="p1"), CATALOG.get)
    assert isinstance(st, RedisUserState) and st.keys("u")[0] == "p1:uh:u"
    st.close()


def test_a_state_url_that_is_not_redis_names_every_way_to_set_it() -> None:
    with pytest.raises(ValidationError) as exc:
        check_state_url("postgresql://db")
    assert exc.value.field == "state" and "--state" in exc.value.fix and "LIVEREC_STATE" in exc.value.fix
    with pytest.raises(ValidationError):
        open_user_state(Settings(state="memory"), CATALOG.get)
