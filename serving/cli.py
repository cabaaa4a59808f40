"""`pantry serve`, `pantry decisions export`, `pantry campaigns seed|list` (heavy imports inside the commands)."""

from __future__ import annotations

import click

from pantry.settings import get_settings


@click.command()
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: settings).")
@click.option("--host", default=None, help="Bind address (default: settings, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: settings, 8000).")
@click.option("--no-live", is_flag=True,
              help="Do not run the live dataflow here (it runs elsewhere; /readyz judges it by its heartbeat).")
@click.option("--api-only", is_flag=True, hidden=True, help="Only the HTTP API in this process (what the supervisor "
              "runs as its child).")
def serve(workers: int | None, host: str | None, port: int | None, no_live: bool, api_only: bool) -> None:
    """Serve: the embedded Redis (unless REDIS_URL is set), the HTTP API (granian, N worker processes behind one port)
    and the live dataflow, supervised (a child that dies is restarted; SIGTERM/SIGINT stops them all)."""
    settings = get_settings()
    workers, host, port = workers or settings.workers, host or settings.host, port or settings.port
    if api_only:
        serve_api(workers, host, port)
        return
    import sys

    from pantry import supervisor
    from pantry.redis_server import embedded, ensure_redis

    was_running = False
    if settings.redis_url:
        try:
            ensure_redis(settings)
        except Exception as exc:
            raise click.ClickException(f"redis not reachable: {exc}") from exc
    else:
        was_running = embedded(settings).running  # a `pantry redis start`: taken over, left running at the end
    live = settings.serve_live and not no_live
    click.echo(f"pantry serving on http://{host}:{port} ({workers} workers"
               f"{', live dataflow beside' if live else ', live dataflow elsewhere'}"
               f"{'' if settings.redis_url else ', embedded redis supervised'})")
    code = supervisor.serve(settings, workers, host, port, live)
    if was_running:
        ensure_redis(settings, daemonize=True)
        click.echo("embedded redis left running in the background, as it was before `pantry serve`")
    sys.exit(code)


def serve_api(workers: int, host: str, port: int) -> None:
    """The HTTP API with granian in this process. A worker that dies is respawned by granian (one that dies again
    within ~5 s makes granian exit, and the supervisor restarts it with a backoff)."""
    import os
    import shutil
    import sys

    from granian import Granian
    from granian.constants import Interfaces, Loops

    from pantry.supervisor import EXIT_CONFIG
    from serving.access import DemoKeysRefused, load_keys

    settings = get_settings()
    try:
        keys = load_keys(settings, host or settings.host)  # refuses demo keys on a non-loopback host
    except (DemoKeysRefused, ValueError) as exc:
        # a refused configuration: the supervisor must not restart this child, but stop (pantry.supervisor)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    # one thread of BLAS/OpenMP per worker: the workers already fill the cores, and BLAS threads spin-waiting after a
    # small per-request matrix product steal them from the other worker (recommendations at 2 workers: saturation
    # 490 -> 788 req/s, p99 at 300 req/s 127 -> 6.7 ms; docs/DECISIONS.md). Set before the workers import numpy.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    # one metrics directory shared by every worker, emptied at start (prometheus_client multiprocess mode)
    prom_dir = settings.data_dir / "prometheus"
    shutil.rmtree(prom_dir, ignore_errors=True)
    prom_dir.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom_dir)
    server = Granian(
        "serving.app:create_app_from_env",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop if _has_uvloop() else Loops.asyncio,
        log_access=False,
        respawn_failed_workers=True,
        # a worker SIGTERMed while it is still starting (loading models) never stops by itself: killed after 10 s
        # (below the supervisor's 20 s, which would otherwise SIGKILL the whole API)
        workers_kill_timeout=10,
    )
    click.echo(f"pantry serving on http://{host or settings.host}:{port or settings.port} "
               f"({workers or settings.workers} workers, {len(keys)} API keys)")
    server.serve()


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@click.group()
def decisions() -> None:
    """The decision log (pantry:decisions)."""


@decisions.command("export")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, writable=True), help="Parquet file.")
def decisions_export(out: str) -> None:
    """Every logged decision to a parquet file."""
    from pantry.redis_server import sync_client
    from serving.decisions import export

    try:
        n = export(sync_client(get_settings(), timeout_s=10.0), out)
    except Exception as exc:  # Redis down, unwritable path: a message, not a traceback
        raise click.ClickException(f"export failed: {exc}") from exc
    click.echo(f"{n:,} decisions -> {out}")


@click.group()
def campaigns() -> None:
    """Campaign approvals (nothing is offered before a merchandiser approves it)."""


@campaigns.command("seed")
@click.option("--approve-historical", is_flag=True, help="Approve every campaign of the dataset as 'demo-seed'.")
def campaigns_seed(approve_historical: bool) -> None:
    """Seed approvals for the demo."""
    from pantry.audit_cli import cli_actor
    from pantry.redis_server import sync_client
    from serving.campaigns import load_campaigns, seed_historical

    if not approve_historical:
        raise click.UsageError("nothing to do: pass --approve-historical")
    settings = get_settings()
    found = load_campaigns(settings)
    if not found:
        raise click.ClickException("no campaigns: run `pantry data load` first")
    try:
        n = seed_historical(sync_client(settings, timeout_s=5.0), found.values(), actor=cli_actor())
    except Exception as exc:
        raise click.ClickException(f"could not write approvals: {exc}") from exc
    click.echo(f"{n} campaigns approved by demo-seed")


@campaigns.command("list")
def campaigns_list() -> None:
    """Every campaign with its dates and approval status."""
    from pantry.keys import CAMPAIGN_APPROVALS
    from pantry.redis_server import sync_client
    from serving.campaigns import decode_approvals, load_campaigns, status_of

    settings = get_settings()
    try:
        approvals = decode_approvals(sync_client(settings, timeout_s=5.0).hgetall(CAMPAIGN_APPROVALS))
    except Exception as exc:
        raise click.ClickException(f"redis not reachable: {exc}") from exc
    click.echo(f"{'id':>4} {'type':4} {'start':10} {'end':10} status")
    for cid, c in sorted(load_campaigns(settings).items()):
        a = approvals.get(cid)
        status = status_of(c, a)
        by = f" by {a.by}" if a is not None and status != "pending" else ""
        click.echo(f"{cid:>4} {c.campaign_type:4} {c.start.date()} {c.end.date()} {status}{by}")
