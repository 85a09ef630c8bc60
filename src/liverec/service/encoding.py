"""JSON out with orjson: one C call from plain Python values to bytes, no pydantic pass.

Examples
--------
>>> dumps({"user": "u1", "took_ms": 1.5})
b'{"user":"u1","took_ms":1.5}'
>>> Json({"ok": True}).body
b'{"ok":true}'
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def dumps(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON (numpy scalars and arrays included; NaN becomes null)."""
    return orjson.dumps(value, option=_OPTS)


class Json(Response):
    """A JSON response rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
