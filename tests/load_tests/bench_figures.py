"""Recorded figures of one full `make bench` run (2 shared cores), as the harness would have decoded them.

The tests build reports from these and change one figure at a time to check a verdict turns.
"""

from __future__ import annotations

from load_tests.bench.figures import (
    CallTimes,
    DeployedFigures,
    EndpointLoad,
    EventFeed,
    ExperimentOverhead,
    FreshnessRun,
    Load,
    LocustPeer,
    PushRun,
    ReplayRun,
    Report,
    ServedRecommend,
    ServingFigures,
    Step,
    StreamingFigures,
    SustainedFigures,
    SustainedMinute,
    SustainedRun,
    TrainingFigures,
)
from load_tests.bench.sweep import Point


def load(rps: float, p50: float, p99: float, requests: int, errors: int = 0) -> Load:
    return Load(requests=requests, errors=errors, achieved_rps=rps, p50_ms=p50, p99_ms=p99, max_ms=p99 * 1.5)


def streaming() -> StreamingFigures:
    return StreamingFigures(
        replay_full=ReplayRun(configuration="--processes 2", processes=2, events=1_471_409, until="",
                              events_per_s=88_384, wall_s_with_process_start=28.2,
                              events_per_s_with_process_start=52_097, cpu_s_with_process_start=37.8),
        replay_jan_mar=ReplayRun(configuration="--until 2017-04-01 --processes 1", processes=1, events=362_778,
                                 until="2017-04-01", events_per_s=70_910, wall_s_with_process_start=12.6,
                                 events_per_s_with_process_start=28_741, cpu_s_with_process_start=12.8),
        push=PushRun(rows=20_000, rows_per_s=14_216, seconds=1.41),
        freshness=[
            FreshnessRun(rate_per_s=1_000, seconds=8, offered_events_per_s=1_100, probes=800, missing_probes=0,
                         p50_ms=2.9, p99_ms=24.6),
            FreshnessRun(rate_per_s=5_000, seconds=8, offered_events_per_s=5_100, probes=800, missing_probes=0,
                         p50_ms=6.8, p99_ms=139.0),
        ],
        live_exit_code=0,
        dataflow_peak_rss_mb=1_245.0,
    )


def serving() -> ServingFigures:
    return ServingFigures(
        rate_rps=300, step_s=6, connections=48, client="asyncio HTTP/1.1 keep-alive, same machine",
        endpoints={
            "/v1/recommendations": EndpointLoad(at_rate=load(300, 1.52, 2.69, 1_800),
                                                saturation=load(4_323, 9.81, 24.7, 25_985)),
            "/v1/substitutions": EndpointLoad(at_rate=load(300, 2.93, 5.45, 1_800),
                                              saturation=load(1_068, 42.69, 76.6, 6_453)),
            "/v1/next-best-action": EndpointLoad(at_rate=load(300, 1.95, 3.19, 1_800),
                                                 saturation=load(3_957, 11.14, 27.41, 23_813)),
            "/v1/features": EndpointLoad(at_rate=load(300, 1.73, 3.12, 1_800),
                                         saturation=load(5_047, 8.57, 26.28, 30_324)),
            "/get-online-features": EndpointLoad(at_rate=load(300, 1.75, 3.2, 1_800),
                                                 saturation=load(4_990, 8.6, 26.5, 29_990)),
        },
        feast_serve=load(345, 133.0, 359.0, 2_181, errors=70),
        hello_world=load(20_071, 2.63, 3.94, 120_460),
        experiment_overhead=ExperimentOverhead(
            rounds_without=[load(300, 1.5, 2.6, 1_800), load(300, 1.6, 3.0, 1_800), load(300, 1.5, 2.8, 1_800)],
            rounds_experiment_only=[load(300, 1.6, 2.7, 1_800), load(300, 1.6, 2.9, 1_800),
                                    load(300, 1.5, 2.9, 1_800)],
            rounds_with=[load(300, 1.7, 2.9, 1_800), load(300, 1.7, 3.5, 1_800), load(300, 1.6, 2.9, 1_800)],
            treatment="20261124T000000-abcdef12-popularity", treatment_answers=2_700, outcomes_posted=52_000,
            outcome_errors=0, impressions_counted=51_500),
    )


def training() -> TrainingFigures:
    def calls(p50: float, p99: float) -> CallTimes:
        return CallTimes(calls=300, p50_ms=p50, p99_ms=p99, mean_ms=p50)

    return TrainingFigures(
        retrain_total_s=39.74,
        retrain_steps_s={"load purchases": 0.98, "recommender: ALS fit": 2.7,
                         "substitutions: ranker (switch events before the cut)": 15.82},
        n_items=68_509,
        onnx_topk=calls(0.26, 0.33),
        implicit_recommend=calls(0.58, 0.65),
        served=[ServedRecommend(surface=s, first_call=calls(0.77, 1.15), cached=calls(0.02, 0.06))
                for s in ("for_you", "buy_again", "discover")],
    )


def locust_points() -> list[Point]:
    # Locust's closed-loop recommendations sweep of the same run: 13 ms p99 at 300 req/s (the figure that must
    # never reach the targets table)
    return [Point(100.0, 10, 102.0, 5.0, 9.0, 600, 0), Point(300.0, 30, 304.0, 4.0, 13.0, 1_800, 0),
            Point(1000.0, 64, 996.0, 8.0, 37.0, 5_988, 0), Point(None, 64, 2_858.0, 18.0, 52.0, 17_219, 0)]


def deployed() -> DeployedFigures:
    return DeployedFigures(
        rate_rps=300, step_s=8, connections=48,
        answers={"recommendations": load(300, 2.4, 9.1, 2_400), "substitutions, 1 item": load(300, 3.0, 11.0, 2_400),
                 "substitutions, 3 items": load(300, 4.1, 14.2, 2_400),
                 "substitutions, 10 items": load(300, 9.0, 28.0, 2_400),
                 "next-best-action": load(300, 2.2, 10.5, 2_400)},
        recommendations_saturation=load(1_620, 25.0, 61.0, 12_960),
        events=EventFeed(rate_per_s=500, offered_events_per_s=500, accepted=25_000, failed_posts=0, probes=500,
                         missing_probes=0, freshness_p50_ms=40.0, freshness_p99_ms=310.0))


def sustained(rate: int = 10_000, minutes: int = 10, p99: float = 310.0) -> SustainedFigures:
    """A run that held for `minutes` (p99 `p99` in the last minute), and the 2-process count not available."""
    from load_tests.bench.sustained import judge

    ms = [SustainedMinute(minute=m, offered_events_per_s=rate, probes=600, missing_probes=0, p50_ms=60.0,
                          p99_ms=p99 if m == minutes - 1 else 200.0, cpu_percent=95.0, rss_mb=500.0 + m, lag_s=0.4,
                          process_cpu_percent=[60.0, 35.0])
          for m in range(minutes)]
    held, why = judge(ms, rate)
    return SustainedFigures(runs=[SustainedRun(rate_per_s=rate, processes=1, seconds=minutes * 60.0, minutes=ms,
                                               held=held, verdict=why)],
                            highest_held_per_s={"1": rate if held else None},
                            not_available={"2": "not available: `pantry stream live` has no --processes option"})


def report() -> Report:
    return Report(
        machine={"date": "2026-11-24 01:41 UTC", "cpu": "AMD EPYC", "cores": "2", "memory": "23.5 GiB",
                 "os": "Linux 6.18", "python": "3.11.7", "load average at start": "0.31 (1 min), 0.52 (5 min)",
                 "versions": "litestar 2.25.0, feast 0.67.0", "load average at end": "1.90 (1 min), 1.40 (5 min)"},
        command="python -m load_tests.bench",
        total_s=516.0,
        steps=[Step("pantry data load", 9.7, "ok"), Step("pantry stream replay --no-progress", 28.0, "ok")],
        streaming=streaming(),
        serving=serving(),
        training=training(),
        deployed=deployed(),
        sustained=sustained(),
        sweeps={"/v1/recommendations": locust_points()},
        slo_ms={"/v1/recommendations": 50.0},
        locust_peers=[
            LocustPeer(name="pantry /v1/features", saturation=Point(None, 64, 3_693.0, 14.0, 41.0, 22_292, 0),
                       at_100=Point(100.0, 10, 102.0, 4.0, 9.0, 600, 0), note="`pantry serve`, 2 workers"),
            LocustPeer(name="feast serve /get-online-features", saturation=Point(None, 64, 332.0, 150.0, 500.0,
                                                                                 2_000, 4),
                       at_100=Point(100.0, 10, 100.0, 90.0, 190.0, 600, 0), note="`feast serve -w 2`"),
        ],
    )
