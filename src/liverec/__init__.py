"""liverec: a self-hostable recommender that learns from every piece of feedback at once."""

from .errors import LiverecError
from .types import Event, Item, Reason, Recommendation

__all__ = ["Engine", "Event", "Item", "LiverecError", "Reason", "Recommendation", "Settings"]
__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing liverec must not pull torch or a database
    if name == "Engine":
        from .engine import Engine

        return Engine
    if name == "Settings":
        from .settings import Settings

        return Settings
    raise AttributeError(name)
