"""The `pantry` command line. Component commands live beside their code and are registered here."""

from __future__ import annotations

import importlib
import sys

import click

from pantry.settings import SettingsError, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """pantry: streaming feature store and real-time personalization for grocery retail."""


# ---- redis -------------------------------------------------------------------------------------------------


@main.group()
def redis() -> None:
    """The embedded Redis (ignored when REDIS_URL is set)."""


@redis.command("start")
def redis_start() -> None:
    """Start the embedded redis-server in the background (reused if already running)."""
    from pantry.redis_server import ensure_redis

    settings = get_settings()
    server = ensure_redis(settings, daemonize=True)
    click.echo(f"redis up at {server.url if server else settings.redis_url}")


@redis.command("stop")
def redis_stop() -> None:
    """Shut the embedded redis-server down (its AOF is flushed; the data stays)."""
    from pantry.redis_server import embedded

    server = embedded(get_settings())
    if server.running:
        server.stop()
        click.echo("redis stopped")
    else:
        click.echo("redis was not running")


@redis.command("status")
def redis_status() -> None:
    from pantry.redis_server import sync_client

    try:
        info = sync_client(get_settings(), timeout_s=1.0).info()
        click.echo(f"redis {info['redis_version']} up, {info.get('db0', {}).get('keys', 0)} keys")
    except Exception as exc:  # any failure here just means "not reachable"
        raise click.ClickException(f"redis not reachable: {exc}") from exc


# ---- data and feast ----------------------------------------------------------------------------------------


@main.group()
def data() -> None:
    """The Complete Journey data set."""


@data.command("load")
@click.option("--households", type=click.IntRange(1), default=None, help="Keep a deterministic slice of N households.")
@click.option("--force", is_flag=True, help="Reload even if already loaded.")
def data_load(households: int | None, force: bool) -> None:
    """Load Complete Journey into parquet under the data dir (skipped if already there)."""
    from pantry import dataset

    settings = get_settings()
    out = dataset.load(settings, households=households, force=force)
    m = dataset.manifest(settings)
    click.echo(f"dataset at {out}: {m.rows['events']:,} events ({m.first_event} .. {m.last_event})")


@main.group()
def feast() -> None:
    """The Feast repo in feature_repo/, configured from pantry's settings."""


@feast.command("apply")
def feast_apply() -> None:
    """`feast apply` with pantry's settings, then load the batch views (product, campaign_coupon) online."""
    from pantry import feast_repo
    from pantry.batch_views import write_batch_views

    settings = get_settings()
    feast_repo.apply(settings, quiet=False)
    counts = write_batch_views(settings)
    click.echo(", ".join(f"{view}: {n:,} rows online" for view, n in counts.items()))


@feast.command("yaml")
def feast_yaml() -> None:
    """Print the path of the feature_store.yaml for these settings (for `feast -c feature_repo -f PATH ...`)."""
    from pantry import feast_repo

    click.echo(feast_repo.feature_store_yaml(get_settings()))


# ---- the demo ------------------------------------------------------------------------------------------------


@main.command()
@click.option("--until", default=None, help="Use only data before this date (YYYY-MM-DD).")
@click.option("--households", type=click.IntRange(1), default=None, help="A slice of N households (faster).")
@click.option("--no-serve", is_flag=True, help="Set everything up, then exit instead of serving.")
def demo(until: str | None, households: int | None, no_serve: bool) -> None:
    """Everything: Redis, data, feast apply, replay, train, then serve on 127.0.0.1:8000 with the live flow."""
    from pantry.demo import run_demo

    sys.exit(run_demo(get_settings(), until=until, households=households, serve=not no_serve))


# Component commands: each package owns its CLI; a missing one must not break the others.
_COMPONENT_COMMANDS = (
    ("streaming.cli", "stream"),
    ("training.cli", "train"),
    ("training.cli", "models"),
    ("training.cli", "evaluate"),
    ("serving.cli", "serve"),
    ("serving.cli", "decisions"),
    ("serving.cli", "campaigns"),
    ("load_tests.cli", "load"),
)


def _register_components() -> None:
    for module_name, attr in _COMPONENT_COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        command = getattr(module, attr, None)
        if command is not None:
            main.add_command(command)


_register_components()


def run() -> None:
    try:
        main()
    except SettingsError as exc:
        raise SystemExit(f"pantry: bad setting: {exc}") from exc


if __name__ == "__main__":
    run()
