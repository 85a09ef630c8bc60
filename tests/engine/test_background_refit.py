"""A background re-fit on a store another process can open: the child process reads the log,
fits, rebuilds the users and serialises the model set itself; the engine then serves what a fit
here serves, and keeps what was recorded (or erased) while the child ran."""

from __future__ import annotations

import pytest

from liverec import Engine, Event, Settings
from liverec import lifecycle
from liverec.jobs import LocalJobs, ProcessJobs
from liverec.lifecycle import fit_from_store
from liverec.store import Store
from served import Served

T0 = 1_700_000_000.0
USERS = ["u0", "u1", "u2", "u3", "late", "nobody"]


def ev(user: str, item: str, t: float, kind: str = "click") -> Event:
    return Event(user=user, item=item, kind=kind, timestamp=T0 + t)


def served(eng: Engine) -> Served:
    return Served({u: [(r.item, r.score) for r in eng.recommend(u, k=10, log=False)] for u in USERS})


def spy_on_children(monkeypatch, during=lambda: None) -> list[str]:
    """The job functions run by child processes; ``during()`` runs in the fit's thread just before
    the first child starts (after the fit read the log's position)."""
    ran: list[str] = []
    real_map = ProcessJobs.map

    def spy(self, fn, shared, jobs):
        ran.append(fn.__name__)
        if len(ran) == 1:
            during()
        return real_map(self, fn, shared, jobs)

    monkeypatch.setattr(ProcessJobs, "map", spy)
    return ran


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request, tmp_path) -> str:
    """A store another process can open: a SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return file_url(tmp_path)
    return request.getfixturevalue("postgres_url")()


def file_url(path) -> str:
    path.mkdir(exist_ok=True)
    return f"sqlite:///{path / 'rec.db'}"


def engine(url: str, encoder, books) -> Engine:
    eng = Engine.open(url, settings=Settings(encoder_progress=False), encoder=encoder)
    eng.add_items(books[:200])
    eng.record_many([ev(f"u{j % 4}", str(2 + (j * 7) % 60), t=j, kind="like" if j % 5 else "click")
                     for j in range(120)])
    return eng


def test_a_background_fit_from_the_store_serves_what_a_fit_here_serves(url, encoder, books, monkeypatch):
    eng = engine(url, encoder, books)
    eng.fit()
    here = served(eng)
    ran = spy_on_children(monkeypatch)
    version = eng.models.version
    eng.fit(background=True).join(300)  # type: ignore[union-attr]
    assert eng.last_fit_error is None and eng.models.version == version + 1
    assert ran == ["fit_from_store"]  # the log, the fit and the snapshot body made in one child
    assert served(eng) == here
    assert eng.snapshots.last_write is not None and eng.snapshots.last_write["log_seq"] == 120
    eng.close()


def refit_while_recording(path, encoder, books, monkeypatch) -> dict[str, list[tuple[str, float]]]:
    """A background fit during which events are recorded and a user is erased, after the fit read
    the log (a child's job run here, to place them exactly); what is served after it."""
    eng = engine(file_url(path), encoder, books)
    eng.record_many([ev("gone", "7", t=200), ev("gone", "8", t=201)])
    eng.fit()
    written = eng.snapshots.last_write
    real_fit = lifecycle.fit_model_set

    def record_then_fit(*args):  # the log is read (and the erasure count checked) by now
        eng.record_many([ev("late", "9", t=300), ev("late", "10", t=301), ev("u1", "11", t=302)])
        eng.delete_user("gone")
        return real_fit(*args)

    monkeypatch.setattr(lifecycle, "fit_model_set", record_then_fit)
    monkeypatch.setattr(lifecycle, "ProcessJobs", LocalJobs)
    eng.fit(background=True).join(300)  # type: ignore[union-attr]
    monkeypatch.undo()
    assert eng.last_fit_error is None
    assert_kept(eng)
    assert eng.snapshots.last_write == written  # the fit read an erased user: no snapshot of it
    got = served(eng)
    eng.close()
    return got


def assert_kept(eng: Engine) -> None:
    """What was recorded during the fit is learned; the user erased during it is forgotten."""
    assert [e.item for e in eng.history("late")] == ["9", "10"]
    assert [e.item for e in eng.user_state("late").history] == ["9", "10"]
    assert "late" in eng.learners["content"].profiles_ and "gone" not in eng.learners["content"].profiles_
    assert eng.user_state("gone").history == () and eng.history("gone") == []


def test_events_and_erasures_during_a_background_fit_from_the_store_are_kept(tmp_path, encoder, books, monkeypatch):
    """Recorded meanwhile: learned; erased meanwhile: forgotten, no snapshot; the same models as a
    background fit that read the log here."""
    from_store = refit_while_recording(tmp_path / "a", encoder, books, monkeypatch)
    monkeypatch.setattr(Store, "shareable_url", lambda self: None)  # as for an in-memory store
    read_here = refit_while_recording(tmp_path / "b", encoder, books, monkeypatch)
    assert from_store == read_here


def test_a_user_erased_before_the_child_read_the_log_has_the_fit_read_it_here(tmp_path, encoder, books, monkeypatch):
    eng = engine(file_url(tmp_path), encoder, books)
    eng.record_many([ev("gone", "7", t=200), ev("gone", "8", t=201)])
    eng.fit()

    def meanwhile() -> None:
        eng.record_many([ev("late", "9", t=300), ev("late", "10", t=301), ev("u1", "11", t=302)])
        eng.delete_user("gone")

    ran = spy_on_children(monkeypatch, meanwhile)
    eng.fit(background=True).join(300)  # type: ignore[union-attr]
    assert ran == ["fit_from_store", "_fit_learner"] and eng.last_fit_error is None
    assert_kept(eng)
    assert eng.snapshots.last_write is not None and eng.snapshots.last_write["log_seq"] == 125
    monkeypatch.undo()
    after_refit = served(eng)
    eng.fit()  # the log the second read got, fitted here
    assert served(eng) == after_refit
    eng.close()


def test_the_child_job_reads_only_up_to_the_position_it_is_given(tmp_path, encoder, books):
    eng = engine(file_url(tmp_path), encoder, books)
    eng.fit()
    read = eng.lifecycle.read_log(events=False)
    eng.record(ev("late", "9", t=300))
    try:
        body, fitted, cursor = eng.lifecycle.fit_in_child(read, _Here())
    finally:
        eng.lifecycle.fit_done(read)
    assert fitted == 120 and cursor == read.cursor  # one event behind: the swap learns it
    learners, users = eng.lifecycle.load_model_set(body)
    assert "late" not in users and "u0" in users and sorted(learners) == sorted(eng.learners)
    eng.close()


def refit_recording_only(path, encoder, books, monkeypatch) -> tuple[dict[str, list[tuple[str, float]]], int]:
    """A background fit during which events are recorded (no erasure); what is served after it
    and the log position of the snapshot it wrote."""
    eng = engine(file_url(path), encoder, books)
    eng.fit()
    real_fit = lifecycle.fit_model_set

    def record_then_fit(*args):
        eng.record_many([ev("late", "9", t=300), ev("late", "10", t=301), ev("u1", "11", t=302)])
        return real_fit(*args)

    monkeypatch.setattr(lifecycle, "fit_model_set", record_then_fit)
    monkeypatch.setattr(lifecycle, "ProcessJobs", LocalJobs)
    eng.fit(background=True).join(300)  # type: ignore[union-attr]
    monkeypatch.setattr(lifecycle, "fit_model_set", real_fit)
    assert eng.last_fit_error is None
    assert [e.item for e in eng.user_state("late").history] == ["9", "10"]
    written = eng.snapshots.last_write
    got = served(eng), int(written["log_seq"]) if written else -1
    eng.close()
    return got


def test_the_child_learns_what_was_recorded_while_it_fitted(tmp_path, encoder, books, monkeypatch):
    """Enough events behind (here: one), the child learns them before it returns: its snapshot
    reflects them, and the engine serves what a fit that read the log here serves."""
    monkeypatch.setattr(lifecycle, "REPLAY_BATCH", 1)
    in_child, seq = refit_recording_only(tmp_path / "a", encoder, books, monkeypatch)
    assert seq == 123  # the fit read 120 events, the child caught up on the 3 recorded meanwhile
    monkeypatch.setattr(Store, "shareable_url", lambda self: None)
    read_here, seq_here = refit_recording_only(tmp_path / "b", encoder, books, monkeypatch)
    assert in_child == read_here and seq_here == 120


def test_catching_up_stops_before_an_unknown_item_and_after_an_erasure(tmp_path, encoder, books, monkeypatch):
    import pickle

    from liverec.state import OnlineState

    monkeypatch.setattr(lifecycle, "REPLAY_BATCH", 1)
    eng = engine(file_url(tmp_path), encoder, books)
    catalog = pickle.loads(pickle.dumps(eng.catalog))  # as the child holds it: taken when the fit started
    cursor, erasures = eng.store.last_event_seq(), eng.store.counter("erasures")
    eng.record_many([ev("late", "9", t=300), ev("late", "10", t=301)])
    eng.add_items(books[200:201])
    eng.record_many([ev("late", books[200].id, t=302), ev("u1", "11", t=303)])
    life = eng.lifecycle
    users = OnlineState(50)
    learners = lifecycle.fit_model_set(life.new_learners(), users, lifecycle.log_until(eng.store, cursor), catalog,
                                       LocalJobs())
    assert lifecycle.catch_up_from_store(eng.store, learners, users, catalog, cursor, erasures) == cursor + 2
    assert [e.item for e in users.state("late").history] == ["9", "10"]
    assert lifecycle.catch_up_from_store(eng.store, learners, users, eng.catalog, cursor + 2, erasures) == cursor + 4
    eng.delete_user("u3")
    eng.record(ev("u0", "12", t=400))
    assert lifecycle.catch_up_from_store(eng.store, learners, users, eng.catalog, cursor + 4, erasures) == cursor + 4
    eng.close()


def test_catching_up_goes_on_while_each_round_leaves_less_behind(tmp_path, encoder, books, monkeypatch):
    """A log that grows while the child learns: each round learns what the one before left, as
    long as that shrinks (here 8, 4, 2, 1 events behind: four rounds), and stops when a round
    leaves as much behind as the one before (the log grows as fast as it is learned)."""
    from liverec.state import OnlineState

    monkeypatch.setattr(lifecycle, "REPLAY_BATCH", 1)
    eng = engine(file_url(tmp_path), encoder, books)
    life = eng.lifecycle
    cursor, erasures = eng.store.last_event_seq(), eng.store.counter("erasures")
    users = OnlineState(50)
    learners = lifecycle.fit_model_set(life.new_learners(), users, lifecycle.log_until(eng.store, cursor), eng.catalog,
                                       LocalJobs())
    t = [500]

    def record(n: int) -> None:
        for _ in range(n):
            t[0] += 1
            eng.record(ev("busy", str(2 + t[0] % 60), t=t[0]))

    record(8)
    real = lifecycle.learn_events
    # Recorded as each event is learned: 4 during the first round's 8, 2 during the second's 4, 1 during the third's 2.
    arrivals = iter([4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 1, 0])

    def learn_while_recording(*args):
        real(*args)
        record(next(arrivals, 0))

    monkeypatch.setattr(lifecycle, "learn_events", learn_while_recording)
    assert lifecycle.catch_up_from_store(eng.store, learners, users, eng.catalog, cursor, erasures) == cursor + 15
    assert len(users.state("busy").history) == 15

    # As fast as it is learned: each event learned brings another; the second round stops.
    arrivals = iter([1] * 100)
    head = eng.store.last_event_seq()
    record(1)
    assert lifecycle.catch_up_from_store(eng.store, learners, users, eng.catalog, head, erasures) == head + 1
    eng.close()


class _Here:
    """Runs the child's job in this process (what the child would return, without a process)."""

    side_by_side = False

    def map(self, fn, shared, jobs):
        assert fn is fit_from_store
        return [fn(shared, job) for job in jobs]


def test_a_two_stage_engine_gets_learners_with_their_graphs_from_the_child(tmp_path, encoder, books, monkeypatch):
    """Serving in two stages, the child builds ALS's factor graph into the body it sends: the
    learners loaded here already have it (no request or swap waits for one), and serve as a fit here."""
    eng = Engine.open(file_url(tmp_path), settings=Settings(encoder_progress=False, exact_index_max_items=100),
                      encoder=encoder)
    eng.add_items(books[:200])
    eng.record_many([ev(f"u{j % 4}", str(2 + (j * 7) % 60), t=j) for j in range(120)])
    assert eng.index.uses_ann
    eng.fit()
    here = served(eng)
    loaded = []
    real = lifecycle.Lifecycle.load_model_set

    def spy(self, body):
        learners, users = real(self, body)
        loaded.append(learners["als"].__dict__.get("factor_index_"))
        return learners, users

    monkeypatch.setattr(lifecycle.Lifecycle, "load_model_set", spy)
    ran = spy_on_children(monkeypatch)
    eng.fit(background=True).join(300)  # type: ignore[union-attr]
    assert ran == ["fit_from_store"] and eng.last_fit_error is None
    assert len(loaded) == 1 and loaded[0] is not None and len(loaded[0]) > 0
    assert served(eng) == here
    eng.close()
