"""The learner protocol every model follows, and the data it consumes.

``fit(log)`` resets and learns from history; ``learn_one(event)`` is the real-time
update (small, per event); ``score(user, items)`` returns one number per item,
higher = better. ``__init__`` only stores hyperparameters; learned state lives in
attributes ending in ``_``.
"""

from __future__ import annotations

import abc
import copy
import inspect
import math
import pickle
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Mapping, Protocol, Self, Sequence, runtime_checkable

import numpy as np

from ..encode.catalog import Catalog, ItemIds
from ..errors import NotFittedError, UnknownKindError
from ..types import DEFAULT_KIND_WEIGHTS, Event


@dataclass(frozen=True)
class FeedbackConfig:
    """How an event turns into a learning weight: engagement, then valence.

    Every event is evidence that the user *engages* with this kind of item (its kind
    weight: a purchase says more than a view) and may carry a *valence* in [-1, 1]
    (stars around ``rating_center``; like +1; dislike -1). A rating's weight is
    ``kind_weight * (rating_engagement + rating_valence * valence)``: with the
    defaults a 1-star rating still counts as engagement (half a 5-star one), because
    on rating data a low rating still says "this user watches such items" — dropping
    it, or pushing away from it, loses much of the evidence co-occurrence and
    factorisation learn from. ``rating_engagement=0, rating_valence=1`` gives the
    signed "stars minus neutral" reading instead (low ratings push away). Both are
    searched by ``Engine.fit(tune=True)`` on the engine's own log. Kinds with a
    negative weight (skip, dislike) stay negative: they are explicit rejections.

    Examples
    --------
    >>> fb = FeedbackConfig()
    >>> fb.weight("click", 1.0), fb.weight("rating", 5.0), fb.weight("rating", 1.0)
    (1.0, 1.5, 0.5)
    >>> FeedbackConfig(rating_engagement=0.0, rating_valence=1.0).weight("rating", 1.0)
    -1.0
    >>> fb.valence("rating", 4.0), fb.valence("dislike", 1.0)
    (0.5, -1.0)
    """

    kind_weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS))
    rating_center: float = 3.0
    rating_scale: float = 2.0
    rating_engagement: float = 1.0
    rating_valence: float = 0.5

    def _kind_weight(self, kind: str) -> float:
        try:
            return self.kind_weights[kind]
        except KeyError:
            raise UnknownKindError(
                f"unknown event kind {kind!r}: known kinds are {sorted(self.kind_weights)}. "
                "Use one of them or add it to the kind_weights setting.",
                field="kind",
            ) from None

    def valence(self, kind: str, value: float) -> float:
        """How much the user liked it, in [-1, 1] (0 = says nothing about liking)."""
        w = self._kind_weight(kind)
        if kind == "rating":
            return float(min(1.0, max(-1.0, (value - self.rating_center) / self.rating_scale)))
        return float(np.sign(w)) if w < 0 or kind in ("like", "purchase") else 0.0

    def weight(self, kind: str, value: float) -> float:
        w = self._kind_weight(kind)
        if kind == "rating":
            return w * (self.rating_engagement + self.rating_valence * self.valence(kind, value))
        return w * value

    def weights(self, kinds: Sequence[str] | np.ndarray, values: np.ndarray) -> np.ndarray:
        """``weight`` per event, for columns of kinds (e.g. ``InteractionLog.kinds``) and values."""
        return np.fromiter((self.weight(k, v) for k, v in zip(kinds, values)), dtype=np.float64, count=len(kinds))


@dataclass(frozen=True)
class InteractionLog:
    """A batch of history, columnar, with the catalog it refers to.

    ``item_idx`` is -1 for events whose item is no longer in the catalog.
    """

    catalog: Catalog
    users: np.ndarray  # object array of external user ids
    item_idx: np.ndarray  # int64 dense indices
    kinds: np.ndarray  # object array
    values: np.ndarray  # float64
    timestamps: np.ndarray  # float64
    events: tuple[Event, ...] = ()

    @classmethod
    def from_events(cls, events: Iterable[Event], catalog: Catalog) -> "InteractionLog":
        evs = tuple(events)
        n = len(evs)
        return cls(
            catalog=catalog,
            users=np.array([e.user for e in evs], dtype=object),
            item_idx=np.fromiter((catalog.index.get(e.item, -1) for e in evs), dtype=np.int64, count=n),
            kinds=np.array([e.kind for e in evs], dtype=object),
            values=np.fromiter((e.value for e in evs), dtype=np.float64, count=n),
            timestamps=np.fromiter((e.timestamp for e in evs), dtype=np.float64, count=n),
            events=evs,
        )

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class UserState:
    """What the engine knows about a user at request time.

    ``history`` holds the most recent events (oldest first); ``interests`` the
    encoded vector of the interests the user declared, if any. ``derived`` keeps
    what is computed from the state once per request (see :func:`positive_history`):
    a state is built per request and never changes, so neither does what follows from it.
    """

    user: str
    history: tuple[Event, ...] = ()
    interests: np.ndarray | None = None
    interests_text: str | None = None
    now: float | None = None
    derived: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def is_cold(self) -> bool:
        return not self.history and self.interests is None


def positive_history(user: UserState, catalog: Catalog, feedback: FeedbackConfig) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(item ids, dense idx, weights) of the user's recent positive events on live items.

    Learners use it to explain a score by the history items behind it; every item of a
    slate asks again, so the answer is kept on ``user`` (per catalog version and
    feedback reading; callers must not modify the arrays).

    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["A", "B"])
    >>> u = UserState("u", history=(Event(user="u", item="a", kind="click"), Event(user="u", item="b", kind="skip")))
    >>> fb = FeedbackConfig()
    >>> ids, idx, w = positive_history(u, cat, fb)
    >>> ids, idx.tolist(), w.tolist(), positive_history(u, cat, fb)[1] is idx
    (['a'], [0], [1.0], True)
    """
    key = ("positive_history", id(catalog), catalog.version, id(feedback))
    kept = user.derived.get(key)
    if kept is not None:
        return kept[2]
    ids, rows, w, _ = _history_pass(user, catalog, feedback)
    keep = np.flatnonzero(w > 0)
    out = [ids[k] for k in keep.tolist()], rows[keep], w[keep]
    user.derived[key] = (catalog, feedback, out)  # holding both keeps their ids theirs while kept
    return out


def history_rows(user: UserState, catalog: Catalog, fb: FeedbackConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(catalog rows, feedback weights, timestamps) of ``user``'s recent events on items the
    catalog holds, oldest first: the one pass over the request's events that the sources
    reading users from them share. Kept on the request's state.

    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["", ""])
    >>> u = UserState("u", history=(Event(user="u", item="b", timestamp=1.0), Event(user="u", item="x"),
    ...                             Event(user="u", item="a", kind="skip", timestamp=2.0)))
    >>> rows, w, ts = history_rows(u, cat, FeedbackConfig())
    >>> rows.tolist(), (w > 0).tolist(), ts.tolist()
    ([1, 0], [True, False], [1.0, 2.0])
    """
    return _history_pass(user, catalog, fb)[1:]


def _history_pass(user: UserState, catalog: Catalog, fb: FeedbackConfig) -> tuple[list[str], np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """(item ids, catalog rows, feedback weights, timestamps) of the recent events on live
    items, oldest first: :func:`history_rows` and :func:`positive_history` read it."""
    key = ("history_rows", id(catalog), catalog.version, id(fb))
    kept = user.derived.get(key)
    if kept is not None:
        return kept[2]
    ids, idx, w, ts = [], [], [], []
    for e in user.history:
        i = catalog.get_idx(e.item)
        if i is not None:
            ids.append(e.item)
            idx.append(i)
            w.append(fb.weight(e.kind, e.value))
            ts.append(e.timestamp)
    out = (ids, np.asarray(idx, dtype=np.int64), np.asarray(w, dtype=np.float64), np.asarray(ts, dtype=np.float64))
    user.derived[key] = (catalog, fb, out)  # holding both keeps their ids theirs while kept
    return out


def top_because(ids: list[str], pulls: np.ndarray, exclude: int, idx: np.ndarray, top: int, floor: float) -> tuple[str, ...]:
    """The ``top`` distinct history items with the strongest pull above ``floor`` (ties: the
    one first in the history).

    >>> top_because(["a", "b", "a", "c"], np.array([0.5, 0.9, 0.7, 0.1]), 9, np.array([0, 1, 0, 2]), 2, 0.2)
    ('b', 'a')
    """
    pulls = np.asarray(pulls)
    # Only the entries above the floor are walked in Python (a slate asks once per item).
    keep = np.flatnonzero((pulls > floor) & (idx != exclude))
    if not len(keep):
        return ()
    best: dict[str, float] = {}
    for k, p in zip(keep.tolist(), pulls[keep].tolist()):  # Python numbers: no numpy scalar per item
        it = ids[k]
        if p > best.get(it, -math.inf):
            best[it] = p
    return tuple(it for it, _ in sorted(best.items(), key=lambda kv: -kv[1])[:top])


@runtime_checkable
class Recommender(Protocol):
    """The one learner protocol (see DESIGN.md)."""

    name: ClassVar[str]

    def fit(self, log: InteractionLog) -> Self: ...

    def learn_one(self, event: Event) -> None: ...

    def score(self, user: UserState, items: ItemIds) -> np.ndarray: ...


@runtime_checkable
class Retriever(Protocol):
    """A learner that finds its own best items: ``candidates(user, n)`` -> dense indices.

    At most ``n`` distinct live items, about the learner's ``n`` best-scored ones, in
    time that does not grow with the catalog (neighbour lists, an ANN index, a
    maintained top list). The ranker asks every weighted Retriever for candidates and
    scores only their union.

    Examples
    --------
    >>> from liverec.models import ItemKNN, ContentProfile
    >>> isinstance(ItemKNN(), Retriever), isinstance(ContentProfile(), Retriever)
    (True, False)
    """

    def candidates(self, user: UserState, n: int) -> np.ndarray: ...


@runtime_checkable
class PreparesRetrieval(Protocol):
    """A :class:`Retriever` whose ``candidates`` search a structure made on first use (an ANN
    graph over its item vectors): ``prepare_retrieval()`` makes it now. The engine calls it on
    freshly fitted learners before they serve, when it serves in two stages, so that no
    request after a fit waits for a graph to be built (seconds at 100k items).

    Examples
    --------
    >>> from liverec.models import ALS, ItemKNN
    >>> isinstance(ALS(), PreparesRetrieval), isinstance(ItemKNN(), PreparesRetrieval)
    (True, False)
    """

    def prepare_retrieval(self) -> None: ...


@runtime_checkable
class VectorQuery(Protocol):
    """A learner whose score is an inner product with the catalog's item vectors.

    ``query_vector(user)`` (None for a cold user) is searched in the engine's vector
    index; a Retriever is asked for ``candidates`` instead, whatever else it offers.
    """

    def query_vector(self, user: UserState) -> np.ndarray | None: ...


@runtime_checkable
class ItemSpace(Protocol):
    """A :class:`VectorQuery` learner whose query lives in a space of its own item vectors:
    ``item_vectors(idx)`` gives catalog rows ``idx`` in that space (the exploring
    policies read the user's query and the candidates' vectors there).

    Examples
    --------
    >>> from liverec.models import ContentProfile, ItemKNN
    >>> isinstance(ContentProfile(), ItemSpace), isinstance(ItemKNN(), ItemSpace)
    (True, False)
    """

    def query_vector(self, user: UserState) -> np.ndarray | None: ...

    def item_vectors(self, idx: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class ScoreFloor(Protocol):
    """A learner that knows its lowest score over the live catalog without scoring it.

    ``floor(user)`` (None: unknown) is the minimum that two-stage serving normalises
    with, so an item's fused score does not depend on which others were retrieved.
    """

    def floor(self, user: UserState) -> float | None: ...


@runtime_checkable
class RetrieverWithFloor(Protocol):
    """A :class:`Retriever` and :class:`ScoreFloor` that finds both in one search:
    ``candidates_with_floor(user, n)`` is ``(candidates(user, n), floor(user))``, cheaper
    than the two calls (an index searched both ways at once). Two-stage serving asks it.

    Examples
    --------
    >>> from liverec.models import ALS, ItemKNN
    >>> isinstance(ALS(), RetrieverWithFloor), isinstance(ItemKNN(), RetrieverWithFloor)
    (True, False)
    """

    def candidates_with_floor(self, user: UserState, n: int) -> tuple[np.ndarray, float | None]: ...


@runtime_checkable
class EventCounts(Protocol):
    """A learner that counts the positive events it learned per item.

    ``events_on(idx)`` (dense indices; items beyond what it knows count 0) tells serving
    which items nobody has acted on yet: a request that ranks only such items (a shelf of
    new arrivals) is served with the weights tuned for ranking new items.
    """

    def events_on(self, idx: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Popularity(Protocol):
    """A learner that knows how popular items are right now: ``decayed(idx)`` (dense
    indices; >= 0). Serving breaks (near-)ties of the fused score by it, whatever the
    source's fusion weight, so a user no source knows yet (a first visit) is shown what is
    popular rather than items in catalog order.

    Examples
    --------
    >>> from liverec.models import ItemKNN, Trending
    >>> isinstance(Trending(), Popularity), isinstance(ItemKNN(), Popularity)
    (True, False)
    """

    def decayed(self, idx: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class BatchLearner(Protocol):
    """A learner that learns a run of events in one call: ``learn_many(events)`` leaves
    exactly the state ``learn_one`` on each event, in order, leaves (what scores, retrieval
    and a snapshot read), only faster. A restart replays the log after its snapshot in
    such runs; learners without it are replayed event by event.

    Examples
    --------
    >>> from liverec.models import ItemKNN, Trending
    >>> isinstance(ItemKNN(), BatchLearner), isinstance(Trending(), BatchLearner)
    (True, False)
    """

    def learn_many(self, events: Sequence[Event]) -> None: ...


@runtime_checkable
class Explains(Protocol):
    """A learner that names the history items behind its score of item ``idx``:
    ``because(user, idx, top)`` -> up to ``top`` item ids, strongest first (the
    reasons' "similar to X, which you liked").

    Examples
    --------
    >>> from liverec.models import ItemKNN, Trending
    >>> isinstance(ItemKNN(), Explains), isinstance(Trending(), Explains)
    (True, False)
    """

    def because(self, user: UserState, idx: int, top: int = 2) -> tuple[str, ...]: ...


@runtime_checkable
class ExplainsMany(Explains, Protocol):
    """An :class:`Explains` learner that names the history items behind several items in
    one call: ``because_many(user, idx, top)`` is ``[because(user, i, top) for i in idx]``,
    with what depends on the user alone worked out once (a slate explains up to ten items).

    Examples
    --------
    >>> from liverec.models import ALS, Transition
    >>> isinstance(ALS(), ExplainsMany), isinstance(Transition(), ExplainsMany)
    (True, False)
    """

    def because_many(self, user: UserState, idx: Sequence[int], top: int = 2) -> list[tuple[str, ...]]: ...


@runtime_checkable
class UserWeight(Protocol):
    """A learner whose fusion weight depends on the user: the ranker multiplies the
    source's weight by ``fusion_scale(user)`` (>= 0) for that user's request.

    Examples
    --------
    >>> from liverec.models import ContentProfile, DeclaredInterests
    >>> isinstance(DeclaredInterests(), UserWeight), isinstance(ContentProfile(), UserWeight)
    (True, False)
    """

    def fusion_scale(self, user: UserState) -> float: ...


class Learner(abc.ABC):
    """Convenience base: hyperparameters from the constructor, clone, save/load, forget.

    Subclasses implement ``fit``, ``learn_one`` and ``score``; they may also provide
    ``candidates(user, n)`` (:class:`Retriever`), ``query_vector(user)``
    (:class:`VectorQuery`, searched in the engine's vector index) and
    ``because(user, idx)`` (:class:`Explains`: history items behind a score; with
    ``because_many``, :class:`ExplainsMany`).
    """

    name: ClassVar[str] = "learner"
    #: Whether the learner ranks items nobody has interacted with yet (from their text
    #: or LM vector): the tuner weighs such sources on new items too.
    scores_new_items: ClassVar[bool] = False
    #: Whether events change the learner's scores. A source that scores what the user
    #: declared (not what they did) does not: a log holds no evidence of its weight, so
    #: weights learned from a log leave it at its setting.
    learns_from_events: ClassVar[bool] = True
    #: Whether the learner can keep no table per user (``user_tables=False``) and read each
    #: user from the request's recent events (``UserState.history``) instead: with
    #: ``Settings.user_tables=False`` the engine builds such learners that way, so a
    #: replica's memory does not grow with users through them.
    users_from_events: ClassVar[bool] = False
    #: Whether, without tables, the learner scores exactly as with them for users whose events
    #: all fit in the recent ones (False: the learner's docstring says where it differs).
    users_from_events_exact: ClassVar[bool] = True
    #: Whether, without tables, the learner's item side learns at fits only (its per-event
    #: update needs the user's earlier items). ``Settings.user_tables=False`` then leaves it
    #: its tables; its own source settings can still turn them off (``{"user_tables": false}``),
    #: at a measured cost in quality (docs/scaleout.md).
    item_side_at_fits_without_tables: ClassVar[bool] = False
    #: Hyperparameter -> values ``fit(tune=True)`` tries (none: the tuner only weighs it).
    search_space: ClassVar[Mapping[str, Sequence[Any]]] = {}
    #: Array attributes that only a fit sets (never changed in place): they are kept
    #: read-only (:meth:`freeze`), and a scheduled snapshot refers to them instead of
    #: copying them under the engine lock (``frame_parts``).
    fixed_between_fits: ClassVar[tuple[str, ...]] = ()
    #: The catalog the learner was fitted on (set by ``fit`` and ``from_state``).
    catalog_: Catalog

    @abc.abstractmethod
    def fit(self, log: InteractionLog) -> Self:
        """Reset, then learn from ``log``; returns ``self``."""

    @abc.abstractmethod
    def learn_one(self, event: Event) -> None:
        """The real-time update from one event."""

    @abc.abstractmethod
    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        """One score per item of ``items`` for ``user``, higher = better."""

    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def clone(self) -> Self:
        """A fresh, unfitted learner with the same hyperparameters."""
        return type(self)(**copy.deepcopy(self.get_params()))

    @property
    def _fb(self) -> FeedbackConfig:
        """The learner's feedback weighting (``feedback`` hyperparameter, or the defaults)."""
        return getattr(self, "feedback", None) or FeedbackConfig()

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise NotFittedError(
                f"{type(self).__name__} is not fitted yet: call fit(log) before learn_one or score."
            )

    def forget(self, user: str, events: Sequence[Event]) -> None:
        """Remove everything learned from ``user`` (their ``events`` are given)."""

    def learned_state(self) -> dict[str, Any]:
        """Hyperparameters and learned state, without the catalog (``from_state`` re-attaches it)."""
        return {k: v for k, v in self.__dict__.items() if k != "catalog_"}

    @staticmethod
    def from_state(cls: type["Learner"], state: Mapping[str, Any], catalog: Catalog) -> "Learner":
        """The learner ``cls`` with ``state`` (from :meth:`learned_state`) over ``catalog``."""
        obj = cls.__new__(cls)
        obj.__dict__.update(state)
        if "fitted_" in state:
            obj.catalog_ = catalog
        obj.freeze()
        return obj

    def freeze(self) -> None:
        """Mark the :attr:`fixed_between_fits` arrays read-only (a fit calls it once they are set).

        >>> from liverec.models import EASE
        >>> m = EASE(); m.B_ = np.eye(2, dtype=np.float32); m.freeze(); m.B_.flags.writeable
        False
        """
        for name in self.fixed_between_fits:
            value = self.__dict__.get(name)
            if isinstance(value, np.ndarray):
                value.flags.writeable = False

    def dumps(self) -> bytes:
        """Serialise learned state (the catalog is not included; ``loads`` re-attaches it)."""
        return pickle.dumps((type(self), self.learned_state()), protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(payload: bytes, catalog: Catalog) -> "Learner":
        """Inverse of ``dumps``. Only load payloads your own store wrote (pickle)."""
        cls, state = pickle.loads(payload)
        return Learner.from_state(cls, state, catalog)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


#: Registered learner classes by name; the shared check suite runs on every one.
REGISTRY: dict[str, type[Learner]] = {}


def register(cls: type[Learner]) -> type[Learner]:
    REGISTRY[cls.name] = cls
    return cls
