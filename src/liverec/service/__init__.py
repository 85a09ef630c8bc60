"""The HTTP service: FastAPI app, API keys, A/B variants, DP exports, the live page."""

from .app import create_app

__all__ = ["create_app"]
