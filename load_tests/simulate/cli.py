"""`pantry simulate --from DATE --to DATE`: replay held-out Complete Journey shoppers through the HTTP API.

Imports stay light here so `pantry --help` is fast; the work is imported inside the command.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click


def demo_keys(path: Path) -> dict[str, str]:
    """The `VAR=value` lines of `make demo`'s keys file (empty when there is none)."""
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@click.command("simulate")
@click.option("--from", "start", required=True,
              help="First day of the visits to replay (YYYY-MM-DD, or an RFC 3339 time).")
@click.option("--to", "end", required=True,
              help="The day after the last (YYYY-MM-DD, or an RFC 3339 time): visits before it.")
@click.option("--host", default=None, help="Base URL of the pantry (default: the settings' host:port).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Visits in flight (each household's visits stay in order).")
@click.option("--window", "window_s", type=click.FloatRange(0, 590), default=300.0, show_default=True,
              help="Visits in flight span at most this many seconds of event time (under the flow's 600 s lateness).")
@click.option("--customers-share", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Replay a seeded sample of this share of the households.")
@click.option("--max-visits", type=click.IntRange(1), default=None, help="Stop after the first N visits.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the household sample.")
@click.option("--as-of/--no-as-of", default=False, show_default=True,
              help="Send each visit's time as `as_of` (answers at exactly that time instead of the service clock).")
@click.option("--client-key", envvar="PANTRY_CLIENT_KEY", default=None,
              help="Key for the answers (default: PANTRY_CLIENT_KEY, else .pantry/demo-keys.env).")
@click.option("--ingest-key", envvar="PANTRY_INGEST_KEY", default=None,
              help="Key for /v1/events (default: PANTRY_INGEST_KEY, else .pantry/demo-keys.env).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def simulate(start: str, end: str, host: str | None, concurrency: int, window_s: float, customers_share: float,
             max_visits: int | None, seed: int, as_of: bool, client_key: str | None, ingest_key: str | None,
             no_progress: bool) -> None:
    """Replay the real visits in [--from, --to) in time order: recommendations, next best actions and
    substitutions as each visit happens, then the outcomes its real basket implies (docs/OPERATIONS.md, "The
    shopper simulator"). Prints a summary; exits 1 if any request failed."""
    import time

    from load_tests.simulate.runner import simulate as run
    from load_tests.simulate.visits import load_window, mean_basket, parse_day
    from pantry.demo import demo_keys_env
    from pantry.settings import get_settings

    settings = get_settings()
    try:
        start_dt, end_dt = parse_day(start), parse_day(end)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if end_dt <= start_dt:
        raise click.BadParameter(f"--to {end} must be after --from {start}")
    keys = demo_keys(demo_keys_env(settings))
    client_key = client_key or keys.get("PANTRY_CLIENT_KEY")
    ingest_key = ingest_key or keys.get("PANTRY_INGEST_KEY")
    if not client_key or not ingest_key:
        raise click.UsageError("no API keys: set PANTRY_CLIENT_KEY and PANTRY_INGEST_KEY (or run `make demo`, which "
                               f"writes {demo_keys_env(settings)})")
    loading = time.perf_counter()
    try:
        window = load_window(settings, start_dt, end_dt, customers_share, max_visits, seed)
    except FileNotFoundError as exc:
        raise click.ClickException(f"no dataset under {settings.dataset_dir}: run `pantry data load` ({exc})") from exc
    click.echo(f"==> {len(window.visits):,} visits of {window.customers:,} households ({window.sampled_from:,} in the "
               f"window), {mean_basket(window.visits):.1f} lines per basket, {window.asks:,} substitution asks, "
               f"{window.redemptions:,} redemptions; read in {time.perf_counter() - loading:.1f} s")
    base_url = host or f"http://{settings.host}:{settings.port}"
    stats = asyncio.run(run(window.visits, base_url, client_key, ingest_key, concurrency=concurrency,
                            window_s=window_s, as_of=as_of, total=len(window.visits), progress=not no_progress))
    click.echo(stats.summary())
    if stats.non_2xx or stats.stopped:
        sys.exit(1)
