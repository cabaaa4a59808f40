"""Real ids for the load: customers, their home stores, the products they buy. Built once per process.

Drawn from the dataset parquet under the settings' data dir (`pantry data load` puts it there), so every request
names a household, store and product that exist in the data the service was built from.
"""

from __future__ import annotations

import os
import pickle
import random
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache

import pyarrow.compute as pc

from pantry import dataset
from pantry.settings import Settings, get_settings

TOP_PRODUCTS_PER_CUSTOMER = 30
TOP_PRODUCTS_PER_STORE = 200


@dataclass(frozen=True)
class Shopper:
    customer_id: int
    store_id: int
    bought: tuple[int, ...]  # most bought first


@dataclass
class IdPool:
    shoppers: list[Shopper]
    store_products: dict[int, tuple[int, ...]]  # store -> its best sellers
    last_event: datetime  # events we send carry this time, so the event clock's watermark does not jump ahead
    unknown_customer_id: int  # a household that does not exist: the cold-start path
    rng: random.Random = field(default_factory=random.Random)

    def shopper(self) -> Shopper:
        return self.rng.choice(self.shoppers)

    def browse(self, shopper: Shopper, n: int) -> list[int]:
        """Products a shopper looks at: mostly their store's best sellers, some of their own repertoire."""
        pool = self.store_products.get(shopper.store_id) or shopper.bought
        picks = {self.rng.choice(pool) for _ in range(n)}
        if shopper.bought and self.rng.random() < 0.5:
            picks.add(self.rng.choice(shopper.bought))
        return sorted(picks)


def build(settings: Settings, seed: int | None = None) -> IdPool:
    try:
        table = dataset.read_events(settings, columns=["type", "ts", "customer_id", "store_id", "product_id"])
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            f"no dataset under {settings.dataset_dir}: run `pantry data load` (same PANTRY_DATA_DIR) first"
        ) from exc
    last_event = pc.max(table["ts"]).as_py()
    table = table.filter(pc.equal(table["type"], "purchase"))
    df = table.select(["customer_id", "store_id", "product_id"]).to_pandas()
    if df.empty:
        raise ValueError(f"the dataset under {settings.dataset_dir} has no purchases to draw ids from")

    home_store = df.groupby(["customer_id", "store_id"]).size().reset_index(name="n")
    home_store = home_store.sort_values(["customer_id", "n"], ascending=[True, False]).drop_duplicates("customer_id")
    counts = df.groupby(["customer_id", "product_id"]).size().reset_index(name="n")
    counts = counts.sort_values(["customer_id", "n", "product_id"], ascending=[True, False, True])
    top = counts.groupby("customer_id").head(TOP_PRODUCTS_PER_CUSTOMER)
    bought = {int(c): tuple(int(p) for p in g["product_id"]) for c, g in top.groupby("customer_id")}
    shoppers = [
        Shopper(int(row.customer_id), int(row.store_id), bought[int(row.customer_id)])
        for row in home_store.itertuples(index=False)
    ]

    sold = df.groupby(["store_id", "product_id"]).size().reset_index(name="n")
    sold = sold.sort_values(["store_id", "n", "product_id"], ascending=[True, False, True])
    best = sold.groupby("store_id").head(TOP_PRODUCTS_PER_STORE)
    store_products = {int(s): tuple(int(p) for p in g["product_id"]) for s, g in best.groupby("store_id")}
    return IdPool(
        shoppers=shoppers,
        store_products=store_products,
        last_event=last_event,
        unknown_customer_id=int(df["customer_id"].max()) + 1_000_000,
        rng=random.Random(seed),
    )


def cached(settings: Settings) -> IdPool:
    """The pool, from a cache file beside the dataset when it matches the dataset's digest (building it from
    1.47M events takes seconds, and every Locust process needs it)."""
    digest = dataset.manifest(settings).events_sha256
    path = settings.data_dir / "load_id_pool.pickle"
    try:
        saved_digest, saved = pickle.loads(path.read_bytes())  # our own file, written below
        if saved_digest == digest:
            saved.rng = random.Random()  # fresh entropy: processes loading the same file must not draw alike
            return saved
    except (OSError, pickle.UnpicklingError, ValueError, EOFError, AttributeError, TypeError):
        pass
    built = build(settings)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps((digest, built), protocol=pickle.HIGHEST_PROTOCOL))
    tmp.replace(path)  # atomic: concurrent Locust processes never read half a file
    return built


@cache
def pool() -> IdPool:
    """The process-wide pool (each Locust worker process loads its own, once)."""
    settings = get_settings()
    try:
        return cached(settings)
    except FileNotFoundError:
        return build(settings)  # raises the clear "run `pantry data load`" error
