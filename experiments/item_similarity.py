"""Item-item co-purchase similarity (implicit's CosineRecommender over customers x items basket counts): does it
help the recommender find never-bought items (discover)?

The columns and candidates experiments/recommender_features.py adds with it: three re-ranker columns per candidate
(similarity to the customer's items of the last 4 weeks, summed and at most, and to their whole history), and
optionally never-bought candidates (the items most similar to the recent ones). CSR arrays over the model's item
indices; rows of items bought by fewer than `min_buyers` customers are empty (their neighbours are noise, and
leaving them out halves the fit).

Command: `PANTRY_DATA_DIR=... .venv/bin/python -m experiments.recommender_features --seeds --cut=2017-10-22 base cooc
cand_cooc+cooc` (and `--cut=2017-09-17`).
Result (recorded in docs/MODEL_REPORT.md when it was tried; for_you / discover precision@10, mean of 3 seeds): on the
validation cut 2017-10-22 served 0.3943 / 0.0518, the columns (K 20) 0.3945 / 0.0555, columns + 30 candidates
0.3947 / 0.0554; on 2017-09-17 0.3980 / 0.0492, 0.3983 / 0.0514, 0.3987 / 0.0512 (K 20 and 50 measured the same).
On the test protocol (`pantry evaluate --only recommender` with them built into the served model) they scored
discover 0.046 (K 50 + 30 candidates, for_you 0.410) and 0.043 (K 20 columns only, for_you 0.410) against 0.047
without (for_you 0.411): the December holdout does not follow the validation cuts, so the recommender does not use
them. Rerun of the validation side when the script moved here (cut 2017-10-22, 3 seeds): served 0.3968 / 0.0514,
the columns 0.3964 / 0.0564.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pantry.models.recommender_candidates import History

RECENT_DAYS = 28.0  # the customer's "recent" items: bought in the last 4 weeks before the cut
NEIGHBOURS = 20  # K of the cosine kNN (per item): 20 and 50 measured the same on two validation cuts


@dataclass(frozen=True)
class ItemSimilarity:
    indptr: np.ndarray  # int64 [n_items + 1]
    indices: np.ndarray  # int32 neighbour item index
    data: np.ndarray  # float32 cosine similarity

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    def _entries(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        starts, ends = self.indptr[rows], self.indptr[rows + 1]
        lens = ends - starts
        total = int(lens.sum())
        if total == 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        offsets = np.repeat(starts - (np.cumsum(lens) - lens), lens)
        pos = np.arange(total, dtype=np.int64) + offsets
        return self.indices[pos], self.data[pos]

    def summed(self, rows: np.ndarray) -> np.ndarray:
        """Dense [n_items] float64: sum over `rows` of each row's similarities (implicit's item-item score)."""
        idx, val = self._entries(np.asarray(rows, dtype=np.int64))
        return np.bincount(idx, weights=val, minlength=self.n_items)

    def maxed(self, rows: np.ndarray) -> np.ndarray:
        """Dense [n_items] float32: the largest similarity to any of `rows`."""
        idx, val = self._entries(np.asarray(rows, dtype=np.int64))
        out = np.zeros(self.n_items, dtype=np.float32)
        np.maximum.at(out, idx, val)
        return out


def empty(n_items: int) -> ItemSimilarity:
    return ItemSimilarity(np.zeros(n_items + 1, dtype=np.int64), np.empty(0, dtype=np.int32),
                          np.empty(0, dtype=np.float32))


def fit(hist: History, n_items: int, k: int = NEIGHBOURS, min_buyers: int = 3) -> ItemSimilarity:
    """Cosine kNN over the history's customers x items basket counts (items with `min_buyers`+ buyers)."""
    import scipy.sparse as sp
    from implicit.nearest_neighbours import ItemItemRecommender

    buyers = np.bincount(hist.items, minlength=n_items)
    kept = np.flatnonzero(buyers >= min_buyers)
    if len(kept) < 2:
        return empty(n_items)
    local = np.full(n_items, -1, dtype=np.int64)
    local[kept] = np.arange(len(kept))
    users = np.repeat(np.arange(len(hist.indptr) - 1), np.diff(hist.indptr))
    ok = local[hist.items] >= 0
    matrix = sp.csr_matrix((hist.count[ok].astype(np.float32), (users[ok], local[hist.items[ok]])),
                           shape=(len(hist.indptr) - 1, len(kept)))
    # implicit's CosineRecommender: item columns scaled to unit length, then the item-item dot products (done here
    # in CSR: its own normalisation hands the kNN a COO matrix and warns)
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=0)).ravel())
    weighted = matrix.multiply(1.0 / np.maximum(norms, 1e-12)).tocsr().astype(np.float64)
    model = ItemItemRecommender(K=min(k, len(kept)), num_threads=1)
    model.fit(weighted, show_progress=False)
    sim = model.similarity.tocsr()
    sim.sort_indices()
    rows = np.repeat(kept, np.diff(sim.indptr))
    counts = np.bincount(rows, minlength=n_items)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return ItemSimilarity(indptr, kept[sim.indices].astype(np.int32), sim.data.astype(np.float32))


def customer_sources(hist: History, u: int) -> tuple[np.ndarray, np.ndarray]:
    """(recent items, all items) of a known customer's history before the cut."""
    sl = hist.row(u)
    items = hist.items[sl]
    return items[hist.last_day[sl] >= hist.ref_day - RECENT_DAYS], items


def columns(sim: ItemSimilarity, recent: np.ndarray, all_items: np.ndarray, cand: np.ndarray,
            summed_recent: np.ndarray | None = None) -> np.ndarray:
    """[len(cand), 3] float32: log1p(summed similarity to the recent items), max similarity to one of them,
    log1p(summed similarity to all the customer's items). Zeros for a customer without history."""
    out = np.zeros((len(cand), 3), dtype=np.float32)
    if len(all_items) == 0 or sim.n_items == 0:
        return out
    if len(recent):
        s = sim.summed(recent) if summed_recent is None else summed_recent
        out[:, 0] = np.log1p(s[cand])
        out[:, 1] = sim.maxed(recent)[cand]
    out[:, 2] = np.log1p(sim.summed(all_items)[cand])
    return np.round(out, 4)  # 4 decimals are all the trees need (and what was validated)
