"""The engine: wires store -> encode -> models -> rank, and learns on every event.

``Engine`` is the public API over named parts: ingest, rank.pipeline, lifecycle (fit, tune,
re-fit, restore, snapshot of the shared model set), replica, items and the user state.

Examples
--------
>>> from liverec import Engine, Item, Event
>>> eng = Engine.open()                                     # doctest: +SKIP
>>> eng.add_items([Item(id="b1", text="The Hobbit by J.R.R. Tolkien")])  # doctest: +SKIP
>>> eng.record(Event(user="u1", item="b1", kind="click"))   # doctest: +SKIP
>>> [r.item for r in eng.recommend("u1", k=10)]             # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import TYPE_CHECKING, Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar, overload

import numpy as np

from .encode.cache import CachedEncoder, open_shared_cache
from .encode.catalog import Catalog
from .encode.encoder import Encoder, SentenceTransformerEncoder
from .errors import LiverecError, ValidationError
from .ingest import Ingestor
from .items import Items
from .lifecycle import Lifecycle, Models, learn_all
from .models.base import FeedbackConfig, Learner, UserState
from .rank.calibrate import K, USERS, CandidateCalibration, calibrate, recent_users
from .rank.feedback import SlateFeedback
from .rank.fusion import OnlineFusion
from .rank.index import VectorIndex
from .rank.pipeline import Pipeline, Request
from .rank.policy import make_policies
from .rank.tuner import TunedConfig
from .replica import ReplicaSync
from .settings import Settings
from .snapshot import Snapshots
from .state import UserStateStore, open_user_state, user_from_events
from .state_redis import check_state_url
from .store import Store
from .store.impressions import ImpressionWriter
from .store.snapshots import SnapshotInfo, snapshot_repo
from .types import Event, Item, Recommendation, ServedRow
from .validate import check_text

if TYPE_CHECKING:
    from .rank.fusion import FusionFit

_MAX_ID = 256
_MAX_K = 1000
T = TypeVar("T")


log = logging.getLogger("liverec.engine")


class _FromPart(Generic[T]):
    """A read-only engine attribute that lives in one of its parts:
    ``learners = _FromPart[dict[str, Learner]]("models", "learners")`` reads ``engine.models.learners``."""

    def __init__(self, part: str, name: str) -> None:
        self.part, self.name = part, name

    @overload
    def __get__(self, obj: None, owner: type) -> "_FromPart[T]": ...
    @overload
    def __get__(self, obj: object, owner: type) -> T: ...
    def __get__(self, obj: object | None, owner: type) -> "T | _FromPart[T]":
        return self if obj is None else getattr(getattr(obj, self.part), self.name)

    def __set__(self, obj: object, value: T) -> None:
        raise AttributeError(f"{self.name} is read-only here; it belongs to engine.{self.part}.")


class Engine:
    """A recommender that learns from every event the moment it is recorded.

    Open one with :meth:`open`; add items, record events, ask for recommendations.
    Reopening the same database restores every user's state (rebuilt from the
    durable log).

    Examples
    --------
    >>> eng = Engine.open("sqlite:///books.db")                       # doctest: +SKIP
    >>> eng.add_items([Item(id="b1", text="The Hobbit", attributes={"year": 1937})])  # doctest: +SKIP
    >>> eng.record(Event(user="u1", item="b1", kind="like"))          # doctest: +SKIP
    >>> eng.recommend("u1", k=5, filters={"year": {"gte": 1900}})     # doctest: +SKIP
    """

    def __init__(self, store: Store, settings: Settings, encoder: Encoder) -> None:
        self.store = store
        self.settings = settings
        # The machine's vector cache (Settings.vector_cache): a catalog encoded once on this
        # machine, for any store, is never encoded again.
        self._cache_store = open_shared_cache(settings.vector_cache, store.url)
        self.encoder = CachedEncoder(encoder, store, shared=self._cache_store, progress=settings.encoder_progress)
        #: (items done, items in all) of a running background catalog import, else None.
        self.import_progress: tuple[int, int] | None = None
        #: The current model set (learners, feedback reading, tuned configuration, learned
        #: weights, version): serving reads it, the lifecycle replaces what it holds.
        self.models = Models.stored(store, settings)
        self.catalog = Catalog()
        self.index = VectorIndex(
            self.catalog,
            exact_max_items=settings.exact_index_max_items,
            connectivity=settings.ann_connectivity,
            expansion_search=settings.ann_expansion_search,
            dtype=settings.ann_dtype,
            # The content source scores on centred vectors by default: retrieve in that space.
            center="content" in settings.sources and settings.sources["content"].get("center", True) is not False,
        )
        #: Per-user online state (recent events, seen items, interests, versions): in process
        #: memory, or in Redis when ``settings.state`` is set (fleet mode).
        self.state: UserStateStore = open_user_state(settings, self.catalog.get_idx, fallback=self._user_from_store)
        self._lock = threading.RLock()
        #: Writers to the log, one at a time, and whatever must see this engine's committed
        #: events learned (a swap, an erasure, a replica's catch-up, a snapshot); taken
        #: before ``_lock``, never inside it. Requests take ``_lock`` only, so they do not wait
        #: for a commit's disk write (see ``Ingestor``).
        self._write_lock = threading.RLock()
        #: Catalog items in the store, in memory and in the index.
        self.items = Items(store, self.catalog, self.encoder, settings.text_template, self._lock,
                           index=lambda: self.index)
        #: Bumped by every erasure: caches keyed on it can never serve an erased user's state.
        self.erasure_epoch = 0
        self.policies = make_policies(settings.policies, seed=settings.seed)
        if settings.default_policy not in self.policies:
            raise ValidationError(
                f"default_policy {settings.default_policy!r} is not configured; policies are {sorted(self.policies)}.",
                field="default_policy",
            )
        #: Served slates until the user acts on them: policy rewards and online fusion learning.
        self.served = SlateFeedback(store, self.policies, self.reward_of, settings.fusion_learning_rate)
        self._impressions = ImpressionWriter(store, settings.impression_flush_seconds)
        #: retrieve -> score -> fuse -> filter -> policy -> explain -> log.
        self.pipeline = Pipeline(settings, self.catalog, self.index, self.served, self._impressions)
        #: validate -> append -> learn, for every event path (record, record_many, group commit).
        self.ingest = Ingestor(
            store, self.catalog, settings, self._lock, lambda: self.feedback, write_lock=self._write_lock,
            learn=self._learn_many, seen=lambda e: self.state.apply(e, self.catalog.get_idx(e.item)),
            create_items=lambda ids: self.items.create_bare(ids),
        )
        self.on_erase: list[Any] = []  # callables (user, events, epoch) run inside delete_user
        #: The replica cursor: what other engines wrote to the shared store, caught up on.
        self.replica = ReplicaSync(
            store, self.catalog, self._lock, write_lock=self._write_lock, learn=self._learn, own=self.ingest.own, load_items=lambda rows: self.items.load(rows),
            set_interests=self._load_interests, refit=lambda: self.fit(background=True),
            fit_running=lambda: self.fit_running, before_sync=lambda out: self.lifecycle.refill_if_lost(out), batch=self.state.batch,
        )
        #: Versioned snapshots of the model set (liverec.snapshot): restarts replay only the log tail.
        self.snapshots = Snapshots(snapshot_repo(store, settings.snapshot_dir), settings.snapshot_keep)
        #: Fit, tune, periodic re-fit, restore (snapshot + log tail) and snapshot of ``models``.
        self.lifecycle = Lifecycle(
            self.models, store, settings, self.catalog, self._lock, self.state, write_lock=self._write_lock,
            snapshots=self.snapshots,
            replica=self.replica, served=self.served, load_items=self.items.load_all,
            encoder_id=self.encoder.model_id, encode=lambda texts: self.encoder.encode(texts, private=True),
            replicated=lambda: self.replicated, swapped=self._after_swap,
            two_stage=lambda: self.index.uses_ann, catching_up=self._catching_up,
        )
        #: Why the last candidate-count calibration failed (the previous count kept serving), else None.
        self.calibration_error: str | None = None
        #: Called, without the lock, after every swap of new learners (a fit, a re-fit, a restore).
        self.on_swap: list[Callable[[], None]] = []
        #: Called, without the lock, when a fit's new learners exist (fitted here or loaded from a
        #: child's body), before they catch up with the events recorded meanwhile and after each
        #: run of that catch-up.
        self.on_catch_up: list[Callable[[], None]] = []
        self.lifecycle.open()
        self.snapshots.schedule(self.snapshot, store.last_event_seq, every_events=settings.snapshot_every_events,
                                interval_s=settings.snapshot_interval_s)

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        settings: Settings | None = None,
        encoder: Encoder | None = None,
        state: str | None = None,
    ) -> "Engine":
        """Open (or create) the engine stored at ``url``; no URL = in memory.

        ``encoder`` replaces the sentence-transformers model (any object with
        ``model_id``, ``dim`` and ``encode(texts)``). ``state`` (a Redis URL, like
        ``Settings.state``) keeps per-user state in Redis, shared by replicas (fleet mode).
        """
        settings = settings or Settings()
        if state is not None:
            settings = settings.model_copy(update={"state": check_state_url(state)})
        store = Store.open(url or settings.store)
        if encoder is None and settings.encoder_backend == "onnx":
            from .encode.onnx import OnnxEncoder

            encoder = OnnxEncoder(settings.encoder_model, batch_size=settings.encoder_batch_size)
        if encoder is None:
            encoder = SentenceTransformerEncoder(settings.encoder_model, batch_size=settings.encoder_batch_size)
        return cls(store, settings, encoder)

    def close(self) -> None:
        """Write buffered impressions and release the store. The engine is unusable afterwards."""
        self.snapshots.close()
        self._impressions.close()
        self.state.close()
        self.served.save()
        self.store.close()
        if self._cache_store is not None:
            self._cache_store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------ the model set (liverec.lifecycle)
    def snapshot(self) -> SnapshotInfo | None:
        """Write a snapshot of the model set as it is now (see :mod:`liverec.snapshot`): fits
        write one, the settings schedule more. None when snapshots are off, while a re-fit runs
        or an erasure is not applied here yet (:meth:`liverec.lifecycle.Lifecycle.snapshot`).

        >>> eng.snapshot().log_seq          # doctest: +SKIP
        """
        return self.lifecycle.snapshot()

    #: Source name -> the learner serving now (a fit swaps in new ones).
    learners = _FromPart[dict[str, Learner]]("models", "learners")
    #: How events are read as feedback (the settings', tuned where they leave the default).
    feedback = _FromPart[FeedbackConfig]("models", "feedback")
    #: What ``fit(tune=True)`` chose (persisted in the store), or None.
    tuned = _FromPart["TunedConfig | None"]("models", "tuned")
    #: Fusion weights learned by tuning or :meth:`tune_fusion`, or None.
    learned_weights = _FromPart["dict[str, float] | None"]("models", "learned_weights")
    #: Changes with every swap of the model set (fits, restores, refills).
    model_version = _FromPart[int]("models", "version")
    #: Changes with every swap but a periodic re-fit's (see :meth:`user_version`).
    cache_epoch = _FromPart[int]("models", "epoch")
    #: Seconds the last fit took (None before the first).
    last_fit_seconds = _FromPart["float | None"]("lifecycle", "last_fit_seconds")
    #: Why the last background fit failed (the old models kept serving), else None.
    last_fit_error = _FromPart["str | None"]("lifecycle", "last_fit_error")
    #: Whether a background fit runs.
    fit_running = _FromPart[bool]("lifecycle", "running")

    def fit(
        self, *, background: bool = False, tune: bool = False, budget: float | None = None, progress: bool = False,
        seed: int | None = None, ray: str | None = None,
    ) -> threading.Thread | None:
        """Batch (re)fit every learner from the durable log, then swap them in atomically.

        ``tune=True`` first searches the configuration on a time split of the log within
        ``budget`` seconds and stores it (later fits and restarts reuse it);
        ``background=True`` fits in a thread while the current learners keep serving and
        learning, and returns it (:class:`~liverec.errors.ConflictError` while one runs);
        ``ray="HOST:PORT"`` runs the per-source fits and the trials as Ray tasks. In full:
        :meth:`liverec.lifecycle.Lifecycle.fit`.

        Examples
        --------
        >>> eng.fit(tune=True, budget=120)           # doctest: +SKIP
        >>> eng.fit(background=True).join()          # doctest: +SKIP
        >>> eng.tuned.score, eng.tuned.weights       # doctest: +SKIP
        """
        return self.lifecycle.fit(background=background, tune=tune, budget=budget, progress=progress, seed=seed,
                                  ray=ray)

    def tune(
        self, *, budget: float | None = None, progress: bool = False, seed: int | None = None, refit: bool = True,
        max_trials: int | None = None, users: Callable[[str], bool] | None = None, ray: str | None = None,
    ) -> TunedConfig:
        """Search the configuration on the engine's own log, store it, and (``refit``) fit with it.

        ``users`` restricts which users' recent events are held out for validation (for a
        held-out check: tune on one half of the users, measure on the other). ``ray``: run the
        trials' fits (and the refit) as tasks on that Ray cluster, as in :meth:`fit`; the
        configuration chosen is the same as without it.
        Raises :class:`~liverec.errors.ValidationError` when the log is too small to tune.
        """
        return self.lifecycle.tune(budget=budget, progress=progress, seed=seed, refit=refit, max_trials=max_trials,
                                   users=users, ray=ray)

    def tune_fusion(self, *, holdout: int = 2000, negatives: int = 50, seed: int = 0) -> "FusionFit":
        """Learn fusion weights from the logged feedback (see ``liverec.rank.fusion``).

        The weights are saved in the store and used by every later request (per-request
        ``weights=`` still override them). Settings' ``fusion_weights`` stay the fallback.
        """
        return self.lifecycle.tune_fusion(holdout=holdout, negatives=negatives, seed=seed)

    # ------------------------------------------------------------------- items
    def add_items(self, items: Iterable[Item]) -> int:
        """Add or update items; only new or changed text is encoded. Returns how many changed.

        Raises :class:`~liverec.errors.ValidationError` (nothing stored) on a bad item.
        """
        return self.items.add(items)

    def remove_items(self, ids: Iterable[str]) -> int:
        """Remove items from the catalog (past events stay in the log). Returns how many."""
        return self.items.remove(ids)

    def get_item(self, item_id: str) -> Item:
        """The stored item, or :class:`~liverec.errors.UnknownItemError`."""
        return self.items.get(item_id)

    def search_items(self, q: str = "", limit: int = 20) -> list[Item]:
        """Catalog items whose text contains ``q`` (case-insensitive), in catalog order;
        ``q=""`` gives the first ``limit`` items."""
        return self.items.search(q, limit)

    def attributes_of(self, item_id: str) -> Mapping[str, Any]:
        """The item's attributes from memory (no store query); empty for an unknown item."""
        i = self.catalog.get_idx(item_id)
        return self.catalog.attributes[i] if i is not None else {}

    @property
    def n_items(self) -> int:
        return self.catalog.n_alive

    # ------------------------------------------------------------------- users
    def set_interests(self, user: str, interests: str | None) -> None:
        """Declare (or clear with ``None``) what a user says they like, as free text."""
        _check_id(user, "user")
        if interests is not None and (not isinstance(interests, str) or not interests.strip()):
            raise ValidationError(
                "interests must be a non-empty string (or None to clear them).", field="interests"
            )
        if interests is not None:
            check_text(interests, "interests")  # the same refusal the HTTP service and every store give
        vec = self.encoder.encode([interests], private=True)[0] if interests else None
        with self._lock:
            self.store.set_interests(user, interests)
            self.state.set_interests(user, vec, interests)

    def user_state(self, user: str) -> UserState:
        """What the learners see of ``user`` right now."""
        return self.state.state(user)

    def _user_from_store(self, user: str) -> tuple[UserState, set[int]]:
        """``user``'s state rebuilt from the store: fleet mode's answer while Redis cannot be reached."""
        text = self.store.get_interests(user)
        vec = self.encoder.encode([text], private=True)[0] if text else None
        return user_from_events(user, self.store.user_events(user), self.catalog.get_idx,
                                history_length=self.settings.history_length, interests=(vec, text))

    def history(self, user: str) -> list[Event]:
        """Every stored event of ``user``, oldest first."""
        return self.store.user_events(user)

    def delete_user(self, user: str) -> dict[str, int]:
        """Erase the user's events, impressions, interests and derived state."""
        with self._write_lock, self._lock:
            self._impressions.flush()  # a buffered impression must not outlive the erasure
            events = self.store.user_events(user)
            interests = self.store.get_interests(user)
            counts = self.store.delete_user(user)
            if interests:  # never written to the machine cache; a cache shared by older code may hold it
                self.encoder.forget([interests])
            for hook in self.on_erase:  # e.g. tell other replicas (they need the events to forget)
                hook(user, events, counts["erasure_epoch"])
            self.lifecycle.erased(user, events)  # a fit in progress read them: it forgets them at its swap
            self.replica.applied(counts["erasure_epoch"])
            self.snapshots.erased()  # they hold the user's state; the next one holds none
            self._forget_local(user, events)
            return counts

    def _forget_local(self, user: str, events: Sequence[Event]) -> None:
        for m in self.learners.values():
            m.forget(user, events)
        self.served.forget(user)
        self.erasure_epoch += 1
        self.state.forget(user)  # last: a shared user state that cannot be reached raises (erase again)

    def forget_user(self, user: str, events: Sequence[Event], *, epoch: int | None = None) -> None:
        """Apply an erasure another replica performed (its rows are already gone from the store).

        ``events`` are the user's events as they were before deletion, so learners can
        subtract exactly what they learned; ``epoch`` is the store's erasure counter value
        that erasure produced.
        """
        with self._write_lock, self._lock:
            self.lifecycle.erased(user, events)
            self._forget_local(user, events)
            self.replica.applied(epoch)

    def behind(self) -> bool:
        """Whether another engine wrote to the shared store since this one last looked."""
        return self.replica.behind()

    def catch_up(self) -> dict[str, int] | None:
        """Read-your-writes across processes: if another engine wrote to the store since
        this one last looked (one cheap query), :meth:`sync` now. None if nothing was new."""
        return self.replica.catch_up()

    def sync(self, *, catalog: bool = True) -> dict[str, int]:
        """Catch up with what other engines wrote to the shared store; returns what changed
        (see :mod:`liverec.replica`).

        ``catalog=False`` catches up on events and erasures only (the cheap, frequent
        case); items and interests are read when ``catalog`` is True.

        Events after this engine's cursor are learned in log order (its own, learned at
        record time, are skipped); new or changed items and interests are loaded (vectors
        come from the shared vector cache, so nothing is re-encoded that another replica
        encoded); removed items leave the index. An erasure this engine was not told
        about (the store's erasure counter moved) triggers a background re-fit, which
        drops the erased user's state.
        """
        return self.replica.sync(catalog=catalog)

    def _load_interests(self, user: str, text: str | None) -> bool:
        """Load interests another engine declared; False if they were already loaded."""
        if self.state.interests_text(user) == text:
            return False
        vec = self.encoder.encode([text], private=True)[0] if text else None
        with self._lock:
            self.state.set_interests(user, vec, text)
        return True

    def user_version(self, user: str) -> tuple[int, int, int, int]:
        """Changes whenever what ``recommend(user)`` sees may have changed because of ``user``
        (their events, interests, erasure) or of everyone (a fit asked for or a restore,
        catalog change); a periodic re-fit's swap leaves it (:attr:`Models.epoch`)."""
        return (self.state.version(user), self.cache_epoch, self.catalog.version, self.erasure_epoch)

    def flush(self) -> None:
        """Write impressions buffered by ``Settings.impression_flush_seconds`` now."""
        self._impressions.flush()

    # ------------------------------------------------------------------ events
    def record(self, event: Event) -> bool:
        """Store one event and update every learner at once. False if its id was seen before."""
        return self.record_many([event]) == 1

    def record_many(self, events: Iterable[Event], *, learn: bool | None = None) -> int:
        """Store a batch of events (one transaction) and learn from the new ones.

        All events are validated first: one bad event raises and nothing is stored.
        Returns how many were new (repeated ids are skipped). ``learn``: True learns
        each new event in turn; False only stores them (and the users' recent events), for
        a ``fit()`` that follows; None (default) learns them in turn unless the batch is a
        bulk import (see :meth:`is_bulk`), which one fit from the log learns instead, at a
        fraction of the cost of learning it event by event. Either way, when the call
        returns the models reflect every event.

        Examples
        --------
        >>> eng.record_many([Event(user="u1", item="b1", kind="click")])   # doctest: +SKIP
        1
        """
        evs = list(events)
        bulk = learn is None and self.is_bulk(len(evs))
        out = self.record_groups([evs], learn=not bulk if learn is None else learn)[0]
        if isinstance(out, Exception):
            raise out
        if bulk and out:
            self.fit()
        return out

    def is_bulk(self, n: int) -> bool:
        """Whether ``n`` new events are a bulk import: at least ``Settings.bulk_fit_events``
        (0: never) and at least as many as the models have learned so far (read in a fit or
        learned since), so one fit from the log costs less than learning them one by one.

        >>> eng.is_bulk(100_000), eng.is_bulk(10)                           # doctest: +SKIP
        (True, False)
        """
        s, life = self.settings, self.lifecycle
        return 0 < s.bulk_fit_events <= n and n >= life.fit_events + life.since_fit

    def record_groups(
        self, groups: Sequence[Iterable[Event]], *, learn: bool = True
    ) -> list[int | LiverecError]:
        """Group commit: store several independent batches in one transaction.

        Each group is validated on its own; a bad group gets its error in the result
        (and nothing of it is stored) while the others are stored and learned from.
        Returns, per group, how many events were new, or the error. The HTTP service
        uses this to make one durable commit serve many concurrent requests.
        """
        with self.state.batch():  # fleet mode: one Redis round trip for the whole call
            return self.ingest.record_groups(groups, learn=learn)

    def reward_of(self, e: Event) -> float:
        """The policy reward of an event (``Settings.reward_weights``)."""
        r = self.settings.reward_weights.get(e.kind, 0.0)
        if e.kind == "rating":
            return r * float(np.clip(self.feedback.weight(e.kind, e.value), -1.0, 1.0))
        return r

    def _learn(self, e: Event) -> None:
        self._learn_many([e])

    def _learn_many(self, events: Sequence[Event]) -> None:
        """Learn new events in log order: a :class:`BatchLearner` takes them in one call (the
        state event-by-event learning leaves), the others one by one. Learners share no
        state, and the user state and slate feedback read none of theirs, so this equals
        learning each event in turn. Enough of them start a background re-fit."""
        learn_all(self.learners, events)
        for e in events:
            i = self.catalog.get_idx(e.item)
            self.state.apply(e, i)
            self.served.learn(e, i)
        self.lifecycle.learned(len(events))


    @property
    def index(self) -> VectorIndex:
        """The item-vector index retrieval searches (replaceable: the pipeline follows)."""
        return self._index

    @index.setter
    def index(self, value: VectorIndex) -> None:
        self._index = value
        if "pipeline" in self.__dict__:
            self.pipeline.index = value

    @property
    def replicated(self) -> bool:
        """True when several engines share the store (set by the service; see :meth:`sync`)."""
        return self.ingest.replicated

    @replicated.setter
    def replicated(self, value: bool) -> None:
        self.ingest.replicated = value

    @property
    def online_fusion(self) -> OnlineFusion | None:
        """The per-click fusion learner (None when it is off: ``fusion_learning_rate`` 0, or unset
        with weights tuned on the log)."""
        return self.served.fusion

    # --------------------------------------------------------------- serving
    def _base_weights(self) -> dict[str, float]:
        """Per source: the learned weight (tuning, ``tune_fusion``), else the settings', else 1.0."""
        return self.lifecycle.base_weights()

    def _weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        w = self.served.weights(self._base_weights())
        if weights:
            unknown = set(weights) - set(self.learners)
            if unknown:
                raise ValidationError(
                    f"unknown source(s) {sorted(unknown)} in weights; sources are {sorted(self.learners)}.",
                    field="weights",
                )
            w.update(weights)
        return w

    def calibrate_candidates(self) -> CandidateCalibration | None:
        """Measure how many candidates each source must retrieve for two-stage lists to match the
        exact path's on the engine's recent users, and use that count (:mod:`liverec.rank.calibrate`).

        Runs by itself after every fit and restore; None (nothing changed) below the index's exact
        threshold, with ``Settings.candidates_per_source`` set, or without users to measure on.

        >>> eng.calibrate_candidates().chosen      # doctest: +SKIP
        100
        """
        if self.settings.candidates_per_source is not None or not self.index.uses_ann:
            return None
        weights = self._weights(None)

        def serve(state: UserState, seen: set[int], n: int | None) -> list[int]:
            req = Request(user=state.user, k=K, weights=weights, exclude_seen=self.settings.exclude_seen,
                          diversity=self.settings.diversity, per_source=n)
            return self.pipeline.ranked(state, seen, self.learners, req, exact=n is None)

        views = [functools.partial(self.state.view, u) for u in recent_users(self.store, USERS)]
        found = calibrate(views, serve, self._lock, target=self.settings.candidates_recall, k=K,
                          items=self.catalog.n_alive)
        if found is not None:
            self.pipeline.calibration = found
        return found

    def _catching_up(self) -> None:
        """A fit's new learners exist and catch up with the log (see :attr:`on_catch_up`)."""
        for hook in list(self.on_catch_up):
            hook()

    def _after_swap(self) -> None:
        """After new learners were swapped in (in the fit's or restore's own thread, so the count
        measured on them is in use when it returns): calibrate the candidate count (a failure
        keeps the previous count), then call :attr:`on_swap`."""
        try:
            self.calibrate_candidates()
            self.calibration_error = None
        except Exception as exc:  # noqa: BLE001 - serving goes on with the count it had
            self.calibration_error = f"{type(exc).__name__}: {exc}"
            log.warning("candidate-count calibration failed; the previous count keeps serving: %s", exc)
        for hook in list(self.on_swap):
            hook()

    @property
    def candidate_calibration(self) -> CandidateCalibration | None:
        """The calibration in use (see :meth:`calibrate_candidates`), else None."""
        return self.pipeline.calibration

    def _new_item_weights(self, base: Mapping[str, float]) -> dict[str, float] | None:
        """The tuned weights for ranking only new items over ``base`` (the current ones), if tuned."""
        tuned = self.tuned
        if tuned is None or not tuned.new_item_weights:
            return None
        return {**base, **{n: v for n, v in tuned.new_item_weights.items() if n in base}}

    def recommend(
        self,
        user: str,
        k: int = 10,
        *,
        candidates: Sequence[str] | None = None,
        exclude_seen: bool | None = None,
        exclude: Sequence[str] | None = None,
        filters: Mapping[str, Any] | None = None,
        weights: Mapping[str, float] | None = None,
        diversity: float | None = None,
        max_per_provider: int | None = None,
        policy: str | None = None,
        context: Mapping[str, Any] | None = None,
        explain: bool = True,
        log: bool | None = None,
    ) -> list[Recommendation]:
        """The top ``k`` items for ``user`` with their reasons.

        Parameters
        ----------
        candidates : only rank these item ids. When none of them has had an event yet (a
            shelf of new arrivals) and no ``weights`` are given, the weights tuned for ranking
            new items are used (``fit(tune=True)`` searches them on its own new-item split).
        exclude_seen : drop items the user already interacted with (default: settings).
        filters : attribute filters, e.g. ``{"year": {"gte": 1990}}`` or ``{"lang": ["en", "fr"]}``.
        weights : per-request fusion weights per source, e.g. ``{"trending": 0.0}``.
        exclude : item ids never to return in this response.
        diversity : MMR trade-off in [0, 1] (default: settings; 0 = relevance only).
        max_per_provider : at most this many items per provider (``Settings.provider_attribute``).
        policy : how the slate is chosen: ``greedy`` (default), ``epsilon``, ``linucb``,
            ``lints`` or any configured policy; every item carries its propensity.
        log : log the served slate as impressions (default: settings).

        Unknown users get a cold-start answer (trending and declared interests).
        """
        _check_id(user, "user")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= _MAX_K:
            raise ValidationError(f"k must be an integer in [1, {_MAX_K}], got {k!r}.", field="k")
        exclude_seen = self.settings.exclude_seen if exclude_seen is None else exclude_seen
        diversity = self.settings.diversity if diversity is None else diversity
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not 0 <= diversity <= 1:
            raise ValidationError(f"diversity must be a number in [0, 1], got {diversity!r}.", field="diversity")
        cap = self.settings.max_per_provider if max_per_provider is None else max_per_provider
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValidationError(f"max_per_provider must be an integer >= 1, got {cap!r}.", field="max_per_provider")
        policy = policy or self.settings.default_policy
        if policy not in self.policies:
            raise ValidationError(
                f"unknown policy {policy!r}; configured policies are {sorted(self.policies)}.", field="policy"
            )
        w = self._weights(weights)
        req = Request(
            user=user, k=k, weights=w, candidates=candidates, exclude_seen=exclude_seen,
            exclude=exclude, filters=filters, diversity=float(diversity), max_per_provider=cap, policy=policy,
            context=dict(context or {}), explain=explain,
            log=self.settings.log_impressions if log is None else log,
            new_item_weights=self._new_item_weights(w) if weights is None and candidates is not None else None,
        )
        shared = self._read_shared(user)
        with self._lock:
            return self.pipeline.serve(*(shared or self.state.view(user)), self.learners, req)

    def _read_shared(self, user: str) -> tuple[UserState, set[int]] | None:
        """``user``'s state from a shared user state (Redis), read before taking the engine lock
        so other requests do not wait on the round trip; None for in-process state (read under it)."""
        return self.state.view(user) if self.state.shared else None

    def log_served(
        self, user: str, rows: Sequence[ServedRow], *, policy: str = "greedy",
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Log a slate served again from a response cache as impressions (same propensities);
        ``rows``: the slate's :func:`~liverec.types.served_rows`, kept when it was first served."""
        # No engine lock (a cache hit must not wait for a commit); the caller checked
        # user_version(), which every erasure changes, just before.
        self.pipeline.log_cached(user, rows, policy, context)

    def explain(self, user: str, item: str, *, weights: Mapping[str, float] | None = None) -> Recommendation:
        """Why ``item`` would (or would not) be recommended to ``user`` now."""
        _check_id(user, "user")
        idx = self.catalog.idx_of(item)
        w = self._weights(weights)
        shared = self._read_shared(user)
        with self._lock:
            return self.pipeline.explain(
                *(shared or self.state.view(user)), self.learners, item, idx, w,
                exclude_seen=self.settings.exclude_seen,
            )


def _check_id(v: Any, field: str) -> None:
    from .validate import check_id  # the one id rule, shared with the HTTP service

    check_id(v, field)