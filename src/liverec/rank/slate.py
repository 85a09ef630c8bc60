"""Slate construction: MMR diversity, per-provider exposure caps and the title-word cap.

Greedy selection (Carbonell & Goldstein's maximal marginal relevance): each next item
maximises ``(1 - diversity) * relevance - diversity * max_sim(item, chosen)``, where
relevance is the fused score scaled to [0, 1] and similarity is the cosine of LM
vectors. An exposure cap keeps at most ``max_per_provider`` items of one provider
(an attribute such as ``authors`` or ``brand``) in a slate. With ``diversity=0`` and
no cap this is plain top-k.

The title-word cap keeps a list from collapsing on one word of a title: short titles
embed close to every other title sharing a word, so after "The Red House" the LM
source alone ranks "House of Leaves", "The Good House", "House Rules", ... on top. At
most ``max_per_word`` items of a slate share a title word (3+ letters, not an English
stop word); an item over the cap waits, and only fills the slate if too few others are
left, so the cap never shortens a list.

Written here rather than taken from a library: no kept library does MMR over an
arbitrary score vector with an exposure constraint, and it is twenty lines of numpy.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from .index import top_k

#: MMR considers only this many best-scored candidates (it is O(pool * k)).
MMR_POOL = 300
_WORD = re.compile(r"[^\W\d_]{3,}")


@functools.lru_cache(maxsize=1 << 16)
def title_words(title: str) -> frozenset[str]:
    """The words that tie titles together: lower case, 3+ letters, no English stop words.
    Cached by title: a request reads the words of a hundred candidates' titles.

    >>> sorted(title_words("The House of Hades (The Heroes of Olympus, #4)"))
    ['hades', 'heroes', 'house', 'olympus']
    """
    return frozenset(w for w in _WORD.findall(title.lower()) if w not in ENGLISH_STOP_WORDS)


def title_of(attributes: Mapping[str, Any], text: str) -> str:
    """An item's title: its ``title`` attribute when that is text, else its text's first line.

    >>> title_of({"title": "Dune"}, "Dune\\nFrank Herbert"), title_of({}, "Carrie\\nStephen King")
    ('Dune', 'Carrie')
    """
    t = attributes.get("title")
    return t if isinstance(t, str) else text.split("\n", 1)[0]


def catalog_title_words(catalog: Any, rows: np.ndarray) -> Callable[[int], frozenset[str]]:
    """Title words of the candidate at a position, for candidates at catalog ``rows``."""
    return lambda pos: title_words(title_of(catalog.attributes[rows[pos]], catalog.texts[rows[pos]]))


def build_slate(
    fused: np.ndarray,
    vectors: np.ndarray | None,
    k: int,
    *,
    diversity: float = 0.0,
    rows: np.ndarray | None = None,
    providers: Sequence[Any] | None = None,
    max_per_provider: int | None = None,
    words: Callable[[int], frozenset[str]] | None = None,
    max_per_word: int | None = None,
) -> np.ndarray:
    """Positions (into ``fused``) of the slate, in serving order.

    Parameters
    ----------
    fused : fused scores of the candidates.
    vectors : unit vectors (needed when ``diversity > 0``): one row per candidate, or
        the whole catalog's with ``rows`` giving each candidate's row.
    diversity : 0 = pure relevance, 1 = pure novelty w.r.t. the items already chosen.
    providers : provider of each candidate (None = no provider).
    max_per_provider : cap per provider in the slate.
    words : title words of the candidate at a position (see :func:`title_words`).
    max_per_word : at most this many slate items share one title word; the others
        fill the slate only when too few items are left.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    >>> build_slate(np.array([1.0, 0.99, 0.5]), v, 2).tolist()
    [0, 1]
    >>> build_slate(np.array([1.0, 0.99, 0.5]), v, 2, diversity=0.7).tolist()
    [0, 2]
    >>> build_slate(np.array([3.0, 2.0, 1.0]), None, 2, providers=["a", "a", "b"], max_per_provider=1).tolist()
    [0, 2]
    >>> titles = ["The Red House", "House of Leaves", "The Good House", "Dune"]
    >>> build_slate(np.array([4.0, 3.0, 2.0, 1.0]), None, 3, words=lambda i: title_words(titles[i]),
    ...             max_per_word=2).tolist()
    [0, 1, 3]
    """
    if not 0.0 <= diversity <= 1.0:
        raise ValueError("diversity must be in [0, 1]")
    capped = providers is not None and max_per_provider is not None
    worded = words is not None and max_per_word is not None
    if diversity == 0.0 and not capped and not worded:
        return top_k(fused, k)
    pool = top_k(fused, max(MMR_POOL, 4 * k) if not capped else len(fused))
    rel = fused[pool].astype(np.float64)
    span = rel.max() - rel.min() if len(rel) else 0.0
    rel = (rel - rel.min()) / span if span > 1e-12 else np.ones_like(rel)
    vecs = None
    if diversity > 0 and vectors is not None:
        vecs = vectors[pool] if rows is None else vectors[rows[pool]]
    chosen: list[int] = []
    counts: dict[Any, int] = {}
    word_counts: dict[str, int] = {}
    full: set[str] = set()  # words at the cap: an item with one of them waits
    waiting: list[int] = []  # over the word cap: served only if the slate cannot be filled otherwise

    def take(j: int) -> bool:
        """Add pool position ``j`` to the slate unless a cap stops it (over the word cap: it waits)."""
        p = providers[pool[j]] if capped else None  # type: ignore[index]
        if p is not None and counts.get(p, 0) >= max_per_provider:  # type: ignore[operator]
            return False
        ws = words(int(pool[j])) if worded else frozenset()  # type: ignore[misc]
        if full and not full.isdisjoint(ws):
            waiting.append(j)
            return False
        counts[p] = counts.get(p, 0) + 1
        for w in ws:
            word_counts[w] = n = word_counts.get(w, 0) + 1
            if n >= max_per_word:  # type: ignore[operator]
                full.add(w)
        chosen.append(j)
        return True

    if vecs is None:  # relevance only: the pool's own order (best first), one pass
        for j in range(len(pool)):
            if len(chosen) == k:
                break
            take(j)
    else:  # MMR: each next item maximises relevance minus similarity to the chosen ones
        max_sim = np.full(len(pool), -1.0)
        available = np.ones(len(pool), dtype=bool)
        for _ in range(len(pool)):
            if len(chosen) == k:
                break
            obj = (1 - diversity) * rel - diversity * np.maximum(max_sim, 0.0) if chosen else rel.copy()
            obj[~available] = -np.inf
            j = int(np.argmax(obj))
            available[j] = False
            if take(j):
                max_sim = np.maximum(max_sim, vecs @ vecs[j])
    chosen += waiting[: k - len(chosen)]
    return pool[np.asarray(chosen, dtype=np.int64)]
