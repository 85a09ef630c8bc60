"""The model lifecycle: fit, tune, periodic re-fit, restore (snapshot + log tail) and snapshot.

Two objects, shared by the engine's parts:

- :class:`Models` holds the current model set: the learners, the feedback reading, the
  tuned configuration, the learned fusion weights and a version that changes with every
  swap. Serving reads it (under the engine lock); the lifecycle replaces what it holds.
- :class:`Lifecycle` builds new model sets and swaps them into a :class:`Models`: a fit
  from the durable log (optionally tuned first, optionally in a background thread while
  the old learners keep serving), a restore at open from the newest compatible snapshot
  plus the log after it, and snapshots of the set as it is. It is handed everything it
  touches (store, settings, catalog, lock, user state, snapshots, replica cursor, served
  slates, callbacks); it holds no engine.

Events recorded during a fit are replayed into the new learners at the swap, and users
erased during a fit (:meth:`Lifecycle.erased`) are forgotten again there: nothing recorded
meanwhile is lost or resurrected.

Examples
--------
>>> models = Models.stored(store, settings)                                  # doctest: +SKIP
>>> life = Lifecycle(models, store, settings, catalog, lock, state, write_lock=write_lock, snapshots=snaps,
...                  replica=replica, served=served, load_items=items.load_all,
...                  encoder_id="all-MiniLM-L6-v2", encode=encode)           # doctest: +SKIP
>>> life.open()                                  # restore, or fit from the whole log  # doctest: +SKIP
>>> life.fit(); models.version                                               # doctest: +SKIP
2
>>> life.fit(background=True).join(); life.last_fit_error is None            # doctest: +SKIP
True
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from .encode.catalog import Catalog
from .errors import ConflictError, ValidationError
from .jobs import Failed, JobRunner, LocalJobs, ProcessJobs, job_runner
from .models import REGISTRY
from .models.base import BatchLearner, FeedbackConfig, InteractionLog, Learner, Popularity
from .rank.feedback import SlateFeedback
from .rank.ranker import offers, prepare_retrieval
from .rank.tuner import TunedConfig, Tuner
from .replica import ReplicaSync
from .settings import Settings
from .snapshot import ModelSet, Snapshots, compat_key
from .state import OnlineState, UserStateStore, refill_from_log
from .store import Store
from .store.snapshots import Body, Parts, SnapshotInfo
from .types import Event

if TYPE_CHECKING:
    from .rank.fusion import FusionFit

#: Events per run when the log tail is replayed (bounds the memory a run's updates take).
REPLAY_BATCH = 5000
#: Most rounds a fit's process learns the events recorded while it fitted (each round what the
#: one before left behind, while that shrinks; see catch_up_from_store).
CATCH_UP_ROUNDS = 20
#: The swap catches up outside the locks until fewer events than this are left (at most
#: SWAP_ROUNDS rounds): the rest is learned under the write lock, while writes wait (requests
#: are served by the old learners meanwhile).
SWAP_TAIL = 256
SWAP_ROUNDS = 10
#: The catch-up outside the locks sleeps this many times as long as each run of the replay
#: took: it then holds the interpreter at most a quarter of the time, and requests keep the
#: rest (unpaced, a catch-up of the events a busy log gained during a fit shared the GIL with
#: them evenly for seconds, and requests queued).
SWAP_PACE = 3.0

#: Users erased while a fit runs, with their events (the fit forgets them at its swap).
Erased = list[tuple[str, list[Event]]]


@dataclass(eq=False)
class Models:
    """The current model set: what serving reads and the lifecycle replaces (under the engine lock).

    Examples
    --------
    >>> m = Models(feedback=FeedbackConfig())
    >>> m.version, m.learners, m.base_weights({"trending": 0.5})
    (0, {}, {})
    """

    feedback: FeedbackConfig
    #: Source name -> learner; replaced as a whole at every swap.
    learners: dict[str, Learner] = field(default_factory=dict)
    #: What ``fit(tune=True)`` chose (persisted in the store), or None.
    tuned: TunedConfig | None = None
    #: Fusion weights learned by tuning or ``tune_fusion`` (persisted in the store), or None.
    learned_weights: dict[str, float] | None = None
    #: Changes with every swap (and every refill of a lost shared user state): caches key on it.
    version: int = 0
    #: Changes with every swap but a periodic re-fit's (and every refill): the response cache
    #: keys on it. A periodic re-fit leaves cached lists to expire with the user's next change
    #: or their age, as other users' events do, instead of every user's next request ranking
    #: at once.
    epoch: int = 0

    @classmethod
    def stored(cls, store: Store, settings: Settings) -> "Models":
        """An empty model set configured by ``settings`` and the tuned configuration ``store`` holds."""
        snap = store.get_snapshot("tuned_config")
        tuned = TunedConfig.from_json(snap[0].decode()) if snap is not None else None
        return cls(feedback=feedback_config(settings, tuned), tuned=tuned)

    def base_weights(self, settings_weights: Mapping[str, float]) -> dict[str, float]:
        """Per source: the learned weight, else the settings', else 1.0."""
        base = self.learned_weights or settings_weights
        return {name: base.get(name, settings_weights.get(name, 1.0)) for name in self.learners}


class LogRead(NamedTuple):
    """One read of the log for a fit: its end position, the erasure count before it, the events,
    and (for a fit) the users erased since the read, with their events: the fit forgets them at its swap."""

    cursor: int
    erasures: int
    events: list[Event]
    erased: Erased | None = None


class Lifecycle:
    """Fits, tunes, restores and snapshots the model set held by ``models`` (see the module docstring).

    ``lock`` is the engine lock (swaps, replays and erasure bookkeeping take it);
    ``state`` the per-user state the fits rebuild; ``replica`` the log cursor a swap moves;
    ``served`` the served-slate memory whose online fusion weights snapshots carry;
    ``load_items(stored, gone)`` puts stored item rows into the empty catalog at open;
    ``encoder_id`` names the LM (snapshots are keyed on it); ``encode(texts)`` encodes
    private texts (declared interests); ``replicated()`` says whether engines share the store;
    ``catching_up()`` runs when a fit's new learners exist, before they catch up with the
    log and after each paced run of that catch-up; ``swapped()`` after they were swapped in;
    ``two_stage()`` says whether they must build their retrieval graphs first.
    """

    def __init__(
        self, models: Models, store: Store, settings: Settings, catalog: Catalog, lock: threading.RLock,
        state: UserStateStore, *, write_lock: threading.RLock, snapshots: Snapshots, replica: ReplicaSync, served: SlateFeedback,
        load_items: Callable[[list[Any], list[str]], None], encoder_id: str,
        encode: Callable[[list[str]], np.ndarray], replicated: Callable[[], bool] = lambda: False,
        swapped: Callable[[], None] = lambda: None, two_stage: Callable[[], bool] = lambda: False,
        catching_up: Callable[[], None] = lambda: None,
    ) -> None:
        self.models, self.store, self.settings, self.catalog, self.lock = models, store, settings, catalog, lock
        self.write_lock = write_lock  # the log's writers (Ingestor): held where learners must match the log
        self.state, self.snapshots, self.replica, self.served = state, snapshots, replica, served
        self.load_items, self.encoder_id, self.encode, self.replicated = load_items, encoder_id, encode, replicated
        #: The thread of the last background fit (alive while it runs), or None.
        self.thread: threading.Thread | None = None
        #: Events the last fit read, and events learned since (a re-fit starts when they grow:
        #: ``Settings.refit_growth``).
        self.fit_events, self.since_fit = 0, 0
        #: The ``erased`` list of every fit's log read not swapped in yet (fits may overlap).
        self.pending_erasures: list[Erased] = []
        self.last_fit_seconds: float | None = None
        self.last_fit_error: str | None = None
        #: The thread of a periodic re-fit while it runs (its swap keeps the response caches).
        self.periodic: threading.Thread | None = None
        #: Called (without the lock) after new learners were swapped in: by a fit or a restore.
        self.swapped = swapped
        #: Called (without the lock) when a fit's new learners exist, before their catch-up
        #: and after each paced run of it.
        self.catching_up = catching_up
        #: Whether the engine serves in two stages (above its index's exact threshold): new
        #: learners then build their retrieval graphs before they are swapped in.
        self.two_stage = two_stage

    # ------------------------------------------------------------- learners
    def new_learners(self) -> dict[str, Learner]:
        """Fresh, unfitted learners for every configured source."""
        m = self.models
        return {name: make_learner(self.settings, name, params, m.feedback)
                for name, params in source_params(self.settings, m.tuned).items()}

    def base_weights(self) -> dict[str, float]:
        return self.models.base_weights(self.settings.fusion_weights)

    def restart_fusion(self) -> None:
        """(Re)start per-click fusion learning from the current weights (fixed once tuned on the
        log, unless a learning rate is set: :meth:`~liverec.rank.feedback.SlateFeedback.rate`)."""
        self.served.reset(self.base_weights(), tuned=self.models.tuned is not None)

    # -------------------------------------------------------------- opening
    def open(self) -> ModelSet | None:
        """Restore the catalog, declared interests, learned weights and every learner from the store:
        from the newest compatible snapshot and the log after it (returned), else from the whole log.
        Then start per-event fusion learning (from the snapshot's weights unless the store holds newer)."""
        snap = self.store.get_snapshot("fusion_weights")
        if snap is not None:
            self.models.learned_weights = json.loads(snap[0].decode())
        restored = self.snapshots.newest(
            self.snapshot_key(), erasures=self.replica.erasures_seen, last_seq=self.store.last_event_seq()
        )
        gone: list[str]  # ids the snapshot knows that are gone from the store
        stored, gone = list(self.store.iter_items()), []
        if restored is not None:  # the snapshot's dense order: its learners index items by it
            stored, gone = restored.arrange(stored)
        if stored:
            self.load_items(stored, gone)
            self.replica.items_loaded(stored)
        # A shared user state holds declared interests itself (and is refilled below when lost).
        interests = [] if self.state.shared else list(self.store.iter_interests())
        if interests:
            vecs = self.encode([t for _, t in interests])
            for (user, text), v in zip(interests, vecs):
                self.state.set_interests(user, v, text)
        if restored is None:
            self.rebuild()
        else:
            self.adopt(restored)
        if not self.state.complete():
            self.refill_users()
        self.restart_fusion()
        if restored is not None:
            self.restore_fusion(restored)
        return restored

    def refill_users(self) -> int:
        """Write every user's state from the durable log into a shared user state that lost it (or
        never had it); returns the events written. Writes are idempotent, so replicas recording
        meanwhile are safe; the engine lock keeps this engine's erasures after it. One replica
        refills at a time; the others read users from the store until it is done."""
        if not self.state.claim_refill():
            return 0
        with self.write_lock, self.lock:
            n = refill_from_log(self.state, self.store, self.catalog.get_idx, self.encode)
            self.state.mark_complete()
            self.models.version += 1  # versions restarted with the lost data: drop every cached list
            self.models.epoch += 1
        return n

    def refill_if_lost(self, out: dict[str, int]) -> None:
        """Before a replica sync: refill a shared user state that lost its data (Redis restarted
        empty), counting the events written in ``out["users"]``."""
        if not self.state.complete():
            out["users"] = self.refill_users()

    def adopt(self, restored: ModelSet) -> None:
        """Take a snapshot's learners and user state, then learn the log after its position."""
        learners = restored.build_learners(self.catalog)
        users = restored.build_users(self.settings.history_length)
        self.prepare(learners)
        with self.write_lock, self.lock:
            self.replica.cursor = self.replay(learners, users, restored.log_seq)
            self.models.learners = learners
            self.state.adopt(users)
            self.models.version += 1
            self.models.epoch += 1
            self.fit_events = restored.log_seq  # about the events it reflects; a re-fit counts from here
        self.swapped()

    def restore_fusion(self, restored: ModelSet) -> None:
        """The snapshot's online fusion weights, unless the store holds newer ones."""
        saved = self.store.get_snapshot("fusion_weights_online")
        if restored.online_fusion and self.served.fusion is not None and (saved is None or saved[1] < restored.log_seq):
            self.served.fusion.restore(restored.online_fusion)

    def replay(
        self, learners: Mapping[str, Learner], users: UserStateStore, cursor: int, until: int | None = None,
        pace: float = 0.0,
    ) -> int:
        """Learn the log after ``cursor`` (up to seq ``until``, if given) into ``learners`` and
        ``users``, in log order; the new cursor.

        The log is read in runs of :data:`REPLAY_BATCH` events: a :class:`BatchLearner` learns
        each run in one call (the same state as event by event), the others event by event.
        Learners share no state, so each may take the run on its own. With ``pace`` > 0 (a
        swap's catch-up) each run is followed by ``catching_up()`` and a sleep ``pace`` times as
        long as the run took (other threads of the process get the interpreter meanwhile).
        """
        log = iter(self.store.iter_events(after_seq=cursor))
        if until is not None:
            log = itertools.takewhile(lambda row: row[0] <= until, log)
        while run := list(itertools.islice(log, REPLAY_BATCH)):
            t = time.perf_counter()
            learn_events(learners, users, [e for _, e in run], self.catalog)
            cursor = run[-1][0]
            if pace:
                self.catching_up()
                time.sleep(pace * (time.perf_counter() - t))
        return cursor

    # ------------------------------------------------------------------ fits
    @property
    def running(self) -> bool:
        """Whether a background fit runs."""
        return self.thread is not None and self.thread.is_alive()

    def fit(
        self, *, background: bool = False, tune: bool = False, budget: float | None = None, progress: bool = False,
        seed: int | None = None, ray: str | None = None, periodic: bool = False,
    ) -> threading.Thread | None:
        """Batch (re)fit every learner from the durable log, then swap them in atomically.

        With ``tune=True`` the fit first searches every source's hyperparameters, the
        feedback reading and the fusion weights on a time split of the log (the most
        recent part of each sampled user's events held out; see
        :mod:`liverec.rank.tuner`) within ``budget`` seconds (default
        ``Settings.tune_budget_seconds``), then stores the chosen configuration with
        its validation score; every later fit and every restart reuse it. Without
        ``tune``, the last tuned configuration (if any) is used.

        With ``background=True`` the fit runs in a thread while the current learners
        keep serving; events recorded meanwhile are replayed into the new learners at
        the swap. The sources are fitted in a child process at a lower CPU priority
        (:class:`~liverec.jobs.ProcessJobs`; ``Settings.background_fit_process``), so
        requests keep the cores and the GIL. On a store another process can open (a
        SQLite file, PostgreSQL) and without ``tune``, that process also reads the log,
        rebuilds the user state and serialises the model set (:meth:`rebuild_in_child`);
        this one only loads it (and reads the log itself after all when a user is erased
        before the child has read it). Returns the thread (``join()`` it to wait).
        A second background fit while one runs raises :class:`~liverec.errors.ConflictError`.

        With ``ray="HOST:PORT"`` (a Ray cluster's head) the per-source fits and the
        tuning trials run as Ray tasks across the cluster (see :mod:`liverec.jobs`); the
        log is read here, from the store, and shipped once; the fitted learners come
        back here. The result is the same as without it. An unreachable address raises
        :class:`~liverec.errors.ValidationError` before anything is read.

        In the foreground, a background fit that runs is waited for first (one fit at a
        time: the asked one goes last).

        ``periodic`` (in the background only): the fit the log's growth started
        (``Settings.refit_growth``). Its swap leaves the response caches' lists to expire with
        each user's next change or their age (:attr:`Models.epoch`); any other swap drops them.

        Examples
        --------
        >>> life.fit(tune=True, budget=120)          # doctest: +SKIP
        >>> life.fit(ray="10.0.0.5:6380")            # doctest: +SKIP
        >>> life.models.tuned.score                  # doctest: +SKIP
        """
        # In the background (and not on Ray) in a child process: serving keeps its cores and the GIL.
        local = background and ray is None and self.settings.background_fit_process
        jobs = ProcessJobs() if local else job_runner(ray)
        # Untuned, on a store another process can open: the child reads the log itself too.
        from_store = local and not tune and self.store.shareable_url() is not None
        if not background:
            running = self.thread
            if running is not None and running.is_alive():  # one fit at a time: the asked one goes last
                running.join()
            self._fit(tune=tune, budget=budget, progress=progress, seed=seed, jobs=jobs)
            return None
        with self.lock:
            if self.running:
                raise ConflictError("a re-fit is already running; wait for it to finish, then retry.")
            self.thread = threading.Thread(
                target=self._background_fit,
                kwargs=dict(tune=tune, budget=budget, seed=seed, jobs=jobs, from_store=from_store,
                            periodic=periodic),
                name="liverec-fit", daemon=True,
            )
            self.thread.start()
            return self.thread

    def tune(
        self, *, budget: float | None = None, progress: bool = False, seed: int | None = None, refit: bool = True,
        max_trials: int | None = None, users: Callable[[str], bool] | None = None, ray: str | None = None,
    ) -> TunedConfig:
        """Search the configuration on the log, store it, and (``refit``) fit with it; see
        :meth:`liverec.Engine.tune`."""
        jobs = job_runner(ray)
        read = self.read_log(for_fit=refit)
        try:
            tuned = self._tune(read, budget=budget, progress=progress, seed=seed, max_trials=max_trials, users=users,
                               jobs=jobs)
            if refit:
                self.rebuild(read, jobs)
        finally:
            self.fit_done(read)
        return tuned

    def _fit(
        self, *, tune: bool, budget: float | None, progress: bool = False, seed: int | None = None,
        jobs: JobRunner | None = None,
    ) -> None:
        """Tune (optionally) and fit on one read of the log."""
        read = self.read_log()
        try:
            if tune:
                self._tune(read, budget=budget, progress=progress, seed=seed, jobs=jobs)
            self.rebuild(read, jobs)
        finally:
            self.fit_done(read)

    def _tune(
        self, read: LogRead, *, budget: float | None, progress: bool = False, seed: int | None = None,
        max_trials: int | None = None, users: Callable[[str], bool] | None = None, jobs: JobRunner | None = None,
    ) -> TunedConfig:
        s, m = self.settings, self.models
        budget = s.tune_budget_seconds if budget is None else budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise ValidationError(f"budget must be a number of seconds > 0, got {budget!r}.", field="budget")
        tuner = Tuner(
            functools.partial(make_learner, s), source_params(s, m.tuned), self.base_weights(), m.feedback,
            budget_seconds=float(budget), seed=s.seed if seed is None else seed,
            history_length=s.history_length, max_trials=max_trials, progress=progress, users=users, jobs=jobs,
            priors=[n for n, cls in REGISTRY.items() if issubclass(cls, Popularity)], next_share=s.tune_next_share,
        )
        try:
            tuned = tuner.run(read.events, self.catalog)
        except ValueError as exc:
            raise ValidationError(str(exc), field="tune") from None
        self.store.put_snapshot("tuned_config", tuned.to_json().encode(), read.cursor)
        self.store.put_snapshot("fusion_weights", json.dumps(tuned.weights).encode(), read.cursor)
        with self.lock:
            m.tuned = tuned
            m.feedback = feedback_config(s, tuned)
            m.learned_weights = dict(tuned.weights)
            self.restart_fusion()
        return tuned

    def tune_fusion(self, *, holdout: int = 2000, negatives: int = 50, seed: int = 0) -> FusionFit:
        """Learn fusion weights from the logged feedback, store them and start per-event fusion
        learning from them; see :meth:`liverec.Engine.tune_fusion`."""
        from .rank.fusion import learn_fusion_weights

        events = [e for _, e in self.store.iter_events()]
        fit = learn_fusion_weights(self.new_learners(), events, self.catalog, self.models.feedback,
                                   holdout=holdout, negatives=negatives, seed=seed,
                                   history_length=self.settings.history_length)
        self.store.put_snapshot("fusion_weights", json.dumps(fit.weights).encode(), self.store.last_event_seq())
        with self.lock:
            self.models.learned_weights = dict(fit.weights)
            self.restart_fusion()
        return fit

    def _background_fit(
        self, tune: bool = False, budget: float | None = None, seed: int | None = None, jobs: JobRunner | None = None,
        from_store: bool = False, periodic: bool = False,
    ) -> None:
        self.periodic = threading.current_thread() if periodic else None  # read by swap_in
        try:
            if from_store:
                self.rebuild_in_child(jobs or ProcessJobs())
            else:
                self._fit(tune=tune, budget=budget, seed=seed, jobs=jobs)
            self.last_fit_error = None
        except Exception as exc:  # keep serving with the old models; report the failure
            self.last_fit_error = f"{type(exc).__name__}: {exc}"
        finally:
            self.periodic = None

    def read_log(self, *, for_fit: bool = True, events: bool = True) -> LogRead:
        """The log up to its current end, in append order, with the position and erasure count.

        ``for_fit``: erasures from now on are remembered, so the fit built from this read
        forgets those users again at the swap. ``events=False``: the position and erasure
        count only (another process reads the events up to that position).
        """
        with self.lock:
            cursor = self.store.last_event_seq()
            erasures = self.store.counter("erasures")  # read before the log: a later erasure refuses the snapshot
            erased: Erased | None = None
            if for_fit:
                erased = []
                self.pending_erasures.append(erased)
        return LogRead(cursor, erasures, log_until(self.store, cursor) if events else [], erased)

    def fit_done(self, read: LogRead) -> None:
        """Stop remembering erasures for the fit of ``read`` (swapped in, or failed)."""
        with self.lock:
            self.pending_erasures = [x for x in self.pending_erasures if x is not read.erased]

    def erased(self, user: str, events: Sequence[Event]) -> None:
        """``user`` was erased (call under the lock): every fit in progress read them and forgets
        them at its swap."""
        for pending in self.pending_erasures:
            pending.append((user, list(events)))

    def rebuild(self, read: LogRead | None = None, jobs: JobRunner | None = None) -> None:
        """Fit fresh learners and user state from the durable log, then swap them in.

        The heavy part runs without the engine lock, so the old learners keep serving
        and learning. Every event appended after the fit's cursor is then replayed into
        the new learners (most of them before the lock is taken, the rest under it, at
        the swap) and users deleted meanwhile are forgotten again: nothing recorded
        during a fit is lost or resurrected. ``read``
        is a log read already made (by the tuner), so the log is read once per fit.
        ``jobs`` runs the per-source fits (default: here, one after another).
        """
        t0 = time.perf_counter()
        if read is None:
            read = self.read_log()
        users = self.state.fresh()
        learners = fit_model_set(self.new_learners(), users, read.events, self.catalog, jobs or LocalJobs())
        # Not shared yet: serialised without the lock, at the fit's log position.
        snap = None
        if read.cursor and self.snapshots.enabled:
            snap = self.capture(learners, users, read.cursor, read.erasures)
        self.swap_in(read, learners, users, fitted=len(read.events), started=t0, snapshot=snap)

    def rebuild_in_child(self, jobs: JobRunner) -> None:
        """:meth:`rebuild` with the log read, the fit, the user state and the snapshot body made
        by ``jobs`` (a child process) from the store itself: this process reads the log's
        position, loads the model set from the body, writes the body as the snapshot, then
        catches up and swaps as :meth:`rebuild` does."""
        t0 = time.perf_counter()
        read = self.read_log(events=False)
        try:
            made = self.fit_in_child(read, jobs)
            if made is None:  # a user was erased before the child read the log: read it here
                self._fit(tune=False, budget=None, jobs=jobs)
                return
            body, fitted, cursor = made
            # Before loading: the loaded learners' arrays are views of the body, which the catch-up changes.
            # Not if a user was erased since the read (here, or in the store's count by any engine).
            if cursor and not read.erased:
                self.write_snapshot(body, cursor, read.erasures)
            learners, users = self.load_model_set(body)
            self.swap_in(read, learners, users, fitted=fitted, started=t0, cursor=cursor)
        finally:
            self.fit_done(read)

    def fit_in_child(self, read: LogRead, jobs: JobRunner) -> tuple[memoryview, int, int] | None:
        """The snapshot body of a model set fitted by ``jobs`` on the log up to ``read.cursor``,
        read from the store there, how many events that fit read and the log position the body
        reflects (past ``read.cursor`` when the child caught up); None if a user was erased
        before that read ended (:func:`fit_from_store`)."""
        url = self.store.shareable_url()
        assert url is not None  # the caller checked
        fusion = self.served.fusion.state() if self.served.fusion is not None else None
        task = StoreFit(url=url, cursor=read.cursor, erasures=read.erasures, learners=self.new_learners(),
                        prepare=self.two_stage(),
                        catalog=self.catalog, users=None if self.state.shared else self.state.fresh(),
                        online_fusion=fusion)
        (result,) = jobs.map(fit_from_store, task, [None])
        if isinstance(result, Failed):
            result.reraise()
        if result is None:
            return None
        body, fitted, cursor = result
        return body.data, fitted, cursor

    def load_model_set(self, body: memoryview) -> tuple[dict[str, Learner], OnlineState]:
        """The learners and user state of a snapshot body, over this catalog."""
        restored = ModelSet.loads(body)
        users = self.state.fresh() if self.state.shared else restored.build_users(self.settings.history_length)
        return restored.build_learners(self.catalog), users

    def swap_in(
        self, read: LogRead, learners: dict[str, Learner], users: OnlineState, *, fitted: int, started: float,
        snapshot: Body | None = None, cursor: int | None = None,
    ) -> None:
        """Catch ``learners`` and ``users`` (fitted on the log up to ``read.cursor``, ``fitted``
        events, and caught up to ``cursor`` if given) up with the log, forget the users erased
        since ``read``, swap them in, then write ``snapshot`` (their body at ``read.cursor``)
        unless a user was erased meanwhile."""
        cursor, snap = read.cursor if cursor is None else cursor, snapshot
        self.catching_up()
        # Catch up outside the locks: the new learners are not shared yet, so what was recorded
        # while the fit ran is learned now while the old ones keep serving and learning, paced
        # (SWAP_PACE) so that requests keep most of the interpreter.
        for _ in range(SWAP_ROUNDS):
            with self.lock:
                head = self.store.last_event_seq()
            if head - cursor < SWAP_TAIL:
                break
            cursor = self.replay(learners, users, cursor, until=head, pace=SWAP_PACE)
        self.prepare(learners)  # not shared yet: no request waits for it (a child's fit did it already)
        # Every event committed here is learned by the old learners; with the write lock held
        # none is appended meanwhile. The rest is replayed with writes waiting but requests
        # served by the old learners; the engine lock is taken only for the swap itself.
        with self.write_lock:
            cursor = self.replay(learners, users, cursor)
            with self.lock:
                self.replica.cursor = cursor
                self.replica.own.clear()
                if read.erased:
                    snap = None  # it holds users erased during the fit
                for user, erased in read.erased or ():
                    for m in learners.values():
                        m.forget(user, erased)
                    users.forget(user)
                self.fit_done(read)
                self.models.learners = learners
                keep = self.periodic is threading.current_thread()  # not a fit asked for meanwhile
                self.state.adopt(users, touch=not keep)
                self.models.version += 1
                if not keep:
                    self.models.epoch += 1
                self.last_fit_seconds = time.perf_counter() - started
                self.fit_events, self.since_fit = fitted, 0
        if snap is not None:
            self.write_snapshot(snap, read.cursor, read.erasures)
        self.swapped()

    def prepare(self, learners: Mapping[str, Learner]) -> None:
        """Build the retrieval graphs of ``learners`` when serving is two-stage (not under the lock)."""
        if self.two_stage():
            prepare_retrieval(learners)

    def learned(self, n: int) -> None:
        """``n`` more events were learned live (call under the lock): start a background
        re-fit when the log has grown enough since the last fit."""
        self.since_fit += n
        if self.refit_due():
            self.fit(background=True, periodic=True)

    def refit_due(self) -> bool:
        """Whether the log has grown enough since the last fit to fit again (see
        ``Settings.refit_growth``); never while a fit runs."""
        s = self.settings
        # Only after a fit that read a log of that size: an engine fed event by event from
        # empty is fitted when its owner asks (a bulk import is followed by fit()).
        return (s.refit_growth > 0 and self.fit_events >= s.refit_min_events
                and self.since_fit >= s.refit_growth * self.fit_events and not self.running)

    # ------------------------------------------------------------- snapshots
    def snapshot_key(self) -> dict[str, Any]:
        tuned = self.models.tuned
        return compat_key(self.settings, self.encoder_id, tuned.to_json() if tuned else None)

    def capture(self, learners: Mapping[str, Learner], users: UserStateStore, log_seq: int, erasures: int) -> Parts:
        """The snapshot body of the model set as it is now (the caller holds it still): what
        learning changes is copied, what the learners keep fixed between fits referred to."""
        fusion = self.served.fusion.state() if self.served.fusion is not None else None
        return ModelSet.capture(learners, users, self.catalog, log_seq=log_seq, erasures=erasures,
                                online_fusion=fusion).dumps_parts()

    def write_snapshot(self, body: Body, log_seq: int, erasures: int) -> SnapshotInfo | None:
        if self.store.counter("erasures") != erasures:  # a user erased since may be in it
            return None
        return self.snapshots.write(body, self.snapshot_key(), log_seq=log_seq, erasures=erasures,
                                    meta={"users": self.state.count(), "items": len(self.catalog)})

    def snapshot(self) -> SnapshotInfo | None:
        """Write a snapshot of the model set as it is now (see :mod:`liverec.snapshot`).

        Every fit writes one, and ``Settings.snapshot_every_events`` / ``snapshot_interval_s``
        schedule more. None when snapshots are off (``snapshot_keep=0``, or an in-memory
        store and no ``snapshot_dir``), while a re-fit runs (it writes its own), or while an
        erasure made by another engine is not applied here yet.

        Examples
        --------
        >>> life.snapshot().log_seq         # doctest: +SKIP
        """
        if not self.snapshots.enabled or self.running:
            return None
        with self.write_lock, self.lock:
            if self.replicated():  # learn what other engines wrote: the state is then the log up to the cursor
                self.replica.sync(catalog=False)
            seq = self.replica.cursor if self.replicated() else self.store.last_event_seq()
            erasures = self.replica.settled_erasures()
            body = self.capture(self.models.learners, self.state, seq, erasures)
        return self.write_snapshot(body, seq, erasures)


# ------------------------------------------------------------------ configuration
def feedback_config(s: Settings, tuned: TunedConfig | None) -> FeedbackConfig:
    """The settings' feedback reading; the tuned one where the settings leave it at its default."""
    fb = dict(tuned.feedback) if tuned is not None else {}
    for key in ("rating_engagement", "rating_valence"):
        if key in s.model_fields_set or key not in fb:
            fb[key] = getattr(s, key)
    return FeedbackConfig(kind_weights=dict(s.kind_weights), rating_center=s.rating_center,
                          rating_scale=s.rating_scale, **fb)


def source_params(s: Settings, tuned: TunedConfig | None) -> dict[str, dict[str, Any]]:
    """Per source: tuned hyperparameters, overridden by any written in ``Settings.sources``."""
    found = tuned.sources if tuned is not None else {}
    return {name: {**found.get(name, {}), **params} for name, params in s.sources.items()}


def make_learner(s: Settings, name: str, params: Mapping[str, Any], feedback: FeedbackConfig) -> Learner:
    """One fresh, unfitted learner of source ``name`` as settings ``s`` configure it.

    A module-level function, so ``functools.partial(make_learner, settings)`` pickles
    (for fits and tuning trials run as Ray tasks).
    """
    defaults: dict[str, dict[str, Any]] = {
        "content": dict(
            half_life_days=s.profile_half_life_days,
            interest_weight=s.interest_weight,
            short_decay=s.short_term_decay,
            short_weight=s.short_term_weight,
        ),
        "trending": dict(half_life_hours=s.trending_half_life_hours, prior_attribute=s.popularity_prior),
    }
    cls = REGISTRY.get(name)
    if cls is None:
        raise ValidationError(
            f"unknown source {name!r} in Settings.sources; registered learners are {sorted(REGISTRY)}.",
            field="sources",
        )
    accepted = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in defaults.get(name, {}).items() if k in accepted}
    if "feedback" in accepted:
        kwargs["feedback"] = feedback
    if "cold_popularity" in accepted:  # trending already answers cold users
        kwargs["cold_popularity"] = False
    if not s.user_tables and cls.users_from_events and not cls.item_side_at_fits_without_tables:
        kwargs["user_tables"] = False  # users read from their recent events, not tables
    kwargs.update(params)
    return cls(**kwargs)


# ------------------------------------------------------------------ learning
def log_until(store: Store, cursor: int) -> list[Event]:
    """The events of ``store``'s log up to seq ``cursor``, in append order."""
    return [e for _, e in itertools.takewhile(lambda row: row[0] <= cursor, store.iter_events())]


def fit_model_set(
    learners: Mapping[str, Learner], users: OnlineState | None, events: Sequence[Event], catalog: Catalog,
    jobs: JobRunner,
) -> dict[str, Learner]:
    """``learners`` fitted on ``events`` (each as one job of ``jobs``), and ``users`` (if
    given) rebuilt from them, in time order (append order breaks ties: the order
    ``learn_one`` would have seen)."""
    ordered = sorted(events, key=lambda e: e.timestamp)
    fitted = fit_learners(learners, InteractionLog.from_events(ordered, catalog), jobs)
    if users is not None:
        for e in ordered:
            users.apply(e, catalog.get_idx(e.item))
    return fitted


@dataclass(frozen=True)
class StoreFit:
    """A fit that another process makes from the store itself (:func:`fit_from_store`).

    ``url`` opens the store; the log is read up to seq ``cursor``; ``learners`` are the
    fresh learners to fit, over ``catalog`` (this process's dense order); ``users`` the
    empty user state to rebuild (None: the user state is shared, not rebuilt by a fit);
    ``erasures`` and ``online_fusion`` go into the snapshot body as they are.
    """

    url: str
    cursor: int
    erasures: int
    learners: dict[str, Learner]
    catalog: Catalog
    users: OnlineState | None
    online_fusion: dict[str, Any] | None
    #: Build the learners' retrieval graphs too (the engine serves two-stage): in the child, at
    #: its lower priority, and into the body (snapshots then carry them).
    prepare: bool = False


def fit_from_store(task: StoreFit, _job: Any = None) -> tuple[np.ndarray, int, int] | None:
    """Read the log of ``task`` from its store, fit every learner, rebuild the user state, learn
    what was appended meanwhile (:func:`catch_up_from_store`) and capture the model set; its
    snapshot body (as bytes in an array: it crosses back out of band), the number of events the
    fit read and the log position the body reflects. A job function (module-level: it runs in a
    child).

    None when a user was erased since ``task`` was made, before the read ended: the log read
    lacks (some of) their events, which the fit's swap would then forget a second time.
    """
    store = Store.open(task.url)
    try:
        events = log_until(store, task.cursor)
        if store.counter("erasures") != task.erasures:
            return None
        users = task.users if task.users is not None else OnlineState(1)
        learners = fit_model_set(task.learners, task.users, events, task.catalog, LocalJobs())
        cursor = catch_up_from_store(store, learners, task.users, task.catalog, task.cursor, task.erasures)
    finally:
        store.close()
    if task.prepare:
        prepare_retrieval(learners)
    body = ModelSet.capture(learners, users, task.catalog, log_seq=cursor, erasures=task.erasures,
                            online_fusion=task.online_fusion).dumps()
    return np.frombuffer(body, dtype=np.uint8), len(events), cursor


def catch_up_from_store(
    store: Store, learners: Mapping[str, Learner], users: OnlineState | None, catalog: Catalog, cursor: int,
    erasures: int,
) -> int:
    """Learn the log after ``cursor`` into ``learners`` and ``users`` (in log order, as
    :meth:`Lifecycle.replay` does) while at least :data:`REPLAY_BATCH` events are behind and
    each round leaves fewer behind than the one before (at most :data:`CATCH_UP_ROUNDS`
    rounds); the position learned up to.

    What a busy log gains during a long fit is then learned where the fit ran, not by the
    serving process at the swap: each round learns what the one before left, so the rounds
    shrink as long as this process learns faster than the log grows; when it does not, the
    serving process learns the rest. Runs of :data:`REPLAY_BATCH` events are read, then
    learned only if no user was erased before their read ended (the swap forgets each erased
    user from what was learned of them, so nothing of theirs may be missing); it stops before
    an event on an item ``catalog`` (the catalog as the fit started) does not hold: the swap
    learns the rest with the serving catalog.
    """
    behind = None
    for _ in range(CATCH_UP_ROUNDS):
        head = store.last_event_seq()
        if head - cursor < REPLAY_BATCH or (behind is not None and head - cursor >= behind):
            break
        behind = head - cursor
        log = itertools.takewhile(lambda row: row[0] <= head, store.iter_events(after_seq=cursor))
        while run := list(itertools.islice(log, REPLAY_BATCH)):
            if store.counter("erasures") != erasures:
                return cursor
            known = list(itertools.takewhile(lambda row: row[1].item in catalog, run))
            if known:
                learn_events(learners, users, [e for _, e in known], catalog)
                cursor = known[-1][0]
            if len(known) < len(run):
                return cursor
    return cursor


def learn_events(
    learners: Mapping[str, Learner], users: UserStateStore | None, events: Sequence[Event], catalog: Catalog,
) -> None:
    """Teach ``events`` (in log order) to every learner (:func:`learn_all`) and to ``users``, if given."""
    learn_all(learners, events)
    if users is not None:
        for e in events:
            users.apply(e, catalog.get_idx(e.item))


def learn_all(learners: Mapping[str, Learner], events: Sequence[Event]) -> None:
    """Teach ``events`` (in log order) to every learner: a :class:`BatchLearner` in one
    call, the others event by event. Learners share no state, so each takes the run on its own."""
    for m in learners.values():
        if len(events) > 1 and offers(m, BatchLearner):
            m.learn_many(events)
        else:
            for e in events:
                m.learn_one(e)


def _fit_learner(log: InteractionLog, learner: Learner) -> tuple[type[Learner], dict[str, Any]]:
    """Fit one learner (a job: it may run in another process); its class and learned state."""
    learner.fit(log)
    return type(learner), learner.learned_state()


def fit_learners(learners: Mapping[str, Learner], log: InteractionLog, jobs: JobRunner) -> dict[str, Learner]:
    """Every learner fitted on ``log``, each as one job of ``jobs``, over the log's catalog.

    Raises the first failure (in ``learners``' order), as a fit in this process would.
    """
    done = jobs.map(_fit_learner, log, list(learners.values()))
    for result in done:
        if isinstance(result, Failed):
            result.reraise()
    return {name: Learner.from_state(cls, state, log.catalog) for name, (cls, state) in zip(learners, done)}
