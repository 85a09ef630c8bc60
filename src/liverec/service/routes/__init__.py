"""One APIRouter per resource; ``create_app`` includes them all."""

from __future__ import annotations

from . import admin, events, items, recommendations, users, variants

# Matched in this order: the hot paths (recommendations, events) and the probes (health, ready) first.
ROUTERS = [recommendations.router, events.router, admin.router, items.router, users.router, variants.router]

__all__ = ["ROUTERS"]
