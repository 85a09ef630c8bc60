"""The serving path: retrieve -> score -> fuse -> filter -> policy -> explain -> log.

One object per engine, holding what every request shares (catalog, vector index,
settings, served-slate memory, impression log, the block list); the learners and the
user's state come with each call, because a fit swaps the learners and the caller holds
the lock.

Examples
--------
>>> pipe = Pipeline(settings, catalog, index, served, impressions)          # doctest: +SKIP
>>> recs = pipe.serve(state, seen, learners, Request(user="u1", k=10, weights=w))  # doctest: +SKIP
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

from ..encode.catalog import Catalog
from ..models.base import EventCounts, ItemSpace, Learner, UserState
from ..settings import Settings
from ..store import Impression
from ..store.impressions import ImpressionWriter
from ..types import Recommendation, ServedRow, new_id, served_rows
from . import ranker
from .calibrate import DEFAULT, CandidateCalibration
from .feedback import SlateFeedback
from .index import VectorIndex
from .policy import SlateContext
from .slate import build_slate, catalog_title_words


@dataclass(frozen=True)
class Request:
    """One validated recommendation request (see ``Engine.recommend`` for each field)."""

    user: str
    k: int
    weights: dict[str, float]
    candidates: Sequence[str] | None = None
    exclude_seen: bool = True
    exclude: Sequence[str] | None = None
    filters: Mapping[str, Any] | None = None
    diversity: float = 0.0
    max_per_provider: int | None = None
    policy: str = "greedy"
    context: Mapping[str, Any] = field(default_factory=dict)
    explain: bool = True
    log: bool = True
    #: Used instead of ``weights`` when every candidate is an item nobody has acted on yet.
    new_item_weights: dict[str, float] | None = None
    #: Candidates each source retrieves (None: the settings', else the calibrated count).
    per_source: int | None = None


def taste_space(learners: Mapping[str, Learner]) -> ItemSpace | None:
    """The learner whose query places the user's behaviour among item vectors (an exploring
    policy's context): the first by name that offers :class:`~liverec.models.base.ItemSpace`
    and learns from events (declared interests describe what a user said, not did).

    >>> from liverec.models import ContentProfile, DeclaredInterests, ItemKNN
    >>> m = {"interests": DeclaredInterests(), "itemknn": ItemKNN(), "zcontent": ContentProfile()}
    >>> type(taste_space(m)).__name__, taste_space({"itemknn": ItemKNN()})
    ('ContentProfile', None)
    """
    for name in sorted(learners):
        model = learners[name]
        if model.learns_from_events and ranker.offers(model, ItemSpace):
            return model
    return None


class Pipeline:
    """Turns a user's state and the learners into a served, explained, logged slate."""

    def __init__(
        self, settings: Settings, catalog: Catalog, index: VectorIndex, served: SlateFeedback,
        impressions: ImpressionWriter,
    ) -> None:
        self.settings, self.catalog, self.index = settings, catalog, index
        self.served, self.impressions = served, impressions
        self._blocked: tuple[int, np.ndarray] | None = None
        #: The last candidate-count calibration (used unless ``Settings.candidates_per_source`` is set).
        self.calibration: CandidateCalibration | None = None

    def per_source(self, req: Request | None = None) -> int:
        """Candidates each source retrieves for ``req``: the request's, the settings', the
        calibrated count (:mod:`liverec.rank.calibrate`), else :data:`~liverec.rank.calibrate.DEFAULT`."""
        if req is not None and req.per_source is not None:
            return req.per_source
        if self.settings.candidates_per_source is not None:
            return self.settings.candidates_per_source
        return self.calibration.chosen if self.calibration is not None else DEFAULT

    # ------------------------------------------------------------ candidates
    def score(
        self, state: UserState, seen: set[int], learners: Mapping[str, Learner], req: Request,
        must_include: int | None = None, exact: bool = False,
    ) -> ranker.Scored | None:
        """Candidates (retrieved, or the caller's, filtered) scored by every source and fused;
        ``exact``: every live item, normalised over the catalog, whatever the index."""
        cat = self.catalog
        if cat.n_alive == 0:
            return None
        floor: dict[str, float] | None = None
        if req.candidates is not None:
            idx = cat.select(req.candidates).idx
        elif req.filters:
            idx = np.flatnonzero(cat.filter_mask(req.filters))
        elif exact:
            idx = cat.alive_idx()
        else:
            n = max(req.k, self.per_source(req)) + len(seen)
            # Two-stage above the index's threshold: normalised with catalog-wide minima.
            idx, floor = ranker.retrieve_with_floors(state, learners, req.weights, cat, self.index, n)
        if req.filters and req.candidates is not None:
            idx = idx[cat.filter_mask(req.filters)[idx]]
        blocked = self.blocked_mask()
        if blocked is not None:
            idx = idx[~blocked[idx]]
        if req.exclude:
            idx = idx[~np.isin(idx, cat.live_indices(req.exclude))]
        if req.exclude_seen and seen:
            keep = np.ones(len(cat), dtype=bool)
            keep[np.fromiter(seen, dtype=np.int64, count=len(seen))] = False
            idx = idx[keep[idx]]
        if must_include is not None and must_include not in idx:
            idx = np.append(idx, must_include)
        return ranker.fuse(state, cat.from_idx(idx), learners, req.weights, floor)

    def for_new_items(self, req: Request, learners: Mapping[str, Learner]) -> Request:
        """``req`` with its new-item weights when its candidates are all items nobody has acted
        on yet (as an :class:`~liverec.models.base.EventCounts` source counts), else as it is."""
        if req.candidates is None or not req.new_item_weights:
            return req
        counters = [m for m in learners.values() if ranker.offers(m, EventCounts)]
        if not counters:
            return req
        idx = self.catalog.select(req.candidates).idx
        if len(idx) and all(not m.events_on(idx).any() for m in counters):
            return replace(req, weights=dict(req.new_item_weights))
        return req

    def blocked_mask(self) -> np.ndarray | None:
        """Items never to serve (blocklist ids and blocked terms), cached per catalog version."""
        s = self.settings
        if not s.blocklist and not s.blocked_terms:
            return None
        if self._blocked is not None and self._blocked[0] == self.catalog.version:
            return self._blocked[1]
        cat = self.catalog
        mask = np.zeros(len(cat), dtype=bool)
        for item in s.blocklist:
            i = cat.index.get(item)
            if i is not None:
                mask[i] = True
        terms = [t.lower() for t in s.blocked_terms if t]
        if terms:
            for i, text in enumerate(cat.texts):
                low = text.lower()
                if any(t in low for t in terms):
                    mask[i] = True
        self._blocked = (cat.version, mask)
        return mask

    # ------------------------------------------------------------------ serve
    def serve(self, state: UserState, seen: set[int], learners: Mapping[str, Learner], req: Request) -> list[Recommendation]:
        """The slate for ``req``: greedy (diversity, exposure caps) or an exploring policy."""
        req = self.for_new_items(req, learners)
        scored = self.score(state, seen, learners, req)
        if scored is None:
            return []
        if req.policy != "greedy":
            return self._explore(state, learners, scored, req)
        order = self._greedy(scored, req)
        recs = ranker.to_recommendations(state, scored, order, learners, self.catalog, with_reasons=req.explain)
        self.served.remember(req.user, scored, order, req.weights)
        self._log(req, recs, scored, order, "greedy")
        return recs

    def _greedy(self, scored: ranker.Scored, req: Request) -> np.ndarray:
        """Positions (in ``scored``) of the greedy slate: diversity, provider and title-word caps."""
        providers = None
        if req.max_per_provider is not None and self.settings.provider_attribute:
            attr, attrs = self.settings.provider_attribute, self.catalog.attributes
            providers = [attrs[i].get(attr) for i in scored.items.idx]
        cap = self.settings.max_per_title_word
        return build_slate(
            scored.fused, self.catalog.vectors, req.k, diversity=float(req.diversity), rows=scored.items.idx,
            providers=providers, max_per_provider=req.max_per_provider if providers is not None else None,
            words=catalog_title_words(self.catalog, scored.items.idx) if cap else None, max_per_word=cap,
        )

    def ranked(
        self, state: UserState, seen: set[int], learners: Mapping[str, Learner], req: Request, *, exact: bool = False
    ) -> list[int]:
        """The catalog rows of the greedy slate ``serve`` would give (nothing remembered, logged or
        explained); ``exact``: with every item scored instead of the retrieved candidates."""
        scored = self.score(state, seen, learners, req, exact=exact)
        if scored is None:
            return []
        return scored.items.idx[self._greedy(scored, req)].tolist()

    def _explore(
        self, state: UserState, learners: Mapping[str, Learner], scored: ranker.Scored, req: Request
    ) -> list[Recommendation]:
        """Let an exploring policy pick the slate; remember it so feedback can reward it."""
        space = taste_space(learners)
        query = space.query_vector(state) if space is not None else None
        vecs = space.item_vectors if space is not None and query is not None else None
        ctx = SlateContext(state, scored.items, scored.fused, query, self.catalog, vecs, scored.parts)
        chosen = self.served.choose(req.policy, ctx, scored, req.k)
        self.served.remember(state.user, scored, chosen.positions, req.weights)
        recs = ranker.to_recommendations(state, scored, chosen.positions, learners, self.catalog, with_reasons=req.explain)
        recs = [replace(r, propensity=float(p)) for r, p in zip(recs, chosen.propensities)]
        self._log(req, recs, scored, chosen.positions, req.policy)
        return recs

    def _log(self, req: Request, recs: list[Recommendation], scored: ranker.Scored, order: np.ndarray, policy: str) -> None:
        """The served slate as impressions, each with its per-source contributions (the
        fusion weights are learned from them). Called under the engine lock: an erasure
        running now cannot be followed by this user's impressions."""
        if recs and req.log:
            pos = np.asarray(order, dtype=np.intp)
            cols = [(n, np.round(v[pos], 6).tolist()) for n, v in scored.parts.items()]
            self._write(req.user, served_rows(recs), policy, [
                {**dict(req.context), "sources": {n: v[j] for n, v in cols}} for j in range(len(pos))
            ])

    def log_cached(
        self, user: str, rows: Sequence[ServedRow], policy: str, context: Mapping[str, Any] | None
    ) -> None:
        """A slate served again from a response cache (its :func:`~liverec.types.served_rows`),
        logged with the same propensities."""
        if rows:
            self._write(user, rows, policy, [{**dict(context or {}), "cached": True}] * len(rows))

    def _write(
        self, user: str, rows: Sequence[ServedRow], policy: str, contexts: Sequence[Mapping[str, Any]]
    ) -> None:
        rid, now = new_id(), time.time()
        self.impressions.write([
            Impression(rid, user, item, position, score, propensity, policy, now, dict(c))
            for (item, position, score, propensity), c in zip(rows, contexts)
        ])

    # ---------------------------------------------------------------- explain
    def explain(
        self, state: UserState, seen: set[int], learners: Mapping[str, Learner], item: str, idx: int,
        weights: dict[str, float], *, exclude_seen: bool = True,
    ) -> Recommendation:
        """Why ``item`` (dense ``idx``) would or would not be served to this user now, and its rank.

        Scored among the same candidates as a default ``recommend`` (the item itself added
        if a filter or the seen list drops it), so score and rank agree with the list.
        """
        req = Request(user=state.user, k=10, weights=weights, exclude_seen=exclude_seen)
        scored = self.score(state, seen, learners, req, must_include=idx)
        assert scored is not None
        pos = int(np.flatnonzero(scored.items.idx == idx)[0])
        rank = int((scored.fused > scored.fused[pos]).sum())
        cap = self.settings.max_per_title_word
        if cap:  # the list's title-word cap moves items: the rank is the place in that order
            order = build_slate(scored.fused, None, len(scored.fused), rows=scored.items.idx,
                                words=catalog_title_words(self.catalog, scored.items.idx), max_per_word=cap)
            rank = int(np.flatnonzero(order == pos)[0])
        return Recommendation(
            item=item, score=float(scored.fused[pos]),
            reasons=ranker.explain(state, scored, pos, learners, self.catalog), position=rank,
        )
