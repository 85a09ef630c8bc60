"""One APIRouter per resource; ``create_app`` includes them all."""

from __future__ import annotations

from . import admin, events, items, recommendations, users, variants

ROUTERS = [admin.router, items.router, events.router, recommendations.router, users.router, variants.router]

__all__ = ["ROUTERS"]
