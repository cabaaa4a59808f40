"""Shopper preferences in the online store: `PUT|GET /v1/customers/{customer_id}/preferences` write and read one row of
the `customer_preferences` feature view (feature_repo/features.py) in Feast's Redis layout, so the answers read it in
the same round trip as the customer's other views (serving/answers/pipeline.py) and `pantry customers forget` erases
it with them (pantry/erasure.py: every view keyed by the customer).

The row is written through the Feast write path (serving/feast_server.py: schema check, Feast's order rule) at wall
time, online only: a preference is the shopper's current choice, not a feature with a history to train on, so it is
not appended to the offline feature log.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pantry.featurestore.reader import RowRead
from pantry.schemas import CustomerPreferences, StoredPreferences
from serving.feast_server import checked_rows, write
from serving.redis_guard import StoreUnavailable
from serving.services import Services

VIEW = "customer_preferences"


class Preferences(NamedTuple):
    """A shopper's preferences as the answers use them (sets and lower-cased brands)."""
    substitutions: str = "allow"
    never: frozenset[tuple[int, int]] = frozenset()  # (original, substitute)
    preferred_brands: tuple[str, ...] = ()  # lower-cased (serving/catalogue.py keys brands so)
    dietary: tuple[str, ...] = ()


NO_PREFERENCES = Preferences()


def from_row(values: Mapping[str, Any] | None) -> Preferences:
    """The preferences of a `customer_preferences` row (None: none set)."""
    if not values:
        return NO_PREFERENCES
    originals = values.get("never_original_ids") or ()
    substitutes = values.get("never_substitute_ids") or ()
    return Preferences(
        substitutions="none" if values.get("substitutions") == "none" else "allow",
        never=frozenset(zip(originals, substitutes, strict=False)),
        preferred_brands=tuple(dict.fromkeys(b.lower() for b in values.get("preferred_brands") or ())),
        dietary=tuple(dict.fromkeys(values.get("dietary") or ())),
    )


def body_of(values: Mapping[str, Any] | None) -> CustomerPreferences:
    """The preferences of a row as they were set (what GET returns)."""
    if not values:
        return CustomerPreferences()
    pairs = zip(values.get("never_original_ids") or (), values.get("never_substitute_ids") or (), strict=False)
    return CustomerPreferences(substitutions="none" if values.get("substitutions") == "none" else "allow",
                               never=[(int(a), int(b)) for a, b in pairs],
                               preferred_brands=list(values.get("preferred_brands") or ()),
                               dietary=list(values.get("dietary") or ()))


def read_request(customer_id: int) -> list[RowRead]:
    """The read of a customer's preferences row, for `svc.read` (nothing before `feast apply` adds the view)."""
    return [RowRead(VIEW, (customer_id,))]


def available(svc: Services) -> bool:
    return svc.reader is not None and VIEW in svc.reader.layout.views


def _view(svc: Services):
    if not available(svc):
        raise StoreUnavailable(f"feature view {VIEW!r} is not in the Feast registry (run `pantry feast apply`)")
    return svc.reader.layout.views[VIEW]


async def put(svc: Services, customer_id: int, body: CustomerPreferences) -> StoredPreferences:
    """Replace the customer's preferences (duplicates dropped, order kept)."""
    view = _view(svc)
    never = list(dict.fromkeys(body.never))
    stored = CustomerPreferences(substitutions=body.substitutions, never=never,
                                 preferred_brands=list(dict.fromkeys(body.preferred_brands)),
                                 dietary=list(dict.fromkeys(body.dietary)))
    now = datetime.now(UTC)
    rows = checked_rows(view, {
        "customer_id": [customer_id],
        "substitutions": [stored.substitutions],
        "never_original_ids": [[a for a, _ in never]],
        "never_substitute_ids": [[b for _, b in never]],
        "preferred_brands": [stored.preferred_brands],
        "dietary": [stored.dietary],
        "event_timestamp": [now.isoformat()],
    })
    await write(svc, rows, offline=False)
    return StoredPreferences(customer_id, stored, now)


async def get(svc: Services, customer_id: int) -> StoredPreferences:
    _view(svc)
    result = await svc.read(read_request(customer_id), None)
    row = result.rows[0]
    return StoredPreferences(customer_id, body_of(row.raw_values), row.ts)
