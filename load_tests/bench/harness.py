"""`pantry bench`: set up a deterministic pantry, run every benchmark in one go, write docs/BENCHMARKS.md.

Setup: its own data dir (.pantry/bench), artifacts and Redis port, the full dataset; `pantry data load`,
`pantry feast apply`, `pantry stream replay`, `pantry train` (each via the CLI, timed), then `pantry serve`.
Then: latency vs load per endpoint (Locust), pantry /v1/features vs `feast serve` vs a hello-world ceiling at
saturation, and each component's own `run_bench` (streaming, training, serving) in a subprocess. A step that
cannot run (a component not there yet, the time budget spent) is reported as "not run (reason)".
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from load_tests import server
from load_tests.bench import machine, peers
from load_tests.bench.report import Peer, Report, Target, fmt, plot_sweep, ratio, render
from load_tests.bench.sweep import Point, measure, sweep
from load_tests.slo import DEFAULT_SLO_FILE, load_slo
from pantry import feast_repo
from pantry.redis_server import EmbeddedRedis, free_port
from pantry.settings import ROOT, Settings, from_env, get_settings

BUDGET_S = 15 * 60
DOCS = ROOT / "docs"
ENDPOINTS = {  # endpoint -> the probe class in bench_locustfile.py, most important first (the budget may cut)
    "/v1/recommendations": "RecommendationsProbe",
    "/v1/features": "FeaturesProbe",
    "/v1/substitutions": "SubstitutionsProbe",
    "/v1/next-best-action": "NextBestActionProbe",
}
RATES = [100.0, 300.0, 1000.0]
RESERVE_S = 5 * 60  # what the peers and the component benches after the sweeps need


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    @property
    def left(self) -> float:
        return self.budget_s - self.elapsed

    def say(self, message: str) -> None:
        minutes, seconds = divmod(int(self.elapsed), 60)
        print(f"==> [{minutes:02d}:{seconds:02d}] {message}", flush=True)


def bench_settings() -> Settings:
    """Own data dir, artifacts and ports; exported so every subprocess (and get_settings) sees the same."""
    root = ROOT / ".pantry" / "bench"
    env = {
        "PANTRY_DATA_DIR": str(root),
        "PANTRY_ARTIFACTS_DIR": str(root / "artifacts"),
        "PANTRY_REDIS_PORT": str(free_port()),
        "PANTRY_PORT": str(free_port()),
        "PANTRY_CLOCK": "event",
        "PANTRY_RATE_LIMIT_PER_MINUTE": "0",
    }
    os.environ.pop("REDIS_URL", None)
    os.environ.update(env)
    get_settings.cache_clear()
    return from_env()


def has_command(name: str) -> bool:
    from pantry.cli import main

    return name in main.commands


def pantry(settings: Settings, *args: str, log: Path, timeout_s: float) -> None:
    cmd = [str(Path(sys.executable).with_name("pantry")), *args]
    with log.open("ab") as out:
        out.write(f"\n$ pantry {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, env=feast_repo.subprocess_env(settings), stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout_s)
    if result.returncode != 0:
        tail = log.read_text()[-1500:]
        raise RuntimeError(f"`pantry {' '.join(args)}` exited with {result.returncode}:\n{tail}")


def run_component(settings: Settings, name: str, out_dir: Path, timeout_s: float,
                  base_url: str | None = None) -> dict[str, Any] | str:
    if timeout_s < 30:
        return "not run (the 15-minute budget was spent)"
    out = out_dir / f"{name}.json"
    cmd = [sys.executable, "-m", "load_tests.bench.component", name, str(out), *([base_url] if base_url else [])]
    with (out_dir / f"{name}.log").open("wb") as log:
        try:
            subprocess.run(cmd, env=feast_repo.subprocess_env(settings), stdout=log, stderr=subprocess.STDOUT,
                           timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return f"not run (stopped after {timeout_s:.0f} s, the rest of the time budget)"
    if not out.exists():
        return f"failed (no result; see {out_dir / f'{name}.log'})"
    result = msgspec.json.decode(out.read_bytes())
    return result.get("figures") or result.get("not_run") or "not run (no figures)"


def number(figures: dict[str, Any] | str, *needles: str) -> float | None:
    """The first numeric figure whose dotted name contains all needles (component benches name their own keys)."""
    if isinstance(figures, str):
        return None
    from load_tests.bench.report import flatten

    for key, value in flatten(figures):
        low = key.lower()
        if all(n in low for n in needles) and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def at_rate(points: list[Point], rate: float) -> Point | None:
    return next((p for p in points if p.target_rps == rate), None)


def saturation(points: list[Point]) -> Point | None:
    return next((p for p in points if p.target_rps is None), None)


def run_all(quick: bool = False, output: Path | None = None) -> int:
    clock = Clock(BUDGET_S)
    settings = bench_settings()
    work = settings.data_dir / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "setup.log"
    step_s = 3 if quick else 6
    report = Report(machine=machine.describe(), command="make bench" + (" (--quick)" if quick else ""))
    report.slo_ms = dict(load_slo(DEFAULT_SLO_FILE).p99_ms)
    clock.say(f"bench: data {settings.data_dir}, redis port {settings.embedded_redis_port}, logs in {work}")

    # Deterministic start: only the dataset parquet is reused (it is deterministic). Everything else a component
    # keeps under the data dir (Redis, registry, stream state and checkpoints, embeddings, models) starts empty.
    for entry in settings.data_dir.iterdir():
        if entry.name in (settings.dataset_dir.name, work.name):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
    redis = EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir).start(daemonize=False)
    setup_ok = True

    def step(name: str, fn: Callable[[], None], needs: str | None = None) -> bool:
        nonlocal setup_ok
        if needs and not has_command(needs):
            report.steps.append((name, 0.0, f"not run (no `pantry {needs}` command yet)"))
            clock.say(f"{name}: not run (no `pantry {needs}` command yet)")
            return False
        clock.say(name)
        started = time.monotonic()
        try:
            fn()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            took = time.monotonic() - started
            report.steps.append((name, took, f"failed: {str(exc).splitlines()[0]}"))
            clock.say(f"{name} FAILED after {took:.1f} s (see {log})")
            setup_ok = False
            return False
        took = time.monotonic() - started
        report.steps.append((name, took, "ok"))
        clock.say(f"{name}: {took:.1f} s")
        return True

    try:
        step("pantry data load", lambda: pantry(settings, "data", "load", log=log, timeout_s=300))
        step("pantry feast apply", lambda: pantry(settings, "feast", "apply", log=log, timeout_s=300))
        # The replay gets what the rest of the run does not need (about 7 minutes are kept for the rest).
        replayed = step("pantry stream replay",
                        lambda: pantry(settings, "stream", "replay", "--no-progress", log=log,
                                       timeout_s=max(60.0, clock.left - 7 * 60)),
                        needs="stream")
        trained = step("pantry train", lambda: pantry(settings, "train", log=log, timeout_s=300), needs="train")
        if has_command("campaigns"):
            step("pantry campaigns seed --approve-historical",
                 lambda: pantry(settings, "campaigns", "seed", "--approve-historical", log=log, timeout_s=120))
        run_serving(settings, report, clock, work, step_s, step)
        clock.say("component benchmarks (each in its own process)")
        report.components["Streaming (streaming/bench.py)"] = run_component(
            settings, "streaming", work, min(clock.left - 60, 300))
        report.components["Training (training/bench.py)"] = run_component(
            settings, "training", work, min(clock.left - 30, 240))
        finish_targets(report, settings, replayed, trained)
    finally:
        redis.stop()
    report.total_s = clock.elapsed
    (work / "report.json").write_bytes(msgspec.json.encode(report))  # for `pantry bench --render-only`
    write(report, output)
    clock.say(f"wrote {output or DOCS / 'BENCHMARKS.md'}")
    return 0 if setup_ok else 1


def write(report: Report, output: Path | None) -> None:
    out = output or DOCS / "BENCHMARKS.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    for t in report.targets:
        verdict = "met" if t.met else "not measured" if t.met is None else "MISSED"
        print(f"    {t.name:<72} {t.measured:<36} {verdict}")


def render_last(output: Path | None = None) -> int:
    """Re-derive the targets and re-render from the last run's figures (.pantry/bench/run/report.json)."""
    saved = ROOT / ".pantry" / "bench" / "run" / "report.json"
    if not saved.exists():
        print(f"no saved run at {saved}: run `pantry bench` first", file=sys.stderr)
        return 1
    report = msgspec.json.decode(saved.read_bytes(), type=Report)
    report.targets = []
    report.notes = [n for n in report.notes if not n.startswith(("replay events/s", "retrain time"))]
    settings = bench_settings()
    ok = {name for name, _, status in report.steps if status == "ok"}
    finish_targets(report, settings, "pantry stream replay" in ok, "pantry train" in ok)
    write(report, output)
    return 0


def run_serving(settings: Settings, report: Report, clock: Clock, work: Path, step_s: int,
                step: Callable[..., bool]) -> None:
    if not has_command("serve"):
        report.steps.append(("pantry serve", 0.0, "not run (no `pantry serve` command yet)"))
        return
    serve_log = work / "serve.log"
    started = time.monotonic()
    try:
        with server.background_serve(settings, serve_log) as base_url:
            report.steps.append(("pantry serve (until /healthz answers)", time.monotonic() - started, "ok"))
            clock.say("warm-up: every endpoint for a few seconds (lazy loads in each worker; not reported)")
            for probe in ENDPOINTS.values():
                measure(settings, base_url, probe, 200.0, 3, work / "warmup" / probe)
            for endpoint, probe in ENDPOINTS.items():
                if clock.left < RESERVE_S:
                    report.notes.append(f"{endpoint}: sweep skipped, time budget")
                    continue
                clock.say(f"latency vs load: {endpoint} at {', '.join(f'{r:g}' for r in RATES)} req/s, then max")
                points = sweep(settings, base_url, probe, RATES, step_s, work / "sweeps")
                report.sweeps[endpoint] = points
                img = DOCS / "img" / f"bench_{endpoint.strip('/').replace('/', '_').replace('-', '_')}.png"
                plot_sweep(endpoint, points, report.slo_ms.get(endpoint), img)
                report.plots[endpoint] = str(img.relative_to(DOCS))
            features = report.sweeps.get("/v1/features", [])
            report.peers.append(Peer("pantry /v1/features", saturation(features), at_rate(features, 100.0),
                                     f"`pantry serve`, {settings.workers} workers"))
            measure_peers(settings, report, clock, work, step_s)
            clock.say("serving/bench.py")
            report.components["Serving (serving/bench.py)"] = run_component(
                settings, "serving", work, min(clock.left - 180, 240), base_url)
    except server.ServerError as exc:
        report.steps.append(("pantry serve", time.monotonic() - started, f"failed: {str(exc).splitlines()[0]}"))
        clock.say(f"pantry serve failed: {exc}")


def measure_peers(settings: Settings, report: Report, clock: Clock, work: Path, step_s: int) -> None:
    workers = settings.workers
    clock.say(f"peer: feast serve ({workers} workers) at 100 req/s and at saturation, same request")
    name = "feast serve /get-online-features"
    try:
        with peers.feast_serve(settings, work / "feast_serve.log", workers) as url:
            measure(settings, url, "FeastServeProbe", 50.0, 3, work / "warmup" / "feast")
            at_100 = measure(settings, url, "FeastServeProbe", 100.0, step_s, work / "sweeps" / "feast-100")
            sat = measure(settings, url, "FeastServeProbe", None, step_s, work / "sweeps" / "feast-max")
            report.peers.append(Peer(name, sat, at_100, f"`feast serve -w {workers}`"))
    except server.ServerError as exc:
        report.peers.append(Peer(name, None, None, f"failed to start: {exc}"[:200]))
    clock.say(f"peer: hello-world ceiling (Litestar + msgspec on granian, {workers} workers)")
    name = "hello-world ceiling"
    try:
        with peers.hello_world(work / "hello.log", workers) as url:
            at_100 = measure(settings, url, "HelloProbe", 100.0, step_s, work / "sweeps" / "hello-100")
            sat = measure(settings, url, "HelloProbe", None, step_s, work / "sweeps" / "hello-max")
            report.peers.append(Peer(name, sat, at_100, f"granian, {workers} workers, no I/O"))
    except server.ServerError as exc:
        report.peers.append(Peer(name, None, None, f"failed to start: {exc}"[:200]))


def _target(name: str, goal: str, value: float | None, ok: Callable[[float], bool], unit: str) -> Target:
    if value is None or math.isnan(value):
        return Target(name, "-", goal, None)
    return Target(name, fmt(value, unit), goal, ok(value))


def finish_targets(report: Report, settings: Settings, replayed: bool, trained: bool) -> None:
    streaming = report.components.get("Streaming (streaming/bench.py)", "not run")
    training = report.components.get("Training (training/bench.py)", "not run")
    replay_eps = number(streaming, "replay", "per_s") or number(streaming, "replay", "eps")
    push_eps = number(streaming, "push", "per_s") or number(streaming, "push", "eps")
    if replay_eps is None and replayed:
        # Floor from the setup step: events / wall time of `pantry stream replay` (process start included).
        from pantry import dataset

        took = next(s for n, s, st in report.steps if n == "pantry stream replay")
        replay_eps = dataset.manifest(settings).rows["events"] / took
        report.notes.append("replay events/s is the setup step's wall time (process start included): a floor")
    t = report.targets
    # streaming/bench.py names the configuration its compared replay figure comes from (e.g. "--processes 2")
    config = streaming.get("replay_configuration") if isinstance(streaming, dict) else None
    with_config = f" (`pantry stream replay {config}`)" if isinstance(config, str) else ""
    t.append(_target(f"replay throughput{with_config}", "≥ 50,000 events/s", replay_eps, lambda v: v >= 50_000,
                     "events/s"))
    t.append(Target(f"replay vs Feast push{with_config}", goal="≥ 5x",
                    measured=ratio(replay_eps, push_eps) if push_eps else "-",
                    met=(replay_eps / push_eps >= 5) if replay_eps and push_eps else None))
    fresh = number(streaming, "fresh", "p99")
    t.append(_target("freshness p99 (event in -> feature readable)", "≤ 500 ms", fresh, lambda v: v <= 500, "ms"))
    for endpoint, goal in (("/v1/recommendations", 10.0), ("/v1/substitutions", 15.0), ("/v1/next-best-action", 15.0)):
        point = at_rate(report.sweeps.get(endpoint, []), 300.0)
        value = point.p99_ms if point and not point.failures else None
        if point and point.failures:
            t.append(Target(f"{endpoint} p99 @300 req/s", goal=f"≤ {goal:g} ms",
                            measured=f"{point.failures:,} failures", met=False))
        else:
            t.append(_target(f"{endpoint} p99 @300 req/s", f"≤ {goal:g} ms", value, lambda v, g=goal: v <= g, "ms"))
    sat = saturation(report.sweeps.get("/v1/recommendations", []))
    t.append(_target("/v1/recommendations saturation", "≥ 1,500 req/s",
                     sat.achieved_rps if sat and not sat.failures else None, lambda v: v >= 1500, "req/s"))
    features = next((p.saturation for p in report.peers if p.name == "pantry /v1/features"), None)
    feast = next((p.saturation for p in report.peers if p.name.startswith("feast serve")), None)
    if features and feast and feast.achieved_rps:
        # the target: >= 10x the peer's throughput at a lower p99, with no failures of our own (the peer's
        # failures are reported: they only lower its throughput)
        r = features.achieved_rps / feast.achieved_rps
        lower_p99 = features.p99_ms is not None and feast.p99_ms is not None and features.p99_ms < feast.p99_ms
        measured = f"{r:.1f}x, p99 {fmt(features.p99_ms, 'ms')} vs {fmt(feast.p99_ms, 'ms')}"
        if features.failures:
            measured += f", {features.failures:,} pantry failures"
        if feast.failures:
            measured += f", {feast.failures:,} feast serve failures"
        t.append(Target("/v1/features vs feast serve (saturation req/s, at a lower p99)", goal="≥ 10x",
                        measured=measured, met=r >= 10 and lower_p99 and not features.failures))
    else:
        t.append(Target("/v1/features vs feast serve (saturation req/s)", goal="≥ 10x", measured="-", met=None))
    onnx = number(training, "onnx", "p50")
    native = number(training, "implicit", "p50")
    t.append(Target("ALS top-10 scoring: ONNX vs implicit's native recommend (p50 per call)", goal="reported",
                    measured=f"{fmt(onnx, 'ms')} vs {fmt(native, 'ms')} ({ratio(onnx, native, False)})"
                    if onnx and native else "-", met=True if onnx and native else None))
    cold = number(training, "served_recommend_for_you", "p50")
    cached = number(training, "served_recommend_for_you_cached", "p50")
    t.append(Target("served recommend(), for_you: a customer's first call vs cached candidates (p50 per call)",
                    goal="reported", measured=f"{fmt(cold, 'ms')} vs {fmt(cached, 'ms')}" if cold and cached else "-",
                    met=True if cold and cached else None))
    serving = report.components.get("Serving (serving/bench.py)", "not run")
    for name, endpoint, goal in (("recommendations", "/v1/recommendations", 10.0),
                                 ("substitutions", "/v1/substitutions", 15.0),
                                 ("next_best_action", "/v1/next-best-action", 15.0)):
        value = number(serving, f"{name}.at_300", "p99")
        errors = number(serving, f"{name}.at_300", "errors")
        label = f"{endpoint} p99 @300 req/s (serving/bench.py, open loop)"
        if errors:
            t.append(Target(label, goal=f"≤ {goal:g} ms", measured=f"{errors:,.0f} errors", met=False))
        else:
            t.append(_target(label, f"≤ {goal:g} ms", value, lambda v, g=goal: v <= g, "ms"))
    sat_open = number(serving, "recommendations.saturation", "achieved_rps")
    t.append(_target("/v1/recommendations saturation (serving/bench.py)", "≥ 1,500 req/s", sat_open,
                     lambda v: v >= 1500, "req/s"))
    x = number(serving, "features_vs_feast_serve", "throughput")
    ours_p99, peer_p99 = number(serving, "features.saturation", "p99"), number(serving, "feast_serve.saturation", "p99")
    ours_errors = number(serving, "features.saturation", "errors")
    label = "/v1/features vs feast serve (serving/bench.py, at a lower p99)"
    if x is not None and ours_p99 is not None and peer_p99 is not None:
        t.append(Target(label, goal="≥ 10x", measured=f"{x:.1f}x, p99 {fmt(ours_p99, 'ms')} vs {fmt(peer_p99, 'ms')}"
                        + (f", {ours_errors:,.0f} pantry errors" if ours_errors else ""),
                        met=x >= 10 and ours_p99 < peer_p99 and not ours_errors))
    else:
        t.append(_target(label, "≥ 10x", x, lambda v: v >= 10, "x"))
    retrain = number(training, "retrain") or number(training, "train", "_s")
    if retrain is None and trained:
        retrain = next(s for n, s, st in report.steps if n == "pantry train")
        report.notes.append("retrain time is the `pantry train` setup step's wall time")
    t.append(Target("retrain time (full data)", goal="reported", measured=fmt(retrain, "s") if retrain else "-",
                    met=True if retrain else None))
