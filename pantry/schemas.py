"""Request and response bodies of the HTTP API (ARCHITECTURE.md "HTTP API") as msgspec Structs: the server validates
and answers with them (serving/), and the client sends and decodes them (pantry/client.py).

Requests forbid unknown fields and carry their ranges in msgspec.Meta, so a bad body is a 400 that names the field
before any handler code runs; the same constraints appear in the OpenAPI schema at /schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from pantry.events import ProductId
from pantry.health import Durability, LiveFlow
from pantry.preferences import DIETARY_RULES, MAX_BRAND_LENGTH, MAX_BRANDS, MAX_NEVER_PAIRS, Dietary
from pantry.scoring import Action, Channel, Scored, Surface

Id = Annotated[int, msgspec.Meta(ge=0, le=2**62, description="a Complete Journey id")]
K = Annotated[int, msgspec.Meta(ge=1, le=100, description="how many items to return")]
SmallK = Annotated[int, msgspec.Meta(ge=1, le=20, description="how many items to return")]
# Why an answer is not the model's normal answer (serving/answers/pipeline.py says when each applies); null when it is.
Fallback = Literal["store_unavailable", "cold_start", "features_stale", "model_unavailable", "model_error"]


class _Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class RecommendationRequest(_Request):
    customer_id: Id
    store_id: Id | None = None
    k: K = 10
    surface: Surface = "for_you"
    exclude_product_ids: Annotated[list[Id], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)
    as_of: datetime | None = None


class RecommendationResponse(msgspec.Struct):
    decision_id: str
    model_version: str
    items: list[Scored]
    fallback: Fallback | None


class SubstitutionRequest(_Request):
    customer_id: Id
    store_id: Id
    product_ids: Annotated[list[Id], msgspec.Meta(min_length=1, max_length=50)]
    k: SmallK = 3
    as_of: datetime | None = None


class Substitution(msgspec.Struct):
    product_id: int
    candidates: list[Scored]


class SubstitutionResponse(msgspec.Struct):
    decision_id: str
    model_version: str
    substitutions: list[Substitution]
    fallback: Fallback | None
    # why items have no candidates although nothing failed, e.g. "the shopper accepts no substitutions"
    # (their preferences); null otherwise. Added after the first release: older clients ignore it.
    reason: str | None = None


class NextBestActionRequest(_Request):
    customer_id: Id
    store_id: Id | None = None
    channel: Channel = "app"
    k: SmallK = 3
    as_of: datetime | None = None


class NextBestActionResponse(msgspec.Struct):
    decision_id: str
    model_version: str
    actions: list[Action]
    fallback: Fallback | None


# ---- /v1/customers/{customer_id}/preferences (pantry/preferences.py, serving/preferences.py) -------------------

Brand = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_BRAND_LENGTH, description="a brand, e.g. Private")]


class CustomerPreferences(_Request):
    """What a shopper set; a PUT replaces the whole set. Defaults: substitutions allowed, nothing else."""
    substitutions: Literal["allow", "none"] = "allow"
    # [original, substitute]: never offer that substitute for that original
    never: Annotated[list[tuple[ProductId, ProductId]], msgspec.Meta(max_length=MAX_NEVER_PAIRS)] = msgspec.field(
        default_factory=list)
    preferred_brands: Annotated[list[Brand], msgspec.Meta(max_length=MAX_BRANDS)] = msgspec.field(
        default_factory=list)
    dietary: Annotated[list[Dietary], msgspec.Meta(max_length=len(DIETARY_RULES))] = msgspec.field(
        default_factory=list)


class StoredPreferences(msgspec.Struct):
    customer_id: int
    preferences: CustomerPreferences
    updated_at: datetime | None  # when they were last set (wall clock); null: never set, the defaults apply


# ---- /v1/features: Feast's /get-online-features shape, plus ages ----------------------------------------------

FeatureRef = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_]+:[A-Za-z0-9_]+$", description="view:feature")]


class FeaturesRequest(_Request):
    entities: Annotated[
        dict[str, Annotated[list[Id], msgspec.Meta(min_length=1, max_length=1000)]],
        msgspec.Meta(min_length=1, max_length=8),  # pantry has 4 entities; a client may send them all
    ]
    feature_service: str | None = None
    features: Annotated[list[FeatureRef], msgspec.Meta(max_length=200)] = msgspec.field(default_factory=list)
    full_feature_names: bool = False
    include_feature_view_version_metadata: bool = False


class FeaturesMetadata(msgspec.Struct):
    feature_names: list[str]


class FeatureVector(msgspec.Struct):
    values: list[Any]
    statuses: list[str]
    event_timestamps: list[str]
    ages_s: list[float | None]  # pantry's addition: seconds between each value's event time and `now`


class FeaturesResponse(msgspec.Struct):
    metadata: FeaturesMetadata
    results: list[FeatureVector]


# ---- Feast's feature-server writes (/write-to-online-store, /push: serving/feast_server.py) -----------------------
# Unknown fields are ignored, as Feast's server does: a newer Feast client may send fields this one does not know.

FeastColumn = Annotated[list[Any], msgspec.Meta(max_length=10_000)]
FeastFrame = Annotated[dict[str, FeastColumn], msgspec.Meta(min_length=1, max_length=64,
                                                             description="columnar rows: join keys, features, "
                                                                         "event_timestamp (created is ignored)")]


class FeastWriteRequest(msgspec.Struct, kw_only=True):
    feature_view_name: Annotated[str, msgspec.Meta(max_length=128)]
    df: FeastFrame
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class FeastPushRequest(msgspec.Struct, kw_only=True):
    push_source_name: Annotated[str, msgspec.Meta(max_length=128)]
    df: FeastFrame
    to: Annotated[str, msgspec.Meta(max_length=32, description="online | offline | online_and_offline")] = "online"
    allow_registry_cache: bool = True
    transform_on_write: bool = True


class FeastWriteResult(msgspec.Struct):
    rows: int  # rows in the request (for one view)
    written_online: int  # rows written to the online store (the newest per entity, not older than the stored one)
    skipped_older: int  # rows not written online: older than the stored row, or than another of the request
    logged: int  # rows appended to the offline feature log


# ---- errors: RFC 9457 problem details (serving/problems.py answers with them) ---------------------------------


class EventError(msgspec.Struct):
    index: int  # the event's position in the batch
    reason: str


class Problem(msgspec.Struct, omit_defaults=True):
    status: int
    title: str
    detail: str
    type: str = "about:blank"
    instance: str | None = None
    errors: list[EventError] | None = None  # POST /v1/events: every invalid event of the batch, none accepted
    extra: list[Any] | None = None  # a body that failed validation: each field and its rule


# ---- /v1/events ----------------------------------------------------------------------------------------------


class EventsAccepted(msgspec.Struct):
    accepted: int  # events in the batch, all in the stream
    # true: this exact batch had already been written (within events_dedup_window_s) and nothing was written again
    duplicate: bool = False


# ---- health and admin ----------------------------------------------------------------------------------------


class Health(msgspec.Struct):
    status: str


class ServiceClock(msgspec.Struct):
    """GET /v1/clock (and in /readyz): the clock an event's `ts` is judged against (pantry.clock.max_accepted_ts)."""

    mode: Literal["event", "wall"]
    now: datetime  # the service's now: the watermark in event mode (wall time before any event), else wall time
    watermark: datetime | None  # the newest event time the stream has processed
    wall: datetime
    skew_allowed_s: float  # how far past `now` an event's ts may be
    max_accepted_ts: datetime  # an event with a later ts is rejected (400 here, a dead letter in the flow)


class Readiness(msgspec.Struct):
    status: str
    redis: bool
    models: dict[str, str | None]
    layout: bool
    # the live dataflow (its heartbeat and lag in Redis) and what a 202 on /v1/events guarantees (pantry/health.py)
    live_flow: LiveFlow | None = None
    durability: Durability | None = None
    reasons: list[str] = msgspec.field(default_factory=list)  # why not ready (empty when ready)
    clock: ServiceClock | None = None  # the service clock (None when Redis cannot be reached)


class CampaignApproval(msgspec.Struct, omit_defaults=True):
    campaign_id: int
    campaign_type: str
    start_date: str
    end_date: str
    status: Literal["pending", "approved", "rejected"]
    by: str | None = None
    at: str | None = None
    note: str | None = None


class ApprovalRequest(_Request):
    note: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class ModelVersions(msgspec.Struct):
    name: str
    active: str | None
    loaded: str | None
    versions: list[str]


class ActivateRequest(_Request):
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.\-]+$")]


class AuditRecord(msgspec.Struct):
    """One audit log entry (pantry.audit.AuditEntry) with its stream id."""

    id: str
    at: float
    actor: str
    action: str
    target: str
    before: Any = None
    after: Any = None
    note: str | None = None


class AuditPage(msgspec.Struct):
    entries: list[AuditRecord]
    next_after: str | None  # pass as `after` for the next page; null when this page is the last


class CustomerForgotten(msgspec.Struct):
    """What `POST /admin/customers/{id}/forget` removed, per store (pantry.erasure.forget)."""

    customer_id: int
    removed: dict[str, int]
