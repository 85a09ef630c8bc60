"""Settings: one pydantic-settings class, passed in explicitly, never read from a global.

Every field can be set from a ``LIVEREC_*`` environment variable (e.g.
``LIVEREC_STORE=sqlite:///books.db``); dict fields take JSON
(``LIVEREC_KIND_WEIGHTS='{"share": 1.5}'``).

Examples
--------
>>> from liverec.settings import Settings
>>> Settings(fusion_weights={"content": 1.0}).fusion_weights["content"]
1.0
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .types import DEFAULT_KIND_WEIGHTS

DEFAULT_TEXT_TEMPLATE = "{title}\nby {authors}\n{text}\nGenres: {genres}\nTags: {tags}"


class Settings(BaseSettings):
    """Everything an operator can tune. Defaults are what liverec measured best."""

    model_config = SettingsConfigDict(env_prefix="LIVEREC_", extra="forbid", frozen=True)

    store: str = Field("sqlite://", description="Store URL: sqlite:///file.db, sqlite:// or postgresql://...")
    # --- encode
    encoder_model: str | None = Field(
        None, description="sentence-transformers model name or local path; None = shipped all-MiniLM-L6-v2"
    )
    encoder_batch_size: int = Field(64, ge=1)
    encoder_backend: Literal["torch", "onnx"] = Field(
        "torch", description="torch (sentence-transformers) or onnx (ONNX Runtime; ~1.5x faster on CPU, same "
        "vectors to ~1e-6; the model is exported once into ~/.cache/liverec/onnx)"
    )
    vector_cache: str | None = Field(
        None, description="The machine's vector cache, shared by every store on this machine so a text is "
        "encoded once per model: None = ~/.cache/liverec/vectors.db (platformdirs), a file path or store "
        "URL = another, 'off' = none (each store keeps only its own vectors). Users' interests never enter it"
    )
    encoder_progress: bool = Field(True, description="Progress bar when encoding many texts")
    text_template: str = Field(
        DEFAULT_TEXT_TEMPLATE,
        description="Item text for the LM: {text} and {attribute} placeholders; "
        "a line whose placeholders are all empty is dropped",
    )
    # --- feedback
    kind_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_KIND_WEIGHTS),
        description="Weight per event kind; add custom kinds here. Negative = pushes away.",
    )
    rating_center: float = Field(3.0, description="Star value that counts as neutral")
    rating_scale: float = Field(2.0, gt=0, description="Stars away from the center that make valence ±1")
    rating_engagement: float = Field(
        1.0, ge=0, description="What any rating counts as evidence of engagement (x the rating kind weight); "
        "Engine.fit(tune=True) searches it"
    )
    rating_valence: float = Field(
        0.5, ge=0, description="How much stars move a rating's weight: weight = engagement + valence_weight * "
        "clip((stars - center) / scale, -1, 1). 0 = every rating counts the same; engagement 0 + valence 1 = "
        "low ratings push away. Engine.fit(tune=True) searches it"
    )
    rating_min: float = 0.0
    rating_max: float = 5.0
    # --- learners
    profile_half_life_days: float = Field(30.0, gt=0)
    interest_weight: float = Field(2.0, ge=0, description="Declared interests count like this many clicks")
    short_term_decay: float = Field(0.7, gt=0, le=1, description="Per-event decay of the session-intent profile")
    short_term_weight: float = Field(0.5, ge=0, le=1, description="Share of session intent vs long-term taste")
    trending_half_life_hours: float = Field(168.0, gt=0)
    popularity_prior: str | None = Field(
        None, description="Numeric item attribute seeding popularity for cold start (e.g. ratings_count)"
    )
    sources: dict[str, dict] = Field(
        default_factory=lambda: {
            "content": {}, "trending": {}, "ease": {}, "als": {}, "itemknn": {}, "transition": {}, "sessionknn": {},
            "tfidf": {}, "interests": {},
        },
        description="Learners that score candidates (registry name -> hyperparameters)",
    )
    fusion_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "content": 0.3, "trending": 0.03, "ease": 1.0, "als": 0.5, "itemknn": 0.5, "transition": 1.0,
            # Learned from every event but served only when fit(tune=True) finds it helps.
            "sessionknn": 0.0, "tfidf": 0.3, "interests": 3.0,
        },
        description="Starting weight per source (a source without one gets 1.0); fit(tune=True) searches "
        "them on the engine's own log and the online fusion keeps learning them per click",
    )
    fusion_learning_rate: float | None = Field(
        None, ge=0, le=1,
        description="Per-event learning rate of the fusion weights: a click on a served item moves weight "
        "toward the sources that ranked it above the items shown over it (0 = fixed weights). Unset: 0.05 "
        "while the weights are the starting ones, 0 once fit(tune=True) has fitted them to the log",
    )
    refit_growth: float = Field(
        0.25, ge=0, description="Fit every source again, in the background, once the events learned since the last "
        "fit reach this fraction of the events that fit read (0 = fit only when asked): per-event learning keeps "
        "every source current, a periodic re-fit keeps the batch-fitted ones (EASE, ALS) from drifting"
    )
    background_fit_process: bool = Field(
        True, description="Background fits (the periodic re-fit, POST /fit) fit the sources in a child process at a "
        "lower CPU priority, so requests keep their cores and the GIL; False = in a thread of this process"
    )
    refit_min_events: int = Field(
        10_000, ge=1, description="Re-fits start only after a fit that read at least this many events"
    )
    bulk_fit_events: int = Field(
        5_000, ge=0, description="record_many: a batch of at least this many new events that is also at least "
        "as large as everything the models have learned (a bulk import) is learned by one fit from the log, not "
        "event by event: same promise (the call returns once the models reflect it), a fraction of the time "
        "(0 = always event by event)"
    )
    tune_budget_seconds: float = Field(
        300.0, gt=0, description="Time budget of fit(tune=True) / `liverec tune`: the search stops starting "
        "trials after this many seconds"
    )
    tune_next_share: float = Field(
        0.5, ge=0, le=1, description="What fit(tune=True) optimises: this share of HR@10 of each user's next "
        "item (asked as a live engine is asked) plus the rest of NDCG@10 of all their held-out later items. "
        "0.5 serves both; lower it where lists are shown once for a while (a weekly e-mail, a landing page), "
        "raise it where every event is followed by a new list (a feed, a session)"
    )
    # --- retrieval and ranking
    exact_index_max_items: int = Field(20_000, ge=0, description="Above this, retrieval uses ANN (usearch HNSW)")
    candidates_per_source: int | None = Field(
        None, ge=1, description="Candidates each source retrieves above exact_index_max_items (two-stage "
        "serving); unset: the smallest count whose served lists match the exact path's on the engine's own "
        "recent users (recall@10 >= candidates_recall), measured after each fit, 300 before the first"
    )
    candidates_recall: float = Field(
        0.98, gt=0, le=1, description="Served recall@10 against the exact path that the calibrated "
        "candidate count must reach on the measured users, less one standard error (see candidates_per_source)"
    )
    ann_connectivity: int = Field(16, ge=4, description="HNSW graph degree (usearch)")
    ann_expansion_search: int = Field(128, ge=8, description="HNSW search breadth: recall vs latency")
    ann_dtype: Literal["i8", "f16", "f32"] = Field(
        "i8", description="Precision of the item vectors inside the HNSW graph (found items are re-scored at "
        "full precision): i8 searches ~4x faster than f32 with the same candidates, in a quarter of the memory"
    )
    history_length: int = Field(50, ge=1, description="Recent events kept per user in memory")
    user_tables: bool = Field(
        True, description="Whether sources that can read a user from the user's recent events (content, tfidf, "
        "als, ease) also keep a table per user. False: they keep nothing per user and read the last "
        "history_length events per request, so a replica's memory stops growing with users through them (fleet "
        "mode); a user with a longer history is then read from those events only. The neighbour sources (itemknn, "
        "transition, sessionknn) keep theirs unless their own source settings say {\"user_tables\": false}: without "
        "tables their item side learns at fits only (docs/scaleout.md: what changes, and the measured quality)"
    )
    exclude_seen: bool = True
    diversity: float = Field(0.0, ge=0, le=1, description="MMR trade-off: 0 = relevance only")
    provider_attribute: str | None = Field(None, description="Item attribute naming the provider (e.g. authors)")
    max_per_provider: int | None = Field(None, ge=1, description="Exposure cap per provider in one slate")
    max_per_title_word: int | None = Field(
        3, ge=1, description="At most this many items of one list share a title word (3+ letters, not a stop "
        "word), so a list does not collapse on one word ('House'); others fill in only if too few remain. None = off"
    )
    blocklist: list[str] = Field(default_factory=list, description="Item ids never recommended")
    blocked_terms: list[str] = Field(
        default_factory=list, description="Items whose text contains any of these (case-insensitive) are never recommended"
    )
    # --- exploration policies
    policies: dict[str, dict] = Field(
        default_factory=lambda: {"epsilon": {"epsilon": 0.1}, "linucb": {}, "lints": {}},
        description="Exploring policies by name -> hyperparameters ('type' picks the class); greedy is built in",
    )
    default_policy: str = Field("greedy", description="Policy used when a request names none")
    reward_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "view": 0.0, "click": 1.0, "like": 1.0, "add_to_cart": 1.0, "purchase": 1.0,
            "rating": 1.0, "skip": 0.0, "dislike": -1.0,
        },
        description="Reward of a served item per event kind (rating: times the sign-clipped rating weight)",
    )
    seed: int = 0
    # --- ingestion
    auto_create_items: bool = Field(False, description="Create unknown items named by events (text empty)")
    max_clock_skew_seconds: float = Field(86_400.0, ge=0)
    log_impressions: bool = Field(True, description="Log every served slate with propensities")
    impression_flush_seconds: float = Field(
        0.0, ge=0, le=60,
        description="0 = write impressions inside recommend(); > 0 = a background writer batches them "
        "every this many seconds (events are never buffered; a crash loses at most this window of "
        "impressions). `liverec serve` uses 0.25 unless set",
    )
    max_event_value: float = Field(
        1e6, gt=0, le=1e12, description="Largest |value| of an event (a multiplier; ratings are bounded by "
        "rating_min/rating_max): one caller's huge value must not swamp or overflow shared scores"
    )
    # --- HTTP service (liverec serve)
    open_access: bool = Field(
        False, description="Serve without API keys. Only for a demo on localhost: anyone can write and erase"
    )
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="Extra API keys from the environment: SHA-256 hex of the key -> role "
        "(read, write, admin). Keys made with `liverec keys create` live hashed in the store",
    )
    max_body_bytes: int = Field(2_000_000, ge=1024, description="Largest request body accepted (413 above)")
    max_batch: int = Field(1000, ge=1, description="Most items or events in one request (413 above)")
    http_fast_path: bool = Field(
        True, description="Answer well-formed POST /events and GET /recommendations without FastAPI's per-request "
        "routing and dependency machinery (the same answers; anything else goes through the full route). "
        "false = every request through FastAPI"
    )
    variants: dict[str, dict] = Field(
        default_factory=dict,
        description="A/B variants: name -> {share, policy, diversity, weights, max_per_provider}; users are "
        "assigned by a hash of (ab_salt, user). Empty = one variant 'default' with default_policy",
    )
    ab_salt: str = Field("liverec-ab", description="Change it to reshuffle every user's variant")
    response_cache_size: int = Field(
        20_000, ge=0, description="Greedy responses cached per (user, request); a user's event, a re-fit or a "
        "catalog change invalidates them"
    )
    response_cache_seconds: float = Field(
        300.0, ge=0, description="Oldest a cached response may be. The user's own events, interests, erasure, "
        "a re-fit or a catalog change end it at once; this bounds how long other users' events (trending, "
        "co-occurrence) can take to show in an idle user's list"
    )
    workers: int = Field(
        1, ge=1, le=64, description="Server processes on this node (liverec serve --workers); above 1 every "
        "read first catches up with what the other processes wrote (read-your-writes)"
    )
    state: str | None = Field(
        None, description="Redis URL (redis://host:6379/0) for running several replicas over one store: "
        "update fan-out, fleet-wide A/B counters and per-user online state in Redis (fleet mode: replica "
        "memory does not grow with the users' recent events). None = a single replica, users in memory"
    )
    state_prefix: str = Field(
        "liverec", description="Prefix of every Redis key and channel: one per deployment sharing a Redis"
    )
    sync_seconds: float = Field(
        1.0, ge=0, description="Replicas also poll the shared log this often (the fallback when Redis is down)"
    )
    snapshot_dir: str | None = Field(
        None, description="Directory (any mounted path) for model snapshots; None = beside a SQLite file "
        "(<file>.snapshots: SQLite's one writer would otherwise wait for every snapshot), in the store itself for "
        "PostgreSQL. A restart or a new replica loads the newest compatible snapshot and replays only the log after it"
    )
    snapshot_keep: int = Field(3, ge=0, description="Snapshots kept (older ones are pruned); 0 = no snapshots")
    snapshot_every_events: int = Field(
        100_000, ge=0, description="Write a snapshot after this many new events in the log (0 = not by count); "
        "every fit also writes one"
    )
    snapshot_interval_s: float = Field(
        3600.0, ge=0, description="Write a snapshot this often when the log has grown (0 = not by time)"
    )
    dp_epsilon: float = Field(1.0, ge=0.001, le=100, description="Privacy budget of one differentially private export")
    dp_max_contributions: int = Field(
        20, ge=1, description="Most items (or served/clicked items per variant) one user adds to a DP export"
    )
    dp_budget: float = Field(
        10.0, gt=0, description="Total ε the DP exports of one API key may spend in one budget window (each "
        "export spends its ε; refused with 429 once spent). Privacy loss adds up over exports, keys and "
        "windows: raise it knowingly"
    )
    dp_budget_window_s: float = Field(
        0.0, ge=0, description="Length of a DP budget window in seconds: each key's budget starts afresh when a "
        "new window begins (windows start at multiples of it since 1970). 0 = one window for ever"
    )

    @field_validator("kind_weights")
    @classmethod
    def _kinds_finite(cls, v: dict[str, float]) -> dict[str, float]:
        merged = dict(DEFAULT_KIND_WEIGHTS)
        merged.update(v)
        return merged
