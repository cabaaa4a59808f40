"""NextBestActionModel: the coupons of a customer's active, approved campaigns, ranked by redemption likelihood.

The point-in-time tables (`Tables`, CSR arrays per customer and per campaign as of the cut) are built by training
(training/nba.py) and loaded here; `candidates` and `features` are the functions training builds its redemption
sets with. The ranker is LightGBM lambdarank in onnxruntime (a conditional logit on a small slice). When no coupon
fits, the customer's most bought products are offered as buy-again nudges. With something in the cart, the first
action is a cross-sell: the best completion of the basket (pantry/models/basket.py) that goes with a cart item.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from pantry.models._shared import lookup, times
from pantry.models.basket import BasketCompleter
from pantry.models.onnx import session
from pantry.models.registry import Manifest
from pantry.scoring import Action, Channel, Features

FEATURE_NAMES = (
    "log_affinity",
    "log_affinity_decayed",
    "log_affinity_recent",
    "redeemed_before",
    "log_coupon_redemptions",
    "log_product_buyers",
    "log_n_products",
    "type_a",
    "type_b",
    "type_c",
    "log_days_since_start",
    "log_days_to_end",
    "log_customer_redemptions",
    "log_distinct_products_bought",
    "log_category_affinity",
    "affinity_share",
    # Relative to the other candidates of the same request (a customer's affinity means more next to their other
    # coupons than on an absolute scale): chosen on three validation cuts before the test cut
    # (experiments/nba_relative_columns.py).
    "affinity_rank",
    "affinity_decayed_vs_best",
    "affinity_vs_best",
    "affinity_share_rank",
    "product_buyers_vs_best",
    "log_coupon_redemption_rate",
)
N_ABSOLUTE = 16  # the first columns are per (customer, coupon); the rest are relative to the candidate list


@dataclass
class Tables:
    """Everything the ranker needs, as of one cut (arrays; CSR per customer / per campaign)."""

    ref_day: float
    coupons: np.ndarray  # sorted coupon_upc
    coupon_redemptions: np.ndarray  # float32 redemptions of the coupon before the cut (anyone)
    coupon_buyers: np.ndarray  # float32 distinct buyers of the coupon's products before the cut
    coupon_n_products: np.ndarray
    customers: np.ndarray  # sorted customer ids with any pair or enrolment
    pair_indptr: np.ndarray  # per customer: coupon idx with affinity/redeemed stats
    pair_coupon: np.ndarray
    pair_aff: np.ndarray
    pair_aff_decayed: np.ndarray
    pair_aff_recent: np.ndarray
    pair_redeemed: np.ndarray
    pair_distinct: np.ndarray  # distinct coupon products the customer bought
    pair_category: np.ndarray  # baskets with a product of the coupon's categories
    customer_baskets: np.ndarray  # float32 per customer
    customer_redemptions: np.ndarray
    enr_indptr: np.ndarray  # per customer: enrolled campaign ids
    enr_campaigns: np.ndarray
    campaigns: np.ndarray  # sorted campaign ids
    campaign_type: np.ndarray  # 0/1/2 = A/B/C
    campaign_start: np.ndarray  # days since epoch
    campaign_end: np.ndarray
    camp_indptr: np.ndarray  # per campaign: coupon idx
    camp_coupons: np.ndarray
    nudge_indptr: np.ndarray  # per customer: top products by decayed count (the buy-again nudge)
    nudge_products: np.ndarray
    nudge_counts: np.ndarray
    cpn_prod_indptr: np.ndarray  # per coupon idx: its product ids (sorted)
    cpn_products: np.ndarray


# The arrays of a version (one .npy each, plus ref_day.npy)
FIELDS = tuple(f for f in Tables.__dataclass_fields__ if f != "ref_day")


def candidates(t: Tables, customer_id: int, campaign_ids: np.ndarray, day: float) -> tuple[np.ndarray, np.ndarray]:
    """(coupon idx, campaign idx) pairs: coupons of the given campaigns the customer is enrolled in, active on
    `day`. A coupon in several of those campaigns appears once (its first campaign)."""
    u = lookup(t.customers, customer_id)
    if u < 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    enrolled = t.enr_campaigns[t.enr_indptr[u] : t.enr_indptr[u + 1]]
    chosen = np.intersect1d(enrolled, campaign_ids)
    cpn, camp = [], []
    for c in chosen:
        ci = lookup(t.campaigns, int(c))
        if ci < 0 or not (t.campaign_start[ci] <= day <= t.campaign_end[ci] + 1.0):
            continue
        items = t.camp_coupons[t.camp_indptr[ci] : t.camp_indptr[ci + 1]]
        cpn.append(items)
        camp.append(np.full(len(items), ci, dtype=np.int64))
    if not cpn:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    cpn_all, camp_all = np.concatenate(cpn), np.concatenate(camp)
    _uniq, first = np.unique(cpn_all, return_index=True)
    first = np.sort(first)
    return cpn_all[first], camp_all[first]


def features(t: Tables, customer_id: int, coupon_idx: np.ndarray, campaign_idx: np.ndarray, day: float) -> np.ndarray:
    out = np.zeros((len(coupon_idx), len(FEATURE_NAMES)), dtype=np.float32)
    u = lookup(t.customers, customer_id)
    if u >= 0:
        sl = slice(t.pair_indptr[u], t.pair_indptr[u + 1])
        have = t.pair_coupon[sl]
        pos = np.clip(np.searchsorted(have, coupon_idx), 0, max(len(have) - 1, 0))
        hit = (have[pos] == coupon_idx) if len(have) else np.zeros(len(coupon_idx), dtype=bool)
        for col, arr in ((0, t.pair_aff), (1, t.pair_aff_decayed), (2, t.pair_aff_recent), (3, t.pair_redeemed),
                         (13, t.pair_distinct), (14, t.pair_category)):
            vals = arr[sl][pos] if len(have) else np.zeros(len(coupon_idx))
            out[:, col] = np.where(hit, vals > 0 if col == 3 else np.log1p(vals), 0.0)
        out[:, 12] = np.log1p(t.customer_redemptions[u])
        out[:, 15] = np.expm1(out[:, 0]) / max(float(t.customer_baskets[u]), 1.0)
    out[:, 4] = np.log1p(t.coupon_redemptions[coupon_idx])
    out[:, 5] = np.log1p(t.coupon_buyers[coupon_idx])
    out[:, 6] = np.log1p(t.coupon_n_products[coupon_idx])
    ctype = t.campaign_type[campaign_idx]
    out[:, 7], out[:, 8], out[:, 9] = ctype == 0, ctype == 1, ctype == 2
    out[:, 10] = np.log1p(np.maximum(day - t.campaign_start[campaign_idx], 0.0))
    out[:, 11] = np.log1p(np.maximum(t.campaign_end[campaign_idx] - day, 0.0))
    relative_columns(out)
    return out


def _rank_desc(values: np.ndarray) -> np.ndarray:
    """0 for the largest value, ties in candidate order (stable), as the served ranking breaks them."""
    return np.argsort(np.argsort(-values, kind="stable"), kind="stable").astype(np.float32)


def relative_columns(out: np.ndarray) -> None:
    """Fill the columns after N_ABSOLUTE from the absolute ones of the same candidate list (in place)."""
    if len(out) == 0:
        return
    aff, dec, share, buyers = out[:, 0], out[:, 1], out[:, 15], out[:, 5]
    out[:, 16] = np.log1p(_rank_desc(dec))
    out[:, 17] = dec - dec.max()
    out[:, 18] = aff - aff.max()
    out[:, 19] = np.log1p(_rank_desc(share))
    out[:, 20] = buyers - buyers.max()
    # redemptions per buyer of the coupon's products (x100): how readily its buyers use it
    out[:, 21] = np.log1p(np.expm1(out[:, 4]) / (np.expm1(buyers) + 1.0) * 100.0)


def load_tables(directory: Path) -> Tables:
    arrays = {name: np.load(directory / f"{name}.npy", allow_pickle=False) for name in FIELDS}
    return Tables(ref_day=float(np.load(directory / "ref_day.npy")[0]), **arrays)


TYPE_NAMES = ("A", "B", "C")


class NextBestAction:
    """NextBestActionModel over one version's artifacts."""

    # the module's `features`, reachable inside `actions` (whose protocol parameter of that name shadows it)
    _rows = staticmethod(features)
    hidden: frozenset[int] = frozenset()  # erased customer ids, set by serving (serving.models.ModelHolder)

    def __init__(self, directory: Path, manifest: Manifest):
        self.version = manifest.version
        self.t = load_tables(directory)
        self.session = session((directory / "model.onnx").read_bytes())
        self.basket = BasketCompleter.load(directory)  # cross_sell (None: a version trained before it)

    def _rationale(self, x: np.ndarray, campaign_idx: int) -> str:
        aff = float(np.expm1(x[0]))
        kind = TYPE_NAMES[int(self.t.campaign_type[campaign_idx])]
        if x[3] > 0:
            return f"you redeemed this coupon before (campaign type {kind})"
        if aff >= 1:
            return f"covers products you bought {times(aff)} (campaign type {kind})"
        return f"popular coupon in your campaign (type {kind})"

    def _nudges(self, customer_id: int, k: int, floor: float) -> list[Action]:
        u = lookup(self.t.customers, customer_id)
        if u < 0:
            return []
        sl = slice(self.t.nudge_indptr[u], self.t.nudge_indptr[u + 1])
        return [
            Action(action_type="buy_again", product_id=int(p), score=floor * 0.5 ** (i + 1),
                   rationale=f"you buy this regularly ({times(n)})")
            for i, (p, n) in enumerate(zip(self.t.nudge_products[sl], self.t.nudge_counts[sl], strict=True))
        ][:k]

    def actions(
        self, features: Features, *, customer_id: int, campaign_ids: frozenset[int], k: int, channel: Channel,
        now: datetime,
    ) -> list[Action]:
        day = now.timestamp() / 86_400.0
        if int(customer_id) in self.hidden:  # an erased customer (pantry.erasure): new to every version
            customer_id = -1  # no customer has this id: no pairs, enrolments or nudges
        ids = np.fromiter(campaign_ids, dtype=np.int64, count=len(campaign_ids))
        cpn, camp = candidates(self.t, int(customer_id), ids, day)
        out: list[Action] = []
        if len(cpn):
            x = self._rows(self.t, int(customer_id), cpn, camp, day)
            prob = self.session.run(["prob"], {"features": x})[0][:, 0]
            order = np.argsort(-prob, kind="stable")[:k]
            out = [
                Action(action_type="coupon", score=float(prob[j]), rationale=self._rationale(x[j], int(camp[j])),
                       campaign_id=int(self.t.campaigns[camp[j]]), coupon_upc=int(self.t.coupons[cpn[j]]))
                for j in order
            ]
        return self._finish(out, features, int(customer_id), k)

    def _finish(self, out: list[Action], features: Features, customer_id: int, k: int) -> list[Action]:
        """The coupons `out`, then buy-again nudges when fewer than k fit (none toward what is in the cart); with a
        cart, a cross-sell first."""
        cart = set(((features.get("customer_session") if features else None) or {}).get("cart_product_ids") or ())
        if len(out) < k:  # no coupon fits (or too few): nudge toward what they buy anyway, not yet in the cart
            floor = min((a.score for a in out), default=1.0)
            nudges = self._nudges(customer_id, k - len(out) + len(cart), floor)
            out = out + [a for a in nudges if a.product_id not in cart][: k - len(out)]
        cross = self._cross_sell(features)
        if cross is not None:  # the shopper is filling a basket now: what goes with it comes first
            out = [cross, *(a for a in out if a.product_id != cross.product_id)][:k]
        return out

    def _cross_sell(self, features: Features) -> Action | None:
        """The best completion of the cart that goes with one of its items (the rationale names it), or None."""
        session = (features.get("customer_session") if features else None) or {}
        cart = list(session.get("cart_product_ids") or ())
        if self.basket is None or not cart:
            return None
        repertoire = features.get("customer_repertoire") or {}
        got = self.basket.complete(cart, list(session.get("session_product_ids") or ()),
                                   list(repertoire.get("repertoire_product_ids") or ()),
                                   list(repertoire.get("repertoire_scores") or ()), k=10, exclude=frozenset(cart))
        best = next((c for c in got if c.anchor_in_cart), None)
        if best is None:
            return None
        return Action(action_type="cross_sell", product_id=best.product_id, score=best.score, rationale=best.reason)
