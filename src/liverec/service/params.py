"""Checks on request values FastAPI's declarations cannot express, with the fix in the message.

Examples
--------
>>> json_param('{"year": {"gte": 1990}}', "filters")
{'year': {'gte': 1990}}
>>> json_param("", "filters") is None
True
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException

from ..errors import ValidationError
from ..validate import check_id


def path_id(value: str, field: str) -> None:
    """An id in the URL path follows the id rule (so ``%00`` is a 422 on every store, not a 500)."""
    check_id(value, field)


def batch_limit(n: int, limit: int, what: str) -> None:
    """413 when one request carries more than ``limit`` items or events."""
    if n > limit:
        raise HTTPException(413, f"{n} {what} in one request; the limit is {limit}. "
                                 f"Split the batch, or raise LIVEREC_MAX_BATCH.")


def json_param(raw: str | None, name: str) -> dict[str, Any] | None:
    """A query parameter that carries a JSON object (None when absent or empty)."""
    if raw is None or raw == "":
        return None
    try:
        v = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(f"{name} is not valid JSON ({exc}); send e.g. {name}={{\"year\": {{\"gte\": 1990}}}}.",
                              field=name) from None
    if not isinstance(v, dict):
        raise ValidationError(f"{name} must be a JSON object, got {type(v).__name__}.", field=name)
    return v
