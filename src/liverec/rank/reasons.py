"""Reasons in plain words: what a source's contribution means to the person reading it.

Three rules, because these sentences are shown to end users:

* no internal source name (``ease``, ``als``, ``tfidf``, ...) reaches the text: a
  source without a phrase of its own reads as "fits what you liked";
* the verb follows what the user did with the items behind the reason: "which you
  bought", "which you viewed" (clicks and views), "which you liked";
* a similarity or trend score is shown only when it is positive.

Examples
--------
>>> from liverec import Event
>>> from liverec.models.base import UserState
>>> u = UserState("u", history=(Event(user="u", item="a", kind="click"), Event(user="u", item="b", kind="purchase")))
>>> did(u, ("a",)), did(u, ("b",)), did(u, ("a", "b")), did(u)
('viewed', 'bought', 'viewed or bought', 'viewed or bought')
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from ..encode.catalog import Catalog
from ..models.base import UserState

#: What a person did with an item, by event kind. Kinds not listed (custom ones) read "chose".
VERBS: dict[str, str] = {
    "click": "viewed", "view": "viewed", "like": "liked", "purchase": "bought", "add_to_cart": "put in your cart",
    "rating": "rated",
}
_ORDER = ("viewed", "liked", "rated", "put in your cart", "bought", "chose")
#: Kinds that never stand behind a reason (they push items away).
_NEGATIVE = frozenset({"skip", "dislike"})

#: How each source's contribution reads; {because} = history items, {did} = what the user did with them.
_PHRASES: dict[str, tuple[str, str]] = {
    # source: (with history items, without)
    "itemknn": ("often chosen together with {because}, which you {did}", "often chosen together with what you {did}"),
    "userknn": ("people with tastes like yours chose this", "people with tastes like yours chose this"),
    "ease": ("goes with {because}, which you {did}", "fits what people like you choose"),
    "als": ("matches your taste (like {because}, which you {did})", "matches your taste"),
    "bpr": ("matches your taste (like {because}, which you {did})", "matches your taste"),
    "sequence": ("usually comes next after {because}, which you {did}", "usually comes next after what you just did"),
    "transition": ("often chosen right after {because}", "often chosen right after what you just chose"),
    "sessionknn": ("often chosen in the same sitting as {because}", "often chosen in sittings like your latest"),
    "neural": ("predicted to please you, given {because}, which you {did}", "predicted to please you"),
    "tfidf": ("shares words with {because}, which you {did}", "shares words with what you {did}"),
    "pop": ("popular with everyone", "popular with everyone"),
}
_ANY_SOURCE = ("fits {because}, which you {did}", "fits what you {did}")


def did(user: UserState, items: Collection[str] | None = None) -> str:
    """What ``user`` did with ``items`` (every recent item when None), as a verb.

    One verb when all agree; two joined by "or"; "chose" for more, or for no history.
    """
    asked = None if items is None else tuple(items)
    key = ("did", asked)
    kept = user.derived.get(key)
    if kept is None:
        by_item = _verbs_by_item(user)
        verbs: set[str] = set()
        for it in by_item if asked is None else asked:
            verbs |= by_item.get(it, set())
        kept = "chose" if not verbs or len(verbs) > 2 else " or ".join(sorted(verbs, key=_ORDER.index))
        user.derived[key] = kept
    return kept


def _verbs_by_item(user: UserState) -> dict[str, set[str]]:
    """Each history item's verbs, kept on ``user`` like :func:`did`'s answers: every reason of a slate asks."""
    kept = user.derived.get("verbs_by_item")
    if kept is None:
        kept = {}
        for e in user.history:
            if e.kind not in _NEGATIVE:
                kept.setdefault(e.item, set()).add(VERBS.get(e.kind, "chose"))
        user.derived["verbs_by_item"] = kept
    return kept


def title(catalog: Catalog, item_id: str) -> str:
    """An item's title (its ``title`` attribute, else its text's first line, else its id)."""
    i = catalog.index.get(item_id)
    if i is None:
        return item_id
    return str(catalog.attributes[i].get("title") or catalog.texts[i].split("\n")[0] or item_id)


def titles(catalog: Catalog, ids: Collection[str]) -> str:
    """``“A” and “B”``."""
    return " and ".join(f"“{title(catalog, b)}”" for b in ids)


def _score(label: str, value: float) -> str:
    """`` (similarity 0.42)`` when the value is positive, else nothing: a negative
    similarity means nothing to a reader and reads as a fault."""
    return f" ({label} {value:.2f})" if value > 0.005 else ""


#: Sources whose sentence shows their score; every other source's sentence depends only on
#: the history items behind it (and the user), so a slate can share it between items.
SCORE_IN_TEXT = frozenset({"content", "trending", "interests"})


def reason_text(name: str, raw: float, because: tuple[str, ...], user: UserState, catalog: Catalog) -> str:
    """The sentence for source ``name``'s contribution (``raw`` = its unnormalised score).

    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2)
    >>> _ = cat.upsert(["a"], np.ones((1, 2), np.float32), [{"title": "Dune"}], ["Dune"])
    >>> from liverec import Event
    >>> u = UserState("u", history=(Event(user="u", item="a", kind="click"),))
    >>> reason_text("content", 0.42, ("a",), u, cat)
    'similar to “Dune”, which you viewed (similarity 0.42)'
    >>> reason_text("content", -0.1, (), u, cat), reason_text("mystery-source", 3.0, (), u, cat)
    ('close to your taste profile', 'fits what you viewed')
    """
    if name == "content":
        if because:
            return f"similar to {titles(catalog, because)}, which you {did(user, because)}" + _score("similarity", raw)
        if user.interests_text:
            return f"matches your interests “{user.interests_text}”" + _score("similarity", raw)
        return "close to your taste profile" + _score("similarity", raw)
    if name == "trending":
        return "popular right now" + _score("trend score", float(np.expm1(raw)))
    if name == "interests":
        said = f" “{user.interests_text}”" if user.interests_text else ""
        return f"matches the interests you declared{said}" + _score("similarity", raw)
    with_items, without = _PHRASES.get(name, _ANY_SOURCE)
    if because:
        return with_items.format(because=titles(catalog, because), did=did(user, because))
    return without.format(did=did(user))
