"""The clock: `now` for freshness, TTLs and active campaigns.

`as_of` of the request if given; else in event mode (the demo's default: the data is from 2017) the stream
watermark kept in Redis; else wall time.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pantry.keys import WATERMARK
from pantry.settings import ClockMode


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def parse_watermark(raw: bytes | str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        return from_epoch(float(raw))
    except ValueError:
        return None


def resolve_now(mode: ClockMode, as_of: datetime | None, watermark: datetime | None) -> datetime:
    """The pure rule; callers fetch the watermark (sync or async) themselves."""
    if as_of is not None:
        return as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)
    if mode == "event" and watermark is not None:
        return watermark
    return utcnow()


def max_accepted_ts(mode: ClockMode, wall_s: float, watermark_s: float | None, skew_wall_s: float,
                    skew_event_s: float) -> float:
    """The newest event time (epoch seconds) the service accepts now: an event's `ts` must not be later.

    wall mode: wall clock + skew_wall_s. event mode: watermark + skew_event_s, and never past wall clock +
    skew_wall_s (no real event comes from the future); with no watermark yet (the first events of a replay or of a
    fresh live flow) only the wall-clock bound applies, so the first event is accepted. No single event can then
    move the watermark more than skew_event_s past where it was."""
    wall_limit = wall_s + skew_wall_s
    if mode == "event" and watermark_s is not None:
        return min(watermark_s + skew_event_s, wall_limit)
    return wall_limit


def read_watermark(client) -> datetime | None:  # client: redis.Redis
    return parse_watermark(client.get(WATERMARK))


def publish_watermark(client, ts: datetime) -> None:
    """Only ever moves forward (a Lua-free max via a transaction-less GET/SET is racy; use a script)."""
    client.eval(_MAX_SCRIPT, 1, WATERMARK, f"{ts.timestamp():.6f}")


_MAX_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or tonumber(ARGV[1]) > tonumber(cur) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('GET', KEYS[1])
"""
