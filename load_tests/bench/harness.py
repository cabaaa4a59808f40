"""`make bench`: set up a deterministic pantry, run every part of the bench once, write docs/BENCHMARKS.md.

Setup (each via the `pantry` CLI, timed): its own data dir (.pantry/bench), artifacts and Redis port, the full
dataset; `pantry data load`, `pantry feast apply`, `pantry stream replay`, `pantry train`. Then the parts that
measure the targets, each in its own process: streaming.py and training.py (on their own scratch state), then
`pantry serve` and serving.py against it, then the Locust sweep (informational) with what is left of the time
budget but DEPLOYED_S and SUSTAINED_S, then `pantry serve` with its live flow and deployed.py against it, then
sustained.py (the live flow at a fixed rate for minutes, on its own scratch state). A part that cannot run
(the budget spent, a crash) leaves its rows "not run (reason)".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from load_tests import server
from load_tests.bench import experiment_overhead, locust_sweep, machine, sustained_plot
from load_tests.bench.figures import Report, Step
from load_tests.bench.parts import run_part
from load_tests.bench.report import render
from load_tests.bench.targets import evaluate, verdict
from load_tests.keys import with_run_key
from load_tests.slo import DEFAULT_SLO_FILE, load_slo
from pantry import apikeys
from pantry.redis_server import EmbeddedRedis, free_port
from pantry.settings import ROOT, Settings, from_env, get_settings, subprocess_env

SUSTAINED_S = 27 * 60  # sustained.py, last: for 1 and 2 processes, 10,000/s + 4 search runs of 60 s each, the
# long run of 660 s, start-ups
BUDGET_S = 21 * 60 + SUSTAINED_S
DOCS = ROOT / "docs"
SAVED = ROOT / ".pantry" / "bench" / "run" / "report.json"  # the last run's figures, for --render-only
# What each target part needs after it, on a quiet 2-core machine, with margin: serving (serve start, ~6 min of
# load: the endpoints ~1 min, the experiment-overhead rounds ~5 min) after streaming and training; training (~1 min)
# after streaming.
SERVING_S = 7 * 60
SERVING_PART_S = 8 * 60  # serving.py's own limit
TRAINING_S = 2 * 60
DEPLOYED_S = 3 * 60  # deployed.py after the sweep: `pantry serve` with the live flow, the flow catching up, ~1.5 min
SWEEP_ENDPOINT_S = 60  # the Locust sweep starts an endpoint (or the peers) only with this much budget left
PART_MIN_S = 30  # below this a part is not started


class Clock:
    def __init__(self, budget_s: float) -> None:
        self.start = time.monotonic()
        self.budget_s = budget_s

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed

    def say(self, message: str) -> None:
        minutes, seconds = divmod(int(self.elapsed), 60)
        print(f"==> [{minutes:02d}:{seconds:02d}] {message}", flush=True)


def isolated_settings(name: str, **extra: str) -> Settings:
    """Own data dir (.pantry/<name>), artifacts and ports; exported so every subprocess (and get_settings) sees the
    same. `extra`: more environment settings."""
    root = ROOT / ".pantry" / name
    os.environ.pop("REDIS_URL", None)
    os.environ.update({
        "PANTRY_DATA_DIR": str(root),
        "PANTRY_ARTIFACTS_DIR": str(root / "artifacts"),
        "PANTRY_REDIS_PORT": str(free_port()),
        "PANTRY_PORT": str(free_port()),
        "PANTRY_CLOCK": "event",
        "PANTRY_RATE_LIMIT_PER_MINUTE": "0",
        **extra,
    })
    get_settings.cache_clear()
    return from_env()


def bench_settings() -> Settings:
    return isolated_settings("bench")


def pantry(settings: Settings, *args: str, log: Path, timeout_s: float) -> None:
    cmd = server.pantry_command(*args)
    with log.open("ab") as out:
        out.write(f"\n$ pantry {' '.join(args)}\n".encode())
        out.flush()
        result = subprocess.run(cmd, env=subprocess_env(settings), stdout=out, stderr=subprocess.STDOUT,
                                timeout=timeout_s)
    if result.returncode != 0:
        tail = log.read_text()[-1500:]
        raise RuntimeError(f"`pantry {' '.join(args)}` exited with {result.returncode}:\n{tail}")


def fresh_data_dir(settings: Settings, keep: Path) -> None:
    """Deterministic start: only the dataset parquet (deterministic) and `keep` stay. Everything else a component
    keeps under the data dir (Redis, registry, stream state and checkpoints, embeddings, models) starts empty."""
    for entry in settings.data_dir.iterdir():
        if entry.name in (settings.dataset_dir.name, keep.name):
            continue
        shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)


class Run:
    """One bench run: its settings, budget, work dir and the report it fills."""

    def __init__(self, quick: bool, output: Path) -> None:
        self.quick = quick
        self.output = output
        self.clock = Clock(BUDGET_S)
        self.settings = with_run_key(bench_settings())  # one random key, in the server's settings and the clients'
        # and one with the ml_engineer scope for experiment_overhead.py's experiments; never written to disk
        self.ml_key = apikeys.new_key()
        self.settings = msgspec.structs.replace(self.settings, api_keys=(
            *self.settings.api_keys, apikeys.entry_line("bench-ml", ("ml_engineer",), self.ml_key)))
        self.work = self.settings.data_dir / "run"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.setup_log = self.work / "setup.log"
        self.report = Report(machine=machine.describe(),
                             command="python -m load_tests.bench" + (" --quick" if quick else ""),
                             slo_ms=dict(load_slo(DEFAULT_SLO_FILE).p99_ms))
        self.setup_ok = True

    def step(self, name: str, fn: Callable[[], None]) -> bool:
        self.clock.say(name)
        started = time.monotonic()
        try:
            fn()
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            took = time.monotonic() - started
            self.report.steps.append(Step(name, took, f"failed: {str(exc).splitlines()[0]}"))
            self.clock.say(f"{name} FAILED after {took:.1f} s (see {self.setup_log})")
            self.setup_ok = False
            return False
        took = time.monotonic() - started
        self.report.steps.append(Step(name, took, "ok"))
        self.clock.say(f"{name}: {took:.1f} s")
        return True

    def cli_step(self, *args: str, timeout_s: float) -> bool:
        return self.step(f"pantry {' '.join(args)}",
                         lambda: pantry(self.settings, *args, log=self.setup_log, timeout_s=timeout_s))

    def part(self, name: str, timeout_s: float, base_url: str | None = None) -> None:
        if timeout_s < PART_MIN_S:
            self.report.not_run[name] = f"not run (the {BUDGET_S // 60}-minute budget was spent)"
            return
        self.clock.say(f"load_tests/bench/{name}.py (its own process)")
        env = {**subprocess_env(self.settings), experiment_overhead.ML_KEY_ENV: self.ml_key}
        figures = run_part(name, self.work, timeout_s, env, self.quick, base_url)
        if isinstance(figures, str):
            self.report.not_run[name] = figures
            self.clock.say(f"{name}: {figures}")
        else:
            setattr(self.report, name, figures)

    def deployed(self) -> None:
        """deployed.py's targets: the service with its live flow, as `make demo` runs it."""
        started = time.monotonic()
        try:
            with server.background_serve(self.settings, self.work / "serve-live.log", live=True) as base_url:
                self.report.steps.append(Step("pantry serve, with the live flow (until /healthz answers)",
                                              time.monotonic() - started, "ok"))
                self.part("deployed", min(self.clock.left() - 10, DEPLOYED_S + 60), base_url)
        except server.ServerError as exc:
            self.report.steps.append(Step("pantry serve, with the live flow", time.monotonic() - started,
                                          f"failed: {str(exc).splitlines()[0]}"))
            self.report.not_run.setdefault("deployed", "not run (`pantry serve` did not start)")
            self.setup_ok = False

    def serve_and_measure(self) -> None:
        """serving.py's targets, then the Locust sweep with what is left of the budget."""
        started = time.monotonic()
        try:
            with server.background_serve(self.settings, self.work / "serve.log") as base_url:
                self.report.steps.append(Step("pantry serve (until /healthz answers)", time.monotonic() - started,
                                              "ok"))
                self.part("serving", min(self.clock.left() - 10, SERVING_PART_S), base_url)
                # the plots go beside the report (docs/img/ for docs/BENCHMARKS.md), linked relative to it
                locust_sweep.run(self.settings, base_url, self.report, self.work, 3 if self.quick else 6,
                                 self.output.parent, lambda: self.clock.left() - DEPLOYED_S - SUSTAINED_S,
                                 SWEEP_ENDPOINT_S, self.clock.say)
        except server.ServerError as exc:
            self.report.steps.append(Step("pantry serve", time.monotonic() - started,
                                          f"failed: {str(exc).splitlines()[0]}"))
            self.report.not_run.setdefault("serving", "not run (`pantry serve` did not start)")
            self.setup_ok = False


def run_all(quick: bool = False, output: Path | None = None) -> int:
    output = (output or DOCS / "BENCHMARKS.md").resolve()
    run = Run(quick, output)
    settings, clock = run.settings, run.clock
    clock.say(f"bench: data {settings.data_dir}, redis port {settings.embedded_redis_port}, logs in {run.work}")
    fresh_data_dir(settings, keep=run.work)
    redis = EmbeddedRedis(port=settings.embedded_redis_port, directory=settings.redis_dir).start(daemonize=False)
    try:
        run.cli_step("data", "load", timeout_s=300)
        run.cli_step("feast", "apply", timeout_s=300)
        # the service's features; the replay target is measured by streaming.py, on its own scratch state
        run.cli_step("stream", "replay", "--no-progress", timeout_s=max(60.0, clock.left() - 9 * 60))
        run.cli_step("train", timeout_s=300)
        run.cli_step("campaigns", "seed", "--approve-historical", timeout_s=120)
        # the targets first, so the budget may cut the informational Locust sweep but not them
        run.part("streaming", min(clock.left() - SERVING_S - TRAINING_S, 300))
        run.part("training", min(clock.left() - SERVING_S, 240))
        run.serve_and_measure()
        run.deployed()
        run.part("sustained", min(clock.left() - 10, SUSTAINED_S + 60))
        if run.report.sustained is not None:  # the plot goes beside the report, as the sweep's
            sustained_plot.plot_freshness(run.report.sustained, output.parent)
    finally:
        redis.stop()
    run.report.total_s = clock.elapsed
    run.report.machine["load average at end"] = machine.load_average()
    SAVED.parent.mkdir(parents=True, exist_ok=True)
    SAVED.write_bytes(msgspec.json.encode(run.report))
    write(run.report, output)
    clock.say(f"wrote {output} (figures saved in {SAVED})")
    return 0 if run.setup_ok else 1


def write(report: Report, output: Path | None) -> None:
    out = output or DOCS / "BENCHMARKS.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(report))
    for t in evaluate(report):
        print(f"    {t.name[:70]:<70} {t.measured[:60]:<60} {verdict(t)}")


def render_last(output: Path | None = None, saved: Path = SAVED) -> int:
    """Re-render the report from the last run's figures (targets and verdicts are derived again, and the sustained
    runs' plot drawn again)."""
    if not saved.exists():
        print(f"no saved run at {saved}: run `make bench` first", file=sys.stderr)
        return 1
    report = msgspec.json.decode(saved.read_bytes(), type=Report)
    if report.sustained is not None:
        sustained_plot.plot_freshness(report.sustained, (output or DOCS / "BENCHMARKS.md").parent)
    write(report, output)
    return 0
