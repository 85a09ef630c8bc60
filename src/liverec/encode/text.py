"""Item text for the language model: a template over the item's text and attributes."""

from __future__ import annotations

import string
from typing import Any, Mapping

from ..store.schema import text_hash

__all__ = ["render_text", "text_hash"]

_FMT = string.Formatter()


def _render_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple, set)):
        return ", ".join(str(x) for x in v if x not in (None, ""))
    return str(v).strip()


def render_text(text: str, attributes: Mapping[str, Any], template: str) -> str:
    """Fill ``template`` with ``{text}`` and attribute placeholders.

    A line whose placeholders are all empty or missing is dropped, so one template
    serves items with and without a title, authors, genres...

    Examples
    --------
    >>> render_text("", {"title": "Dune", "authors": "Frank Herbert"}, "{title}\\nby {authors}\\nGenres: {genres}")
    'Dune\\nby Frank Herbert'
    """
    values = {"text": text or "", **{k: _render_value(v) for k, v in attributes.items()}}
    lines = []
    for line in template.split("\n"):
        fields = [name for _, name, _, _ in _FMT.parse(line) if name is not None]
        filled = {f: values.get(f, "") for f in fields}
        if fields and not any(filled.values()):
            continue
        lines.append(line.format_map(filled).strip())
    out = "\n".join(x for x in lines if x)
    return out


