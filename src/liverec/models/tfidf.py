"""TF-IDF content baseline: the user as the sum of their items' tf-idf rows."""

from __future__ import annotations

from typing import Any, ClassVar, Self, Sequence

import numpy as np
import scipy.sparse as sp

from ..encode.catalog import ItemIds
from ..types import Event
from .base import FeedbackConfig, InteractionLog, Learner, UserState, register
from .pop import check_weighting, interaction_pairs, interaction_strength, merge_strength, recent_strengths
from .retrieval import best
from .useritems import UserItems


@register
class TfidfContent(Learner):
    """Cosine between the user's tf-idf profile and every item's tf-idf row.

    A scikit-learn ``TfidfVectorizer`` (sublinear tf, word 1-2-grams, English stop
    words, L2-normalised rows) is fitted on the catalog texts at ``fit``; items added
    later are transformed with it the first time they are scored. The profile is the
    sum of the user's interacted items' rows (each item once, with its strength), made
    from the items when a request reads it: a user costs memory for their item
    strengths only, and one event O(1); with ``user_tables=False`` (fleet mode) not even
    for those: the strengths are read from the request's recent events. Score =
    cosine(profile, item row); cold users score 0 everywhere. The classic bag-of-words counterpart of ``content`` (LM vectors).

    Parameters
    ----------
    weighting : {"binary", "feedback"}
        An interaction counts 1, or its positive feedback weight.
    all_events : bool
        Count every event (e.g. every rating) as an interaction, not only positive ones.
    user_tables : bool
        Keep each user's item strengths (default), or read them from the request's recent
        events (``UserState.history``): nothing per user, the same profile while a
        user's events all fit in the recent ones.
    refit_growth : float
        Learn the vocabulary again once the catalog is this many times larger than the
        catalog it was learned from.
    feedback : FeedbackConfig, optional
        Kind weights (default: the built-in ones).
    seed : int
        Unused (deterministic); kept for the protocol.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> from liverec import Event
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a", "b", "c"], np.ones((3, 2), np.float32), [{}] * 3,
    ...                ["space opera starships", "starships and space battles", "a cookbook of soups"])
    >>> m = TfidfContent().fit(InteractionLog.from_events([], cat))
    >>> m.learn_one(Event(user="u", item="a", timestamp=0.0))
    >>> s = m.score(UserState("u"), cat.select(["b", "c"]))
    >>> bool(s[0] > s[1] == 0.0)
    True
    """

    name: ClassVar[str] = "tfidf"
    scores_new_items: ClassVar[bool] = True
    users_from_events: ClassVar[bool] = True
    #: ``candidates`` reads the postings of the profile's strongest terms, each term's
    #: highest-weighted items only (an impact-ordered inverted index; retrieval only).
    candidate_terms: ClassVar[int] = 32
    candidate_postings: ClassVar[int] = 200

    def __init__(
        self,
        *,
        weighting: str = "binary",
        all_events: bool = False,
        refit_growth: float = 1.5,
        feedback: FeedbackConfig | None = None,
        seed: int = 0,
        user_tables: bool = True,
    ) -> None:
        self.weighting = weighting
        self.all_events = all_events
        self.refit_growth = refit_growth
        self.feedback = feedback
        self.seed = seed
        self.user_tables = user_tables

    # ------------------------------------------------------------------ learning
    def fit(self, log: InteractionLog) -> Self:
        check_weighting(self.weighting)
        self.catalog_ = log.catalog
        self.fitted_ = True
        self._fit_vocabulary(list(log.catalog.texts))
        self.items_ = UserItems()
        if self.user_tables:
            users, uidx, items, x = interaction_pairs(log, self._fb, self.weighting, self.all_events)
            self.items_ = UserItems.from_pairs([str(u) for u in users], uidx, items, x)
        return self

    def profile(self, user: UserState | str) -> tuple[np.ndarray, np.ndarray] | None:
        """(terms, weights) of ``user``'s profile: the sum of their items' rows, each times its
        strength (terms ascending); None for a user with no items.

        Made when asked (O(nnz of the user's rows)), not kept: per user, the learner keeps only
        the item strengths (``user_tables=False``: none, and ``user`` must be a ``UserState``).
        """
        mine = self._strengths(user)
        if mine is None:
            return None
        idx, x = mine
        self._ensure_rows(int(idx[-1]) + 1)
        rows = self.rows_
        starts, lens = rows.indptr[idx], rows.indptr[idx + 1] - rows.indptr[idx]
        # Positions of every row's entries in indices/data, row after row.
        at = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(int(lens.sum()))
        terms, where = np.unique(rows.indices[at], return_inverse=True)
        return terms.astype(np.int64), np.bincount(where, weights=rows.data[at] * np.repeat(x, lens), minlength=len(terms))

    def _fit_vocabulary(self, texts: list[str]) -> None:
        """Vocabulary and idf from ``texts``; every item row is transformed with them."""
        from sklearn.feature_extraction.text import TfidfVectorizer  # heavy: only when fitting

        self.vectorizer_: TfidfVectorizer | None = TfidfVectorizer(
            sublinear_tf=True, min_df=1, ngram_range=(1, 2), stop_words="english", dtype=np.float64
        )
        try:
            self.rows_ = sp.csr_matrix(self.vectorizer_.fit_transform(texts))
        except ValueError:  # empty vocabulary: no text, or only stop words
            self.vectorizer_ = None
            self.rows_ = sp.csr_matrix((len(texts), 0))
        self.vocabulary_items_ = len(texts)
        self.postings_: tuple[int, sp.csc_matrix] | None = None

    def _refit_vocabulary(self, n: int) -> None:
        """Re-learn the vocabulary on the first ``n`` catalog texts (the catalog outgrew it);
        profiles follow, as they are made from the users' item strengths when read."""
        self._fit_vocabulary(list(self.catalog_.texts[:n]))

    def _ensure_rows(self, n: int) -> None:
        """Transform the texts of items added after fit (first time they are needed).

        Once the catalog has grown past ``refit_growth`` times the items the vocabulary
        was learned from (or it was learned from none), the vocabulary is learned again
        on the whole catalog: new items' words count, and the state equals a fresh fit
        on the grown catalog (amortised: the catalog must grow geometrically).
        """
        have = self.rows_.shape[0]
        if n <= have:
            return
        if n > self.refit_growth * max(getattr(self, "vocabulary_items_", have), 1):
            self._refit_vocabulary(max(n, len(self.catalog_)))
            return
        texts = self.catalog_.texts[have:n]
        if self.vectorizer_ is None:
            new = sp.csr_matrix((len(texts), self.rows_.shape[1]))
        else:
            new = sp.csr_matrix(self.vectorizer_.transform(texts))
        self.rows_ = sp.csr_matrix(sp.vstack([self.rows_, new], format="csr"))

    def learn_one(self, event: Event) -> None:
        self._check_fitted()
        i = self.catalog_.get_idx(event.item)
        if i is None:
            return
        s = interaction_strength(self._fb, event, self.weighting, self.all_events)
        if s <= 0 or not self.user_tables:
            return
        a = self.items_.strength(event.user, i)
        b = merge_strength(a, s, self.weighting)
        if b != a:
            self.items_.set(event.user, i, b)

    def _strengths(self, user: UserState | str) -> tuple[np.ndarray, np.ndarray] | None:
        """(items ascending, strengths) of ``user``: kept, or read from the request's events."""
        if self.user_tables:
            # The same sum whatever order the items were learned in.
            return self.items_.get_sorted(user if isinstance(user, str) else user.user)
        if isinstance(user, str):
            raise TypeError("TfidfContent(user_tables=False) reads users from their events: pass a UserState")
        return recent_strengths(user, self.catalog_, self._fb, self.weighting, self.all_events)

    def forget(self, user: str, events: Sequence[Event]) -> None:
        self.items_.pop(user)

    # ----------------------------------------------------------------- retrieval
    def _postings(self) -> tuple[int, sp.csc_matrix]:
        """(rows covered, term x item postings): each term's top ``candidate_postings`` items.

        Items added since are few and read directly; the postings are rebuilt once they
        are more than 1/32 of those covered (amortised O(1) per added item).
        """
        cached = self.__dict__.get("postings_")
        n = self.rows_.shape[0]
        if cached is not None and n - cached[0] <= max(1024, cached[0] // 32):
            return cached
        csc = self._columns()
        keep = np.ones(csc.nnz, dtype=bool)
        p = self.candidate_postings
        for t in np.flatnonzero(np.diff(csc.indptr) > p).tolist():
            a, b = csc.indptr[t], csc.indptr[t + 1]
            weak = np.argpartition(-csc.data[a:b], p - 1)[p:]
            keep[a + weak] = False
        cols = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))[keep]
        post = sp.csc_matrix((csc.data[keep], (csc.indices[keep], cols)), shape=csc.shape)
        self.postings_ = (n, post)
        return self.postings_

    def candidates(self, user: UserState, n: int) -> np.ndarray:
        """About the ``n`` best-scored live items (dense indices, best first), sublinearly.

        Items in the postings of the profile's ``candidate_terms`` strongest terms (and
        items added since the postings were built), ranked by their exact cosine.
        """
        self._check_fitted()
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        unit = self._unit_profile(user)
        if unit is None:
            return np.zeros(0, dtype=np.int64)
        covered, post = self._postings()
        terms, w = unit[0][unit[1] > 0], unit[1][unit[1] > 0]
        if len(terms) > self.candidate_terms:
            terms = terms[np.argpartition(-w, self.candidate_terms - 1)[: self.candidate_terms]]
        pool = np.union1d(post[:, terms].indices, np.arange(covered, self.rows_.shape[0]))
        alive = self.catalog_.alive
        pool = pool[pool < len(alive)]
        pool = pool[alive[pool]]
        s = self._dot(pool, *unit)
        return best(pool[s > 0], s[s > 0], n)

    def floor(self, user: UserState) -> float | None:
        """A lower bound of the lowest score over live items: 0, or, when some of the
        profile's terms are in every item's text (a text template's words), the sum of
        each such term's profile weight times its smallest weight in any item."""
        self._check_fitted()
        unit = self._unit_profile(user)  # rows follow the catalog (it may re-learn the vocabulary)
        if unit is None:
            return 0.0
        terms, w = unit
        cached = self.__dict__.get("_term_floor")
        n = self.rows_.shape[0]
        if cached is None or cached[0] != n or len(cached[1]) != self.rows_.shape[1]:
            csc = self._columns()
            every = np.diff(csc.indptr) == n
            low = np.zeros(len(every))
            if every.any():
                low[every] = np.minimum.reduceat(csc.data, csc.indptr[:-1][every]) if n else 0.0
            self._term_floor = cached = (n, low)
        return float(w @ cached[1][terms])

    # ------------------------------------------------------------------- scoring
    def query_vector(self, user: UserState) -> np.ndarray | None:
        """The user's unit tf-idf profile (dense, vocabulary-sized); None when cold."""
        self._check_fitted()
        unit = self._unit_profile(user)
        return None if unit is None else self._dense(*unit)

    def _dot(self, rows: np.ndarray, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``rows_[rows] @ q`` for the profile ``q`` (``weights`` at the ascending ``terms``),
        without a vocabulary-sized vector (a million-item catalog's vocabulary is about as
        large): each stored entry finds its term's weight by binary search; the row sums run
        entry by entry in row order, as scipy's product does.

        >>> from liverec.encode import Catalog
        >>> cat = Catalog(dim=2)
        >>> _ = cat.upsert(["a", "b"], np.ones((2, 2), np.float32), [{}, {}], ["red apples", "green pears"])
        >>> m = TfidfContent().fit(InteractionLog.from_events([], cat))
        >>> t = np.array(sorted(m.vectorizer_.vocabulary_[w] for w in ("red", "pears")))
        >>> bool(np.allclose(m._dot(np.array([0, 1]), t, np.ones(2)), m.rows_[[0, 1]] @ m._dense(t, np.ones(2))))
        True
        """
        sub = self.rows_[np.asarray(rows, dtype=np.int64)]
        if not len(terms) or not sub.nnz:
            return np.zeros(len(rows))
        pos = np.minimum(np.searchsorted(terms, sub.indices), len(terms) - 1)
        vals = np.where(terms[pos] == sub.indices, sub.data * weights[pos], 0.0)
        return np.bincount(np.repeat(np.arange(len(rows)), np.diff(sub.indptr)), weights=vals, minlength=len(rows))

    def _dense(self, terms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """A vocabulary-sized vector with ``weights`` at ``terms``."""
        q = np.zeros(self.rows_.shape[1])
        q[terms] = weights
        return q

    def _unit_profile(self, user: UserState) -> tuple[np.ndarray, np.ndarray] | None:
        """:meth:`profile` scaled to unit length; None when cold."""
        self._ensure_rows(len(self.catalog_))  # may re-learn the vocabulary: the profile is read after it
        prof = self.profile(user)
        if prof is None:
            return None
        norm = float(np.sqrt(np.square(prof[1]).sum()))  # over the profile's terms, not the whole vocabulary
        return None if norm < 1e-12 else (prof[0], prof[1] / norm)

    def score(self, user: UserState, items: ItemIds) -> np.ndarray:
        self._check_fitted()
        if len(items) == 0:
            return np.zeros(0, dtype=np.float32)
        unit = self._unit_profile(user)
        if unit is None:
            return np.zeros(len(items), dtype=np.float32)
        terms, w = unit
        if len(items) * 4 <= self.rows_.shape[0]:
            return self._dot(items.idx, terms, w).astype(np.float32)
        # Most of the catalog: only the columns of the profile's terms are read (a profile
        # holds a few hundred of the vocabulary's tens of thousands of terms), gathered from
        # the column arrays directly (scipy's column indexing builds a matrix first: most of
        # this path's time), summed column by column in the terms' order as its product does.
        cols = self._columns()
        start, end = cols.indptr[terms], cols.indptr[terms + 1]
        size = end - start
        at = np.repeat(start - np.cumsum(size) + size, size) + np.arange(int(size.sum()))
        s = np.bincount(cols.indices[at], weights=cols.data[at] * np.repeat(w, size), minlength=cols.shape[0])
        return s[items.idx].astype(np.float32)

    def _columns(self) -> sp.csc_matrix:
        """``rows_`` by column (made again when ``rows_`` changes; not part of the pickled state)."""
        cached = self.__dict__.get("_by_column")
        if cached is None or cached[0] is not self.rows_:
            self._by_column = cached = (self.rows_, sp.csc_matrix(self.rows_))
        return cached[1]

    def learned_state(self) -> dict[str, Any]:
        state = super().learned_state()
        state.pop("_by_column", None)  # a copy of rows_, made again on demand
        return state
