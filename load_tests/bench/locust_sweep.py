"""The Locust sweep of `make bench`: latency vs load per endpoint (with plots), `feast serve` and a hello-world
ceiling under the same Locust load. Closed loop and informational: the targets are measured by serving.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from load_tests import server
from load_tests.bench import peers
from load_tests.bench.figures import LocustPeer, Report
from load_tests.bench.sweep import Point, measure, sweep
from pantry.settings import Settings

ENDPOINTS = {  # endpoint -> the probe class in bench_locustfile.py, most important first (the budget may cut)
    "/v1/recommendations": "RecommendationsProbe",
    "/v1/features": "FeaturesProbe",
    "/v1/substitutions": "SubstitutionsProbe",
    "/v1/next-best-action": "NextBestActionProbe",
}
RATES = [100.0, 300.0, 1000.0]
PEER_RATE = 100.0  # a rate every peer sustains: latency compared at equal load


def at_rate(points: list[Point], rate: float) -> Point | None:
    return next((p for p in points if p.target_rps == rate), None)


def saturation(points: list[Point]) -> Point | None:
    return next((p for p in points if p.target_rps is None), None)


def plot_sweep(endpoint: str, points: list[Point], slo_ms: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = sorted((p for p in points if p.achieved_rps is not None), key=lambda p: p.achieved_rps)
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    xs = [p.achieved_rps for p in good]
    ax.plot(xs, [p.p50_ms for p in good], "o-", label="p50")
    ax.plot(xs, [p.p99_ms for p in good], "s-", label="p99")
    for p in good:
        if p.target_rps is None:
            ax.annotate("saturation", (p.achieved_rps, p.p99_ms), textcoords="offset points", xytext=(-40, 6))
    if slo_ms:
        ax.axhline(slo_ms, color="red", linestyle="--", linewidth=1, label=f"`make load` SLO gate {slo_ms:g} ms")
    ax.set_xlabel("achieved requests/s")
    ax.set_ylabel("response time (ms, Locust, closed loop)")
    ax.set_title(f"{endpoint}: latency vs load (Locust)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def plot_path(report_dir: Path, endpoint: str) -> Path:
    return report_dir / "img" / f"bench_{endpoint.strip('/').replace('/', '_').replace('-', '_')}.png"


def run(settings: Settings, base_url: str, report: Report, work: Path, step_s: int, report_dir: Path,
        time_left: Callable[[], float], reserve_s: float, say: Callable[[str], None]) -> None:
    """Sweep every endpoint of the running pantry at base_url while time_left() > reserve_s, then the peers."""
    say("Locust sweep warm-up: every endpoint for a few seconds (lazy loads in each worker; not reported)")
    for probe in ENDPOINTS.values():
        measure(settings, base_url, probe, 200.0, 3, work / "warmup" / probe)
    for endpoint, probe in ENDPOINTS.items():
        if time_left() < reserve_s:
            report.notes.append(f"Locust sweep of {endpoint} skipped: the time budget was spent")
            continue
        say(f"Locust sweep: {endpoint} at {', '.join(f'{r:g}' for r in RATES)} req/s, then flat out")
        points = sweep(settings, base_url, probe, RATES, step_s, work / "sweeps")
        report.sweeps[endpoint] = points
        img = plot_path(report_dir, endpoint)
        plot_sweep(endpoint, points, report.slo_ms.get(endpoint), img)
        report.plots[endpoint] = str(img.relative_to(report_dir))
    features = report.sweeps.get("/v1/features", [])
    report.locust_peers.append(LocustPeer(name="pantry /v1/features", saturation=saturation(features),
                                          at_100=at_rate(features, PEER_RATE),
                                          note=f"`pantry serve`, {settings.workers} workers"))
    if time_left() < reserve_s:
        report.notes.append("Locust sweep of the peers skipped: the time budget was spent")
        return
    measure_peers(settings, report, work, step_s, say)


def measure_peers(settings: Settings, report: Report, work: Path, step_s: int, say: Callable[[str], None]) -> None:
    workers = settings.workers
    say(f"Locust peer: feast serve ({workers} workers) at {PEER_RATE:g} req/s and flat out, same request")
    name = "feast serve /get-online-features"
    try:
        with peers.feast_serve(settings, work / "feast_serve.log", workers) as url:
            measure(settings, url, "FeastServeProbe", 50.0, 3, work / "warmup" / "feast")
            at_100 = measure(settings, url, "FeastServeProbe", PEER_RATE, step_s, work / "sweeps" / "feast-100")
            sat = measure(settings, url, "FeastServeProbe", None, step_s, work / "sweeps" / "feast-max")
            report.locust_peers.append(LocustPeer(name=name, saturation=sat, at_100=at_100,
                                                  note=f"`feast serve -w {workers}`"))
    except server.ServerError as exc:
        report.locust_peers.append(LocustPeer(name=name, saturation=None, at_100=None,
                                              note=f"failed to start: {exc}"[:200]))
    say(f"Locust peer: hello-world ceiling (Litestar + msgspec on granian, {workers} workers)")
    name = "hello-world ceiling"
    try:
        with peers.hello_world(work / "hello.log", workers) as url:
            at_100 = measure(settings, url, "HelloProbe", PEER_RATE, step_s, work / "sweeps" / "hello-100")
            sat = measure(settings, url, "HelloProbe", None, step_s, work / "sweeps" / "hello-max")
            report.locust_peers.append(LocustPeer(name=name, saturation=sat, at_100=at_100,
                                                  note=f"granian, {workers} workers, no I/O"))
    except server.ServerError as exc:
        report.locust_peers.append(LocustPeer(name=name, saturation=None, at_100=None,
                                              note=f"failed to start: {exc}"[:200]))
