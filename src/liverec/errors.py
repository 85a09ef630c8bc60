"""One exception hierarchy for everything liverec raises on purpose.

Every message says what happened, why, and how to fix it. The HTTP service maps
``NotFoundError`` to 404, ``ConflictError`` to 409 and ``ValidationError`` to 422.
"""

from __future__ import annotations


class LiverecError(Exception):
    """Base class of every error liverec raises on purpose."""


class ValidationError(LiverecError, ValueError):
    """Input is malformed: a field has a bad value. Nothing was stored.

    ``field`` names the offending field (e.g. ``"events[3].value"``).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownKindError(ValidationError):
    """An event kind that is neither built in nor configured."""


class NotFoundError(LiverecError, KeyError):
    """A referenced item or user does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownItemError(NotFoundError):
    """An event or request names an item that is not in the catalog."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ConflictError(LiverecError):
    """The request conflicts with the current state (e.g. a re-fit already running)."""


class StoreError(LiverecError):
    """The store cannot be opened or used (bad URL, newer schema, ...)."""


class NotFittedError(LiverecError, RuntimeError):
    """A learner was used before ``fit`` was called."""
