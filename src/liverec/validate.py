"""Checks every piece of caller input passes before it is stored or used.

Pure functions, shared by the engine (Python callers) and the HTTP service: each
raises :class:`~liverec.errors.ValidationError` naming the caller's field, saying
what is wrong and how to fix it, and nothing is stored. They exist so that what one
caller writes can never break what another caller reads: a value stored here is
one every backend keeps as-is, JSON can carry back, and numpy can compare.

The rules (the documented limits):

* **ids** (users, items): 1-256 characters; no ``/`` (ids are addressed as one URL
  path segment: ``GET /users/{id}``), no control characters (NUL included), no lone
  surrogates, and not ``.`` or ``..`` (clients collapse those path segments).
  Event ids follow the same rule except that ``/`` is allowed (they never appear in
  a URL).
* **text** (item text, interests, string values): no NUL, no lone surrogates.
* **JSON values** (item attributes, event and request context): objects with string
  keys, lists, strings, booleans, null, integers within int64, finite floats;
  nested at most ``MAX_DEPTH`` containers deep (the top-level object counts as one).
* **filters**: ``{attribute: condition}``, a condition is a scalar (exact match), a
  list of scalars (any of), or an object of operators (eq, ne, gt, gte, lt, lte) to
  scalars; a scalar is a string, a boolean, an int64 integer or a finite float.

Examples
--------
>>> check_id("user-42", "user")
>>> try:
...     check_id("a/b", "user")
... except ValidationError as e:
...     print(e.field)
user
>>> check_json_value({"year": 1997, "tags": ["a", "b"]}, "attributes")
>>> check_filters({"year": {"gte": 1990}})
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from .errors import UnknownKindError, ValidationError
from .types import Event, is_finite_number

#: Most containers (objects, lists) nested in one JSON value, the outermost included.
MAX_DEPTH = 8
#: Longest user or item id.
MAX_ID = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Filter operators on one attribute.
FILTER_OPS = ("eq", "gt", "gte", "lt", "lte", "ne")

_SURROGATE = re.compile("[\ud800-\udfff]")
# Unicode category Cc: C0 controls (NUL included), DEL and C1 controls.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
ID_RULE = (
    f"1-{MAX_ID} characters without '/', control characters (NUL, newline, ...) or lone surrogates, "
    "and not '.' or '..'"
)


def _show(v: str, n: int = 40) -> str:
    """A safe, short rendering of a caller's string for an error message."""
    r = ascii(v)
    return r if len(r) <= n else r[: n - 4] + "...'"


def _bad_char(v: str) -> str | None:
    """What is wrong with the characters of ``v`` for storage, or None."""
    if "\x00" in v:
        return "contains a NUL character (\\u0000)"
    m = _SURROGATE.search(v)
    if m is not None:
        return (f"contains a lone surrogate (\\u{ord(m.group()):04x} at position {m.start()}), "
                "which is not valid Unicode")
    return None


def check_text(v: Any, field: str, *, max_length: int | None = None, allow_empty: bool = True) -> None:
    """A string every store keeps as-is: no NUL, no lone surrogates.

    >>> check_text("a\\x00b", "interests")
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: interests contains a NUL character (\\u0000); remove it and send again. Nothing was stored.
    """
    if not isinstance(v, str):
        raise ValidationError(f"{field} must be a string, got {type(v).__name__}.", field=field)
    if not allow_empty and not v.strip():
        raise ValidationError(f"{field} is empty; send some text.", field=field)
    if max_length is not None and len(v) > max_length:
        raise ValidationError(
            f"{field} is {len(v)} characters long; the limit is {max_length}. Shorten it.", field=field
        )
    bad = _bad_char(v)
    if bad is not None:
        raise ValidationError(f"{field} {bad}; remove it and send again. Nothing was stored.", field=field)


def check_id(v: Any, field: str, *, path_safe: bool = True) -> None:
    """A user or item id (``path_safe``) or an event id (``path_safe=False``: ``/`` allowed).

    Every id accepted here can be read and erased over HTTP as one path segment.
    """
    if not isinstance(v, str) or not v:
        raise ValidationError(
            f"{field} must be a non-empty string ({ID_RULE}), got {v!r:.60}.", field=field
        )
    why = None
    if len(v) > MAX_ID:
        why = f"is {len(v)} characters long"
    elif path_safe and "/" in v:
        why = "contains '/': ids are one URL path segment (GET/DELETE /users/{id})"
    elif path_safe and v in (".", ".."):
        why = "is a relative path segment"
    elif _CONTROL.search(v):
        why = "contains a control character (NUL, newline, tab, ...)"
    elif _SURROGATE.search(v):
        why = "contains a lone surrogate, which is not valid Unicode"
    if why is not None:
        rule = ID_RULE if path_safe else ID_RULE.replace("without '/', ", "without ").replace(
            ", and not '.' or '..'", "")
        raise ValidationError(
            f"{field} {_show(v)} {why}; an id must be {rule}. Pick such an id (e.g. replace '/' "
            "with '-'). Nothing was stored.",
            field=field,
        )


def check_json_value(v: Any, field: str, *, max_depth: int = MAX_DEPTH) -> None:
    """A JSON value every store, numpy and the HTTP responses handle (see the module rules).

    ``field`` names the whole value in the error (``items[3].attributes``); the message
    adds the path inside it.

    >>> check_json_value({"year": 10**400}, "items[0].attributes")
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: items[0].attributes.year is an integer of 401 digits, outside the 64-bit range [-9223372036854775808, 9223372036854775807]; send it as a string or a smaller number. Nothing was stored.
    """
    # Iterative (an explicit stack): a hostile value nested thousands deep must not
    # hit Python's recursion limit before the depth check answers.
    stack: list[tuple[Any, str, int]] = [(v, field, 0)]
    while stack:
        x, path, depth = stack.pop()
        if x is None or isinstance(x, bool):
            continue
        if isinstance(x, str):
            bad = _bad_char(x)
            if bad is not None:
                raise ValidationError(f"{path} {bad}; remove it and send again. Nothing was stored.", field=field)
            continue
        if isinstance(x, int):
            if not INT64_MIN <= x <= INT64_MAX:
                digits = len(str(abs(x))) if abs(x) < 10**4300 else "over 4300"
                raise ValidationError(
                    f"{path} is an integer of {digits} digits, outside the 64-bit range "
                    f"[{INT64_MIN}, {INT64_MAX}]; send it as a string or a smaller number. Nothing was stored.",
                    field=field,
                )
            continue
        if isinstance(x, float):
            if not math.isfinite(x):
                raise ValidationError(
                    f"{path} is {x!r}; numbers must be finite (no NaN or infinity). Send a finite number "
                    "or null. Nothing was stored.",
                    field=field,
                )
            continue
        if isinstance(x, (Mapping, list, tuple)):
            if depth + 1 > max_depth:
                raise ValidationError(
                    f"{path} nests objects/lists more than {max_depth} levels deep; flatten it "
                    f"(at most {max_depth} levels, the outermost included). Nothing was stored.",
                    field=field,
                )
            if isinstance(x, Mapping):
                for k, val in x.items():
                    if not isinstance(k, str):
                        raise ValidationError(
                            f"{path} has a key {k!r:.40} that is not a string; JSON object keys are strings.",
                            field=field,
                        )
                    bad = _bad_char(k)
                    if bad is not None:
                        raise ValidationError(
                            f"{path} has a key {_show(k)} that {bad}; rename it. Nothing was stored.", field=field
                        )
                    stack.append((val, f"{path}.{k}", depth + 1))
            else:
                for i, val in enumerate(x):
                    stack.append((val, f"{path}[{i}]", depth + 1))
            continue
        raise ValidationError(
            f"{path} is a {type(x).__name__}, which is not JSON; use str, int, float, bool, None, "
            "list or dict values. Nothing was stored.",
            field=field,
        )


def _scalar_problem(v: Any) -> str | None:
    if isinstance(v, bool) or (isinstance(v, str) and _bad_char(v) is None):
        return None
    if isinstance(v, str):
        return _bad_char(v)
    if isinstance(v, int):
        return None if INT64_MIN <= v <= INT64_MAX else "is an integer outside the 64-bit range"
    if isinstance(v, float):
        return None if math.isfinite(v) else "is not a finite number"
    if v is None:
        return "is null"
    if isinstance(v, (list, tuple)):
        return "is a list"
    return "is an object" if isinstance(v, Mapping) else f"is a {type(v).__name__}"


def check_filters(filters: Any, field: str = "filters") -> None:
    """Attribute filters as :meth:`~liverec.encode.Catalog.filter_mask` reads them.

    >>> check_filters({"year": [[1997]]})
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: filters.year[0] is a list; a filter is a value (exact match), a list of values (any of) or an object of operators, e.g. {"year": 1997}, {"genre": ["Fantasy", "Horror"]}, {"year": {"gte": 1990, "lt": 2000}}; values are strings, booleans, 64-bit integers or finite numbers.
    """
    shape = (
        'a filter is a value (exact match), a list of values (any of) or an object of operators, e.g. '
        '{"year": 1997}, {"genre": ["Fantasy", "Horror"]}, {"year": {"gte": 1990, "lt": 2000}}; values '
        "are strings, booleans, 64-bit integers or finite numbers."
    )
    if not isinstance(filters, Mapping):
        raise ValidationError(f"{field} must be an object of attribute filters, got {type(filters).__name__}; {shape}",
                              field=field)
    for key, cond in filters.items():
        if not isinstance(key, str) or _bad_char(key) is not None:
            raise ValidationError(f"{field} has an attribute name {key!r:.40} that is not a plain string.", field=field)
        where = f"{field}.{key}"
        if isinstance(cond, Mapping):
            if not cond:
                raise ValidationError(f"{where} is an empty object; name an operator among {list(FILTER_OPS)}.",
                                      field=where)
            for op, v in cond.items():
                if op not in FILTER_OPS:
                    raise ValidationError(
                        f"unknown filter operator {op!r:.40} in {where}; use one of {list(FILTER_OPS)}.",
                        field=where,
                    )
                bad = _scalar_problem(v)
                if bad is not None:
                    raise ValidationError(f"{where}.{op} {bad}; {shape}", field=where)
        elif isinstance(cond, (list, tuple)):
            for i, v in enumerate(cond):
                bad = _scalar_problem(v)
                if bad is not None:
                    raise ValidationError(f"{where}[{i}] {bad}; {shape}", field=where)
        else:
            bad = _scalar_problem(cond)
            if bad is not None:
                raise ValidationError(f"{where} {bad}; {shape}", field=where)


def check_event_value(v: Any, field: str, *, limit: float) -> None:
    """An event value: a finite number with ``|v| <= limit`` (``Settings.max_event_value``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValidationError(f"{field} must be a finite number, got {v!r:.40}.", field=field)
    if abs(v) > limit:
        raise ValidationError(
            f"{field} {v!r} is outside [-{limit:g}, {limit:g}]; send a smaller multiplier, or raise "
            "the max_event_value setting (LIVEREC_MAX_EVENT_VALUE). Nothing was stored.",
            field=field, fix="send a smaller value, or raise the max_event_value setting (LIVEREC_MAX_EVENT_VALUE).",
        )


def check_event(
    e: Any, where: str, *, kinds: Mapping[str, float], max_value: float,
    rating_range: tuple[float, float] = (0.0, 5.0), max_clock_skew: float = 86_400.0,
) -> Event:
    """A valid :class:`~liverec.types.Event` (value and timestamp as floats), or the error
    naming ``where``'s field and the fix. Nothing is stored by a caller that gets an error.

    >>> from liverec import Event
    >>> check_event(Event(user="u", item="i", kind="rating", value=4), "events[0]", kinds={"rating": 1.0},
    ...             max_value=1e6).value
    4.0
    >>> check_event(Event(user="u", item="i", kind="share"), "events[1]", kinds={"click": 1.0}, max_value=1e6)
    Traceback (most recent call last):
    ...
    liverec.errors.ValidationError: events[1].kind 'share' is not a known event kind; use one of ['click'] or add it to the kind_weights setting.
    """
    import time
    from dataclasses import replace

    if not isinstance(e, Event):
        raise ValidationError(
            f"{where} is a {type(e).__name__}, not an Event: build it with Event(user=..., item=..., kind=...).",
            field=where,
        )
    check_id(e.user, f"{where}.user")
    check_id(e.item, f"{where}.item")
    check_id(e.id, f"{where}.id", path_safe=False)  # event ids never appear in a URL
    if not isinstance(e.kind, str) or e.kind not in kinds:
        raise ValidationError(
            f"{where}.kind {e.kind!r} is not a known event kind; use one of "
            f"{sorted(kinds)} or add it to the kind_weights setting.",
            field=f"{where}.kind", fix=UnknownKindError.default_fix,
        )
    check_event_value(e.value, f"{where}.value", limit=max_value)
    lo, hi = rating_range
    if e.kind == "rating" and not (lo <= e.value <= hi):
        raise ValidationError(
            f"{where}.value {e.value} is outside the rating range [{lo}, {hi}]; send stars in that range "
            "or change the rating_min and rating_max settings.",
            field=f"{where}.value",
        )
    if not is_finite_number(e.timestamp) or e.timestamp < 0:
        raise ValidationError(
            f"{where}.timestamp must be Unix seconds (a finite number >= 0), got {e.timestamp!r}.",
            field=f"{where}.timestamp",
        )
    if e.timestamp > time.time() + max_clock_skew:
        raise ValidationError(
            f"{where}.timestamp {e.timestamp} is in the future; send Unix seconds, not milliseconds.",
            field=f"{where}.timestamp",
        )
    if not isinstance(e.context, Mapping):
        raise ValidationError(f"{where}.context must be a mapping.", field=f"{where}.context")
    check_json_value(e.context, f"{where}.context")
    if isinstance(e.value, int) or isinstance(e.timestamp, int):
        e = replace(e, value=float(e.value), timestamp=float(e.timestamp))
    return e
