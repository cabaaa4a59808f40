"""Decisions (ml_engineer): look a served answer up by decision id, or list a customer's latest ones, to see why a
customer got what they got: the request, the model version and experiment arm, the ages of the features the answer
was made with, the items with their reasons, the fallback, and the outcome events reported for it.

A decision names a customer and what they were shown: the page is for the `ml_engineer` role only (the controller's
guard; `admin` implies it), its answers are never cached (`Cache-Control: no-store`), and the access log records the
route, never the query string. The look-ups are bounded reads (serving/console/decision_lookup.py) and the page says
what each one covered. Bad input is a 400 page that says what is expected; Redis not answering is a notice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

import msgspec
from litestar import Controller, Request, get
from litestar.response import Template

from pantry.events import MAX_ID
from pantry.keys import DECISIONS_PER_CUSTOMER
from pantry.settings import Settings
from serving.console import decision_lookup as lookup
from serving.console.pages import render
from serving.console.session import console_guard, operator_of
from serving.decisions import DecisionRow
from serving.services import Injected, Services

_CUSTOMER_ID: Final = re.compile(r"[0-9]{1,19}")
ECHO_CHARS: Final = 40  # how much of a bad input the error message repeats
LIST_SHOWN: Final = 20  # ids of a request's list shown before "and N more"
UNAVAILABLE: Final = "The decision log cannot be read right now (Redis did not answer): try again in a moment."
# why an answer is not the model's normal one (serving/answers/pipeline.py decides)
FALLBACK_MEANS: Final = {
    "store_unavailable": "Redis or the feature registry could not be reached: answered without features.",
    "cold_start": "no row in any customer view: a customer the feature store does not know (yet).",
    "features_stale": "every customer row was older than its view's TTL.",
    "model_unavailable": "no model was loaded (or the experiment's treatment could not be): popularity answered.",
    "model_error": "the model raised: its degraded answer was served.",
}


class BadQuery(ValueError):
    """The form's input is not a customer id or a decision id: the message says what is expected."""


class Query(msgspec.Struct, frozen=True):
    customer_id: int | None = None
    decision_id: str | None = None


def parse_query(params: Mapping[str, str]) -> Query:
    """The look-up the form asks for (both inputs empty: none). Raises BadQuery."""
    customer = (params.get("customer_id") or "").strip()
    decision = (params.get("decision_id") or "").strip()
    if customer and decision:
        raise BadQuery("Give a customer id or a decision id, not both.")
    if customer:
        if not _CUSTOMER_ID.fullmatch(customer) or int(customer) > MAX_ID:
            raise BadQuery(f"A customer id is a whole number from 0 to {MAX_ID:,}; got “{customer[:ECHO_CHARS]}”.")
        return Query(customer_id=int(customer))
    if decision:
        if len(decision) > lookup.DECISION_ID_MAX_CHARS or not lookup.DECISION_ID.fullmatch(decision):
            raise BadQuery("A decision id is the answer's time in ms as hex, a dash and 16 hex digits, at most "
                           f"{lookup.DECISION_ID_MAX_CHARS} characters (like 1a23a514f15-7ba1ddec3c67dfcd); "
                           f"got “{decision[:ECHO_CHARS]}{'…' if len(decision) > ECHO_CHARS else ''}”.")
        return Query(decision_id=decision)
    return Query()


def utc(ms: float | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _json(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None


def _truncated(obj: Any, what: str) -> str:
    """The note for a JSON field the log did not keep whole (DecisionLog's size cap), or could not be read."""
    if isinstance(obj, dict) and set(obj) == {"truncated_bytes"}:
        return f"The {what} was {obj['truncated_bytes']:,} bytes, over the decision log's field limit: not kept."
    return f"The {what} could not be read from the log entry."


# ---- the parts of one decision ---------------------------------------------------------------------------------


def request_rows(request: Any) -> tuple[list[tuple[str, str]], str]:
    """The request's fields as (name, text); a long list shows its first LIST_SHOWN ids."""
    if not isinstance(request, dict) or set(request) == {"truncated_bytes"}:
        return [], _truncated(request, "request")
    rows = []
    for name, value in request.items():
        if value is None:
            text = "not given"
        elif isinstance(value, list):
            more = f" … and {len(value) - LIST_SHOWN:,} more" if len(value) > LIST_SHOWN else ""
            text = ", ".join(str(v) for v in value[:LIST_SHOWN]) + more if value else "none"
        else:
            text = str(value)
        rows.append((name, text))
    return rows, ""


class AgeRow(msgspec.Struct):
    view: str
    age: str
    ttl: str
    state: str  # fresh | stale | no row | newer than the clock


def _duration(s: float) -> str:
    s = abs(s)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h" if s < 2 * 86400 else f"{s / 86400:.1f} days"


def age_rows(ages: Any, ttls: Mapping[str, float]) -> tuple[list[AgeRow], str]:
    """Each customer view's age at the answer's clock (the log records age_s per view), judged by the view's TTL."""
    if not isinstance(ages, dict) or set(ages) == {"truncated_bytes"}:
        return [], _truncated(ages, "feature ages")
    if not ages:
        return [], "No feature was read for this answer (the feature store was not available)."
    rows = []
    for view, age in ages.items():
        ttl = ttls.get(view, 0.0)
        if not isinstance(age, int | float):
            rows.append(AgeRow(view, "", _duration(ttl) if ttl else "none", "no row"))
            continue
        state = "newer than the clock" if age < 0 else "stale" if ttl and age > ttl else "fresh"
        rows.append(AgeRow(view, _duration(age), _duration(ttl) if ttl else "none", state))
    return rows, ""


def lag_note(stream_lag_s: float | None) -> str:
    """What the live flow's lag at the read (the log's `stream_lag_s`) means for these ages: a row's age is its
    entity's last change and cannot show events still waiting in the stream."""
    if stream_lag_s is None:
        return ""
    if stream_lag_s < 1.0:  # within the heartbeat's own second: caught up
        return "The live flow was caught up when these rows were read."
    return (f"The live flow was {_duration(stream_lag_s)} behind when these rows were read: they may miss the events "
            f"of that last {_duration(stream_lag_s)}, whatever their ages say.")


class _Candidate(msgspec.Struct):
    product_id: int | None = None
    score: float | None = None
    reason: str = ""


class _Item(msgspec.Struct):
    """Any answer's item: a recommendation (pantry.scoring.Scored), a substitution (with candidates) or an action."""

    product_id: int | None = None
    score: float | None = None
    reason: str = ""
    candidates: list[_Candidate] | None = None
    action_type: str | None = None
    rationale: str = ""
    campaign_id: int | None = None
    coupon_upc: int | None = None


class ItemRow(msgspec.Struct):
    rank: int | None
    product_id: int | None  # recommended, a substitute, or an action's product
    for_product: int | None = None  # substitutions: the product it stands in for
    action: str | None = None
    campaign_id: int | None = None
    coupon_upc: int | None = None
    score: float | None = None
    reason: str = ""


_items_decoder = msgspec.json.Decoder(list[_Item] | dict)  # dict: the {"truncated_bytes": N} marker


def item_rows(items_json: str) -> tuple[list[ItemRow], str, str]:
    """(rows, kind: products | substitutions | actions, note)."""
    try:
        items = _items_decoder.decode(items_json)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return [], "products", _truncated(None, "item list")
    if isinstance(items, dict):
        return [], "products", _truncated(items, "item list")
    rows: list[ItemRow] = []
    if any(item.candidates is not None for item in items):
        for item in items:
            for j, c in enumerate(item.candidates or ()):
                rows.append(ItemRow(j + 1, c.product_id, for_product=item.product_id, score=c.score, reason=c.reason))
            if not item.candidates:
                rows.append(ItemRow(None, None, for_product=item.product_id, reason="no substitute offered"))
        return rows, "substitutions", ""
    if any(item.action_type is not None for item in items):
        return [ItemRow(i + 1, item.product_id, action=item.action_type, campaign_id=item.campaign_id,
                        coupon_upc=item.coupon_upc, score=item.score, reason=item.rationale)
                for i, item in enumerate(items)], "actions", ""
    return [ItemRow(i + 1, item.product_id, score=item.score, reason=item.reason)
            for i, item in enumerate(items)], "products", ""


class OutcomeRow(msgspec.Struct):
    received_at: str  # when the event stream got it (UTC)
    event_time: str  # the event's own `ts`
    kind: str
    product_id: int | None
    shown: bool | None  # the product was among the decision's items (None: the event names no product)
    detail: str
    event_id: str


def _outcome_detail(e: Any) -> tuple[int | None, str]:
    kind = type(e).__struct_config__.tag
    if kind == "substitution_feedback":
        return e.substitute_product_id, f"{'accepted' if e.accepted else 'refused'} for {e.original_product_id}"
    if kind == "purchase":
        return e.product_id, f"quantity {e.quantity}, sales value {e.sales_value:.2f}"
    if kind == "add_to_cart":
        return e.product_id, f"quantity {e.quantity}"
    if kind == "coupon_redemption":
        return None, f"campaign {e.campaign_id}, coupon {e.coupon_upc}"
    return getattr(e, "product_id", None), ""


def outcome_rows(reported: list[lookup.Reported], shown: set[int]) -> list[OutcomeRow]:
    rows = []
    for r in reported:
        product, detail = _outcome_detail(r.event)
        rows.append(OutcomeRow(utc(r.received_ms), r.event.ts.strftime("%Y-%m-%d %H:%M:%S"),
                               type(r.event).__struct_config__.tag, product,
                               None if product is None else product in shown, detail, r.event.event_id))
    return rows


# ---- what each look-up covered, in words ------------------------------------------------------------------------

_STOPPED: Final = {
    "time": "the page's time limit for reading Redis was reached",
    "store": "then Redis stopped answering",
}


def _span(scan: lookup.Scan) -> str:
    return f"{utc(scan.oldest_ms)} to {utc(scan.newest_ms)} UTC"


def customer_note(result: lookup.CustomerDecisions, settings: Settings) -> str:
    kept = (f"the log keeps each customer's newest {DECISIONS_PER_CUSTOMER} decision ids, for "
            f"{settings.decisions_retention_s / 86400:.0f} days")
    if not result.found and not result.missing:
        return f"No decision of this customer is logged ({kept})."
    note = f"The customer's {len(result.found)} newest decisions ({kept})."
    if result.missing:
        note += f" {len(result.missing)} older ones are no longer in the log (its bounds trimmed them)."
    if result.unsearched:
        note += (f" {len(result.unsearched)} were not looked for: "
                 + ("Redis stopped answering part way." if not result.reachable else "the page's time limit."))
    return note


def decision_scan_text(scan: lookup.Scan, settings: Settings) -> str:
    kept = (f"The log keeps decisions for {settings.decisions_retention_s / 86400:.0f} days and at most "
            f"{settings.decisions_maxlen:,}; a worker that cannot reach Redis drops its log writes.")
    window = (f"within {lookup.FLUSH_WINDOW_MS // 1000} s after the time in its id (or "
              f"{lookup.CLOCK_SLACK_MS // 1000} s before)")
    if not scan.entries:
        return f"No decision was logged {window}. {kept}"
    why = f" ({_STOPPED[scan.stopped]})" if scan.stopped in _STOPPED else ""
    return f"Not among the {scan.entries:,} decisions logged {window}, from {_span(scan)}{why}. {kept}"


def outcome_scan_text(scan: lookup.Scan, window_s: float) -> str:
    if not scan.entries:
        return ("The event stream could not be read (Redis did not answer)." if scan.stopped == "store"
                else "No event has been received since this decision.")
    head = f"Outcome events posted with this decision id, among the {scan.entries:,} events received {_span(scan)}"
    tail = {
        "end": " (every event received since the decision).",
        "count": f" (the first {lookup.OUTCOME_SCAN_MAX:,} from the decision's time on: later ones are not searched "
                 f"here; the live flow attributes outcomes for up to {_duration(window_s)}).",
    }.get(scan.stopped, f" ({_STOPPED.get(scan.stopped, '')}: later events are not searched).")
    return (head + tail + " They are the events as posted: the live flow's KPI totals count each decision, product "
            "and kind once and leave late and duplicate events out.")


# ---- the page ---------------------------------------------------------------------------------------------------


class DecisionView(msgspec.Struct):
    """One decision as the page shows it."""

    decision_id: str
    customer_id: int
    decided_at: str  # from the id: the serving worker's clock when it answered (UTC)
    logged_at: str  # the log entry's stream time
    clock: str  # the answer's `now`: as_of, else the event clock (the stream's watermark), else wall time
    row: DecisionRow
    fallback_means: str
    request: list[tuple[str, str]]
    request_note: str
    ages: list[AgeRow]
    ages_note: str
    items: list[ItemRow]
    items_kind: str
    items_note: str


def decision_view(row: DecisionRow, ttls: Mapping[str, float]) -> DecisionView:
    request, request_note = request_rows(_json(row.request))
    ages, ages_note = age_rows(_json(row.feature_ages), ttls)
    ages_note = " ".join(n for n in (ages_note, lag_note(row.stream_lag_s)) if n)
    items, kind, items_note = item_rows(row.items)
    now = _json(row.now)
    return DecisionView(row.decision_id, row.customer_id, utc(lookup.id_time_ms(row.decision_id)),
                        utc(lookup.stream_ms(row.stream_id.encode())),
                        now.replace("T", " ") if isinstance(now, str) else "", row,
                        FALLBACK_MEANS.get(row.fallback or "", ""), request, request_note, ages, ages_note, items,
                        kind, items_note)


async def by_decision(svc: Services, decision_id: str) -> dict[str, Any]:
    deadline = lookup.scan_deadline(svc)
    row, scan = await lookup.find_decision(svc, decision_id, deadline)
    if row is None:
        if scan.stopped == "store" and not scan.entries:
            return {"unavailable": UNAVAILABLE}
        return {"not_found": decision_scan_text(scan, svc.settings)}
    view = decision_view(row, svc.reader.ttl if svc.reader is not None else {})
    reported, events = await lookup.outcomes_of(svc, decision_id, lookup.id_time_ms(decision_id), deadline,
                                                customer_id=row.customer_id)
    shown = {p for item in view.items for p in (item.product_id, item.for_product) if p is not None}
    return {"decision": view, "outcomes": outcome_rows(reported, shown),
            "outcomes_note": outcome_scan_text(events, svc.settings.kpi_attribution_window_s)}


async def by_customer(svc: Services, customer_id: int) -> dict[str, Any]:
    result = await lookup.customer_decisions(svc, customer_id, lookup.scan_deadline(svc))
    if not result.reachable and not result.found:
        return {"unavailable": UNAVAILABLE}
    found = [(r, utc(lookup.stream_ms(r.stream_id.encode())), len(i) if isinstance(i := _json(r.items), list) else 0)
             for r in result.found]
    return {"customer_id": customer_id, "found": found,
            "customer_note": customer_note(result, svc.settings)}


class ConsoleDecisionsController(Controller):
    path = "/console/decisions"
    include_in_schema = False
    guards = (console_guard,)
    opt = MappingProxyType({"role": "ml_engineer"})

    @get()
    async def page(self, request: Request, services: Injected) -> Template:
        operator = await operator_of(request)
        params = request.query_params
        form = {name: (params.get(name) or "")[:64] for name in ("customer_id", "decision_id")}
        context: dict[str, Any] = {}
        status = 200
        try:
            query = parse_query(params)
        except BadQuery as exc:
            context, status = {"error": str(exc)}, 400
        else:
            if query.decision_id is not None:
                context = await by_decision(services, query.decision_id)
            elif query.customer_id is not None:
                context = await by_customer(services, query.customer_id)
        response = render(request, operator, "decisions.html", "Decisions", form=form, latest=DECISIONS_PER_CUSTOMER,
                          **context)
        response.status_code = status
        response.headers["Cache-Control"] = "no-store"  # customer-level data: kept by no browser cache or proxy
        return response
