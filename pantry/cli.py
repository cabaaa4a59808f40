"""The `pantry` command line. Component commands live beside their code (streaming/cli.py, serving/cli.py, ...) and
join this group through the `pantry.commands` entry points in pyproject.toml: pantry/ imports no component."""

from __future__ import annotations

import sys
from datetime import datetime
from importlib.metadata import entry_points

import click

from pantry.settings import SettingsError, get_settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pantry", message="pantry %(version)s")
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
    """Shut the embedded redis-server down (its AOF is flushed; the data stays). While `pantry serve` or `pantry demo`
    runs, it supervises the embedded Redis and starts it again: stop those instead."""
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
    from pantry import dataset, dataset_load

    settings = get_settings()
    out = dataset_load.load(settings, households=households, force=force)
    m = dataset.manifest(settings)
    click.echo(f"dataset at {out}: {m.rows['events']:,} events ({m.first_event} .. {m.last_event})")


@main.group()
def feast() -> None:
    """The Feast repo in feature_repo/, configured from pantry's settings."""


@feast.command("apply")
def feast_apply() -> None:
    """`feast apply` with pantry's settings, then load the batch views (product, campaign_coupon) online."""
    from pantry.featurestore import repo
    from pantry.featurestore.batch_views import write_batch_views

    settings = get_settings()
    repo.apply(settings, quiet=False)
    counts = write_batch_views(settings)
    click.echo(", ".join(f"{view}: {n:,} rows online" for view, n in counts.items()))


@feast.command("digest")
def feast_digest() -> None:
    """Rows per view and a sha256 of every online row (keys and fields sorted): two stores with the same digest hold
    the same features, byte for byte."""
    from pantry.featurestore.digest import online_digest
    from pantry.redis_server import sync_client

    digest = online_digest(sync_client(get_settings(), timeout_s=30.0))
    click.echo(f"{digest.keys:,} keys; rows per view: " + ", ".join(f"{v} {n:,}" for v, n in digest.rows.items()))
    click.echo(f"sha256 {digest.sha256}")


@feast.command("yaml")
def feast_yaml() -> None:
    """Print the path of the feature_store.yaml for these settings (for `feast -c feature_repo -f PATH ...`)."""
    from pantry.featurestore import repo

    click.echo(repo.feature_store_yaml(get_settings()))


# ---- API keys and the audit log -------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """API keys (stored as sha256; docs/OPERATIONS.md, "API keys")."""


@keys.command("new")
@click.option("--id", "key_id", required=True, help="A short name for the key (in logs and the audit log).")
@click.option("--scopes", required=True, help="Comma-separated: answers, ingest, features, metrics, merchandiser, "
              "ml_engineer, admin.")
@click.option("--append", is_flag=True, help="Also add the entry to the keys file (PANTRY_API_KEYS_FILE).")
def keys_new(key_id: str, scopes: str, append: bool) -> None:
    """Make a random key: prints the key once (give it to the client) and the entry to configure (its hash)."""
    from pantry import apikeys

    key = apikeys.new_key()
    try:
        line = apikeys.entry_line(key_id, [s.strip() for s in scopes.split(",") if s.strip()], key)
    except apikeys.KeyFormatError as exc:
        raise click.UsageError(str(exc)) from exc
    path = get_settings().api_keys_path
    if append:
        existing = apikeys.load((), path)
        if any(k.key_id == key_id for k in existing.by_digest.values()):
            raise click.UsageError(f"{path} already has a key {key_id!r}: pick a new id")
        apikeys.append_entry(path, line)
    click.echo(f"key (shown once, give it to the client): {key}")
    click.echo(f"entry (add to {path} or PANTRY_API_KEYS): {line}" if not append else f"entry added to {path}: {line}")


@main.group()
def audit() -> None:
    """The audit log (pantry:audit): every admin action, approval and erasure."""


@audit.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="JSON lines file, one entry per line (oldest first).")
def audit_export(out: str) -> None:
    """Every audit entry to a JSON lines file (`id` plus the AuditEntry fields)."""
    import msgspec

    from pantry import audit as audit_log
    from pantry.redis_server import sync_client

    try:
        entries = audit_log.read_all(sync_client(get_settings(), timeout_s=10.0))
        with open(out, "wb") as fh:
            for entry_id, e in entries:
                fh.write(msgspec.json.encode({"id": entry_id, **msgspec.structs.asdict(e)}) + b"\n")
    except Exception as exc:  # Redis down, unwritable path: a message, not a traceback
        raise click.ClickException(f"export failed: {exc}") from exc
    click.echo(f"{len(entries):,} audit entries -> {out}")


# ---- the demo ------------------------------------------------------------------------------------------------


def _a_date(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A YYYY-MM-DD option, refused at once (before minutes of set-up) when it is not one."""
    if value is not None:
        try:
            datetime.strptime(value, "%Y-%m-%d")
        except ValueError as exc:
            raise click.BadParameter(f"{value!r} is not a date YYYY-MM-DD") from exc
    return value


@main.command()
@click.option("--until", default=None, callback=_a_date, help="Use only data before this date (YYYY-MM-DD).")
@click.option("--households", type=click.IntRange(1), default=None, help="A slice of N households (faster).")
@click.option("--no-serve", is_flag=True, help="Set everything up, then exit instead of serving.")
def demo(until: str | None, households: int | None, no_serve: bool) -> None:
    """Everything: Redis, data, feast apply, replay, train, then serve on 127.0.0.1:8000 with the live flow."""
    from pantry.demo import run_demo

    sys.exit(run_demo(get_settings(), until=until, households=households, serve=not no_serve))


def _register_components() -> None:
    """Each component's commands, from the `pantry.commands` entry points (a component that is not installed simply
    has none)."""
    for entry in entry_points(group="pantry.commands"):
        main.add_command(entry.load(), entry.name)


_register_components()


def run() -> None:
    try:
        main()
    except SettingsError as exc:
        raise SystemExit(f"pantry: bad setting: {exc}") from exc


if __name__ == "__main__":
    run()
