"""NextBestActionModel at runtime: point-in-time tables in numpy, the conditional-logit ranker in onnxruntime."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from pantry.scoring import Action, Channel, Features
from training import registry
from training.nba import candidates, load_tables
from training.nba import features as coupon_features
from training.onnx_export import session as onnx_session
from training.scorers import _lookup, _times  # scorers imports this module lazily, so no cycle

TYPE_NAMES = ("A", "B", "C")


class NextBestAction:
    def __init__(self, directory: Path, manifest: registry.Manifest):
        self.version = manifest.version
        self.t = load_tables(directory)
        self.session = onnx_session((directory / "model.onnx").read_bytes())

    def _rationale(self, x: np.ndarray, campaign_idx: int) -> str:
        aff = float(np.expm1(x[0]))
        kind = TYPE_NAMES[int(self.t.campaign_type[campaign_idx])]
        if x[3] > 0:
            return f"you redeemed this coupon before (campaign type {kind})"
        if aff >= 1:
            return f"covers products you bought {_times(aff)} (campaign type {kind})"
        return f"popular coupon in your campaign (type {kind})"

    def _nudges(self, customer_id: int, k: int, floor: float) -> list[Action]:
        u = _lookup(self.t.customers, customer_id)
        if u < 0:
            return []
        sl = slice(self.t.nudge_indptr[u], self.t.nudge_indptr[u + 1])
        return [
            Action(action_type="buy_again", product_id=int(p), score=floor * 0.5 ** (i + 1),
                   rationale=f"you buy this regularly ({_times(n)})")
            for i, (p, n) in enumerate(zip(self.t.nudge_products[sl], self.t.nudge_counts[sl], strict=True))
        ][:k]

    def actions(
        self, features: Features, *, customer_id: int, campaign_ids: frozenset[int], k: int, channel: Channel,
        now: datetime,
    ) -> list[Action]:
        day = now.timestamp() / 86_400.0
        ids = np.fromiter(campaign_ids, dtype=np.int64, count=len(campaign_ids))
        cpn, camp = candidates(self.t, int(customer_id), ids, day)
        out: list[Action] = []
        if len(cpn):
            x = coupon_features(self.t, int(customer_id), cpn, camp, day)
            prob = self.session.run(["prob"], {"features": x})[0][:, 0]
            order = np.argsort(-prob, kind="stable")[:k]
            out = [
                Action(action_type="coupon", score=float(prob[j]), rationale=self._rationale(x[j], int(camp[j])),
                       campaign_id=int(self.t.campaigns[camp[j]]), coupon_upc=int(self.t.coupons[cpn[j]]))
                for j in order
            ]
        if len(out) < k:  # no coupon fits (or too few): nudge toward what they buy anyway
            floor = min((a.score for a in out), default=1.0)
            out.extend(self._nudges(int(customer_id), k - len(out), floor))
        return out
