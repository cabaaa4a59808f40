"""Substitution feedback in an answer (pantry/substitution_feedback.py has the views and the prior): which substitutes
this customer rejected for which item, and the ranking term that what shoppers said adds to a candidate's score.

The rule (docs/DECISIONS.md "How is substitution feedback learned online?"): a pair whose newest verdict from this
customer is a rejection is never offered to them for that item again, whatever its age. Otherwise a modelled
candidate's score (the ranker's logit + log stock probability) gets

    log(rate_pair / 0.5) + sum over brand, size, price of log(rate_kind / 0.5)

where rate_pair is the pair's acceptance rate over all shoppers (product_substitution_feedback) and rate_kind the
customer's own acceptance of substitutes of the candidate's kind relative to its original: same maker or another,
same package size or another, cheaper / similar (|log price difference| < 0.1) / dearer, counted over the pairs in
customer_substitution_feedback with the served version's catalogue (the same tests as the answer's reasons). Every
rate is a Beta(1, 1) posterior mean, so without verdicts each term is 0 and the ranking is the model's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pantry.featurestore.reader import Row, RowRead
from pantry.models._shared import lookup_many
from pantry.substitution_feedback import (
    CUSTOMER_VIEW,
    PRIOR_ACCEPTED,
    PRIOR_RATE,
    PRIOR_REJECTED,
    PRODUCT_VIEW,
)

SIMILAR_PRICE = 0.1  # |log unit price difference| below this is "similar price" (as the reasons say)
_SLOT_SHIFT = 44  # pair key of a request: item slot << 44 | substitute (product ids < 2^44, slots < 2^19)


def reads(customer_id: int, product_ids: Sequence[int]) -> list[RowRead]:
    """The rows an answer reads with its others (one round trip): the customer's, then one per requested item."""
    return [RowRead(CUSTOMER_VIEW, (customer_id,)), *(RowRead(PRODUCT_VIEW, (p,)) for p in product_ids)]


class Feedback:
    """What the feedback rows of one request say. `rejected`: original -> substitutes whose newest verdict from
    this customer is a rejection. The customer's pairs and the items' substitutes are kept as arrays for
    `score_terms`."""

    __slots__ = ("accepted", "originals", "pair_keys", "pair_rates", "rejected", "rejections", "subs")

    def __init__(self, rejected: dict[int, set[int]], originals: np.ndarray, subs: np.ndarray, accepted: np.ndarray,
                 rejections: np.ndarray, pair_keys: np.ndarray, pair_rates: np.ndarray):
        self.rejected = rejected
        self.originals, self.subs, self.accepted, self.rejections = originals, subs, accepted, rejections
        self.pair_keys, self.pair_rates = pair_keys, pair_rates  # sorted slot << 44 | substitute, their rates

    @property
    def empty(self) -> bool:
        return len(self.originals) == 0 and len(self.pair_keys) == 0

    @classmethod
    def from_rows(cls, rows: Sequence[Row]) -> Feedback:
        """From the rows of `reads` (in that order; none when the store could not be read). A rejection counts at
        any age (raw values); the ranking terms use rows within their TTL."""
        if not rows:
            return NO_FEEDBACK
        customer, items = rows[0], rows[1:]
        rejected: dict[int, set[int]] = {}
        raw = customer.raw_values or {}
        for orig, sub, last in zip(raw.get("original_ids") or (), raw.get("substitute_ids") or (),
                                   raw.get("last_accepted") or (), strict=False):
            if not last:
                rejected.setdefault(int(orig), set()).add(int(sub))
        fresh = customer.values or {}
        originals, subs, accepted, rejections = (
            np.asarray(fresh.get(f) or (), dtype=np.int64)
            for f in ("original_ids", "substitute_ids", "accepted_counts", "rejected_counts"))
        keys, rates = [], []
        for slot, row in enumerate(items):
            values = row.values or {}
            ids = values.get("substitute_ids") or ()
            if ids:
                keys.append((np.int64(slot) << _SLOT_SHIFT) | np.asarray(ids, dtype=np.int64))
                rates.append(np.asarray(values.get("acceptance_rates") or (), dtype=np.float64))
        pair_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)
        pair_rates = np.concatenate(rates) if rates else np.zeros(0, dtype=np.float64)
        order = np.argsort(pair_keys, kind="stable")
        n = min(len(originals), len(subs), len(accepted), len(rejections))
        return cls(rejected, originals[:n], subs[:n], accepted[:n], rejections[:n], pair_keys[order],
                   pair_rates[order])

    def without_rejected(self, product_ids: Sequence[int], lists: list[list[int]]) -> list[list[int]]:
        """Each item's candidates less those this customer rejected for it."""
        if not self.rejected:
            return lists
        return [[c for c in items if c not in no] if (no := self.rejected.get(pid)) else items
                for pid, items in zip(product_ids, lists, strict=True)]

    def score_terms(self, cat, slots: np.ndarray, usual: np.ndarray, cands: np.ndarray, cand_ids: np.ndarray
                    ) -> np.ndarray:
        """The term added to each modelled row's score: row i is candidate cand_ids[i] (catalogue index cands[i])
        for item slots[i] (catalogue index usual[i]). `cat`: the version's Catalogue."""
        term = np.zeros(len(cands), dtype=np.float64)
        if len(self.pair_keys):
            keys = (slots.astype(np.int64) << _SLOT_SHIFT) | cand_ids.astype(np.int64)
            at = np.searchsorted(self.pair_keys, keys)
            at = np.minimum(at, len(self.pair_keys) - 1)
            hit = self.pair_keys[at] == keys
            term[hit] += np.log(np.clip(self.pair_rates[at[hit]], 1e-6, 1.0) / PRIOR_RATE)
        if len(self.originals):
            o, s = lookup_many(cat.products, self.originals), lookup_many(cat.products, self.subs)
            pair_kinds = kinds(cat, o, s)
            row_kinds = kinds(cat, usual, cands)
            for dim in range(pair_kinds.shape[0]):
                known = pair_kinds[dim] >= 0
                if not known.any():
                    continue
                acc = np.bincount(pair_kinds[dim][known], weights=self.accepted[known], minlength=3)
                rej = np.bincount(pair_kinds[dim][known], weights=self.rejections[known], minlength=3)
                rate = (acc + PRIOR_ACCEPTED) / (acc + rej + PRIOR_ACCEPTED + PRIOR_REJECTED)
                mine = row_kinds[dim] >= 0
                term[mine] += np.log(rate[row_kinds[dim][mine]] / PRIOR_RATE)
        return term


def kinds(cat, originals: np.ndarray, substitutes: np.ndarray) -> np.ndarray:
    """Per (original, substitute) of catalogue indexes, its kind on three dimensions, -1 where unknown:
    brand (0 same maker, 1 another), size (0 same, 1 another), price (0 cheaper, 1 similar, 2 dearer)."""
    out = np.full((3, len(originals)), -1, dtype=np.int64)
    ok = (originals >= 0) & (substitutes >= 0)
    o, s = originals[ok], substitutes[ok]
    maker_o, maker_s = cat.manufacturer[o], cat.manufacturer[s]
    out[0, ok] = np.where(maker_o >= 0, (maker_o != maker_s).astype(np.int64), -1)
    size_o, size_s = cat.size_code[o], cat.size_code[s]
    out[1, ok] = np.where((size_o >= 0) & (size_s >= 0), (size_o != size_s).astype(np.int64), -1)
    diff = cat.log_price[s].astype(np.float64) - cat.log_price[o].astype(np.float64)
    price = np.where(diff < -SIMILAR_PRICE, 0, np.where(diff > SIMILAR_PRICE, 2, 1))
    out[2, ok] = np.where(np.isfinite(diff), price, -1)
    return out


NO_FEEDBACK = Feedback({}, *(np.zeros(0, dtype=np.int64) for _ in range(4)), np.zeros(0, dtype=np.int64),
                       np.zeros(0, dtype=np.float64))
