"""The last-resort answer when no recommender is loaded: a popularity snapshot computed once from the dataset.

With a recommender loaded, fallbacks use its own `popular(...)` (training's snapshot); this one only covers a
service started before any model exists.
"""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.compute as pc

from pantry import dataset
from pantry.scoring import Scored
from pantry.settings import Settings

log = logging.getLogger("pantry.serving.popularity")
VERSION = "popularity-snapshot"


class PopularitySnapshot:
    version = VERSION

    def __init__(self, global_top: list[tuple[int, float]], by_store: dict[int, list[tuple[int, float]]]):
        self.global_top = global_top
        self.by_store = by_store

    @classmethod
    def empty(cls) -> PopularitySnapshot:
        return cls([], {})

    @classmethod
    def from_dataset(cls, settings: Settings, top: int = 300, per_store: int = 100) -> PopularitySnapshot:
        try:
            table = dataset.read_events(settings, columns=["type", "store_id", "product_id"])
        except (OSError, FileNotFoundError, pa.ArrowException) as exc:
            log.warning("no dataset for the popularity snapshot: %s", exc)
            return cls.empty()
        table = table.filter(pc.equal(table["type"], "purchase"))
        counts = table.group_by(["product_id"]).aggregate([("product_id", "count")]).sort_by(
            [("product_id_count", "descending")]
        )
        global_top = [
            (int(p), float(c))
            for p, c in zip(counts["product_id"].to_pylist()[:top], counts["product_id_count"].to_pylist()[:top],
                            strict=True)
        ]
        by_pair = table.group_by(["store_id", "product_id"]).aggregate([("product_id", "count")]).sort_by(
            [("store_id", "ascending"), ("product_id_count", "descending")]
        )
        by_store: dict[int, list[tuple[int, float]]] = {}
        for s, p, c in zip(by_pair["store_id"].to_pylist(), by_pair["product_id"].to_pylist(),
                           by_pair["product_id_count"].to_pylist(), strict=True):
            items = by_store.setdefault(int(s), [])
            if len(items) < per_store:
                items.append((int(p), float(c)))
        return cls(global_top, by_store)

    def popular(self, *, k: int, store_id: int | None, exclude: frozenset[int]) -> list[Scored]:
        out: list[Scored] = []
        seen: set[int] = set()
        sources = []
        if store_id is not None and store_id in self.by_store:
            sources.append((self.by_store[store_id], "popular at your store"))
        sources.append((self.global_top, "popular with all shoppers"))
        for items, reason in sources:
            top = items[0][1] if items else 1.0
            for product_id, count in items:
                if len(out) >= k:
                    return out
                if product_id in exclude or product_id in seen:
                    continue
                seen.add(product_id)
                out.append(Scored(product_id, round(count / top, 6), reason))
        return out
