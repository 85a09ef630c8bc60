"""Fits that overlap: each one forgets the users erased after its own read of the log."""

from __future__ import annotations

import threading

from liverec import Engine, Event, Settings, lifecycle
from liverec.jobs import LocalJobs
from liverec.models import ContentProfile

T0 = 1_700_000_000.0
SOURCES = {"content": {}, "itemknn": {}}


def ev(user, item, t=0.0):
    return Event(user=user, item=item, kind="click", timestamp=T0 + t)


def test_a_fit_during_a_background_fit_leaves_the_erased_user_erased(encoder, books, monkeypatch):
    eng = Engine.open(settings=Settings(encoder_progress=False, sources=SOURCES), encoder=encoder)
    eng.add_items(books[:200])
    eng.record_many([ev(f"u{j % 4}", str(2 + j % 50), t=j) for j in range(60)])
    eng.record_many([ev("gone", "7", t=1), ev("gone", "8", t=2), ev("later", "9", t=3), ev("later", "10", t=4)])
    started, release = threading.Event(), threading.Event()
    real_fit, calls = ContentProfile.fit, []

    def slow_fit(self, log):  # the first (background) fit waits until released
        calls.append(len(log))
        if len(calls) == 1:
            started.set()
            release.wait(10)
        return real_fit(self, log)

    monkeypatch.setattr(ContentProfile, "fit", slow_fit)
    monkeypatch.setattr(lifecycle, "ProcessJobs", LocalJobs)  # held open here, not in a child process
    thread = eng.fit(background=True)
    assert started.wait(10)
    eng.delete_user("gone")  # the background fit read their events: it must forget them at its swap
    eng.fit()  # a fit in the foreground swaps first
    assert "gone" not in eng.learners["content"].profiles_
    eng.delete_user("later")  # after that swap: the background fit still has to forget them
    release.set()
    thread.join(120)
    assert not eng.fit_running and eng.last_fit_error is None
    assert calls == [64, 62]  # the background fit read "gone"'s events, the foreground one did not
    for user in ("gone", "later"):
        assert user not in eng.learners["content"].profiles_
        assert eng.user_state(user).history == ()
    eng.close()
