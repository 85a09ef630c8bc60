"""One exception hierarchy for everything liverec raises on purpose.

Every error says what happened and why (``str(error)``), and carries ``fix``: what to
do about it, in words that hold for every way of calling liverec (Python, the CLI,
HTTP), so no front end shows another one's method names. A front end may say it in
its own terms instead (the CLI names its command or flag, the HTTP service its
endpoint). ``field`` names the offending input when there is one. The HTTP service
maps ``NotFoundError`` to 404, ``ConflictError`` to 409 and ``ValidationError`` to 422.

Examples
--------
>>> e = UnknownItemError("events[0].item 'b7' is not in the catalog.", field="events[0].item")
>>> e.field, e.fix
('events[0].item', 'add the item to the catalog first, or turn on the auto_create_items setting (LIVEREC_AUTO_CREATE_ITEMS=true).')
>>> ValidationError("k must be >= 1.", fix="ask for at least one item.").fix
'ask for at least one item.'
"""

from __future__ import annotations

from typing import ClassVar


class LiverecError(Exception):
    """Base class of every error liverec raises on purpose.

    ``fix`` is the given fix, else the class's ``default_fix``: never None.
    """

    default_fix: ClassVar[str] = "correct the input the message names and try again."

    def __init__(self, message: str = "", *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.fix: str = fix or self.default_fix


class ValidationError(LiverecError, ValueError):
    """Input is malformed: a field has a bad value. Nothing was stored.

    ``field`` names the offending field (e.g. ``"events[3].value"``).
    """

    default_fix: ClassVar[str] = "correct the value the message names and send it again; nothing was stored."


class UnknownKindError(ValidationError):
    """An event kind that is neither built in nor configured."""

    default_fix: ClassVar[str] = (
        "use one of the known event kinds, or add the kind to the kind_weights setting "
        "(LIVEREC_KIND_WEIGHTS='{\"share\": 1.0}')."
    )


class NotFoundError(LiverecError, KeyError):
    """A referenced item or user does not exist."""

    default_fix: ClassVar[str] = "check the id: it names nothing that exists."

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownItemError(NotFoundError):
    """An event or request names an item that is not in the catalog."""

    default_fix: ClassVar[str] = (
        "add the item to the catalog first, or turn on the auto_create_items setting "
        "(LIVEREC_AUTO_CREATE_ITEMS=true)."
    )


class ConflictError(LiverecError):
    """The request conflicts with the current state (e.g. a re-fit already running)."""

    default_fix: ClassVar[str] = "wait for the running operation to finish, then retry."


class StoreError(LiverecError):
    """The store cannot be opened or used (bad URL, newer schema, ...)."""

    default_fix: ClassVar[str] = "check the store URL and that the database server is running."


class NoMatchWarning(UserWarning):
    """A request's filters match no item, so its answer is empty for that reason.

    One warning per filter that matches nothing: ``message`` names it (``filter
    year={"gte": 3000} matches no item in the catalog``), ``field`` is the filter
    (``filters.year``; ``filters`` when the filters match only apart) and ``fix`` says
    what the items hold instead. ``str(warning)`` is the message followed by the fix.
    The HTTP service returns them in the response's ``warnings``.

    Examples
    --------
    >>> w = NoMatchWarning('filter lang="xx" matches no item in the catalog.', field="filters.lang",
    ...                    fix='use a value the items hold, e.g. "en".')
    >>> w.field, w.message, str(w).endswith(w.fix)
    ('filters.lang', 'filter lang="xx" matches no item in the catalog.', True)
    """

    default_fix: ClassVar[str] = "loosen or correct the filter."

    def __init__(self, message: str = "", *, field: str | None = None, fix: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.fix: str = fix or self.default_fix

    @property
    def message(self) -> str:
        """What matched nothing, without the fix."""
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}"


class NotFittedError(LiverecError, RuntimeError):
    """A learner was used before ``fit`` was called."""

    default_fix: ClassVar[str] = "fit the learner on a log before using it."
