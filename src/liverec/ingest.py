"""The ingestor: validate -> append -> learn, for single events, batches and group commits.

Every event path of the engine goes through :meth:`Ingestor.record_groups`: each
group is validated on its own (a bad group gets its error, nothing of it is stored),
the good groups are appended to the durable log in **one** transaction, and every
event that was new (its id not seen before) is handed to ``learn`` at once, in
append order. Notifying other replicas is the store's job (the log is the source of
truth; see :meth:`liverec.Engine.sync`): the ingestor only remembers which ids this
process has already learned, so the replica cursor skips them.

Examples
--------
>>> import threading
>>> from liverec.encode import Catalog
>>> from liverec.settings import Settings
>>> from liverec.store import Store
>>> from liverec.models.base import FeedbackConfig
>>> from liverec.types import Event
>>> cat = Catalog(dim=2)
>>> _ = cat.upsert(["a"], np.ones((1, 2), np.float32), [{}], [""])
>>> learned = []
>>> ing = Ingestor(Store.open(), cat, Settings(), threading.RLock(), FeedbackConfig, write_lock=threading.RLock(),
...                learn=learned.extend, seen=lambda e: None, create_items=lambda ids: None)
>>> ing.record_groups([[Event(user="u", item="a", id="e1")], [Event(user="u", item="zz")]])[0]
1
>>> [e.id for e in learned]
['e1']
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Sequence

import numpy as np  # noqa: F401  (doctest namespace)

from .encode.catalog import Catalog
from .errors import LiverecError, UnknownItemError
from .models.base import FeedbackConfig
from .settings import Settings
from .store import Store
from .types import Event
from .validate import check_event


class Ingestor:
    """Validates, durably appends and learns events (see the module docstring).

    ``feedback`` returns the engine's current feedback reading (it changes when a
    tuned configuration is adopted); ``learn(e)`` updates every learner and the user's
    state; ``seen(e)`` records the event in the user's state only (``learn=False``
    imports); ``create_items(ids)`` adds text-less items when
    ``Settings.auto_create_items`` is on.

    Two locks: ``write_lock`` keeps writers to the log one at a time, in log order (each
    batch is appended, then learned, before the next one is appended); ``lock``, the
    engine's, is held only to check items and to learn, not over the durable commit, so
    requests rank while a commit waits for the disk. Whatever must see every committed
    event of this engine learned (a swap of new learners, an erasure, a replica's catch-up,
    a snapshot) takes ``write_lock`` first.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        settings: Settings,
        lock: threading.RLock,
        feedback: Callable[[], FeedbackConfig],
        *,
        write_lock: threading.RLock,
        learn: Callable[[list[Event]], None],
        seen: Callable[[Event], None],
        create_items: Callable[[list[str]], None],
    ) -> None:
        self.store, self.catalog, self.settings, self.lock = store, catalog, settings, lock
        self.write_lock = write_lock
        self.feedback = feedback
        self.learn, self.seen, self.create_items = learn, seen, create_items
        #: True when several engines share the store: ids learned here are remembered
        #: until the replica cursor passes them, so they are not learned twice.
        self.replicated = False
        #: Ids this process learned at record time, not yet passed by the cursor.
        self.own: set[str] = set()

    def validate(self, e: Event, where: str) -> Event:
        """The event, checked against the settings (raises ValidationError naming ``where``)."""
        s = self.settings
        return check_event(
            e, where, kinds=self.feedback().kind_weights, max_value=s.max_event_value,
            rating_range=(s.rating_min, s.rating_max), max_clock_skew=s.max_clock_skew_seconds,
        )

    def record_groups(
        self, groups: Sequence[Iterable[Event]], *, learn: bool = True
    ) -> list[int | LiverecError]:
        """Per group, how many events were new, or the error that refused the group."""
        results: list[int | LiverecError] = []
        good: list[tuple[int, list[Event]]] = []
        for g, group in enumerate(groups):
            try:
                evs = [self.validate(e, f"events[{i}]") for i, e in enumerate(group)]
            except LiverecError as exc:
                results.append(exc)
                continue
            results.append(0)
            if evs:
                good.append((g, evs))
        if not good:
            return results
        with self.write_lock:
            with self.lock:  # items may be created: the catalog changes under the engine lock
                keep: list[tuple[int, list[Event]]] = []
                for g, evs in good:
                    refused = self._unknown_items(evs)
                    if refused is not None:
                        results[g] = refused
                        continue
                    keep.append((g, evs))
            flat = [e for _, evs in keep for e in evs]
            owner = [g for g, evs in keep for _ in evs]
            new = self.store.append_events(flat)  # durable; requests go on ranking meanwhile
            for i in new:
                results[owner[i]] += 1  # type: ignore[operator]
            fresh = [flat[i] for i in new]
            with self.lock:
                if self.replicated:  # the replica cursor must not learn these twice
                    self.own.update(flat[i].id for i in new)
                if learn:  # one call, in log order: a learner that can takes the batch at once
                    self.learn(fresh)
                else:
                    for e in fresh:
                        self.seen(e)
        return results

    def _unknown_items(self, evs: list[Event]) -> UnknownItemError | None:
        """Create or refuse the group's items that are not in the catalog."""
        missing = {e.item for e in evs if e.item not in self.catalog}
        if not missing:
            return None
        if self.settings.auto_create_items:
            self.create_items(sorted(missing))
            return None
        first = next(i for i, e in enumerate(evs) if e.item in missing)
        return UnknownItemError(
            f"events[{first}].item {evs[first].item!r} is not in the catalog"
            + (f" (and {len(missing) - 1} more unknown items)" if len(missing) > 1 else "")
            + ". Nothing was stored.",
            field=f"events[{first}].item",
        )
