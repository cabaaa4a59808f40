"""RecommenderModel: ALS via ONNX, the customer's purchase history and a gradient-boosted re-ranker (ONNX).

Everything is precomputed at load time (numpy arrays, index maps, onnxruntime sessions); a request does a few
array lookups and one or two ONNX runs. Candidates and their features come from `recommender_candidates`, the
code training builds the re-ranker's sets with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pantry.models._shared import lookup, lookup_many, times
from pantry.models.basket import BasketCompleter
from pantry.models.onnx import session
from pantry.models.recommender_candidates import (
    ASSORTMENT_ARRAYS,
    candidate_features,
    customer_candidates,
    history_from_arrays,
    item_stats,
    load_arrays,
)
from pantry.models.registry import Manifest
from pantry.scoring import Features, Scored, Surface

# Customers whose scored candidates a scorer keeps (about 5 KB each; serving passes Settings.recommender_cache)
RANKED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class Ranked:
    """A customer's candidates with their re-ranker scores. For a known customer it depends only on the model
    version's artifacts (its history, factors and trees), so it is computed once per customer and process."""

    items: np.ndarray  # int64 item indices
    score: np.ndarray  # float32 re-ranker score
    count: np.ndarray  # purchases before the cut (0: never bought)
    days_since: np.ndarray  # days since the last of them (inf: never bought)
    # the customer's history before the cut, which items bought since then are scored with
    n_baskets: float
    first_day: float
    active_weeks: float


class Recommender:
    """RecommenderModel over one version's artifacts (ALS graph, re-ranker graph, history and popularity arrays)."""

    hidden: frozenset[int] = frozenset()  # erased customer ids, set by serving (serving.models.ModelHolder)

    def __init__(self, directory: Path, manifest: Manifest, cache_size: int | None = None):
        self.version = manifest.version
        self.manifest = manifest
        a = load_arrays(directory)
        self.customers = a["customers"]
        self.products = a["products"]
        self.user_factors = a["user_factors"]
        self.item_factors = a["item_factors"]
        self.scorable = np.load(directory / "scorable_items.npy", allow_pickle=False)
        self.popularity = a["popularity"]
        self.stats = item_stats(a["popularity"], a["repeat_rate"], a["trend"])
        self.hist = history_from_arrays(a)
        self.store_ids = a["store_ids"]
        self.store_indptr = a["store_indptr"]
        self.store_items = a["store_items"]
        self.store_units = a["store_units"]
        # the store filter's table: what each store stocks (a version without one filters on 28-day sales)
        self.assortment = tuple(a[n] for n in ASSORTMENT_ARRAYS) if ASSORTMENT_ARRAYS[0] in a else (
            self.store_ids, self.store_indptr, self.store_items)
        self.n_factors = int(self.user_factors.shape[1]) if self.user_factors.ndim == 2 else 0
        self.als = session((directory / "model.onnx").read_bytes())
        rr = directory / "reranker.onnx"
        self.reranker = session(rr.read_bytes()) if rr.exists() else None
        self.basket = BasketCompleter.load(directory)  # complete_basket (None: a version trained before it)
        self.global_popular = np.argsort(-self.popularity, kind="stable")[:1000].astype(np.int64)
        self._zeros = np.zeros((1, self.n_factors), dtype=np.float32)
        self._store_masks: dict[int, np.ndarray] = {}
        cache_size = RANKED_CACHE_SIZE if cache_size is None else cache_size
        self.cache_size = cache_size
        if cache_size > 0:
            self._ranked_known = functools.lru_cache(maxsize=cache_size)(self._ranked_known)

    # ---- pieces ----------------------------------------------------------------------------------------------

    def customer_factors(self, features: Features, u: int) -> np.ndarray | None:
        """The online embedding when it is this model's, else the artifact's user-factor row, else None."""
        row = features.get("customer_embedding") if features else None
        if row and row.get("model_version") == self.version:
            emb = row.get("embedding")
            if emb is not None and len(emb) == self.n_factors:
                return np.asarray(emb, dtype=np.float32).reshape(1, -1)
        if u >= 0:
            return self.user_factors[u : u + 1]
        return None

    def _store_mask(self, store_id: int | None) -> np.ndarray | None:
        """Items the store stocks (sold there in the assortment window), as a read-only mask built once per store
        (a few hundred stores)."""
        if store_id is None:
            return None
        mask = self._store_masks.get(store_id)
        if mask is None:
            ids, indptr, items = self.assortment
            s = lookup(ids, int(store_id))
            mask = np.zeros(len(self.products), dtype=bool)
            if s >= 0:
                mask[items[indptr[s] : indptr[s + 1]]] = True
            mask.flags.writeable = False
            if s >= 0:  # unknown ids are not cached: a client cannot grow the cache without bound
                self._store_masks[store_id] = mask
        return mask

    def _exclude_mask(self, items: np.ndarray, exclude: frozenset[int]) -> np.ndarray:
        if not exclude:
            return np.ones(len(items), dtype=bool)
        ex = np.fromiter(exclude, dtype=np.int64, count=len(exclude))
        return ~np.isin(self.products[items], ex)

    def _rerank(self, features: np.ndarray) -> np.ndarray:
        if self.reranker is None or len(features) == 0:
            # no learned ranker (tiny data): decayed count first, then ALS
            return features[:, 2] * 10.0 + features[:, 8]
        return self.reranker.run(["prob"], {"features": features})[0][:, 0]

    @staticmethod
    def _reason(count: float, days_since: float) -> str:
        if count > 0 and days_since < 1:
            return "you just bought this"
        if count > 0:
            return f"you bought this {times(count)}, last {int(days_since)} days ago"
        return "customers who buy what you buy like this"

    def _rank(self, factors: np.ndarray, u: int) -> Ranked:
        (top_local,) = self.als.run(["top_indices"], {"user_factors": factors})
        cands = customer_candidates(self.hist, u, factors[0], self.item_factors, self.scorable[top_local[0]],
                                    self.stats)
        hist, ref = self.hist, self.hist.ref_day
        first = hist.first_day[hist.row(u)] if u >= 0 else np.empty(0)
        arrays = (cands.items, self._rerank(cands.features), cands.count, cands.days_since)
        for a in arrays:
            a.flags.writeable = False  # cached and shared by every later request of this customer
        return Ranked(*arrays, float(hist.n_baskets[u]) if u >= 0 else 0.0,
                      float(first.min()) if len(first) else ref, float(hist.active_weeks[u]) if u >= 0 else 0.0)

    def _ranked_known(self, u: int) -> Ranked:
        """A known customer's ranking from the version's own factors (its online embedding is the same vector:
        training pushes that row under this version). Wrapped in an LRU cache per process at load time."""
        return self._rank(self.user_factors[u : u + 1], u)

    def warm(self, limit: int | None = None) -> int:
        """Fill the ranking cache with the most active known customers (most baskets before the cut), so that their
        first request costs what the next one does. Serving calls it when it loads a version, before the version
        answers. Returns how many customers were ranked."""
        if not hasattr(self._ranked_known, "cache_info"):
            return 0
        n = min(self.cache_size if limit is None else limit, self.cache_size, len(self.customers))
        for u in np.argsort(-self.hist.n_baskets[: len(self.customers)], kind="stable")[:n].tolist():
            self._ranked_known(u)
        return n

    def _ranked(self, features: Features, u: int) -> Ranked:
        if u >= 0:
            return self._ranked_known(u)
        factors = self.customer_factors(features, u)
        return self._rank(self._zeros if factors is None else factors, u)

    def _with_stream_repertoire(self, features: Features, ranked: Ranked) -> tuple[Ranked, np.ndarray]:
        """Items of the live repertoire bought since the cut join the candidates as just-bought items, scored now
        (returned second, as item indices). Trees score rows independently, so the cached rows keep their scores."""
        row = features.get("customer_repertoire") if features else None
        ids = (row or {}).get("repertoire_product_ids") or []
        if not ids:
            return ranked, np.empty(0, dtype=np.int64)
        idx = np.searchsorted(self.products, np.asarray(ids, dtype=np.int64))
        idx = np.clip(idx, 0, len(self.products) - 1)
        known = self.products[idx] == np.asarray(ids, dtype=np.int64)
        new = np.unique(idx[known])
        in_cands = np.zeros(len(self.products), dtype=bool)  # a mark per item: cheaper than np.isin per request
        in_cands[ranked.items[ranked.count > 0]] = True
        new = new[~in_cands[new]]
        if len(new) == 0:
            return ranked, new
        scores = np.asarray((row or {}).get("repertoire_scores") or [1.0] * len(ids), dtype=np.float64)
        score_of = dict(zip(idx[known].tolist(), scores[known].tolist(), strict=True))
        dec = np.array([score_of[i] for i in new.tolist()], dtype=np.float32)
        ones = np.ones(len(new), dtype=np.float32)
        ref = self.hist.ref_day
        feats = candidate_features(ones, dec, dec, np.full(len(new), ref), np.full(len(new), ref),
                                   ranked.n_baskets, np.zeros(len(new), dtype=np.float32),
                                   self.popularity[new], self.stats.repeat_rate[new], ref, ranked.first_day, ones,
                                   ones, min(ranked.active_weeks + 1.0, 26.0), self.stats.trend[new])
        in_cands[:] = False
        in_cands[new] = True
        keep = ~in_cands[ranked.items]
        return Ranked(
            np.concatenate([ranked.items[keep], new]),
            np.concatenate([ranked.score[keep], self._rerank(feats)]),
            np.concatenate([ranked.count[keep], ones]),
            np.concatenate([ranked.days_since[keep], np.zeros(len(new))]),
            ranked.n_baskets, ranked.first_day, ranked.active_weeks,
        ), new

    # ---- the protocol ------------------------------------------------------------------------------------------

    def recommend(
        self, features: Features, *, customer_id: int, k: int, surface: Surface, exclude: frozenset[int],
        store_id: int | None,
    ) -> list[Scored]:
        if surface == "complete_basket":
            return self._complete_basket(features, customer_id=customer_id, k=k, exclude=exclude, store_id=store_id)
        # an erased customer (pantry.erasure) is new to every version: its artifact rows are never used
        u = -1 if int(customer_id) in self.hidden else lookup(self.customers, int(customer_id))
        ranked = self._ranked(features, u)
        fresh = np.empty(0, dtype=np.int64)
        if surface != "discover":
            ranked, fresh = self._with_stream_repertoire(features, ranked)
        keep = self._exclude_mask(ranked.items, exclude)
        if surface == "buy_again":
            keep &= ranked.count > 0
        elif surface == "discover":
            keep &= ranked.count == 0
        mask = self._store_mask(store_id)
        if mask is not None:
            keep &= mask[ranked.items]
        items, score = ranked.items[keep], ranked.score[keep]
        order = np.argsort(-score, kind="stable")[:k]
        if surface == "buy_again" and len(fresh):
            order = self._pin_fresh(items, fresh, order, k)
        counts, days = ranked.count[keep], ranked.days_since[keep]
        out = [
            Scored(int(self.products[items[j]]), float(score[j]), self._reason(float(counts[j]), float(days[j])))
            for j in order
        ]
        if len(out) < k and surface != "buy_again":
            # too few candidates (new customer, strict store filter): fill with popular items that fit
            taken = set(exclude) | {s.product_id for s in out}
            if surface == "discover":
                taken |= {int(p) for p in self.products[ranked.items[ranked.count > 0]]}
            for s in self.popular(k=k + len(taken), store_id=store_id, exclude=frozenset(taken)):
                if mask is None or mask[lookup(self.products, s.product_id)]:
                    out.append(s)
                    if len(out) == k:
                        break
        return out

    def _complete_basket(self, features: Features, *, customer_id: int, k: int, exclude: frozenset[int],
                         store_id: int | None) -> list[Scored]:
        """What goes with the cart and the session (pantry/models/basket.py), filled up with for_you; for_you alone
        when there is neither (or the version has no co-purchase table)."""
        out: list[Scored] = []
        session = (features.get("customer_session") if features else None) or {}
        if self.basket is not None and (session.get("cart_product_ids") or session.get("session_product_ids")):
            repertoire = features.get("customer_repertoire") or {}
            mask = self._store_mask(store_id)

            def stocked(pids):  # the store filter of the other surfaces
                idx = lookup_many(self.products, pids)
                return (idx >= 0) & mask[np.maximum(idx, 0)]

            got = self.basket.complete(
                list(session.get("cart_product_ids") or ()), list(session.get("session_product_ids") or ()),
                list(repertoire.get("repertoire_product_ids") or ()), list(repertoire.get("repertoire_scores") or ()),
                k=k, exclude=exclude, allowed=None if mask is None else stocked)
            out = [Scored(c.product_id, c.score, c.reason) for c in got]
        if len(out) < k:
            taken = exclude | {s.product_id for s in out}
            out += self.recommend(features, customer_id=customer_id, k=k - len(out), surface="for_you",
                                  exclude=frozenset(taken), store_id=store_id)
        return out

    @staticmethod
    def _pin_fresh(items: np.ndarray, fresh: np.ndarray, order: np.ndarray, k: int) -> np.ndarray:
        """Buy-again shows what the shopper bought since the model was trained in up to k/5 slots: the re-ranker
        scores a one-off purchase low, yet a shopper expects what they just bought to be there."""
        pinned = np.flatnonzero(np.isin(items, fresh))[: max(1, k // 5)].tolist()
        if not pinned:
            return order
        rest = [j for j in order.tolist() if j not in pinned]
        return np.asarray((pinned + rest)[:k], dtype=np.int64)

    def popular(self, *, k: int, store_id: int | None, exclude: frozenset[int],
                mask: np.ndarray | None = None) -> list[Scored]:
        """The k best sellers at the store (else across stores) not in `exclude`, and with `mask` (over product
        indexes: a store's assortment) only those it holds. A store's list is read a slice at a time, best first:
        a big store lists ~2,000 items, and converting them all cost more than the rest of a popularity answer."""
        if store_id is not None:
            s = lookup(self.store_ids, int(store_id))
            if s >= 0:
                lo, hi = int(self.store_indptr[s]), int(self.store_indptr[s + 1])
                step = k + len(exclude) + 8  # enough when the mask keeps nearly all (it does: they sold there)
                out = []
                while lo < hi:
                    end = min(lo + step, hi)
                    items = self.store_items[lo:end]
                    for i, pid, n in zip(items.tolist(), self.products[items].tolist(),
                                         self.store_units[lo:end].tolist(), strict=True):
                        if pid not in exclude and (mask is None or mask[i]):
                            out.append(Scored(pid, float(n), f"popular at your store ({int(n)} sold in 4 weeks)"))
                            if len(out) == k:
                                return out
                    lo, step = end, 2 * step
        out = []
        for i in self.global_popular.tolist():
            pid = int(self.products[i])
            if pid not in exclude and (mask is None or mask[i]):
                out.append(Scored(pid, float(self.popularity[i]), "popular with customers this month"))
                if len(out) == k:
                    break
        return out
