"""Batch feature views (product, campaign_coupon): parquet under the data dir -> online store, in Feast's layout."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from tqdm import tqdm

from pantry import dataset
from pantry.dataset import CATALOGUE_TS
from pantry.featurestore import repo
from pantry.featurestore.pipeline import write_rows
from pantry.redis_server import sync_client
from pantry.settings import Settings

Row = tuple[Sequence[int], Mapping[str, Any], datetime]


def _product_rows(products: pd.DataFrame) -> Iterable[Row]:
    cols = ["department", "category", "product_type", "brand", "package_size", "manufacturer_id"]
    for rec in products[["product_id", *cols]].itertuples(index=False):
        values = {c: (None if pd.isna(v) else v) for c, v in zip(cols, rec[1:], strict=True)}
        yield (rec[0],), values, CATALOGUE_TS


def _coupon_rows(coupons: pd.DataFrame) -> Iterable[Row]:
    for rec in coupons.itertuples(index=False):
        yield (rec.coupon_upc,), {"campaign_ids": rec.campaign_ids, "product_ids": rec.product_ids}, CATALOGUE_TS


def write_batch_views(settings: Settings, progress: bool = True) -> dict[str, int]:
    layout = repo.layout(settings)
    client = sync_client(settings)
    products = dataset.read_table(settings, "products")
    coupons = dataset.read_table(settings, "campaign_coupons")
    counts = {}
    with tqdm(total=len(products) + len(coupons), desc="batch views online", unit="row", disable=not progress) as bar:
        counts["product"] = write_rows(client, layout, "product", _product_rows(products))
        bar.update(counts["product"])
        counts["campaign_coupon"] = write_rows(client, layout, "campaign_coupon", _coupon_rows(coupons))
        bar.update(counts["campaign_coupon"])
    client.close()
    return counts
