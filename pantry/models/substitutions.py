"""SubstitutionModel over one version's artifacts: the served pools, the customer's own items of the type and the
ranker (ONNX) that orders them (pantry/models/substitution_features.py builds what training shares with it).

The ranker is a LightGBM lambdarank (or, on a small slice, a conditional logit) over `rows`, the same function training
builds its departure rows with. A request's items are handled together: their pools (the version's served pools, else
computed on first ask and cached), the customer's own other items of each type (OwnItems: the version's history of the
customer and the live customer_repertoire row), and one ranker call over every item's in-stock candidates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pantry.models._shared import lookup, lookup_many
from pantry.models.onnx import session
from pantry.models.registry import Manifest
from pantry.models.substitution_features import (
    ARRAYS,
    FEATURE_NAMES,
    LEGACY_FEATURES,
    NO_OWN_ITEMS,
    OWN_ARRAYS,
    SERVED_POOL_ARRAYS,
    SERVED_POOL_MIN_BUYERS,
    Catalogue,
    OwnItems,
    ordered_pools,
    own_candidates,
    rows,
)
from pantry.models.substitution_feedback import Feedback
from pantry.scoring import Features, ModelError, Scored

POOL_CACHE_SIZE = 50_000  # versions without SERVED_POOL_ARRAYS: product -> its ordered pool, computed on first ask
WARM_POOLS = 2_000  # ... the most bought products' pools computed at load, not on their first request
UNKNOWN_STOCK_PROB = 0.5  # no store_product row: the store has not sold it lately; offer, but below known stock
# Versions trained before the own-history columns (LEGACY_FEATURES) add this to the logit of an item in the live
# repertoire; newer ones learn what the customer's own items are worth (manifest params "repertoire_bonus": 0).
REPERTOIRE_BONUS = 1.0


def _stock_prob(row: Mapping[str, Any] | None) -> float:
    """0 means never offer: out of stock by count, or an in-stock estimate of 0."""
    if row is None:
        return UNKNOWN_STOCK_PROB
    on_hand = row.get("on_hand")
    if on_hand is not None and on_hand <= 0:
        return 0.0
    prob = row.get("in_stock_prob")
    if prob is None:
        return 1.0 if on_hand is not None else UNKNOWN_STOCK_PROB
    return float(prob)


class Substitutions:
    """SubstitutionModel over one version's artifacts."""

    hidden: frozenset[int] = frozenset()  # erased customer ids, set by serving (serving.models.ModelHolder)


    def __init__(self, directory: Path, manifest: Manifest):
        self.version = manifest.version
        a = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        self.cat = Catalogue(**a)
        self.products = self.cat.products
        self.customers = np.load(directory / "customers.npy")
        self.user_factors = np.load(directory / "user_factors.npy")
        self.private_share = np.load(directory / "private_share.npy")
        self.own = ({n: np.load(directory / f"{n}.npy", allow_pickle=False) for n in OWN_ARRAYS}
                    if (directory / "own_indptr.npy").exists() else None)
        self.session = session((directory / "model.onnx").read_bytes())
        names = tuple(manifest.params.get("feature_names") or FEATURE_NAMES[:LEGACY_FEATURES])
        if names != FEATURE_NAMES[: len(names)]:
            raise ModelError(f"substitutions {manifest.version}: its ranker's columns {names} are not this code's")
        self.n_features = len(names)
        # a ranker that sees the customer's own history needs no hand-set bonus for it
        self.repertoire_bonus = float(manifest.params.get("repertoire_bonus", REPERTOIRE_BONUS))
        self.served = ({n: np.load(directory / f"{n}.npy", allow_pickle=False) for n in SERVED_POOL_ARRAYS}
                       if (directory / "served_pool_indptr.npy").exists() else None)
        self.served_min_buyers = float(manifest.params.get("served_pool_min_buyers", SERVED_POOL_MIN_BUYERS))
        self._pools: dict[int, np.ndarray] = {}
        if self.served is None:
            self.candidate_pools(self.products[np.argsort(-self.cat.buyers, kind="stable")[:WARM_POOLS]].tolist())

    def _logit(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["logit"], {"features": x[:, : self.n_features]})[0][:, 0]

    def candidate_pools(self, product_ids: Sequence[int]) -> list[list[int]]:
        """Per product, the POOL best of its type's SCORED_POOL most bought items by the ranker without customer or
        store (serving reads the stock of the first few only, so the order matters): the version's served pools,
        else (rare products, older versions) computed on first ask: cached, one ranker call for a request's new ones."""
        idx = lookup_many(self.products, np.asarray(product_ids, dtype=np.int64))
        out: list[list[int]] = []
        todo: list[int] = []  # slots in out to compute
        for slot, (pid, i) in enumerate(zip(product_ids, idx.tolist(), strict=True)):
            if self.served is not None and i >= 0 and self.cat.buyers[i] >= self.served_min_buyers:
                indptr, items = self.served["served_pool_indptr"], self.served["served_pool_items"]
                out.append(self.products[items[indptr[i] : indptr[i + 1]]].tolist())
                continue
            cached = self._pools.get(int(pid))
            out.append(cached.tolist() if cached is not None else [])
            if cached is None and i >= 0:
                todo.append(slot)
        if todo:
            for slot, best in zip(todo, ordered_pools(self.cat, self._logit, idx[todo]), strict=True):
                self._remember(int(product_ids[slot]), best)
                out[slot] = self.products[best].tolist()
        return out

    def _remember(self, product_id: int, items: np.ndarray) -> None:
        if len(self._pools) >= POOL_CACHE_SIZE:
            self._pools.clear()  # bounded; a cleared entry is recomputed in well under a millisecond
        self._pools[product_id] = self.products[items]

    def own_candidates(self, product_ids: Sequence[int], *, customer_id: int, features: Features) -> list[list[int]]:
        """Per product, the customer's other products of its type (the version's history of them and the live
        customer_repertoire row), most bought first; empty for a version whose ranker does not see them."""
        if self.n_features <= LEGACY_FEATURES:
            return [[] for _ in product_ids]
        own = self._own_items(customer_id, features)
        out = []
        for pid in product_ids:
            i = lookup(self.products, int(pid))
            out.append(self.products[own_candidates(self.cat, i, own)].tolist() if i >= 0 else [])
        return out

    def _customer(self, customer_id: int) -> int:
        # an erased customer (pantry.erasure) is new to every version: its artifact rows are never used
        return -1 if int(customer_id) in self.hidden else lookup(self.customers, int(customer_id))

    def _own_items(self, customer_id: int, features: Features) -> OwnItems:
        history = NO_OWN_ITEMS if self.own is None else OwnItems.from_history(self.own, self._customer(customer_id))
        return history.with_live(self.products, (features or {}).get("customer_repertoire"))

    def _reason(self, usual: int, cand: int, similarity: float, known: bool) -> str:
        if known:
            return "you have bought this before"
        parts = []
        if self.cat.manufacturer[cand] == self.cat.manufacturer[usual] and self.cat.manufacturer[usual] >= 0:
            parts.append("same maker")
        elif self.cat.private[cand] == self.cat.private[usual]:
            parts.append("store brand" if self.cat.private[cand] else "national brand")
        if self.cat.size_code[cand] == self.cat.size_code[usual] and self.cat.size_code[usual] >= 0:
            parts.append("same size")
        diff = float(self.cat.log_price[cand] - self.cat.log_price[usual])
        if abs(diff) < 0.1:
            parts.append("similar price")
        elif diff < 0:
            parts.append("cheaper")
        if similarity > 0.5 and not parts:
            parts.append("often bought by the same customers")
        return ", ".join(parts) or "popular alternative"

    def rank(
        self, product_ids: Sequence[int], candidates: Sequence[Sequence[int]], *, customer_id: int,
        features: Features, stock: Mapping[int, Mapping[str, Any] | None], k: int, feedback: Feedback | None = None,
    ) -> list[list[Scored]]:
        """Per product, its k best candidates in stock: every product's rows in one ranker call. `feedback`: what
        shoppers said of substitutes (a score term, pantry/models/substitution_feedback.py)."""
        out: list[list[Scored]] = [[] for _ in product_ids]
        # every item's candidates as one flat array (slot = the item's position): the stock rule, the lookups and
        # the rows for all of them at once, not item by item
        sizes = np.fromiter(map(len, candidates), dtype=np.int64, count=len(candidates))
        flat = np.fromiter((c for cands in candidates for c in cands), dtype=np.int64, count=int(sizes.sum()))
        slot = np.repeat(np.arange(len(candidates)), sizes)
        rows_of = [stock.get(c) for c in flat.tolist()]
        probs_all = np.fromiter(map(_stock_prob, rows_of), dtype=np.float64, count=len(flat))
        units_all = np.fromiter((float((r or {}).get("units_28d") or 0) for r in rows_of), dtype=np.float32,
                                count=len(flat))
        idx_all = lookup_many(self.products, flat)
        usual_of = lookup_many(self.products, np.asarray(product_ids, dtype=np.int64))
        in_stock = probs_all > 0
        known_all = in_stock & (idx_all >= 0) & (usual_of[slot] >= 0)
        modelled = np.bincount(slot[known_all], minlength=len(candidates)) > 0
        for s_ in np.flatnonzero(~modelled & (np.bincount(slot[in_stock], minlength=len(candidates)) > 0)).tolist():
            # an item the model never saw, or none of its candidates: the caller's order (pool order = popularity),
            # stock-weighted
            at = np.flatnonzero((slot == s_) & in_stock)
            order = at[np.argsort(-probs_all[at], kind="stable")[:k]]
            out[s_] = [Scored(int(flat[j]), float(probs_all[j]), "popular alternative") for j in order]
        sel = np.flatnonzero(known_all & modelled[slot])
        if len(sel) == 0:
            return out
        u = self._customer(customer_id)
        share = float(self.private_share[u]) if u >= 0 else 0.2
        uf = self.user_factors[u] if u >= 0 else None
        own = self._own_items(customer_id, features)
        ids, probs, idx, units = flat[sel], probs_all[sel], idx_all[sel], units_all[sel]
        block = slot[sel]  # the item of each row
        starts = np.searchsorted(block, block)  # rows are in item order: each item's first row
        position = np.arange(len(sel)) - starts  # the row's place among its item's modelled candidates
        usual = usual_of[block]
        x = rows(self.cat, usual, idx, position, share, uf, units, own)[:, : self.n_features]
        logit = self.session.run(["logit"], {"features": x})[0][:, 0].astype(np.float64)
        known = own.holds(idx)
        score = logit + np.log(probs) + self.repertoire_bonus * known
        if feedback is not None and not feedback.empty:
            score += feedback.score_terms(self.cat, block, usual, idx, ids)
        for s_ in np.unique(block).tolist():
            at = np.flatnonzero(block == s_)
            top = at[np.argsort(-score[at], kind="stable")[:k]]
            first = int(usual_of[s_])
            out[s_] = [Scored(int(ids[j]), float(score[j]), self._reason(first, int(idx[j]), float(x[j, 0]),
                                                                         bool(known[j]))) for j in top]
        return out
