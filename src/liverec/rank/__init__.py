"""From scores to a served slate: retrieval, fusion, filters, explanations."""

from .index import VectorIndex, top_k

__all__ = ["VectorIndex", "top_k"]
