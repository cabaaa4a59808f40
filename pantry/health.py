"""What readiness reports about the parts outside the serving process: the live dataflow's heartbeat and lag, and
what the Redis that events are written to promises about an acknowledged event (its AOF settings).

The live flow writes a heartbeat hash per partition of the event stream (pantry/partitions.py: heartbeat_key(p),
`pantry:stream:live` for partition 0) about once a second (streaming/sinks.py: ControlPartition): `ts` (Redis server
time, so hosts' clocks never matter), `last_id` (the last entry of that partition's stream it has processed), `pid`,
`host`, `processed`. Readers judge each partition against Redis's TIME too, and report the worst: the flow is as late
as its latest partition.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from pantry.partitions import events_stream, heartbeat_key

HEARTBEAT_EVERY_S = 1.0

# KEYS[1] = the heartbeat hash; ARGV = last_id, pid, host, processed. The time is Redis's own.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'ts', t[1] .. '.' .. string.format('%06d', tonumber(t[2])), 'last_id', ARGV[1],
           'pid', ARGV[2], 'host', ARGV[3], 'processed', ARGV[4])
return 1
"""


class LiveFlow(msgspec.Struct):
    """The live dataflow as /readyz sees it (with several partitions: the worst of them, see assess_partitions)."""

    ok: bool  # a heartbeat younger than max_age_s (always true when max_age_s is 0: not judged)
    detail: str  # one line: what is wrong, or that it is fine
    heartbeat_age_s: float | None = None  # None: no heartbeat ever written
    lag_s: float | None = None  # age of the oldest entry of the event stream not yet processed; 0 = caught up
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
           max_lag_s: float = 0.0, partition: int = 0, partitions: int = 1) -> LiveFlow:
    """The live flow's state in one partition from its heartbeat hash (decoded or raw HGETALL) and the first entry
    after its last_id. The lag is measured to the heartbeat's last_id, written about once a second: a flow that keeps
    up shows up to ~1 s while events arrive (an upper bound, never an understatement), 0 when idle. The detail line
    names the partition when there are several."""
    fields = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
              for k, v in beat.items()}
    judged = max_age_s > 0
    several = partitions > 1
    if "ts" not in fields:
        what = f"no heartbeat of partition {partition} of {partitions}" if several else "no heartbeat"
        return LiveFlow(not judged, f"{what}: the live flow (`pantry stream live`) has never run on this Redis",
                        max_age_s=max_age_s)
    age = max(0.0, now_s - float(fields["ts"]))
    lag = max(0.0, now_s - _ms_of(oldest_pending_id) / 1000) if oldest_pending_id is not None else 0.0
    where = f"pid {fields.get('pid')} on {fields.get('host')}"
    if several:
        where = f"partition {partition} of {partitions}, {where}"
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


def _stale(flow: LiveFlow) -> bool:
    return flow.max_age_s > 0 and (flow.heartbeat_age_s or 0.0) > flow.max_age_s


def _badness(flow: LiveFlow) -> tuple[bool, bool, bool, float]:
    """Which partition the report is about: one that never beat, else the stalest heartbeat when one is stale, else
    the furthest behind."""
    stale = _stale(flow)
    return (flow.heartbeat_age_s is None, stale, flow.behind,
            (flow.heartbeat_age_s if stale else flow.lag_s) or 0.0)


def assess_each(now_s: float, beats: Sequence[dict], oldest_pending_ids: Sequence[bytes | str | None],
                max_age_s: float, max_lag_s: float = 0.0) -> list[LiveFlow]:
    """Every partition's state (beats[p], oldest_pending_ids[p]: partition p's, as `assess` takes them)."""
    n = len(beats)
    return [assess(now_s, beat, first, max_age_s, max_lag_s, p, n)
            for p, (beat, first) in enumerate(zip(beats, oldest_pending_ids, strict=True))]


def worst(flows: Sequence[LiveFlow]) -> LiveFlow:
    """The flow as its partitions make it: the worst partition's report (its detail, pid, host and last_id) with the
    oldest heartbeat age and the largest lag of all; ok only if every partition is. One partition: its own."""
    n = len(flows)
    p = max(range(n), key=lambda i: _badness(flows[i]))
    report = flows[p]
    if n == 1:
        return report
    ok, behind = all(f.ok for f in flows), any(f.behind for f in flows)
    if report.heartbeat_age_s is None:  # a partition never beat: its age and lag are unknown, so the flow's are
        return msgspec.structs.replace(report, ok=ok, behind=behind)
    lag = max(f.lag_s or 0.0 for f in flows)
    detail = report.detail if not ok else f"the live flow is processing its {n} partitions, at most {lag:.1f} s " \
                                          f"behind (partition {p}: pid {report.pid} on {report.host})"
    return msgspec.structs.replace(report, ok=ok, behind=behind, detail=detail,
                                   heartbeat_age_s=max(f.heartbeat_age_s or 0.0 for f in flows), lag_s=lag)


def assess_partitions(now_s: float, beats: Sequence[dict], oldest_pending_ids: Sequence[bytes | str | None],
                      max_age_s: float, max_lag_s: float = 0.0) -> LiveFlow:
    """The live flow over its partitions (`assess_each`, then `worst`). One partition: exactly `assess`."""
    return worst(assess_each(now_s, beats, oldest_pending_ids, max_age_s, max_lag_s))


def pending_range(beat: dict) -> tuple[str, str]:
    """XRANGE bounds of the entries after the heartbeat's last_id (exclusive start: Redis >= 6.2)."""
    last = beat.get(b"last_id") or beat.get("last_id") or b"0-0"
    return f"({last.decode() if isinstance(last, bytes) else last}", "+"


def _oldest_pending(reply) -> bytes | None:
    return reply[0][0] if reply else None


def live_flow(client, max_age_s: float, max_lag_s: float = 0.0, partitions: int = 1) -> LiveFlow:
    """Read and assess the heartbeats of the stream's `partitions` (Settings.stream_partitions) with a sync redis
    client: TIME, then every heartbeat, then the first pending entry of every partition (pipelined: three round
    trips whatever the number of partitions)."""
    now = redis_time_s(client.time())
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hgetall(heartbeat_key(p))
    beats = pipe.execute()
    pipe = client.pipeline(transaction=False)
    for p, beat in enumerate(beats):
        pipe.xrange(events_stream(p), *pending_range(beat), count=1)
    oldest = [_oldest_pending(reply) for reply in pipe.execute()]
    return assess_partitions(now, beats, oldest, max_age_s, max_lag_s)


async def live_flow_async(client, max_age_s: float, max_lag_s: float = 0.0, partitions: int = 1) -> LiveFlow:
    """The same with an asyncio redis client."""
    now = redis_time_s(await client.time())
    pipe = client.pipeline(transaction=False)
    for p in range(partitions):
        pipe.hgetall(heartbeat_key(p))
    beats = await pipe.execute()
    pipe = client.pipeline(transaction=False)
    for p, beat in enumerate(beats):
        pipe.xrange(events_stream(p), *pending_range(beat), count=1)
    oldest = [_oldest_pending(reply) for reply in await pipe.execute()]
    return assess_partitions(now, beats, oldest, max_age_s, max_lag_s)


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
