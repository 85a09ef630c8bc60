"""Optional parts of liverec and the one way to ask for them.

The embedded single-node engine (SQLite store, encoder, default learners, CLI, HTTP
service) needs only the core dependencies. A few features need a package from an
*extra*; their import sites call :func:`require`, which turns a missing package into
a :class:`MissingExtraError` naming the ``pip install`` command that fixes it.

Examples
--------
>>> require("json", "eval").__name__
'json'
>>> EXTRAS["redis"]
('redis',)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import LiverecError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: extra name -> the distributions it installs (kept equal to pyproject.toml).
EXTRAS: dict[str, tuple[str, ...]] = {
    "postgres": ("psycopg[binary]",),
    "redis": ("redis",),
    "onnx": ("onnx", "onnxruntime"),
    "eval": ("matplotlib", "vowpalwabbit"),
    "ray": ("ray",),
}


class MissingExtraError(LiverecError, ImportError):
    """A feature needs an optional package that is not installed.

    Also an :class:`ImportError`, so code that already falls back on a failed import
    keeps working. ``.extra`` is the extra to install, ``.module`` the missing module.
    """

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        super().__init__(message, fix=f"install it: {install_hint(extra)}")
        self.module, self.extra = module, extra
        self.name = module  # ImportError's attribute: the module that could not be imported


def install_hint(extra: str) -> str:
    """The command that installs ``extra``.

    Examples
    --------
    >>> install_hint("redis")
    "pip install 'liverec[redis]'"
    """
    return f"pip install 'liverec[{extra}]'"


def require(module: str, extra: str, feature: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` naming ``liverec[extra]``.

    Parameters
    ----------
    module
        The importable name (``"onnxruntime"``, ``"psycopg"``).
    extra
        The liverec extra that installs it (a key of :data:`EXTRAS`).
    feature
        What needs it, in words, for the message (default: ``module``).

    Examples
    --------
    >>> import sys
    >>> saved = sys.modules.get("redis")
    >>> sys.modules["redis"] = None  # as if not installed
    >>> try:
    ...     require("redis", "redis", "the Redis state")
    ... except MissingExtraError as exc:
    ...     print(exc)
    the Redis state needs the optional package 'redis', which is not installed. Install it with: pip install 'liverec[redis]'
    >>> if saved is None:
    ...     del sys.modules["redis"]
    ... else:
    ...     sys.modules["redis"] = saved
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; liverec's extras are {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        missing = getattr(exc, "name", None)
        # A package that is there but fails to import (a broken build, a missing shared
        # library) gets the cause in the message: reinstalling the extra may not be enough.
        cause = "" if missing in (module, top) else f" ({exc.__class__.__name__}: {exc})"
        raise MissingExtraError(
            f"{feature or module} needs the optional package {top!r}, which is not installed{cause}. "
            f"Install it with: {install_hint(extra)}",
            module=module,
            extra=extra,
        ) from exc
