"""The figures of one `make bench` run, as typed records: what each part measured and the run around them.

Each part (streaming.py, serving.py, training.py) returns its record from its own process as JSON; the harness
decodes it into these types, saves the whole Report (report.json, for `--render-only`), and report.py renders it.
Units are in the field names (_s, _ms, _per_s, _rps, _mb).
"""

from __future__ import annotations

import msgspec

from load_tests.bench.sweep import Point

# ---- streaming.py ----------------------------------------------------------------------------------------------


class ReplayRun(msgspec.Struct, kw_only=True):
    """One `pantry stream replay --force` in a subprocess."""

    configuration: str  # its command-line arguments
    processes: int
    events: int
    until: str  # "" = the whole dataset
    events_per_s: float  # events / the flow's own time (build + run + final flush), from the replay record
    wall_s_with_process_start: float
    events_per_s_with_process_start: float
    cpu_s_with_process_start: float  # every process of the replay: less noisy than wall time on a shared machine


class PushRun(msgspec.Struct, kw_only=True):
    """Feast's own path, the peer: FeatureStore.push(..., to=ONLINE) of `rows` store_product rows."""

    rows: int
    rows_per_s: float
    seconds: float


class FreshnessRun(msgspec.Struct, kw_only=True):
    """`pantry stream live` fed by XADD at `rate_per_s`; latency from a probe's XADD to its row being readable."""

    rate_per_s: int
    seconds: float
    offered_events_per_s: float
    probes: int  # probes seen in the online store
    missing_probes: int  # probes never seen (still unreadable a second after the last send)
    p50_ms: float | None
    p99_ms: float | None


class StreamingFigures(msgspec.Struct, kw_only=True):
    replay_full: ReplayRun  # the whole year, `--processes 2`: the figure the targets compare
    replay_jan_mar: ReplayRun  # Jan-Mar in one process, beside it (it also leaves the state the live flow resumes)
    push: PushRun
    freshness: list[FreshnessRun]
    live_exit_code: int
    dataflow_peak_rss_mb: float

    @property
    def replay_vs_push(self) -> float:
        return self.replay_full.events_per_s / self.push.rows_per_s


# ---- sustained.py ----------------------------------------------------------------------------------------------


class SustainedMinute(msgspec.Struct, kw_only=True):
    """One minute (by probe send time) of a sustained run: freshness of the probes sent in it, the flow's cost."""

    minute: int  # 0-based
    offered_events_per_s: float  # events XADDed in this minute / its seconds
    probes: int  # probes sent in this minute and seen in the online store
    missing_probes: int  # sent in this minute, never readable by the end of the run
    p50_ms: float | None  # over the seen probes; a missing probe counts as infinitely late in p99
    p99_ms: float | None  # None: no probe seen, or the missing ones reach the p99
    cpu_percent: float | None  # the flow's processes, CPU time in this minute / its wall time (200 = two cores)
    rss_mb: float | None  # the flow's processes' RSS at the end of the minute
    lag_s: float | None = None  # /readyz's lag at the end of the minute: age of the oldest unprocessed event
    redis_cpu_percent: float | None = None  # the Redis server's CPU in this minute (the same machine's)
    generator_cpu_percent: float | None = None  # the bench's own process (XADDs and probes)
    process_cpu_percent: list[float] | None = None  # each of the flow's processes, process 0 (source, gate) first


class SustainedRun(msgspec.Struct, kw_only=True):
    """`pantry stream live --processes N` fed by XADD at `rate_per_s` (open loop) for `seconds`."""

    rate_per_s: int
    processes: int
    partitions: int = 1  # stream partitions (PANTRY_STREAM_PARTITIONS), one gate each
    seconds: float
    time_scale: float = 1.0  # event seconds per wall second (1: a chain's pace; more: windows fill within the run)
    minutes: list[SustainedMinute]
    held: bool  # every minute p99 <= the limit, no probe missing, RSS flat, the rate offered (sustained.judge)
    verdict: str  # why held or not, in one line
    # the slowest probe sent in each second of the run, ms (None: one of them was never readable): what the minute's
    # p99 hides, a steady climb or a stall at a period (the report's plot)
    worst_ms_by_second: list[float | None] = msgspec.field(default_factory=list)
    # the seconds of the run in which the run's Redis was rewriting its AOF (a child process writing the whole
    # dataset, on the same cores: the plot marks them)
    redis_rewrite_s: list[int] = msgspec.field(default_factory=list)
    # the seconds in which the flow wrote its recovery store: the end of an epoch, when it snapshots its state and its
    # sources read nothing until every process has written (the plot marks them)
    snapshot_s: list[int] = msgspec.field(default_factory=list)


class SustainedFigures(msgspec.Struct, kw_only=True):
    runs: list[SustainedRun]
    highest_held_per_s: dict[str, int | None] = msgspec.field(default_factory=dict)  # processes -> rate (search)
    not_available: dict[str, str] = msgspec.field(default_factory=dict)  # processes -> why not measured
    p99_limit_ms: float = 500.0
    notes: list[str] = msgspec.field(default_factory=list)
    plot: str | None = None  # the runs' worst_ms_by_second, relative to the report (sustained.plot_freshness)


# ---- serving.py ------------------------------------------------------------------------------------------------


class Load(msgspec.Struct, kw_only=True):
    """One step of the asyncio client against one endpoint: open loop at a rate, or closed loop (saturation)."""

    requests: int
    errors: int
    achieved_rps: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    error_statuses: dict[int, int] = msgspec.field(default_factory=dict)


class EndpointLoad(msgspec.Struct, kw_only=True):
    at_rate: Load  # open loop at ServingFigures.rate_rps, latency from the scheduled send time
    saturation: Load  # closed loop, ServingFigures.connections connections, no think time


class ExperimentOverhead(msgspec.Struct, kw_only=True):
    """experiment_overhead.py: /v1/recommendations open loop at ServingFigures.rate_rps, alternating rounds without,
    then with, an experiment running and the answers' outcomes posted to /v1/events (joined by the live flow)."""

    rounds_without: list[Load]
    rounds_with: list[Load]
    rounds_experiment_only: list[Load] = msgspec.field(default_factory=list)  # informative: no outcomes posted
    treatment: str  # the treatment version (the popularity baseline of the ACTIVE recommender), share 0.5
    treatment_answers: int  # answers of the with-rounds given by the treatment version
    outcomes_posted: int  # impression and click events accepted (202) during the with-rounds
    outcome_errors: int  # events refused or POSTs failed
    impressions_counted: int  # impressions /admin/kpis counted for the experiments a few seconds after the last round
    impression_per: str = "item"  # "answer": one impression event per answer shown (the join counts its items)
    round_s: float | None = None  # each round's length (None: a run saved before it had its own, ServingFigures.step_s)

    @staticmethod
    def p99(rounds: list[Load]) -> float | None:
        """The median of the rounds' p99s (one noisy round on a shared machine does not decide)."""
        values = sorted(r.p99_ms for r in rounds if r.p99_ms is not None)
        if not values:
            return None
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class ServingFigures(msgspec.Struct, kw_only=True):
    rate_rps: float
    step_s: float
    connections: int  # closed loop (saturation) connections
    client: str
    endpoints: dict[str, EndpointLoad]  # path -> figures
    feast_serve: Load | None  # /get-online-features at saturation, same requests as /v1/features
    hello_world: Load | None  # the ceiling: Litestar + msgspec on granian, no I/O
    peer_notes: list[str] = msgspec.field(default_factory=list)  # a peer that did not start, and why
    experiment_overhead: ExperimentOverhead | None = None  # None: not measured (experiment_overhead_note says why)
    experiment_overhead_note: str = ""


# ---- deployed.py -----------------------------------------------------------------------------------------------


class EventFeed(msgspec.Struct, kw_only=True):
    """The events posted to /v1/events beside the answers, and the freshness of the probes among them."""

    rate_per_s: float
    offered_events_per_s: float
    accepted: int
    failed_posts: int  # batches not answered 202
    probes: int  # probe purchases seen in the online store, sent while the answers ran at their rate
    missing_probes: int  # probes never readable (2 s after the last post)
    freshness_p50_ms: float | None  # of `probes`
    freshness_p99_ms: float | None
    flat_out_probes: int = 0  # probes sent while recommendations ran flat out (the service saturated)
    flat_out_freshness_p99_ms: float | None = None


class DeployedFigures(msgspec.Struct, kw_only=True):
    """`pantry serve` with its live flow, events at EventFeed.rate_per_s beside; each answer open loop at rate_rps."""

    rate_rps: float
    step_s: float
    connections: int
    answers: dict[str, Load]  # "recommendations", "substitutions, 3 items", ... -> open loop at rate_rps
    recommendations_saturation: Load
    events: EventFeed


# ---- training.py -----------------------------------------------------------------------------------------------


class CallTimes(msgspec.Struct, kw_only=True):
    calls: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


class ServedRecommend(msgspec.Struct, kw_only=True):
    surface: str
    first_call: CallTimes  # a customer's first call: candidates, ONNX ALS, ONNX re-ranker
    cached: CallTimes  # the second call: its scored candidates from the process's cache


class TrainingFigures(msgspec.Struct, kw_only=True):
    retrain_total_s: float
    retrain_steps_s: dict[str, float]
    n_items: int
    onnx_topk: CallTimes  # the recommender's model.onnx, top 10 of every item for one customer
    implicit_recommend: CallTimes  # implicit's native recommend() on the same factors, same customers
    served: list[ServedRecommend]


# ---- the run ---------------------------------------------------------------------------------------------------


class Step(msgspec.Struct, array_like=True):
    name: str
    seconds: float
    status: str  # "ok", "failed: ...", "not run (...)"


class LocustPeer(msgspec.Struct, kw_only=True):
    name: str
    saturation: Point | None
    at_100: Point | None  # paced at 100 requests/s: latency at a load every peer sustains
    note: str


class Report(msgspec.Struct, kw_only=True):
    machine: dict[str, str]
    command: str
    total_s: float = 0.0
    steps: list[Step] = msgspec.field(default_factory=list)
    streaming: StreamingFigures | None = None
    serving: ServingFigures | None = None
    training: TrainingFigures | None = None
    deployed: DeployedFigures | None = None
    sustained: SustainedFigures | None = None
    not_run: dict[str, str] = msgspec.field(default_factory=dict)  # part -> why it has no figures
    sweeps: dict[str, list[Point]] = msgspec.field(default_factory=dict)  # Locust: endpoint -> points
    slo_ms: dict[str, float] = msgspec.field(default_factory=dict)  # Locust gate budgets (load_tests/slo.toml)
    locust_peers: list[LocustPeer] = msgspec.field(default_factory=list)
    plots: dict[str, str] = msgspec.field(default_factory=dict)  # endpoint -> path relative to docs/
    notes: list[str] = msgspec.field(default_factory=list)


PART_TYPES: dict[str, type] = {"streaming": StreamingFigures, "serving": ServingFigures, "training": TrainingFigures,
                               "deployed": DeployedFigures,
                               "sustained": SustainedFigures}
