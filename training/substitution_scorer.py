"""SubstitutionModel at runtime: pools and item tables in numpy, the conditional-logit ranker in onnxruntime."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pantry.scoring import Features, Scored
from training import registry
from training.onnx_export import session as onnx_session
from training.substitutions import ARRAYS, POOL, SCORED_POOL, Catalogue, neutral_rows, pool
from training.substitutions import features as candidate_features

POOL_CACHE_SIZE = 50_000  # product -> its ordered pool (customer-independent, so computed once per version)
WARM_POOLS = 2_000  # the most bought products get their pool at load (~0.2 ms each), not on their first request
UNKNOWN_STOCK_PROB = 0.5  # no store_product row: the store has not sold it lately; offer, but below known stock
REPERTOIRE_BONUS = 1.0  # logit bonus for a substitute the customer already buys (not learnable from switches)


def _lookup(sorted_ids: np.ndarray, value: int) -> int:
    pos = int(np.searchsorted(sorted_ids, value))
    return pos if pos < len(sorted_ids) and int(sorted_ids[pos]) == value else -1


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
    def __init__(self, directory: Path, manifest: registry.Manifest):
        self.version = manifest.version
        a = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in ARRAYS}
        self.cat = Catalogue(**a)
        self.products = self.cat.products
        self.customers = np.load(directory / "customers.npy")
        self.user_factors = np.load(directory / "user_factors.npy")
        self.private_share = np.load(directory / "private_share.npy")
        self.session = onnx_session((directory / "model.onnx").read_bytes())
        self._pools: dict[int, list[int]] = {}
        for pid in self.products[np.argsort(-self.cat.buyers, kind="stable")[:WARM_POOLS]]:
            self.candidate_pool(int(pid))

    def candidate_pool(self, product_id: int) -> list[int]:
        """The POOL best of the type's SCORED_POOL most bought items, by the ranker without customer or store
        (serving reads the stock of the first few only, so the order matters)."""
        cached = self._pools.get(int(product_id))
        if cached is not None:
            return list(cached)
        i = _lookup(self.products, int(product_id))
        if i < 0:
            return []
        cands = pool(self.cat, i, SCORED_POOL)
        if len(cands) > 1:
            logit = self.session.run(["logit"], {"features": neutral_rows(self.cat, i, cands)})[0][:, 0]
            cands = cands[np.argsort(-logit, kind="stable")]
        out = self.products[cands[:POOL]].tolist()
        if len(self._pools) >= POOL_CACHE_SIZE:
            self._pools.clear()  # bounded; a cleared entry is recomputed in well under a millisecond
        self._pools[int(product_id)] = out
        return list(out)

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
        self, product_id: int, candidates: list[int], *, customer_id: int, features: Features,
        stock: Mapping[int, Mapping[str, Any] | None], k: int,
    ) -> list[Scored]:
        ids = np.asarray(candidates, dtype=np.int64)
        probs = np.array([_stock_prob(stock.get(int(c))) for c in ids], dtype=np.float64)
        ids, probs = ids[probs > 0], probs[probs > 0]
        usual = _lookup(self.products, int(product_id))
        if len(ids) == 0:
            return []
        idx = np.searchsorted(self.products, ids)
        idx = np.clip(idx, 0, len(self.products) - 1)
        known_item = self.products[idx] == ids
        if usual < 0 or not known_item.any():
            # an item the model never saw: keep the caller's order (pool order = popularity), stock-weighted
            order = np.argsort(-probs, kind="stable")[:k]
            return [Scored(int(ids[j]), float(probs[j]), "popular alternative") for j in order]
        ids, probs, idx = ids[known_item], probs[known_item], idx[known_item]
        u = _lookup(self.customers, int(customer_id))
        share = float(self.private_share[u]) if u >= 0 else 0.2
        uf = self.user_factors[u] if u >= 0 else None
        units = np.array([float((stock.get(int(c)) or {}).get("units_28d") or 0) for c in ids], dtype=np.float32)
        x = candidate_features(self.cat, usual, idx, share, uf, units)
        logit = self.session.run(["logit"], {"features": x})[0][:, 0].astype(np.float64)
        rep = (features.get("customer_repertoire") if features else None) or {}
        known = np.isin(ids, np.asarray(rep.get("repertoire_product_ids") or [], dtype=np.int64))
        score = logit + np.log(probs) + REPERTOIRE_BONUS * known
        order = np.argsort(-score, kind="stable")[:k]
        return [
            Scored(int(ids[j]), float(score[j]), self._reason(usual, int(idx[j]), float(x[j, 0]), bool(known[j])))
            for j in order
        ]
