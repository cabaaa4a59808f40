"""Substitution feedback (pantry/substitution_feedback.py): per customer, the (original, substitute) pairs they gave a
verdict on; per original product, the substitutes anyone gave a verdict on. Pure functions over small states.

A feedback event's `product_id` is the substitute (streaming.features.event.from_event). Verdicts are folded into
counts; a pair's newest verdict is the one with the latest event time, and at equal times a rejection (the safe
side: that substitute is then not offered again). Both states are bounded: when a new pair (or substitute) comes
to a full state, the entry with the oldest newest-verdict (ties: the smaller ids) goes, unless the newcomer would
be that entry. Duplicates and events past the lateness bound never get here (the gate drops them).
"""

from __future__ import annotations

from pantry.substitution_feedback import CUSTOMER_PAIRS, SUBSTITUTES_PER_PRODUCT, acceptance_rate
from streaming.features.event import Ev, Values

FEEDBACK = "substitution_feedback"

# a customer's pair: [original, substitute, accepted, rejected, newest verdict time, newest verdict accepted (0/1)]
Pair = list
# an original's substitute: [accepted, rejected, newest verdict time]
Substitute = list


def is_feedback(e: Ev) -> bool:
    """A feedback event the features can fold: it names both products and a verdict."""
    return e.kind == FEEDBACK and e.original_product_id is not None and e.product_id is not None \
        and e.accepted is not None


def customer_feedback_apply(pairs: list[Pair], e: Ev) -> None:
    """Fold one verdict into the customer's pairs (in place)."""
    orig, sub, ok, t = e.original_product_id, e.product_id, bool(e.accepted), e.t
    for p in pairs:
        if p[0] == orig and p[1] == sub:
            _count(p, 2, ok, t)
            return
    if len(pairs) >= CUSTOMER_PAIRS:
        oldest = min(range(len(pairs)), key=lambda i: (pairs[i][4], pairs[i][0], pairs[i][1]))
        o = pairs[oldest]
        if (t, orig, sub) < (o[4], o[0], o[1]):
            return  # older than everything held: not taken in
        del pairs[oldest]
    pairs.append([orig, sub, int(ok), int(not ok), t, int(ok)])


def product_feedback_apply(subs: dict[int, Substitute], e: Ev) -> None:
    """Fold one verdict into its original product's substitutes (in place)."""
    sub, ok, t = e.product_id, bool(e.accepted), e.t
    held = subs.get(sub)
    if held is not None:
        _count(held, 0, ok, t)
        return
    if len(subs) >= SUBSTITUTES_PER_PRODUCT:
        oldest = min(subs, key=lambda s: (subs[s][2], s))
        if (t, sub) < (subs[oldest][2], oldest):
            return
        del subs[oldest]
    subs[sub] = [int(ok), int(not ok), t]


def _count(entry: list, at: int, ok: bool, t: float) -> None:
    """Count a verdict in entry[at] (accepted) / entry[at + 1] (rejected); entry[at + 2] is the newest verdict's
    time and, for a customer's pair, entry[at + 3] whether it was an acceptance."""
    entry[at if ok else at + 1] += 1
    newest = entry[at + 2]
    if t > newest or (t == newest and not ok):
        entry[at + 2] = t
        if len(entry) > at + 3:
            entry[at + 3] = int(ok) if t > newest else 0


def customer_feedback_row(pairs: list[Pair]) -> tuple[Values, float]:
    """The customer_substitution_feedback row (newest verdict first) and its time (the newest verdict's)."""
    ordered = sorted(pairs, key=lambda p: (-p[4], p[0], p[1]))
    return {
        "original_ids": [p[0] for p in ordered],
        "substitute_ids": [p[1] for p in ordered],
        "accepted_counts": [p[2] for p in ordered],
        "rejected_counts": [p[3] for p in ordered],
        "last_accepted": [p[5] for p in ordered],
    }, ordered[0][4]


def product_feedback_row(subs: dict[int, Substitute]) -> tuple[Values, float]:
    """The product_substitution_feedback row of one original (newest verdict first) and its time."""
    ordered = sorted(subs.items(), key=lambda kv: (-kv[1][2], kv[0]))
    return {
        "substitute_ids": [s for s, _ in ordered],
        "accepted_counts": [v[0] for _, v in ordered],
        "rejected_counts": [v[1] for _, v in ordered],
        "acceptance_rates": [acceptance_rate(v[0], v[1]) for _, v in ordered],
    }, ordered[0][1][2]
