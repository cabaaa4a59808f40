from datetime import UTC, datetime, timedelta

import pytest

from pantry.clock import parse_watermark, publish_watermark, read_watermark, resolve_now
from pantry.settings import SettingsError, from_env


def test_settings_from_environment():
    s = from_env({"REDIS_URL": "redis://:pw@10.1.2.3:7000/2", "PANTRY_PORT": "9000", "PANTRY_CLOCK": "wall",
                  "PANTRY_CORS_ORIGINS": "https://a, https://b",
                  "PANTRY_RECOMMENDER_CACHE": "0"})
    assert s.port == 9000 and s.clock == "wall" and s.recommender_cache == 0
    assert s.cors_origins == ("https://a", "https://b")
    assert s.feast_connection_string() == "10.1.2.3:7000,password=pw,db=2"


def test_defaults_use_the_embedded_redis():
    s = from_env({})
    assert s.redis_url is None
    assert s.effective_redis_url() == f"redis://127.0.0.1:{s.embedded_redis_port}/0"
    assert s.clock == "event"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"PANTRY_PORT": "eighty"}, "PANTRY_PORT"),
        ({"PANTRY_CLOCK": "lunar"}, "PANTRY_CLOCK"),
        ({"PANTRY_API_KEYS": "nokey"}, "ID:SCOPE"),
        ({"PANTRY_API_KEYS": "k:janitor"}, "ID:SCOPE"),
        ({"PANTRY_REDIS_CLUSTER": "1"}, "needs REDIS_URL"),
        ({"REDIS_URL": "redis://10.0.0.1:7000/0", "PANTRY_REDIS_CLUSTER": "maybe"}, "PANTRY_REDIS_CLUSTER"),
        ({"PANTRY_LIVE_PROCESSES": "0"}, "PANTRY_LIVE_PROCESSES=0 must be between 1 and 16"),
        ({"PANTRY_LIVE_PROCESSES": "two"}, "PANTRY_LIVE_PROCESSES"),
    ],
)
def test_bad_settings_say_what_is_wrong(env, fragment):
    with pytest.raises(SettingsError, match=fragment):
        from_env(env)


def test_clock_rule():
    as_of = datetime(2017, 5, 1, tzinfo=UTC)
    wm = datetime(2017, 12, 1, tzinfo=UTC)
    assert resolve_now("event", as_of, wm) == as_of
    assert resolve_now("event", None, wm) == wm
    assert abs(resolve_now("wall", None, wm) - datetime.now(UTC)) < timedelta(seconds=5)
    assert abs(resolve_now("event", None, None) - datetime.now(UTC)) < timedelta(seconds=5)
    assert parse_watermark(b"garbage") is None


def test_watermark_only_moves_forward(redis_client):
    redis_client.delete("pantry:watermark")
    publish_watermark(redis_client, datetime(2017, 6, 1, tzinfo=UTC))
    publish_watermark(redis_client, datetime(2017, 5, 1, tzinfo=UTC))
    assert read_watermark(redis_client) == datetime(2017, 6, 1, tzinfo=UTC)
    publish_watermark(redis_client, datetime(2017, 7, 1, 12, 30, tzinfo=UTC))
    assert read_watermark(redis_client) == datetime(2017, 7, 1, 12, 30, tzinfo=UTC)
