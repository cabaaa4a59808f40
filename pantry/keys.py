"""Names of pantry's own Redis keys, all under `pantry:` (the Feast feature hashes have Feast's layout, see
pantry.featurestore)."""

PREFIX = "pantry:"

EVENTS_STREAM = "pantry:events"  # accepted events, msgpack in field b"e"
DEAD_LETTER_STREAM = "pantry:events:dead"  # rejected events with a reason
DECISIONS_STREAM = "pantry:decisions"  # every served answer (bounded)
# a customer's newest decision ids (a list, newest first, at most DECISIONS_PER_CUSTOMER; expires with the log's
# retention): how the console finds a customer's decisions without scanning the log. Erasure deletes it.
DECISIONS_BY_CUSTOMER_PREFIX = "pantry:decisions:customer:"
DECISIONS_PER_CUSTOMER = 20
WATERMARK = "pantry:watermark"  # latest event time processed by the stream, epoch seconds (the event clock)
STREAM_COUNTERS = "pantry:stream:counters"  # hash: processed, late, invalid, duplicate, ...
CAMPAIGN_APPROVALS = "pantry:campaigns:approvals"  # hash campaign_id -> msgpack approval record
EVENT_FIELD = b"e"
AUDIT_STREAM = "pantry:audit"  # every admin action and approval, msgpack pantry.audit.AuditEntry in field b"a"
AUDIT_FIELD = b"a"
ERASED_CUSTOMERS = "pantry:customers:erased"  # set of customer ids erased: serving treats them as new
LIVE_HEARTBEAT = "pantry:stream:live"  # hash: the live flow's heartbeat (ts in Redis time, last_id, pid, host)
# marker of an ingested /v1/events batch: this prefix + sha256 of its encoded events (expires after
# events_dedup_window_s). The hash tag puts it in the slot of EVENTS_STREAM (the slot of "pantry:events"), so one Lua
# call can check it and XADD on a Redis Cluster too.
EVENT_BATCH_PREFIX = "{pantry:events}:batch:"
# online KPIs (pantry/kpis.py, streaming/outcomes.py): one hash per outcome shard, + shard name ("o00".."o15"),
# field "day|model|version|experiment|arm|surface" -> msgpack Counts; days older than kpi_retention_days are deleted
KPI_PREFIX = "pantry:kpis:"
KPI_COUNTERS = "pantry:kpis:counters"  # hash: outcome shard -> msgpack {counter: absolute value} (16 fields)
# experiments (pantry/experiments.py): hash id -> msgpack Experiment (ended ones kept experiments_retention_days);
# the running experiment per model (hash model -> id; at most 3 fields) and the guardrail loop's leader lock
# (SET NX PX, expires by itself). The running hash's tag is the experiments hash's name, so both are in one slot:
# one Lua call updates them together (on a Redis Cluster too).
EXPERIMENTS = "pantry:experiments"
EXPERIMENTS_RUNNING = "{pantry:experiments}:running"
EXPERIMENTS_GUARD_LOCK = "pantry:experiments:guard-lock"
# live drift counts: a hash per model, version and UTC day (field "<feature>|<bin>" -> decisions), HINCRBY'd by every
# serving worker (serving/drift.py); each expires Settings.drift_window_days + 1 days after its last write
DRIFT_PREFIX = "pantry:drift:"


def drift_key(model: str, version: str, day: str) -> str:
    """`day`: YYYYMMDD (UTC, wall clock: the window bounds Redis memory, whatever the event clock says)."""
    return f"{DRIFT_PREFIX}{model}:{version}:{day}"

# the operator console's login sessions (serving/console/session.py): this prefix + sha256 of the session cookie ->
# msgpack ConsoleSession; each expires console_session_ttl_s after login (logout deletes it)
CONSOLE_SESSION_PREFIX = "pantry:console:session:"
# the console overview's traffic history (serving/console/traffic.py): one hash per UTC minute, + epoch minute,
# field "<route>|<counter>" -> count, HINCRBY'd by every serving worker; each expires two hours after its last write
CONSOLE_TRAFFIC_PREFIX = "pantry:console:traffic:"


def decisions_of(customer_id: int) -> str:
    """The list of a customer's newest decision ids (DECISIONS_BY_CUSTOMER_PREFIX)."""
    return f"{DECISIONS_BY_CUSTOMER_PREFIX}{customer_id}"
