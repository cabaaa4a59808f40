"""The contract between trained models (training/) and the service (serving/).

Training writes artifacts under `artifacts/models/<name>/<version>/`; the scorers of pantry/models/ (recommender.py,
substitutions.py, next_best_action.py) implement these protocols over them. Serving loads the ACTIVE versions once
per process (and again on a switch), reads the online features a request needs in one round trip, and calls the
models with them. Models never touch Redis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

import msgspec

MODEL_NAMES = ("recommender", "substitutions", "next_best_action")
# complete_basket: what goes with the cart and the session (customer_session), else for_you
Surface = Literal["for_you", "buy_again", "discover", "complete_basket"]
Channel = Literal["app", "web", "email", "in_store"]
ActionType = Literal["coupon", "buy_again", "cross_sell"]

# view name -> decoded online row ({feature: value}), or None when missing or stale (older than the view's TTL)
Features = Mapping[str, Mapping[str, Any] | None]


class Scored(msgspec.Struct, frozen=True):
    product_id: int
    score: float
    reason: str  # short and human-readable: "bought 12 times", "similar to what you buy", "popular at your store"


class Action(msgspec.Struct, frozen=True, omit_defaults=True):
    action_type: ActionType
    score: float
    rationale: str
    campaign_id: int | None = None
    coupon_upc: int | None = None
    product_id: int | None = None


class ModelError(Exception):
    """An artifact is missing, corrupt (sha256 mismatch) or unusable."""


class RecommenderModel(Protocol):
    version: str

    def recommend(
        self,
        features: Features,  # customer_session, customer_activity, customer_repertoire, customer_embedding
        *,
        customer_id: int,
        k: int,
        surface: Surface,
        exclude: frozenset[int],  # asked-for exclusions plus the session's cart
        store_id: int | None,  # when given: only items sold at that store recently
    ) -> list[Scored]: ...

    def popular(self, *, k: int, store_id: int | None, exclude: frozenset[int]) -> list[Scored]:
        """The fallback: store (or global) popularity snapshot, no features needed."""
        ...


class SubstitutionModel(Protocol):
    version: str

    # Batched per request: an order asks for every missing item at once, and one ranker call for all of them costs
    # far less than one per item.

    def candidate_pools(self, product_ids: Sequence[int]) -> list[list[int]]:
        """Per product: products that could replace it (same product type, else category), best first, bounded."""
        ...

    def own_candidates(self, product_ids: Sequence[int], *, customer_id: int, features: Features) -> list[list[int]]:
        """Per product: products of its type the customer has bought (the model's history of them and the customer
        views), most bought first: ranked with the pool, whose customer-independent order may leave them out."""
        ...

    def rank(
        self,
        product_ids: Sequence[int],
        candidates: Sequence[Sequence[int]],  # per product
        *,
        customer_id: int,
        features: Features,  # customer views (customer_repertoire, customer_session, ...)
        stock: Mapping[int, Mapping[str, Any] | None],  # candidate -> its store_product row at the store
        k: int,
        feedback: Any = None,  # pantry.models.substitution_feedback.Feedback: what shoppers said of substitutes
    ) -> list[list[Scored]]: ...


class NextBestActionModel(Protocol):
    version: str

    def actions(
        self,
        features: Features,  # customer_activity, customer_repertoire, customer_session (the cart: cross_sell)
        *,
        customer_id: int,
        campaign_ids: frozenset[int],  # campaigns active at `now` AND approved by a merchandiser
        k: int,
        channel: Channel,
        now: datetime,
    ) -> list[Action]: ...
