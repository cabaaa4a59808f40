"""ALS user factors -> the `customer_embedding` batch view: a parquet file (Feast's FileSource) and the online store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pantry.settings import Settings

VIEW = "customer_embedding"


def parquet_path(settings: Settings) -> Path:
    return settings.data_dir / "embeddings" / f"{VIEW}.parquet"


def write_parquet(settings: Settings, customers: np.ndarray, factors: np.ndarray, version: str,
                  ts: datetime) -> Path:
    path = parquet_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "customer_id": pa.array(customers.astype(np.int64)),
            "embedding": pa.array([row.tolist() for row in factors.astype(np.float32)], type=pa.list_(pa.float32())),
            "model_version": pa.array([version] * len(customers), type=pa.string()),
            "event_timestamp": pa.array(pd.DatetimeIndex([ts] * len(customers)).as_unit("us"),
                                        type=pa.timestamp("us", tz="UTC")),
        }
    )
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def push_online(settings: Settings, customers: np.ndarray, factors: np.ndarray, version: str, ts: datetime) -> int:
    """HSET every customer's embedding in Feast's Redis layout (raises when Redis or the Feast registry is absent)."""
    from pantry.featurestore import repo
    from pantry.featurestore.pipeline import write_rows
    from pantry.redis_server import sync_client

    if not settings.registry_path.exists():
        raise RuntimeError(f"no Feast registry at {settings.registry_path} (run `pantry feast apply`)")
    layout = repo.layout(settings)
    client = sync_client(settings, timeout_s=5.0)
    rows = (
        ((int(c),), {"embedding": f.tolist(), "model_version": version}, ts)
        for c, f in zip(customers, factors.astype(np.float32), strict=True)
    )
    return write_rows(client, layout, VIEW, rows)
