"""Complete Journey as pantry keeps it: parquet files under `<data_dir>/data/` (written by pantry.dataset_load).

Files (all timestamps UTC):
  events.parquet            purchase + coupon_redemption events in event-time order (the replay source)
  products.parquet          catalogue (product_id, department, category, product_type, brand, package_size, ...)
  campaigns.parquet         household x campaign enrolment (customer_id, campaign_id)
  campaign_descriptions.parquet   campaign_id, campaign_type (A/B/C), start_date, end_date
  coupons.parquet           coupon_upc -> product_id per campaign
  campaign_coupons.parquet  one row per coupon_upc: campaign_ids, product_ids (the `campaign_coupon` view)
  coupon_redemptions.parquet, demographics.parquet, promotions.parquet (weekly store x product placement)
  MANIFEST.json             row counts, slice, and a digest of events.parquet
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from pantry.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

TABLES = (
    "transactions",
    "products",
    "campaigns",
    "campaign_descriptions",
    "coupons",
    "coupon_redemptions",
    "demographics",
    "promotions",
)
CATALOGUE_TS = datetime(2017, 1, 1, tzinfo=UTC)  # batch sources need an event timestamp; the catalogue is static
EVENT_COLUMNS = (
    "event_id", "type", "ts", "customer_id", "store_id", "basket_id", "product_id",
    "quantity", "sales_value", "discounts", "coupon_upc", "campaign_id",
)


class DatasetManifest(msgspec.Struct):
    households: int | None
    rows: dict[str, int]
    events_sha256: str
    first_event: str
    last_event: str



def manifest(settings: Settings) -> DatasetManifest:
    path = settings.dataset_dir / "MANIFEST.json"
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {settings.dataset_dir}: run `pantry data load` first")
    return msgspec.json.decode(path.read_bytes(), type=DatasetManifest)


def read_events(settings: Settings, until: datetime | None = None, columns: list[str] | None = None) -> pa.Table:
    """The replay events (strictly before `until` when given), in event-time order."""
    filters = [("ts", "<", until)] if until is not None else None
    return pq.read_table(settings.dataset_dir / "events.parquet", columns=columns, filters=filters)


def read_table(settings: Settings, name: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(settings.dataset_dir / f"{name}.parquet")


def read_arrow(settings: Settings, name: str) -> pa.Table:
    return pq.read_table(settings.dataset_dir / f"{name}.parquet")
