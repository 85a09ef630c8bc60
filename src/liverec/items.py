"""The item side of the engine: add, update, remove, read and search catalog items.

Items live in three places kept in step: the store (durable rows), the in-memory
:class:`~liverec.encode.Catalog` (ids, rendered text, attributes, LM vectors) and the
vector index retrieval searches. An item's text is rendered from its ``text`` and
attributes by the settings' template; only new or changed texts are encoded.

Examples
--------
>>> import threading
>>> from liverec.encode import Catalog
>>> from liverec.store import Store
>>> from liverec.types import Item
>>> from liverec.rank.index import VectorIndex
>>> class Letters:  # a tiny encoder: one dimension per vowel
...     model_id, dim = "letters", 5
...     def encode(self, texts, private=False):
...         return np.array([[t.count(v) + 1.0 for v in "aeiou"] for t in texts], np.float32)
>>> cat = Catalog(dim=5)
>>> items = Items(Store.open(), cat, Letters(), "{text}", threading.RLock(), index=lambda: VectorIndex(cat))
>>> items.add([Item(id="b1", text="The Hobbit"), Item(id="b2", text="Dune")])
2
>>> items.add([Item(id="b1", text="The Hobbit")])   # unchanged: nothing encoded again
0
>>> [i.id for i in items.search("hob")], items.get("b2").text
(['b1'], 'Dune')
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .encode.catalog import Catalog
from .encode.text import render_text
from .errors import UnknownItemError, ValidationError
from .rank.index import VectorIndex
from .store import Store
from .types import Item
from .validate import check_id, check_json_value, check_text

if TYPE_CHECKING:
    from .encode.cache import CachedEncoder


class Items:
    """Catalog items in the store, in memory and in the index (see the module docstring).

    ``template`` renders an item's text from its ``text`` and attributes;
    ``index()`` returns the engine's current vector index (it can be replaced).
    """

    def __init__(
        self, store: Store, catalog: Catalog, encoder: CachedEncoder, template: str, lock: threading.RLock,
        *, index: Callable[[], VectorIndex],
    ) -> None:
        self.store, self.catalog, self.encoder, self.template, self.lock = store, catalog, encoder, template, lock
        self.index = index

    def render(self, text: str, attributes: Mapping[str, Any]) -> str:
        """The text the language model reads for an item."""
        return render_text(text, attributes, self.template)

    def add(self, items: Iterable[Item]) -> int:
        """Add or update items; only new or changed text is encoded. Returns how many changed.

        Raises :class:`~liverec.errors.ValidationError` (nothing stored) on a bad item.
        """
        items = list(items)
        seen: set[str] = set()
        for i, it in enumerate(items):
            check_item(it, f"items[{i}]")
            if it.id in seen:
                raise ValidationError(
                    f"item id {it.id!r} appears twice in one batch of items (items[{i}]); "
                    "send each item once.",
                    field=f"items[{i}].id",
                )
            seen.add(it.id)
            if not self.render(it.text, it.attributes).strip():
                raise ValidationError(
                    f"items[{i}] ({it.id!r}) has no text: nothing for the language model to read, so it could "
                    "only be recommended by chance. Give it text, or attributes the text template uses "
                    "(title, authors, genres, tags). Nothing was stored.",
                    field=f"items[{i}].text",
                )
        with self.lock:
            changed: list[Item] = []
            texts: list[str] = []
            for it in items:
                text = self.render(it.text, it.attributes)
                idx = self.catalog.get_idx(it.id)
                if idx is not None and self.catalog.texts[idx] == text and self.catalog.attributes[idx] == dict(it.attributes):
                    continue
                changed.append(it)
                texts.append(text)
            if not changed:
                return 0
            vecs = self.encoder.encode(texts)
            self.store.upsert_items(changed)
            cat = self.catalog
            existing = [cat.get_idx(it.id) for it in changed]
            cat.upsert([it.id for it in changed], vecs, [dict(it.attributes) for it in changed], texts)
            index = self.index()
            index.update([i for i in existing if i is not None])
            index.sync()
            return len(changed)

    def create_bare(self, ids: list[str]) -> None:
        """Text-less items (no LM vector: zeros) until someone adds their text."""
        dim = self.catalog.dim or self.encoder.dim
        self.store.upsert_items([Item(id=i) for i in ids])
        self.catalog.upsert(ids, np.zeros((len(ids), dim), dtype=np.float32), [{} for _ in ids], ["" for _ in ids])

    def remove(self, ids: Iterable[str]) -> int:
        """Remove items from the catalog (past events stay in the log). Returns how many."""
        ids = list(ids)
        with self.lock:
            n = self.store.delete_items(ids)
            self.catalog.remove(ids)
            return n

    def get(self, item_id: str) -> Item:
        """The stored item, or :class:`~liverec.errors.UnknownItemError`."""
        s = self.store.get_item(item_id)
        if s is None:
            raise UnknownItemError(f"unknown item {item_id!r}: it is not in the catalog.", field="item")
        return s.to_item()

    def search(self, q: str = "", limit: int = 20) -> list[Item]:
        """Catalog items whose text contains ``q`` (case-insensitive), in catalog order;
        ``q=""`` gives the first ``limit`` items."""
        needle, out, cat = q.lower().strip(), [], self.catalog
        with self.lock:
            for i in range(len(cat)):
                if cat.alive[i] and (not needle or needle in cat.texts[i].lower()):
                    out.append(Item(id=cat.ids[i], text=cat.texts[i], attributes=dict(cat.attributes[i])))
                    if len(out) >= limit:
                        break
        return out

    def load_all(self, stored: Sequence[Any], gone: Sequence[str] = ()) -> None:
        """Put every stored item row into the (empty) catalog at open, in the rows' order."""
        if not stored:
            return
        texts = [self.render(s.text, s.attributes) for s in stored]
        vecs = self.encoder.encode(texts)
        self.catalog.upsert([s.id for s in stored], vecs, [dict(s.attributes) for s in stored], texts)
        self.catalog.remove(list(gone))
        self.index().sync()

    def load(self, stored: Sequence[Any]) -> int:
        """Bring stored item rows another engine wrote into the catalog and index; how many changed."""
        fresh = []
        for s_ in stored:
            text = self.render(s_.text, s_.attributes)
            idx = self.catalog.get_idx(s_.id)
            unchanged = idx is not None and bool(self.catalog.alive[idx]) and self.catalog.texts[idx] == text and (
                self.catalog.attributes[idx] == dict(s_.attributes)
            )
            if unchanged:
                continue
            fresh.append((s_, text, idx))
        if not fresh:
            return 0
        vecs = self.encoder.encode([t for _, t, _ in fresh])
        self.catalog.upsert([s_.id for s_, _, _ in fresh], vecs, [dict(s_.attributes) for s_, _, _ in fresh],
                            [t for _, t, _ in fresh])
        index = self.index()
        index.update([i for _, _, i in fresh if i is not None])
        index.sync()
        return len(fresh)


def check_item(it: Any, where: str) -> None:
    """Refuse anything but a well-formed :class:`~liverec.types.Item` (naming ``where``)."""
    if not isinstance(it, Item):
        raise ValidationError(f"{where} is a {type(it).__name__}, not an Item.", field=where)
    check_id(it.id, f"{where}.id")
    check_text(it.text, f"{where}.text")
    if not isinstance(it.attributes, Mapping):
        raise ValidationError(f"{where}.attributes must be a mapping.", field=f"{where}.attributes")
    check_json_value(it.attributes, f"{where}.attributes")
