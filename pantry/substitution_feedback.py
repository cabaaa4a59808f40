"""What substitution feedback becomes, shared by the flow that learns it and the service that uses it: the two
feature views, their bounds, and the acceptance prior (docs/STREAMING.md "Substitution feedback",
docs/DECISIONS.md "How is substitution feedback learned online?").

- `customer_substitution_feedback` (customer): the customer's last CUSTOMER_PAIRS (original, substitute) pairs with
  a verdict, newest verdict first: counts of acceptances and rejections, and whether the newest verdict was an
  acceptance. A pair whose newest verdict is a rejection is never offered to that customer for that item again.
- `product_substitution_feedback` (product = the original): its last SUBSTITUTES_PER_PRODUCT substitutes with a
  verdict from anyone, newest verdict first: counts and the acceptance rate with the Beta prior below. Keyed by the
  original alone (not by the pair: two 44-bit product ids do not fit one int64 key), so an answer reads one row per
  requested item, not one per candidate. It holds counts only, no customer: an erasure leaves it (like the KPIs).
"""

from __future__ import annotations

CUSTOMER_VIEW = "customer_substitution_feedback"
PRODUCT_VIEW = "product_substitution_feedback"
CUSTOMER_FEATURES = ("original_ids", "substitute_ids", "accepted_counts", "rejected_counts", "last_accepted")
PRODUCT_FEATURES = ("substitute_ids", "accepted_counts", "rejected_counts", "acceptance_rates")

CUSTOMER_PAIRS = 64  # pairs held per customer (the oldest newest-verdict goes first)
SUBSTITUTES_PER_PRODUCT = 64  # substitutes held per original product (likewise)

# Beta(PRIOR_ACCEPTED, PRIOR_REJECTED) on a pair's acceptance: with no verdict the rate is 0.5 and a score term of 0;
# each verdict moves it, two agreeing verdicts to 0.75 / 0.25. Uniform because no acceptance data exists yet to set
# a better mean; the event archive's labels can replace it (and the hand-set score terms) with a trained ranker.
PRIOR_ACCEPTED = 1.0
PRIOR_REJECTED = 1.0
PRIOR_RATE = PRIOR_ACCEPTED / (PRIOR_ACCEPTED + PRIOR_REJECTED)


def acceptance_rate(accepted: int | float, rejected: int | float) -> float:
    """The posterior mean acceptance of a pair (or of a kind of substitute) after these verdicts."""
    return (accepted + PRIOR_ACCEPTED) / (accepted + rejected + PRIOR_ACCEPTED + PRIOR_REJECTED)
