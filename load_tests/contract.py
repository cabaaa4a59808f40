"""The HTTP API contract (ARCHITECTURE.md "HTTP API") as msgspec structs plus the checks a decoder cannot express.

Every check raises `ContractViolation` with a message that says which rule broke; the Locust users turn it into a
request failure named "contract: ...", so the load run's report and exit status both show it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from typing import Annotated, Literal

import msgspec

NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Id = Annotated[int, msgspec.Meta(ge=0)]
QUERY_STATUSES = (200, 201)  # Litestar answers POST with 201 unless told otherwise; both are a success here
FALLBACK_PATTERN = re.compile(r"^[a-z][a-z0-9_:.\-]{0,63}$")  # "a short reason": cold_start, features_stale, ...


class ContractViolation(AssertionError):
    pass


class ScoredItem(msgspec.Struct):
    product_id: Id
    score: float
    reason: str


class Recommendations(msgspec.Struct):
    decision_id: NonEmpty
    model_version: NonEmpty
    items: list[ScoredItem]
    fallback: str | None


class Substitution(msgspec.Struct):
    product_id: Id
    candidates: list[ScoredItem]


class Substitutions(msgspec.Struct):
    decision_id: NonEmpty
    model_version: NonEmpty
    substitutions: list[Substitution]
    fallback: str | None


class Action(msgspec.Struct):
    action_type: Literal["coupon", "buy_again", "cross_sell"]
    score: float
    rationale: str
    campaign_id: Id | None = None
    coupon_upc: Id | None = None
    product_id: Id | None = None


class NextBestActions(msgspec.Struct):
    decision_id: NonEmpty
    model_version: NonEmpty
    actions: list[Action]
    fallback: str | None


class Accepted(msgspec.Struct):
    accepted: Annotated[int, msgspec.Meta(ge=0)]
    duplicate: bool = False  # the same batch had been written already (nothing written twice)


# Decoders are built once: msgspec caches the validation plan per decoder.
_recommendations = msgspec.json.Decoder(Recommendations)
_substitutions = msgspec.json.Decoder(Substitutions)
_next_best_actions = msgspec.json.Decoder(NextBestActions)
_accepted = msgspec.json.Decoder(Accepted)


def _fail(message: str) -> None:
    raise ContractViolation(message)


def _status(status: int, expected: Collection[int], body: bytes) -> None:
    if status not in expected:
        _fail(f"status {status}, expected {'/'.join(map(str, expected))}: {body[:200]!r}")


def _decode(decoder: msgspec.json.Decoder, body: bytes, what: str):
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        _fail(f"{what} body does not match the contract: {exc}")
    except msgspec.DecodeError as exc:
        _fail(f"{what} body is not JSON: {exc}: {body[:200]!r}")


def _fallback(value: str | None, must_fall_back: bool) -> None:
    if value is not None and not FALLBACK_PATTERN.match(value):
        _fail(f"fallback must be null or a short snake_case reason, got {value!r}")
    if must_fall_back and value is None:
        _fail("an unknown customer got fallback=null (expected a reason such as 'cold_start')")


def _scored(items: list[ScoredItem], k: int, what: str, forbidden: Collection[int] = ()) -> None:
    if len(items) > k:
        _fail(f"{what}: {len(items)} items for k={k}")
    ids = [item.product_id for item in items]
    if len(set(ids)) != len(ids):
        _fail(f"{what}: duplicate product ids {ids}")
    for item in items:
        if not math.isfinite(item.score):
            _fail(f"{what}: score {item.score} of product {item.product_id} is not finite")
        if item.product_id in forbidden:
            _fail(f"{what}: product {item.product_id} must not be offered here")


def check_recommendations(
    status: int,
    body: bytes,
    *,
    k: int,
    surface: str,
    exclude: Collection[int],
    bought: Collection[int],
    unknown_customer: bool = False,
) -> Recommendations:
    _status(status, QUERY_STATUSES, body)
    answer = _decode(_recommendations, body, "recommendations")
    _fallback(answer.fallback, unknown_customer)
    _scored(answer.items, k, f"recommendations[{surface}]", forbidden=set(exclude))
    if surface == "discover" and answer.fallback is None:
        already = [i.product_id for i in answer.items if i.product_id in bought]
        if already:
            _fail(f"discover offered products the customer already buys often: {already}")
    return answer


def check_substitutions(status: int, body: bytes, *, k: int, asked: Collection[int]) -> Substitutions:
    _status(status, QUERY_STATUSES, body)
    answer = _decode(_substitutions, body, "substitutions")
    _fallback(answer.fallback, False)
    asked_set = set(asked)
    seen = [s.product_id for s in answer.substitutions]
    if len(set(seen)) != len(seen) or not set(seen) <= asked_set:
        _fail(f"substitutions answered for {seen}, asked for {sorted(asked_set)}")
    for sub in answer.substitutions:
        # Every asked product is out of stock at the store: none of them may substitute for another.
        _scored(sub.candidates, k, f"substitutes of {sub.product_id}", forbidden=asked_set)
    return answer


def check_next_best_actions(status: int, body: bytes, *, k: int, unknown_customer: bool = False) -> NextBestActions:
    _status(status, QUERY_STATUSES, body)
    answer = _decode(_next_best_actions, body, "next-best-action")
    _fallback(answer.fallback, False)
    if len(answer.actions) > k:
        _fail(f"next-best-action: {len(answer.actions)} actions for k={k}")
    for action in answer.actions:
        if not math.isfinite(action.score):
            _fail(f"next-best-action: score {action.score} is not finite")
        if action.action_type == "coupon" and (action.campaign_id is None or action.coupon_upc is None):
            _fail(f"next-best-action: a coupon action without campaign_id/coupon_upc: {action}")
        if action.action_type in ("buy_again", "cross_sell") and action.product_id is None:
            _fail(f"next-best-action: a {action.action_type} action without product_id")
        if not action.rationale:
            _fail("next-best-action: an action without a rationale")
    return answer


def check_accepted(status: int, body: bytes, *, sent: int) -> Accepted:
    _status(status, (202,), body)
    answer = _decode(_accepted, body, "events")
    if answer.accepted != sent:
        _fail(f"events: accepted={answer.accepted}, sent {sent}")
    return answer
