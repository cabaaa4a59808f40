"""Feature views: schema + TTL. Feast does not apply TTL on online reads; pantry's serving checks it."""

from datetime import timedelta

from entities import coupon, customer, product, store
from feast import FeatureView, Field
from feast.types import Array, Bool, Float32, Float64, Int64, String, UnixTimestamp
from sources import (
    campaign_coupon_source,
    customer_activity_push,
    customer_embedding_source,
    customer_preferences_push,
    customer_repertoire_push,
    customer_session_push,
    customer_substitution_feedback_push,
    product_source,
    product_substitution_feedback_push,
    store_product_push,
    store_traffic_push,
)

customer_session = FeatureView(
    name="customer_session",
    entities=[customer],
    ttl=timedelta(hours=1),  # a session ends after a 30-minute gap; older rows are not "current"
    schema=[
        Field(name="session_events", dtype=Int64),
        Field(name="session_distinct_products", dtype=Int64),
        Field(name="session_product_ids", dtype=Array(Int64)),  # last 20, newest first
        Field(name="cart_product_ids", dtype=Array(Int64)),  # in the cart now (added, not removed or bought)
        Field(name="session_spend", dtype=Float64),
        Field(name="session_started_at", dtype=UnixTimestamp),
    ],
    source=customer_session_push,
    online=True,
)

customer_activity = FeatureView(
    name="customer_activity",
    entities=[customer],
    ttl=timedelta(days=90),
    schema=[
        Field(name="orders_7d", dtype=Int64),
        Field(name="orders_28d", dtype=Int64),
        Field(name="spend_7d", dtype=Float64),
        Field(name="spend_28d", dtype=Float64),
        Field(name="last_order_at", dtype=UnixTimestamp),
        Field(name="preferred_store_id", dtype=Int64),
    ],
    source=customer_activity_push,
    online=True,
)

customer_repertoire = FeatureView(
    name="customer_repertoire",
    entities=[customer],
    ttl=timedelta(days=365),
    schema=[
        Field(name="repertoire_product_ids", dtype=Array(Int64)),  # top products by time-decayed count
        Field(name="repertoire_scores", dtype=Array(Float32)),
    ],
    source=customer_repertoire_push,
    online=True,
)

customer_embedding = FeatureView(
    name="customer_embedding",
    entities=[customer],
    ttl=timedelta(days=400),
    schema=[
        Field(name="embedding", dtype=Array(Float32)),
        Field(name="model_version", dtype=String),
    ],
    source=customer_embedding_source,
    online=True,
)

customer_preferences = FeatureView(
    name="customer_preferences",
    entities=[customer],
    ttl=timedelta(0),  # what the shopper set holds until they change it (or are erased)
    schema=[
        Field(name="substitutions", dtype=String),  # "allow" | "none" (no substitutes at all)
        # never-pairs as two aligned lists (Feast has no list of pairs): never offer never_substitute_ids[i] for
        # never_original_ids[i]
        Field(name="never_original_ids", dtype=Array(Int64)),
        Field(name="never_substitute_ids", dtype=Array(Int64)),
        Field(name="preferred_brands", dtype=Array(String)),
        Field(name="dietary", dtype=Array(String)),  # pantry/preferences.py DIETARY_RULES
    ],
    source=customer_preferences_push,
    online=True,
)

store_traffic = FeatureView(
    name="store_traffic",
    entities=[store],
    ttl=timedelta(days=2),
    schema=[
        Field(name="baskets_1h", dtype=Int64),
        Field(name="customers_1h", dtype=Int64),
        Field(name="baskets_24h", dtype=Int64),
        Field(name="customers_24h", dtype=Int64),
        Field(name="sales_24h", dtype=Float64),
    ],
    source=store_traffic_push,
    online=True,
)

store_product = FeatureView(
    name="store_product",
    entities=[store, product],
    ttl=timedelta(days=90),
    schema=[
        Field(name="units_7d", dtype=Int64),
        Field(name="units_28d", dtype=Int64),
        Field(name="last_sold_at", dtype=UnixTimestamp),
        Field(name="on_hand", dtype=Int64),  # from inventory events; absent when unknown
        Field(name="in_stock_prob", dtype=Float32),  # estimate from sales velocity when on_hand is unknown
        Field(name="on_display", dtype=Bool),
        Field(name="in_mailer", dtype=Bool),
    ],
    source=store_product_push,
    online=True,
)

product_features = FeatureView(
    name="product",
    entities=[product],
    ttl=timedelta(0),  # catalogue attributes do not expire
    schema=[
        Field(name="department", dtype=String),
        Field(name="category", dtype=String),
        Field(name="product_type", dtype=String),
        Field(name="brand", dtype=String),
        Field(name="package_size", dtype=String),
        Field(name="manufacturer_id", dtype=Int64),
    ],
    source=product_source,
    online=True,
)

campaign_coupon = FeatureView(
    name="campaign_coupon",
    entities=[coupon],
    ttl=timedelta(0),
    schema=[
        # A coupon UPC belongs to up to 5 campaigns; campaign dates, types and approval live per campaign.
        Field(name="campaign_ids", dtype=Array(Int64)),
        Field(name="product_ids", dtype=Array(Int64)),
    ],
    source=campaign_coupon_source,
    online=True,
)

# Substitution feedback (pantry/substitution_feedback.py, streaming/features/substitution.py): aligned lists, newest
# verdict first (Feast has no list of pairs)
customer_substitution_feedback = FeatureView(
    name="customer_substitution_feedback",
    entities=[customer],
    ttl=timedelta(days=365),
    schema=[
        Field(name="original_ids", dtype=Array(Int64)),  # the last 64 (original, substitute) pairs with a verdict
        Field(name="substitute_ids", dtype=Array(Int64)),
        Field(name="accepted_counts", dtype=Array(Int64)),
        Field(name="rejected_counts", dtype=Array(Int64)),
        Field(name="last_accepted", dtype=Array(Int64)),  # 1: the newest verdict was an acceptance, 0: a rejection
    ],
    source=customer_substitution_feedback_push,
    online=True,
)

product_substitution_feedback = FeatureView(
    name="product_substitution_feedback",
    entities=[product],  # the original product; store-independent
    ttl=timedelta(days=365),
    schema=[
        Field(name="substitute_ids", dtype=Array(Int64)),  # the last 64 substitutes with a verdict, from anyone
        Field(name="accepted_counts", dtype=Array(Int64)),
        Field(name="rejected_counts", dtype=Array(Int64)),
        Field(name="acceptance_rates", dtype=Array(Float32)),  # posterior mean, Beta(1, 1) prior
    ],
    source=product_substitution_feedback_push,
    online=True,
)
