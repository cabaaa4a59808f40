"""Sources: push sources (the Bytewax dataflows) backed by the offline feature log, and batch parquet files.

Paths come from pantry's settings (PANTRY_DATA_DIR), so tests and deployments point at their own data.
"""

from feast import FileSource, PushSource

from pantry.settings import get_settings

_settings = get_settings()
FEATURE_LOG = _settings.feature_log_dir
DATASET = _settings.dataset_dir


def _feature_log(view: str) -> FileSource:
    # The streaming sink appends every row it writes online here, partitioned by day.
    return FileSource(name=f"{view}_log", path=str(FEATURE_LOG / view), timestamp_field="event_timestamp")


def _push(view: str) -> PushSource:
    return PushSource(name=f"{view}_push", batch_source=_feature_log(view))


customer_session_push = _push("customer_session")
customer_activity_push = _push("customer_activity")
customer_repertoire_push = _push("customer_repertoire")
store_traffic_push = _push("store_traffic")
store_product_push = _push("store_product")
customer_substitution_feedback_push = _push("customer_substitution_feedback")
product_substitution_feedback_push = _push("product_substitution_feedback")
# written by the API (PUT /v1/customers/{id}/preferences, serving/preferences.py), online only; Feast's /push may too
customer_preferences_push = _push("customer_preferences")

customer_embedding_source = FileSource(
    name="customer_embedding_source",
    path=str(_settings.data_dir / "embeddings" / "customer_embedding.parquet"),
    timestamp_field="event_timestamp",
)
product_source = FileSource(
    name="product_source", path=str(DATASET / "products.parquet"), timestamp_field="event_timestamp"
)
campaign_coupon_source = FileSource(
    name="campaign_coupon_source", path=str(DATASET / "campaign_coupons.parquet"), timestamp_field="event_timestamp"
)
