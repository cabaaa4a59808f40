"""Feature services: versioned; a new version is a new service, never an edit of a released one."""

from feast import FeatureService
from features import (
    campaign_coupon,
    customer_activity,
    customer_embedding,
    customer_repertoire,
    customer_session,
    customer_substitution_feedback,
    product_features,
    product_substitution_feedback,
    store_product,
    store_traffic,
)

recommendations_v1 = FeatureService(
    name="recommendations_v1",
    features=[customer_session, customer_activity, customer_repertoire, customer_embedding, store_traffic],
)
substitutions_v1 = FeatureService(
    name="substitutions_v1",
    features=[store_product, product_features, customer_repertoire, customer_session],
)
# v1 + substitution feedback (what serving/answers/substitutions.py reads)
substitutions_v2 = FeatureService(
    name="substitutions_v2",
    features=[store_product, product_features, customer_repertoire, customer_session, customer_substitution_feedback,
              product_substitution_feedback],
)
next_best_action_v1 = FeatureService(
    name="next_best_action_v1",
    features=[customer_activity, customer_repertoire, campaign_coupon],
)
