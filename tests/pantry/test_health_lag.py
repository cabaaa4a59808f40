"""pantry.health.assess: the lag limit turns a flow that beats but lags into not ready, with the reason; over several
partitions (assess_partitions) the worst partition is reported, by number."""

from __future__ import annotations

from pantry.health import assess, assess_partitions

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


def _beat(ts: float, pid: int) -> dict:
    return {b"ts": str(ts).encode(), b"last_id": b"1700000000000-0", b"pid": str(pid).encode(), b"host": b"h"}


def test_several_partitions_report_the_worst_one():
    beats = [_beat(NOW - 0.5, 1), _beat(NOW - 2.0, 2), _beat(NOW - 0.5, 3)]
    flow = assess_partitions(NOW, beats, [None, b"1700000090000-0", b"1700000070000-0"], max_age_s=10, max_lag_s=20)
    assert not flow.ok and flow.behind and flow.lag_s == 30.0 and flow.heartbeat_age_s == 2.0  # the worst of each
    assert flow.pid == 3 and "partition 2 of 3" in flow.detail and "fallen behind" in flow.detail
    stale = assess_partitions(NOW, [*beats[:2], _beat(NOW - 15, 3)], [None, None, None], max_age_s=10)
    assert not stale.ok and "15.0 s old" in stale.detail and "partition 2 of 3" in stale.detail
    fine = assess_partitions(NOW, beats, [None, b"1700000090000-0", None], max_age_s=10, max_lag_s=20)
    assert fine.ok and fine.lag_s == 10.0 and "processing its 3 partitions" in fine.detail and "partition 1:" in \
        fine.detail
    missing = assess_partitions(NOW, [beats[0], {}], [None, None], max_age_s=10)
    assert not missing.ok and missing.heartbeat_age_s is None and "no heartbeat of partition 1 of 2" in missing.detail


def test_one_partition_is_reported_as_before():
    assert assess_partitions(NOW, [BEAT], [b"1700000070000-0"], 10, 20) == assess(NOW, BEAT, b"1700000070000-0", 10,
                                                                                   20)
    assert "partition" not in assess(NOW, BEAT, None, 10).detail
