"""Durable storage: the truth everything else is rebuilt from."""

from .sql import Impression, Store, StoredItem

__all__ = ["Impression", "Store", "StoredItem"]
