"""/items: create or update in bulk, search, get, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query

from .. import schemas as S
from ..deps import READ, WRITE, Svc
from ..params import batch_limit, path_id

router = APIRouter(tags=["items"])
ItemId = Annotated[str, Path(max_length=256)]


@router.post("/items", response_model=S.ItemsChanged, dependencies=[WRITE])
def post_items(body: S.ItemsIn, svc: Svc) -> S.ItemsChanged:
    """Create or update items in bulk; only new or changed text is encoded."""
    batch_limit(len(body.items), svc.settings.max_batch, "items")
    changed = svc.engine.add_items([i.to_item() for i in body.items])
    if changed:
        svc.published("items")
    return S.ItemsChanged(received=len(body.items), changed=changed)


@router.get("/items", response_model=list[S.ItemOut], dependencies=[READ])
def search_items(
    svc: Svc,
    q: Annotated[str, Query(max_length=200, description="Case-insensitive text to look for")] = "",
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> list[S.ItemOut]:
    """Items whose text contains ``q`` (catalog order); no ``q`` = the first items."""
    return [S.ItemOut(id=it.id, text=it.text, attributes=dict(it.attributes))
            for it in svc.engine.search_items(q, limit)]


@router.get("/items/{item_id}", response_model=S.ItemOut, dependencies=[READ], responses={404: {"model": S.ErrorOut}})
def get_item(item_id: ItemId, svc: Svc) -> S.ItemOut:
    path_id(item_id, "item_id")
    it = svc.engine.get_item(item_id)
    return S.ItemOut(id=it.id, text=it.text, attributes=dict(it.attributes))


@router.delete("/items/{item_id}", dependencies=[WRITE], responses={404: {"model": S.ErrorOut}})
def delete_item(item_id: ItemId, svc: Svc) -> dict[str, int]:
    """Remove an item from the catalog (its past events stay in the log)."""
    path_id(item_id, "item_id")
    n = svc.engine.remove_items([item_id])
    if n == 0:
        raise HTTPException(404, f"unknown item {item_id!r}: it is not in the catalog.")
    svc.published("items")
    return {"deleted": n}
