"""Lag honesty on the real flow: while the live flow is stopped and events wait, the health read that /readyz uses
says it has fallen behind (a lag over its limit); started again, the flow processes every waiting event (no loss)
and the lag goes back to 0."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from pantry import dataset, events, health
from pantry.featurestore import repo
from tests.streaming.test_live import LiveFlow, counters, live_env, wait_for, xadd  # noqa: F401 (fixture)

CUSTOMERS = range(993_001, 993_021)  # 20 customers of this test only
BASKETS = 25  # purchases of each, one basket each


def test_a_stopped_flow_is_reported_behind_then_catches_up_without_loss(live_env):  # noqa: F811
    settings, client = live_env
    base = (datetime.fromisoformat(dataset.manifest(settings).last_event) + timedelta(hours=2)).astimezone(UTC)
    run_id = str(time.time_ns())
    with LiveFlow(settings):  # a heartbeat exists: the flow ran here
        before = counters(client).get("processed", 0)
        xadd(client, events.ProductView(event_id=f"lag-{run_id}-warm", ts=base, customer_id=CUSTOMERS[0],
                                        product_id=1))
        assert wait_for(lambda: counters(client).get("processed", 0) > before, 60), "live flow never started"
        assert wait_for(lambda: health.live_flow(client, 0, max_lag_s=1.0).lag_s == 0.0, 5), "not caught up"
    processed = counters(client)["processed"]

    # the flow is stopped: events wait in the stream
    n = 0
    for b in range(BASKETS):
        for c in CUSTOMERS:
            n += 1
            xadd(client, events.Purchase(event_id=f"lag-{run_id}-{n}", ts=base + timedelta(seconds=n),
                                         customer_id=c, store_id=7, basket_id=10**9 + n, product_id=100 + b,
                                         sales_value=2.0))
    time.sleep(1.5)
    flow = health.live_flow(client, 0, max_lag_s=1.0)
    assert flow.lag_s >= 1.5 and flow.behind and not flow.ok, flow
    assert "fallen behind" in flow.detail and "limit 1 s" in flow.detail, flow.detail
    unjudged = health.live_flow(client, 0)  # max_lag_s 0: reported, not judged
    assert unjudged.ok and not unjudged.behind and unjudged.lag_s >= 1.5

    # started again: every waiting event processed, the lag back to 0
    with LiveFlow(settings):
        assert wait_for(lambda: counters(client)["processed"] >= processed + n, 60), (counters(client), n)
        caught_up = wait_for(lambda: (f := health.live_flow(client, 0, max_lag_s=1.0)).lag_s == 0.0 and f, 10)
        assert caught_up and caught_up.ok and not caught_up.behind, health.live_flow(client, 0, max_lag_s=1.0)
        assert counters(client)["processed"] == processed + n  # each exactly once
        rows = repo.store(settings).get_online_features(
            features=["customer_activity:orders_7d", "customer_activity:spend_7d"],
            entity_rows=[{"customer_id": c} for c in CUSTOMERS]).to_dict()
        assert rows["orders_7d"] == [BASKETS] * len(CUSTOMERS), rows
        assert rows["spend_7d"] == [2.0 * BASKETS] * len(CUSTOMERS), rows
