"""What training and serving of the substitution ranker share: the catalogue of a version, a product type's pool
of candidates, the customer's own items of the type, and the ranker's rows (`rows`/`features`), so that a departure
row in training and a candidate row at serving are built by the same code.

Pools and item tables are numpy arrays built by training (training/substitutions.py) at the cut. The served pool of a
product is its type's SCORED_POOL most bought items ordered by the ranker on customer-neutral rows (`ordered_pools`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

POOL = 50
OWN_CANDIDATES = 10  # the customer's own other items of the type ranked with the pool (most bought first)
# What `candidate_pools` scores before returning its POOL best (serving reads the stock of only the first 20 it
# returns): the ranker on rows without a customer or store (`neutral_rows`). On the validation cut, ranking only
# the first 20 by buyers lost 0.005 hit@3 against the whole pool; the first 20 of 150 by that score lost nothing.
SCORED_POOL = 150
POOL_CHUNK_ROWS = 500_000  # neutral rows per ranker call when training orders every product's pool (~50 MB)
FEATURE_NAMES = (
    "als_similarity",
    "log_buyers",
    "log_pool_rank",
    "same_brand_kind",
    "same_manufacturer",
    "same_size",
    "abs_log_price_ratio",
    "log_price_ratio",
    "customer_brand_kind_share",
    "customer_affinity",
    "same_type",
    "log_store_units_28d",
    "log_recent_buyers",
    "log_switch",
    "log_co_buyers",
    "switch_rate",
    "co_rate",
    "log_new_buyers",
    "log_item_age",
    # the customer's own history in the type (OwnItems): shares and ranks, scale-free
    "customer_bought",
    "customer_type_share",
    "customer_usual_share",
    "log_customer_own_in_type",
    "customer_own_rank",
)
# Versions trained before the own-history columns rank with the first 19 and the hand-set REPERTOIRE_BONUS.
LEGACY_FEATURES = 19


@dataclass
class Catalogue:
    """Item-level tables over the products bought before the cut (index = Index.products)."""

    products: np.ndarray
    type_code: np.ndarray  # int64, -1 unknown
    category_code: np.ndarray
    private: np.ndarray  # float32 1 = private label
    manufacturer: np.ndarray  # int64
    size_code: np.ndarray  # int64, -1 unknown
    log_price: np.ndarray  # float32 mean log unit price
    buyers: np.ndarray  # float32 distinct customers
    recent_buyers: np.ndarray  # float32 distinct customers in the last 28 days
    factors: np.ndarray  # float32 L2-normalised ALS item factors
    pool_indptr: np.ndarray  # per type code: items by buyers, best first
    pool_items: np.ndarray
    cat_indptr: np.ndarray  # per category code
    cat_items: np.ndarray
    pair_key: np.ndarray  # int64 sorted usual * n_items + candidate (PairTable, flattened)
    pair_co: np.ndarray  # float32 customers with that usual item who also bought the candidate
    pair_switch: np.ndarray  # float32 ... whose first purchase of the candidate came after the usual one's
    usual_customers: np.ndarray  # float32 per item: customers whose usual item (of its type) it is
    new_buyers: np.ndarray  # float32 per item: customers who bought it for the first time in the last 28 days
    item_age: np.ndarray  # float32 per item: days between its first sale and the cut


# The arrays of a substitutions version (one .npy each)
ARRAYS = ("products", "type_code", "category_code", "private", "manufacturer", "size_code", "log_price", "buyers",
          "recent_buyers", "factors", "pool_indptr", "pool_items", "cat_indptr", "cat_items", "pair_key", "pair_co",
          "pair_switch", "usual_customers", "new_buyers", "item_age")
# Each customer's purchases before the cut (OwnItems, CSR over customers.npy): versions with own-history columns
OWN_ARRAYS = ("own_indptr", "own_items", "own_scores")
# The served pool of every product bought by SERVED_POOL_MIN_BUYERS customers or more (CSR over products: item
# indices, best first; empty for the others), ordered at training: a pool is the same for every customer, and
# computing it on a request's first ask was most of a request's cost. The rarer products (39% of them, ~1% of the
# purchase lines) get theirs on first ask: ordering all of them took 18.9 s of the retrain instead of ~11 s.
SERVED_POOL_ARRAYS = ("served_pool_indptr", "served_pool_items")
SERVED_POOL_MIN_BUYERS = 2


def pool(cat: Catalogue, item: int, size: int = POOL) -> np.ndarray:
    """Candidate item indices for item index `item`: same type (else same category), best first, bounded."""
    t = int(cat.type_code[item])
    if t >= 0:
        items = cat.pool_items[cat.pool_indptr[t] : cat.pool_indptr[t + 1]]
        items = items[items != item]
        if len(items) >= 2:
            return items[:size]
    c = int(cat.category_code[item])
    if c < 0:
        return np.empty(0, dtype=np.int64)
    items = cat.cat_items[cat.cat_indptr[c] : cat.cat_indptr[c + 1]]
    return items[items != item][:size]


@dataclass(frozen=True)
class OwnItems:
    """What a customer bought: item indices (into Catalogue.products) and their purchase lines decayed with a
    90-day half-life to the cut, best first. Serving takes them from the version's history of the customer
    (`own_*` arrays, every item bought before the cut: the live customer_repertoire row holds only the top 50
    products of all types, and missed most of a type's second choices) plus what the live row adds since."""

    items: np.ndarray  # int64
    scores: np.ndarray  # float64

    @classmethod
    def from_history(cls, own: Mapping[str, np.ndarray], u: int) -> OwnItems:
        indptr = own["own_indptr"]
        if u < 0 or u + 1 >= len(indptr):
            return NO_OWN_ITEMS
        lo, hi = int(indptr[u]), int(indptr[u + 1])
        return cls(own["own_items"][lo:hi].astype(np.int64), own["own_scores"][lo:hi].astype(np.float64))

    def with_live(self, products: np.ndarray, row: Mapping[str, Any] | None) -> OwnItems:
        """Plus the products of a customer_repertoire row not in the history (bought since the cut), each
        counted as one purchase at the cut (the row's own scores are on another clock)."""
        ids = np.asarray((row or {}).get("repertoire_product_ids") or (), dtype=np.int64)
        if len(ids) == 0 or len(products) == 0:
            return self
        idx = np.clip(np.searchsorted(products, ids), 0, len(products) - 1)
        new = idx[(products[idx] == ids) & ~self.holds(idx)]
        if len(new) == 0:
            return self
        return OwnItems(np.concatenate([self.items, new]), np.concatenate([self.scores, np.ones(len(new))]))

    def holds(self, items: np.ndarray) -> np.ndarray:
        """Which of `items` the customer bought (a sorted search: np.isin's sort per call was 9 of the 65 s of
        the ranker's training rows)."""
        if len(self.items) == 0:
            return np.zeros(len(items), dtype=bool)
        mine = self._sorted
        pos = np.minimum(np.searchsorted(mine, items), len(mine) - 1)
        return mine[pos] == items

    @cached_property
    def _sorted(self) -> np.ndarray:
        return np.sort(self.items)

    def of_type(self, cat: Catalogue, usual: int) -> OwnItems:
        """The ones of the usual item's type (it included), best first."""
        t = int(cat.type_code[usual])
        if t < 0 or len(self.items) == 0:
            return NO_OWN_ITEMS
        keep = cat.type_code[self.items] == t
        order = np.argsort(-self.scores[keep], kind="stable")
        return OwnItems(self.items[keep][order], self.scores[keep][order])


NO_OWN_ITEMS = OwnItems(np.empty(0, dtype=np.int64), np.empty(0))


def own_candidates(cat: Catalogue, usual: int, own: OwnItems) -> np.ndarray:
    """The customer's other items of the usual item's type, most bought first: candidates the type's pool may
    not hold (the pool is ordered for everyone; a shopper's own second choice can be a rare item)."""
    mine = own.of_type(cat, usual).items
    return mine[mine != usual][:OWN_CANDIDATES]


@dataclass(frozen=True)
class _OwnByType:
    """A customer's own items grouped by type for the own-history columns, computed once per request: sorted by
    item (for lookups), each with its score, its type's total and count, and its place in its type (most bought
    first, ties in OwnItems order: what `OwnItems.of_type` lists)."""

    items: np.ndarray  # sorted item indices
    scores: np.ndarray
    place: np.ndarray  # 0 = the type's most bought
    types: np.ndarray  # sorted distinct type codes
    type_total: np.ndarray
    type_count: np.ndarray

    @classmethod
    def of(cls, cat: Catalogue, own: OwnItems) -> _OwnByType:
        n = len(own.items)
        types = cat.type_code[own.items]
        order = np.lexsort((np.arange(n), -own.scores, types))
        t, sc = types[order], own.scores[order]
        first = np.r_[0, np.flatnonzero(np.diff(t)) + 1] if n else np.empty(0, dtype=np.int64)
        starts = np.zeros(n, dtype=np.int64)
        starts[first] = 1
        group = np.cumsum(starts) - 1
        place = np.arange(n) - first[group] if n else np.empty(0, dtype=np.int64)
        by_item = np.argsort(own.items[order], kind="stable")
        return cls(own.items[order][by_item], sc[by_item], place[by_item], t[first],
                   np.add.reduceat(sc, first) if n else np.empty(0), np.diff(np.r_[first, n]))

    def find(self, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(is one of the customer's items, its position in `self.items`) per item."""
        if len(self.items) == 0:
            return np.zeros(len(items), dtype=bool), np.zeros(len(items), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.items, items), len(self.items) - 1)
        return self.items[pos] == items, pos

    def of_types(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(total score, item count) of the customer's items of each type code (0 for unknown types, -1)."""
        if len(self.types) == 0:
            return np.zeros(len(t)), np.zeros(len(t), dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.types, t), len(self.types) - 1)
        hit = (self.types[pos] == t) & (t >= 0)
        return np.where(hit, self.type_total[pos], 0.0), np.where(hit, self.type_count[pos], 0)


def rows(cat: Catalogue, usual: np.ndarray, cands: np.ndarray, position: np.ndarray, customer_private_share: float,
         user_factors: np.ndarray | None, store_units: np.ndarray, own: OwnItems = NO_OWN_ITEMS) -> np.ndarray:
    """[len(cands), len(FEATURE_NAMES)] float32 for one customer, one row per candidate: `usual` is each row's
    usual item and `position` its place in that item's candidate list, so the candidates of several items go to
    the ranker in one call."""
    cands = np.asarray(cands, dtype=np.int64)
    out = np.empty((len(cands), len(FEATURE_NAMES)), dtype=np.float32)
    out[:, 0] = np.einsum("ij,ij->i", cat.factors[cands], cat.factors[usual])
    out[:, 1] = np.log1p(cat.buyers[cands])
    out[:, 2] = np.log1p(position)  # pools are ordered by buyers
    out[:, 3] = cat.private[cands] == cat.private[usual]
    maker = cat.manufacturer[usual]
    out[:, 4] = (cat.manufacturer[cands] == maker) & (maker >= 0)
    size = cat.size_code[usual]
    out[:, 5] = (cat.size_code[cands] == size) & (size >= 0)
    ratio = cat.log_price[cands] - cat.log_price[usual]
    out[:, 6] = np.abs(ratio)
    out[:, 7] = ratio
    out[:, 8] = np.where(cat.private[cands] > 0, customer_private_share, 1.0 - customer_private_share)
    out[:, 9] = 0.0 if user_factors is None else (cat.factors[cands] @ user_factors)
    usual_type = cat.type_code[usual]
    out[:, 10] = cat.type_code[cands] == usual_type
    out[:, 11] = np.log1p(store_units)
    out[:, 12] = np.log1p(cat.recent_buyers[cands])
    key = usual.astype(np.int64) * len(cat.products) + cands
    if len(cat.pair_key):
        pos = np.minimum(np.searchsorted(cat.pair_key, key), len(cat.pair_key) - 1)
        hit = cat.pair_key[pos] == key
        co, switch = np.where(hit, cat.pair_co[pos], 0.0), np.where(hit, cat.pair_switch[pos], 0.0)
    else:
        co = switch = np.zeros(len(cands))
    n_usual = cat.usual_customers[usual].astype(np.float64) + 1.0
    out[:, 13] = np.log1p(switch)
    out[:, 14] = np.log1p(co)
    out[:, 15] = switch / n_usual
    out[:, 16] = co / n_usual
    out[:, 17] = np.log1p(cat.new_buyers[cands])
    out[:, 18] = np.log1p(cat.item_age[cands])
    # the customer's own items of the usual item's type: OwnItems.of_type, for every row at once
    mine = _OwnByType.of(cat, own)
    total, count = mine.of_types(usual_type)
    is_own, at = mine.find(cands)
    typed = is_own & (cat.type_code[cands] == usual_type) & (usual_type >= 0)
    usual_own, usual_at = mine.find(np.asarray(usual, dtype=np.int64))
    usual_own = usual_own & (usual_type >= 0)
    safe = np.where(total > 0, total, 1.0)
    out[:, 19] = is_own
    out[:, 20] = np.where(typed & (total > 0), mine.scores[at] / safe if len(mine.items) else 0.0, 0.0)
    out[:, 21] = np.where(usual_own & (total > 0), mine.scores[usual_at] / safe if len(mine.items) else 0.0, 0.0)
    out[:, 22] = np.log1p(count - usual_own)
    if len(mine.items):
        place = mine.place[at] - (usual_own & (mine.place[usual_at] < mine.place[at]))
        out[:, 23] = np.where(typed & (cands != usual), np.log1p(np.maximum(place, 0)), -1.0)
    else:
        out[:, 23] = -1.0
    return out


def features(cat: Catalogue, usual: int, cands: np.ndarray, customer_private_share: float,
             user_factors: np.ndarray | None, store_units: np.ndarray, own: OwnItems = NO_OWN_ITEMS) -> np.ndarray:
    """`rows` for the candidate list of one usual item (training builds a departure's rows with it)."""
    cands = np.asarray(cands, dtype=np.int64)
    return rows(cat, np.full(len(cands), usual, dtype=np.int64), cands, np.arange(len(cands)),
                customer_private_share, user_factors, store_units, own)


def neutral_rows(cat: Catalogue, usual: int, cands: np.ndarray) -> np.ndarray:
    """Candidate rows as a request without a known customer or store sees them: what `candidate_pools` ranks by."""
    return features(cat, usual, cands, 0.5, None, np.zeros(len(cands), dtype=np.float32))


def stacked(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concatenated blocks, each row's block number, each row's position in its block)."""
    sizes = np.array([len(b) for b in blocks], dtype=np.int64)
    block = np.repeat(np.arange(len(blocks)), sizes)
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    return np.concatenate(blocks), block, np.arange(int(sizes.sum())) - starts[block]


def ordered_pools(cat: Catalogue, logit: Callable[[np.ndarray], np.ndarray], items: np.ndarray,
                  chunk_rows: int = POOL_CHUNK_ROWS) -> list[np.ndarray]:
    """Per item index: the POOL best of its SCORED_POOL pool by `logit` (the ranker) on customer-neutral rows, the
    whole pool when it has one candidate. Items are scored in chunks of about `chunk_rows` rows."""
    pools = [pool(cat, int(i), SCORED_POOL) for i in items]
    out: list[np.ndarray] = [p[:POOL] for p in pools]
    scored = [j for j, p in enumerate(pools) if len(p) > 1]
    lo = 0
    while lo < len(scored):
        hi, n_rows = lo, 0
        while hi < len(scored) and (hi == lo or n_rows + len(pools[scored[hi]]) <= chunk_rows):
            n_rows += len(pools[scored[hi]])
            hi += 1
        part = scored[lo:hi]
        cands, block, position = stacked([pools[j] for j in part])
        usual = np.asarray(items, dtype=np.int64)[part][block]
        score = logit(rows(cat, usual, cands, position, 0.5, None, np.zeros(len(cands), dtype=np.float32)))
        starts = np.r_[0, np.cumsum([len(pools[j]) for j in part])]
        for b, j in enumerate(part):
            mine = score[starts[b] : starts[b + 1]]
            out[j] = pools[j][np.argsort(-mine, kind="stable")][:POOL]
        lo = hi
    return out


def pool_arrays(pools: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Served pools as CSR arrays over item indices (SERVED_POOL_ARRAYS)."""
    indptr = np.r_[0, np.cumsum([len(p) for p in pools])].astype(np.int64)
    items = np.concatenate(pools).astype(np.int32) if pools else np.empty(0, dtype=np.int32)
    return {"served_pool_indptr": indptr, "served_pool_items": items}
