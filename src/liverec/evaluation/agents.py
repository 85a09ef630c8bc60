"""Agents for the user simulator: liverec in three learning modes, a Vowpal Wabbit peer.

Every agent follows :class:`liverec.evaluation.simulator.Agent`:
``recommend(user, k) -> list[str]``, ``feedback(user, item, kind, t)``, ``name``, and
optionally ``warm_start(events)`` (the shared warm-up log) and ``close()``.

- :class:`EngineAgent` — a real in-memory :class:`~liverec.engine.Engine` over the
  simulated catalog. ``"static"``: fitted once on the warm-up log, never learns
  again (events are stored with ``learn=False``, no re-fit; items the user clicked or
  skipped still count as seen). ``"retrain-N"``: stores with ``learn=False`` and calls
  ``engine.fit()`` every N events — the nightly-batch habit, compressed.
  ``"realtime"``: liverec's default, every event updates the learners at once
  (learners without a per-event update, e.g. EASE, keep their warm-up fit).
  ``"realtime+retrain-N"``: both.
- :class:`VWAgent` — contextual bandit ``--cb_explore_adf`` from Vowpal Wabbit,
  given the same information liverec has (see its docstring).
- :class:`PopularityAgent` — most clicked so far; :class:`RandomAgent` lives in
  ``simulator``.

Examples
--------
>>> agent = EngineAgent.build(vectors, ids, "realtime")     # doctest: +SKIP
>>> res = Simulator(vectors, ids, seed=0).run(agent, 20_000, warmup=2_000)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ValidationError
from ..types import Event, Item
from .simulator import Agent, RandomAgent

__all__ = ["EngineAgent", "PopularityAgent", "RandomAgent", "VWAgent", "make_agent", "AGENT_NAMES"]

#: Names ``make_agent`` understands (``retrain-N`` for any N >= 1). An engine mode may
#: name the policy that picks its slates: ``realtime@lints`` (default: greedy).
AGENT_NAMES = ("static", "retrain-N", "realtime", "realtime+retrain-N", "MODE@POLICY", "vw", "random", "pop")


class _LookupEncoder:
    """Serves precomputed vectors by text: the engine never loads a model in the simulator."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self.table = dict(zip(texts, np.asarray(vectors, dtype=np.float32)))
        self.dim = int(vectors.shape[1])
        digest = hashlib.sha256(np.ascontiguousarray(vectors[: min(len(vectors), 64)]).tobytes()).hexdigest()[:12]
        self.model_id = f"sim:lookup-{len(texts)}-{digest}"

    def encode(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.table[t] for t in texts])


def _parse_mode(mode: str) -> tuple[bool, int | None]:
    """(learn per event, re-fit every N events or None)."""
    if mode == "realtime":
        return True, None
    if mode == "static":
        return False, None
    learn, rest = (True, mode[len("realtime+"):]) if mode.startswith("realtime+") else (False, mode)
    if rest.startswith("retrain-"):
        try:
            n = int(rest.split("-", 1)[1])
        except ValueError:
            n = 0
        if n >= 1:
            return learn, n
    raise ValidationError(
        f"unknown EngineAgent mode {mode!r}; use 'static', 'realtime', 'retrain-N' or 'realtime+retrain-N' "
        "(N >= 1, e.g. 'retrain-1000').",
        field="mode",
    )


class EngineAgent:
    """liverec's :class:`~liverec.engine.Engine` as a simulator agent.

    Parameters
    ----------
    engine : an open engine whose catalog holds the simulated items.
    mode : ``"static"``, ``"realtime"``, ``"retrain-N"`` or ``"realtime+retrain-N"``
        (see the module docstring).
    name : label in reports (default: ``mode``).

    Examples
    --------
    >>> agent = EngineAgent.build(vectors, ids, "retrain-1000")   # doctest: +SKIP
    >>> agent.recommend("u1", 5)                                  # doctest: +SKIP
    """

    def __init__(self, engine: Any, mode: str = "realtime", *, name: str | None = None) -> None:
        self.learn, self.retrain_every = _parse_mode(mode)
        self.engine = engine
        self.mode = mode
        self.name = name or mode
        self.n_events = 0
        self.n_fits = 0
        self._since_fit = 0

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        item_ids: Sequence[str],
        mode: str = "realtime",
        *,
        settings: Any | None = None,
        name: str | None = None,
    ) -> "EngineAgent":
        """An in-memory engine (``sqlite://``, no impression log) over ``item_ids`` with ``vectors``.

        Items get a placeholder text and the engine a lookup encoder, so it sees
        exactly the simulator's vectors and never loads a model.
        """
        from ..engine import Engine
        from ..settings import Settings

        base = settings or Settings()
        base = base.model_copy(update={
            "store": "sqlite://", "log_impressions": False, "encoder_progress": False,
            "text_template": "{text}", "vector_cache": "off",  # lookup vectors: not for the machine cache
        })
        texts = [f"sim item {i}" for i in item_ids]
        eng = Engine.open("sqlite://", settings=base, encoder=_LookupEncoder(texts, vectors))
        eng.add_items([Item(id=i, text=t) for i, t in zip(item_ids, texts)])
        return cls(eng, mode, name=name)

    def warm_start(self, events: Sequence[Event]) -> None:
        """Store the shared warm-up log and fit on it (every mode starts from here)."""
        if events:
            self.engine.record_many(events, learn=False)
        self.engine.fit()
        self.n_fits += 1

    def recommend(self, user: str, k: int) -> list[str]:
        return [r.item for r in self.engine.recommend(user, k, explain=False, log=False)]

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        self.n_events += 1
        e = Event(user=user, item=item, kind=kind, timestamp=t, id=f"sim-{self.n_events}")
        self.engine.record_many([e], learn=self.learn)
        if self.retrain_every is not None:
            self._since_fit += 1
            if self._since_fit >= self.retrain_every:
                self.engine.fit()
                self.n_fits += 1
                self._since_fit = 0

    def close(self) -> None:
        self.engine.close()


class PopularityAgent:
    """The k most clicked items so far that the user has not clicked (ties: a fixed random order)."""

    name = "pop"

    def __init__(self, item_ids: Sequence[str], *, seed: int = 0) -> None:
        self.item_ids = list(item_ids)
        self.index = {i: j for j, i in enumerate(self.item_ids)}
        self.counts = np.random.default_rng(seed).random(len(self.item_ids)) * 1e-6
        self.seen: dict[str, set[int]] = {}

    def warm_start(self, events: Sequence[Event]) -> None:
        for e in events:
            self.feedback(e.user, e.item, e.kind, e.timestamp)

    def recommend(self, user: str, k: int) -> list[str]:
        scores = self.counts
        seen = self.seen.get(user)
        if seen:
            scores = scores.copy()
            scores[list(seen)] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k]
        return [self.item_ids[i] for i in top[np.argsort(-scores[top])]]

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        j = self.index[item]
        self.seen.setdefault(user, set()).add(j)
        if kind == "click":
            self.counts[j] += 1.0


class VWAgent:
    """A Vowpal Wabbit contextual bandit (``--cb_explore_adf``) with liverec's information.

    Choices (documented because they decide how strong the peer is):

    - **Vectors.** ``center=True`` (default) gives VW the mean-centred, re-normalised LM
      vectors, the representation liverec's content source scores with (see
      :class:`~liverec.models.content.ContentProfile`), so both see the same information.
    - **Features.** Shared (context): the mean LM vector of the user's last
      ``history`` clicked items, reduced to ``dims`` dimensions by a fixed seeded
      Gaussian projection (namespace ``U``). Each action: the item's reduced LM
      vector (``A``), plus (``S``) the full-dimension cosine between the user
      vector and the item and log(1 + the item's clicks so far) — the content and
      popularity signals liverec's default sources use. ``-q UA`` lets VW learn a
      bilinear taste map on top.
    - **Candidates.** VW scores a pool, not the catalog: the ``pool`` unseen items
      nearest the user vector (most clicked for a user without clicks) plus
      ``n_random`` random unseen items, so exploration can reach beyond the
      neighbourhood. One ``predict`` per request.
    - **Slate.** Positions are filled by sampling VW's pmf over the pool without
      replacement (renormalising after each pick); the propensity logged for a
      position is its renormalised probability.
    - **Learning.** Cost = -1 for a click at the served position, 0 otherwise. The
      outcome of a slate is known when the next request arrives (the simulator
      delivers all feedback before that), so the previous slate is learned then:
      one ``learn`` per position on (shared, chosen action) with its propensity.
      VW's default ``cb_type`` for ADF (``mtr``) trains only the chosen action's
      regressor, so the one-action example is the same update and far cheaper.
    - **Exploration.** ``explore="--squarecb"`` (SquareCB: explores in proportion
      to the predicted cost gap, the strongest general-purpose choice VW 9 offers
      for ``cb_explore_adf``); ``"--epsilon 0.1"``, ``"--softmax --lambda 10"``,
      ``"--bag 5"`` also work. In a development check (one seed, 3,000 books, an
      earlier calibration of the click model) SquareCB got CTR 0.076 before and
      0.070 after a taste shift, epsilon-greedy 0.1 got 0.072 and 0.064.

    Needs ``vowpalwabbit`` (``pip install vowpalwabbit``).
    """

    name = "vw"

    def __init__(
        self,
        vectors: np.ndarray,
        item_ids: Sequence[str],
        *,
        seed: int = 0,
        dims: int = 32,
        pool: int = 100,
        n_random: int = 20,
        history: int = 20,
        explore: str = "--squarecb",
        extra_args: str = "",
        center: bool = True,
        name: str | None = None,
    ) -> None:
        try:
            from vowpalwabbit import Workspace
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ValidationError(
                "VWAgent needs the vowpalwabbit package: pip install vowpalwabbit", field="agents"
            ) from exc
        vecs = np.asarray(vectors, dtype=np.float64)
        if center:
            vecs = vecs - vecs.mean(axis=0)
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        self.vectors = np.ascontiguousarray(vecs, dtype=np.float32)
        self.item_ids = list(item_ids)
        self.index = {i: j for j, i in enumerate(self.item_ids)}
        self.pool, self.n_random, self.history = pool, n_random, history
        self.name = name or self.name
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
        d = self.vectors.shape[1]
        self.proj = (rng.normal(size=(d, dims)) / np.sqrt(dims)).astype(np.float32)
        # Scaled so each reduced coordinate is O(1): VW's default learning rate suits that.
        scale = np.sqrt(dims)
        reduced = (self.vectors @ self.proj) * scale
        self._action_feats = [" |A " + " ".join(f"{j}:{x:.4f}" for j, x in enumerate(row)) for row in reduced]
        self._scale = scale
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 104729]))
        self.args = f"--cb_explore_adf {explore} -q UA --quiet --random_seed {seed} {extra_args}".strip()
        self.vw = Workspace(self.args)
        try:
            import pylibvw

            ok = all(hasattr(pylibvw.vw, f) for f in ("predict_multi", "_finish_example_multi_ex")) and hasattr(
                self.vw, "_parse"
            )
            self._raw: Any = pylibvw if ok else None
        except ImportError:  # pragma: no cover
            self._raw = None
        self.clicks = np.zeros(len(self.item_ids), dtype=np.float64)
        self.recent: dict[str, deque[int]] = {}
        self.seen: dict[str, set[int]] = {}
        self._pending: tuple[str, str, list[int], list[str], list[float], set[int]] | None = None

    # ------------------------------------------------------------------ state
    def _user_vector(self, user: str) -> np.ndarray | None:
        rec = self.recent.get(user)
        if not rec:
            return None
        v = self.vectors[list(rec)].mean(axis=0)
        n = float(np.linalg.norm(v))
        return v / n if n > 1e-12 else None

    def _candidates(self, user: str, uvec: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.item_ids)
        score = self.vectors @ uvec if uvec is not None else self.clicks + self._tiebreak()
        seen = self.seen.get(user)
        if seen:
            score = score.copy()
            score[list(seen)] = -np.inf
        m = min(self.pool, n - 1)
        top = np.argpartition(-score, m - 1)[:m] if m < n else np.arange(n)
        extra = self.rng.integers(n, size=self.n_random)
        cand = np.unique(np.concatenate([top, extra]))
        cand = cand[np.isfinite(score[cand])]
        cos = self.vectors[cand] @ uvec if uvec is not None else np.zeros(len(cand), dtype=np.float32)
        return cand, cos

    def _tiebreak(self) -> np.ndarray:
        tb = getattr(self, "_tb", None)
        if tb is None:
            tb = self._tb = np.random.default_rng(1).random(len(self.item_ids)) * 1e-6
        return tb

    def _shared(self, uvec: np.ndarray | None) -> str:
        if uvec is None:
            return "shared |U cold:1"
        red = (uvec @ self.proj) * self._scale
        return "shared |U " + " ".join(f"{j}:{x:.4f}" for j, x in enumerate(red))

    def _action(self, i: int, cos: float) -> str:
        return f"{self._action_feats[i]} |S cos:{cos:.4f} pop:{np.log1p(self.clicks[i]):.4f}"

    def _predict(self, text: str) -> np.ndarray:
        """VW's pmf over the actions of a multi-line example, in action order.

        pyvw wraps every parsed line in a Python ``Example`` (about half the cost of
        a 120-action request); when the pinned pylibvw entry points are there we
        call them directly, else the public ``Workspace.predict``.
        """
        if self._raw is not None:
            pylibvw = self._raw
            ecs = self.vw._parse(text)
            try:
                pylibvw.vw.predict_multi(self.vw, ecs)
                pmf = ecs[0].get_action_scores()
            finally:
                pylibvw.vw._finish_example_multi_ex(self.vw, ecs)
        else:  # pragma: no cover - other vowpalwabbit builds
            pmf = self.vw.predict(text)
        return np.asarray(pmf, dtype=np.float64)

    # --------------------------------------------------------------- protocol
    def _flush(self) -> None:
        """Learn the previous slate: one (shared, chosen action) example per position."""
        if self._pending is None:
            return
        _user, shared, served, lines, probs, clicked = self._pending
        self._pending = None
        for i, line, p in zip(served, lines, probs):
            cost = -1.0 if i in clicked else 0.0
            self.vw.learn([shared, f"0:{cost}:{max(p, 1e-6):.6f}{line}"])

    def recommend(self, user: str, k: int) -> list[str]:
        self._flush()
        uvec = self._user_vector(user)
        cand, cos = self._candidates(user, uvec)
        shared = self._shared(uvec)
        pop = np.log1p(self.clicks[cand])
        feats = self._action_feats
        lines = [f"{feats[i]} |S cos:{c:.4f} pop:{q:.4f}" for i, c, q in zip(cand.tolist(), cos.tolist(), pop.tolist())]
        pmf = self._predict(shared + "\n" + "\n".join(lines))
        pmf = np.clip(pmf, 0.0, None)
        k = min(k, len(cand))
        chosen: list[int] = []
        probs: list[float] = []
        avail = pmf.copy()
        for _ in range(k):
            tot = avail.sum()
            if tot <= 0:  # leftover mass is zero: fall back to uniform over the rest
                avail = np.where(np.isin(np.arange(len(cand)), chosen), 0.0, 1.0)
                tot = avail.sum()
            j = int(self.rng.choice(len(cand), p=avail / tot))
            chosen.append(j)
            probs.append(float(avail[j] / tot))
            avail[j] = 0.0
        served = [int(cand[j]) for j in chosen]
        self._pending = (user, shared, served, [lines[j] for j in chosen], probs, set())
        return [self.item_ids[i] for i in served]

    def feedback(self, user: str, item: str, kind: str, t: float) -> None:
        i = self.index[item]
        self.seen.setdefault(user, set()).add(i)
        if kind != "click":
            return
        self.clicks[i] += 1.0
        self.recent.setdefault(user, deque(maxlen=self.history)).append(i)
        if self._pending is not None and self._pending[0] == user:
            self._pending[5].add(i)

    def warm_start(self, events: Sequence[Event]) -> None:
        """Take the warm-up log as state (clicks, recent items) and as a first lesson.

        The warm-up slates were uniformly random, so every click is replayed as a
        cost -1 example and, since its slate-mates were random items, ``k - 1 = 4``
        random items as cost 0 examples; all with propensity 1 (a supervised start:
        the uniform propensity ``k / n`` would weigh each example thousands of times).
        """
        n = len(self.item_ids)
        for e in events:
            if e.kind == "click":
                uvec = self._user_vector(e.user)
                shared = self._shared(uvec)
                for i, cost in [(self.index[e.item], -1.0), *((int(j), 0.0) for j in self.rng.integers(n, size=4))]:
                    cos = float(self.vectors[i] @ uvec) if uvec is not None else 0.0
                    self.vw.learn([shared, f"0:{cost}:1.0{self._action(i, cos)}"])
            self.feedback(e.user, e.item, e.kind, e.timestamp)

    def close(self) -> None:
        self._flush()
        self.vw.finish()


def make_agent(
    name: str,
    vectors: np.ndarray,
    item_ids: Sequence[str],
    *,
    seed: int = 0,
    settings: Any | None = None,
    vw_explore: str = "--squarecb",
) -> Agent:
    """An agent by name: ``static``, ``realtime``, ``retrain-N``, ``realtime+retrain-N``, ``vw``,
    ``random``, ``pop``."""
    if name == "vw":
        return VWAgent(vectors, item_ids, seed=seed, explore=vw_explore)
    if name == "random":
        return RandomAgent(item_ids, seed=seed)
    if name == "pop":
        return PopularityAgent(item_ids, seed=seed)
    mode, _, policy = name.partition("@")
    _parse_mode(mode)  # raises a helpful error for unknown names
    if policy:
        from ..settings import Settings

        base = settings or Settings()
        if policy != "greedy" and policy not in base.policies:
            raise ValidationError(
                f"unknown policy {policy!r} in agent {name!r}; use one of {sorted(['greedy', *base.policies])}.",
                field="agents",
            )
        settings = base.model_copy(update={"default_policy": policy})
    return EngineAgent.build(vectors, item_ids, mode, settings=settings, name=name)


def agent_factories(
    names: Sequence[str], vectors: np.ndarray, item_ids: Sequence[str], **kwargs: Any
) -> dict[str, Callable[[int], Agent]]:
    """``{name: seed -> fresh agent}`` for :func:`~liverec.evaluation.simulator.compare_agents`."""
    for n in names:
        if n not in ("vw", "random", "pop"):
            _parse_mode(n.partition("@")[0])

    def factory(name: str) -> Callable[[int], Agent]:
        return lambda seed: make_agent(name, vectors, item_ids, seed=seed, **kwargs)

    return {n: factory(n) for n in names}
