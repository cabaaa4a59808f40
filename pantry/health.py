"""What readiness reports about the parts outside the serving process: the live dataflow's heartbeat and lag, and
what the Redis that events are written to promises about an acknowledged event (its AOF settings).

The live flow writes the hash `pantry:stream:live` about once a second (streaming/sinks.py: ControlPartition):
`ts` (Redis server time, so hosts' clocks never matter), `last_id` (the last `pantry:events` entry it has processed),
`pid`, `host`, `processed`. Readers judge it against Redis's TIME too.
"""

from __future__ import annotations

import msgspec

from pantry.keys import EVENTS_STREAM, LIVE_HEARTBEAT

HEARTBEAT_EVERY_S = 1.0

# KEYS[1] = the heartbeat hash; ARGV = last_id, pid, host, processed. The time is Redis's own.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'ts', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'last_id', ARGV[1],
           'pid', ARGV[2], 'host', ARGV[3], 'processed', ARGV[4])
return 1
"""


class LiveFlow(msgspec.Struct):
    """The live dataflow as /readyz sees it."""

    ok: bool  # a heartbeat younger than max_age_s (always true when max_age_s is 0: not judged)
    detail: str  # one line: what is wrong, or that it is fine
    heartbeat_age_s: float | None = None  # None: no heartbeat ever written
    lag_s: float | None = None  # age of the oldest entry of pantry:events not yet processed; 0 = caught up
    last_id: str | None = None
    pid: int | None = None
    host: str | None = None
    max_age_s: float = 0.0
    behind: bool = False  # lag_s over max_lag_s (judged only when max_lag_s > 0)
    max_lag_s: float = 0.0


def _ms_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    try:
        return int(text.split("-", 1)[0])
    except ValueError:
        return 0


def redis_time_s(reply) -> float:
    """TIME's reply ([seconds, microseconds]) as epoch seconds."""
    return int(reply[0]) + int(reply[1]) / 1e6


def assess(now_s: float, beat: dict, oldest_pending_id: bytes | str | None, max_age_s: float,
           max_lag_s: float = 0.0) -> LiveFlow:
    """The live flow's state from its heartbeat hash (decoded or raw HGETALL) and the first entry after its last_id.
    The lag is measured to the heartbeat's last_id, written about once a second: a flow that keeps up shows up to
    ~1 s while events arrive (an upper bound, never an understatement), 0 when idle."""
    fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in beat.items()}
    judged = max_age_s > 0
    if "ts" not in fields:
        return LiveFlow(not judged, "no heartbeat: the live flow (`pantry stream live`) has never run on this Redis",
                        max_age_s=max_age_s)
    age = max(0.0, now_s - float(fields["ts"]))
    lag = max(0.0, now_s - _ms_of(oldest_pending_id) / 1000) if oldest_pending_id is not None else 0.0
    where = f"pid {fields.get('pid')} on {fields.get('host')}"
    stale = judged and age > max_age_s
    behind = max_lag_s > 0 and lag > max_lag_s
    if stale:
        detail = f"the live flow's last heartbeat is {age:.1f} s old (limit {max_age_s:g} s; {where}): it is " \
                 f"not processing events"
    elif behind:
        detail = f"the live flow has fallen behind: its oldest unprocessed event is {lag:.1f} s old (limit " \
                 f"{max_lag_s:g} s; {where}): features miss the events since"
    else:
        detail = f"the live flow is processing ({where}), {lag:.1f} s behind"
    pid = fields.get("pid")
    return LiveFlow(not stale and not behind, detail, round(age, 3), round(lag, 3), fields.get("last_id"),
                    int(pid) if pid and pid.isdigit() else None, fields.get("host"), max_age_s, behind, max_lag_s)


def live_flow(client, max_age_s: float, max_lag_s: float = 0.0) -> LiveFlow:
    """Read and assess the heartbeat with a sync redis client (three commands)."""
    now = redis_time_s(client.time())
    beat = client.hgetall(LIVE_HEARTBEAT)
    return assess(now, beat, _oldest_pending(client.xrange(EVENTS_STREAM, *pending_range(beat), count=1)),
                  max_age_s, max_lag_s)


def pending_range(beat: dict) -> tuple[str, str]:
    """XRANGE bounds of the entries after the heartbeat's last_id (exclusive start: Redis >= 6.2)."""
    last = beat.get(b"last_id") or beat.get("last_id") or b"0-0"
    return f"({last.decode() if isinstance(last, bytes) else last}", "+"


def _oldest_pending(reply) -> bytes | None:
    return reply[0][0] if reply else None


async def live_flow_async(client, max_age_s: float, max_lag_s: float = 0.0) -> LiveFlow:
    """The same with an asyncio redis client."""
    now = redis_time_s(await client.time())
    beat = await client.hgetall(LIVE_HEARTBEAT)
    reply = await client.xrange(EVENTS_STREAM, *pending_range(beat), count=1)
    return assess(now, beat, _oldest_pending(reply), max_age_s, max_lag_s)


# ---- what 202 guarantees ---------------------------------------------------------------------------------------


class Durability(msgspec.Struct):
    """What an event acknowledged with 202 survives, from the Redis's AOF settings ("unknown" without CONFIG)."""

    appendonly: str  # "yes" | "no" | "unknown"
    appendfsync: str  # "always" | "everysec" | "no" | "unknown"
    guarantee: str

    @property
    def aof(self) -> bool:
        return self.appendonly == "yes"


def describe(config: dict | None) -> Durability:
    """From CONFIG GET's reply (None: CONFIG is not available, as on most managed Redis services)."""
    if config is None:
        return Durability("unknown", "unknown", "unknown: CONFIG is disabled on this Redis, so its persistence cannot "
                          "be checked; an event acknowledged with 202 is in Redis's memory, and survives a Redis "
                          "crash only as far as the provider's persistence settings promise")
    conf = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in config.items()}
    appendonly, fsync = conf.get("appendonly", "unknown"), conf.get("appendfsync", "unknown")
    if appendonly != "yes":
        save = conf.get("save", "")
        rdb = f"the last RDB save (save rules: {save})" if save else "the start (no RDB saves are configured)"
        return Durability(appendonly, fsync, f"AOF is off: a Redis crash loses the events acknowledged since {rdb}")
    text = {
        "always": "every write is fsynced before the answer: events acknowledged with 202 survive a Redis crash "
                  "and a machine crash",
        "everysec": "events acknowledged with 202 survive a Redis crash (Redis writes them to its AOF before it "
                    "answers); a machine crash or power loss can lose up to ~1 s of them (appendfsync everysec; up "
                    "to 2 s while the disk is slow to fsync)",
        "no": "events acknowledged with 202 survive a Redis crash; a machine crash can lose what the OS had not yet "
              "written to disk (appendfsync no: typically up to 30 s)",
    }.get(fsync, f"AOF is on (appendfsync {fsync})")
    return Durability(appendonly, fsync, text)


def _is_unavailable_config(exc: Exception) -> bool:
    import redis

    return isinstance(exc, redis.ResponseError)  # unknown/renamed command, or NOPERM


def durability(client) -> Durability:
    """Ask a sync redis client (CONFIG GET appendonly, appendfsync and save)."""
    try:
        config = {**client.config_get("append*"), **client.config_get("save")}
    except Exception as exc:
        if not _is_unavailable_config(exc):
            raise
        return describe(None)
    return describe(config)


async def durability_async(client) -> Durability:
    try:
        config = {**await client.config_get("append*"), **await client.config_get("save")}
    except Exception as exc:
        if not _is_unavailable_config(exc):
            raise
        return describe(None)
    return describe(config)
