"""`pantry load`: the Locust scenarios with SLO gates.

Imports stay light here so `pantry --help` is fast; the work is imported inside the commands.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

WARMUP_S = 8


def _processes(value: int) -> int:
    if value == 0:
        raise click.BadParameter("must be -1 (one per core) or at least 1")
    return value


@click.command("load")
@click.option("--users", type=click.IntRange(1), default=20, show_default=True, help="Concurrent simulated users.")
@click.option("--rate", type=click.FloatRange(0), default=100, show_default=True,
              help="Target total requests/s (0 = realistic think times instead of pacing).")
@click.option("--duration", default="60s", show_default=True, help="How long to run: 60s, 2m, 1h30m.")
@click.option("--host", default=None,
              help="Base URL of the pantry to load. Default: settings host:port; if nothing answers there, "
                   "a pantry is started in the background for the run and stopped after.")
@click.option("--slo", "slo_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SLO file (default: load_tests/slo.toml).")
@click.option("--processes", type=click.IntRange(-1), default=1, show_default=True,
              callback=lambda ctx, param, value: _processes(value),
              help="Locust worker processes (distributed mode: one master + N workers; -1 = one per core).")
@click.option("--user-class", "user_classes", multiple=True,
              help="Only these user classes (StorefrontUser, MobileAppUser, GroceryOrderFlowUser, MarketingUser).")
@click.option("--simulate", is_flag=True,
              help="Simulated shoppers on real data instead of the scenarios (load_tests/simulate/locustfile.py; "
                   "PANTRY_SIMULATE_FROM/TO pick the visits). One process.")
def load(users: int, rate: float, duration: str, host: str | None, slo_file: Path | None, processes: int,
         user_classes: tuple[str, ...], simulate: bool) -> None:
    """Run the Locust scenarios headless, write CSV + HTML reports, fail if an SLO is missed."""
    from load_tests import keys, runner, server
    from load_tests.slo import DEFAULT_SLO_FILE, SloError, evaluate, load_slo
    from pantry.settings import get_settings

    settings = get_settings()
    try:
        duration_s = runner.parse_duration(duration)
        slo = load_slo(slo_file or DEFAULT_SLO_FILE)
    except (ValueError, SloError) as exc:
        raise click.BadParameter(str(exc)) from exc
    if not (settings.dataset_dir / "events.parquet").exists():
        raise click.ClickException(f"no dataset under {settings.dataset_dir} to draw ids from: run `pantry data load`")
    if simulate and processes != 1:
        raise click.BadParameter("--simulate runs in one process (each would replay the same visits)")
    extra = {"locustfile": runner.SIMULATE_LOCUSTFILE} if simulate else {}
    out_dir = settings.artifacts_dir / "load" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    default_url = f"http://{settings.host}:{settings.port}"

    def check_keys() -> None:  # against a pantry we did not start: the keys come from the settings
        for path in ("/v1/recommendations", "/v1/events", "/v1/features"):
            try:
                keys.key_for(settings, path)
            except keys.MissingKey as exc:
                raise click.ClickException(str(exc)) from exc

    def run(base_url: str) -> runner.LocustRun:
        click.echo(f"==> locust: {users} users, {rate:g} req/s target, {duration_s} s against {base_url}"
                   f"{f', {processes} worker processes' if processes != 1 else ''}")
        return runner.run_locust(settings, out_dir, host=base_url, users=users, rate=rate, duration_s=duration_s,
                                 processes=processes, user_classes=user_classes, **extra)

    try:
        if host:
            if not server.answers(host):
                raise click.ClickException(f"{host}/healthz does not answer")
            check_keys()
            result = run(host)
        elif server.answers(default_url):
            check_keys()
            result = run(default_url)
        else:
            click.echo(f"==> nothing answers at {default_url}: starting `pantry serve` for this run")
            settings = keys.with_run_key(settings)  # one random key for this run, in the server and the clients
            with server.background_serve(settings, out_dir / "serve.log") as base_url:
                # A fresh server loads models and opens pools lazily in each worker: keep that out of the figures.
                if not simulate:  # a warm-up would replay the first visits: the run would then send them again
                    click.echo(f"==> warm-up: {WARMUP_S} s at the same rate (not gated; kept in "
                               f"{out_dir / 'warmup'})")
                    runner.run_locust(settings, out_dir / "warmup", progress=False, host=base_url, users=users,
                                      rate=rate, duration_s=WARMUP_S, processes=1, user_classes=user_classes)
                result = run(base_url)
    except server.ServerError as exc:
        raise click.ClickException(str(exc)) from exc

    if result.returncode not in (0, 1):
        raise click.ClickException(f"locust exited with {result.returncode}; see {result.log}")
    try:
        verdict = evaluate(slo, result.csv_prefix)
    except FileNotFoundError as exc:
        raise click.ClickException(f"{exc}; see {result.log}") from exc
    click.echo("\n" + verdict.table())
    for message, count in verdict.failure_messages[:10]:
        click.echo(f"  failure x{count}: {message[:300]}")
    click.echo(f"\nreports: {result.html} and {result.csv_prefix}_*.csv")
    if verdict.ok:
        click.echo(f"SLO gate: PASSED ({verdict.total_requests:,} requests, 0 failures)")
        return
    reasons = verdict.problems + [f"{e.name}: {'; '.join(e.problems)}" for e in verdict.endpoints if not e.ok]
    click.echo("SLO gate: FAILED\n  " + "\n  ".join(reasons), err=True)
    sys.exit(1)

