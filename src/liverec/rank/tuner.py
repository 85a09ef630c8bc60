"""Self-tuning: pick every source's hyperparameters, the feedback reading and the fusion
weights on a time split of the engine's own log.

The split: for (a seeded sample of) users with enough positive events, the most recent
``holdout`` share of their events (at least one) is held out; everything else is the
training log. Learners are fitted on the training log; each validation user is ranked
from their training history (their training items excluded) exactly as the engine
ranks: every source scored over the candidates, min-max normalised per source, fused by
weighted sum. The objective mixes what a user does next and what they do later::

    objective = next_share * HR@k(the next item, asked as a live engine is asked)
                + (1 - next_share) * NDCG@k(all held-out items)
                + new_item_share * NDCG@k(ranking new items)

(``next_share`` 0.5 by default: ``Settings.tune_next_share``. Where the next item follows
the previous one closely, the first term favours sources of the last item, at some cost to
the later ones: what lists shown for a while need is the second.)

The first term replays serving (:func:`replay_split`): each source is fitted on the log
up to a time cut (all but the last 20%, at most 20,000 events: about what a served engine
learns one event at a time between two periodic re-fits), then learns the events after
the cut one at a time, as served, and a seeded sample of those events (uniform over
events, so a user who comes back often counts often) is asked for beforehand from the
user's history at that moment. Between re-fits a live engine's batch-fitted sources grow
stale while its per-event ones do not, and its requests come from users as often as
they come back; the board asks the way the engine is asked. (It replaced a board that cut
each sampled user at a random point of their own history, all sources fitted right
before it: the stream protocol's HR@10 rose on both MovieLens sets, benchmarks/RESULTS.md.)
Each source is fitted on both training logs,
so a trial costs about twice a fit, plus the replay (one ``learn_one`` per tail event).

The last term keeps new items in view: a seeded 10% of the items with enough events
are hidden from a second training log (as if just added to the catalog), and the
users who chose them rank only those items. Only sources that declare
``scores_new_items`` (text, LM vectors, the LM->CF map) are fitted for it; the others
cannot tell unseen items apart, so they add nothing there.

The search is coordinate-wise on that one fused objective, within a time budget:
  1. the feedback reading (``rating_engagement`` / ``rating_valence``; only when the
     log holds ratings) — every source is refitted for each option;
  2. each source's declared ``search_space`` (one source refitted per trial, the
     others' validation scores cached);
  3. the fusion weights (coordinate ascent over multiplicative steps; no refit);
  4. the new-item weights: the same ascent from the chosen weights, over the sources that
     rank new items, on the new-item split alone — served to a request whose candidates
     are all items nobody has acted on yet.
Trials run in a fixed, seeded order; a trial that raises is recorded with its error and
skipped. Trials run in batches: up to ``batch_size`` consecutive trials of one stage are
fitted together (by a :class:`~liverec.jobs.JobRunner`: here, or as Ray tasks on a
cluster), then scored and chosen in plan order. Their fits are independent: a stage-1
trial refits every source with its own reading, and a stage-2 grid point names every
parameter of its source's space, so what an earlier trial of the batch chose does not
change it. Hence the choice is the same whatever runs the fits and whatever the batch
size. Where the trials of a batch run one after another (here, or in a child process;
not on Ray, where they run side by side), a batch holds no more trials than the remaining
budget fits at the seconds this stage's trials have taken so far (the first source trials
are estimated from the starting fit), so a budget is overrun by about one trial, not one
batch. A batch is only started while the budget lasts, so a short budget stops early
(recorded as ``stopped_by_budget``), at a batch boundary, and then still searches the
fusion weights once more if a reading or a source's parameters changed since the last
weight search (it refits nothing: seconds, where a trial refits a source; ``max_trials``
is exact and skips it) — with the same budget on the
same machine and runner the run is deterministic; ``max_trials`` (exact: it can cut a
batch) makes it so anywhere.

Examples
--------
>>> tuned = Tuner(make_learner, sources, weights, feedback, budget_seconds=60).run(events, catalog)  # doctest: +SKIP
>>> tuned.weights, tuned.score, tuned.default_score                                                   # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ..encode.catalog import Catalog
from ..jobs import Failed, JobRunner, LocalJobs
from ..models.base import FeedbackConfig, InteractionLog, Learner, UserState
from ..types import Event
from .ranker import TIE_BREAK, minmax

#: Feedback readings tried when the log holds ratings: (rating_engagement, rating_valence).
FEEDBACK_OPTIONS: tuple[tuple[float, float], ...] = ((1.0, 0.0), (1.0, 0.5), (1.0, 0.9), (0.0, 1.0))

#: Multiplicative steps of the fusion-weight search (0 switches a source off).
WEIGHT_STEPS: tuple[float, ...] = (0.0, 0.25, 0.5, 2.0, 4.0)

MakeLearner = Callable[[str, Mapping[str, Any], FeedbackConfig], Learner]


@dataclass(frozen=True)
class TunedConfig:
    """What the tuner chose, with the evidence.

    ``score`` is the validation objective of the chosen configuration and
    ``default_score`` the same objective for the configuration it started from.
    """

    sources: dict[str, dict[str, Any]]
    weights: dict[str, float]
    feedback: dict[str, float]
    score: float
    default_score: float
    objective: str
    n_validation_users: int
    n_train_events: int
    seconds: float
    seed: int
    stopped_by_budget: bool
    trials: list[dict[str, Any]] = field(default_factory=list)
    #: The weights for a request that ranks only items nobody has acted on yet (searched
    #: on the new-item board alone; empty: no such board, serve with ``weights``).
    new_item_weights: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TunedConfig":
        return cls(**json.loads(text))

    def summary(self) -> dict[str, Any]:
        """Everything but the trial list (for /stats and reports)."""
        d = asdict(self)
        d["n_trials"] = len(d.pop("trials"))
        d["failed_trials"] = sum(1 for t in self.trials if t.get("error"))
        return d


@dataclass
class _Split:
    train: list[Event]
    users: list[str]
    states: list[UserState]
    next_item: np.ndarray  # (U,) dense idx of each user's first held-out item
    heldout: list[np.ndarray]  # per user: dense idx of all held-out items
    #: A replayed split (:func:`replay_split`): per row, the events learned one at a time
    #: before that row is scored, and the items the row's user had acted on by then.
    replay: list[list[Event]] | None = None
    seen: list[set[int]] | None = None


def time_split(
    events: Sequence[Event],
    catalog: Catalog,
    feedback: FeedbackConfig,
    *,
    holdout: float = 0.2,
    min_events: int = 5,
    max_users: int = 600,
    history_length: int = 50,
    seed: int = 0,
    users: Callable[[str], bool] | None = None,
) -> _Split:
    """Per-user time split of ``events`` (see the module docstring).

    ``users`` restricts which users may be held out (e.g. a held-out check that
    tunes on one half of the users and reports on the other).
    """
    events = sorted(events, key=lambda e: e.timestamp)
    by_user = _positive_by_user(events, catalog, feedback)
    eligible = sorted(u for u, ns in by_user.items() if len(ns) >= min_events and (users is None or users(u)))
    eligible = _sample(eligible, max_users, np.random.default_rng(seed))
    tails = {u: by_user[u][-max(1, int(len(by_user[u]) * holdout)) :] for u in eligible}
    split = _cut(events, {u: tails[u][0] for u in eligible}, catalog, history_length)
    split.heldout = [np.unique([catalog.get_idx(events[n].item) for n in tails[u]]).astype(np.int64)
                     for u in split.users]
    return split


def replay_split(
    events: Sequence[Event],
    catalog: Catalog,
    feedback: FeedbackConfig,
    *,
    share: float = 0.2,
    max_tail: int = 20_000,
    max_rows: int = 600,
    history_length: int = 50,
    seed: int = 0,
    users: Callable[[str], bool] | None = None,
    min_rows: int = 20,
) -> _Split | None:
    """The live engine's situation, replayed: sources fitted on the log up to a time cut,
    then learning the events after it one at a time, each (sampled) positive event asked
    for beforehand from its user's history at that moment.

    The tail is the last ``share`` of the log by time (at most ``max_tail`` events): about
    what a served engine learns online between two periodic re-fits
    (``Settings.refit_growth``). Rows are a seeded sample of the tail's positive events on
    items their user has not acted on yet, uniform over events: a user asked more often
    counts more, as in serving. A user may appear in several rows, each with their
    history as it was. None when fewer than ``min_rows`` rows qualify.
    """
    events = sorted(events, key=lambda e: e.timestamp)
    n_tail = min(int(len(events) * share), max_tail)
    if n_tail < min_rows:
        return None
    cut = len(events) - n_tail
    hist: dict[str, deque[Event]] = {}
    seen: dict[str, set[int]] = {}
    for e in events[:cut]:
        hist.setdefault(e.user, deque(maxlen=history_length)).append(e)
        i = catalog.get_idx(e.item)
        if i is not None:
            seen.setdefault(e.user, set()).add(i)
    # Which tail events qualify depends on what came before them: walk the tail once.
    ok = []
    mine = {u: set(s) for u, s in seen.items()}
    for n in range(cut, len(events)):
        e = events[n]
        i = catalog.get_idx(e.item)
        if (i is not None and feedback.weight(e.kind, e.value) > 0 and i not in mine.get(e.user, ())
                and (users is None or users(e.user))):
            ok.append(n)
        if i is not None:
            mine.setdefault(e.user, set()).add(i)
    if len(ok) < min_rows:
        return None
    rng = np.random.default_rng(seed + 5)
    rows = sorted(rng.choice(np.array(ok), size=min(max_rows, len(ok)), replace=False).tolist())
    take = set(rows)
    row_users, states, next_item, replay, row_seen = [], [], [], [], []
    pending: list[Event] = []
    for n in range(cut, len(events)):
        e = events[n]
        if n in take:
            h = hist.get(e.user, ())
            row_users.append(e.user)
            states.append(UserState(e.user, tuple(h), now=e.timestamp))
            next_item.append(catalog.get_idx(e.item))
            replay.append(pending)
            row_seen.append(set(seen.get(e.user, ())))
            pending = []
        pending.append(e)
        hist.setdefault(e.user, deque(maxlen=history_length)).append(e)
        i = catalog.get_idx(e.item)
        if i is not None:
            seen.setdefault(e.user, set()).add(i)
    nxt = np.array(next_item, dtype=np.int64)
    return _Split(list(events[:cut]), row_users, states, nxt, [nxt[r : r + 1] for r in range(len(nxt))],
                  replay=replay, seen=row_seen)


def _positive_by_user(events: Sequence[Event], catalog: Catalog, feedback: FeedbackConfig) -> dict[str, list[int]]:
    """Per user, the positions in ``events`` of their positive events on known items."""
    by_user: dict[str, list[int]] = {}
    for n, e in enumerate(events):
        if catalog.get_idx(e.item) is not None and feedback.weight(e.kind, e.value) > 0:
            by_user.setdefault(e.user, []).append(n)
    return by_user


def _sample(users: list[str], at_most: int, rng: np.random.Generator) -> list[str]:
    if len(users) <= at_most:
        return users
    return sorted(rng.choice(np.array(users, dtype=object), size=at_most, replace=False).tolist())


def _cut(events: Sequence[Event], cut: Mapping[str, int], catalog: Catalog, history_length: int) -> _Split:
    """Each user in ``cut`` loses their events from position ``cut[user]`` of ``events`` on (skips
    too); the event there is their next item, and their last events before it their history.
    ``heldout`` is that next item alone (a caller may widen it)."""
    train = [e for n, e in enumerate(events) if n < cut.get(e.user, len(events))]
    hist: dict[str, deque[Event]] = {}
    for e in train:
        if e.user in cut:
            hist.setdefault(e.user, deque(maxlen=history_length)).append(e)
    kept = [u for u in cut if u in hist]
    states = [UserState(u, tuple(hist[u]), now=hist[u][-1].timestamp) for u in kept]
    next_item = np.array([catalog.get_idx(events[cut[u]].item) for u in kept], dtype=np.int64)
    return _Split(train, kept, states, next_item, [next_item[r : r + 1] for r in range(len(kept))])


def new_item_split(
    split: _Split, catalog: Catalog, feedback: FeedbackConfig, *, share: float = 0.1, min_events: int = 5,
    max_users: int = 600, history_length: int = 50, seed: int = 0,
) -> tuple[list[Event], _Split] | None:
    """Hide ``share`` of the items with ``min_events`` positive events from the training log.

    Returns (the training log without them, a split whose users rank only them), or None
    when there are too few such items.
    """
    counts: dict[int, int] = {}
    for e in split.train:
        i = catalog.get_idx(e.item)
        if i is not None and feedback.weight(e.kind, e.value) > 0:
            counts[i] = counts.get(i, 0) + 1
    eligible = np.array(sorted(i for i, c in counts.items() if c >= min_events), dtype=np.int64)
    n_new = int(len(eligible) * share)
    if n_new < 10:
        return None
    rng = np.random.default_rng(seed + 1)
    new = set(rng.choice(eligible, size=n_new, replace=False).tolist())
    train = [e for e in split.train if catalog.get_idx(e.item) not in new]
    chose: dict[str, set[int]] = {}
    for e in split.train:
        i = catalog.get_idx(e.item)
        if i is not None and i in new and feedback.weight(e.kind, e.value) > 0:
            chose.setdefault(e.user, set()).add(i)
    hist: dict[str, deque[Event]] = {}
    for e in train:
        if e.user in chose:
            hist.setdefault(e.user, deque(maxlen=history_length)).append(e)
    users = sorted(u for u in chose if u in hist)
    if len(users) > max_users:
        users = sorted(rng.choice(np.array(users, dtype=object), size=max_users, replace=False).tolist())
    if not users:
        return None
    states = [UserState(u, tuple(hist[u]), now=hist[u][-1].timestamp) for u in users]
    heldout = [np.array(sorted(chose[u]), dtype=np.int64) for u in users]
    return train, _Split(train, users, states, np.full(len(users), -1, dtype=np.int64), heldout)


class _Board:
    """Validation users x candidate items: each source's normalised scores, the targets."""

    def __init__(
        self, split: _Split, catalog: Catalog, k: int, pool: np.ndarray | None = None,
        priors: frozenset[str] = frozenset(),
    ) -> None:
        self.split, self.catalog, self.k = split, catalog, k
        #: Popularity sources: as served, they break ties whatever their weight.
        self.priors = priors
        self.pool = catalog.alive_idx() if pool is None else pool
        pos = np.full(len(catalog), -1, dtype=np.int64)
        pos[self.pool] = np.arange(len(self.pool))
        U, P = len(split.users), len(self.pool)
        self.seen = np.zeros((U, P), dtype=bool)
        seen_by: dict[str, set[int]] = {}
        if split.seen is None:
            for e in split.train:
                i = catalog.get_idx(e.item)
                if i is not None:
                    seen_by.setdefault(e.user, set()).add(i)
        for r, u in enumerate(split.users):
            s = np.fromiter(split.seen[r] if split.seen is not None else seen_by.get(u, ()), dtype=np.int64)
            s = pos[s]
            self.seen[r, s[s >= 0]] = True
        self.next_pos = np.where(split.next_item >= 0, pos[np.maximum(split.next_item, 0)], -1)
        self.held = np.zeros((U, P), dtype=bool)
        for r, h in enumerate(split.heldout):
            p = pos[h]
            self.held[r, p[p >= 0]] = True
        self.n_held = self.held.sum(1)
        self.discount = 1.0 / np.log2(np.arange(2, min(k, P) + 2))
        self.idcg = np.array([self.discount[: min(int(n), k)].sum() for n in self.n_held])

    def normalised(self, learner: Learner) -> np.ndarray:
        """The learner's per-user scores over the pool, min-max normalised over unseen items."""
        items = self.catalog.from_idx(self.pool)
        out = np.zeros(self.seen.shape, dtype=np.float32)
        replay = self.split.replay
        for r, st in enumerate(self.split.states):
            if replay is not None:  # learn what happened since the previous row, as served
                for e in replay[r]:
                    learner.learn_one(e)
            unseen = ~self.seen[r]
            # As served: the user's own items are dropped before the per-source min-max.
            out[r, unseen] = minmax(np.asarray(learner.score(st, items), dtype=np.float64)[unseen])
        return out

    def metrics(self, parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> tuple[float | None, float]:
        """(HR@k of each user's next item, NDCG@k of their held-out items) of the fused
        ranking; the first is None on a board without next items (new items)."""
        fused = np.zeros(self.seen.shape, dtype=np.float32)
        for name, m in parts.items():
            w = weights.get(name, 0.0)
            if name in self.priors:
                w = max(w, TIE_BREAK)
            if w:
                fused += np.float32(w) * m
        fused[self.seen] = -np.inf
        k = self.k
        k = min(k, fused.shape[1])
        top = np.argpartition(-fused, k - 1, axis=1)[:, :k]
        rows = np.arange(len(fused))[:, None]
        order = np.argsort(-fused[rows, top], axis=1, kind="stable")
        top = top[rows, order]
        gains = self.held[rows, top].astype(np.float64)
        ndcg = float(((gains * self.discount).sum(1) / np.maximum(self.idcg, 1e-12)).mean())
        if (self.next_pos < 0).all():  # new items: no "next" item, the held-out set only
            return None, ndcg
        return float((top == self.next_pos[:, None]).any(1).mean()), ndcg

    def objective(self, parts: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> float:
        """0.5 * HR@k(next item) + 0.5 * NDCG@k(held-out items); NDCG alone without next items."""
        hr, ndcg = self.metrics(parts, weights)
        return ndcg if hr is None else 0.5 * hr + 0.5 * ndcg


class Tuner:
    """Searches hyperparameters, feedback reading and fusion weights (see module docstring).

    ``make_learner(name, params, feedback)`` builds an unfitted learner the way the
    engine does; ``sources`` are the starting hyperparameters per source (overrides
    of the learner defaults) and ``weights`` the starting fusion weights. ``jobs`` runs
    each batch's fits (default: here, one after another; ``RayJobs`` on a cluster, which
    needs a picklable ``make_learner``); ``batch_size`` trials are fitted at a time.
    ``priors`` names the popularity sources, which break ties whatever their weight, as in
    serving (:data:`~liverec.rank.ranker.TIE_BREAK`).
    """

    def __init__(
        self,
        make_learner: MakeLearner,
        sources: Mapping[str, Mapping[str, Any]],
        weights: Mapping[str, float],
        feedback: FeedbackConfig,
        *,
        budget_seconds: float = 300.0,
        seed: int = 0,
        holdout: float = 0.2,
        max_users: int = 600,
        k: int = 10,
        history_length: int = 50,
        max_trials: int | None = None,
        tune_feedback: bool = True,
        users: Callable[[str], bool] | None = None,
        new_item_share: float = 0.25,
        next_share: float = 0.5,
        progress: bool = False,
        jobs: JobRunner | None = None,
        batch_size: int = 16,
        priors: Iterable[str] = (),
    ) -> None:
        self.make_learner = make_learner
        #: Sources that break ties whatever their weight, as served (:class:`~liverec.models.base.Popularity`).
        self.priors = frozenset(priors)
        self.sources = {n: dict(p) for n, p in sources.items()}
        self.weights = {n: float(weights.get(n, 1.0)) for n in sources}
        self.feedback = feedback
        self.budget_seconds = budget_seconds
        self.seed = seed
        self.holdout, self.max_users, self.k = holdout, max_users, k
        self.history_length = history_length
        self.max_trials = max_trials
        self.tune_feedback = tune_feedback
        self.users = users
        self.new_item_share = new_item_share
        if not 0.0 <= next_share <= 1.0:
            raise ValueError(f"next_share must be in [0, 1], got {next_share!r}")
        self.next_share = float(next_share)
        self.progress = progress
        self.jobs: JobRunner = jobs if jobs is not None else LocalJobs()
        self.batch_size = max(1, int(batch_size))

    # ------------------------------------------------------------------ pieces
    def _split(self, events: Sequence[Event], catalog: Catalog, feedback: FeedbackConfig) -> _Split:
        return time_split(
            events, catalog, feedback, holdout=self.holdout, max_users=self.max_users,
            history_length=self.history_length, seed=self.seed, users=self.users,
        )

    def _boards(self, events: Sequence[Event], catalog: Catalog, feedback: FeedbackConfig) -> "_Boards":
        split = self._split(events, catalog, feedback)
        if not split.users:
            raise ValueError(
                "not enough history to tune: need users with at least 5 positive events; "
                "record more events first; a plain fit (`liverec fit`, `Engine.fit()`) needs none."
            )
        priors = self.priors
        cold = None
        if self.new_item_share > 0:
            found = new_item_split(split, catalog, feedback, max_users=self.max_users,
                                   history_length=self.history_length, seed=self.seed)
            if found is not None:
                new = np.unique(np.concatenate(found[1].heldout))
                cold = _Board(found[1], catalog, self.k, pool=new, priors=priors)
        replayed = replay_split(events, catalog, feedback, max_rows=self.max_users,
                                history_length=self.history_length, seed=self.seed, users=self.users)
        nxt = _Board(replayed, catalog, self.k, priors=priors) if replayed is not None else None
        return _Boards(_Board(split, catalog, self.k, priors=priors), cold, self.new_item_share, self.make_learner, nxt,
                       next_share=self.next_share)

    def evaluate(
        self, events: Sequence[Event], catalog: Catalog, sources: Mapping[str, Mapping[str, Any]],
        weights: Mapping[str, float], feedback: FeedbackConfig,
    ) -> float:
        """The objective of one configuration on this tuner's split (for held-out checks)."""
        boards = self._boards(events, catalog, feedback)
        parts = {n: boards.fit(n, p, feedback) for n, p in sources.items() if weights.get(n, 0)}
        return boards.objective(parts, weights)

    # ------------------------------------------------------------------ search
    def run(self, events: Sequence[Event], catalog: Catalog) -> TunedConfig:
        """Search within the budget; returns the best configuration found."""
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        trials: list[dict[str, Any]] = []
        rng = np.random.default_rng(self.seed)
        fb = self.feedback
        sources = {n: dict(p) for n, p in self.sources.items()}
        weights = dict(self.weights)
        stopped = False

        out_of_time = False

        def over() -> bool:
            nonlocal stopped, out_of_time
            out_of_time = time.perf_counter() - t0 > self.budget_seconds
            if out_of_time or (self.max_trials is not None and len(trials) >= self.max_trials):
                stopped = True
            return stopped

        # The split depends on which events are positive; the starting reading decides it
        # once, so every option is scored on the same held-out items.
        boards = self._boards(events, catalog, fb)
        plan = self._plan(events, rng)
        bar = tqdm(total=len(plan) + 1, desc="tuning", unit="trial", disable=not self.progress)

        def trial(stage: str, source: str | None, params: Mapping[str, Any], fitted: "_Fitted",
                  base: Mapping[str, _Part]) -> float | None:
            """Score one fitted trial (its parts over ``base``) and record it."""
            a = time.perf_counter()
            rec: dict[str, Any] = {"stage": stage, "source": source, "params": dict(params)}
            got, seconds = fitted
            if isinstance(got, Failed):
                rec["error"] = got.error
            else:
                try:
                    rec["score"] = round(boards.objective({**base, **got}, weights), 6)
                except Exception as exc:  # noqa: BLE001 - a failed trial is reported, not fatal
                    rec["error"] = f"{type(exc).__name__}: {exc}"
            rec["seconds"] = round(seconds + time.perf_counter() - a, 3)
            trials.append(rec)
            bar.update(1)
            return rec.get("score")

        def every_source(f: FeedbackConfig) -> list[_FitJob]:
            return [(n, p, f) for n, p in sources.items()]

        [started] = self._fit_trials(boards, [every_source(fb)])
        default = trial("start", None, {}, started, {})
        if default is None:
            bar.close()
            raise RuntimeError(f"tuning could not fit the starting configuration: {trials[-1]['error']}")
        best = default
        parts: dict[str, _Part] = _parts_of(started)
        reweigh = False  # a reading or a source's parameters chosen since the last weight search

        def search_weights() -> None:
            nonlocal best, weights, reweigh
            a = time.perf_counter()
            w, s = boards.search_weights(parts, weights)
            trials.append({"stage": "weights", "source": None, "params": dict(w), "score": round(s, 6),
                           "seconds": round(time.perf_counter() - a, 3)})
            bar.update(1)
            reweigh = False
            if s > best:
                best, weights = s, w

        def size(stage: str) -> int:
            """Trials in the next batch of ``stage`` (see the module docstring)."""
            if self.jobs.side_by_side:
                return self.batch_size
            took = [t["seconds"] for t in trials if t["stage"] == stage and "seconds" in t]
            if took:
                per = float(np.mean(took))
            else:  # from the starting trial, which fitted every source once
                per = trials[0]["seconds"] / (len(sources) if stage == "source" else 1)
            left = self.budget_seconds - (time.perf_counter() - t0)
            return max(1, min(self.batch_size, int(left / max(per, 1e-6))))

        for batch in _batches(plan, size):
            if over():
                break
            stage = batch[0][0]
            if stage == "feedback":
                batch = batch[: self._room(len(trials))]
                cands = [replace(fb, rating_engagement=p["rating_engagement"], rating_valence=p["rating_valence"])
                         for _, _, p in batch]
                for (_, _, params), cand, fitted in zip(
                    batch, cands, self._fit_trials(boards, [every_source(c) for c in cands])
                ):
                    s = trial(stage, None, params, fitted, {})
                    if s is not None and s > best:
                        best, fb, reweigh = s, cand, True
                        parts.update(_parts_of(fitted))
            elif stage == "source":
                # A source switched off by the weight search: its params change nothing.
                batch = [t for t in batch if weights.get(t[1] or "")][: self._room(len(trials))]
                # A grid point sets every parameter of its source's space, so the merged
                # parameters do not depend on which earlier point of the batch was chosen.
                merged = [{**sources[src or ""], **params} for _, src, params in batch]
                jobs = [[(src or "", m, fb)] for (_, src, _), m in zip(batch, merged)]
                for (_, src, params), m, fitted in zip(batch, merged, self._fit_trials(boards, jobs)):
                    s = trial(stage, src, params, fitted, parts)
                    if s is not None and s > best:
                        best, reweigh = s, True
                        sources[src or ""] = m
                        parts.update(_parts_of(fitted))
            elif stage == "weights":
                search_weights()
        if reweigh and out_of_time:  # the closing weight search refits nothing: it runs past the budget
            search_weights()
        new_item_weights: dict[str, float] = {}
        if boards.cold is not None and (self.max_trials is None or len(trials) < self.max_trials):
            # Ranking only new items is its own job (a shelf of new arrivals): its weights are
            # searched on the new-item board alone, from the chosen ones (no refit: seconds).
            a = time.perf_counter()
            new_item_weights, s_new = boards.search_weights(parts, weights, new_items=True)
            trials.append({"stage": "new-item weights", "source": None, "params": dict(new_item_weights),
                           "score": round(s_new, 6), "seconds": round(time.perf_counter() - a, 3)})
        bar.close()
        return TunedConfig(
            sources=sources, weights={n: round(float(v), 6) for n, v in weights.items()},
            feedback={"rating_engagement": fb.rating_engagement, "rating_valence": fb.rating_valence},
            score=round(best, 6), default_score=round(default, 6), objective=boards.describe(),
            n_validation_users=len(boards.warm.split.users), n_train_events=len(boards.warm.split.train),
            seconds=round(time.perf_counter() - t0, 2), seed=self.seed, stopped_by_budget=stopped, trials=trials,
            new_item_weights={n: round(float(v), 6) for n, v in new_item_weights.items()},
        )

    def _room(self, done: int) -> int | None:
        """How many more trials ``max_trials`` allows after ``done`` (None: no limit)."""
        return None if self.max_trials is None else max(0, self.max_trials - done)

    def _fit_trials(self, boards: "_Boards", trials: Sequence[Sequence["_FitJob"]]) -> list["_Fitted"]:
        """Every trial's fits as one batch of jobs; per trial its parts (or its first failure) and fit seconds."""
        results = iter(self.jobs.map(_fit_job, boards, [job for jobs in trials for job in jobs]))
        out: list[_Fitted] = []
        for jobs in trials:
            got = [next(results) for _ in jobs]
            failed = next((r for r in got if isinstance(r, Failed)), None)
            seconds = sum(r[1] for r in got if not isinstance(r, Failed))
            out.append((failed or {job[0]: r[0] for job, r in zip(jobs, got)}, seconds))
        return out

    def _plan(self, events: Sequence[Event], rng: np.random.Generator) -> list[tuple[str, str | None, dict[str, Any]]]:
        """Trials in order: weights, feedback, each source's space (seeded order), weights again."""
        plan: list[tuple[str, str | None, dict[str, Any]]] = [("weights", None, {})]
        if self.tune_feedback and any(e.kind == "rating" for e in events):
            cur = (self.feedback.rating_engagement, self.feedback.rating_valence)
            plan += [("feedback", None, {"rating_engagement": a, "rating_valence": b})
                     for a, b in FEEDBACK_OPTIONS if (a, b) != cur]
        per_source: list[list[tuple[str, str | None, dict[str, Any]]]] = []
        for name in self.sources:
            space = self.make_learner(name, {}, self.feedback).search_space
            grid = _grid(space)
            order = rng.permutation(len(grid)) if grid else np.zeros(0, dtype=np.int64)
            per_source.append([("source", name, grid[int(i)]) for i in order])
        # Interleave sources so a short budget still visits each of them.
        longest = max((len(p) for p in per_source), default=0)
        for r in range(longest):
            plan += [p[r] for p in per_source if r < len(p)]
        plan.append(("weights", None, {}))
        return plan


#: A source's normalised scores on each board: (held-out, new-item or None, next-item or None).
_Part = tuple[np.ndarray, np.ndarray | None, np.ndarray | None]
_FitJob = tuple[str, Mapping[str, Any], FeedbackConfig]  # (source, its parameters, feedback reading)
_Fitted = tuple["dict[str, _Part] | Failed", float]  # a trial's parts (or its failure), its fit seconds


def _fit_job(boards: "_Boards", job: _FitJob) -> tuple[_Part, float]:
    """One source fitted on the boards (a job run by a JobRunner): its part and the seconds it took."""
    a = time.perf_counter()
    part = boards.fit(*job)
    return part, time.perf_counter() - a


def _parts_of(fitted: _Fitted) -> dict[str, _Part]:
    """The parts of a trial that was scored (so none of its fits failed)."""
    got = fitted[0]
    assert not isinstance(got, Failed), got
    return dict(got)


def _batches(
    plan: Sequence[tuple[str, str | None, dict[str, Any]]], size: Callable[[str], int]
) -> Iterator[list[tuple[str, str | None, dict[str, Any]]]]:
    """Consecutive trials of one stage, ``size(stage)`` at a time (asked before each batch);
    each weight search alone."""
    for stage, group in itertools.groupby(plan, key=lambda t: t[0]):
        trials = list(group)
        i = 0
        while i < len(trials):
            step = 1 if stage == "weights" else max(1, size(stage))
            yield trials[i : i + step]
            i += step


class _Boards:
    """The warm board and, when the log allows one, the new-item board; one objective."""

    def __init__(
        self, warm: _Board, cold: _Board | None, share: float, make_learner: MakeLearner, nxt: _Board | None = None,
        *, next_share: float = 0.5,
    ) -> None:
        self.warm, self.cold, self.share, self.make_learner, self.nxt = warm, cold, share, make_learner, nxt
        self.next_share = next_share
        # Built once, here: the boards travel whole to whoever runs the fits (see ``_fit_job``).
        self._logs = {role: InteractionLog.from_events(b.split.train, b.catalog)
                      for role, b in (("warm", warm), ("cold", cold), ("next", nxt)) if b is not None}

    def _log(self, board: _Board) -> InteractionLog:
        return self._logs["warm" if board is self.warm else "cold" if board is self.cold else "next"]

    def fit(self, name: str, params: Mapping[str, Any], fb: FeedbackConfig) -> _Part:
        """Fit source ``name`` on each board's training log; its normalised validation scores."""
        warm = self.warm.normalised(self.make_learner(name, params, fb).fit(self._log(self.warm)))
        cold = nxt = None
        learner = self.make_learner(name, params, fb)
        if self.cold is not None and learner.scores_new_items:
            cold = self.cold.normalised(learner.fit(self._log(self.cold)))
        if self.nxt is not None:
            nxt = self.nxt.normalised(self.make_learner(name, params, fb).fit(self._log(self.nxt)))
        return warm, cold, nxt

    def objective(self, parts: Mapping[str, _Part], weights: Mapping[str, float]) -> float:
        hr, ndcg = self.warm.metrics({n: p[0] for n, p in parts.items()}, weights)
        if self.nxt is not None:  # the next item, replayed as served
            hr = self.nxt.metrics({n: p[2] for n, p in parts.items() if p[2] is not None}, weights)[0]
        s = self.next_share * (hr or 0.0) + (1.0 - self.next_share) * ndcg
        if self.cold is not None:
            s += self.share * self._new_item_objective(parts, weights)
        return s

    def describe(self) -> str:
        k = self.warm.k
        where = "replayed as served after a time cut" if self.nxt is not None else "after the held-out cut"
        text = f"{self.next_share:g}*HR@{k}(next item {where}) + {1.0 - self.next_share:g}*NDCG@{k}(held-out items)"
        if self.cold is not None:
            text += f" + {self.share}*NDCG@{k}(new items among themselves)"
        return text

    def _new_item_objective(self, parts: Mapping[str, _Part], weights: Mapping[str, float]) -> float:
        """NDCG@k of ranking new items among themselves (the new-item board alone); 0 when
        no source ranks new items."""
        assert self.cold is not None
        cold = {n: p[1] for n, p in parts.items() if p[1] is not None}
        return self.cold.objective(cold, weights) if cold else 0.0

    def search_weights(
        self, parts: Mapping[str, _Part], weights: Mapping[str, float], rounds: int = 3, *, new_items: bool = False,
    ) -> tuple[dict[str, float], float]:
        """Coordinate ascent over multiplicative steps of each weight (0 switches a source off).

        ``new_items``: on the new-item board alone, over the sources that rank new items
        (the others keep their weight: they cannot tell new items apart).
        """
        w = dict(weights)
        role = 1 if new_items else 0
        objective = self._new_item_objective if new_items else self.objective
        cur = objective(parts, w)
        scores = {n: m for n, p in parts.items() if (m := p[role]) is not None}
        names = sorted(scores)
        # A switched-off source comes back at a share of the largest weight among the sources
        # that score anything here (one with no evidence in the log, e.g. declared interests, does not count).
        top = max((v for n, v in w.items() if n in scores and scores[n].any()), default=1.0) or 1.0
        for _ in range(rounds):
            moved = False
            for name in names:
                base = w.get(name, 0.0)
                options = [base * m for m in WEIGHT_STEPS] if base > 0 else [0.05 * top, 0.25 * top, top]
                for v in options:
                    trial_w = {**w, name: v}
                    if sum(trial_w.values()) <= 0:
                        continue
                    s = objective(parts, trial_w)
                    if s > cur + 1e-9:
                        cur, w, moved = s, trial_w, True
            if not moved:
                break
        return w, cur


def _grid(space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a ``{param: values}`` space, in a fixed order."""
    keys = sorted(space)
    return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))] if keys else []
