"""pantry.health.assess: the lag limit turns a flow that beats but lags into not ready, with the reason."""

from __future__ import annotations

from pantry.health import assess

NOW = 1_700_000_100.0
BEAT = {b"ts": b"1700000099.5", b"last_id": b"1700000000000-0", b"pid": b"42", b"host": b"h"}


def test_a_lag_over_the_limit_is_behind_and_not_ok():
    flow = assess(NOW, BEAT, b"1700000070000-0", max_age_s=10, max_lag_s=20)  # the oldest waits 30 s
    assert flow.lag_s == 30.0 and flow.behind and not flow.ok and flow.max_lag_s == 20
    assert "fallen behind" in flow.detail and "30.0 s old (limit 20 s" in flow.detail


def test_a_lag_within_the_limit_or_unjudged_is_ok():
    assert assess(NOW, BEAT, b"1700000090000-0", max_age_s=10, max_lag_s=20).ok  # 10 s
    unjudged = assess(NOW, BEAT, b"1700000000000-0", max_age_s=10)  # 100 s, max_lag_s 0: reported only
    assert unjudged.ok and not unjudged.behind and unjudged.lag_s == 100.0
    caught_up = assess(NOW, BEAT, None, max_age_s=10, max_lag_s=20)
    assert caught_up.ok and caught_up.lag_s == 0.0


def test_a_stale_heartbeat_is_reported_first():
    flow = assess(NOW + 30, BEAT, b"1700000070000-0", max_age_s=10, max_lag_s=20)
    assert not flow.ok and "heartbeat" in flow.detail and flow.behind
