"""Request and response models of the HTTP API (pydantic lives at this edge only).

The engine speaks dataclasses (:mod:`liverec.types`); these models only validate
JSON in and shape JSON out, and convert at the boundary.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..types import Event, Item
from ..validate import check_text

Id = Field(min_length=1, max_length=256, pattern=r"^[^\x00]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemIn(_Strict):
    id: str = Id
    text: str = Field("", max_length=100_000, description="What the language model reads")
    attributes: dict[str, Any] = Field(default_factory=dict, description="Filterable key/values; also fill the text template")

    def to_item(self) -> Item:
        return Item(id=self.id, text=self.text, attributes=self.attributes)


class ItemsIn(_Strict):
    items: list[ItemIn] = Field(min_length=1)


class ItemOut(BaseModel):
    id: str
    text: str
    attributes: dict[str, Any]


class ItemsChanged(BaseModel):
    received: int
    changed: int = Field(description="New or changed items (only those were encoded)")


class EventIn(_Strict):
    user: str = Id
    item: str = Id
    kind: str = Field("click", min_length=1, max_length=64, description="click, like, purchase, rating, skip, ... (Settings.kind_weights)")
    value: float = Field(1.0, description="Stars for rating; a multiplier for other kinds")
    timestamp: float | None = Field(None, description="Unix seconds; default = now")
    id: str | None = Field(None, min_length=1, max_length=256, description="Idempotency key: a repeated id is stored once")
    context: dict[str, Any] = Field(default_factory=dict)

    def to_event(self) -> Event:
        kw: dict[str, Any] = {}
        if self.timestamp is not None:
            kw["timestamp"] = self.timestamp
        if self.id is not None:
            kw["id"] = self.id
        return Event(user=self.user, item=self.item, kind=self.kind, value=self.value, context=self.context, **kw)


class EventsIn(_Strict):
    events: list[EventIn] = Field(min_length=1)


class EventsAccepted(BaseModel):
    received: int
    accepted: int = Field(description="Newly stored events (repeated ids are not stored twice)")
    duplicates: int


class ReasonOut(BaseModel):
    source: str
    contribution: float
    text: str
    because: list[str]


class RecommendationOut(BaseModel):
    item: str
    score: float
    propensity: float
    position: int
    title: str | None = None
    image_url: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict, description="The item's attributes (authors, year, ...)")
    explanation: str
    reasons: list[ReasonOut]


class RecommendQuery(BaseModel):
    """The query parameters of GET /recommendations, validated in one pass."""

    k: int = Field(10, ge=1, le=200)
    variant: str | None = Field(None, description="Force an A/B variant (default: the user's assignment)")
    policy: str | None = Field(None, description="Override the policy: greedy, epsilon, linucb, lints, qlearning, ...")
    diversity: float | None = Field(None, ge=0, le=1, description="MMR trade-off (0 = relevance only)")
    max_per_provider: int | None = Field(None, ge=1, le=1000)
    exclude_seen: bool | None = None
    exclude: list[str] = Field([], max_length=1000, description="Item ids never to return")
    filters: str | None = Field(None, max_length=10_000, description='JSON, e.g. {"year": {"gte": 1990}}')
    context: str | None = Field(None, max_length=10_000, description="JSON object logged with the impressions")
    explain: bool = Field(True, description="Include reasons (costs ~2 ms)")


class WarningOut(BaseModel):
    """Something about the request the caller should know, though it succeeded."""

    warning: str = Field(description="What kind: `no_match` (a filter that matches no item)")
    message: str
    field: str | None = Field(None, description="The request field it is about, e.g. `filters.year`")
    fix: str


class RecommendationsOut(BaseModel):
    user: str
    variant: str
    policy: str
    model_version: int
    cached: bool = Field(description="Served from the per-user response cache (invalidated by the user's next event)")
    took_ms: float
    items: list[RecommendationOut]
    warnings: list[WarningOut] = Field(
        default_factory=list,
        description="Empty unless something in the request shaped the answer, e.g. a filter that matches no item "
        "(one entry per such filter, naming it in `field`, with a `fix`)",
    )


class ExplanationOut(BaseModel):
    user: str
    item: str
    rank: int = Field(description="0-based rank the item would have among all items now")
    score: float
    explanation: str
    reasons: list[ReasonOut]


class InterestsIn(_Strict):
    interests: str | None = Field(None, max_length=10_000, description="Free text; null clears them")

    @field_validator("interests")
    @classmethod
    def _storable(cls, v: str | None) -> str | None:
        # The same refusal on every store: PostgreSQL cannot hold NUL, and no store
        # should keep text that is not valid Unicode.
        if v is not None:
            check_text(v, "interests")
        return v


class UserOut(BaseModel):
    user: str
    variant: str
    interests: str | None
    events: int
    recent: list[dict[str, Any]]


class ErasureOut(BaseModel):
    user: str
    deleted: dict[str, int]


class FitOut(BaseModel):
    started: bool
    running: bool
    model_version: int
    last_fit_seconds: float | None
    last_fit_error: str | None


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    items: int
    model_version: int
    fit_running: bool
    open_access: bool
    replication: str = Field("off", description="off (one replica), redis (notices flowing) or polling (Redis down)")


class VariantOut(BaseModel):
    name: str
    share: float
    policy: str
    served: int
    clicked: int
    ctr: float | None
    ctr_ci95: list[float]


class VariantsOut(BaseModel):
    variants: list[VariantOut]


class StatsOut(BaseModel):
    events_total: int
    items: int
    model_version: int
    bucket_seconds: float
    series: list[dict[str, Any]]
    variants: list[VariantOut]
    tuned: dict[str, Any] | None = Field(
        None, description="The configuration fit(tune=True) chose: sources, weights, feedback, validation score"
    )
    importing: list[int] | None = Field(
        None, description="[items added, items in all] while a catalog import runs in the background"
    )


class DPCountOut(BaseModel):
    epsilon: float
    sensitivity: int
    mechanism: str
    budget: float = Field(description="ε the caller's API key may spend in this window (Settings.dp_budget)")
    budget_spent: float = Field(description="ε this key spent in this window, this export included")
    budget_renews_at: float | None = Field(
        description="Unix time the key's budget starts afresh (Settings.dp_budget_window_s); null: never")
    counts: dict[str, int]


class DPVariantOut(BaseModel):
    epsilon: float
    sensitivity: int
    mechanism: str
    budget: float = Field(description="ε the caller's API key may spend in this window (Settings.dp_budget)")
    budget_spent: float = Field(description="ε this key spent in this window, this export included")
    budget_renews_at: float | None = Field(
        description="Unix time the key's budget starts afresh (Settings.dp_budget_window_s); null: never")
    variants: dict[str, dict[str, float | int | None]]


class ErrorOut(BaseModel):
    error: str
    message: str
    field: str | None = None
    fix: str | None = None


def str_or_none(v: Any) -> str | None:
    """A display attribute (title, cover URL) only when it is text: an item whose title is
    a number or a list must not break the response of everyone it is served to."""
    return v if isinstance(v, str) else None
