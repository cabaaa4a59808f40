"""What the model endpoints share: the classification of a read into a fallback reason, and the decision record."""

from __future__ import annotations

from collections.abc import Sequence

from serving import metrics
from serving.online import ReadResult, RowRead

CUSTOMER_VIEWS = ("customer_session", "customer_activity", "customer_repertoire", "customer_embedding")


def customer_fallback(result: ReadResult, reads: Sequence[RowRead], customer_views: Sequence[str]) -> str | None:
    """cold_start when no customer view has a row at all; features_stale when every row there is too old."""
    statuses = [row.status for r, row in zip(reads, result.rows, strict=True) if r.view in customer_views]
    if all(s == "missing" for s in statuses):
        return "cold_start"
    if not any(s == "present" for s in statuses):
        return "features_stale"
    return None


def count_fallback(endpoint: str, fallback: str | None) -> None:
    if fallback is not None:
        metrics.PENDING.inc(metrics.child(metrics.FALLBACKS, endpoint, fallback))
