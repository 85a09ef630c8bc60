"""ResponseCache on its own: version-checked, time-limited, LRU by user, thread-safe."""

from __future__ import annotations

import threading
import time

from liverec.service.cache import ResponseCache


def make(size: int = 100, ttl: float = 60.0) -> tuple[ResponseCache, dict[str, tuple[int, ...]]]:
    versions: dict[str, tuple[int, ...]] = {}
    return ResponseCache(size=size, ttl=ttl, version_of=lambda u: versions.setdefault(u, (0,))), versions


def test_an_entry_lives_until_the_users_version_moves() -> None:
    cache, versions = make()
    cache.put("u1", "k", (0,), b"[1]", (("b1", 0, 1.0, 1.0),))
    assert cache.get("u1", "k") == (b"[1]", (("b1", 0, 1.0, 1.0),))
    assert cache.get("u1", "other") is None and cache.get("u2", "k") is None
    versions["u1"] = (1,)
    assert cache.get("u1", "k") is None
    assert len(cache) == 0  # the stale entry is dropped, not kept


def test_an_answer_computed_before_a_change_is_not_cached() -> None:
    cache, versions = make()
    computed_at = cache.version_of("u1")
    versions["u1"] = (1,)  # an event arrived while the answer was computed
    cache.put("u1", "k", computed_at, b"[]", [])
    assert cache.get("u1", "k") is None and "u1" not in cache


def test_entries_expire_after_ttl() -> None:
    cache, _ = make(ttl=0.05)
    cache.put("u1", "k", (0,), b"[]", [])
    assert cache.get("u1", "k") is not None
    time.sleep(0.08)
    assert cache.get("u1", "k") is None


def test_least_recently_used_users_go_first() -> None:
    cache, _ = make(size=3)
    cache.put("a", 1, (0,), b"a1", [])
    cache.put("a", 2, (0,), b"a2", [])
    cache.put("b", 1, (0,), b"b1", [])
    assert cache.get("a", 1) is not None  # a is now the most recent user
    cache.put("c", 1, (0,), b"c1", [])  # 4 entries > 3: the least recent user (b) goes
    assert "b" not in cache and "a" in cache and "c" in cache and len(cache) == 3


def test_forget_drops_every_entry_of_the_user() -> None:
    cache, _ = make()
    for k in range(3):
        cache.put("u1", k, (0,), b"[]", [])
    cache.put("u2", 0, (0,), b"[]", [])
    assert cache.forget("u1") == 3 and cache.forget("u1") == 0
    assert len(cache) == 1 and "u1" not in cache


def test_size_zero_caches_nothing() -> None:
    cache, _ = make(size=0)
    cache.put("u1", "k", (0,), b"[]", [])
    assert cache.get("u1", "k") is None and len(cache) == 0


def test_the_count_stays_exact_under_concurrent_use() -> None:
    cache, _ = make(size=50)

    def work(t: int) -> None:
        for i in range(2000):
            user = f"u{(t * 7 + i) % 40}"
            cache.put(user, i % 5, (0,), b"[]", [])
            cache.get(user, (i + 1) % 5)
            if i % 97 == 0:
                cache.forget(user)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    held = sum(len(e) for e in cache._users.values())
    assert len(cache) == held <= 50
