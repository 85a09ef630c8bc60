"""The engine: wires store -> encode -> models -> rank, and learns on every event.

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
import inspect
import itertools
import json
import threading
import time

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from .encode.cache import CachedEncoder, open_shared_cache
from .encode.catalog import Catalog
from .encode.encoder import Encoder, SentenceTransformerEncoder
from .jobs import Failed, JobRunner, LocalJobs, job_runner
from .errors import ConflictError, LiverecError, ValidationError
from .models import REGISTRY
from .models.base import BatchLearner, FeedbackConfig, InteractionLog, Learner, UserState
from .rank.fusion import OnlineFusion
from .rank.index import VectorIndex
from .rank.feedback import SlateFeedback
from .rank.pipeline import Pipeline, Request
from .rank.policy import make_policies
from .rank.ranker import offers
from .rank.tuner import TunedConfig, Tuner

if TYPE_CHECKING:
    from .rank.fusion import FusionFit
from .settings import Settings
from .snapshot import ModelSet, Snapshots, compat_key
from .store import Store
from .store.snapshots import SnapshotInfo, snapshot_repo
from .state import UserStateStore, open_user_state, refill_from_log, user_from_events
from .store.impressions import ImpressionWriter
from .ingest import Ingestor
from .items import Items
from .replica import ReplicaSync
from .types import Event, Item, Recommendation
from .state_redis import check_state_url
from .validate import check_text

_MAX_ID = 256
_MAX_K = 1000
#: Events per run when the log tail is replayed (bounds the memory a run's updates take).
REPLAY_BATCH = 5000


class _LogRead(NamedTuple):
    """One read of the log for a fit: its end position, the erasure count before it, the events,
    and (for a fit) the users erased since the read, with their events: the fit forgets them at its swap."""

    cursor: int
    erasures: int
    events: list[Event]
    erased: list[tuple[str, list[Event]]] | None = None


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
        snap = store.get_snapshot("tuned_config")
        #: What ``fit(tune=True)`` chose (persisted in the store), or None.
        self.tuned: TunedConfig | None = TunedConfig.from_json(snap[0].decode()) if snap is not None else None
        self.feedback = self._feedback()
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
        self.learners: dict[str, Learner] = {}
        #: Per-user online state (recent events, seen items, interests, versions): in process
        #: memory, or in Redis when ``settings.state`` is set (fleet mode).
        self.state: UserStateStore = open_user_state(settings, self.catalog.get_idx, fallback=self._user_from_store)
        self._lock = threading.RLock()
        #: Catalog items in the store, in memory and in the index.
        self.items = Items(store, self.catalog, self.encoder, settings.text_template, self._lock,
                           index=lambda: self.index)
        self._fit_thread: threading.Thread | None = None
        #: Events the last fit read, and events learned since (a re-fit starts when they grow:
        #: ``Settings.refit_growth``).
        self._fit_events, self._since_fit = 0, 0
        #: The ``erased`` list of every fit's log read not swapped in yet (fits may overlap).
        self._fit_erasures: list[list[tuple[str, list[Event]]]] = []
        self.model_version = 0
        #: Bumped by every erasure: caches keyed on it can never serve an erased user's state.
        self.erasure_epoch = 0
        self.learned_weights: dict[str, float] | None = None
        self.policies = make_policies(settings.policies, seed=settings.seed)
        if settings.default_policy not in self.policies:
            raise ValidationError(
                f"default_policy {settings.default_policy!r} is not configured; policies are {sorted(self.policies)}.",
                field="default_policy",
            )
        #: Served slates until the user acts on them: policy rewards and online fusion learning.
        self.served = SlateFeedback(store, self.policies, self.reward_of, settings.fusion_learning_rate)
        self.last_fit_seconds: float | None = None
        self.last_fit_error: str | None = None
        self._impressions = ImpressionWriter(store, settings.impression_flush_seconds)
        #: retrieve -> score -> fuse -> filter -> policy -> explain -> log.
        self.pipeline = Pipeline(settings, self.catalog, self.index, self.served, self._impressions)
        #: validate -> append -> learn, for every event path (record, record_many, group commit).
        self.ingest = Ingestor(
            store, self.catalog, settings, self._lock, lambda: self.feedback,
            learn=self._learn_many, seen=lambda e: self.state.apply(e, self.catalog.get_idx(e.item)),
            create_items=lambda ids: self.items.create_bare(ids),
        )
        self.on_erase: list[Any] = []  # callables (user, events, epoch) run inside delete_user
        #: The replica cursor: what other engines wrote to the shared store, caught up on.
        self.replica = ReplicaSync(
            store, self.catalog, self._lock, learn=self._learn, own=self.ingest.own, load_items=lambda rows: self.items.load(rows),
            set_interests=self._load_interests, refit=lambda: self.fit(background=True),
            fit_running=lambda: self.fit_running, before_sync=self._refill_if_lost, batch=self.state.batch,
        )
        #: Versioned snapshots of the model set (liverec.snapshot): restarts replay only the log tail.
        self.snapshots = Snapshots(snapshot_repo(store, settings.snapshot_dir), settings.snapshot_keep)
        restored = self._load()
        self.served.reset(self._base_weights())
        if restored is not None:
            self._restore_fusion(restored)
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
        if hasattr(self.state, "close"):
            self.state.close()
        self.served.save()
        self.store.close()
        if self._cache_store is not None:
            self._cache_store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _feedback(self) -> FeedbackConfig:
        """The settings' feedback reading; the tuned one where the settings leave it at its default."""
        s, fb = self.settings, dict(self.tuned.feedback) if self.tuned is not None else {}
        for key in ("rating_engagement", "rating_valence"):
            if key in s.model_fields_set or key not in fb:
                fb[key] = getattr(s, key)
        return FeedbackConfig(
            kind_weights=dict(s.kind_weights), rating_center=s.rating_center, rating_scale=s.rating_scale, **fb
        )

    def _source_params(self) -> dict[str, dict[str, Any]]:
        """Per source: tuned hyperparameters, overridden by any written in Settings.sources."""
        tuned = self.tuned.sources if self.tuned is not None else {}
        return {name: {**tuned.get(name, {}), **params} for name, params in self.settings.sources.items()}

    def _make_learner(self, name: str, params: Mapping[str, Any], feedback: FeedbackConfig) -> Learner:
        """One fresh, unfitted learner of source ``name`` as this engine configures it."""
        return make_learner(self.settings, name, params, feedback)

    def _new_learners(self) -> dict[str, Learner]:
        """Fresh, unfitted learners for every configured source."""
        return {name: self._make_learner(name, params, self.feedback) for name, params in self._source_params().items()}

    def _load(self) -> ModelSet | None:
        """Restore the catalog, declared interests, learned weights and every learner from the store:
        from the newest compatible snapshot and the log after it (returned), else from the whole log."""
        snap = self.store.get_snapshot("fusion_weights")
        if snap is not None:
            self.learned_weights = json.loads(snap[0].decode())
        restored = self.snapshots.newest(
            self._snapshot_key(), erasures=self.replica.erasures_seen, last_seq=self.store.last_event_seq()
        )
        gone: list[str]  # ids the snapshot knows that are gone from the store
        stored, gone = list(self.store.iter_items()), []
        if restored is not None:  # the snapshot's dense order: its learners index items by it
            stored, gone = restored.arrange(stored)
        if stored:
            self.items.load_all(stored, gone)
            self.replica.items_loaded(stored)
        # A shared user state holds declared interests itself (and is refilled below when lost).
        interests = [] if self.state.shared else list(self.store.iter_interests())
        if interests:
            vecs = self.encoder.encode([t for _, t in interests], private=True)
            for (user, text), v in zip(interests, vecs):
                self.state.set_interests(user, v, text)
        if restored is None:
            self._rebuild()
        else:
            self._adopt(restored)
        if not self.state.complete():
            self._refill_users()
        return restored

    def _refill_users(self) -> int:
        """Write every user's state from the durable log into a shared user state that lost it (or
        never had it); returns the events written. Writes are idempotent, so replicas recording
        meanwhile are safe; the engine lock keeps this engine's erasures after it. One replica
        refills at a time; the others read users from the store until it is done."""
        if not self.state.claim_refill():
            return 0
        with self._lock:
            n = refill_from_log(self.state, self.store, self.catalog.get_idx,
                                lambda texts: self.encoder.encode(texts, private=True))
            self.state.mark_complete()
            self.model_version += 1  # versions restarted with the lost data: drop every cached list
        return n

    def _adopt(self, restored: ModelSet) -> None:
        """Take a snapshot's learners and user state, then learn the log after its position."""
        learners = restored.build_learners(self.catalog)
        users = restored.build_users(self.settings.history_length)
        with self._lock:
            self.replica.cursor = self._replay(learners, users, restored.log_seq)
            self.learners = learners
            self.state.adopt(users)
            self.model_version += 1
            self._fit_events = restored.log_seq  # about the events it reflects; a re-fit counts from here

    def _restore_fusion(self, restored: ModelSet) -> None:
        """The snapshot's online fusion weights, unless the store holds newer ones."""
        saved = self.store.get_snapshot("fusion_weights_online")
        if restored.online_fusion and self.served.fusion is not None and (saved is None or saved[1] < restored.log_seq):
            self.served.fusion.restore(restored.online_fusion)

    def _replay(self, learners: Mapping[str, Learner], users: UserStateStore, cursor: int) -> int:
        """Learn the log after ``cursor`` into ``learners`` and ``users``, in log order; the new cursor.

        The log is read in runs of :data:`REPLAY_BATCH` events: a :class:`BatchLearner` learns
        each run in one call (the same state as event by event), the others event by event.
        Learners share no state, so each may take the run on its own.
        """
        log = iter(self.store.iter_events(after_seq=cursor))
        while run := list(itertools.islice(log, REPLAY_BATCH)):
            events = [e for _, e in run]
            learn_all(learners, events)
            for e in events:
                users.apply(e, self.catalog.get_idx(e.item))
            cursor = run[-1][0]
        return cursor

    def _read_log(self, *, for_fit: bool = True) -> _LogRead:
        """The log up to its current end, in append order, with the position and erasure count.

        ``for_fit``: erasures from now on are remembered, so the fit built from this read
        forgets those users again at the swap.
        """
        with self._lock:
            cursor = self.store.last_event_seq()
            erasures = self.store.counter("erasures")  # read before the log: a later erasure refuses the snapshot
            erased: list[tuple[str, list[Event]]] | None = None
            if for_fit:
                erased = []
                self._fit_erasures.append(erased)
        return _LogRead(cursor, erasures, [e for seq, e in self.store.iter_events() if seq <= cursor], erased)

    def _fit_done(self, read: _LogRead) -> None:
        """Stop remembering erasures for the fit of ``read`` (swapped in, or failed)."""
        with self._lock:
            self._fit_erasures = [x for x in self._fit_erasures if x is not read.erased]

    def _rebuild(self, read: _LogRead | None = None, jobs: JobRunner | None = None) -> None:
        """Fit fresh learners and user state from the durable log, then swap them in.

        The heavy part runs without the engine lock, so the old learners keep serving
        and learning. At the swap (under the lock) every event appended after the fit's
        cursor is replayed into the new learners and users deleted meanwhile are
        forgotten again: nothing recorded during a fit is lost or resurrected. ``read``
        is a log read already made (by the tuner), so the log is read once per fit.
        ``jobs`` runs the per-source fits (default: here, one after another).
        """
        t0 = time.perf_counter()
        if read is None:
            read = self._read_log()
        cursor, erasures = read.cursor, read.erasures
        # Time order (append order breaks ties): the order learn_one would have seen.
        events = sorted(read.events, key=lambda e: e.timestamp)
        log = InteractionLog.from_events(events, self.catalog)
        learners = fit_learners(self._new_learners(), log, jobs or LocalJobs())
        users = self.state.fresh()
        for e in events:
            users.apply(e, self.catalog.get_idx(e.item))
        # Not shared yet: serialised without the lock, at the fit's log position.
        snap = (self._capture(learners, users, cursor, erasures), cursor) if cursor and self.snapshots.enabled else None
        with self._lock:
            self.replica.cursor = self._replay(learners, users, cursor)
            self.ingest.own.clear()
            if read.erased:
                snap = None  # it holds users erased during the fit
            for user, erased in read.erased or ():
                for m in learners.values():
                    m.forget(user, erased)
                users.forget(user)
            self._fit_done(read)
            self.learners = learners
            self.state.adopt(users)
            self.model_version += 1
            self.last_fit_seconds = time.perf_counter() - t0
            self._fit_events, self._since_fit = len(read.events), 0
        if snap is not None:
            self._write_snapshot(snap[0], snap[1], erasures)

    # --------------------------------------------------------------- snapshots
    def _snapshot_key(self) -> dict[str, Any]:
        return compat_key(self.settings, self.encoder.model_id, self.tuned.to_json() if self.tuned else None)

    def _capture(self, learners: Mapping[str, Learner], users: UserStateStore, log_seq: int, erasures: int) -> bytes:
        fusion = self.served.fusion.state() if self.served.fusion is not None else None
        return ModelSet.capture(learners, users, self.catalog, log_seq=log_seq, erasures=erasures,
                                online_fusion=fusion).dumps()

    def _write_snapshot(self, body: bytes, log_seq: int, erasures: int) -> SnapshotInfo | None:
        if self.store.counter("erasures") != erasures:  # a user erased since may be in it
            return None
        return self.snapshots.write(body, self._snapshot_key(), log_seq=log_seq, erasures=erasures,
                                    meta={"users": self.state.count(), "items": len(self.catalog)})

    def snapshot(self) -> SnapshotInfo | None:
        """Write a snapshot of the model set as it is now (see :mod:`liverec.snapshot`).

        Every fit writes one, and ``Settings.snapshot_every_events`` / ``snapshot_interval_s``
        schedule more. None when snapshots are off (``snapshot_keep=0``, or an in-memory
        store and no ``snapshot_dir``), while a re-fit runs (it writes its own), or while an
        erasure made by another engine is not applied here yet.

        Examples
        --------
        >>> eng.snapshot().log_seq          # doctest: +SKIP
        """
        if not self.snapshots.enabled or self.fit_running:
            return None
        with self._lock:
            if self.replicated:  # learn what other engines wrote: the state is then the log up to the cursor
                self.sync(catalog=False)
            seq = self.replica.cursor if self.replicated else self.store.last_event_seq()
            erasures = self.replica.settled_erasures()
            body = self._capture(self.learners, self.state, seq, erasures)
        return self._write_snapshot(body, seq, erasures)

    # ------------------------------------------------------------------- items
    def _render(self, text: str, attributes: Mapping[str, Any]) -> str:
        return self.items.render(text, attributes)

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
        with self._lock:
            self._impressions.flush()  # a buffered impression must not outlive the erasure
            events = self.store.user_events(user)
            interests = self.store.get_interests(user)
            counts = self.store.delete_user(user)
            if interests:  # never written to the machine cache; a cache shared by older code may hold it
                self.encoder.forget([interests])
            for hook in self.on_erase:  # e.g. tell other replicas (they need the events to forget)
                hook(user, events, counts["erasure_epoch"])
            for pending in self._fit_erasures:  # a fit in progress read them: it forgets them at its swap
                pending.append((user, events))
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
        with self._lock:
            for pending in self._fit_erasures:
                pending.append((user, list(events)))
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

    def _refill_if_lost(self, out: dict[str, int]) -> None:
        if not self.state.complete():  # a shared user state lost its data (Redis restarted empty)
            out["users"] = self._refill_users()

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
        (their events, interests, erasure) or of everyone (re-fit, catalog change)."""
        return (self.state.version(user), self.model_version, self.catalog.version, self.erasure_epoch)

    def flush(self) -> None:
        """Write impressions buffered by ``Settings.impression_flush_seconds`` now."""
        self._impressions.flush()

    # ------------------------------------------------------------------ events
    def record(self, event: Event) -> bool:
        """Store one event and update every learner at once. False if its id was seen before."""
        return self.record_many([event]) == 1

    def record_many(self, events: Iterable[Event], *, learn: bool = True) -> int:
        """Store a batch of events (one transaction) and learn from the new ones.

        All events are validated first: one bad event raises and nothing is stored.
        Returns how many were new (repeated ids are skipped). ``learn=False`` only
        stores them (and updates seen items): for bulk imports followed by ``fit()``.
        """
        out = self.record_groups([events], learn=learn)[0]
        if isinstance(out, Exception):
            raise out
        return out

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
        learning each event in turn."""
        learn_all(self.learners, events)
        for e in events:
            i = self.catalog.get_idx(e.item)
            self.state.apply(e, i)
            self.served.learn(e, i)
        self._since_fit += len(events)
        if self._refit_due():
            self.fit(background=True)

    def _refit_due(self) -> bool:
        """Whether the log has grown enough since the last fit to fit again (see
        ``Settings.refit_growth``); never while a fit runs."""
        s = self.settings
        # Only after a fit that read a log of that size: an engine fed event by event from
        # empty is fitted when its owner asks (a bulk import is followed by fit()).
        return (s.refit_growth > 0 and self._fit_events >= s.refit_min_events
                and self._since_fit >= s.refit_growth * self._fit_events and not self.fit_running)

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
        """The per-click fusion learner (None when ``fusion_learning_rate`` is 0)."""
        return self.served.fusion

    def fit(
        self, *, background: bool = False, tune: bool = False, budget: float | None = None, progress: bool = False,
        seed: int | None = None, ray: str | None = None,
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
        the swap. Returns the thread (``join()`` it to wait). A second background fit
        while one runs raises :class:`~liverec.errors.ConflictError`.

        With ``ray="HOST:PORT"`` (a Ray cluster's head) the per-source fits and the
        tuning trials run as Ray tasks across the cluster (see :mod:`liverec.jobs`); the
        log is read here, from the store, and shipped once; the fitted learners come
        back here. The result is the same as without it. An unreachable address raises
        :class:`~liverec.errors.ValidationError` before anything is read.

        Examples
        --------
        >>> eng.fit(tune=True, budget=120)           # doctest: +SKIP
        >>> eng.fit(ray="10.0.0.5:6380")             # doctest: +SKIP
        >>> eng.tuned.score, eng.tuned.weights       # doctest: +SKIP
        """
        jobs = job_runner(ray)
        if not background:
            running = self._fit_thread
            if running is not None and running.is_alive():  # one fit at a time: the asked one goes last
                running.join()
            self._fit(tune=tune, budget=budget, progress=progress, seed=seed, jobs=jobs)
            return None
        with self._lock:
            if self.fit_running:
                raise ConflictError("a re-fit is already running; wait for it to finish, then retry.")
            self._fit_thread = threading.Thread(
                target=self._background_fit, kwargs=dict(tune=tune, budget=budget, seed=seed, jobs=jobs),
                name="liverec-fit", daemon=True,
            )
            self._fit_thread.start()
            return self._fit_thread

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
        jobs = job_runner(ray)
        read = self._read_log(for_fit=refit)
        try:
            tuned = self._tune(read, budget=budget, progress=progress, seed=seed, max_trials=max_trials, users=users,
                               jobs=jobs)
            if refit:
                self._rebuild(read, jobs)
        finally:
            self._fit_done(read)
        return tuned

    def _fit(
        self, *, tune: bool, budget: float | None, progress: bool = False, seed: int | None = None,
        jobs: JobRunner | None = None,
    ) -> None:
        """Tune (optionally) and fit on one read of the log."""
        read = self._read_log()
        try:
            if tune:
                self._tune(read, budget=budget, progress=progress, seed=seed, jobs=jobs)
            self._rebuild(read, jobs)
        finally:
            self._fit_done(read)

    def _tune(
        self, read: _LogRead, *, budget: float | None, progress: bool = False, seed: int | None = None,
        max_trials: int | None = None, users: Callable[[str], bool] | None = None, jobs: JobRunner | None = None,
    ) -> TunedConfig:
        budget = self.settings.tune_budget_seconds if budget is None else budget
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not budget > 0:
            raise ValidationError(f"budget must be a number of seconds > 0, got {budget!r}.", field="budget")
        cursor, events = read.cursor, read.events
        weights = self._base_weights()
        tuner = Tuner(
            functools.partial(make_learner, self.settings), self._source_params(), weights, self.feedback,
            budget_seconds=float(budget), seed=self.settings.seed if seed is None else seed,
            history_length=self.settings.history_length, max_trials=max_trials, progress=progress, users=users,
            jobs=jobs,
        )
        try:
            tuned = tuner.run(events, self.catalog)
        except ValueError as exc:
            raise ValidationError(str(exc), field="tune") from None
        self.store.put_snapshot("tuned_config", tuned.to_json().encode(), cursor)
        self.store.put_snapshot("fusion_weights", json.dumps(tuned.weights).encode(), cursor)
        with self._lock:
            self.tuned = tuned
            self.feedback = self._feedback()
            self.learned_weights = dict(tuned.weights)
            self.served.reset(self._base_weights())  # per-event learning goes on from the tuned weights
        return tuned

    def _background_fit(
        self, tune: bool = False, budget: float | None = None, seed: int | None = None, jobs: JobRunner | None = None,
    ) -> None:
        try:
            self._fit(tune=tune, budget=budget, seed=seed, jobs=jobs)
            self.last_fit_error = None
        except Exception as exc:  # keep serving with the old models; report the failure
            self.last_fit_error = f"{type(exc).__name__}: {exc}"

    @property
    def fit_running(self) -> bool:
        return self._fit_thread is not None and self._fit_thread.is_alive()

    # --------------------------------------------------------------- serving
    def tune_fusion(self, *, holdout: int = 2000, negatives: int = 50, seed: int = 0) -> "FusionFit":
        """Learn fusion weights from the logged feedback (see ``liverec.rank.fusion``).

        The weights are saved in the store and used by every later request (per-request
        ``weights=`` still override them). Settings' ``fusion_weights`` stay the fallback.
        """
        from .rank.fusion import learn_fusion_weights

        events = [e for _, e in self.store.iter_events()]
        fit = learn_fusion_weights(
            self._new_learners(), events, self.catalog, self.feedback, holdout=holdout, negatives=negatives, seed=seed
        )
        self.store.put_snapshot("fusion_weights", json.dumps(fit.weights).encode(), self.store.last_event_seq())
        with self._lock:
            self.learned_weights = dict(fit.weights)
            self.served.reset(self._base_weights())  # per-event learning goes on from the tuned weights
        return fit

    def _base_weights(self) -> dict[str, float]:
        """Per source: ``tune_fusion``'s weight, else the settings', else 1.0."""
        base = self.learned_weights or self.settings.fusion_weights
        return {name: base.get(name, self.settings.fusion_weights.get(name, 1.0)) for name in self.learners}

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
        candidates : only rank these item ids.
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
        req = Request(
            user=user, k=k, weights=self._weights(weights), candidates=candidates, exclude_seen=exclude_seen,
            exclude=exclude, filters=filters, diversity=float(diversity), max_per_provider=cap, policy=policy,
            context=dict(context or {}), explain=explain,
            log=self.settings.log_impressions if log is None else log,
        )
        shared = self._read_shared(user)
        with self._lock:
            return self.pipeline.serve(*(shared or self.state.view(user)), self.learners, req)

    def _read_shared(self, user: str) -> tuple[UserState, set[int]] | None:
        """``user``'s state from a shared user state (Redis), read before taking the engine lock
        so other requests do not wait on the round trip; None for in-process state (read under it)."""
        return self.state.view(user) if self.state.shared else None

    def log_served(
        self, user: str, recs: Sequence[Recommendation], *, policy: str = "greedy",
        context: Mapping[str, Any] | None = None,
    ) -> None:
        """Log a slate served again from a response cache as impressions (same propensities)."""
        # No engine lock (a cache hit must not wait for a commit); the caller checked
        # user_version(), which every erasure changes, just before.
        self.pipeline.log_cached(user, recs, policy, context)

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
    kwargs.update(params)
    return cls(**kwargs)


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


def _check_id(v: Any, field: str) -> None:
    from .validate import check_id  # the one id rule, shared with the HTTP service

    check_id(v, field)
