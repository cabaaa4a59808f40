"""`pantry stream replay|live`: the Bytewax dataflow from the command line (heavy imports inside the commands)."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from pantry.settings import get_settings
from pantry.supervisor import lower_priority, shorter_slice


def _parse_until(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD", param_hint="--until") from exc


@click.group()
def stream() -> None:
    """The streaming dataflow (Bytewax): events -> Feast online store + offline feature log."""


@stream.command()
@click.option("--until", default=None, help="Replay events before this date (YYYY-MM-DD); default: all.")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Pace the replay at N x event time, writing the online store as it goes (default: as fast as "
                   "possible, the online store written once per entity at the end; the feature log every flush).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, help="Bytewax workers (threads).")
@click.option("--processes", type=click.IntRange(1, 16), default=1,
              help="Processes, each with --workers threads (more CPU cores; the same result).")
@click.option("--force", is_flag=True, help="Start over even if this replay was done already.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def replay(until: str | None, speed: float | None, workers: int, processes: int, force: bool,
           no_progress: bool) -> None:
    """Replay the data set's events (in event-time order) through the dataflow. Idempotent."""
    from pantry import dataset
    from streaming import runner

    settings = get_settings()
    until_dt = _parse_until(until)
    try:
        dataset.manifest(settings)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
    if not settings.registry_path.exists():
        raise click.ClickException(f"no Feast registry at {settings.registry_path}: run `pantry feast apply` first")
    try:
        runner.replay(settings, until_dt, speed, workers, force, progress=not no_progress, echo=click.echo,
                      processes=processes)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc


@stream.command()
@click.option("--workers", type=click.IntRange(1, 64), default=1, help="Bytewax workers (threads).")
@click.option("--processes", type=click.IntRange(1, 16), default=1,
              help="Processes, each with --workers threads: the keyed feature state is spread over them, and so are "
                   "the stream's partitions (PANTRY_STREAM_PARTITIONS), each read and gated by one worker.")
@click.option("--addresses", default=None,
              help="host:port of every process of a flow across machines, comma-separated, the same list on each "
                   "(with --process-id; instead of --processes).")
@click.option("--process-id", type=click.IntRange(0, 63), default=None,
              help="This process's index in --addresses (0: the one whose recovery directory holds the state).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def live(workers: int, processes: int, addresses: str | None, process_id: int | None, no_progress: bool) -> None:
    """Follow the event stream's partitions (pantry:events, pantry:events:1, ...) until SIGINT/SIGTERM; resumes after
    the last processed entry of each."""
    from streaming import runner

    settings = get_settings()
    if not settings.registry_path.exists():
        raise click.ClickException(f"no Feast registry at {settings.registry_path}: run `pantry feast apply` first")
    click.echo(f"live flow priority: {lower_priority(settings.live_flow_nice)}, "
               f"{shorter_slice(settings.live_flow_slice_us)}")
    cluster = [a.strip() for a in addresses.split(",") if a.strip()] if addresses else None
    if (cluster is None) != (process_id is None):
        raise click.UsageError("--addresses and --process-id go together")
    if cluster is not None and (processes > 1 or process_id >= len(cluster)):
        raise click.UsageError(f"--process-id {process_id} needs an address in --addresses ({len(cluster)} given) "
                               "and no --processes")
    runner.live(settings, workers, progress=not no_progress, echo=click.echo, processes=processes,
                process_id=process_id, addresses=cluster)
