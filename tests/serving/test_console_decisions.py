"""The Decisions console page against the session's server (no live flow): an answer of /v1/recommendations is found
by its decision id with its request, version, items and reasons once the decision log has flushed; a click posted
for it is listed as an outcome and one posted for another decision is not; a customer's decisions are listed newest
first and another customer's are not; an entry logged before the time in its id (a worker clock ahead of Redis's)
is still found; bad input is a 400 page with a message; a merchandiser gets 403 and no session goes to the login
page. The parts without a server: the query rules, the notes, and a Redis that does not answer is a notice."""

from __future__ import annotations

import html
import re
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

import httpx
import pytest

from pantry import events
from pantry.keys import DECISIONS_STREAM
from pantry.redis_server import sync_client
from serving.console import decision_lookup as lookup
from serving.console import decisions as page

CUSTOMER = 7_300_001  # not in the slice: a cold start, its decisions are this module's only
OTHER = 7_300_002
RENDERED = re.compile(r"rendered in ([0-9.]+) ms")


def _decide(http: httpx.Client, customer: int, **body) -> dict:
    r = http.post("/v1/recommendations", json={"customer_id": customer, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _text(r: httpx.Response) -> str:
    """The page as a reader sees it (entities decoded), for plain-text assertions."""
    return html.unescape(r.text)


def _logged(ml: httpx.Client, decision_id: str, timeout_s: float = 5.0) -> str:
    """The decision's page once its log entry is in Redis (DecisionLog flushes in the background)."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = ml.get("/console/decisions", params={"decision_id": decision_id})
        assert r.status_code == 200, r.text[:2000]
        if f"Decision {decision_id}</h2>" in r.text or time.monotonic() > deadline:
            return _text(r)
        time.sleep(0.1)


def _service_now(events_http: httpx.Client) -> datetime:
    r = events_http.get("/v1/clock")
    assert r.status_code == 200, r.text
    return datetime.fromisoformat(r.json()["now"])


def _post(events_http: httpx.Client, *evs: events.BaseEvent) -> None:
    r = events_http.post("/v1/events", json={"events": [events.to_builtins(e) for e in evs]})
    assert r.status_code == 202, r.text


def test_a_decision_shows_its_request_version_items_and_the_outcomes_posted_for_it(http, events_http, console):
    answer = _decide(http, CUSTOMER, k=4, surface="buy_again", exclude_product_ids=[1_111_111, 2_222_222])
    did, items = answer["decision_id"], answer["items"]
    assert items, answer
    other = _decide(http, OTHER, k=2)["decision_id"]
    ml = console("ml_engineer")
    text = _logged(ml, did)
    assert f"Decision {did}" in text, text[-3000:]
    assert answer["model_version"] in text
    for item in items:
        assert str(item["product_id"]) in text and item["reason"] in text
    for shown in ("buy_again", "1111111, 2222222", f">{CUSTOMER}<"):  # the request as it was asked
        assert shown in text
    assert ("none: the model's own answer" if answer["fallback"] is None else answer["fallback"]) in text
    assert "customer_session" in text  # a feature age per customer view the answer read
    assert "No outcome reported." in text

    now = _service_now(events_http)
    run = time.time_ns()
    first = items[0]["product_id"]

    def outcome(cls, n: int, decision_id: str, customer: int = CUSTOMER) -> events.BaseEvent:
        return cls(event_id=f"console-{run}-{n}", ts=now + timedelta(seconds=5), customer_id=customer,
                   decision_id=decision_id, product_id=first)

    _post(events_http, outcome(events.Impression, 1, did), outcome(events.Click, 2, did),
          outcome(events.Click, 3, other, OTHER))
    text = _text(ml.get("/console/decisions", params={"decision_id": did}))
    outcomes = text[text.index('id="outcomes-h"'):]
    assert f"console-{run}-1" in outcomes and f"console-{run}-2" in outcomes, outcomes[:3000]
    assert "impression" in outcomes and "click" in outcomes
    assert f"console-{run}-3" not in outcomes  # another decision's outcome
    assert "Outcome events posted with this decision id, among the" in outcomes
    assert RENDERED.search(text)


def test_a_customer_lists_their_latest_decisions_newest_first(http, console):
    older = _decide(http, CUSTOMER, k=2)["decision_id"]
    newer = _decide(http, CUSTOMER, k=3, surface="discover")["decision_id"]
    elsewhere = _decide(http, OTHER, k=2)["decision_id"]
    ml = console("ml_engineer")
    _logged(ml, newer)
    r = ml.get("/console/decisions", params={"customer_id": str(CUSTOMER)})
    assert r.status_code == 200
    text = _text(r)
    assert older in text and newer in text and text.index(newer) < text.index(older)
    assert elsewhere not in text
    assert "newest decisions" in text
    assert f'href="/console/decisions?decision_id={newer}"' in r.text  # each row opens the decision
    assert r.headers["cache-control"] == "no-store"


def test_an_entry_logged_before_the_time_in_its_id_is_found(feast_applied, console, api_keys):
    """A worker whose clock runs ahead of Redis's: the entry's stream id is earlier than its decision id's time."""
    from tests.streaming.test_outcomes import entry, recs

    ahead_ms = int(time.time() * 1000) + 1500
    did = f"{ahead_ms:x}-{time.time_ns() % (1 << 64):016x}"
    sync_client(feast_applied).xadd(DECISIONS_STREAM, entry(did, recs(4_040_404), customer=OTHER))
    text = _text(console("ml_engineer").get("/console/decisions", params={"decision_id": did}))
    assert f"Decision {did}" in text and "4040404" in text, text[-3000:]


@pytest.mark.parametrize(("params", "message"), [
    ({"customer_id": "abc"}, "A customer id is a whole number"),
    ({"customer_id": "-5"}, "A customer id is a whole number"),
    ({"customer_id": str(2**62 + 1)}, "A customer id is a whole number"),
    ({"decision_id": "1a23a514f15-" + "7" * 200}, "at most 29 characters"),
    ({"decision_id": "<script>x</script>"}, "A decision id is"),
    ({"customer_id": "5", "decision_id": "1a23a514f15-7ba1ddec3c67dfcd"}, "not both"),
])
def test_bad_input_is_a_400_page_with_a_message(console, params, message):
    r = console("ml_engineer").get("/console/decisions", params=params)
    assert r.status_code == 400, r.text[:1000]
    assert message in _text(r)
    assert "<script>x" not in r.text  # echoed input is escaped
    assert 'role="alert"' in r.text and '<label for="customer_id">' in r.text  # the form is still there


def test_an_unknown_decision_id_is_not_found_and_an_empty_form_looks_nothing_up(console):
    ml = console("ml_engineer")
    r = ml.get("/console/decisions", params={"decision_id": "10000000000-0123456789abcdef"})
    assert r.status_code == 200 and ": not found" in r.text
    assert "No decision was logged within 30 s" in _text(r)
    for edge in ("ffffffffffff-0123456789abcdef", "0-0123456789abcdef"):  # the id's time far ahead, at 0
        assert ml.get("/console/decisions", params={"decision_id": edge}).status_code == 200
    r = ml.get("/console/decisions")
    assert r.status_code == 200 and 'role="alert"' not in r.text and 'id="decision_id"' in r.text


def test_only_the_ml_engineer_role_may_look_decisions_up(api, console):
    r = console("merchandiser").get("/console/decisions", params={"customer_id": str(CUSTOMER)})
    assert r.status_code == 403 and "ml_engineer" in r.text
    assert str(CUSTOMER) not in r.text.replace("ml_engineer", "")
    with httpx.Client(base_url=api.url, timeout=10.0) as anonymous:
        r = anonymous.get("/console/decisions", params={"customer_id": str(CUSTOMER)})
    assert r.status_code == 303 and r.headers["location"].startswith("/console/login")


# ---- without a server ------------------------------------------------------------------------------------------


def test_query_rules():
    assert page.parse_query({}) == page.Query()
    assert page.parse_query({"customer_id": " 42 "}) == page.Query(customer_id=42)
    did = "1a23a514f15-7ba1ddec3c67dfcd"
    assert page.parse_query({"decision_id": did}) == page.Query(decision_id=did)
    for bad in ({"customer_id": "4.2"}, {"customer_id": "٤٢"}, {"decision_id": "1A23A514F15-7BA1DDEC3C67DFCD"},
                {"decision_id": "1a23a514f15-7ba1ddec3c67dfc"}):
        with pytest.raises(page.BadQuery):
            page.parse_query(bad)


async def test_redis_not_answering_is_a_notice_not_an_error():
    """The real store guard and raw pipeline, pointed at a port where no Redis listens."""
    from pantry.redis_server import free_port
    from pantry.settings import Settings
    from serving.redis_guard import GuardedStore
    from serving.services import read_pipeline

    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout_s=0.05)
    pipeline = read_pipeline(settings)
    services = SimpleNamespace(store=GuardedStore(), pipeline=pipeline, reader=None, settings=settings)
    try:
        for context in (await page.by_decision(services, "1a23a514f15-7ba1ddec3c67dfcd"),
                        await page.by_customer(services, 42)):
            assert context == {"unavailable": page.UNAVAILABLE}
    finally:
        await pipeline.aclose()


def test_customer_notes_say_what_the_index_holds():
    from pantry.settings import Settings

    none = page.customer_note(lookup.CustomerDecisions([], []), Settings())
    assert "No decision of this customer is logged" in none and "newest 20 decision ids" in none
    trimmed = page.customer_note(lookup.CustomerDecisions([], ["1a23a514f15-7ba1ddec3c67dfcd"]), Settings())
    assert "1 older ones are no longer in the log" in trimmed


def test_the_feature_ages_say_when_the_live_flow_was_behind_at_the_read():
    from serving.console.decisions import decision_view, lag_note
    from serving.decisions import decode_entry

    fields = {b"decision_id": b"d-lag", b"feature_ages": b'{"customer_session": 30.0}', b"customer_id": b"7",
              b"now": b'"2017-06-01T00:00:00+00:00"', b"items": b"[]", b"request": b"{}"}
    behind = decision_view(decode_entry(b"1-0", {**fields, b"stream_lag_s": b"42.500"}), {"customer_session": 3600})
    assert behind.row.stream_lag_s == 42.5
    assert "42 s behind" in behind.ages_note and "may miss the events" in behind.ages_note
    assert [a.state for a in behind.ages] == ["fresh"]  # the age alone still reads fresh
    assert "caught up" in decision_view(decode_entry(b"1-0", {**fields, b"stream_lag_s": b"0.300"}), {}).ages_note
    unknown = decision_view(decode_entry(b"1-0", {**fields, b"stream_lag_s": b""}), {})  # and entries from before
    assert unknown.row.stream_lag_s is None and unknown.ages_note == ""
    assert decode_entry(b"1-0", fields).stream_lag_s is None and lag_note(None) == ""
