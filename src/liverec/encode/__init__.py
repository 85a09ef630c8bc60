"""Text -> vectors: the pretrained encoder, its durable cache, and the in-memory catalog."""

from .cache import CachedEncoder
from .catalog import Catalog, ItemIds
from .encoder import Encoder, SentenceTransformerEncoder
from .text import render_text, text_hash

__all__ = ["CachedEncoder", "Catalog", "Encoder", "ItemIds", "SentenceTransformerEncoder", "render_text", "text_hash"]
