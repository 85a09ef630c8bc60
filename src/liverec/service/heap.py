"""Keeping the engine's long-lived objects out of the cyclic garbage collector's walks.

The process holds a few hundred thousand long-lived objects that the cyclic collector
tracks (the libraries' modules and functions, users' recent events, learner tables).
A full collection walks all of them holding the GIL: 0.2 s for about 450,000 objects on
a 2-core machine, stalling every request in flight. ``gc.freeze`` moves every object
alive into a permanent generation that no collection walks; objects there are still
freed by reference counting the moment nothing refers to them.

:class:`HeapSettler` freezes the heap when the service starts and after every swap of
new learners (``Engine.on_swap``), and also while a fit's new learners catch up with the
events recorded during the fit, before it and after each of its runs
(``Engine.on_catch_up``): unfrozen, the new model set's objects and the users' events the
catch-up replaces were walked by every full collection its allocations set off, 0.1-0.2 s
each. A swap only collects the young generations and freezes what survived: the learners
it replaced, frozen at the last swap, are freed by reference counting (every registered
learner is checked to hold no reference cycle: ``tests/checks/learner_checks.py``). Whatever does leak into the permanent generation (a
reference cycle of a custom learner or of a library) is reclaimed by a full settle
(unfreeze, full collection, freeze) once the frozen heap has grown by ``regrowth`` over
its size after the last full settle: a leak stays bounded, and the full pause comes once
per such growth instead of at every swap.

Events learned and lists ranked between swaps add long-lived objects too (users' recent
events, what a request keeps for the next one): the service counts them
(:meth:`HeapSettler.made`), and after every ``every`` of them it freezes what survived the
young generations. Unfrozen, they piled up in the oldest generation, and the full
collections their growth set off walked them all: 100-180 ms each, every 3-4 s under batch
ingestion on a 2-core machine, and 40-90 ms every 15-30 s under a mixed load.

>>> s = HeapSettler()
>>> s.full()                       # what the service does when it starts
>>> s.young()                      # new learners catching up: young generations only
>>> s()                            # after a swap: the same, and a full settle if the heap regrew
>>> s.made(s.every)                # events learned, lists ranked: the same after every ``every``
>>> s.full_settles
1
>>> gc.unfreeze()                  # (leave the doctest's process as it was)
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("liverec.http")


class HeapSettler:
    """Freeze the heap cheaply after each swap; fully settle it when the frozen part regrows.

    ``regrowth``: a full settle comes when the frozen heap holds this many times the objects
    it held after the last one (1.25: at most a quarter of the heap can be leaked cycles).
    ``every``: events learned and lists ranked between two freezes of what they left (:meth:`made`).
    """

    def __init__(self, regrowth: float = 1.25, every: int = 1_000) -> None:
        if not regrowth > 1.0:
            raise ValueError(f"regrowth must be > 1 (got {regrowth!r}): the frozen heap's growth that triggers a full settle")
        if every < 1:
            raise ValueError(f"every must be >= 1 (got {every!r}): events learned and lists ranked between two freezes")
        self.regrowth, self.every = regrowth, every
        self.since_freeze = 0
        self.frozen_after_full = 0
        self.full_settles = 0
        # The frozen heap's size when last counted, and what made() froze since: counting it
        # walks every frozen object (10 ms at 1.5 million), so made() counts it only when
        # what it froze since could have taken it past its bound (reference counting frees
        # frozen objects too, so the sum is an upper bound); a swap always counts.
        self.counted = 0
        self.frozen_since = 0

    def full(self) -> None:
        """Free what is left in reference cycles anywhere, then freeze every object alive."""
        t = time.perf_counter()
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        self.frozen_after_full = self.counted = gc.get_freeze_count()
        self.frozen_since = 0
        self.full_settles += 1
        log.debug("heap settled in full: %d objects frozen in %.3f s", self.frozen_after_full, time.perf_counter() - t)

    def young(self) -> None:
        """Collect the young generations and freeze what survived (no full collection)."""
        gc.collect(1)
        gc.freeze()

    def made(self, n: int) -> None:
        """``n`` more events were learned or lists ranked; after every ``every`` of them, the
        young generations collected and what survived frozen, and a full settle if the frozen
        heap could have regrown past its bound and did."""
        self.since_freeze += n
        if self.since_freeze < self.every:
            return
        self.since_freeze = 0
        gc.collect(1)
        self.frozen_since += len(gc.get_objects(generation=2))  # the survivors: what the freeze adds
        gc.freeze()
        if self.counted + self.frozen_since > self.regrowth * self.frozen_after_full:
            self._settle_if_regrown()

    def __call__(self) -> None:
        """After a swap: collect the young generations, freeze the rest; a full settle if the
        frozen heap regrew past its bound."""
        self.young()
        self.since_freeze = 0
        self._settle_if_regrown()

    def _settle_if_regrown(self) -> None:
        self.counted, self.frozen_since = gc.get_freeze_count(), 0
        if self.counted > self.regrowth * self.frozen_after_full:
            self.full()
