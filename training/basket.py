"""Fitting the basket completer (pantry/models/basket.py): the co-purchase table and its ranker.

The table counts, over the baskets before the cut, the baskets holding each pair of products (a sparse basket x
product product: ~1.5 s on the full year) and keeps each product's MAX_NEIGHBOURS best partners by cosine. The
ranker is trained like the recommender's re-ranker, at an earlier cut: the table and each customer's repertoire as
of `until - RANKER_DAYS`, and real baskets of the RANKER_DAYS up to `until`, each split at random into a cart (half
of its products) and the rest, which is the truth. A LightGBM binary ranker (ONNX), the recommender's learner: the
features are few and interact (a co-purchase link means more for a product the customer never buys).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pantry import dataset
from pantry.models.basket import (
    ARRAYS,
    FEATURE_NAMES,
    MAX_NEIGHBOURS,
    MIN_BASKETS,
    NAME_ARRAYS,
    RANKER_FILE,
    REPERTOIRE_TOP,
    CoPurchase,
    candidate_features,
    context_rows,
)
from pantry.settings import Settings
from training.data import to_days
from training.gbm import Boosted, GbmParams, fit_lambdarank
from training.timing import Timer

MIN_TOGETHER = 2  # a pair bought together once is noise (and most of the matrix): not a neighbour
RANKER_DAYS = 28  # the ranker's baskets: the last 4 weeks before the cut (the table is built before them)
RANKER_BASKETS = 4000  # baskets sampled from them (fit time grows with it; 4,000 x ~150 candidates)
# 40 trees: as good as 80 or lambdarank on a validation cut, half the fit and the per-request cost
# (experiments/basket_ranker.py; docs/DECISIONS.md "Which learner completes a basket?")
RANKER_GBM = GbmParams(objective="binary", n_trees=40, num_leaves=15, learning_rate=0.1)
REPERTOIRE_HALF_LIFE_DAYS = 90.0  # the stream's customer_repertoire decay (streaming/features/customer.py)


@dataclass(frozen=True)
class Split:
    """A held-out basket: its customer, a random half of its products as the cart, the rest as the truth."""

    customer_id: int
    cart: list[int]
    rest: set[int]


@dataclass
class FittedBasket:
    table: CoPurchase
    ranker: Boosted | None


def product_types(settings: Settings) -> pd.Series:
    """product_id -> product type (the catalogue's), what a completion's reason calls its cart item."""
    products = dataset.read_table(settings, "products")[["product_id", "product_type"]].dropna()
    return products.set_index("product_id")["product_type"]


def with_names(table: CoPurchase, types: pd.Series) -> CoPurchase:
    """The table with each product's type (lower case) as a code into the distinct names."""
    known = types.reindex(table.products)
    names, codes = np.unique(known.fillna("").str.lower().to_numpy(dtype=str), return_inverse=True)
    codes = codes.astype(np.int32)
    if len(names) and names[0] == "":
        codes -= 1  # "" sorts first: unknown -> -1
        names = names[1:]
    return CoPurchase(table.products, table.freq, table.indptr, table.neighbours, table.count, table.total,
                      codes, names)


def basket_matrix(purchases: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    """Baskets x products (1 when the basket holds the product), and the products' ids (columns, sorted)."""
    _b, rows = np.unique(purchases["basket_id"].to_numpy(), return_inverse=True)
    products, cols = np.unique(purchases["product_id"].to_numpy(), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)),
                      shape=(int(rows.max()) + 1 if len(rows) else 0, len(products)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, products


def cooccurrence(purchases: pd.DataFrame, min_baskets: int = MIN_BASKETS):
    """(product x product baskets-together matrix without its diagonal, product ids, baskets per product, number
    of baskets) over the products in at least `min_baskets` baskets."""
    m, products = basket_matrix(purchases)
    freq = np.asarray(m.sum(axis=0)).ravel().astype(np.float32)
    keep = np.flatnonzero(freq >= min_baskets)
    mk = m[:, keep].tocsr()
    c = (mk.T @ mk).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    return c, products[keep], freq[keep], float(m.shape[0])


def copurchase(purchases: pd.DataFrame, max_neighbours: int = MAX_NEIGHBOURS) -> CoPurchase:
    """Each product's top `max_neighbours` partners by cosine, as CSR arrays."""
    c, products, freq, total = cooccurrence(purchases)
    if c.nnz == 0:
        return CoPurchase(products.astype(np.int64), freq, np.zeros(len(products) + 1, dtype=np.int64),
                          np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), total)
    c.data[c.data < MIN_TOGETHER] = 0
    c.eliminate_zeros()
    lens = np.diff(c.indptr)
    rows = np.repeat(np.arange(c.shape[0]), lens)
    cosine = c.data / np.sqrt(freq[rows] * freq[c.indices])  # in (0, 1]
    order = np.argsort(rows * 2.0 - cosine, kind="stable")  # per row, best partner first (one float key sorts)
    rank = np.arange(len(order)) - np.repeat(c.indptr[:-1], lens)
    top = order[rank < max_neighbours]
    indptr = np.concatenate([[0], np.cumsum(np.minimum(lens, max_neighbours))]).astype(np.int64)
    return CoPurchase(products.astype(np.int64), freq, indptr, c.indices[top].astype(np.int64),
                      c.data[top].astype(np.float32), total)


def repertoires(purchases: pd.DataFrame, until: datetime) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """customer -> (product ids, scores), best first: the stream's customer_repertoire as of `until` (decayed count
    of purchase lines, 90-day half-life, top REPERTOIRE_TOP)."""
    w = np.power(0.5, (to_days(until) - purchases["day"].to_numpy()) / REPERTOIRE_HALF_LIFE_DAYS)
    agg = (pd.DataFrame({"c": purchases["customer_id"].to_numpy(), "p": purchases["product_id"].to_numpy(), "w": w})
           .groupby(["c", "p"], sort=False)["w"].sum().reset_index()
           .sort_values(["c", "w", "p"], ascending=[True, False, False], kind="stable"))
    agg = agg[agg.groupby("c").cumcount() < REPERTOIRE_TOP]
    return {int(c): (g["p"].to_numpy(np.int64), g["w"].to_numpy(np.float64)) for c, g in agg.groupby("c", sort=False)}


def splits(purchases: pd.DataFrame, rng: np.random.Generator, max_baskets: int | None) -> list[Split]:
    """Baskets with 2+ distinct products (a sample of `max_baskets`), each split into a random half as the cart
    (at least one product) and the rest."""
    lines = purchases[["basket_id", "customer_id", "product_id"]].drop_duplicates(["basket_id", "product_id"])
    sizes = lines.groupby("basket_id").size()
    ids = sizes.index.to_numpy()[sizes.to_numpy() >= 2]
    if max_baskets is not None and len(ids) > max_baskets:
        ids = np.sort(rng.choice(ids, size=max_baskets, replace=False))
    chosen = lines[lines["basket_id"].isin(ids)].sort_values(["basket_id", "product_id"], kind="stable")
    out = []
    for (_b, c), g in chosen.groupby(["basket_id", "customer_id"], sort=True):
        items = rng.permutation(g["product_id"].to_numpy())
        half = len(items) // 2
        out.append(Split(int(c), items[:half].tolist(), set(items[half:].tolist())))
    return out


def training_set(table: CoPurchase, reps: dict[int, tuple[np.ndarray, np.ndarray]], held: list[Split]):
    """Features, labels (in the rest of the basket) and list sizes, one list per basket with both labels."""
    empty = (np.empty(0, dtype=np.int64), np.empty(0))
    xs, ys, sizes = [], [], []
    for s in held:
        context = context_rows(table, s.cart, [])
        if len(context) == 0:
            continue
        cands = candidate_features(table, context, *reps.get(s.customer_id, empty))
        label = np.isin(table.products[cands.rows], np.fromiter(s.rest, dtype=np.int64))
        if not label.any() or label.all():
            continue  # a list without both kinds teaches a ranker nothing
        xs.append(cands.features)
        ys.append(label.astype(np.float32))
        sizes.append(len(label))
    if not xs:
        return None
    return np.concatenate(xs), np.concatenate(ys), np.array(sizes)


def train_ranker(purchases: pd.DataFrame, until: datetime, seed: int = 0) -> Boosted | None:
    """The ranker at `until - RANKER_DAYS`: that cut's table and repertoires, labels from the baskets after it."""
    cut = until - timedelta(days=RANKER_DAYS)
    day = purchases["day"].to_numpy()
    before = purchases[day < to_days(cut)]
    window = purchases[(day >= to_days(cut)) & (day < to_days(until))]
    if before.empty or window.empty:
        return None
    built = training_set(copurchase(before), repertoires(before, cut),
                         splits(window, np.random.default_rng(seed), RANKER_BASKETS))
    if built is None:
        return None
    return fit_lambdarank(*built, FEATURE_NAMES, RANKER_GBM)


def fit(purchases: pd.DataFrame, until: datetime, timer: Timer, types: pd.Series | None = None) -> FittedBasket:
    """The table on every basket before `until` (with the products' `types` for the reasons), the ranker at the
    earlier cut."""
    before = purchases[purchases["day"] < to_days(until)]
    with timer.step("basket: co-purchase table"):
        table = copurchase(before)
        if types is not None:
            table = with_names(table, types)
    with timer.step("basket: ranker (table at an earlier cut + LightGBM fit)"):
        ranker = train_ranker(before, until)
    return FittedBasket(table, ranker)


def save(fitted: FittedBasket, directory: Path) -> None:
    """The table's arrays and the ranker's graph, beside the other files of a version (recommender or
    next_best_action: each version is self-contained, so each is hashed in its own manifest)."""
    t = fitted.table
    arrays = dict(zip(ARRAYS, (t.products, t.freq, t.indptr, t.neighbours, t.count, np.array([t.total])),
                      strict=True))
    if t.type_code is not None and t.type_names is not None:
        arrays.update(zip(NAME_ARRAYS, (t.type_code, t.type_names), strict=True))
    for name, arr in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
    if fitted.ranker is not None:
        (directory / RANKER_FILE).write_bytes(fitted.ranker.onnx("basket_ranker"))
