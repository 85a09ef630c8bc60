"""Dataset loaders and the shipped goodbooks-10k catalog.

Examples
--------
>>> from liverec.data import load_goodbooks
>>> len(load_goodbooks(limit=3))
3
"""

from __future__ import annotations

from liverec.data.loaders import load_events, load_goodbooks, load_items, load_movielens, read_events, read_items

__all__ = ["load_events", "load_goodbooks", "load_items", "load_movielens", "read_events", "read_items"]
