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
