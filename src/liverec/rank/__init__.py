"""From scores to a served slate: retrieval, fusion, filters, explanations."""

from .index import VectorIndex, top_k
from . import rl  # noqa: F401  (registers RL policies)

__all__ = ["VectorIndex", "top_k"]
