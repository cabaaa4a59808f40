"""The sustained runs second by second (load_tests/bench/sustained.py): each run's slowest probe per second, and
their plot beside the report (docs/img/bench_sustained_freshness.png)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from load_tests.bench.figures import SustainedFigures


def spans(seconds: Sequence[int]) -> str:
    """Whole seconds as ranges: [3, 4, 5, 9] -> "3-5, 9"."""
    out: list[str] = []
    ordered = sorted(set(seconds))
    start = prev = None
    for s in [*ordered, None]:
        if s is not None and prev is not None and s == prev + 1:
            prev = s
            continue
        if start is not None:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
        start = prev = s
    return ", ".join(out)


def worst_by_second(probes: Sequence[tuple[float, float | None]], seconds: float) -> list[float | None]:
    """The slowest probe sent in each whole second of the run, ms; None for a second with a probe never seen
    (a second without a probe repeats the last value, 0 at the start)."""
    worst: list[float | None] = [0.0] * max(1, math.ceil(seconds - 1e-9))
    have = [False] * len(worst)
    for t, lat in probes:
        i = min(int(t), len(worst) - 1)
        if lat is None or worst[i] is None:
            worst[i] = None
        else:
            worst[i] = max(worst[i], round(lat * 1000, 1))
        have[i] = True
    for i in range(1, len(worst)):
        if not have[i]:
            worst[i] = worst[i - 1]
    return worst


def _label(r) -> str:
    lapse = f", {r.seconds / 60:g} min, event time {r.time_scale:,.0f}x" if r.time_scale != 1 or r.seconds > 120 else ""
    return f"{r.rate_per_s:,}/s, {r.processes} proc.{lapse} ({'held' if r.held else 'missed'})"


def plot_freshness(figures: SustainedFigures, report_dir: Path, name: str = "bench_sustained_freshness.png") -> None:
    """docs/img/<name>: each run's slowest probe per second, the limit, a missing probe at
    the top, an x where the run's Redis was rewriting its AOF; below, the RSS per minute of the runs of minutes;
    sets figures.plot (relative to the report)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in figures.runs if r.worst_ms_by_second]
    if not runs:
        return
    top = 5 * figures.p99_limit_ms
    long = [r for r in runs if len(r.minutes) >= 3]  # runs of minutes: their RSS minute by minute below
    fig, axes = plt.subplots(2 if long else 1, 1, figsize=(7.2, 8.4 if long else 5.0), dpi=110, squeeze=False,
                             height_ratios=[5, 3] if long else None)
    ax = axes[0][0]
    marked = snap_marked = False
    colors: dict[int, str] = {}
    for r in runs:
        ys = [top if v is None else min(v, top) for v in r.worst_ms_by_second]
        (line,) = ax.plot(range(len(ys)), ys, linewidth=1, label=_label(r))
        colors[id(r)] = line.get_color()
        rewriting = [s for s in r.redis_rewrite_s if s < len(ys)]
        if rewriting:  # the seconds the run's Redis spent rewriting its AOF: a core taken from the flow
            ax.plot(rewriting, [ys[s] for s in rewriting], "x", color=line.get_color(), markersize=5,
                    label=None if marked else "x: Redis rewriting its AOF")
            marked = True
        snapshots = [s for s in r.snapshot_s if s < len(ys)]
        if snapshots:  # the flow writing its recovery snapshots: its sources wait for every process to finish
            ax.plot(snapshots, [ys[s] for s in snapshots], "o", mfc="none", color=line.get_color(), markersize=7,
                    label=None if snap_marked else "o: the flow writing a recovery snapshot")
            snap_marked = True
    ax.axhline(figures.p99_limit_ms, color="red", linestyle="--", linewidth=1,
               label=f"p99 limit {figures.p99_limit_ms:g} ms")
    ax.set_ylim(0, top * 1.02)
    ax.set_xlabel("seconds into the run")
    ax.set_ylabel(f"slowest probe of the second (ms, capped at {top:g})")
    ax.set_title("Sustained load: freshness second by second")
    ax.grid(alpha=0.3)
    # below the axes: inside, ten runs' entries covered the curves they name
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.13))
    if long:
        rss = axes[1][0]
        for r in long:
            minutes = [m for m in r.minutes if m.rss_mb is not None]
            rss.plot([m.minute for m in minutes], [m.rss_mb for m in minutes], "o-", color=colors[id(r)],
                     label=_label(r))
        rss.set_xlabel("minute of the run")
        rss.set_ylabel("flow's RSS at the minute's end (MB)")
        rss.set_ylim(bottom=0)
        rss.set_title("Runs of minutes: memory", fontsize=10)
        rss.grid(alpha=0.3)
        rss.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = report_dir / "img" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    figures.plot = str(path.relative_to(report_dir))
