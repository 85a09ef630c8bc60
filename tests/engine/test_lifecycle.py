"""The model lifecycle on its own (no Engine): fits swap models into the shared holder, a restore from
a snapshot + log tail serves what the writer served, a failing background fit keeps the old models,
users erased during a fit stay erased, and the log's growth starts a re-fit."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from liverec import Event, Item, Settings
from liverec.encode import Catalog
from liverec.errors import ConflictError
from liverec import lifecycle
from liverec.items import Items
from liverec.jobs import LocalJobs, ProcessJobs
from liverec.lifecycle import Lifecycle, Models, learn_all
from liverec.models import ContentProfile, ItemKNN
from liverec.rank.feedback import SlateFeedback
from liverec.rank.index import VectorIndex
from liverec.replica import ReplicaSync
from liverec.snapshot import Snapshots
from liverec.state import OnlineState
from liverec.store import Store
from liverec.store.snapshots import snapshot_repo

T0 = 1_700_000_000.0
SOURCES = {"content": {}, "itemknn": {}, "trending": {}}
WORDS = ["dragon", "ship", "love", "murder", "space", "king", "garden", "war", "ghost", "city"]


class Letters:
    """A tiny encoder: one dimension per vowel (no language model needed)."""

    model_id, dim = "letters", 5

    def encode(self, texts, private=False, progress=False):
        return np.array([[t.count(v) + 1.0 for v in "aeiou"] for t in texts], np.float32).reshape(-1, 5)


@dataclass
class Parts:
    """What an engine hands its lifecycle, built without an engine."""

    life: Lifecycle
    models: Models
    state: OnlineState
    catalog: Catalog
    store: Store
    lock: threading.RLock

    def learn(self, events: list[Event]) -> None:
        """Learn events live, as the ingestor does after appending them."""
        with self.lock:
            learn_all(self.models.learners, events)
            for e in events:
                self.state.apply(e, self.catalog.get_idx(e.item))
            self.life.learned(len(events))


def parts(store: Store, settings: Settings) -> Parts:
    catalog, lock, write_lock, enc = Catalog(), threading.RLock(), threading.RLock(), Letters()
    index = VectorIndex(catalog)
    items = Items(store, catalog, enc, settings.text_template, lock, index=lambda: index)  # type: ignore[arg-type]
    state = OnlineState(settings.history_length)
    replica = ReplicaSync(store, catalog, lock, write_lock=write_lock, learn=lambda e: None, own=set(), load_items=items.load,
                          set_interests=lambda user, text: False, refit=lambda: None, fit_running=lambda: False)
    models = Models.stored(store, settings)
    life = Lifecycle(
        models, store, settings, catalog, lock, state, write_lock=write_lock,
        snapshots=Snapshots(snapshot_repo(store, settings.snapshot_dir), settings.snapshot_keep), replica=replica,
        served=SlateFeedback(store, {}, lambda e: 0.0, settings.fusion_learning_rate), load_items=items.load_all,
        encoder_id=enc.model_id, encode=enc.encode,
    )
    return Parts(life, models, state, catalog, store, lock)


def events(n: int, *, seed: int, t: float = 0.0, users: int = 6, items: int = 30) -> list[Event]:
    rng = np.random.default_rng(seed)
    return [Event(user=f"u{int(rng.integers(users))}", item=f"b{int(rng.integers(items))}", kind="click",
                  timestamp=T0 + t + j, id=f"s{seed}-{j}") for j in range(n)]


@pytest.fixture
def store(tmp_path):
    s = Store.open(f"sqlite:///{tmp_path / 'rec.db'}")
    s.upsert_items([Item(id=f"b{i}", text=f"{WORDS[i % 10]} {WORDS[(i * 3) % 10]} book {i}") for i in range(30)])
    yield s
    s.close()


def scores(p: Parts, users: list[str]) -> dict[str, list[float]]:
    ids = p.catalog.from_idx(p.catalog.alive_idx())
    return {f"{u}/{name}": m.score(p.state.state(u), ids).tolist()
            for u in users for name, m in sorted(p.models.learners.items())}


SETTINGS = Settings(encoder_progress=False, sources=SOURCES, snapshot_every_events=0, snapshot_interval_s=0)


def test_open_fits_the_whole_log_and_every_fit_swaps_new_models_in(store):
    store.append_events(events(80, seed=1))
    p = parts(store, SETTINGS)
    assert p.models.version == 0 and p.models.learners == {}
    assert p.life.open() is None  # no snapshot yet: fitted from the whole log (and one written)
    assert sorted(p.models.learners) == sorted(SOURCES) and p.models.version == 1
    assert len(p.catalog) == 30 and p.state.count() == 6
    assert p.life.snapshots.log_seq == 80 and p.life.fit_events == 80
    before = p.models.learners
    store.append_events(events(20, seed=2, t=100, users=8))
    p.life.fit()
    assert p.models.version == 2 and p.models.learners is not before
    assert p.life.replica.cursor == 100 and p.life.fit_events == 100 and p.life.since_fit == 0
    assert p.life.last_fit_seconds is not None and p.life.last_fit_error is None
    assert "u7" in p.models.learners["content"].profiles_ and p.state.count() == 8
    assert p.life.pending_erasures == []


def test_a_restore_from_the_snapshot_and_the_log_tail_serves_what_the_writer_served(store, monkeypatch):
    users = ["u0", "u3", "u5", "nobody"]
    store.append_events(events(120, seed=3))
    writer = parts(store, SETTINGS)
    writer.life.open()
    tail = events(40, seed=4, t=500)
    store.append_events(tail)
    writer.learn(tail)  # learned live after the fit's snapshot
    expected = scores(writer, users)

    def refit(self, read=None, jobs=None):
        raise AssertionError("re-fitted from the whole log instead of loading the snapshot")

    monkeypatch.setattr(Lifecycle, "rebuild", refit)
    again = parts(store, SETTINGS)
    restored = again.life.open()
    assert restored is not None and restored.log_seq == 120
    assert again.life.replica.cursor == 160 and again.models.version == 1  # the tail was replayed
    assert again.life.fit_events == 120
    assert scores(again, users) == expected


def test_a_background_fit_runs_in_a_child_process_and_swaps_in_what_a_fit_here_gives(store, monkeypatch):
    store.append_events(events(80, seed=7))
    p = parts(store, SETTINGS)
    p.life.open()
    users = ["u0", "u3", "nobody"]
    here = scores(p, users)
    children = []
    real_map = ProcessJobs.map

    def spy(self, fn, shared, jobs):
        children.append(len(jobs))
        return real_map(self, fn, shared, jobs)

    monkeypatch.setattr(ProcessJobs, "map", spy)
    version = p.models.version
    p.life.fit(background=True).join(120)
    assert children == [1]  # one child read the log, fitted every source and made the snapshot body
    assert p.life.last_fit_error is None and p.models.version == version + 1
    assert scores(p, users) == here


def test_a_failing_fit_keeps_the_old_models_and_a_background_one_reports_why(store, monkeypatch):
    store.append_events(events(60, seed=5))
    p = parts(store, SETTINGS)
    p.life.open()
    learners, version = p.models.learners, p.models.version

    def broken(self, log):
        raise RuntimeError("out of memory")

    with monkeypatch.context() as mp:
        mp.setattr(ItemKNN, "fit", broken)
        mp.setattr(lifecycle, "ProcessJobs", LocalJobs)  # the broken fit runs here, not in a child process
        p.life.fit(background=True).join(120)
        assert p.life.last_fit_error == "RuntimeError: out of memory"
        assert p.models.learners is learners and p.models.version == version
        assert p.life.pending_erasures == []  # the failed fit stopped tracking erasures
        with pytest.raises(RuntimeError, match="out of memory"):  # in the foreground it raises
            p.life.fit()
        assert p.models.learners is learners and p.life.last_fit_error == "RuntimeError: out of memory"
    p.life.fit(background=True).join(120)
    assert p.life.last_fit_error is None and p.models.version == version + 1


def test_users_erased_during_a_background_fit_are_forgotten_at_its_swap(store, monkeypatch):
    store.append_events([Event(user="gone", item="b1", timestamp=T0 + 1, id="g1")] + events(60, seed=6))
    p = parts(store, SETTINGS)
    p.life.open()
    written = p.life.snapshots.last_write
    started, release = threading.Event(), threading.Event()
    real_fit = ContentProfile.fit

    def slow_fit(self, log):
        started.set()
        release.wait(10)
        return real_fit(self, log)

    monkeypatch.setattr(ContentProfile, "fit", slow_fit)
    monkeypatch.setattr(lifecycle, "ProcessJobs", LocalJobs)  # held open here, not in a child process
    thread = p.life.fit(background=True)
    assert started.wait(10) and p.life.running
    with pytest.raises(ConflictError):
        p.life.fit(background=True)
    with p.lock:  # what an engine's erasure does, as far as the lifecycle is concerned
        gone = store.user_events("gone")
        store.delete_user("gone")
        p.life.erased("gone", gone)
    late = [Event(user="late", item="b2", timestamp=T0 + 900, id="l1")]
    store.append_events(late)
    p.learn(late)  # learned by the old learners now, replayed into the new ones at the swap
    release.set()
    thread.join(120)
    assert not p.life.running and p.life.last_fit_error is None
    assert "gone" not in p.models.learners["content"].profiles_ and "gone" not in p.state
    assert "late" in p.models.learners["content"].profiles_ and "late" in p.state
    assert p.life.snapshots.last_write == written  # the fit read an erased user: no snapshot of it


def test_the_log_growing_past_refit_growth_starts_a_background_refit(store):
    s = SETTINGS.model_copy(update={"refit_growth": 0.5, "refit_min_events": 40})
    store.append_events(events(60, seed=7))
    p = parts(store, s)
    p.life.open()
    version = p.models.version
    first = events(29, seed=8, t=100)
    store.append_events(first)
    p.learn(first)
    assert p.life.thread is None and p.life.since_fit == 29  # 29 < 0.5 x 60
    last = events(1, seed=9, t=200)
    store.append_events(last)
    p.learn(last)
    assert p.life.thread is not None
    p.life.thread.join(120)
    assert p.models.version == version + 1 and p.life.fit_events == 90 and p.life.since_fit == 0


def _swap_after_a_long_tail(path, monkeypatch, rounds: int) -> tuple[list[bool], dict[str, list[float]]]:
    """A background fit held open while 50 events arrive; (whether each replay ran outside
    the lock, the swapped-in scores)."""
    store = Store.open(f"sqlite:///{path}")
    store.append_events(events(60, seed=10))
    p = parts(store, SETTINGS)
    p.life.open()
    started, release = threading.Event(), threading.Event()
    real_fit, real_replay = ContentProfile.fit, Lifecycle.replay
    unlocked: list[bool] = []

    def slow_fit(self, log):
        started.set()
        release.wait(10)
        return real_fit(self, log)

    def replay(self, learners, users, cursor, until=None, pace=0.0):
        unlocked.append(until is not None)
        assert (pace > 0) == (until is not None)  # the rounds before the write lock are paced
        return real_replay(self, learners, users, cursor, until, pace)

    monkeypatch.setattr(ContentProfile, "fit", slow_fit)
    monkeypatch.setattr(Lifecycle, "replay", replay)
    monkeypatch.setattr(lifecycle, "ProcessJobs", LocalJobs)  # held open here, not in a child process
    monkeypatch.setattr(lifecycle, "REPLAY_BATCH", 8)
    monkeypatch.setattr(lifecycle, "SWAP_TAIL", 8)
    monkeypatch.setattr(lifecycle, "SWAP_ROUNDS", rounds)
    thread = p.life.fit(background=True)
    assert started.wait(10)
    tail = events(50, seed=11, t=500, users=9)
    store.append_events(tail)
    p.learn(tail)
    release.set()
    thread.join(120)
    assert p.life.last_fit_error is None and p.life.replica.cursor == 110
    got = scores(p, ["u0", "u7", "u8"])
    store.close()
    monkeypatch.undo()
    return unlocked, got


def test_events_recorded_during_a_background_fit_are_caught_up_outside_the_lock(tmp_path, monkeypatch):
    """A long tail is learned into the new learners mostly outside the locks; the swapped-in
    models are those of replaying all of it under the write lock."""
    unlocked, caught_up = _swap_after_a_long_tail(tmp_path / "a.db", monkeypatch, lifecycle.SWAP_ROUNDS)
    assert unlocked == [True, False]  # one round of catching up, then the last few under the write lock
    locked, under_lock = _swap_after_a_long_tail(tmp_path / "b.db", monkeypatch, 0)
    assert locked == [False]
    assert caught_up == under_lock


def test_a_paced_replay_yields_after_each_run_and_learns_what_an_unpaced_one_learns(store, monkeypatch):
    import copy

    from liverec.models import UserState

    store.append_events(events(60, seed=12))
    p = parts(store, SETTINGS)
    p.life.open()
    store.append_events(events(40, seed=13, t=500))
    monkeypatch.setattr(lifecycle, "REPLAY_BATCH", 8)
    calls: list[object] = []
    p.life.catching_up = lambda: calls.append("catching up")
    paced, plain = copy.deepcopy(p.models.learners), copy.deepcopy(p.models.learners)
    real_sleep = lifecycle.time.sleep
    monkeypatch.setattr(lifecycle.time, "sleep", calls.append)
    assert p.life.replay(paced, p.life.state.fresh(), 60, pace=2.0) == 100
    monkeypatch.setattr(lifecycle.time, "sleep", real_sleep)
    # 40 events in runs of 8: after each run the hook, then a sleep twice as long as the run
    assert calls[0::2] == ["catching up"] * 5 and all(isinstance(s, float) and s > 0 for s in calls[1::2])
    assert len(calls) == 10
    assert p.life.replay(plain, p.life.state.fresh(), 60) == 100 and len(calls) == 10  # unpaced: neither
    items = p.catalog.from_idx(p.catalog.alive_idx())
    for name in plain:
        for u in ("u0", "u3", "u5"):
            np.testing.assert_array_equal(paced[name].score(UserState(u), items), plain[name].score(UserState(u), items))
