"""Reference baselines that exist only for evaluation: session-transition kNN and text profiles.

They follow the learner protocol (``fit`` / ``learn_one`` / ``score``) so the harness
runs them like any registered learner, but they are not part of the engine's registry:
they are yardsticks, defined exactly as the external MovieLens check defines them so
the figures of ``liverec eval`` and of that check can be compared.

- :class:`SessionKNN` (``sknn``): what tends to follow the user's last few items.
- :class:`TextProfile` (``tfidf``, ``bow``): the user as the mean tf-idf vector or the
  summed word counts of their items; score = dot product with each item's vector.

:data:`EVAL_BASELINES` also maps ``itemknn`` and ``ease`` to the engine's ItemKNN and
EASE with scoring made cheaper for a stream replay (:mod:`.itemknn`, :mod:`.ease`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import ItemIds
from ..models.base import FeedbackConfig, InteractionLog, Learner, UserState
from ..models.pop import grow
from ..types import Event
from .ease import StreamEASE
from .itemknn import StreamItemKNN


class SessionKNN(Learner):
    """Session-transition kNN: items that followed the user's last items in other users' sequences.

    Every user's events, in time order, form a sequence. When item ``b`` follows item
    ``a`` at distance ``d <= window`` in one user's sequence, ``T[a, b] += 1/d``. A user
    is scored by the rows of their last ``history`` items, the r-th most recent one
    weighted ``decay**r``, each row divided by ``(row sum + 1)`` (a row resting on few
    transitions counts less); ``1e-9 * popularity`` breaks ties. A user with no events
    gets popularity (events per item). Every event, at fit time or revealed later
    through ``learn_one``, extends its user's sequence and adds its transitions, so
    scores always reflect everything seen (the "history" mode of a stream replay).

    ``T`` is a dict of sparse rows (item -> {next item: weight}); an event touches at
    most ``window`` rows, a score call reads ``history`` rows: memory grows with the
    number of distinct transitions, not with the square of the catalog.

    In a static split it scores "what follows the last ``history`` training items".

    Parameters
    ----------
    window : int
        How far ahead (in events of the same user) a following item counts.
    history : int
        How many of the user's most recent items score the catalog.
    decay : float
        Weight ratio between one history position and the next older one.
    all_events : bool
        Count every event (e.g. every rating, whatever its stars); otherwise only
        events with a positive feedback weight.
    feedback : FeedbackConfig, optional
        Kind weights used when ``all_events`` is False.
    seed : int
        Unused (deterministic); kept for the protocol.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3, [""] * 3)
    >>> evs = [Event(user=u, item=i, timestamp=float(t)) for u in "xy" for t, i in enumerate("abc")]
    >>> m = SessionKNN(window=1, history=1).fit(InteractionLog.from_events(evs, cat))
    >>> m.learn_one(Event(user="z", item="a", timestamp=9.0))
    >>> s = m.score(UserState("z"), cat.select(["a", "b", "c"]))
    >>> int(np.argmax(s))  # b always followed a
    1
    """

    name: ClassVar[str] = "sknn"

    def __init__(
        self,
        *,
        window: int = 3,
        history: int = 3,
        decay: float = 0.7,
        all_events: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.window = window
        self.history = history
        self.decay = decay
        self.all_events = all_events
        self.feedback = feedback
        self.seed = seed

    def fit(self, log: InteractionLog) -> Self:
        self.catalog_ = log.catalog
        self.fitted_ = True
        self.seqs_: dict[str, list[int]] = {}
        self.rows_: dict[int, dict[int, float]] = {}
        self.row_sum_ = np.zeros(max(len(log.catalog), 1), dtype=np.float64)
        self.counts_ = np.zeros(max(len(log.catalog), 1), dtype=np.float64)
        self.cache_: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for t in np.argsort(log.timestamps, kind="stable").tolist():
            i = int(log.item_idx[t])
            if i >= 0 and self._counts(str(log.kinds[t]), float(log.values[t])):
                self._add(str(log.users[t]), i)
        return self

    def _counts(self, kind: str, value: float) -> bool:
        return self.all_events or self._fb.weight(kind, value) > 0

    def _add(self, user: str, i: int) -> None:
        seq = self.seqs_.setdefault(user, [])
        n = max(i + 1, len(self.catalog_))
        self.row_sum_ = grow(self.row_sum_, n)
        self.counts_ = grow(self.counts_, n)
        for d, a in enumerate(reversed(seq[-self.window :]), start=1):
            row = self.rows_.setdefault(a, {})
            row[i] = row.get(i, 0.0) + 1.0 / d
            self.row_sum_[a] += 1.0 / d
            self.cache_.pop(a, None)
        seq.append(i)
        keep = max(self.window, self.history)
        if len(seq) > 2 * keep:  # only the tail is ever read
            del seq[:-keep]
        self.counts_[i] += 1.0

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is not None and self._counts(event.kind, event.value):
            self._add(event.user, i)

    def forget(self, user: str, events: Any) -> None:
        self.seqs_.pop(user, None)

    def _row(self, a: int) -> tuple[np.ndarray, np.ndarray]:
        arr = self.cache_.get(a)
        if arr is None:
            row = self.rows_.get(a, {})
            arr = (np.fromiter(row, dtype=np.int64, count=len(row)),
                   np.fromiter(row.values(), dtype=np.float64, count=len(row)))
            self.cache_[a] = arr
        return arr

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        n = max(len(self.catalog_), 1)
        self.counts_ = grow(self.counts_, n)
        self.row_sum_ = grow(self.row_sum_, n)
        seq = self.seqs_.get(user.user)
        if not seq:
            return self.counts_[items.idx].copy()
        s = np.zeros(len(self.counts_), dtype=np.float64)
        for r, a in enumerate(reversed(seq[-self.history :])):
            idx, w = self._row(a)
            s[idx] += (self.decay**r) * w / (self.row_sum_[a] + 1.0)
        s += 1e-9 * self.counts_
        return s[items.idx]


class TextProfile(Learner):
    """Text baseline: user profile from their items' word vectors, score = dot product.

    ``vectorizer="tfidf"`` fits scikit-learn's ``TfidfVectorizer(min_df=1,
    sublinear_tf=True)`` on the catalog texts and profiles a user by the mean of their
    history items' rows (``profile="mean"``); ``vectorizer="count"`` uses
    ``CountVectorizer(min_df=1)`` (raw word counts) and the sum of the rows
    (``profile="sum"``): the bag-of-words baseline. Every event of the user counts
    once. The score of an item is its row's dot product with the profile; a user
    with no history scores 0 everywhere. Items added after ``fit`` are transformed
    with the fitted vocabulary the first time they are scored.

    Parameters
    ----------
    vectorizer : {"tfidf", "count"}
        Word weighting of the item vectors.
    profile : {"mean", "sum"}
        How the history's vectors combine into the user's profile.
    all_events : bool
        Count every event; otherwise only events with a positive feedback weight.
    feedback : FeedbackConfig, optional
        Kind weights used when ``all_events`` is False.
    seed : int
        Unused (deterministic); kept for the protocol.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3,
    ...                ["space opera starships", "starships in space", "a cookbook of soups"])
    >>> m = TextProfile(vectorizer="count", profile="sum").fit(InteractionLog.from_events([], cat))
    >>> m.learn_one(Event(user="u", item="a", timestamp=0.0))
    >>> m.score(UserState("u"), cat.select(["b", "c"])).tolist()  # "space", "starships"
    [2.0, 0.0]
    """

    name: ClassVar[str] = "text"

    def __init__(
        self,
        *,
        vectorizer: str = "tfidf",
        profile: str = "mean",
        all_events: bool = True,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.vectorizer = vectorizer
        self.profile = profile
        self.all_events = all_events
        self.feedback = feedback
        self.seed = seed

    def _make_vectorizer(self) -> Any:
        from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer  # heavy: only when fitting

        if self.vectorizer == "tfidf":
            return TfidfVectorizer(min_df=1, sublinear_tf=True)
        if self.vectorizer == "count":
            return CountVectorizer(min_df=1)
        raise ValueError(f"vectorizer must be 'tfidf' or 'count', got {self.vectorizer!r}.")

    def fit(self, log: InteractionLog) -> Self:
        if self.profile not in ("mean", "sum"):
            raise ValueError(f"profile must be 'mean' or 'sum', got {self.profile!r}.")
        self.catalog_ = log.catalog
        self.fitted_ = True
        self.vec_: Any = self._make_vectorizer()
        texts = list(log.catalog.texts)
        try:
            self.rows_ = sp.csr_matrix(self.vec_.fit_transform(texts), dtype=np.float64)
        except ValueError:  # empty vocabulary: no text at all
            self.vec_ = None
            self.rows_ = sp.csr_matrix((len(texts), 0), dtype=np.float64)
        self.sums_: dict[str, sp.csr_matrix] = {}  # sparse 1 x vocabulary rows
        self.n_: dict[str, int] = {}
        keep = [
            t for t in range(len(log))
            if log.item_idx[t] >= 0 and self._counts(str(log.kinds[t]), float(log.values[t]))
        ]
        users = sorted({str(log.users[t]) for t in keep})
        if keep:
            row_of = {u: j for j, u in enumerate(users)}
            r = np.fromiter((row_of[str(log.users[t])] for t in keep), dtype=np.int64, count=len(keep))
            c = log.item_idx[keep].astype(np.int64)
            counts = sp.csr_matrix((np.ones(len(keep)), (r, c)), shape=(len(users), self.rows_.shape[0]))
            sums = sp.csr_matrix(counts @ self.rows_)
            n = np.bincount(r, minlength=len(users))
            for j, u in enumerate(users):
                self.sums_[u] = sums[j]
                self.n_[u] = int(n[j])
        return self

    def _counts(self, kind: str, value: float) -> bool:
        return self.all_events or self._fb.weight(kind, value) > 0

    def _ensure_rows(self, n: int) -> None:
        have = self.rows_.shape[0]
        if n <= have:
            return
        texts = self.catalog_.texts[have:n]
        if self.vec_ is None:
            new = sp.csr_matrix((len(texts), self.rows_.shape[1]), dtype=np.float64)
        else:
            new = sp.csr_matrix(self.vec_.transform(texts), dtype=np.float64)
        self.rows_ = sp.csr_matrix(sp.vstack([self.rows_, new], format="csr"))

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None or not self._counts(event.kind, event.value):
            return
        self._ensure_rows(i + 1)
        mine = self.sums_.get(event.user)
        self.sums_[event.user] = self.rows_[i] if mine is None else sp.csr_matrix(mine + self.rows_[i])
        self.n_[event.user] = self.n_.get(event.user, 0) + 1

    def forget(self, user: str, events: Any) -> None:
        self.sums_.pop(user, None)
        self.n_.pop(user, None)

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        q = self.sums_.get(user.user)
        if q is None or len(items) == 0:
            return np.zeros(len(items), dtype=np.float64)
        q = q.toarray().ravel()
        if self.profile == "mean":
            q = q / self.n_[user.user]
        self._ensure_rows(len(self.catalog_))
        if len(items) * 4 >= self.rows_.shape[0]:
            # Many items: one product over all rows, then pick (the same row sums);
            # indexing rows_ first would copy most of the matrix per request.
            return np.asarray(self.rows_ @ q, dtype=np.float64).ravel()[items.idx]
        return np.asarray(self.rows_[items.idx] @ q, dtype=np.float64).ravel()


#: Evaluation-only baselines by name, with the parameters that define each one.
#: ``itemknn`` and ``ease`` are the engine's learners with scoring made cheaper for a
#: replay (:mod:`.itemknn`, :mod:`.ease`): the same scores, up to float32 rounding for EASE.
EVAL_BASELINES: dict[str, tuple[type[Learner], dict[str, Any]]] = {
    "itemknn": (StreamItemKNN, {}),
    "ease": (StreamEASE, {}),
    "sknn": (SessionKNN, {}),
    "tfidf": (TextProfile, {"vectorizer": "tfidf", "profile": "mean"}),
    "bow": (TextProfile, {"vectorizer": "count", "profile": "sum"}),
}
