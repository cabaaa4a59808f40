"""One visit as a script of HTTP calls, independent of how they are sent.

`visit_script` is a generator: it yields each call (a `pantry.client.Call`: path, body, decoder), receives its
`Reply`, and returns what the visit did. The command's asyncio driver (runner.py) and the Locust user
(locustfile.py) both drive it, so the rules are written once. Order per visit: recommendations (for_you, k 10, the
visit's store) -> next best action (in_store channel, k 3) -> substitutions for the visit's asks (k 3) -> its
outcome events (rules.py) in batches. A failed answer (non-2xx, undecodable) is treated as "nothing shown"; the
visit still posts its purchases.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import msgspec

from load_tests.simulate.rules import Shown, ShownAction, count_by_type, outcome_events
from load_tests.simulate.visits import Visit
from pantry import client as api

RECOMMENDATIONS, NEXT_BEST_ACTION = "/v1/recommendations", "/v1/next-best-action"
SUBSTITUTIONS, EVENTS = "/v1/substitutions", "/v1/events"
REC_K, NBA_K, SUB_K = 10, 3, 3
EVENTS_PER_BATCH = 500  # under the service's max_events_per_batch (1,000) and max body (1 MiB)


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no answer (connection error, timeout)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass
class VisitResult:
    fallbacks: dict[str, int] = field(default_factory=dict)  # path -> answers with a fallback
    undecodable: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)  # rules.count_by_type of the events posted


class OfferMemory:
    """Coupons offered to each household today (coupon -> decision): a redemption later that day names the offer.
    Only the current day per household is kept. A household's visits never run concurrently (schedule.py)."""

    def __init__(self) -> None:
        self._by_customer: dict[int, tuple[date, dict[int, str]]] = {}

    def today(self, customer_id: int, day: date) -> dict[int, str]:
        kept = self._by_customer.get(customer_id)
        if kept is None or kept[0] != day:
            kept = (day, {})
            self._by_customer[customer_id] = kept
        return kept[1]


def _decode(call: api.Call, reply: Reply, result: VisitResult) -> Any:
    if not reply.ok:
        return None
    try:
        return call.decode(reply.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        result.undecodable += 1
        return None


def _fallback(result: VisitResult, path: str, answer: Any) -> None:
    if answer is not None and answer.fallback:
        result.fallbacks[path] = result.fallbacks.get(path, 0) + 1


def visit_script(visit: Visit, memory: OfferMemory, as_of: bool = False) -> Generator[api.Call, Reply, VisitResult]:
    result = VisitResult()
    when = visit.ts if as_of else None
    shown: dict[str, Any] = {}
    today = memory.today(visit.customer_id, visit.day)
    if visit.lines:  # a real basket (redemption-only visits ask nothing)
        call = api.recommendations(visit.customer_id, store_id=visit.store_id, k=REC_K, surface="for_you", as_of=when)
        rec = _decode(call, (yield call), result)
        _fallback(result, RECOMMENDATIONS, rec)
        if rec is not None:
            shown.update(rec_decision=rec.decision_id, recommended=tuple(i.product_id for i in rec.items))
        call = api.next_best_action(visit.customer_id, store_id=visit.store_id, channel="in_store", k=NBA_K,
                                    as_of=when)
        nba = _decode(call, (yield call), result)
        _fallback(result, NEXT_BEST_ACTION, nba)
        if nba is not None:
            shown.update(nba_decision=nba.decision_id,
                         actions=tuple(ShownAction(a.product_id, a.coupon_upc, a.campaign_id) for a in nba.actions))
            today.update({a.coupon_upc: nba.decision_id for a in nba.actions if a.coupon_upc is not None})
        if visit.substitution_asks:
            asked = [a.usual_product_id for a in visit.substitution_asks]
            call = api.substitutions(visit.customer_id, visit.store_id, asked, k=SUB_K, as_of=when)
            sub = _decode(call, (yield call), result)
            _fallback(result, SUBSTITUTIONS, sub)
            if sub is not None:
                shown.update(sub_decision=sub.decision_id,
                             offered={s.product_id: tuple(c.product_id for c in s.candidates)
                                      for s in sub.substitutions})
    events = outcome_events(visit, Shown(**shown, coupons_today=dict(today)))
    for start in range(0, len(events), EVENTS_PER_BATCH):
        batch = events[start:start + EVENTS_PER_BATCH]
        reply = yield api.send_events(batch)
        if reply.ok:
            for name, n in count_by_type(batch).items():
                result.outcomes[name] = result.outcomes.get(name, 0) + n
    return result
